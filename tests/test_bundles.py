"""The modality bundles (derma_isic, oct_retina, xray_pneumonia, pathology_crc, pathology_lung): metadata, every config
(and its overrides) parses and instantiates, a few-iteration training on real data logs to MLflow, the pathology split
keeps groups together, evaluation takes --data_root/--split/--model_dir, and the short command resolves the same
config as ``python -m monai.bundle run``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.conftest import REPO, require

BUNDLES = {
    # name: (data folder under the data root, file that must exist, (train, val) sizes of the shared copy)
    "derma_isic": ("ham10000", "HAM10000_metadata.csv", (7015, 1000)),
    "oct_retina": ("oct_cnv", "labels.csv", (4109, 462)),
    "pathology_lung": ("lc25000_lung", "labels.csv", (1740, 238)),
    "xray_pneumonia": ("medmnist", "pneumoniamnist.npz", (4708, 524)),
    "pathology_crc": ("medmnist", "pathmnist.npz", None),
}
EXTRA = {"derma_isic": ["dermamnist"], "oct_retina": ["octmnist"]}  # data-source overrides (train and evaluate)
NUM_CLASSES = {"derma_isic": 7, "oct_retina": 2, "pathology_lung": 3, "xray_pneumonia": 2, "pathology_crc": 9}
META_KEYS = ("schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
             "task", "description", "authors", "copyright", "network_data_format")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _configs(name: str) -> Path:
    return REPO / "bundles" / name / "configs"


def _parser(name: str, files: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    paths = [str(_configs(name) / f) for f in files]
    parser.read_config(paths if len(paths) > 1 else paths[0])
    parser.update({"bundle_root": str(REPO / "bundles" / name), **overrides})
    parser.resolve_macro_and_relative_ids()  # as parse() does: the shared base's %macros pulled in
    return parser


def _data_root_override(name: str, data_root: Path) -> dict:
    folder = BUNDLES[name][0]
    out = {"data_root": str(data_root / folder)}
    if folder == "medmnist":
        out["download"] = False  # nothing downloads at test time
    return out


def _workflow(name: str, files: list[str], tmp: Path, **overrides) -> ConfigWorkflow:
    configs = _configs(name)
    paths = [str(configs / f) for f in files]
    wf = ConfigWorkflow(
        config_file=paths if len(paths) > 1 else paths[0],
        meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"),
        workflow_type="train" if files[0].startswith("train") else "infer",
        bundle_root=str(REPO / "bundles" / name),
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlruns.db",
        **overrides,
    )
    wf.initialize()
    return wf


def _root_cause(fn) -> BaseException:
    """The innermost exception raised by ``fn()`` (the config parser wraps errors in RuntimeError)."""
    with pytest.raises(Exception) as info:
        fn()
    err: BaseException = info.value
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def _offline_error(fn) -> str:
    err = _root_cause(fn)
    assert isinstance(err, FileNotFoundError), repr(err)
    assert "Put the official file at" in str(err)
    return str(err)


# ------------------------------------------------------------------------------------------------ layout, metadata
@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_bundle_layout_and_metadata(name):
    root = REPO / "bundles" / name
    for f in ("train.json", "evaluate.json", "inference.json", "baseline.json", "metadata.json", "full.json",
              "logging.conf"):
        assert (root / "configs" / f).is_file(), f
    assert (root / "docs" / "README.md").is_file()
    assert not list(root.rglob("*.py")), "bundles hold configuration only"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    for key in META_KEYS:
        assert meta.get(key), key
    fmt = meta["network_data_format"]
    assert {"inputs", "outputs"} <= set(fmt)
    probs = fmt["outputs"]["probabilities"]
    assert probs["num_channels"] == NUM_CLASSES[name] == len(probs["channel_def"])
    train = json.loads((root / "configs" / "train.json").read_text())
    assert fmt["inputs"]["image"]["spatial_shape"] == [train["image_size"]] * 2
    readme = (root / "docs" / "README.md").read_text()
    for needle in ("python -m monai.bundle run --config_file", "python -m attok_monai.bundle run --config",
                   "--split", "--data_root", "inference", "baseline", "docs/benchmarks.md"):
        assert needle in readme, needle


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_configs_parse_and_instantiate(name, data_root, tmp_path):
    """Every config (alone and with its overrides) parses; the network, vocabulary and templates instantiate; the
    data lists instantiate where the data are present, with the sizes of the shared copy."""
    base = _parser(name, ["train.json"], output_dir=str(tmp_path / "run"))
    vocab = base.get_parsed_content("vocabulary")
    assert len(vocab) == NUM_CLASSES[name]
    assert all(t.startswith(f"<|{vocab[0].modality}_") for t in vocab.tokens)
    assert base.get_parsed_content("templates").class_names == vocab.names
    net = base.get_parsed_content("network_def")
    assert net.vocabulary == vocab
    assert base.get_parsed_content("use_acm") is True
    # overrides merge and change what they should
    bl = _parser(name, ["train.json", "baseline.json"])
    assert not bl.get_parsed_content("use_attribute_tokens") and not bl.get_parsed_content("use_acc")
    full = _parser(name, ["train.json", "full.json"])
    assert full.get_parsed_content("epoch_length") is None
    assert full.get_parsed_content("epochs") > base.get_parsed_content("epochs")
    # a model trained with full.json is evaluated with the same image size by merging full.json into evaluate.json
    assert _parser(name, ["evaluate.json", "full.json"]).get_parsed_content("image_size") == full.get_parsed_content(
        "image_size")
    for wf in ("evaluate.json", "inference.json"):
        p = _parser(name, [wf])
        assert p.get_parsed_content("image_size") == base.get_parsed_content("image_size")
        assert "model_dir" in p.get()
    ev = _parser(name, ["evaluate.json"]).get()
    assert {"data_root", "split", "model_dir", "limit"} <= set(ev)
    assert "open_balanced_accuracy" in ev["evaluator"]["additional_metrics"] or "open_balanced_accuracy" in ev[
        "evaluator"]["key_val_metric"]
    # data
    _, marker, sizes = BUNDLES[name]
    folder = BUNDLES[name][0]
    over = _data_root_override(name, data_root)
    if sizes is None or not (data_root / folder / marker).exists():
        p = _parser(name, ["train.json"], **over, output_dir=str(tmp_path / "run"))
        _offline_error(lambda: p.get_parsed_content("train#datalist"))
    else:
        p = _parser(name, ["train.json"], **over, output_dir=str(tmp_path / "run"))
        train, val = p.get_parsed_content("train#datalist"), p.get_parsed_content("validate#datalist")
        assert (len(train), len(val)) == sizes
        assert {"image", "label", "id"} <= set(train[0]) and 0 <= train[0]["label"] < NUM_CLASSES[name]
        assert not {it["id"] for it in train} & {it["id"] for it in val}
        assert set(range(NUM_CLASSES[name])) == {it["label"] for it in train}
        small = _parser(name, ["train.json"], **over, output_dir=str(tmp_path / "run"), limit_val=2, cache_rate=0.0)
        item = small.get_parsed_content("validate#dataset")[0]
        size = p.get_parsed_content("image_size")
        assert tuple(item["image"].shape) == (3, size, size)
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert not (tmp_path / "run" / "split.csv").exists()  # a given split is read, never rewritten
    # MedMNIST variants: parse for train and evaluate; offline, the reader says where to put the file
    for extra in EXTRA.get(name, []):
        for first in ("train.json", "evaluate.json"):
            p = _parser(name, [first, f"{extra}.json"], download=False, data_root=str(tmp_path / "nothing"))
            assert p.get_parsed_content("dataset_name") == extra
            assert p.get_parsed_content("image_size") == 28
            key = "datalist" if first == "evaluate.json" else "train#datalist"
            assert f"{extra}.npz" in _offline_error(lambda p=p, key=key: p.get_parsed_content(key))
        p = _parser(name, ["train.json", f"{extra}.json"])
        assert len(p.get_parsed_content("vocabulary")) == {"dermamnist": 7, "octmnist": 4}[extra]
        assert p.get_parsed_content("vision")["in_channels"] == 3


def test_derma_vocabulary_maps_ham_labels_and_dermamnist_indices():
    p = _parser("derma_isic", ["train.json"])
    vocab = p.get_parsed_content("vocabulary")
    assert vocab.tokens == [f"<|derma_{c}|>" for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")]
    assert vocab.index_of_label("mel") == 4 and vocab[4].keyword == "melanoma"
    assert vocab[0].keyword == "actinic keratosis / intraepithelial carcinoma"
    assert p.get_parsed_content("balanced_sampler") is True
    mm = _parser("derma_isic", ["train.json", "dermamnist.json"]).get_parsed_content("vocabulary")
    assert mm.names == vocab.names  # DermaMNIST class index i = the same attribute as HAM10000's dx
    from attok_monai.data.medmnist import MEDMNIST_INFO

    labels = MEDMNIST_INFO["dermamnist"]["labels"]
    assert labels[5] == "melanocytic nevi" and vocab[5].keyword == "melanocytic nevus"
    oct4 = _parser("oct_retina", ["train.json", "octmnist.json"]).get_parsed_content("vocabulary")
    assert [a.concept for a in oct4] == ["cnv", "dme", "drusen", "normal"]


# ------------------------------------------------------------------------------------------------ pathology split
def test_pathology_given_split_keeps_groups_apart(data_root, tmp_path):
    require(data_root / "lc25000_lung" / "labels.csv")
    p = _parser("pathology_lung", ["train.json"], data_root=str(data_root / "lc25000_lung"),
                output_dir=str(tmp_path / "run"))
    table = p.get_parsed_content("table")
    parts: dict[str, set[str]] = {}
    for it in table.items:
        assert it["group"] is not None
        parts.setdefault(it["split"], set()).add(it["group"])
    assert set(parts) == {"train", "val"}
    assert not parts["train"] & parts["val"]
    params = p.get_parsed_content("split_params")
    assert params["split_source"] == "column" and params["split_groups_in_several_splits"] == 0
    assert params["split_n_train"] == 1740 and params["split_n_val"] == 238


def test_pathology_table_without_split_gets_grouped_split_in_run_folder(data_root, tmp_path):
    """A user's table without a split column: the grouped split is computed, written to the run folder, and its
    counts become MLflow params; no group is in two parts."""
    table = _table_without_split(data_root, tmp_path / "data")
    run = tmp_path / "run"
    p = _parser("pathology_lung", ["train.json"], data_root=str(table.parent), output_dir=str(run))
    train, val = p.get_parsed_content("train#datalist"), p.get_parsed_content("validate#datalist")
    assert len(train) + len(val) == 1978
    assert 0.15 < len(val) / 1978 < 0.25
    assert not {it["group"] for it in train} & {it["group"] for it in val}
    written = (run / "split.csv").read_text().splitlines()
    assert written[0].startswith("# attok-monai split") and written[1] == "id,split" and len(written) == 2 + 1978
    params = p.get_parsed_content("split_params")
    assert params["split_source"] == "computed" and params["split_n_val"] == len(val)
    assert params["split_groups_in_several_splits"] == 0 and params["split_file"] == "split.csv"
    # the split has its own seed (not the training seed): another run, or an evaluation, computes the same parts
    other = _parser("pathology_lung", ["train.json"], data_root=str(table.parent), output_dir=str(tmp_path / "run2"),
                    seed=7)
    assert [it["id"] for it in other.get_parsed_content("validate#datalist")] == [it["id"] for it in val]
    ev = _parser("pathology_lung", ["evaluate.json"]).get()
    assert ev["split_seed"] == p.get("split_seed") and ev["split_fractions"] == p.get("split_fractions")


def _table_without_split(data_root: Path, folder: Path) -> Path:
    """LC25000 lung's label table without its split column (a user's table): the bundles compute a grouped split."""
    src = require(data_root / "lc25000_lung" / "labels.csv")
    table = folder / "labels.csv"
    table.parent.mkdir(parents=True)
    with open(src, newline="") as f_in, open(table, "w", newline="") as f_out:
        reader = csv.DictReader(f_in)
        writer = csv.DictWriter(f_out, ["image", "label", "group"])
        writer.writeheader()
        for row in reader:
            writer.writerow({"image": str(src.parent / row["image"]), "label": row["label"], "group": row["group"]})
    return table


def test_check_split_refuses_a_part_computed_otherwise(tmp_path):
    from attok_monai.bundle.model_folder import SPLIT_FILE, check_split, split_record, write_split_record
    from attok_monai.errors import InputError

    trained = split_record({"split_seed": 2, "split_fractions": {"train": 0.8, "val": 0.2}}, "a" * 32)
    write_split_record(tmp_path, trained)
    assert json.loads((tmp_path / SPLIT_FILE).read_text()) == trained
    check_split(tmp_path, "val", trained)  # the same split: scored
    other_seed = split_record({"split_seed": 0, "split_fractions": {"train": 0.8, "val": 0.2}}, "a" * 32)
    with pytest.raises(InputError, match=r"--split_seed 2 \(this evaluation: 0\)") as err:
        check_split(tmp_path, "val", other_seed)
    assert "may hold its training images" in str(err.value) and "split_fractions" not in str(err.value)
    with pytest.raises(InputError, match="the items differ"):  # the table changed: the split is recomputed over it
        check_split(tmp_path, "train", split_record(trained["settings"], "b" * 32))
    check_split(tmp_path, "test", other_seed)  # a test part is never computed from the training items
    check_split(tmp_path, "val", split_record({"split_seed": 0}, "b" * 32, computed=False))  # parts from a column
    check_split(tmp_path, "val", None)  # fixed splits (MedMNIST)
    check_split(tmp_path / "old_folder", "val", other_seed)  # a model folder from before split.json
    write_split_record(tmp_path, split_record({"split_seed": 2}, "a" * 32, computed=False))
    with pytest.raises(InputError, match="came from a split column or file"):
        check_split(tmp_path, "val", other_seed)


def test_evaluate_scores_a_computed_split_only_as_training_made_it(data_root, tmp_path):
    """A table without a split column: training records its computed split in the model folder (``split.json``);
    evaluate scores its val part with the same settings and refuses another split seed or a changed table, under
    which the recomputed val part could hold training images."""
    from attok_monai.errors import InputError

    table = _table_without_split(data_root, tmp_path / "data")
    run = tmp_path / "run"
    wf = _workflow("pathology_lung", ["train.json"], tmp_path, data_root=str(table.parent), epochs=1,
                   epoch_length=None, batch_size=8, val_batch_size=8, limit_train=8, limit_val=8, output_dir=str(run),
                   ckpt_dir=str(tmp_path / "models"), amp=False, tsne=False, resume=False, fit_temperature=False)
    wf.run()
    wf.finalize()
    record = json.loads((run / "model" / "split.json").read_text())
    assert record["computed"] and record["settings"]["split_seed"] == 0 and len(record["data_md5"]) == 32

    def evaluate(name: str, **kw):
        ev = _workflow("pathology_lung", ["evaluate.json"], tmp_path, data_root=str(table.parent), split="val",
                       limit=8, model_dir=str(run / "model"), output_dir=str(tmp_path / name), tsne=False, **kw)
        ev.run()
        ev.finalize()

    evaluate("same")
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())["metrics"]["num_samples"] == 8
    err = _root_cause(lambda: evaluate("seed1", split_seed=1))
    assert isinstance(err, InputError) and "--split_seed 0 (this evaluation: 1)" in str(err)
    lines = table.read_text().splitlines(keepends=True)  # the table changed (a row less): the val part recomputed
    table.write_text("".join(lines[:-1]))  # over it may hold training images
    err = _root_cause(lambda: evaluate("grown"))
    assert isinstance(err, InputError) and "the items differ" in str(err)


# ------------------------------------------------------------------------------------------------ training runs
TRAIN_RUNS = ["derma_isic", "oct_retina", "pathology_lung", "xray_pneumonia"]


def _train(name: str, tmp: Path, data_root: Path, **kw):
    folder, marker, _ = BUNDLES[name]
    require(data_root / folder / marker)
    over = dict(
        _data_root_override(name, data_root), epochs=1, epoch_length=None, batch_size=16, val_batch_size=16,
        limit_train=48, limit_val=16, output_dir=str(tmp / "run"), ckpt_dir=str(tmp / "models"), amp=False,
        tsne=False, resume=False,
    )
    over.update(kw)
    wf = _workflow(name, ["train.json"], tmp, **over)
    wf.run()
    wf.finalize()
    return wf


@pytest.fixture(scope="module")
def trained_lung(tmp_path_factory, data_root):
    tmp = tmp_path_factory.mktemp("lung")
    return tmp, _train("pathology_lung", tmp, data_root)


def _check_mlflow(tmp: Path, name: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name(f"attok_{name}").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    for key in ("loss", "ntp", "val_open_accuracy", "val_open_balanced_accuracy", "val_open_macro_f1", "val_auc"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "ntp")) == 3  # 48 samples / batch 16, 1 epoch
    arts = {a.path for d in ("val", "model") for a in client.list_artifacts(run.info.run_id, d)}
    for art in ("val/metrics.json", "val/per_class.csv", "model/model.pt", "model/vocabulary.json"):
        assert art in arts, art
    metrics = json.loads((tmp / "run" / "val" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 16 and 0 <= metrics["open_balanced_accuracy"] <= 1
    per_class = (tmp / "run" / "val" / "per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,precision,recall,f1,support" and len(per_class) == 1 + NUM_CLASSES[name]
    return run.data.params


@pytest.mark.parametrize("name", [n for n in TRAIN_RUNS if n != "pathology_lung"])
def test_few_iteration_training_logs_to_mlflow(name, tmp_path, data_root):
    _train(name, tmp_path, data_root)
    params = _check_mlflow(tmp_path, name)
    assert params["num_train"] == "48" and params["num_val"] == "16"
    assert params["dataset"] == json.loads((_configs(name) / "train.json").read_text())["dataset_name"]
    assert params["use_acc"] == "True" and len(params["data_md5"]) == 32
    if name == "derma_isic":
        assert params["balanced_sampler"] == "True" and params["augment"] == "derma_train"
        assert params["split_source"] == "file" and params["split_n_train"] == "7015"
        assert params["split_n_val"] == "1000" and "<|derma_mel|>" in params["vocabulary"]
    if name == "oct_retina":
        assert params["augment"] == "oct_train" and params["split_source"] == "column"
    if name == "xray_pneumonia":
        assert params["augment"] == "chest_xray_train"
    assert (tmp_path / "run" / "model" / "model.pt").is_file()


def test_lung_training_and_evaluation_on_a_split(trained_lung, data_root, tmp_path):
    tmp, _ = trained_lung
    params = _check_mlflow(tmp, "pathology_lung")
    assert params["split_source"] == "column" and params["augment"] == "pathology_train"
    ev = _workflow("pathology_lung", ["evaluate.json"], tmp_path, data_root=str(data_root / "lc25000_lung"),
                   split="train", limit=16, model_dir=str(tmp / "run" / "model"),
                   checkpoint=str(tmp / "models" / "model_best.pt"), output_dir=str(tmp_path / "eval"), tsne=False)
    ev.run()
    ev.finalize()
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["num_samples"] == 16 and "open_balanced_accuracy" in metrics
    ids = {row.split(",")[0] for row in (tmp_path / "eval" / "predictions.csv").read_text().splitlines()[1:]}
    assert all(i.startswith("images/lung") for i in ids)
    missing = _workflow("pathology_lung", ["evaluate.json"], tmp_path, data_root=str(data_root / "lc25000_lung"),
                        split="test", model_dir=str(tmp / "run" / "model"), output_dir=str(tmp_path / "ev2"))
    err = _root_cause(missing.run)
    assert isinstance(err, ValueError) and "no rows in split 'test'" in str(err)


# ------------------------------------------------------------------------------------------------ CLI
def test_short_cli_resolves_same_config_as_monai_cli(monkeypatch, tmp_path):
    from attok_monai.bundle.cli import bundle_run_args

    bundle = REPO / "bundles" / "derma_isic"
    configs = bundle / "configs"
    kwargs = bundle_run_args(["--config", str(bundle), "train", "--extra", "dermamnist", "--epochs", "3",
                              "--balanced_sampler", "False"])
    assert kwargs["config_file"] == [str(configs / "train.json"), str(configs / "dermamnist.json")]
    assert kwargs["meta_file"] == str(configs / "metadata.json")
    assert kwargs["logging_file"] == str(configs / "logging.conf")
    short = ConfigParser()
    short.read_config(kwargs["config_file"])
    short.update({k: v for k, v in kwargs.items() if k not in ("config_file", "meta_file", "logging_file")})
    files = f"['{configs / 'train.json'}','{configs / 'dermamnist.json'}']"
    monkeypatch.setattr("sys.argv", ["monai.bundle", "run", "--config_file", files])
    long = ConfigParser()
    long.read_config([str(configs / "train.json"), str(configs / "dermamnist.json")])
    long.update({"epochs": 3, "balanced_sampler": False})
    assert short.get_parsed_content("bundle_root") == long.get_parsed_content("bundle_root") == str(bundle)
    for key in ("epochs", "balanced_sampler", "dataset_name", "image_size", "attributes", "open_questions",
                "closed_questions", "vision", "llm", "augment", "data_root"):
        assert short.get_parsed_content(key) == long.get_parsed_content(key), key
    assert short.get_parsed_content("dataset_name") == "dermamnist"
    assert short.get_parsed_content("vocabulary") == long.get_parsed_content("vocabulary")
