"""One ACC attention sheet per modality for docs/ (issue 19): the first 8 validation images of each classification
bundle, with the attention of their visual tokens to the predicted attribute's book, from a trained model folder.

    python benchmarks/attention_sheets.py --model_dir fundus_dr=bundles/fundus_dr/runs/<run>/model ...
    python benchmarks/attention_sheets.py            # the latest finished run of each bundle (runs/latest.json)

Writes ``docs/attention_maps/<bundle>.png``; the bundle's own evaluate config builds the validation data, so the
images are preprocessed as evaluation does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BUNDLES = ("fundus_dr", "xray_pneumonia", "derma_isic", "oct_retina", "pathology_lung")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model_dir", action="append", default=[], metavar="BUNDLE=FOLDER")
    ap.add_argument("--data_root", default=os.environ.get("ATTOK_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--bundles", nargs="*", default=list(BUNDLES))
    args = ap.parse_args()
    os.environ["ATTOK_DATA_ROOT"] = args.data_root
    from monai.bundle import ConfigWorkflow

    from attok_monai.bundle.runs import latest_model_dir
    from attok_monai.handlers import AttentionMapSampleHandler

    given = dict(m.split("=", 1) for m in args.model_dir)
    out = REPO / "docs" / "attention_maps"
    for name in args.bundles:
        root = REPO / "bundles" / name
        model_dir = latest_model_dir(root, given.get(name))
        with tempfile.TemporaryDirectory() as tmp:
            wf = ConfigWorkflow(config_file=str(root / "configs" / "evaluate.json"), workflow_type="infer",
                                bundle_root=str(root), model_dir=str(model_dir), split="val", limit=8,
                                output_dir=tmp, mlflow_tracking_uri=f"sqlite:///{tmp}/m.db")
            wf.initialize()
            handler = AttentionMapSampleHandler(wf.parser.get_parsed_content("network"),
                                                wf.parser.get_parsed_content("dataset"), tmp)
            handler(None)
            (out / f"{name}.png").parent.mkdir(parents=True, exist_ok=True)
            (out / f"{name}.png").write_bytes((Path(tmp) / "attention_maps.png").read_bytes())
        print(f"{name}: {os.path.relpath(model_dir, REPO)} -> docs/attention_maps/{name}.png")


if __name__ == "__main__":
    main()
