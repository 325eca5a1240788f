"""Grouped stratified splits, split files, and the class-balanced sampler (synthetic data: fast, no files needed)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from attok_monai.data.sampling import (
    class_balanced_sampler,
    class_balanced_weights,
    group_share_sampler,
    group_share_weights,
)
from attok_monai.data.splits import (
    grouped_stratified_split,
    make_or_load_split,
    read_split_file,
    write_split_file,
)


def _synthetic(n_groups: int = 600, seed: int = 0):
    """Groups of 1-5 images sharing one label; classes 60/25/10/5 %."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for g in range(n_groups):
        c = int(rng.choice(4, p=[0.6, 0.25, 0.1, 0.05]))
        for _ in range(int(rng.integers(1, 6))):
            labels.append(c)
            groups.append(f"patient{g}")
    return labels, groups


def test_grouped_stratified_split_properties():
    labels, groups = _synthetic()
    fr = {"train": 0.7, "val": 0.1, "test": 0.2}
    parts = grouped_stratified_split(labels, groups, fr, seed=1)
    assert list(parts) == ["train", "val", "test"]
    flat = sorted(i for idx in parts.values() for i in idx)
    assert flat == list(range(len(labels)))  # a partition
    where = {}
    for name, idx in parts.items():
        for i in idx:
            assert where.setdefault(groups[i], name) == name  # no group in two parts
    n = len(labels)
    overall = Counter(labels)
    for name, idx in parts.items():
        assert abs(len(idx) / n - fr[name]) < 0.02, name
        share = Counter(labels[i] for i in idx)
        for c, k in overall.items():
            assert abs(share[c] / len(idx) - k / n) < 0.03, (name, c)
    # deterministic for a seed; another seed gives another split
    assert grouped_stratified_split(labels, groups, fr, seed=1) == parts
    assert grouped_stratified_split(labels, groups, fr, seed=2) != parts
    # the result does not depend on the group names (only on which samples share a group)
    renamed = [f"mrn-{g[::-1]}" for g in groups]
    assert grouped_stratified_split(labels, renamed, fr, seed=1) == parts


def test_split_without_groups_multilabel_and_bad_fractions():
    labels = [[0, 1], [1], [0], [2], None] * 20
    parts = grouped_stratified_split(labels, None, {"a": 1, "b": 1}, seed=0)  # fractions are normalised
    assert len(parts["a"]) == len(parts["b"]) == 50
    with pytest.raises(ValueError, match="one per sample"):
        grouped_stratified_split([0, 1], ["g"], seed=0)
    with pytest.raises(ValueError, match=">= 0"):
        grouped_stratified_split([0, 1], fractions={"train": -1, "val": 2})
    with pytest.raises(ValueError, match="sum to 0"):
        grouped_stratified_split([0, 1], fractions={"train": 0})


def test_make_or_load_split_writes_then_file_wins(tmp_path):
    labels, groups = _synthetic(200)
    table = [{"id": f"img{i}", "label": c, "group": g} for i, (c, g) in enumerate(zip(labels, groups))]
    path = tmp_path / "runs" / "split.csv"
    info = make_or_load_split(table, path, fractions={"train": 0.8, "val": 0.2}, seed=5)
    assert info.source == "computed" and path.is_file() and not list(path.parent.glob(".*.tmp"))
    assert sum(info.counts.values()) == len(table) and info.groups_in_several_splits == 0
    assert sum(info.class_counts["val"].values()) == info.counts["val"]
    assignment, meta = read_split_file(path)
    assert assignment == info.assignment and meta["seed"] == 5 and meta["counts"] == info.counts
    assert "patient" not in path.read_text()  # group values never reach the split file
    params = info.to_params()
    assert params["split_seed"] == 5 and params["split_n_train"] == info.counts["train"]
    # the file wins over new fractions and seed
    again = make_or_load_split(table, path, fractions={"train": 0.5, "val": 0.5}, seed=9)
    assert again.source == "file" and again.assignment == info.assignment and again.seed == 5
    # a table as a DataFrame works the same
    df = pd.DataFrame(table)
    assert make_or_load_split(df, None, fractions={"train": 0.8, "val": 0.2}, seed=5).assignment == info.assignment
    # apply / select
    items = info.apply(table)
    assert all(it["split"] == info.assignment[it["id"]] for it in items)
    assert len(info.select(table, "val")) == info.counts["val"]


def test_given_split_file_reports_leaks_and_unassigned(tmp_path):
    # a hand-made file (HAM10000 layout: image_id,split) that splits one group and misses one id
    pd.DataFrame({"image_id": ["a", "b", "c"], "split": ["train", "val", "val"]}).to_csv(
        tmp_path / "s.csv", index=False
    )
    table = [{"id": "a", "label": 0, "group": "p1"}, {"id": "b", "label": 0, "group": "p1"}]
    table += [{"id": "c", "label": 1, "group": "p2"}, {"id": "d", "label": 1, "group": "p3"}]
    info = make_or_load_split(table, tmp_path / "s.csv")
    assert info.source == "file" and info.seed is None
    assert info.counts == {"train": 1, "val": 2} and info.unassigned == 1 and info.groups_in_several_splits == 1
    assert info.apply(table)[3]["split"] is None


def test_split_file_formats_and_errors(tmp_path):
    write_split_file(tmp_path / "s.json", {"a": "train", "b,c": "val"}, {"seed": 1})
    assert read_split_file(tmp_path / "s.json") == ({"a": "train", "b,c": "val"}, {"seed": 1})
    write_split_file(tmp_path / "s.csv", {"a": "train", "b,c": "val"}, {"seed": 1})
    assert read_split_file(tmp_path / "s.csv") == ({"a": "train", "b,c": "val"}, {"seed": 1})
    (tmp_path / "g.json").write_text(json.dumps({"splits": {"train": ["a"], "val": ["b"]}}))
    assert read_split_file(tmp_path / "g.json")[0] == {"a": "train", "b": "val"}
    (tmp_path / "dup.csv").write_text("id,split\na,train\na,val\n")
    with pytest.raises(ValueError, match="two splits"):
        read_split_file(tmp_path / "dup.csv")
    (tmp_path / "nosplit.csv").write_text("id,part\na,train\n")
    with pytest.raises(ValueError, match="no column 'split'"):
        read_split_file(tmp_path / "nosplit.csv")
    with pytest.raises(FileNotFoundError):
        read_split_file(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="duplicate id"):
        make_or_load_split([{"id": "a", "label": 0}, {"id": "a", "label": 1}], None)


# ------------------------------------------------------------------------------------------------ sampling
def test_class_balanced_sampler_balances_draws():
    labels = [0] * 900 + [1] * 90 + [2] * 10
    sampler = class_balanced_sampler(labels, num_samples=20000, seed=0)
    draws = list(sampler)
    assert len(draws) == 20000
    freq = Counter(labels[i] for i in draws)
    for c in (0, 1, 2):
        assert abs(freq[c] / 20000 - 1 / 3) < 0.02, freq
    assert list(class_balanced_sampler(labels, num_samples=500, seed=3)) == list(
        class_balanced_sampler(labels, num_samples=500, seed=3)
    )
    assert len(list(class_balanced_sampler(labels, seed=0))) == len(labels)  # default: one epoch


def test_group_share_sampler_draws_each_group_its_share():
    groups = ["big"] * 900 + ["mid"] * 90 + ["small"] * 10
    w = group_share_weights(groups, {"big": 1, "mid": 1, "small": 2})
    assert float(w.sum()) == pytest.approx(1.0)
    assert float(w[:900].sum()) == pytest.approx(0.25) and float(w[-10:].sum()) == pytest.approx(0.5)
    draws = list(group_share_sampler(groups, {"big": 1, "mid": 1, "small": 2}, num_samples=20000, seed=0))
    freq = Counter(groups[i] for i in draws)
    assert abs(freq["big"] / 20000 - 0.25) < 0.02 and abs(freq["small"] / 20000 - 0.5) < 0.02, freq
    assert len(list(group_share_sampler(groups, {"big": 1, "mid": 1, "small": 1}))) == len(groups)
    assert list(group_share_sampler(groups, {"big": 1, "mid": 1, "small": 1}, seed=3)) == list(
        group_share_sampler(groups, {"big": 1, "mid": 1, "small": 1}, seed=3))


@pytest.mark.parametrize("shares, match", [
    ({"big": 1}, r"no share for \['small'\]"),
    ({"big": 1, "small": 1, "other": 1}, r"no samples for \['other'\]"),
    ({"big": 1, "small": 0}, "share of 'small' must be a positive number, got 0"),
    ({"big": 1, "small": float("nan")}, "share of 'small'"),
    ({"big": 1, "small": "2"}, "share of 'small'"),
])
def test_group_share_weights_bad_shares(shares, match):
    with pytest.raises(ValueError, match=match):
        group_share_weights(["big", "small"], shares)


def test_class_balanced_weights_single_and_multi_label():
    w = class_balanced_weights([0, 0, 0, 1])
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    # multi-label: mean of the classes' inverse frequencies (class 0 in 2 samples, class 1 in 3, class 2 in 1)
    w = class_balanced_weights([[0, 1], [1], [0, 1, 1], [2]])
    assert w.tolist() == pytest.approx([(1 / 2 + 1 / 3) / 2, 1 / 3, (1 / 2 + 1 / 3) / 2, 1.0])
    with pytest.raises(ValueError, match="no labels"):
        class_balanced_weights([])


# ------------------------------------------------------------------ cross-validation folds
def _items(n_groups: int = 300, seed: int = 0) -> list[dict]:
    labels, groups = _synthetic(n_groups, seed)
    return [{"id": f"i{i}", "label": lab, "group": g} for i, (lab, g) in enumerate(zip(labels, groups))]


def test_cross_validation_parts_partition_and_pair():
    from attok_monai.data.splits import cross_validation_part

    items = _items()
    held = []
    for k in range(5):
        train = cross_validation_part(items, 5, k, "train")
        val = cross_validation_part(items, 5, k, "val")
        assert len(train) + len(val) == len(items)
        assert not {it["id"] for it in train} & {it["id"] for it in val}
        assert not {it["group"] for it in train} & {it["group"] for it in val}  # no group in two parts
        assert [it["id"] for it in val] == [it["id"] for it in items if it in val]  # item order kept
        share = Counter(it["label"] for it in val)
        whole = Counter(it["label"] for it in items)
        assert all(abs(share[c] / len(val) - whole[c] / len(items)) < 0.03 for c in whole), (share, whole)
        held += [it["id"] for it in val]
    assert sorted(held) == sorted(it["id"] for it in items)  # every item is held out exactly once
    # the folds depend on the data and the fold seed only: the same call gives the same part
    assert cross_validation_part(items, 5, 2, "val") == cross_validation_part(list(items), 5, 2, "val")
    assert cross_validation_part(items, 5, 2, "val") != cross_validation_part(items, 5, 2, "val", seed=1)


def test_cross_validation_off_and_bad_values():
    from attok_monai.data.splits import cross_validation_part

    items = _items(20)
    assert cross_validation_part(items, 0, 0, "train") == items
    for folds, fold, match in ((1, 0, "cv_folds"), (-2, 0, "cv_folds"), (True, 0, "cv_folds"), (5, 5, "cv_fold"),
                               (5, -1, "cv_fold"), (0, 0, "off"), (100, 0, "at least one item"),
                               (0, 3, "set cv_folds")):
        with pytest.raises(ValueError, match=match):
            cross_validation_part(items, folds, fold, "val")
    with pytest.raises(ValueError, match="set cv_folds"):
        cross_validation_part(items, 0, 2, "train")  # a fold named without folds: refused, not ignored
    with pytest.raises(ValueError, match="part"):
        cross_validation_part(items, 5, 0, "test")
    with pytest.raises(ValueError, match="item 0 has no 'label'"):
        cross_validation_part([{"id": "a"}] * 5, 5, 0, "train")
