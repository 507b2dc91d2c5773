"""Subject → client assignment with equal subject counts (the paper's client split).

The paper gives every client the same number of subjects, so clients differ in how many
samples they hold (a deliberate heterogeneity). :func:`equal_subject_partition` does
that; the sample-balanced split is ``client_partition`` of :mod:`psyau_graph.data.splits`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def equal_subject_partition(subjects: Sequence, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffle the distinct subjects with ``seed`` and deal them to clients in turn.

    Client subject counts differ by at most one (the first ``S mod K`` clients get one more).

    Args:
        subjects: subject id per sample, length N.
        n_clients: K (1 <= K <= number of subjects).
        seed: shuffling seed.

    Returns:
        K sorted int64 index arrays into ``subjects``, disjoint, covering all N samples.
    """
    subj = np.asarray([str(s) for s in subjects])
    uniq = sorted(set(subj.tolist()))
    if n_clients < 1:
        raise ValueError(f"n_clients={n_clients} must be >= 1")
    if n_clients > len(uniq):
        raise ValueError(f"clients ({n_clients}) exceeds the number of subjects ({len(uniq)})")
    order = np.random.default_rng(int(seed)).permutation(len(uniq))
    groups = [[uniq[j] for j in order[i::n_clients]] for i in range(n_clients)]
    return [np.flatnonzero(np.isin(subj, g)).astype(np.int64) for g in groups]
