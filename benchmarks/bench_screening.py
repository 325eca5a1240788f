"""One-pass screening vs today's inference (issue 19): images per second on CPU and agreement of the classes.

Both modes run the bundle's own ``run_inference`` on the same PNG folder (RetinaMNIST validation + training images
written once to a temp folder), one thread, after one untimed warm-up pass over a few images:

- ``generate``: today's command: greedy decoding of the answer, then a second forward for the class probabilities;
- ``screen``: one forward for the attribute-token probabilities and one vision-side pass for the book retrieval,
  no decoding.

Agreement: the share of images whose screening class (argmax of the attribute probabilities) equals the class parsed
from the generated answer. Decode steps saved: the generated tokens per image that screening does not run (on the
Hugging Face path each is one full forward of the 7B model with its KV cache; not timed here: no GPU).

    python benchmarks/bench_screening.py --model_dir bundles/fundus_dr/runs/<run>/model   # or: the latest run
    python benchmarks/bench_screening.py --train   # trains the fundus default first (README's main job)

Writes ``benchmarks/.state/screening.json`` and the ``screening`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STATE = REPO / "benchmarks" / ".state" / "screening.json"
DOC = REPO / "docs" / "benchmarks.md"


def _write_pngs(npz: Path, folder: Path, n: int) -> int:
    import numpy as np
    from PIL import Image

    data = np.load(npz)
    images = np.concatenate([data["val_images"], data["train_images"]])[:n]
    for i, im in enumerate(images):
        Image.fromarray(im).save(folder / f"img{i:05d}.png")
    return len(images)


def _time_mode(network, templates, folder: Path, out: Path, screen: bool, batch_size: int) -> tuple[float, list]:
    from attok_monai.engines.inference import image_datalist, inference_transforms, run_inference

    datalist = image_datalist(folder)
    t0 = time.perf_counter()
    rows = run_inference(network, templates, datalist, inference_transforms(28), out, batch_size=batch_size,
                         screen=screen)
    return time.perf_counter() - t0, rows


def _component_rates(network, templates, folder: Path, batch_size: int) -> dict[str, float]:
    """Images/s of each piece on images already loaded (model side only), and of loading alone."""
    import torch

    from attok_monai.engines.inference import image_datalist, inference_transforms

    tf = inference_transforms(28)
    items = image_datalist(folder)
    t0 = time.perf_counter()
    x = torch.stack([tf(it)["image"] for it in items]).float()
    rates = {"load_and_transform": len(x) / (time.perf_counter() - t0)}
    q = templates.question("open")
    pieces = {
        "generate": lambda b: network.generate(b, [q] * len(b), 16),
        "class_probabilities": lambda b: network.class_probabilities(b, [q] * len(b)),
        "retrieval_scores": lambda b: network.retrieval_scores(b),
        "screen (both, one vision pass)": lambda b: network.screen(b, [q] * len(b)),
    }
    with torch.no_grad():
        for name, f in pieces.items():
            f(x[:batch_size])  # warm-up
            t0 = time.perf_counter()
            for s in range(0, len(x), batch_size):
                f(x[s: s + batch_size])
            rates[name] = len(x) / (time.perf_counter() - t0)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", help="a fundus_dr model folder (default: the latest finished fundus_dr run)")
    ap.add_argument("--train", action="store_true", help="train the fundus default first (about 4 min)")
    ap.add_argument("--data_root", default=os.environ.get("ATTOK_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per mode (mean and spread reported)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("ATTOK_DATA_ROOT", args.data_root)
    if args.train:
        subprocess.run([sys.executable, "-m", "attok_monai.bundle", "run", "--config", str(REPO / "bundles" / "fundus_dr"),
                        "--tsne", "False"], cwd=REPO, check=True)
    from attok_monai.bundle.model_folder import load_pretrained
    from attok_monai.bundle.runs import latest_model_dir
    from attok_monai.data.instructions import InstructionTemplates
    from attok_monai.metrics import parse_prediction

    model_dir = Path(latest_model_dir(REPO / "bundles" / "fundus_dr", args.model_dir))
    network = load_pretrained(model_dir)
    templates = InstructionTemplates.from_json(str(model_dir / "templates.json"))
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "imgs", Path(tmp) / "out"
        folder.mkdir()
        out.mkdir()
        n = _write_pngs(Path(args.data_root) / "medmnist" / "retinamnist.npz", folder, args.images)
        warm = Path(tmp) / "warm"
        warm.mkdir()
        for p in sorted(folder.iterdir())[:8]:
            (warm / p.name).write_bytes(p.read_bytes())
        for screen in (False, True):
            _time_mode(network, templates, warm, out / "warm.csv", screen, args.batch_size)
        times: dict[str, list[float]] = {"generate": [], "screen": []}
        rows: dict[str, list] = {}
        for _ in range(args.repeats):
            for mode in ("generate", "screen"):
                dt, r = _time_mode(network, templates, folder, out / f"{mode}.csv", mode == "screen", args.batch_size)
                times[mode].append(dt)
                rows[mode] = r
        parts = _component_rates(network, templates, folder, args.batch_size)
    vocab = network.vocabulary
    gen_class = [parse_prediction(vocab, r["answer"]) for r in rows["generate"]]
    scr_class = [vocab.tokens.index(r["attribute"]) for r in rows["screen"]]
    agree = sum(a == b for a, b in zip(gen_class, scr_class)) / n
    retr_agree = sum(vocab.tokens.index(r["retrieval_attribute"]) == b for r, b in zip(rows["screen"], scr_class)) / n
    tok = network.backbone.tokenizer
    decode_steps = [len(tok.encode(r["answer"], add_special_tokens=False)) + 1 for r in rows["generate"]]  # + end

    def rate(ts: list[float]) -> tuple[float, float]:
        import statistics

        rates = [n / t for t in ts]
        return statistics.mean(rates), (statistics.stdev(rates) if len(rates) > 1 else 0.0)

    result = {
        "date": time.strftime("%Y-%m-%d"), "model_dir": os.path.relpath(model_dir, REPO), "images": n,
        "batch_size": args.batch_size, "repeats": args.repeats, "threads": 1,
        "hardware": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "generate_images_per_s": rate(times["generate"]), "screen_images_per_s": rate(times["screen"]),
        "speedup": rate(times["generate"])[0] and rate(times["screen"])[0] / rate(times["generate"])[0],
        "class_agreement": agree, "retrieval_agreement_with_screen": retr_agree,
        "decode_steps_saved_per_image": sum(decode_steps) / n,
        "component_images_per_s": parts,
    }
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(result, indent=2))
    write_doc(result)
    print(json.dumps(result, indent=2))


def write_doc(r: dict) -> None:
    g, s = r["generate_images_per_s"], r["screen_images_per_s"]
    rows = "\n".join(f"| {k.replace('_', ' ')} | {v:.0f} |" for k, v in r.get("component_images_per_s", {}).items())
    sp, ag = r["speedup"], r["class_agreement"]
    text = f"""<!-- BEGIN screening -->
## One-pass screening vs generation (issue 19)

`python benchmarks/bench_screening.py --model_dir {r['model_dir']}` ({r['date']}; {r['hardware']}; one thread;
{r['images']} RetinaMNIST images as PNG files through the bundle's `run_inference`, batch {r['batch_size']},
{r['repeats']} timed passes per mode after a warm-up; mean ± spread over the passes).

| mode | images/s | what it runs |
|---|---|---|
| today's inference (`generate`) | {g[0]:.0f} ± {g[1]:.0f} | greedy decoding, then a second forward for the probabilities |
| screening (`--screen True`) | {s[0]:.0f} ± {s[1]:.0f} | one forward (attribute-token probabilities) + book retrieval, no decoding |

Speed-up **{sp:.2f}x** (target at least 3x: **{'met' if sp >= 3 else 'missed'}**). The screening class equals the class of
the generated answer on **{100 * ag:.1f}%** of the images (target at least 99%: **{'met' if ag >= 0.99 else 'missed'}**);
the book retrieval agrees with it on {100 * r['retrieval_agreement_with_screen']:.1f}%. Screening saves
{r['decode_steps_saved_per_image']:.1f} decode steps per image (the generated tokens, end token included); on the
Hugging Face path each is one forward of the 7B language model with its KV cache, not timed here (no GPU).

Where the time goes (images/s of each piece alone, images already loaded, same model and thread):

| piece | images/s |
|---|---|
{rows}

Why the 3x is out of reach on the compact model: today's command is generation plus one probability forward, and
screening is one probability forward (plus retrieval, sharing the vision pass); greedy decoding of the ~{r['decode_steps_saved_per_image']:.0f}
answer tokens through a 2-layer, 256-wide LM with a KV cache costs less than the prompt forward itself (vision encoder
and the visual tokens included), so removing it can at most about halve the model time, and loading and transforms
are the same in both modes. The saving grows with the LM: on the 7B path each decode step is a full forward of the
language model.
<!-- END screening -->"""
    doc = DOC.read_text()
    if "<!-- BEGIN screening -->" in doc:
        a = doc.index("<!-- BEGIN screening -->")
        b = doc.index("<!-- END screening -->") + len("<!-- END screening -->")
        doc = doc[:a] + text + doc[b:]
    else:
        anchor = "## AttTok ablations of the bundles on CPU"
        doc = doc.replace(anchor, text + "\n\n" + anchor, 1)
    from attok_monai.fileio import atomic_write_text

    atomic_write_text(DOC, doc)


if __name__ == "__main__":
    main()
