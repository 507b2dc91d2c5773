"""Emotion label schemes, as data.

A scheme maps the emotion spelled in an annotation sheet (compared lower-cased and
stripped) to a class name; the class order fixes the integer labels. Emotions a
scheme does not map are dropped (and reported) by :func:`apply_label_scheme`.

Schemes (``LABEL_SCHEMES[name]``: emotion → class, ``CLASS_NAMES[name]``: order):

- ``megc3``: MEGC 2019 composite 3 classes. negative = anger, contempt, disgust, fear,
  sadness, repression (+ SMIC's ``negative``); positive = happiness (+ ``positive``);
  surprise. CASME II override (``SCHEME_OVERRIDES``): only disgust and repression are
  negative, its fear/sadness are dropped, as in MEGC 2019. On the SAMM sheet this gives
  133 samples: 92 negative / 26 positive / 15 surprise.
- ``casme3_3``: CAS(ME)^3 3 classes: happy → positive; disgust, fear, anger, sad →
  negative; surprise; others dropped.
- ``casme3_7``: CAS(ME)^3 7 classes: anger, disgust, fear, happy, others, sad, surprise.
- ``casme2_5``: CASME II 5 classes: disgust, happiness, others, repression, surprise.
- ``dfme7``: DFME 7 classes: anger, contempt, disgust, fear, happiness, sadness, surprise.
- ``smic3``: SMIC's own labels: negative, positive, surprise.
- ``synth``: the 7 emotions the synthetic generator emits (same names as ``dfme7``).
"""
from __future__ import annotations

import pandas as pd

_NEG = ("anger", "angry", "contempt", "disgust", "fear", "sadness", "sad", "repression", "negative")

CLASS_NAMES: dict[str, list[str]] = {
    "megc3": ["negative", "positive", "surprise"],
    "casme3_3": ["negative", "positive", "surprise"],
    "casme3_7": ["anger", "disgust", "fear", "happy", "others", "sad", "surprise"],
    "casme2_5": ["disgust", "happiness", "others", "repression", "surprise"],
    "dfme7": ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"],
    "smic3": ["negative", "positive", "surprise"],
    "synth": ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"],
}

LABEL_SCHEMES: dict[str, dict[str, str]] = {
    "megc3": {**{e: "negative" for e in _NEG}, "happiness": "positive", "happy": "positive",
              "positive": "positive", "surprise": "surprise"},
    "casme3_3": {"happy": "positive", "happiness": "positive", "disgust": "negative", "fear": "negative",
                 "anger": "negative", "sad": "negative", "sadness": "negative", "surprise": "surprise"},
    "casme3_7": {"anger": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy",
                 "others": "others", "sad": "sad", "surprise": "surprise"},
    "casme2_5": {e: e for e in CLASS_NAMES["casme2_5"]},
    "dfme7": {**{e: e for e in CLASS_NAMES["dfme7"]}, "happy": "happiness", "sad": "sadness"},
    "smic3": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
    "synth": {e: e for e in CLASS_NAMES["synth"]},
}

#: per-dataset exceptions: scheme → dataset → {emotion: class or None (= dropped)}
SCHEME_OVERRIDES: dict[str, dict[str, dict[str, str | None]]] = {
    "megc3": {"casme2": {"fear": None, "sadness": None}},
}


def class_names(scheme: str) -> list[str]:
    """Class names of ``scheme`` in label order (label ``i`` ↔ ``class_names(scheme)[i]``)."""
    _check(scheme)
    return list(CLASS_NAMES[scheme])


def _check(scheme: str) -> None:
    if scheme not in LABEL_SCHEMES:
        raise ValueError(f"label scheme {scheme!r} unknown; expected one of {sorted(LABEL_SCHEMES)}")


def map_emotion(emotion: str, scheme: str, dataset: str | None = None) -> str | None:
    """Class name of one emotion under ``scheme`` (None when the scheme drops it)."""
    _check(scheme)
    e = str(emotion).strip().lower()
    over = SCHEME_OVERRIDES.get(scheme, {}).get(dataset or "", {})
    if e in over:
        return over[e]
    return LABEL_SCHEMES[scheme].get(e)


def apply_label_scheme(df: pd.DataFrame, scheme: str, *, dataset: str | None = None) -> pd.DataFrame:
    """Add an integer ``label`` column and drop rows whose emotion the scheme does not map.

    Args:
        df: a table from :func:`~psyau_graph.data.annotations.read_annotations`
            (needs ``emotion``; per-dataset overrides use its ``dataset`` column).
        scheme: a key of :data:`LABEL_SCHEMES`.
        dataset: overrides the ``dataset`` column for the per-dataset exceptions
            (default None: use the column when present).

    Returns:
        A copy with ``label`` (int64) and ``class_name``; dropped rows are appended to
        ``attrs["report"]`` (action ``"dropped by label scheme"``) and counted per
        emotion in ``attrs["dropped_emotions"]``.
    """
    _check(scheme)
    if "emotion" not in df.columns:
        raise ValueError("apply_label_scheme: the table has no 'emotion' column")
    ds = [dataset] * len(df) if dataset is not None else (
        df["dataset"].tolist() if "dataset" in df.columns else [None] * len(df))
    mapped = [map_emotion(e, scheme, d) for e, d in zip(df["emotion"].tolist(), ds)]
    keep = [m is not None for m in mapped]
    out = df.loc[keep].copy()
    names = CLASS_NAMES[scheme]
    out["class_name"] = [m for m in mapped if m is not None]
    out["label"] = out["class_name"].map(names.index).astype("int64")
    report = list(df.attrs.get("report", []))
    dropped: dict[str, int] = {}
    for (_, r), k in zip(df.iterrows(), keep):
        if k:
            continue
        dropped[str(r["emotion"])] = dropped.get(str(r["emotion"]), 0) + 1
        report.append({"file": r.get("file", df.attrs.get("source")), "sheet": r.get("sheet"),
                       "row": r.get("row"), "kind": "label_scheme", "problem": f"emotion {r['emotion']!r} not in scheme {scheme!r}",
                       "action": "dropped by label scheme"})
    out.attrs = dict(df.attrs)
    out.attrs["report"] = report
    out.attrs["dropped_emotions"] = dropped
    out.attrs["label_scheme"] = scheme
    return out.reset_index(drop=True)
