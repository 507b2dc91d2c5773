"""The MEGC 2019 composite label list (CASME II + SAMM + SMIC-HS, 442 clips, 3 classes).

Labs that hold the composite as flow images (STSTNet-style, see ``docs/flow_images.md``)
hold its clip list as a small CSV, in one of two layouts:

* **plain**: four columns ``dataset, subject, clip, label`` with ``label`` 0/1/2 =
  negative/positive/surprise, with or without a header row, often with blank lines;
* **image list**: a header ``dataset, sub, filename_o, label, apex, imagename``
  (used by several public MER code bases): ``filename_o`` is the clip name of the data
  set's own sheet, ``imagename`` the image file the code base reads, ``apex`` the apex
  frame number.

:func:`read_megc_list` maps both onto the standard annotation table of
:mod:`psyau_graph.data.annotations` (``dataset`` is the *source* data set of each row:
``casme2``, ``samm`` or ``smic``), with these differences, because the list carries no
frame numbers: ``onset`` and ``offset`` are ``<NA>`` (nullable ``Int64``), ``apex`` is
``<NA>`` unless the list has an apex column, ``aus`` is empty (join the CASME II / SAMM
sheets for AUs, see :func:`psyau_graph.preprocess.flow_images.join_aus`). Extra
columns: ``label`` (int 0/1/2), ``image`` (the ``imagename`` cell or ``None``),
``sample`` (= ``clip``) and ``sheet`` (``None``).

Subjects are spelled like the frame folders of each data set (CASME II ``1`` →
``sub01``, SAMM ``6`` → ``006``, SMIC ``1`` → ``s1``); a subject that already carries its
prefix (``sub01``, ``s01``) is kept as written except that SMIC's ``s01`` becomes ``s1``.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd

from .annotations import STANDARD_COLUMNS, AnnotationError

__all__ = ["MEGC_CLASSES", "SOURCE_DATASETS", "read_megc_list", "select_composite", "source_dataset"]

#: label code → class name (the MEGC 2019 order)
MEGC_CLASSES = ("negative", "positive", "surprise")

#: source data set spellings seen in composite lists (lower-cased, letters and digits only)
SOURCE_DATASETS = {
    "casme2": "casme2", "casmeii": "casme2", "casme": "casme2", "cas": "casme2", "casme2raw": "casme2",
    "samm": "samm", "sammv1": "samm",
    "smic": "smic", "smichs": "smic", "smic2": "smic", "smiche": "smic",
}


def _key(v) -> str:
    return re.sub(r"[^a-z0-9]", "", str(v).lower())


def source_dataset(value, where: str) -> str:
    """The package's data set name for a composite list's dataset cell (error names ``where``)."""
    k = _key(value)
    if k not in SOURCE_DATASETS:
        raise AnnotationError(f"{where}: dataset {value!r} is not part of the MEGC 2019 composite; "
                              f"expected CASME II, SAMM or SMIC (spelled e.g. casme2, samm, smic)")
    return SOURCE_DATASETS[k]


def _subject(dataset: str, value: str) -> str:
    v = value.strip()
    if dataset == "casme2":
        m = re.fullmatch(r"(?i)(?:sub)?0*(\d+)", v)
        return f"sub{int(m.group(1)):02d}" if m else v
    if dataset == "samm":
        return f"{int(v):03d}" if v.isdigit() else v
    m = re.fullmatch(r"(?i)s?0*(\d+)", v)  # smic
    return f"s{int(m.group(1))}" if m else v


_HEADER_ALIASES = {
    "dataset": ("dataset", "database", "db", "data"),
    "subject": ("sub", "subject", "subjectid"),
    "clip": ("filenameo", "filename", "clip", "video", "episode"),
    "label": ("label", "class", "emotion", "label3", "emotionclass"),
    "apex": ("apex", "apexframe"),
    "image": ("imagename", "image", "imgname"),
}


def _cell(v) -> str | None:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None
    s = str(v).strip()
    return s or None


def _label(v, where: str) -> int:
    s = _cell(v)
    if s is not None and re.fullmatch(r"[012](\.0+)?", s):
        return int(float(s))
    if s is not None and s.lower() in MEGC_CLASSES:
        return MEGC_CLASSES.index(s.lower())
    raise AnnotationError(f"{where}: label {v!r} is not 0/1/2 (negative/positive/surprise)")


def _header_columns(cells: list[str | None]) -> dict[str, int] | None:
    """Column index per field when ``cells`` is a header row, else None."""
    keys = [_key(c) if c is not None else "" for c in cells]
    cols = {}
    for field, aliases in _HEADER_ALIASES.items():
        for a in aliases:
            if a in keys:
                cols[field] = keys.index(a)
                break
    return cols if {"dataset", "subject", "clip", "label"} <= set(cols) else None


def read_megc_list(path, *, errors: str = "raise") -> pd.DataFrame:
    """Read a MEGC 2019 composite list (either layout, module docstring).

    Args:
        path: ``.csv`` (comma, semicolon or tab separated) file.
        errors: ``"raise"`` (default): every bad row is collected and one
            :class:`AnnotationError` lists them all. ``"report"``: bad rows are left out and
            listed in ``df.attrs["report"]``.

    Returns:
        the standard table (module docstring), one row per clip, in file order;
        ``df.attrs["report"]`` lists left-out rows and duplicates, ``df.attrs["layout"]`` is
        ``"plain"`` or ``"image list"``.
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors={errors!r}: expected 'raise' or 'report'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MEGC composite list not found: {path}")
    if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
        raise ValueError(f"{path.name}: expected a .csv composite list, got {path.suffix!r}")
    text = path.read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    first_line = next((ln for ln in lines if ln.strip(" \t,;")), "")
    sep = "\t" if "\t" in first_line else ";" if ";" in first_line and "," not in first_line else ","
    rows_lines = []
    for n, cells in enumerate(csv.reader(lines, delimiter=sep), start=1):
        cells = [_cell(c) for c in cells]
        if any(c is not None for c in cells):  # blank lines (also ',,,') are skipped
            rows_lines.append((cells, n))
    if not rows_lines:
        raise AnnotationError(f"{path.name}: the composite list is empty")
    first = [c.lstrip("\ufeff") if c else c for c in rows_lines[0][0]]
    cols = _header_columns(first)
    layout = "plain"
    if cols is not None:
        rows_lines = rows_lines[1:]
        layout = "image list" if "image" in cols else "plain"
    else:
        if len(first) < 4:
            raise AnnotationError(f"{path.name}, row {rows_lines[0][1]}: expected 4 columns "
                                  f"(dataset, subject, clip, label) or a header, got {len(first)}")
        cols = {"dataset": 0, "subject": 1, "clip": 2, "label": 3}
    report: list[dict] = []
    bad: list[str] = []
    recs: list[dict] = []
    seen: dict[tuple, int] = {}
    for cells, line in rows_lines:
        where = f"{path.name}, row {line}"
        try:
            get = lambda f: _cell(cells[cols[f]]) if f in cols and cols[f] < len(cells) else None  # noqa: E731
            ds = source_dataset(get("dataset") or "", where)
            subject, clip = get("subject"), get("clip")
            if subject is None or clip is None:
                raise AnnotationError(f"{where}: missing {'subject' if subject is None else 'clip'}")
            label = _label(get("label"), where)
            apex = get("apex")
            if apex is not None and not re.fullmatch(r"\d+(\.0+)?", apex):
                raise AnnotationError(f"{where}: apex {apex!r} is not a frame number")
        except AnnotationError as exc:
            bad.append(str(exc))
            report.append({"file": path.name, "sheet": None, "row": line, "problem": str(exc).split(": ", 1)[1],
                           "action": "skipped"})
            continue
        subject = _subject(ds, subject)
        key = (ds, subject, clip)
        if key in seen:
            report.append({"file": path.name, "sheet": None, "row": line,
                           "problem": f"duplicate of row {seen[key]} ({ds}/{subject}/{clip})", "action": "skipped"})
            continue
        seen[key] = line
        recs.append({"dataset": ds, "subject": subject, "clip": clip, "onset": pd.NA,
                     "apex": pd.NA if apex is None else int(float(apex)), "offset": pd.NA, "aus": frozenset(),
                     "emotion": MEGC_CLASSES[label], "row": line, "label": label, "image": get("image"),
                     "sample": clip, "sheet": None})
    if bad and errors == "raise":
        raise AnnotationError(f"{path.name}: {len(bad)} bad row(s):\n" + "\n".join(bad))
    df = pd.DataFrame.from_records(recs, columns=STANDARD_COLUMNS + ["label", "image", "sample", "sheet"])
    for c in ("onset", "apex", "offset"):
        df[c] = df[c].astype("Int64")
    df["row"] = df["row"].astype("int64")
    df["label"] = df["label"].astype("int64")
    df.attrs["report"] = report
    df.attrs["source"] = str(path)
    df.attrs["layout"] = layout
    return df


def _loose(name) -> str:
    s = re.sub(r"\s+", "", str(name).strip().lower())
    return re.sub(r"\d+", lambda m: str(int(m.group(0))), s)


def select_composite(items, composite: pd.DataFrame) -> tuple[list[int], dict]:
    """Positions of the clips a composite list names, e.g. to restrict a raw-frame cache to
    the 442 MEGC 2019 clips.

    Args:
        items: one ``(dataset, subject, clip, class_name)`` per cached clip.
        composite: table from :func:`read_megc_list`.

    Matching is on the source data set, the subject and the clip name compared loosely
    (case, spaces and leading zeros of digit runs ignored).

    Returns:
        ``(positions, report)``: positions in ``items`` order; report = ``listed``,
        ``selected``, ``not_in_cache`` (list rows with no cached clip) and
        ``label_disagreements`` (cached class ≠ the list's class).
    """
    want = {(r["dataset"], _loose(r["subject"]), _loose(r["clip"])): r for r in composite.to_dict("records")}
    found, pos, disagree = set(), [], []
    for i, (ds, subject, clip, cls) in enumerate(items):
        key = (str(ds), _loose(subject), _loose(clip))
        r = want.get(key)
        if r is None:
            continue
        pos.append(i)
        found.add(key)
        if cls != r["emotion"]:
            disagree.append({"dataset": ds, "subject": subject, "clip": clip, "cache": cls, "list": r["emotion"],
                             "row": int(r["row"])})
    missing = [{"dataset": r["dataset"], "subject": r["subject"], "clip": r["clip"], "row": int(r["row"])}
               for k, r in want.items() if k not in found]
    return pos, {"listed": len(want), "selected": len(pos), "not_in_cache": missing,
                 "label_disagreements": disagree}
