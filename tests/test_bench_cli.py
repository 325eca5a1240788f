"""The benchmark scripts' command-line helpers (no training)."""

from __future__ import annotations

import pytest

from benchmarks.bench_bundles import override_args


def test_override_pairs_become_monai_cli_overrides():
    assert override_args(["epochs=10", "image_size=64", "vision#widths=[8,16]"]) == [
        "--epochs", "10", "--image_size", "64", "--vision#widths", "[8,16]"]
    assert override_args(["lr=a=b"]) == ["--lr", "a=b"]  # only the first '=' splits
    assert override_args([]) == []


@pytest.mark.parametrize("bad", ["epochs", "--epochs=10", "=10"])
def test_override_without_key_value_names_the_pair(bad):
    with pytest.raises(SystemExit, match="key=value"):
        override_args([bad])


def test_a_result_set_holds_runs_of_one_generalist(tmp_path, monkeypatch):
    """Each result records the generalist it started from (card run name, weights MD5); adding runs started from
    another generalist, or to results that never recorded one, stops with a message naming the state file."""
    import json

    from benchmarks.bench_bundles import check_same_start, start_of

    def generalist(name: str, weights: bytes):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "model.pt").write_bytes(weights)
        (folder / "generalist.json").write_text(json.dumps({"kind": "attok_compact_generalist", "run_name": name}))
        return folder

    a, b = generalist("gen_a", b"weights a"), generalist("gen_b", b"weights b")
    assert start_of(["lr=0.001"]) is None  # from scratch
    start_a = start_of([f"generalist_dir={a}", "acc_norm=True"])
    assert start_a["generalist_run"] == "gen_a" and len(start_a["generalist_md5"]) == 32
    assert start_of([f"generalist_dir={b}"])["generalist_md5"] != start_a["generalist_md5"]
    state = tmp_path / "fundus_dr_gen.json"
    check_same_start(state, {}, start_a)  # an empty set takes any start
    check_same_start(state, {"all/0": {"start": start_a}}, start_a)
    retrained = generalist("gen_a_again", b"weights a")  # the same command on the same CPU kind: the same weights
    check_same_start(state, {"all/0": {"start": start_a}}, start_of([f"generalist_dir={retrained}"]))
    check_same_start(state, {"all/0": {"open_accuracy": 0.5}}, None)  # from scratch, recorded before starts were
    with pytest.raises(SystemExit, match=r"fundus_dr_gen.json: its recorded runs started from .*gen_a.*another --tag"):
        check_same_start(state, {"all/0": {"start": start_a}}, start_of([f"generalist_dir={b}"]))
    with pytest.raises(SystemExit, match=r"started from null"):  # written before starts were recorded
        check_same_start(state, {"all/0": {"open_accuracy": 0.5}}, start_a)
    with pytest.raises(SystemExit, match="expected a compact generalist's model folder"):
        start_of([f"generalist_dir={tmp_path / 'nothing'}"])
    # starts_table says which generalist rows cannot be continued from a given generalist, and why
    from benchmarks import starts_table

    states = tmp_path / "state"
    states.mkdir()
    monkeypatch.setattr(starts_table, "STATE", states)
    row = starts_table.Row("oct_retina", "generalist", "all", "gen")
    assert starts_table.foreign_start(row, str(a)) is None  # nothing recorded yet
    (states / "oct_retina_gen.json").write_text(json.dumps({"all/0": {"open_accuracy": 0.9}}))
    assert "not recorded" in starts_table.foreign_start(row, str(a))
    (states / "oct_retina_gen.json").write_text(json.dumps({"all/0": {"start": start_a}}))
    assert starts_table.foreign_start(row, str(a)) is None
    assert "gen_a" in starts_table.foreign_start(row, str(b))
    assert starts_table.foreign_start(starts_table.Row("oct_retina", "scratch", "all", "gen"), str(b)) is None


def test_tagged_runs_have_their_own_names():
    from benchmarks.bench_bundles import run_name

    assert run_name("fundus_dr", "all", 0) == "fundus_dr_bench_all_s0"
    assert run_name("fundus_dr", "all", 0, "lam01") == "fundus_dr_bench_lam01_all_s0"
    # a default run's folder prefix never matches a tagged run's folder (resume looks up f"{name}_*")
    assert not run_name("fundus_dr", "all", 0, "lam01").startswith(run_name("fundus_dr", "all", 0) + "_")


def test_extra_configs_merge_over_train_json():
    from benchmarks.bench_bundles import config_files, train_config

    files = config_files("oct_retina", ["octmnist"])
    assert [f.name for f in files] == ["train.json", "octmnist.json"]
    assert train_config("oct_retina")["dataset_name"] == "oct_cnv"
    assert train_config("oct_retina", ["octmnist"])["dataset_name"] == "octmnist"  # picks the OCTMNIST reference
    with pytest.raises(FileNotFoundError, match="configs/nosuch.json"):
        config_files("oct_retina", ["nosuch"])


def test_final_val_only_validates_after_the_overridden_epoch_count():
    from benchmarks.bench_bundles import final_epoch, train_config

    assert final_epoch("fundus_dr") == train_config("fundus_dr")["epochs"]
    assert final_epoch("fundus_dr", ["lr=0.1", "epochs=20"]) == 20
    assert final_epoch("vqa_rad", ["image_size=64"]) == train_config("vqa_rad")["epochs"]


def test_starts_table_reads_recorded_runs_and_marks_missing_ones(tmp_path, monkeypatch):
    import json

    from benchmarks import starts_table

    monkeypatch.setattr(starts_table, "STATE", tmp_path)
    (tmp_path / f"oct_retina_{starts_table.GENERALIST_TAG}.json").write_text(json.dumps({
        "baseline/0": {"open_accuracy": 0.90, "open_macro_f1": 0.80, "retrieval_accuracy": 0.4},  # recorded
        "baseline/2": {"open_accuracy": 0.94, "open_macro_f1": 0.84},  # before the baseline dropped it
        "all/1": {"open_accuracy": 0.95, "retrieval_accuracy": 0.9},
    }))
    lines = {(r[1], r[2], r[3], r[4]): r for r in (
        [c.strip() for c in line.split("|")] for line in starts_table.table().splitlines()[2:])}
    base = lines[("oct_retina", "generalist", "baseline", "-")]
    assert base[5] == "92.0 ± 2.8" and base[7] == "82.0 ± 2.8" and base[10] == "0,2"
    assert base[9] == "n/a"  # no book retrieval without attribute tokens, whatever an old run recorded
    assert lines[("oct_retina", "generalist", "+All", "today's defaults")][5:11] == ["95.0", "-", "-", "-", "90.0", "1"]
    assert lines[("oct_retina", "scratch", "+All", "today's defaults")][10] == "not run"
    # the issue asks for tokens alone from the generalist on every set, not only on the study's two
    assert all(lines[(b, "generalist", "tokens alone", "today's defaults")][10] == "not run"
               for b in ("oct_retina", "xray_pneumonia", "pathology_lung", "vqa_rad"))
    tag = starts_table.GENERALIST_TAG
    cmd = next(r for r in starts_table.ROWS if r.state == f"oct_retina_{tag}" and r.variant == "all").command("G")
    assert "--extra from_generalist" in cmd and f"--tag {tag} " in cmd and cmd.endswith("--override generalist_dir=G")
    # generalist A's rows (gone) are their own table, shown whether run or not, never in the one to complete
    assert not any(r.tag in ("gen", "gen_new") for r in starts_table.ROWS)
    early = [line for line in starts_table.table(starts_table.EARLIER).splitlines()[2:]]
    assert len(early) == len(starts_table.EARLIER) and all("| generalist A |" in line for line in early)
    assert starts_table.missing(starts_table.EARLIER) == starts_table.EARLIER  # no state here: every row missing
    # the five-seed fundus table (generalist D's runs) reads seeds the table leaves out
    (tmp_path / f"fundus_dr_{starts_table.D_TAG}.json").write_text(json.dumps(
        {f"baseline/{s}": {"open_accuracy": 0.5 + s / 100} for s in range(5)}))
    five = starts_table.table(starts_table.FUNDUS_FIVE, seeds=starts_table.FIVE_SEEDS).splitlines()[2]
    three = starts_table.table(starts_table.FUNDUS_FIVE[:1]).splitlines()[2]
    assert "| 52.0 ± 1.6 |" in five and "| 0,1,2,3,4 |" in five
    assert "| 51.0 ± 1.0 |" in three and "| 0,1,2 |" in three
    # E's vqa_rad runs all had the chosen keys; D's attribute-token rows are the reruns with them (its earlier runs
    # are levers on D)
    vqa = {r.variant: r.tag for r in starts_table.ROWS if r.bundle == "vqa_rad"}
    assert vqa == {"baseline": tag, "tokens": tag, "all": tag} and tag != starts_table.D_TAG
    vqa_d = {r.variant: r.tag for r in starts_table.ROWS_D if r.bundle == "vqa_rad"}
    assert vqa_d == {"baseline": starts_table.D_TAG, "tokens": "gen_d_keys", "all": "gen_d_keys"}
    assert {r.tag for r in starts_table.LEVERS_D if r.bundle == "vqa_rad" and r.variant == "tokens"} == {
        starts_table.D_TAG}
    # the generalist rows: baseline, tokens alone, +All on every set, +ACC and +ACM on the study's two
    assert sorted((r.bundle, r.variant) for r in starts_table.ROWS if r.from_generalist) == sorted(
        [(b, v) for b in starts_table.CLASSIFICATION + ("vqa_rad",) for v in ("baseline", "tokens", "all")]
        + [(b, v) for b in starts_table.STUDY_SETS for v in ("acc", "acm")])
    # each leave-one-out row (pre-trained with D's recipe) sits beside the scratch and generalist-D rows of its set
    for lo in (r for r in starts_table.LEAVE_OUT if r.tag == "gen_lo"):
        mates = {(r.start, r.tag) for r in starts_table.LEAVE_OUT if (r.bundle, r.variant) == (lo.bundle, lo.variant)}
        assert ("generalist D", starts_table.D_TAG) in mates and any(s == "scratch" for s, _ in mates), lo
        assert lo.from_generalist and "--extra from_generalist" in lo.command("G")


def test_class_table_gives_each_class_its_mean_f1_over_the_recorded_seeds(tmp_path, monkeypatch):
    import json

    import pytest

    from benchmarks import starts_table

    monkeypatch.setattr(starts_table, "STATE", tmp_path)
    (tmp_path / "fundus_dr_x.json").write_text(json.dumps({
        f"all/{s}": {"open_macro_f1": 0.3 + s / 10, "per_class_f1": {"no dr": 0.8, "mild": s / 10}} for s in range(3)}))
    rows = [starts_table.Row("fundus_dr", "generalist E", "all", "x"),
            starts_table.Row("fundus_dr", "scratch", "baseline", "absent")]  # no runs: no line
    lines = starts_table.class_table(rows).splitlines()
    assert lines[0] == "| start | variant | settings | no dr | mild | macro-F1 | seeds |" and len(lines) == 3
    assert lines[2] == "| generalist E | +All | today's defaults | 80.0 ± 0.0 | 10.0 ± 10.0 | 40.0 ± 10.0 | 0,1,2 |"
    (tmp_path / "derma_isic_x.json").write_text((tmp_path / "fundus_dr_x.json").read_text())
    with pytest.raises(ValueError, match="rows of one set"):
        starts_table.class_table(rows + [starts_table.Row("derma_isic", "scratch", "all", "x")])
    # every per-class table is one set's, and the class-balanced table's generalist rows say which generalist they are
    assert all({r.bundle for r in rows} == {b} for b, rows in starts_table.PER_CLASS.items())
    cb = starts_table.CLASS_BALANCED
    assert {r.start for r in cb if r.tag == starts_table.D_TAG} == {"generalist D"}
    assert {r.start for r in cb if r.tag == starts_table.GENERALIST_TAG} == {"generalist E"}
    assert {(r.bundle, r.variant) for r in cb if r.tag == "gen_cb"} == set(starts_table.C_RUNS)


def test_probe_features_scores_separable_features_and_finds_runs(tmp_path):
    import numpy as np

    from benchmarks import probe_features

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    x = rng.normal(size=(60, 4)) + 5 * np.eye(4)[y]  # class c shifted along axis c
    assert probe_features.linear_probe(x, y, x + 0.01, y) == (100.0, 100.0)
    acc, f1 = probe_features.linear_probe(x, y, x, np.roll(y, 20))  # every validation label wrong
    assert acc == 0.0 and f1 == 0.0

    runs = tmp_path / "bundles" / "oct_retina" / "runs"
    for name, weights in (("oct_retina_bench_gen_baseline_s0_20261201_000000_1", True),
                          ("oct_retina_bench_gen_baseline_s0_20261202_000000_2", True),
                          ("oct_retina_bench_gen_baseline_s0_20261203_000000_3", False),  # unfinished: no model.pt
                          ("oct_retina_bench_gen_lora_baseline_s0_20261204_000000_4", True)):
        (runs / name / "model").mkdir(parents=True)
        if weights:
            (runs / name / "model" / "model.pt").write_bytes(b"")
    found = probe_features.find_run("oct_retina", "gen", 0, root=tmp_path)
    assert found == runs / "oct_retina_bench_gen_baseline_s0_20261202_000000_2" / "model"
    assert probe_features.find_run("oct_retina", "gen", 1, root=tmp_path) is None
    # each row names the machine it was probed on; rows from before that was recorded say so
    rows = probe_features.table({"oct_retina": {"random initialisation": [76.6, 76.6], "old": [90.0, 89.0]},
                                 probe_features.HARDWARE: {"oct_retina": {"random initialisation": "cpu A"}}},
                                {"oct_retina": {"random initialisation": "cpu A"}}).splitlines()[2:]
    assert rows == ["| oct_retina | random initialisation | 76.6 | 76.6 | cpu A |",
                    "| oct_retina | old | 90.0 | 89.0 | not recorded (before 2026-12-03) |"]


def test_the_report_names_the_hardware_the_runs_recorded():
    """Each run records the machine it trained on; the report lists what the counted runs recorded (not the
    reporting machine) and counts the runs that recorded none."""
    from benchmarks._report import hardware
    from benchmarks.bench_bundles import run_hardware

    assert "torch CPU kernels" in hardware()  # names the instruction set torch's CPU kernels use
    results = {"all/0": {"hardware": "cpu A (AVX2)"}, "all/1": {"hardware": "cpu B (AVX512)"},
               "baseline/0": {"hardware": "cpu A (AVX2)"}, "baseline/2": {"open_accuracy": 0.5}}
    assert run_hardware(results, [0, 1]) == "cpu A (AVX2); cpu B (AVX512)"
    assert run_hardware(results, [0, 2]) == "cpu A (AVX2), not recorded for 1 of 3 runs (run before runs recorded it)"
    assert run_hardware({}, [0]) == "no runs"


def test_prior_shift_on_a_hand_built_run(tmp_path):
    """benchmarks/prior_shift.py: with balanced_sampler the decision's logits get log(training frequency) + log K;
    hand-computed on three images of two classes (training part 90% / 10%)."""
    import json

    from attok_monai.attributes import AttributeVocabulary
    from benchmarks.prior_shift import decisions

    vocab = AttributeVocabulary.coerce({"modality": "skin", "labels": {"0": "naevus", "1": "melanoma"}})
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "val").mkdir()
    (run / "model" / "vocabulary.json").write_text(json.dumps(vocab.to_dict()))
    (run / "settings.json").write_text(json.dumps({"balanced_sampler": True, "split_classes_train": "0:90,1:10",
                                                   "tau": 1.0}))
    names = vocab.names
    cols = [f"p_{a.name}" for a in vocab] + [f"retrieval_{a.name}" for a in vocab]
    rows = [(names[0], [0.4, 0.6, 0.1, 0.5]),   # p: melanoma; + log(0.9/0.1) shift -> naevus (right)
            (names[1], [0.05, 0.95, -0.2, 0.9]),  # melanoma either way (log 0.95/0.05 > log 9; 1.1 < 2.2: retrieval flips)
            (names[0], [0.7, 0.3, 0.3, 0.2])]     # naevus either way
    lines = ["id,label," + ",".join(cols)] + [f"{i},{y}," + ",".join(map(str, v)) for i, (y, v) in enumerate(rows)]
    (run / "val" / "predictions.csv").write_text("\n".join(lines) + "\n")
    out = decisions(run)
    assert out["answers"]["accuracy"] == pytest.approx(2 / 3)
    assert out["answers + log prior"]["accuracy"] == pytest.approx(1.0)
    assert out["retrieval"]["accuracy"] == pytest.approx(2 / 3)  # image 0 wrong (0.5 > 0.1)
    # retrieval + log 9: image 0 -> naevus (0.1 + 2.197 > 0.5), image 1 -> naevus (-0.2 + 2.197 > 0.9): wrong
    assert out["retrieval + log prior"]["accuracy"] == pytest.approx(2 / 3)
    assert out["majority rate"]["accuracy"] == pytest.approx(2 / 3)
    (run / "settings.json").write_text(json.dumps({"balanced_sampler": False}))  # trained at the data's frequencies
    out = decisions(run)
    assert out["answers + log prior"] == out["answers"] and out["retrieval + log prior"] == out["retrieval"]


def test_record_result_keeps_runs_added_by_another_command(tmp_path):
    """Two benchmark commands adding runs to one result set: each write re-reads the file, so neither loses the
    other's runs (before, each wrote back the copy it had read at its start)."""
    import json

    from benchmarks.bench_bundles import record_result

    state = tmp_path / "fundus_dr_gen_d.json"
    state.write_text(json.dumps({"baseline/0": {"open_accuracy": 0.5}}))
    seen_by_a = json.loads(state.read_text())  # command A started here
    record_result(state, "baseline/3", {"open_accuracy": 0.6})  # command B finished a run meanwhile
    merged = record_result(state, "baseline/4", {"open_accuracy": 0.7})  # then A finishes its run
    assert "baseline/3" not in seen_by_a
    assert set(json.loads(state.read_text())) == set(merged) == {"baseline/0", "baseline/3", "baseline/4"}
    assert not list(tmp_path.glob("*.tmp"))


def test_the_reported_command_quotes_override_values_for_the_shell():
    import argparse
    import shlex

    from benchmarks.bench_bundles import command_line

    expr = "data_file=$attok_monai.data.medmnist.ensure_medmnist(@dataset_name, @data_root, size=28, download=@download)"
    args = argparse.Namespace(seeds=[0, 1], jobs=1, final_val_only=True, threads=1, extra=[], tag="px32",
                              override=["image_size=32", expr])
    cmd = command_line(args, "fundus_dr", "../shared/data")
    argv = shlex.split(cmd)
    assert argv[argv.index("--override") + 1:argv.index("--tag")] == ["image_size=32", expr]
    assert "--override image_size=32 '" in cmd  # simple values stay as they were


def test_benchmark_runs_pin_the_cpu_code_paths_to_avx2_on_x86(tmp_path):
    """By default every benchmark run takes AVX2 code paths on an x86-64 CPU (an AVX-512 CPU then gives the bits the
    recorded runs got on AVX2-only ones); a variable the user set is kept; native or another machine sets nothing;
    a fresh process that pins them reports AVX2 kernels and names the pins in its hardware line."""
    import platform
    import subprocess
    import sys

    from benchmarks.bench_bundles import pin_kernels
    from tests.conftest import REPO

    env = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    assert pin_kernels("avx2", env, "x86_64") == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert env == {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert pin_kernels("native", {}, "x86_64") == {} and pin_kernels("avx2", {}, "aarch64") == {}
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the AVX2 pins act on x86-64 only")
    code = ("import os; [os.environ.pop(k, None) for k in ('ATEN_CPU_CAPABILITY', 'MKL_ENABLE_INSTRUCTIONS', "
            "'ONEDNN_MAX_CPU_ISA')]; from benchmarks.bench_bundles import pin_kernels; pin_kernels('avx2'); "
            "import torch; from benchmarks._report import hardware; "
            "print(torch.backends.cpu.get_cpu_capability()); print(hardware())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    isa, line = out.splitlines()[-2:]
    assert isa in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2
    assert "pinned: ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2" in line


@pytest.mark.parametrize("bundle", ["fundus_dr", "derma_isic", "oct_retina", "xray_pneumonia", "pathology_lung",
                                    "pathology_crc", "vqa_rad"])
def test_every_benchmark_override_names_a_config_key(bundle):
    """The bundles refuse an override that names no config key, so every benchmark command must name only keys its
    configs have (vqa_rad has no t-SNE: ``--tsne False`` went to it unread before the check)."""
    from attok_monai.bundle.overrides import unknown_override_keys
    from attok_monai.bundle.resolve import resolve_files
    from benchmarks.bench_bundles import VARIANTS, config_files, run_command

    for extras, extra in (((), ["--val_interval", "3"]), (("from_generalist",), ["--generalist_dir", "g"])):
        cfg = resolve_files([str(f) for f in config_files(bundle, extras)])
        for variant in VARIANTS:
            cmd = run_command(bundle, variant, 0, extra, "name", extras)
            keys = [a[2:] for a in cmd[cmd.index("run") + 1:] if a.startswith("--")]
            assert "seed" in keys and unknown_override_keys(cfg, keys) == [], (extras, variant)
            assert ("tsne" in keys) == (bundle != "vqa_rad")


def test_init_decision_scores_by_hand():
    """benchmarks/init_decision.py: accuracy and macro-F1 of the argmax, a class never predicted counting F1 0."""
    import numpy as np

    from benchmarks import init_decision

    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    labels = np.array([0, 1, 1, 2])  # predicted 0, 1, 0, 1: two right
    acc, f1 = init_decision.decision_scores(probs, labels)
    # F1: class 0 2/3 (precision 1/2, recall 1), class 1 1/2, class 2 0 -> mean 7/18
    assert acc == 50.0 and abs(f1 - 100 * 7 / 18) < 1e-9
    assert set(init_decision.STARTS) >= {"baseline (plain text)", "attribute tokens, attribute_init first_token"}
    assert init_decision.STARTS["baseline (plain text)"]["use_attribute_tokens"] is False


def test_encoder_shift_is_the_relative_distance_per_part(tmp_path, capsys):
    import torch

    from benchmarks import encoder_shift

    start = {"backbone.vision.w": torch.ones(2, 2), "backbone.vision.bn.running_mean": torch.zeros(2),
             "backbone.projector.w": torch.full((3,), 2.0), "backbone.llm.model.layers.0.w": torch.ones(4)}
    trained = dict(start, **{"backbone.vision.w": torch.full((2, 2), 1.5),  # moved by half its norm
                             "backbone.vision.bn.running_mean": torch.full((2,), 9.0)})  # not trained: ignored
    (tmp_path / "g").mkdir()
    torch.save(start, tmp_path / "g" / "model.pt")
    (tmp_path / "run" / "model").mkdir(parents=True)
    torch.save(trained, tmp_path / "run" / "model" / "model.pt")
    (rows,) = encoder_shift.shifts([tmp_path / "run", tmp_path / "no_model"], tmp_path / "g")
    assert rows[0] == "run" and rows[1] == {"vision": pytest.approx(0.5), "projector": 0.0, "llm layers": 0.0}
    encoder_shift.main(["--generalist_dir", str(tmp_path / "g"), str(tmp_path / "run")])
    assert "| run | 0.500 | 0.000 | 0.000 |" in capsys.readouterr().out


def test_recorded_overrides_leave_out_the_generalist_path():
    from benchmarks.bench_bundles import recorded_overrides

    assert recorded_overrides(["generalist_dir=/x/model", "cv_folds=5", "cv_fold=2", "gamma=0.0"]) == [
        "cv_folds=5", "cv_fold=2", "gamma=0.0"]
    assert recorded_overrides([]) == []


@pytest.mark.parametrize("plain", [False, True])
def test_decision_attention_by_hand(plain):
    """benchmarks/decision_attention.py: with the LM's query and key projections zeroed every score is equal, so the
    decision position attends uniformly to the positions up to it: its visual share is (visual slots) / (positions)
    in every layer. With attribute tokens the decision is <|attribute_begin|>, appended after the prompt; for the
    plain baseline the prompt's last position. Predictions are counted per class."""
    import torch

    from benchmarks import decision_attention
    from tests.conftest import tiny_attok

    net = tiny_attok(use_attribute_tokens=False, use_acc=False, use_acm=False) if plain else tiny_attok()
    with torch.no_grad():
        for layer in net.backbone.llm.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    question = "what is this radiology image?"
    loader = [{"image": torch.rand(3, 1, 16, 16), "label": torch.tensor([0, 1, 2])}]
    got = decision_attention.decision_attention(net, loader, question)
    ids = net.backbone.build_inputs([question], None)["input_ids"][0]
    want = (ids == -1).sum().item() / (len(ids) + (0 if plain else 1))  # + <|attribute_begin|>'s own position
    layers = net.backbone.llm.config.num_hidden_layers
    assert len(got["visual_share"]) == layers and all(abs(s - want) < 1e-3 for s in got["visual_share"])
    assert sum(got["predicted"]) == 3 and len(got["predicted"]) == 3 and 0 <= got["accuracy"] <= 100


def test_decision_attention_table(tmp_path):
    """The markdown per model: last-layer share mean [min, max], first layer, accuracy, classes never predicted."""
    import json

    from benchmarks import decision_attention

    f = tmp_path / "a.json"
    f.write_text(json.dumps({"variant": "all", "results": {
        "r1/0": {"visual_share": [0.2, 0.5], "accuracy": 50.0, "predicted": [3, 0, 1]},
        "r1/1": {"visual_share": [0.4, 0.9], "accuracy": 60.0, "predicted": [2, 1, 1]}}}))
    rows = decision_attention.table([f]).splitlines()
    assert rows[2] == "| +All | r1 | 2 | 0.70 [0.50, 0.90] | 0.30 | 55.0 | 0.5 |"
