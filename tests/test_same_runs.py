"""benchmarks/same_runs.py: two recorded runs compared metric by metric."""

from __future__ import annotations

import json

import pytest

from benchmarks.same_runs import compare, cpu_of, table


def test_a_rerun_is_compared_on_every_metric_but_time_hardware_and_start():
    old = {"open_accuracy": 0.5, "auc": 0.8, "per_class_f1": {"a": 0.4}, "wall_time_s": 10, "hardware": "x",
           "start": None}
    new = {"open_accuracy": 0.5, "auc": 0.81, "per_class_f1": {"a": 0.4}, "wall_time_s": 12, "hardware": "y",
           "overrides": []}
    assert compare(old, new) == (["auc", "open_accuracy", "per_class_f1"], ["auc"])
    assert compare(old, dict(old))[1] == []


def test_the_table_names_both_runs_their_cpu_and_what_differs(tmp_path):
    run = {"open_accuracy": 0.5333, "open_macro_f1": 0.344, "auc": 0.8,
           "hardware": "AMD EPYC (family 25, model 1), torch CPU kernels AVX2"}
    (tmp_path / "fundus_dr_old.json").write_text(json.dumps({"all/0": run}))
    (tmp_path / "fundus_dr_new.json").write_text(json.dumps({"all/0": run | {"auc": 0.7, "hardware": "Intel"}}))
    lines = table(["fundus_dr_old:all/0=fundus_dr_new"], state=tmp_path).splitlines()
    assert lines[2] == ("| fundus_dr | all/0 | `fundus_dr_old` (family 25, model 1) | `fundus_dr_new` (Intel) | "
                        "53.3 / 34.4 | 3 | auc |")
    with pytest.raises(SystemExit, match="no run 'baseline/0'"):
        table(["fundus_dr_old:baseline/0=fundus_dr_new"], state=tmp_path)
    with pytest.raises(SystemExit, match="expected <recorded set>"):
        table(["fundus_dr_old=fundus_dr_new"], state=tmp_path)


def test_the_cpu_kind_is_read_from_its_family_and_model_numbers():
    intel = ("Intel(R) Xeon(R) Processor (family 6, model 167), torch CPU kernels AVX512 (pinned: "
             "ATEN_CPU_CAPABILITY=avx2), 2 logical cores visible")
    assert cpu_of({"hardware": intel}) == "family 6, model 167"
    assert cpu_of({"hardware": "AMD EPYC, torch CPU kernels AVX2, 2 logical cores visible"}) == "AMD EPYC"
    assert cpu_of({}) == "not recorded"


def test_an_untagged_result_set_names_its_bundle(tmp_path):
    run = {"open_accuracy": 0.5, "open_macro_f1": 0.4}
    for name in ("fundus_dr", "fundus_dr_r32"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"all/0": run}))
    assert table(["fundus_dr:all/0=fundus_dr_r32"], state=tmp_path).splitlines()[2].startswith("| fundus_dr | all/0 |")
