"""Readers for micro-expression annotation sheets.

Every supported data set ships its coding in a spreadsheet with its own column names,
header position, subject spelling and quirks. :func:`read_annotations` maps all of them
onto one table with the standard columns

=========== ============================================================================
column      meaning
=========== ============================================================================
dataset     ``"casme2"``, ``"samm"``, ``"casme3"``, ``"dfme"``, ``"smic"`` or ``"synth"``
subject     subject id as a string, spelled like the subject's frame folder
            (CASME II ``1`` → ``"sub01"``, SAMM ``6`` → ``"006"``, SMIC ``1`` → ``"s1"``)
clip        clip (episode / file) name as given in the sheet
onset       onset frame number (int)
apex        apex frame number (int)
offset      offset frame number (nullable ``Int64``; ``<NA>`` when the sheet has none)
aus         ``frozenset[int]`` of every AU number in the FACS code (also AUs outside the 12)
emotion     emotion label as given in the sheet (stripped), e.g. ``"happiness"``
row         1-based row of the sheet (spreadsheet numbering, header included)
=========== ============================================================================

plus ``onset_eq_apex`` / ``apex_eq_offset`` (bool flags: such rows exist in real
sheets and are kept), ``sample`` (``clip`` made unique within the subject: CAS(ME)^3
codes several intervals of one long video ``a``; repeated clips become
``"a_<onset>"``), ``sheet`` and, where the sheet has them, ``objective_class`` and
``subset`` (DFME).

Problems are listed in ``df.attrs["report"]`` (a list of dicts with keys ``file``,
``sheet``, ``row``, ``problem``, ``action``), never dropped silently. Column layouts
of every data set are documented in ``docs/datasets.md``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

DATASETS = ("casme2", "samm", "casme3", "dfme", "smic", "synth")

STANDARD_COLUMNS = ["dataset", "subject", "clip", "onset", "apex", "offset", "aus", "emotion", "row"]


class AnnotationError(ValueError):
    """A bad value in an annotation sheet (the message names file, sheet and row)."""


def _key(name) -> str:
    """Normalise a header cell: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# Header aliases per standard column, in priority order (first match wins).
_ALIASES: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "sub", "subjectid", "participant"),
    "clip": ("filename", "clip", "file", "video", "episode"),
    "onset": ("onsetframe", "onset"),
    "apex": ("apexframe", "apex", "apexframe1"),
    "offset": ("offsetframe", "offset"),
    "aus": ("actionunits", "actionunit", "au", "aus"),
    "emotion": ("emotion", "estimatedemotion", "emotions", "emotiontype"),
    "objective_class": ("objectiveclasses", "objectiveclass"),
    "subset": ("subset",),
}


def _subject_casme2(v: str) -> str:
    return f"sub{int(v):02d}" if v.isdigit() else v


def _subject_samm(v: str) -> str:
    return f"{int(v):03d}" if v.isdigit() else v


def _subject_smic(v: str) -> str:
    return f"s{int(v)}" if v.isdigit() else v


def _subject_synth(v: str) -> str:
    return f"sub{int(v):02d}" if v.isdigit() else v


@dataclass(frozen=True)
class SheetFormat:
    """How one data set's sheet is read.

    Args:
        sheets: preferred sheet name(s); ``None`` = the first sheet with a header.
        all_sheets: read every sheet that has a header and concatenate (DFME subsets;
            the sheet name becomes ``subset``).
        subject: maps the subject cell (as a stripped string, integer floats made
            integral) to the folder spelling.
        apex_required: when False (SMIC) a missing apex is estimated as the middle of
            onset..offset and the row is reported.
        aus_required: when False (SMIC) a missing AU column gives empty sets.
    """

    sheets: tuple[str, ...] | None = None
    all_sheets: bool = False
    subject: Callable[[str], str] = str
    apex_required: bool = True
    aus_required: bool = True
    extra: tuple[str, ...] = field(default=("objective_class", "subset"))


FORMATS: dict[str, SheetFormat] = {
    "casme2": SheetFormat(subject=_subject_casme2),
    "samm": SheetFormat(sheets=("MICRO_ONLY",), subject=_subject_samm),
    "casme3": SheetFormat(sheets=("label",)),
    "dfme": SheetFormat(all_sheets=True),
    "smic": SheetFormat(subject=_subject_smic, apex_required=False, aus_required=False),
    "synth": SheetFormat(subject=_subject_synth),
}

_HEADER_SCAN_ROWS = 30


def _find_header(raw: pd.DataFrame) -> int | None:
    """Index of the first row holding both a subject and a clip header cell."""
    for i in range(min(len(raw), _HEADER_SCAN_ROWS)):
        keys = {_key(v) for v in raw.iloc[i].tolist() if not _isna(v)}
        if keys & set(_ALIASES["subject"]) and keys & set(_ALIASES["clip"]):
            return i
    return None


def _isna(v) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _cell_str(v) -> str | None:
    """A cell as a stripped string (integral floats without ``.0``); None when empty."""
    if _isna(v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


def _frame(v, name: str) -> int | None:
    """Parse a frame number; None when empty; ValueError when not a non-negative integer."""
    if _isna(v) or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise ValueError(f"{name} {v!r} is not a frame number")
    if isinstance(v, int):
        out = v
    elif isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"{name} {v!r} is not an integer frame number")
        out = int(v)
    else:
        s = str(v).strip()
        if re.fullmatch(r"\d+(\.0+)?", s) is None:
            raise ValueError(f"{name} {v!r} is not an integer frame number")
        out = int(float(s))
    if out < 0:
        raise ValueError(f"{name} {out} is negative")
    return out


def _load_sheets(path: Path, fmt: SheetFormat, sheet) -> list[tuple[str | None, pd.DataFrame]]:
    """Raw cell grids (no header interpretation) of the sheets to read."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if sheet is not None:
            raise ValueError(f"{path.name}: sheet={sheet!r} given but a CSV file has no sheets")
        raw = pd.read_csv(path, header=None, dtype=object, skip_blank_lines=False, keep_default_na=True)
        return [(None, raw)]
    if suffix not in (".xlsx", ".xlsm", ".xls"):
        raise ValueError(f"{path.name}: expected an .xlsx or .csv annotation file, got {suffix!r}")
    book = pd.ExcelFile(path)
    names = book.sheet_names
    if sheet is not None:
        wanted = [sheet] if isinstance(sheet, str) else list(sheet)
        missing = [s for s in wanted if s not in names]
        if missing:
            raise ValueError(f"{path.name}: sheet(s) {missing} not found; the file has {names}")
    elif fmt.sheets is not None and any(s in names for s in fmt.sheets):
        wanted = [s for s in fmt.sheets if s in names]
    else:
        wanted = names
    grids = [(s, pd.read_excel(book, sheet_name=s, header=None, dtype=object)) for s in wanted]
    if sheet is None and not fmt.all_sheets:
        with_header = [g for g in grids if _find_header(g[1]) is not None]
        return with_header[:1] or grids[:1]
    return grids


def read_annotations(path, dataset: str, *, errors: str = "raise", sheet=None) -> pd.DataFrame:
    """Read one annotation sheet into the standard table (module docstring).

    Args:
        path: ``.xlsx`` or ``.csv`` file.
        dataset: one of :data:`DATASETS`; selects the sheet, aliases and subject spelling.
        errors: ``"raise"`` (default): a bad row raises :class:`AnnotationError` naming
            file, sheet and row. ``"report"``: bad rows are skipped and listed in
            ``df.attrs["report"]``.
        sheet: sheet name (or list of names) to read (default: the data set's usual
            sheet; DFME: every sheet with a header).

    Returns:
        DataFrame with :data:`STANDARD_COLUMNS` plus flags (module docstring);
        ``df.attrs["report"]`` lists skipped rows and kept-but-odd rows.
    """
    if dataset == "megc2019":  # the composite clip list, not a data set's own sheet: see data/megc.py
        from .megc import read_megc_list
        return read_megc_list(path, errors=errors)
    if dataset not in FORMATS:
        raise ValueError(f"dataset={dataset!r}: expected one of {DATASETS}")
    if errors not in ("raise", "report"):
        raise ValueError(f"errors={errors!r}: expected 'raise' or 'report'")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    fmt = FORMATS[dataset]
    report: list[dict] = []
    records: list[dict] = []
    for sheet_name, raw in _load_sheets(path, fmt, sheet):
        if sheet is None and fmt.all_sheets and _find_header(raw) is None and len(raw.columns) < 3:
            report.append({"file": path.name, "sheet": sheet_name, "row": None,
                           "problem": "sheet has no annotation header", "action": "sheet skipped"})
            continue
        records += _read_grid(path, sheet_name, raw, dataset, fmt, errors, report)
    df = pd.DataFrame.from_records(records, columns=_output_columns(records))
    if len(df):
        df = _dedupe(df, path, errors, report)
        df["onset"] = df["onset"].astype("int64")
        df["apex"] = df["apex"].astype("int64")
        df["offset"] = df["offset"].astype("Int64")
        df["row"] = df["row"].astype("int64")
    df.attrs["report"] = report
    df.attrs["source"] = str(path)
    return df.reset_index(drop=True)


def _output_columns(records: list[dict]) -> list[str]:
    cols = STANDARD_COLUMNS + ["onset_eq_apex", "apex_eq_offset", "sample", "sheet"]
    for extra in ("objective_class", "subset"):
        if any(extra in r for r in records):
            cols.append(extra)
    return cols


def _where(path: Path, sheet, row: int) -> str:
    return f"{path.name}, sheet {sheet!r}, row {row}" if sheet is not None else f"{path.name}, row {row}"


def _read_grid(path, sheet, raw, dataset, fmt, errors, report) -> list[dict]:
    hdr = _find_header(raw)
    if hdr is None:
        raise AnnotationError(
            f"{_where(path, sheet, 1)}: no header row with a subject and a clip/filename column "
            f"in the first {_HEADER_SCAN_ROWS} rows")
    keys = [_key(v) if not _isna(v) else "" for v in raw.iloc[hdr].tolist()]
    cols: dict[str, int] = {}
    for std, aliases in _ALIASES.items():
        for alias in aliases:
            if alias in keys:
                cols[std] = keys.index(alias)
                break
    required = ["subject", "clip", "onset", "emotion"]
    required += ["apex"] if fmt.apex_required else []
    required += ["aus"] if fmt.aus_required else []
    missing = [c for c in required if c not in cols]
    if missing:
        raise AnnotationError(
            f"{_where(path, sheet, hdr + 1)}: header lacks column(s) {missing} for dataset "
            f"{dataset!r}; found {[str(v) for v in raw.iloc[hdr].tolist() if not _isna(v)]}")
    from psyau_graph.au import parse_facs

    out = []
    for i in range(hdr + 1, len(raw)):
        cells = raw.iloc[i].tolist()
        if all(_isna(v) or (isinstance(v, str) and not v.strip()) for v in cells):
            continue  # blank line
        row = i + 1
        try:
            rec = _parse_row(cells, cols, fmt, parse_facs)
        except ValueError as exc:
            msg = f"{_where(path, sheet, row)}: {exc}"
            if errors == "raise":
                raise AnnotationError(msg) from exc
            report.append({"file": path.name, "sheet": sheet, "row": row, "problem": str(exc),
                           "action": "skipped"})
            continue
        for note in rec.pop("_notes"):
            report.append({"file": path.name, "sheet": sheet, "row": row, "problem": note, "action": "kept"})
        rec.update(dataset=dataset, row=row, sheet=sheet)
        if dataset == "dfme" and "subset" not in rec and sheet is not None:
            rec["subset"] = str(sheet)
        out.append(rec)
    return out


def _parse_row(cells, cols, fmt, parse_facs) -> dict:
    notes: list[str] = []
    subject = _cell_str(cells[cols["subject"]])
    if subject is None:
        raise ValueError("missing subject")
    clip = _cell_str(cells[cols["clip"]])
    if clip is None:
        raise ValueError("missing clip/filename")
    onset = _frame(cells[cols["onset"]], "onset")
    if onset is None:
        raise ValueError("missing onset frame")
    apex = _frame(cells[cols["apex"]], "apex") if "apex" in cols else None
    offset = _frame(cells[cols["offset"]], "offset") if "offset" in cols else None
    if apex is None:
        if fmt.apex_required or offset is None:
            raise ValueError("missing apex frame")
        apex = (onset + offset) // 2
        notes.append(f"no apex in the sheet: estimated as the middle frame {apex}")
    if onset > apex:
        raise ValueError(f"onset {onset} after apex {apex}")
    if offset is not None and apex > offset:
        raise ValueError(f"apex {apex} after offset {offset}")
    if onset == apex:
        notes.append(f"onset == apex ({onset})")
    if offset is not None and apex == offset:
        notes.append(f"apex == offset ({apex})")
    emotion = _cell_str(cells[cols["emotion"]])
    if emotion is None:
        raise ValueError("missing emotion")
    code = _cell_str(cells[cols["aus"]]) if "aus" in cols else None
    if code is None:
        if fmt.aus_required:
            raise ValueError("missing action units")
        aus = frozenset()
    else:
        aus = _parse_aus(code, parse_facs, notes)
    rec = {"subject": fmt.subject(subject), "clip": clip, "onset": onset, "apex": apex,
           "offset": pd.NA if offset is None else offset, "aus": aus, "emotion": emotion,
           "onset_eq_apex": onset == apex, "apex_eq_offset": offset is not None and apex == offset,
           "_notes": notes}
    for extra in fmt.extra:
        if extra in cols:
            rec[extra] = _cell_str(cells[cols[extra]])
    return rec


def _parse_aus(code: str, parse_facs, notes: list[str]) -> frozenset:
    """AU set of a FACS code; partial reads are kept and noted, nothing readable is an error."""
    try:
        return frozenset(int(a) for a in parse_facs(code, errors="raise"))
    except ValueError as exc:
        partial = frozenset(int(a) for a in parse_facs(code, errors="report"))
        if not partial:
            raise ValueError(f"unparseable action units {code!r} ({exc})") from exc
        notes.append(f"action units {code!r} partly unreadable, kept {sorted(partial)} ({exc})")
        return partial


def _dedupe(df: pd.DataFrame, path: Path, errors: str, report: list[dict]) -> pd.DataFrame:
    """Drop exact repeats of (subject, clip, onset, apex); make ``sample`` unique per subject."""
    dup = df.duplicated(["subject", "clip", "onset", "apex"], keep="first")
    for _, r in df[dup].iterrows():
        msg = (f"{_where(path, r['sheet'], r['row'])}: duplicate of an earlier row "
               f"(subject {r['subject']}, clip {r['clip']}, onset {r['onset']}, apex {r['apex']})")
        if errors == "raise":
            raise AnnotationError(msg)
        report.append({"file": path.name, "sheet": r["sheet"], "row": int(r["row"]),
                       "problem": msg.split(": ", 1)[1], "action": "skipped"})
    df = df[~dup].copy()
    repeated = df.duplicated(["subject", "clip"], keep=False)
    df["sample"] = df["clip"].where(~repeated, df["clip"] + "_" + df["onset"].astype(str))
    return df


def summarize_report(df: pd.DataFrame) -> str:
    """One line per report entry, for logs and CLIs."""
    lines = []
    for r in df.attrs.get("report", []):
        where = f"sheet {r['sheet']!r}, " if r.get("sheet") is not None else ""
        lines.append(f"{r['file']}, {where}row {r['row']}: {r['problem']} [{r['action']}]")
    return "\n".join(lines)
