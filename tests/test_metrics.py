"""Metrics on hand-computed cases (MEGC convention)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from psyau_graph.train.metrics import (
    accuracy, au_f1, classification_report, confusion_matrix, per_class_f1, per_class_recall, uar, uf1,
)

# y_true = [0,0,1,1,2], y_pred = [0,1,1,1,0]
# confusion rows (true) [1,1,0] [0,2,0] [1,0,0]; TP = [1,2,0], FP = [1,1,0], FN = [1,0,1]
T = [0, 0, 1, 1, 2]
P = [0, 1, 1, 1, 0]


def test_confusion_matrix_hand():
    assert confusion_matrix(T, P, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_f1_recall_uf1_uar_hand():
    assert per_class_f1(T, P, 3) == pytest.approx([0.5, 0.8, 0.0])
    assert per_class_recall(T, P, 3) == pytest.approx([0.5, 1.0, 0.0])
    assert uf1(T, P, 3) == pytest.approx(1.3 / 3)
    assert uar(T, P, 3) == pytest.approx(0.5)
    assert accuracy(T, P) == pytest.approx(0.6)


def test_torch_inputs_same_as_lists():
    assert uf1(torch.tensor(T), torch.tensor(P), 3) == pytest.approx(uf1(T, P, 3))


def test_class_absent_from_truth_and_prediction_is_excluded():
    # a fourth class never seen: excluded, so the means are unchanged
    assert per_class_f1(T, P, 4)[3] is None
    assert per_class_recall(T, P, 4)[3] is None
    assert uf1(T, P, 4) == pytest.approx(1.3 / 3)
    assert uar(T, P, 4) == pytest.approx(0.5)
    rep = classification_report(T, P, 4)
    assert rep["f1_classes"] == [0, 1, 2] and rep["recall_classes"] == [0, 1, 2]
    assert rep["support"] == [2, 2, 1, 0]


def test_class_predicted_but_absent_from_truth_counts_f1_zero():
    t, p = [0, 0, 1], [0, 2, 1]
    f1 = per_class_f1(t, p, 3)
    assert f1 == pytest.approx([2 / 3, 1.0, 0.0])
    assert uf1(t, p, 3) == pytest.approx(5 / 9)
    # recall of class 2 is undefined (no true samples): left out of UAR
    assert per_class_recall(t, p, 3)[2] is None
    assert uar(t, p, 3) == pytest.approx(0.75)
    rep = classification_report(t, p, 3)
    assert rep["f1_classes"] == [0, 1, 2] and rep["recall_classes"] == [0, 1]


def test_pooled_differs_from_mean_of_folds():
    # fold A misses class 1 entirely; fold B has both
    ta, pa = [0, 0], [0, 0]
    tb, pb = [1, 1, 0], [1, 0, 0]
    assert uf1(ta, pa, 2) == pytest.approx(1.0)  # class 1 not counted in fold A
    assert uf1(tb, pb, 2) == pytest.approx(2 / 3)
    pooled = uf1(ta + tb, pa + pb, 2)
    assert pooled == pytest.approx(16 / 21)
    assert pooled != pytest.approx((1.0 + 2 / 3) / 2)


def test_empty_and_bad_inputs():
    assert math.isnan(uf1([], [], 3)) and math.isnan(uar([], [], 3))
    with pytest.raises(ValueError, match="differ in length"):
        uf1([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        uf1([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="1-D"):
        uf1(np.zeros((2, 2), int), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="class_names"):
        classification_report(T, P, 3, class_names=["a", "b"])


def test_au_f1_hand():
    t = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0]])
    prob = np.array([[0.9, 0.2, 0.1], [0.4, 0.7, 0.2], [0.6, 0.5, 0.3]])
    # AU0: pred [1,0,1] true [1,1,0] -> TP1 FP1 FN1 -> 0.5
    # AU1: pred [0,1,1] (0.5 counts as present) true [0,1,1] -> 1.0
    # AU2: never true, never predicted -> None, not counted
    r = au_f1(t, prob)
    assert r["per_au"][0] == pytest.approx(0.5) and r["per_au"][1] == pytest.approx(1.0)
    assert r["per_au"][2] is None
    assert r["mean"] == pytest.approx(0.75) and r["aus_counted"] == [0, 1]
    with pytest.raises(ValueError, match="probabilities"):
        au_f1(t, prob * 3)
