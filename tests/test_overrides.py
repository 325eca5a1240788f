"""A command-line override that names no config key stops the run naming it (MONAI would add it to the config, nothing
would read it, and the run would keep the default it meant to change)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from attok_monai.bundle.overrides import check_cli_overrides, check_override_keys, unknown_override_keys
from attok_monai.errors import InputError, user_error
from tests.conftest import REPO

TRAIN = "bundles/fundus_dr/configs/train.json"
MONAI_MAIN = "/site-packages/monai/bundle/__main__.py"  # sys.argv[0] under python -m monai.bundle


def test_unknown_override_keys():
    config = {"lr": 0.1, "network_def": {"_target_": "x", "gamma": 0.1}, "handlers": [{"a": 1}]}
    keys = ["lr", "network_def#gamma", "network_def#dropout", "handlers#0#a", "meta_file", "config_file",
            "lrr", "nope#x", "network_def#gamma#deeper", "handlers#3", "run_name"]
    assert unknown_override_keys(config, keys) == ["lrr", "nope#x", "network_def#gamma#deeper", "handlers#3",
                                                   "run_name"]
    assert "run_name" not in unknown_override_keys(config, keys, tracking=True)  # --tracking mlflow's settings


def test_check_override_keys_names_the_key_and_the_closest():
    check_override_keys(TRAIN, ["epochs", "acc_bias", "train#trainer#max_epochs", "bundle_root"])
    with pytest.raises(InputError, match=r"--acc_bais \(did you mean --acc_bias.*no such key in train.json"):
        check_override_keys(TRAIN, ["acc_bais", "epochs"])
    with pytest.raises(InputError, match=r"--zzz: no such key in train.json, baseline.json"):
        check_override_keys([TRAIN, "bundles/fundus_dr/configs/baseline.json"], ["zzz"])


def test_check_cli_overrides_reads_a_monai_command_line_only():
    check_cli_overrides(["pytest", "run", "--config_file", TRAIN, "--acc_bais", "False"])  # not MONAI's CLI
    check_cli_overrides([MONAI_MAIN, "run", "--args_file", "a.json", "--acc_bais", "False"])  # overrides in a file
    check_cli_overrides([MONAI_MAIN, "run", "--config_file", TRAIN, "--epochs", "2", "--use_acc=False", "--amp"])
    both = f"['{TRAIN}','bundles/fundus_dr/configs/baseline.json']"
    check_cli_overrides([MONAI_MAIN, "run", "--config_file", both, "--lr", "0.1"])
    with pytest.raises(InputError, match=r"--lamda_start \(did you mean --lambda_start"):
        check_cli_overrides([MONAI_MAIN, "run", "--config_file", both, "--lamda_start", "0.1"])


def test_check_cli_overrides_reads_the_export_commands():
    """``ckpt_export``/``onnx_export``/``verify_net_in_out`` take their own arguments (from MONAI's signatures) and
    config overrides; a command whose overrides are not checked passes."""
    from attok_monai.bundle.overrides import script_arguments

    export = "bundles/fundus_dr/configs/export.json"
    assert {"filepath", "ckpt_file", "use_trace", "input_shape", "converter_kwargs"} <= script_arguments("ckpt_export")
    assert "override" not in script_arguments("onnx_export") and script_arguments("init_bundle") is None
    check_cli_overrides([MONAI_MAIN, "ckpt_export", "network_def", "--filepath", "m.ts", "--ckpt_file", "model.pt",
                         "--config_file", export, "--model_dir", "M", "--use_trace", "True"])
    check_cli_overrides([MONAI_MAIN, "init_bundle", "x", "--mdoel_dir", "M"])
    with pytest.raises(InputError, match=r"--mdoel_dir \(did you mean --model_dir.*no such key in export.json"):
        check_cli_overrides([MONAI_MAIN, "onnx_export", "network_def", "--filepath", "m.onnx", "--config_file", export,
                             "--mdoel_dir", "M"])
    with pytest.raises(InputError, match="--tracking"):  # run's setting, not an export argument
        check_cli_overrides([MONAI_MAIN, "ckpt_export", "network_def", "--config_file", export, "--tracking", "x"])


@pytest.mark.usefixtures("one_torch_thread")
def test_real_ckpt_export_refuses_a_mistyped_key_before_loading(tmp_path):
    """MONAI's ``ckpt_export`` runs no ``initialize``: ``export.json`` checks from its network's ``_requires_``, which
    resolves before the model folder is read (here it does not even exist) and before anything is written."""
    (tmp_path / "model.pt").write_bytes(b"")  # ckpt_export wants the file to exist; it is never read
    out = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(tmp_path / "m.ts"),
         "--ckpt_file", str(tmp_path / "model.pt"), "--config_file", "bundles/fundus_dr/configs/export.json",
         "--mdoel_dir", str(tmp_path / "no_model")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--mdoel_dir (did you mean --model_dir" in out.stderr + out.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_workflow_from_monai_cli_stops_on_a_mistyped_key(monkeypatch, tmp_path):
    """What ``python -m monai.bundle run --config_file .../train.json --acc_bais False`` does: MONAI adds the key, and
    the workflow stops at its first initialize step, nothing trained or written."""
    from monai.bundle import ConfigWorkflow

    monkeypatch.setattr(sys, "argv", [MONAI_MAIN, "run", "--config_file", TRAIN, "--acc_bais", "False"])
    bundle = REPO / "bundles" / "fundus_dr"
    wf = ConfigWorkflow(config_file=str(REPO / TRAIN), meta_file=str(bundle / "configs" / "metadata.json"),
                        logging_file=str(bundle / "configs" / "logging.conf"), workflow_type="train",
                        bundle_root=str(bundle), output_dir=str(tmp_path / "run"), acc_bais=False)
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert "--acc_bais (did you mean --acc_bias" in str(user_error(err.value))
    assert not (tmp_path / "run").exists()


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("launcher", ["python", "torchrun"])
def test_real_monai_cli_refuses_a_mistyped_key(tmp_path, launcher):
    """``python -m monai.bundle run`` and ``torchrun -m monai.bundle run`` (the multi-GPU launch; one CPU process here)
    both leave MONAI's ``__main__.py`` in ``sys.argv[0]``, so the check reads both command lines."""
    head = [sys.executable, "-m", "monai.bundle"] if launcher == "python" else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "monai.bundle"]
    out = subprocess.run(
        head + ["run", "--config_file", TRAIN, "--acc_bais", "False", "--output_dir", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "--acc_bais (did you mean --acc_bias" in out.stderr + out.stdout
    assert not (tmp_path / "run" / "settings.json").exists()


@pytest.mark.parametrize(("bundle", "key", "meant"), [("fundus_dr", "inptu_dir", "input_dir"),
                                                       ("vqa_rad", "input_tabel", "input_table")])
def test_inference_from_monai_cli_stops_on_a_mistyped_key(monkeypatch, tmp_path, bundle, key, meant):
    """``python -m monai.bundle run --config_file .../inference.json --inptu_dir D``: the key is refused at the first
    initialize step, before a model is loaded or an output written (the classification bundles share one check)."""
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / bundle / "configs"
    monkeypatch.setattr(sys, "argv", [MONAI_MAIN, "run", "--config_file", str(configs / "inference.json"), f"--{key}",
                                      str(tmp_path)])
    wf = ConfigWorkflow(config_file=str(configs / "inference.json"), meta_file=str(configs / "metadata.json"),
                        logging_file=str(configs / "logging.conf"), workflow_type="infer",
                        model_dir=str(tmp_path / "no_model"), output_file=str(tmp_path / "out.csv"), **{key: str(tmp_path)})
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert f"--{key} (did you mean --{meant}" in str(user_error(err.value))
    assert not (tmp_path / "out.csv").exists()


def test_scan_overrides_is_the_one_scanner_of_both_command_lines():
    from attok_monai.bundle.cli import _split
    from attok_monai.bundle.overrides import scan_overrides

    argv = ["--config", "bundles/fundus_dr", "evaluate", "--split=test", "--epochs", "2", "--amp", "--extra", "baseline",
            "--debug", "--lr", "1e-3"]
    ours, pairs = scan_overrides(argv, own_options=("--config", "--extra"), own_flags=("--debug",))
    assert ours == ["--config", "bundles/fundus_dr", "evaluate", "--extra", "baseline", "--debug"]
    assert pairs == {"split": "test", "epochs": "2", "amp": None, "lr": "1e-3"}
    assert scan_overrides(["run", "--acc_bias", "false"])[1] == {"acc_bias": "false"}  # raw text: what fire sees
    assert _split(argv)[1] == {"split": "test", "epochs": 2, "amp": True, "lr": 1e-3}  # the short form parses values
    with pytest.raises(ValueError, match="overrides are --key value pairs"):
        scan_overrides(["--epochs", "2", "--"])
    check_cli_overrides([MONAI_MAIN, "run", "--config_file", "--", "x"])  # malformed: left to fire's own message
