"""How far fine-tuning moved each part of a model from the generalist it started from.

For each run folder (``<run>/model/model.pt``, as ``bench_bundles.py`` leaves them under ``bundles/<name>/runs/``) and
each part (the vision encoder, the projector, the LM's decoder layers), the relative distance of the trained weights
from the generalist's, ``||theta - theta_G|| / ||theta_G||`` over the part's floating-point tensors that both hold with
the same shape (batch-norm running statistics excluded: they are not trained by the optimizer). Nothing trains; reads
two state dicts per run.

    python benchmarks/encoder_shift.py --generalist_dir G/model bundles/oct_retina/runs/oct_retina_bench_*_2026*
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attok_monai.networks.nets.compact_gptv import COMPACT_VISION_PREFIX  # noqa: E402

#: part name -> parameter-name prefix in an AttTokGPTv / compact generalist state dict
PARTS = {"vision": f"{COMPACT_VISION_PREFIX}.", "projector": "backbone.projector.", "llm layers": "backbone.llm.model.layers."}


def relative_shift(trained: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor], prefix: str) -> float:
    """``||theta - theta_start|| / ||theta_start||`` over the floating-point tensors under ``prefix`` that both state
    dicts hold with the same shape, batch-norm running statistics excluded. NaN when none match."""
    num = den = 0.0
    for name, ref in start.items():
        other = trained.get(name)
        if (not name.startswith(prefix) or other is None or not ref.is_floating_point() or "running_" in name
                or other.shape != ref.shape):
            continue
        num += (other.double() - ref.double()).pow(2).sum().item()
        den += ref.double().pow(2).sum().item()
    return (num / den) ** 0.5 if den > 0 else float("nan")


def shifts(run_dirs: Sequence[Path], generalist_dir: Path) -> list[tuple[str, dict[str, float]]]:
    """(run folder name, {part: relative shift}) for each run folder with a ``model/model.pt``."""
    start = torch.load(generalist_dir / "model.pt", map_location="cpu", weights_only=True)
    out = []
    for run in run_dirs:
        path = Path(run) / "model" / "model.pt"
        if not path.is_file():
            continue
        trained = torch.load(path, map_location="cpu", weights_only=True)
        out.append((Path(run).name, {part: relative_shift(trained, start, p) for part, p in PARTS.items()}))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generalist_dir", type=Path, required=True, help="the generalist's model folder")
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (each with model/model.pt)")
    args = ap.parse_args(argv)
    print("| run | " + " | ".join(PARTS) + " |")
    print("|---|" + "---|" * len(PARTS))
    for name, row in shifts(args.runs, args.generalist_dir):
        print(f"| {name} | " + " | ".join(f"{row[p]:.3f}" for p in PARTS) + " |")


if __name__ == "__main__":
    main()
