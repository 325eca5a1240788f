"""The class decision of a model started from a generalist, before any fine-tuning.

A bundle started from the compact generalist (``--extra from_generalist``) adds its attribute tokens to a model that
already names the set's classes in plain text. This script builds each start exactly as the bundle's training would
(same config, same seed), switches nothing on but what the row names, and scores its class probabilities
(:meth:`AttTokGPTv.class_probabilities`: answer log-likelihoods for the plain-text baseline, the softmax over the K
attribute-token logits after ``<|attribute_begin|>`` with attribute tokens, after the prompt's last token without
the markers) on the validation part. Nothing trains.
It says how much of the generalist's decision each ``attribute_init`` hands to the new attribute rows at step 0.

    python benchmarks/init_decision.py --generalist_dir G/model                  # writes docs/benchmarks.md
    python benchmarks/init_decision.py --generalist_dir G/model --bundles fundus_dr --print
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
from _report import hardware, write_section  # noqa: E402
from bench_bundles import default_data_root  # noqa: E402

from attok_monai.fileio import atomic_write_text  # noqa: E402
from attok_monai.provenance import file_md5  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STATE = Path(__file__).resolve().parent / ".state" / "init_decision.json"
SECTION = "init_decision"
#: row label -> the overrides that build it (the rest is the bundle's config from the generalist, seed 0)
_TOKENS = {"use_attribute_tokens": True, "use_acc": False, "use_acm": False}
STARTS = {
    "baseline (plain text)": {"use_attribute_tokens": False, "use_acc": False, "use_acm": False},
    **{f"attribute tokens{label}, attribute_init {init}": {**_TOKENS, "attribute_init": init, **markers}
       for label, markers in (("", {}), (" without markers", {"attribute_markers": False}))
       for init in ("distinct", "first_token")},
}


def decision_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(accuracy, macro-F1), in %, of the argmax of ``probs`` (N, K) against ``labels`` (N,), by the bundles' own
    :func:`attok_monai.metrics.classification_metrics` over the K classes (a class never predicted nor present
    counts as F1 0)."""
    from attok_monai.metrics import classification_metrics

    m = classification_metrics(labels, probs.argmax(1), num_classes=probs.shape[1])
    return 100 * m["accuracy"], 100 * m["macro_f1"]


def score_start(bundle: str, generalist_dir: str, overrides: dict, seed: int = 0) -> tuple[float, float]:
    """Build ``bundle``'s network from the generalist with ``overrides`` and score it on the validation part."""
    from attok_monai.configs import read_config
    from attok_monai.engines.steps import _first_attributes

    configs = REPO / "bundles" / bundle / "configs"
    parser = read_config([configs / "train.json", configs / "from_generalist.json"])  # shared %macros pulled in
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), "generalist_dir": generalist_dir, "seed": seed,
                   **overrides})
    net = parser.get_parsed_content("network_def").eval()
    question = parser.get_parsed_content("templates").question("open")
    probs, labels = [], []
    with torch.no_grad():
        for batch in parser.get_parsed_content("validate#dataloader"):
            images = batch["image"].float()
            probs.append(net.class_probabilities(images, [question] * len(images)).float().numpy())
            labels += [a[0] for a in _first_attributes(batch)]
    return decision_scores(np.concatenate(probs), np.asarray(labels))


def table(state: dict) -> str:
    lines = ["| set | start | accuracy | macro-F1 | generalist (model.pt MD5) |", "|---|---|---|---|---|"]
    for bundle, rows in state["results"].items():
        for label, (acc, f1) in rows.items():
            lines.append(f"| {bundle} | {label} | {acc:.1f} | {f1:.1f} | `{state['generalist_md5'][:8]}...` |")
    return (f"Validation parts, before any fine-tuning (seed 0). Hardware: {state['hardware']}. Command: "
            f"`python benchmarks/init_decision.py --generalist_dir G/model --bundles {' '.join(state['results'])}`.\n\n"
            + "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generalist_dir", required=True, help="the compact generalist's model folder")
    ap.add_argument("--bundles", nargs="+", default=["fundus_dr", "derma_isic"])
    ap.add_argument("--print", action="store_true", help="print the table instead of writing the doc and the state")
    args = ap.parse_args(argv)
    os.environ.setdefault("ATTOK_DATA_ROOT", str(default_data_root()))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    state = {"generalist_md5": file_md5(str(Path(args.generalist_dir) / "model.pt")), "hardware": hardware(),
             "results": {b: {label: list(score_start(b, args.generalist_dir, over)) for label, over in STARTS.items()}
                         for b in args.bundles}}
    if args.print:
        print(table(state))
        return
    atomic_write_text(STATE, json.dumps(state, indent=2) + "\n")
    write_section(SECTION, table(state))
    print(table(state))


if __name__ == "__main__":
    main()
