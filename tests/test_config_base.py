"""Every bundle config combination resolves (``ConfigParser.read_config`` + ``resolve_macro_and_relative_ids``, nothing
instantiated) to the same dict as the golden in ``tests/data/resolved_configs/``, written from the configs before they
were split into a shared base and per-bundle files. Regenerate (only when a config VALUE is meant to change):
``python -m attok_monai.bundle.resolve --out tests/data/resolved_configs``."""

from __future__ import annotations

import difflib
import json
import re

import pytest

from attok_monai.bundle import resolve
from tests.conftest import REPO

GOLDEN = REPO / "tests" / "data" / "resolved_configs"
BUNDLES = REPO / "bundles"
CASES = list(resolve.combinations(BUNDLES))


def _diff(want: str, got: str, name: str, limit: int = 80) -> str:
    lines = list(difflib.unified_diff(want.splitlines(), got.splitlines(), f"golden/{name}", f"now/{name}", lineterm="", n=2))
    more = f"\n... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


@pytest.mark.parametrize("bundle,workflow,extras", CASES, ids=[resolve.name_of(*c)[:-5] for c in CASES])
def test_resolves_as_golden(bundle, workflow, extras):
    name = resolve.name_of(bundle, workflow, extras)
    golden = GOLDEN / name
    assert golden.is_file(), f"no golden {golden}: a new combination? write it with python -m attok_monai.bundle.resolve"
    want = golden.read_text(encoding="utf-8")
    got = resolve.canonical(resolve.resolved(BUNDLES, bundle, workflow, extras))
    if got != want:
        pytest.fail(f"{name} resolves differently from the golden:\n{_diff(want, got, name)}", pytrace=False)


def test_every_golden_is_checked():
    names = {resolve.name_of(*c) for c in CASES}
    stale = sorted(p.name for p in GOLDEN.glob("*.json") if p.name not in names)
    assert not stale, f"goldens with no combination left (a config file removed?): {stale}"


def test_goldens_are_canonical():
    for path in GOLDEN.glob("*.json"):
        text = path.read_text(encoding="utf-8")
        assert resolve.canonical(json.loads(text)) == text, path.name


def test_multi_gpu_copies_match_the_base():
    """``classification/multi_gpu_train.json`` replaces four shared parts whole (an override cannot reach inside a
    macro): each copy is the base's part with only the multi-GPU changes."""
    base = json.loads((REPO / "attok_monai/configs/classification/train.json").read_text())
    multi = json.loads((REPO / "attok_monai/configs/classification/multi_gpu_train.json").read_text())
    changes = {
        ("train", "dataloader"): {"shuffle": False},
        ("train", "trainer"): {"network": "@ddp_network",
                               "train_handlers": "$attok_monai.engines.distributed.rank_zero_handlers(@train#handlers)"},
        ("train", "mlflow"): {"_disabled_": "$not attok_monai.engines.distributed.is_rank_zero()"},
    }
    for (section, part), change in changes.items():
        assert multi[section][part] == {**base[section][part], **change}, f"{section}#{part}"
    handlers = [dict(h) if isinstance(h, dict) else h for h in base["validate"]["handlers"]]
    handlers[3] = {**handlers[3], "_disabled_": "$not attok_monai.engines.distributed.is_rank_zero()"}
    assert multi["validate"]["handlers"] == handlers


def _readme_bundle() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- BEGIN new_bundle:(\S+) -->\s*```json\n(.*?)```\s*<!-- END new_bundle:\1 -->", text,
                             re.S))
    assert set(blocks) == {"configs/train.json", "configs/metadata.json"}, sorted(blocks)
    return blocks


def _image_folder(root, classes=("healing", "infected"), per_class=6):
    """``root/images/<class>_<i>.png`` (32x32 RGB, one colour per class plus noise) and ``root/labels.csv``."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = ["image,label"]
    for c, name in enumerate(classes):
        for i in range(per_class):
            pixels = np.clip(rng.normal(80 + 100 * c, 20, (32, 32, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / "images" / f"{name}_{i}.png")
            rows.append(f"images/{name}_{i}.png,{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.usefixtures("one_torch_thread")
def test_readme_new_modality_trains(tmp_path, monkeypatch):
    """The README's "Adding a modality" files, as written there, train a new bundle for two iterations through the
    short command, run from another working directory (the shared base is found from anywhere)."""
    from attok_monai.bundle.cli import main

    bundle = tmp_path / "bundles" / "my_modality"
    for name, text in _readme_bundle().items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text(text, encoding="utf-8")
    data = tmp_path / "data" / "my_modality"
    _image_folder(data)
    monkeypatch.chdir(tmp_path)
    rc = main(["run", "--config", str(bundle), "--data_root", str(data), "--epochs", "1", "--epoch_length", "2",
               "--batch_size", "4", "--val_batch_size", "4", "--tsne", "False", "--amp", "False",
               "--mlflow_tracking_uri", f"sqlite:///{tmp_path}/mlruns.db"])
    assert rc == 0
    models = list((bundle / "runs").glob("*/model/model.pt"))
    assert len(models) == 1, list((bundle / "runs").rglob("*"))
    assert json.loads((bundle / "runs" / "latest.json").read_text())


def test_run_snapshot_holds_resolved_configs(tmp_path):
    """A run's configs/ snapshot has the shared base's macros resolved (the base may change after the run)."""
    from attok_monai.bundle.paths import snapshot_configs

    snapshot_configs(REPO / "bundles" / "fundus_dr", tmp_path)
    train = json.loads((tmp_path / "configs" / "train.json").read_text())
    assert "%attok_monai/configs" not in json.dumps(train)
    assert isinstance(train["train"]["trainer"], dict) and train["attribute_init"] in ("keyword", "distinct")
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == sorted(
        p.name for p in (REPO / "bundles" / "fundus_dr" / "configs").glob("*.json"))


def test_read_config_pulls_the_base_from_any_directory(tmp_path, monkeypatch):
    """``attok_monai.configs.read_config``: the one reader the snapshot, the goldens, the generalist's sources and the
    benchmarks use; shared keys come back as values, not ``%file#id`` strings (diagnose_attok read ``seed`` raw)."""
    from attok_monai.configs import read_config

    monkeypatch.chdir(tmp_path)
    parser = read_config(REPO / "bundles" / "fundus_dr" / "configs" / "train.json")
    assert isinstance(parser["seed"], int) and parser["attribute_init"] == "distinct"
    assert "%attok_monai/configs" not in json.dumps(parser.get())
