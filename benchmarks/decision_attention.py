"""Where the class decision looks: the attention of ``<|attribute_begin|>`` (the position whose logits over the K
attribute tokens are the class decision; for the plain-text baseline, the prompt's last position, which predicts the
answer's first word) to the visual tokens, per LM layer, on a fold's held-out images.

For each model, on the held-out images of its fold (``cv_folds 5``, ``cv_fold k``; the bundle's validation transforms,
the open question), the LM runs with eager attention and each layer's attention weights from the decision position
are summed over the visual-token positions and averaged over heads and images: 1.0 means the decision reads only the
image, 0.0 only the text. Alongside: the decision's accuracy and how often each class is predicted. Two kinds of
model:

- trained models that ``bench_bundles.py --tag TAG`` left (``<bundle>_bench_<TAG>_<variant>_s<seed>_<time>/model``,
  ``--variant all`` for +All, ``baseline`` for the plain text), the runs of rounds 24-28 (fold k at seed k,
  ``--seeds`` shifts both: seed 5+k is the second repetition);
- ``step0:PARTS``: the +All network the bundle builds from the generalist with ``generalist_parts PARTS`` (seed k),
  before any training step.

Nothing trains; a model takes a few seconds on one CPU thread.

    python benchmarks/decision_attention.py --generalist_dir G/model --runs_root R \\
        --models r24_e r28_al r26_gn step0:all step0:all_but_layers step0:none --out benchmarks/.state/X.json
    python benchmarks/decision_attention.py --table benchmarks/.state/X.json [Y.json ...]   # markdown, per model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import hardware  # noqa: E402
from bench_bundles import default_data_root  # noqa: E402
from probe_features import find_run  # noqa: E402

from attok_monai.fileio import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _parser(bundle: str, fold: int, folds: int, extra: dict | None = None, from_generalist: bool = False):
    from attok_monai.configs import read_config

    configs = REPO / "bundles" / bundle / "configs"
    files = [configs / "train.json"] + ([configs / "from_generalist.json"] if from_generalist else [])
    parser = read_config(files)
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), "cv_folds": folds, "cv_fold": fold, **(extra or {})})
    return parser


def decision_attention(net: torch.nn.Module, loader, question: str) -> dict:
    """``{"visual_share": [per layer], "accuracy": %, "predicted": [count per class]}`` of a compact AttTokGPTv over
    ``loader``'s images (``question`` for every image). With attribute tokens and markers the decision position is
    ``<|attribute_begin|>`` (appended after the prompt, as :meth:`AttTokGPTv.class_probabilities` does); for the
    plain-text baseline it is the prompt's last position, and the predictions are the argmax of
    :meth:`AttTokGPTv.class_probabilities` (the answers' log-likelihoods)."""
    from attok_monai.engines.steps import _first_attributes

    markers = net.use_attribute_tokens and net.attribute_markers
    if net.merges_visual or (net.use_attribute_tokens and not net.attribute_markers):
        raise ValueError("decision_attention: needs a compact AttTokGPTv with attribute markers, or the plain baseline")
    net = net.eval()
    llm = net.backbone.llm
    llm.set_attn_implementation("eager")  # SDPA returns no weights
    weights: list[torch.Tensor] = []
    hooks = [layer.self_attn.register_forward_hook(lambda m, i, o: weights.append(o[1].detach()))
             for layer in llm.model.layers]
    shares, preds, labels = [], [], []
    try:
        with torch.no_grad():
            for batch in loader:
                images = batch["image"].float()
                prompts = [question] * len(images)
                _, visual = net.visual_tokens(images)
                ids, mask, at = net.decision_inputs(prompts, markers=markers)  # as class_probabilities reads them
                rows = torch.arange(len(prompts))
                weights.clear()
                logits, _, _ = net.backbone.forward_embeds(net.embed(ids, visual), mask)
                is_visual = (ids == -1)[:, None, :].float()  # the visual slots (B, 1, L)
                shares.append(torch.stack([(w[rows, :, at] * is_visual).sum(-1).mean(1) for w in weights], 1))
                if markers:
                    preds.append(logits[rows, at][:, net.attr_ids].argmax(-1))
                else:
                    weights.clear()
                    preds.append(net.class_probabilities(images, prompts, visual=visual).argmax(-1))
                labels += [a[0] for a in _first_attributes(batch)]
    finally:
        for h in hooks:
            h.remove()
    pred = torch.cat(preds).numpy()
    return {"visual_share": [round(float(x), 4) for x in torch.cat(shares).mean(0)],
            "accuracy": round(100 * float((pred == np.asarray(labels)).mean()), 2),
            "predicted": np.bincount(pred, minlength=len(net.vocabulary)).tolist()}


def measure(model: str, bundle: str, fold: int, seed: int, folds: int, generalist_dir: str | None,
            runs_root: Path, variant: str = "all") -> dict | None:
    """One model of ``--models`` on fold ``fold``: a trained run (None when absent) or a ``step0:PARTS`` start."""
    from attok_monai.networks.nets import AttTokGPTv

    parser = _parser(bundle, fold, folds)
    question = parser.get_parsed_content("templates").question("open")
    if model.startswith("step0:"):
        if not generalist_dir:
            raise SystemExit("decision_attention: step0 models need --generalist_dir")
        plain = {} if variant == "all" else {"use_attribute_tokens": False, "use_acc": False, "use_acm": False}
        start = _parser(bundle, fold, folds, {"generalist_dir": generalist_dir, "generalist_parts": model[6:],
                                              "seed": seed, **plain}, from_generalist=True)
        net, where = start.get_parsed_content("network_def"), f"generalist_parts {model[6:]}, seed {seed}"
    else:
        run = find_run(bundle, model, seed, variant, root=runs_root)
        if run is None:
            return None
        net, where = AttTokGPTv.from_pretrained(run), run.parent.name
    return {"model": where, **decision_attention(net, parser.get_parsed_content("validate#dataloader"), question)}


def table(paths: Sequence[str | os.PathLike]) -> str:
    """Markdown: per model (over its folds and the files given), the decision's visual share in the last and first
    LM layers (mean and range), its accuracy, and how many of the bundle's classes a run never predicts (mean)."""
    rows: dict[str, list[dict]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        for key, got in data["results"].items():
            rows.setdefault(f"{data.get('variant', 'all')} {key.rpartition('/')[0]}", []).append(got)
    lines = ["| decision of | model | runs | last layer: mean [min, max] | first layer | accuracy | classes never "
             "predicted |", "|---|---|---|---|---|---|---|"]
    for name, got in rows.items():
        variant, model = name.split(" ", 1)
        last = [g["visual_share"][-1] for g in got]
        first = [g["visual_share"][0] for g in got]
        silent = np.mean([sum(c == 0 for c in g["predicted"]) for g in got])
        lines.append(f"| {'+All' if variant == 'all' else 'baseline'} | {model} | {len(got)} | {np.mean(last):.2f} "
                     f"[{min(last):.2f}, {max(last):.2f}] | {np.mean(first):.2f} | "
                     f"{np.mean([g['accuracy'] for g in got]):.1f} | {silent:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", nargs="+", metavar="JSON", help="print the markdown of these measured JSONs and stop")
    ap.add_argument("--models", nargs="+", help="bench tags of trained runs, or step0:PARTS")
    ap.add_argument("--bundle", default="fundus_dr")
    ap.add_argument("--variant", default="all", choices=("all", "baseline"), help="+All runs or plain-text baselines")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=0, help="fold k is scored with seed k + this (5: the second repetition)")
    ap.add_argument("--generalist_dir", default=None)
    ap.add_argument("--runs_root", default=str(REPO), help="the checkout whose bundles/<bundle>/runs hold the runs")
    ap.add_argument("--out", help="the JSON to write (atomic)")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.table))
        return
    if not (args.models and args.out):
        ap.error("--models and --out are needed to measure (or --table JSON ... to print)")
    os.environ.setdefault("ATTOK_DATA_ROOT", str(default_data_root()))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = {"hardware": hardware(), "bundle": args.bundle, "variant": args.variant, "results": {}}
    for model in args.models:
        for fold in range(args.folds):
            got = measure(model, args.bundle, fold, fold + args.seeds, args.folds, args.generalist_dir,
                          Path(args.runs_root), args.variant)
            if got is not None:
                out["results"][f"{model}/{fold + args.seeds}"] = got
                print(model, fold, got["visual_share"], got["accuracy"], got["predicted"], flush=True)
    atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
