"""MONAI's own tools on every bundle (issue 17): ``verify_metadata`` against the current schema's required keys and
types (offline), a LICENSE and a data licence per bundle, the short CLI on argparse (``-h``, values parsed as MONAI's
fire-based CLI parses them, ``--tracking`` refused with a reason), and the README's code run as written."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from attok_monai.bundle.cli import bundle_run_args
from tests.conftest import REPO

BUNDLES = sorted(p.parent.parent for p in REPO.glob("bundles/*/configs/metadata.json"))

# The required keys and value types of MONAI's current bundle metadata schema (meta_schema_20240725.json, the
# version our metadata.json names), written out here so the check runs offline: verify_metadata downloads the
# schema named in metadata.json unless --filepath points at a file that exists.
_REQUIRED = {
    "schema": "string", "version": "string", "monai_version": "string", "pytorch_version": "string",
    "numpy_version": "string", "required_packages_version": "object", "task": "string", "description": "string",
    "authors": "string", "copyright": "string", "network_data_format": "object",
}
_TENSOR = {
    "type": "object",
    "required": ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"],
    "properties": {"num_channels": {"type": "integer"}, "spatial_shape": {"type": "array"},
                   "value_range": {"type": "array"}, "is_patch_data": {"type": "boolean"}},
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2019-09/schema",
    "type": "object",
    "required": list(_REQUIRED),
    "properties": {
        **{k: {"type": t} for k, t in _REQUIRED.items()},
        "changelog": {"type": "object"}, "references": {"type": "array", "items": {"type": "string"}},
        "eval_metrics": {"type": "object"}, "supported_apps": {"type": "object"},
        "network_data_format": {
            "type": "object", "required": ["inputs", "outputs"],
            "properties": {"inputs": {"type": "object", "additionalProperties": _TENSOR},
                           "outputs": {"type": "object", "additionalProperties": _TENSOR}},
        },
    },
}


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_verify_metadata_and_licences(bundle, tmp_path):
    from monai.bundle import verify_metadata

    schema = tmp_path / "meta_schema_20240725.json"
    schema.write_text(json.dumps(SCHEMA))
    meta = bundle / "configs" / "metadata.json"
    assert json.loads(meta.read_text())["schema"].endswith("/meta_schema_20240725.json")
    verify_metadata(meta_file=str(meta), filepath=str(schema))  # raises on a missing key or a wrong type
    assert "Apache License" in (bundle / "LICENSE").read_text()
    data_licence = (bundle / "docs" / "data_license.txt").read_text()
    assert json.loads(meta.read_text())["data_source"] in data_licence


def test_verify_metadata_rejects_the_old_key(tmp_path):
    from monai.bundle import verify_metadata

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    meta = json.loads((BUNDLES[0] / "configs" / "metadata.json").read_text())
    meta["optional_packages_version"] = meta.pop("required_packages_version")
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="required_packages_version"):
        verify_metadata(meta_file=str(bad), filepath=str(schema))


def test_short_cli_help_and_values():
    out = subprocess.run([sys.executable, "-m", "attok_monai.bundle", "run", "-h"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0 and "--config BUNDLE_DIR" in out.stdout and "--extra NAME" in out.stdout
    bundle = str(REPO / "bundles" / "fundus_dr")
    kw = bundle_run_args(["--config", bundle, "--batch_size", "20", "evaluate", "--split", "[a,b]", "--tsne",
                          "--image_size=0.01", "--download", "false", "--checkpoint", "none", "--limit", "None"])
    assert kw["config_file"].endswith("evaluate.json")
    assert kw["batch_size"] == 20 and kw["split"] == ["a", "b"] and kw["tsne"] is True and kw["image_size"] == 0.01
    assert kw["download"] is False and kw["checkpoint"] == "none" and kw["limit"] is None
    # a key the workflow's config does not have is refused, naming it (MONAI would add it and ignore it)
    with pytest.raises(ValueError, match=r"--epochs: no such key in evaluate.json"):
        bundle_run_args(["--config", bundle, "evaluate", "--epochs", "20"])
    with pytest.raises(ValueError, match=r"--lamda_start \(did you mean --lambda_start"):
        bundle_run_args(["--config", bundle, "--lamda_start", "0.1"])
    with pytest.raises(SystemExit):
        bundle_run_args(["--config", bundle, "bogus"])
    with pytest.raises(ValueError, match="logs to MLflow by itself"):
        bundle_run_args(["--config", bundle, "--tracking", "mlflow"])


def _readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_python_snippets_run_as_written():
    blocks = _readme_blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 (our own README)


def test_readme_bundle_commands_parse():
    """Every short-form command in the README resolves to existing configs; every MONAI-form command names existing
    config files (running them all is the benchmark's job, not the test suite's)."""
    lines = [ln.split("#")[0].strip() for b in _readme_blocks("bash") for ln in b.splitlines()]
    short = [ln for ln in lines if "-m attok_monai.bundle run" in ln]
    assert len(short) >= 5
    for ln in short:
        argv = shlex.split(ln.split("-m attok_monai.bundle run", 1)[1])
        argv = [str(REPO / a) if a.startswith("bundles/") else a for a in argv]
        kw = bundle_run_args(argv)
        files = kw["config_file"] if isinstance(kw["config_file"], list) else [kw["config_file"]]
        assert all(Path(f).is_file() for f in files), ln
    for ln in lines:
        for f in re.findall(r"bundles/[\w/]+\.json", ln):
            assert (REPO / f).is_file(), (ln, f)
