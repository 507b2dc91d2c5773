"""Subject-aware splits for evaluation protocols and federated clients.

All functions take ``subjects``: one subject id per sample (e.g. ``dataset.subjects``)
and return / yield integer index arrays (int64, sorted) into that sequence. Splits
that are "subject-disjoint" never put samples of one subject on both sides.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def _subjects(subjects) -> np.ndarray:
    arr = np.asarray(list(subjects), dtype=object)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError("subjects: expected a non-empty 1-D sequence of subject ids (one per sample)")
    if any(s is None or (isinstance(s, float) and s != s) for s in arr):
        raise ValueError("subjects: contains a missing subject id (None/NaN)")
    return np.asarray([str(s) for s in arr], dtype=object)


def _groups(subj: np.ndarray) -> tuple[list[str], dict[str, np.ndarray]]:
    names = sorted(set(subj.tolist()))
    return names, {s: np.flatnonzero(subj == s) for s in names}


def loso_splits(subjects: Sequence) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-subject-out: one fold per subject (sorted by id), that subject as test.

    Yields:
        ``(train_idx, test_idx)``.
    """
    subj = _subjects(subjects)
    names, idx = _groups(subj)
    if len(names) < 2:
        raise ValueError(f"loso_splits: needs at least 2 subjects, got {len(names)}")
    for s in names:
        test = idx[s]
        yield np.flatnonzero(subj != s).astype(np.int64), test.astype(np.int64)


def _balanced_groups(subj: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """Assign subjects to k groups with near-equal sample counts (greedy, largest first)."""
    names, idx = _groups(subj)
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    order.sort(key=lambda s: -len(idx[s]))  # stable: ties keep the random order
    groups: list[list[str]] = [[] for _ in range(k)]
    load = np.zeros(k, dtype=np.int64)
    for s in order:
        # fewest samples, then fewest subjects, then a seeded random tie-break
        keys = [(load[g], len(groups[g]), rng.random()) for g in range(k)]
        g = min(range(k), key=lambda j: keys[j])
        groups[g].append(s)
        load[g] += len(idx[s])
    return groups


def subject_kfold(subjects: Sequence, k: int = 10, seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Subject-disjoint k-fold: every subject in exactly one test fold; folds balanced in samples.

    Args:
        subjects: subject id per sample.
        k: number of folds (default 10; DFME protocol), 2 ≤ k ≤ number of subjects.
        seed: tie-breaking seed (default 0).

    Yields:
        ``(train_idx, test_idx)`` for each of the k folds.
    """
    subj = _subjects(subjects)
    n_subj = len(set(subj.tolist()))
    if not 2 <= k <= n_subj:
        raise ValueError(f"subject_kfold: k={k} must be between 2 and the number of subjects ({n_subj})")
    for group in _balanced_groups(subj, k, seed):
        test = np.isin(subj, group)
        yield np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)


def repeated_random_splits(n_or_subjects, train_frac: float = 0.7, repeats: int = 10, seed: int = 0, *,
                           stratify: Sequence | None = None, by_subject: bool = False
                           ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Repeated random train/test splits (the paper's 70/30 × 10 within a client).

    Args:
        n_or_subjects: number of samples, or the subject id per sample.
        train_frac: fraction of samples (or subjects) for training (default 0.7).
        repeats: number of splits (default 10); repeat r uses seed ``(seed, r)``.
        seed: base seed (default 0).
        stratify: optional label per sample: the fraction is applied within each class
            (each class with ≥ 2 samples keeps at least one on each side).
        by_subject: split subjects instead of samples (subject-disjoint; needs subject ids;
            not combinable with ``stratify``).

    Yields:
        ``(train_idx, test_idx)``; both non-empty.
    """
    if not 0 < train_frac < 1:
        raise ValueError(f"train_frac={train_frac}: expected 0 < train_frac < 1")
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: expected >= 1")
    if isinstance(n_or_subjects, (int, np.integer)):
        n, subj = int(n_or_subjects), None
        if by_subject:
            raise ValueError("repeated_random_splits: by_subject=True needs subject ids, not a count")
    else:
        subj = _subjects(n_or_subjects)
        n = len(subj)
    if n < 2:
        raise ValueError(f"repeated_random_splits: needs at least 2 samples, got {n}")
    if stratify is not None:
        labels = np.asarray(list(stratify))
        if len(labels) != n:
            raise ValueError(f"stratify: {len(labels)} labels for {n} samples")
        if by_subject:
            raise ValueError("repeated_random_splits: stratify and by_subject cannot be combined")
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        if by_subject:
            names = sorted(set(subj.tolist()))
            if len(names) < 2:
                raise ValueError("repeated_random_splits: by_subject needs at least 2 subjects")
            n_tr = min(max(1, round(train_frac * len(names))), len(names) - 1)
            chosen = [names[i] for i in rng.permutation(len(names))[:n_tr]]
            train = np.isin(subj, chosen)
        elif stratify is None:
            train = np.zeros(n, bool)
            n_tr = min(max(1, round(train_frac * n)), n - 1)
            train[rng.permutation(n)[:n_tr]] = True
        else:
            train = np.zeros(n, bool)
            for c in sorted(set(labels.tolist()), key=str):
                members = np.flatnonzero(labels == c)
                m = len(members)
                n_tr = m if m == 1 else min(max(1, round(train_frac * m)), m - 1)
                train[members[rng.permutation(m)[:n_tr]]] = True
            if train.all():
                raise ValueError("repeated_random_splits: every class has a single sample; no test set")
        yield np.flatnonzero(train).astype(np.int64), np.flatnonzero(~train).astype(np.int64)


def client_partition(subjects: Sequence, n_clients: int, seed: int = 0, *, min_subjects: int = 1) -> list[np.ndarray]:
    """Split samples into federated clients made of disjoint subject groups.

    Subjects are assigned so that clients hold near-equal numbers of samples.

    Args:
        subjects: subject id per sample.
        n_clients: number of clients K.
        seed: tie-breaking seed (default 0).
        min_subjects: each client gets at least this many subjects (default 1).

    Returns:
        K sorted int64 index arrays, disjoint, covering every sample.

    Raises:
        ValueError: K < 1, or K × min_subjects larger than the number of subjects.
    """
    subj = _subjects(subjects)
    n_subj = len(set(subj.tolist()))
    if n_clients < 1:
        raise ValueError(f"client_partition: n_clients={n_clients} must be >= 1")
    if min_subjects < 1:
        raise ValueError(f"client_partition: min_subjects={min_subjects} must be >= 1")
    if n_clients * min_subjects > n_subj:
        raise ValueError(f"client_partition: {n_clients} clients x {min_subjects} subject(s) each needs "
                         f"{n_clients * min_subjects} subjects, but the data has only {n_subj}")
    groups = _balanced_groups(subj, n_clients, seed)
    # greedy balancing can leave a client short of subjects: move the smallest subjects over
    _, idx = _groups(subj)
    for g in groups:
        while len(g) < min_subjects:
            donor = max((h for h in groups if len(h) > min_subjects), key=len)
            s = min(donor, key=lambda x: len(idx[x]))
            donor.remove(s)
            g.append(s)
    return [np.flatnonzero(np.isin(subj, g)).astype(np.int64) for g in groups]


def client_subjects(subjects: Sequence, parts: list[np.ndarray]) -> list[list[str]]:
    """The sorted subject ids of each client returned by :func:`client_partition`."""
    subj = _subjects(subjects)
    return [sorted(set(subj[p].tolist())) for p in parts]
