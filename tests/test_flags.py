"""Yes/no settings are booleans or the run stops naming the key: MONAI's own CLI (python-fire) passes
``--acc_bias false`` on as the *text* ``"false"``, which Python reads as true, so before these checks that override
silently kept ACC's biases (and ``--balanced_sampler false`` kept the sampler on)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fire.parser import DefaultParseValue
from monai.bundle import ConfigWorkflow

from attok_monai.bundle.runs import run_settings
from attok_monai.errors import InputError, check_flags, refuse_flag_text, require_flag
from attok_monai.networks.nets import AttTokConfig
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_premise_fire_keeps_lower_case_false_as_text():
    assert DefaultParseValue("false") == "false" and DefaultParseValue("False") is False
    assert bool("false") is True  # what a truthiness test made of it


def test_require_and_check_flags_name_the_key_and_the_fix():
    assert require_flag(False, "x") is False and require_flag(True, "x") is True
    with pytest.raises(InputError, match=r"acc_bias: got the text 'false' .* write --acc_bias False"):
        require_flag("false", "acc_bias")
    with pytest.raises(InputError, match=r"tsne: expected True or False, got 2"):
        require_flag(2, "tsne")
    check_flags(amp=True, tsne=False)
    with pytest.raises(InputError) as err:
        check_flags(amp="TRUE", tsne=False, use_acc="no")
    assert "amp: got the text 'TRUE'" in str(err.value) and "write --amp True" in str(err.value)
    assert "use_acc: expected True or False, got 'no'" in str(err.value) and "tsne" not in str(err.value)
    refuse_flag_text({"lr": 0.001, "dataset": "retinamnist", "download": False})
    with pytest.raises(InputError, match=r"run settings: balanced_sampler: got the text 'False'"):
        refuse_flag_text({"balanced_sampler": "False", "lr": 0.1}, "run settings")


def test_attok_config_refuses_text_for_its_switches():
    with pytest.raises(InputError, match=r"AttTokConfig: acc_bias: got the text 'false'"):
        AttTokConfig(acc_bias="false")
    with pytest.raises(ValueError, match="use_acc"):
        AttTokConfig.from_dict({"use_acc": "True"})
    cfg = AttTokConfig(use_acc=0, acc_norm=1)  # 0 / 1 as older hand-made dicts held them
    assert cfg.use_acc is False and cfg.acc_norm is True


def test_run_settings_refuse_text_booleans():
    assert run_settings({"use_acc": False, "lr": 0.1}, amp=True) == {"use_acc": False, "lr": 0.1, "amp": True}
    with pytest.raises(InputError, match="use_acm: got the text 'false'"):
        run_settings({"use_acm": "false", "lr": 0.1})


def test_ensure_medmnist_refuses_text_download(tmp_path):
    from attok_monai.data.medmnist import ensure_medmnist

    with pytest.raises(InputError, match="download: got the text 'false'"):
        ensure_medmnist("retinamnist", tmp_path, download="false")


def _checked_keys(initialize: list) -> set[str]:
    keys: set[str] = set()
    for expr in initialize:
        if isinstance(expr, str) and "attok_monai.errors.check_flags(" in expr:
            keys |= {k for k, v in re.findall(r"(\w+)=@(\w+)", expr) if k == v}
    return keys


# keys that are booleans by default but take another value too, or are checked where they are used (tested below)
NOT_CHECKED_AT_START = {
    "resume": "false or the run folder to resume",
    "download": "attok_monai.data.medmnist.ensure_medmnist",
    "gradient_checkpointing": "attok_monai.networks.builders.build_hf_attok",
    "save_maps": "attok_monai.engines.inference.run_inference", "screen": "attok_monai.engines.inference.run_inference",
}
GOLDEN = sorted((REPO / "tests" / "data" / "resolved_configs").glob("*.json"))


@pytest.mark.parametrize("golden", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_every_yes_no_key_is_checked_before_the_run(golden):
    """Each top-level boolean of every bundle config set (the resolved goldens: train, its variants, multi-GPU,
    evaluate, inference, ...) is named in the ``check_flags`` entry its ``initialize`` starts with, or is checked
    where it is used (``NOT_CHECKED_AT_START``)."""
    assert len(GOLDEN) > 50
    cfg = json.loads(golden.read_text())
    flags = {k for k, v in cfg.items() if isinstance(v, bool)} - set(NOT_CHECKED_AT_START)
    if not flags:
        return
    init = cfg["initialize"]
    # the checks come first (after the process group, on multi-GPU): nothing is built or written before them
    work = [e for e in init if "init_distributed" not in e and "check_cli_overrides" not in e]
    assert "attok_monai.errors.check_flags(" in work[0], work[0]
    assert "$attok_monai.bundle.overrides.check_cli_overrides()" in init
    assert not flags - _checked_keys(init), sorted(flags - _checked_keys(init))
    assert "$import attok_monai.errors" in cfg["imports"] and "$import attok_monai.bundle.overrides" in cfg["imports"]


def test_keys_checked_where_used():
    from attok_monai.engines.inference import run_inference
    from attok_monai.networks.builders import build_hf_attok

    with pytest.raises(InputError, match="screen: got the text 'false'"):
        run_inference(None, None, [], None, "out.csv", screen="false")
    with pytest.raises(InputError, match="gradient_checkpointing: got the text 'false'"):
        build_hf_attok("none", ["a", "b"], gradient_checkpointing="false")


def test_monai_cli_false_stops_the_fundus_run_naming_the_key(tmp_path, data_root):
    """``python -m monai.bundle run --config_file .../train.json --acc_bias false``: the override arrives as text and
    the run stops at its first initialize step with one line naming the key (nothing trained, nothing written)."""
    bundle = REPO / "bundles" / "fundus_dr"
    wf = ConfigWorkflow(
        config_file=str(bundle / "configs" / "train.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"), workflow_type="train", bundle_root=str(bundle),
        output_dir=str(tmp_path / "run"), data_root=str(Path(data_root) / "medmnist"), download=False,
        acc_bias=DefaultParseValue("false"),
    )
    with pytest.raises(Exception) as err:
        wf.initialize()
    from attok_monai.errors import user_error

    found = user_error(err.value)
    assert isinstance(found, InputError) and "acc_bias: got the text 'false'" in str(found)
    assert not (tmp_path / "run" / "settings.json").exists()
