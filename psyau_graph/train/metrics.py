"""Classification and AU-detection metrics (MEGC convention).

Definitions, for class ``c`` with true positives ``TP``, false positives ``FP``
and false negatives ``FN``:

* per-class F1 = ``2·TP / (2·TP + FP + FN)``
* per-class recall = ``TP / (TP + FN)``
* **UF1** (unweighted F1) = mean of per-class F1 over the *counted* classes
* **UAR** (unweighted average recall) = mean of per-class recall over the classes
  present in the truth

Counting convention for classes missing from a fold (documented in
``docs/training.md``):

* a class absent from **both** truth and prediction has no defined F1 (0/0) and no
  defined recall; it is left out of both means and reported as ``None``;
* a class absent from the truth but **predicted** has F1 = 0 (TP = 0, FP > 0) and is
  counted in UF1; its recall is undefined (no true samples) and it is left out of UAR
  (the wrong predictions already lower the recall of the true classes);
* the classes that entered each mean are returned (``f1_classes``, ``recall_classes``).

Under LOSO / k-fold the predictions of all folds are pooled first and the metric
is computed once on the pooled arrays (SPEC §7); this is what
:func:`classification_report` does when it is handed the concatenated arrays.
If no class can be counted at all (empty input) the metric is ``nan``.

AU detection: an AU is predicted present when its sigmoid probability is ≥ 0.5
(logit ≥ 0). Per-AU F1 uses the same formula and the same rule for an AU absent
from both truth and prediction.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = [
    "confusion_matrix",
    "per_class_f1",
    "per_class_recall",
    "uf1",
    "uar",
    "accuracy",
    "classification_report",
    "au_f1",
]


def _as_labels(y, name: str) -> np.ndarray:
    arr = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64, copy=False)


def _check(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t = _as_labels(y_true, "y_true")
    p = _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} holds labels outside [0, {num_classes - 1}]: "
                f"min {arr.min()}, max {arr.max()}"
            )
    return t, p


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` = number of samples of true class ``i`` predicted ``j``.

    Shapes:
        y_true, y_pred: (N,) int; returns (num_classes, num_classes) int64.
    """
    t, p = _check(y_true, y_pred, num_classes)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _tp_fp_fn(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return tp, fp, fn


def per_class_f1(y_true, y_pred, num_classes: int) -> list[float | None]:
    """Per-class F1 ``2TP/(2TP+FP+FN)``; ``None`` for a class absent from truth and prediction."""
    tp, fp, fn = _tp_fp_fn(confusion_matrix(y_true, y_pred, num_classes))
    den = 2 * tp + fp + fn
    return [None if d == 0 else float(2 * a / d) for a, d in zip(tp, den)]


def per_class_recall(y_true, y_pred, num_classes: int) -> list[float | None]:
    """Per-class recall ``TP/(TP+FN)``; ``None`` for a class with no true samples."""
    tp, _, fn = _tp_fp_fn(confusion_matrix(y_true, y_pred, num_classes))
    den = tp + fn
    return [None if d == 0 else float(a / d) for a, d in zip(tp, den)]


def _mean_counted(values: Sequence[float | None]) -> tuple[float, list[int]]:
    counted = [i for i, v in enumerate(values) if v is not None]
    if not counted:
        return math.nan, counted
    return float(np.mean([values[i] for i in counted])), counted


def uf1(y_true, y_pred, num_classes: int) -> float:
    """Unweighted F1: mean per-class F1 over classes present in truth or prediction.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        num_classes: number of classes C.
    """
    return _mean_counted(per_class_f1(y_true, y_pred, num_classes))[0]


def uar(y_true, y_pred, num_classes: int) -> float:
    """Unweighted average recall: mean per-class recall over classes present in truth."""
    return _mean_counted(per_class_recall(y_true, y_pred, num_classes))[0]


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions (``nan`` for empty input)."""
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return float((t == p).mean()) if t.size else math.nan


def classification_report(y_true, y_pred, num_classes: int, class_names: Sequence[str] | None = None) -> dict:
    """All emotion metrics in one JSON-ready dict.

    Returns keys ``uf1, uar, acc, n, f1 (per class, None if not counted), recall,
    f1_classes, recall_classes (indices counted in each mean), support (true count
    per class), confusion (list of lists), class_names``.
    """
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes={num_classes}")
    f1 = per_class_f1(y_true, y_pred, num_classes)
    rec = per_class_recall(y_true, y_pred, num_classes)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    m_f1, f1_cls = _mean_counted(f1)
    m_rec, rec_cls = _mean_counted(rec)
    return {
        "uf1": m_f1,
        "uar": m_rec,
        "acc": accuracy(y_true, y_pred),
        "n": int(cm.sum()),
        "f1": f1,
        "recall": rec,
        "f1_classes": f1_cls,
        "recall_classes": rec_cls,
        "support": cm.sum(axis=1).tolist(),
        "confusion": cm.tolist(),
        "class_names": list(class_names) if class_names is not None else [str(i) for i in range(num_classes)],
    }


def au_f1(au_true, au_prob, threshold: float = 0.5, mask=None) -> dict:
    """Per-AU and mean F1 for multi-label AU detection, over known labels only.

    Args:
        au_true: (N, A) {0, 1} AU labels.
        au_prob: (N, A) probabilities in [0, 1] (apply ``sigmoid`` to logits first).
        threshold: an AU is predicted present when ``prob >= threshold`` (default: 0.5).
        mask: optional (N, A) or (N,) {0, 1}: 1 where the AU label is known. Entries
            with an unknown label (a clip without AU coding, a ``?`` cell) are left out
            of the counts entirely, rather than read as "AU absent". (default: all known)

    Returns:
        ``{"per_au": [float | None] * A, "mean": float, "aus_counted": [int]}``;
        an AU absent from both truth and prediction (among the known entries) is
        ``None`` and not counted.
    """
    t = np.asarray(au_true.detach().cpu().numpy() if hasattr(au_true, "detach") else au_true, dtype=np.float64)
    p = np.asarray(au_prob.detach().cpu().numpy() if hasattr(au_prob, "detach") else au_prob, dtype=np.float64)
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"au_true and au_prob must both be (N, A); got {t.shape} and {p.shape}")
    if p.size and (p.min() < 0 or p.max() > 1):
        raise ValueError("au_prob must be probabilities in [0, 1] (apply a sigmoid to logits)")
    known = np.ones(t.shape, dtype=bool)
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask, dtype=np.float64)
        if m.ndim == 1 and m.shape[0] == t.shape[0]:
            m = np.repeat(m[:, None], t.shape[1], axis=1)
        if m.shape != t.shape:
            raise ValueError(f"mask must be (N,) or (N, A) = {t.shape}; got {m.shape}")
        known = m >= 0.5
    tb = t >= 0.5
    pb = p >= threshold
    tp = (tb & pb & known).sum(0).astype(np.float64)
    fp = (~tb & pb & known).sum(0)
    fn = (tb & ~pb & known).sum(0)
    den = 2 * tp + fp + fn
    per = [None if d == 0 else float(2 * a / d) for a, d in zip(tp, den)]
    mean, counted = _mean_counted(per)
    return {"per_au": per, "mean": mean, "aus_counted": counted}
