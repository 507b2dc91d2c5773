"""Subject-aware splitters."""
from __future__ import annotations

import numpy as np
import pytest

from psyau_graph.data.splits import (client_partition, client_subjects, loso_splits, repeated_random_splits,
                                     subject_kfold)

# 7 subjects with 1..7 samples each (28 samples), interleaved
SUBJ = [f"s{i}" for i in range(1, 8) for _ in range(i)]
SUBJ = [SUBJ[i] for i in np.random.default_rng(0).permutation(len(SUBJ))]


def _check_partition(train, test, n):
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert len(np.intersect1d(train, test)) == 0
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))


def test_loso():
    folds = list(loso_splits(SUBJ))
    assert len(folds) == 7
    subj = np.array(SUBJ)
    for k, (tr, te) in enumerate(folds):
        _check_partition(tr, te, len(SUBJ))
        assert set(subj[te]) == {f"s{k + 1}"} and f"s{k + 1}" not in set(subj[tr])
        assert len(te) == k + 1
    with pytest.raises(ValueError, match="at least 2 subjects"):
        list(loso_splits(["a", "a"]))
    with pytest.raises(ValueError, match="missing"):
        list(loso_splits(["a", None]))


def test_subject_kfold_disjoint_covering_balanced_deterministic():
    subj = np.array(SUBJ)
    folds = list(subject_kfold(SUBJ, 3, seed=1))
    assert len(folds) == 3
    seen = []
    for tr, te in folds:
        _check_partition(tr, te, len(SUBJ))
        assert not set(subj[tr]) & set(subj[te])
        seen += list(te)
    assert sorted(seen) == list(range(len(SUBJ)))  # each sample tested exactly once
    sizes = sorted(len(te) for _, te in folds)
    assert sizes[-1] - sizes[0] <= 1  # 28 samples → 9/9/10 reachable with sizes 1..7
    again = list(subject_kfold(SUBJ, 3, seed=1))
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    with pytest.raises(ValueError, match="between 2 and"):
        list(subject_kfold(SUBJ, 8))


def test_kfold_seed_changes_assignment_of_equal_subjects():
    subj = [f"s{i}" for i in range(10) for _ in range(3)]
    a = [tuple(te) for _, te in subject_kfold(subj, 5, seed=0)]
    b = [tuple(te) for _, te in subject_kfold(subj, 5, seed=1)]
    assert sorted(a) != sorted(b)
    assert all(len(t) == 6 for t in a)


def test_repeated_random_splits():
    splits = list(repeated_random_splits(20, 0.7, repeats=5, seed=3))
    assert len(splits) == 5
    for tr, te in splits:
        _check_partition(tr, te, 20)
        assert len(tr) == 14 and len(te) == 6
    assert len({tuple(te) for _, te in splits}) > 1  # repeats differ
    again = list(repeated_random_splits(20, 0.7, repeats=5, seed=3))
    assert all((a[0] == b[0]).all() for a, b in zip(splits, again))


def test_repeated_random_splits_stratified_and_by_subject():
    labels = [0] * 10 + [1] * 6 + [2] * 4
    for tr, te in repeated_random_splits(20, 0.7, repeats=4, stratify=labels):
        y = np.array(labels)
        assert [int((y[tr] == c).sum()) for c in range(3)] == [7, 4, 3]
        assert [int((y[te] == c).sum()) for c in range(3)] == [3, 2, 1]
    subj = np.array(SUBJ)
    for tr, te in repeated_random_splits(SUBJ, 0.7, repeats=3, by_subject=True):
        _check_partition(tr, te, len(SUBJ))
        assert not set(subj[tr]) & set(subj[te]) and len(set(subj[tr])) == 5
    with pytest.raises(ValueError, match="train_frac"):
        list(repeated_random_splits(10, 1.0))
    with pytest.raises(ValueError, match="stratify"):
        list(repeated_random_splits(10, stratify=[0, 1]))


def test_client_partition():
    parts = client_partition(SUBJ, 3, seed=0)
    assert len(parts) == 3
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(SUBJ)))  # disjoint + covering
    groups = client_subjects(SUBJ, parts)
    assert sum(len(g) for g in groups) == 7 and len(set().union(*map(set, groups))) == 7
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all((a == b).all() for a, b in zip(parts, client_partition(SUBJ, 3, seed=0)))
    two = client_partition(SUBJ, 2, seed=0, min_subjects=3)
    assert all(len(g) >= 3 for g in client_subjects(SUBJ, two))
    with pytest.raises(ValueError, match="only 7"):
        client_partition(SUBJ, 8)
    with pytest.raises(ValueError, match="needs 8 subjects"):
        client_partition(SUBJ, 4, min_subjects=2)
    with pytest.raises(ValueError, match="n_clients"):
        client_partition(SUBJ, 0)
