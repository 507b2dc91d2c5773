"""Readers for micro-expression annotation sheets, as the data sets release them.

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
offset      offset frame number (nullable ``Int64``; ``<NA>`` when the sheet has none,
            records ``0``/``/``/``-``, or gives an offset before the apex)
aus         ``frozenset[int]`` of every AU number in the FACS code (also numbered
            head/eye codes such as 56, 61, and AUs outside the 12 graph nodes)
emotion     emotion label as given in the sheet (stripped), e.g. ``"happiness"``
row         1-based row of the sheet (spreadsheet numbering, header included)
=========== ============================================================================

plus the flags ``onset_eq_apex``, ``apex_eq_offset``, ``aus_uncoded`` (AU cell ``?``),
``offset_missing`` (offset set to NA), ``apex_estimated`` (opt-in estimate), the column
``aus_coding`` (how completely the AUs were coded, one of
:data:`psyau_graph.au.AU_CODINGS`: ``"coded"``; ``"partial"`` for a ``?`` or partly
unreadable cell with AUs; ``"none"`` for no AU column (SMIC), a blank or a lone ``?``), the
column ``descriptors`` (tuple of FACS action descriptors / miscellaneous codes:
``AD38``, ``M55``), ``sample``
(``clip`` made unique within the subject: CAS(ME)^3 codes several intervals of one
long video ``a``; repeated clips become ``"a_<onset>"``), ``sheet``, ``file`` and,
where the sheet has them, ``objective_class``, ``subset``, ``fps`` and ``emotion_id``
(DFME).

Every oddity is an entry of ``df.attrs["report"]`` (dicts with ``file``, ``sheet``,
``row``, ``kind``, ``problem``, ``action``); :func:`summarize_report` turns them into
one line per kind. Rows are left out only when they cannot be used for onset→apex
recognition (no subject/clip/onset/emotion, no apex, onset after apex, a frame that
is not a frame number, an exact duplicate); each is listed. Layouts of every data set
and release are documented in ``docs/datasets.md``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from psyau_graph.au import parse_facs

from .formulas import col_index as _col_index
from .formulas import eval_formula as _eval_formula
from .formulas import with_formulas as _with_formulas

DATASETS = ("casme2", "samm", "casme3", "dfme", "smic", "synth")

STANDARD_COLUMNS = ["dataset", "subject", "clip", "onset", "apex", "offset", "aus", "emotion", "row"]
FLAG_COLUMNS = ["onset_eq_apex", "apex_eq_offset", "aus_uncoded", "offset_missing", "apex_estimated"]
EXTRA_COLUMNS = ("objective_class", "subset", "fps", "emotion_id")

#: one summary text per report kind (the action is part of it).
REPORT_KINDS: dict[str, str] = {
    "aus_uncoded": "AU cell '?' (kept; AUs it does not list are unknown)",
    "descriptors": "FACS descriptors / misc codes in the AU cell (kept, in 'descriptors')",
    "aus_partial": "AU cell partly unreadable (kept the AUs read)",
    "aus_missing": "no AU code (kept; AU labels unknown)",
    "offset_missing": "offset not recorded (0, '/', '-' or blank): offset NA (kept)",
    "offset_before_apex": "offset before apex: offset NA (kept)",
    "onset_eq_apex": "onset == apex (kept)",
    "apex_eq_offset": "apex == offset (kept)",
    "apex_estimated": "apex estimated as the middle of onset..offset (kept)",
    "frame_from_formula": "frame number computed from a formula cell (kept)",
    "label_disagrees": "class in the sheet differs from the class in the clip name (kept the sheet's)",
    "emotion_from_clip": "no class in the sheet: taken from the clip name (kept)",
    "apex_missing": "apex not annotated ('/' or blank): left out",
    "onset_after_apex": "onset after apex: left out",
    "missing_field": "subject, clip, onset or emotion missing: left out",
    "bad_value": "value not usable (not a frame number, unreadable AU code): left out",
    "duplicate": "exact duplicate of an earlier row: left out",
    "sheet_skipped": "sheet without an annotation header: skipped",
    "sheet_ignored": "further sheet with an annotation header: not read (choose with sheet=...)",
}


class AnnotationError(ValueError):
    """A bad value in an annotation sheet (the message names file, sheet and row)."""


class _RowError(ValueError):
    """A row that cannot be used; ``kind`` is a key of :data:`REPORT_KINDS`."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _key(name) -> str:
    """Normalise a header cell: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# Header aliases per standard column, in priority order (first match wins).
_ALIASES: dict[str, tuple[str, ...]] = {
    "subject": ("subject", "sub", "subjectid", "participant"),
    "clip": ("filename", "clip", "file", "video", "episode"),
    "onset": ("onsetframe", "onset", "onsetf"),
    "apex": ("apexframe", "apex", "apexframe1", "apexf"),
    "offset": ("offsetframe", "offset", "offsetf"),
    "aus": ("actionunits", "actionunit", "au", "aus", "ausplit"),
    "emotion": ("emotion", "estimatedemotion", "emotions", "emotiontype"),
    "objective_class": ("objectiveclasses", "objectiveclass"),
    "subset": ("subset",),
    "fps": ("fps", "framerate"),
    "emotion_id": ("emotionid",),
}


def _subject_casme2(v: str) -> str:
    return f"sub{int(v):02d}" if v.isdigit() else v


def _subject_samm(v: str) -> str:
    return f"{int(v):03d}" if v.isdigit() else v


def _subject_smic(v: str) -> str:
    return f"s{int(v)}" if v.isdigit() else v


#: SMIC class codes in a ``label`` column and class tokens in clip names.
SMIC_CODES = {"0": "negative", "1": "positive", "2": "surprise"}
SMIC_CLIP_TOKENS = {"ne": "negative", "neg": "negative", "po": "positive", "pos": "positive",
                    "sur": "surprise", "su": "surprise"}


@dataclass(frozen=True)
class SheetFormat:
    """How one data set's sheet is read.

    Args:
        sheets: preferred sheet name(s); ``None`` = the first sheet with a header.
        all_sheets: read every sheet that has a header and concatenate (DFME subsets).
        subject: maps the subject cell (as a stripped string, integer floats made
            integral) to the folder spelling.
        apex_required: when False (SMIC) a missing apex is estimated as the middle of
            onset..offset and the row is reported.
        aus_required: when False (SMIC) a missing AU column gives empty sets.
        emotion_aliases: extra header names of the class column (SMIC: ``label``).
        clip_classes: clip-name tokens that carry the class (SMIC), checked against
            the sheet's class.
    """

    sheets: tuple[str, ...] | None = None
    all_sheets: bool = False
    subject: Callable[[str], str] = str
    apex_required: bool = True
    aus_required: bool = True
    emotion_aliases: tuple[str, ...] = ()
    clip_classes: dict | None = None


FORMATS: dict[str, SheetFormat] = {
    "casme2": SheetFormat(subject=_subject_casme2),
    "samm": SheetFormat(sheets=("MICRO_ONLY",), subject=_subject_samm),
    "casme3": SheetFormat(sheets=("label",)),
    "dfme": SheetFormat(all_sheets=True),
    "smic": SheetFormat(subject=_subject_smic, apex_required=False, aus_required=False,
                        emotion_aliases=("label", "class"), clip_classes=SMIC_CLIP_TOKENS),
    "synth": SheetFormat(subject=_subject_casme2),
}

_HEADER_SCAN_ROWS = 60
_NOT_ANNOTATED = {"/", "-", "–", "—", "?", "na", "n/a", "nan", "none", "null", "x"}


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


def _blank(v) -> bool:
    return _isna(v) or (isinstance(v, str) and not v.strip())


def _cell_str(v) -> str | None:
    """A cell as a stripped string (integral floats without ``.0``); None when empty."""
    if _isna(v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    s = str(v).strip()
    return s or None


# ---------------------------------------------------------------- cells
def _frame(v, name: str, grid: pd.DataFrame, notes: list) -> int | str | None:
    """Parse a frame number.

    Returns:
        the int; None when blank; the marker string (``"/"``, ``"-"``) for cells that
        say "not annotated".

    Raises:
        _RowError: not a non-negative integer frame number.
    """
    if _blank(v):
        return None
    if isinstance(v, bool):
        raise _RowError("bad_value", f"{name} {v!r} is not a frame number")
    if isinstance(v, str) and v.strip().startswith("="):
        try:
            value = _eval_formula(v, grid)
        except (ValueError, ZeroDivisionError) as exc:
            raise _RowError("bad_value", f"{name}: {exc}") from exc
        notes.append(("frame_from_formula", f"{name} {v.strip()!r} = {value:g}"))
        v = value
    if isinstance(v, str) and v.strip().lower() in _NOT_ANNOTATED:
        return v.strip()
    if isinstance(v, int):
        out = v
    elif isinstance(v, float):
        if not v.is_integer():
            raise _RowError("bad_value", f"{name} {v!r} is not an integer frame number")
        out = int(v)
    else:
        s = str(v).strip()
        if re.fullmatch(r"\d+(\.0+)?", s) is None:
            raise _RowError("bad_value", f"{name} {v!r} is not an integer frame number")
        out = int(float(s))
    if out < 0:
        raise _RowError("bad_value", f"{name} {out} is negative")
    return out


# ---------------------------------------------------------------- loading
def _load_sheets(path: Path, fmt: SheetFormat, sheet,
                 ignored: list | None = None) -> list[tuple[str | None, pd.DataFrame]]:
    """Raw cell grids (no header interpretation) of the sheets to read.

    Names of further sheets that have a header but are not read are appended to ``ignored``.
    """
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
    grids = [(s, _with_formulas(path, s, pd.read_excel(book, sheet_name=s, header=None, dtype=object)))
             for s in wanted]
    if sheet is None and not fmt.all_sheets:
        with_header = [g for g in grids if _find_header(g[1]) is not None]
        if ignored is not None:
            ignored += [name for name, _ in with_header[1:]]
        return with_header[:1] or grids[:1]
    return grids


def _generic_sheet_name(name) -> bool:
    return name is None or re.fullmatch(r"(?i)sheet\s*\d*", str(name)) is not None


# ---------------------------------------------------------------- reading
def read_annotations(path, dataset: str, *, errors: str = "report", sheet=None, columns=None,
                     apex_estimate: str | None = None) -> pd.DataFrame:
    """Read annotation sheet(s) into the standard table (module docstring).

    Args:
        path: ``.xlsx`` or ``.csv`` file, or a list of them (DFME's three files),
            concatenated in order.
        dataset: one of :data:`DATASETS`; selects the sheet, aliases and subject spelling.
        errors: ``"report"`` (default): rows that cannot be used are left out and listed
            in ``df.attrs["report"]``. ``"raise"``: after reading every row, one
            :class:`AnnotationError` lists every such row (kept-but-odd rows never raise).
        sheet: sheet name (or list of names) to read (default: the data set's usual
            sheet; DFME: every sheet with a header).
        columns: for sheets without a header row: ``{standard column: spreadsheet
            column}``, e.g. ``{"subject": "A", "clip": "B", "onset": "C", ...}``
            (letters, or 1-based numbers). Rows above the first row with an integer
            onset are treated as title rows.
        apex_estimate: ``None`` (default): a row whose apex is not annotated (``/`` or
            blank) is left out. ``"middle"``: its apex becomes ``(onset + offset) // 2``
            when the offset is known; flagged ``apex_estimated`` and reported.

    Returns:
        DataFrame with :data:`STANDARD_COLUMNS` plus flags (module docstring);
        ``df.attrs["report"]`` lists left-out and kept-but-odd rows.

    Raises:
        AnnotationError: no usable header, or ``errors="raise"`` and bad rows.
        ValueError / FileNotFoundError: bad arguments or a missing file.
    """
    if dataset == "megc2019":  # the composite clip list, not a data set's own sheet: see data/megc.py
        from .megc import read_megc_list
        return read_megc_list(path, errors=errors)
    if dataset not in FORMATS:
        raise ValueError(f"dataset={dataset!r}: expected one of {DATASETS}")
    if errors not in ("raise", "report"):
        raise ValueError(f"errors={errors!r}: expected 'raise' or 'report'")
    if apex_estimate not in (None, "middle"):
        raise ValueError(f"apex_estimate={apex_estimate!r}: expected None or 'middle'")
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if not paths:
        raise ValueError("read_annotations: no annotation file given")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"annotation file not found: {p}")
    col_map = _parse_columns(columns) if columns is not None else None
    fmt = FORMATS[dataset]
    report: list[dict] = []
    records: list[dict] = []
    opts = {"apex_estimate": apex_estimate}
    for p in paths:
        ignored: list = []
        grids = _load_sheets(p, fmt, sheet, ignored)
        for name in ignored:
            report.append(_entry(p, name, None, "sheet_ignored",
                                 f"sheet {name!r} also has an annotation header; read {grids[0][0]!r} "
                                 f"(choose with sheet=...)", "sheet not read"))
        for sheet_name, raw in grids:
            if col_map is None and sheet is None and fmt.all_sheets and _find_header(raw) is None \
                    and len(raw.columns) < 3:
                report.append(_entry(p, sheet_name, None, "sheet_skipped", "sheet has no annotation header",
                                     "sheet skipped"))
                continue
            records += _read_grid(p, sheet_name, raw, dataset, fmt, col_map, opts, report)
    df = pd.DataFrame.from_records(records, columns=_output_columns(records))
    if len(df):
        df = _dedupe(df, report)
        df["onset"] = df["onset"].astype("int64")
        df["apex"] = df["apex"].astype("int64")
        df["offset"] = df["offset"].astype("Int64")
        df["row"] = df["row"].astype("int64")
        if "fps" in df.columns:
            df["fps"] = pd.array(df["fps"].tolist(), dtype="Int64")
    df.attrs["report"] = report
    df.attrs["source"] = ";".join(str(p) for p in paths)
    if errors == "raise":
        bad = [r for r in report if r["action"] in ("skipped", "sheet skipped")]
        if bad:
            lines = [f"{_where_entry(r)}: {r['problem']}" for r in bad]
            raise AnnotationError(f"{len(bad)} annotation row(s) cannot be used:\n  " + "\n  ".join(lines))
    return df.reset_index(drop=True)


def _parse_columns(columns) -> dict[str, int]:
    """``{"subject": "A", ...}`` or ``"subject=A,clip=B"`` → {standard column: 0-based index}."""
    if isinstance(columns, str):
        items = []
        for part in columns.split(","):
            if "=" not in part:
                raise ValueError(f"columns: {part!r} is not NAME=COLUMN (e.g. subject=A)")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    else:
        items = list(dict(columns).items())
    out: dict[str, int] = {}
    for k, v in items:
        if k not in _ALIASES:
            raise ValueError(f"columns: unknown column name {k!r}; expected some of {sorted(_ALIASES)}")
        s = str(v).strip()
        if re.fullmatch(r"[A-Za-z]{1,3}", s):
            out[k] = _col_index(s)
        elif re.fullmatch(r"\d+", s) and int(s) >= 1:
            out[k] = int(s) - 1
        else:
            raise ValueError(f"columns: {k}={v!r}: expected a column letter (A, B, ...) or a 1-based number")
    return out


def _output_columns(records: list[dict]) -> list[str]:
    cols = STANDARD_COLUMNS + FLAG_COLUMNS + ["aus_coding", "descriptors", "sample", "sheet", "file"]
    for extra in EXTRA_COLUMNS:
        if any(extra in r for r in records):
            cols.append(extra)
    return cols


def _entry(path: Path, sheet, row, kind: str, problem: str, action: str) -> dict:
    return {"file": path.name, "sheet": sheet, "row": row, "kind": kind, "problem": problem, "action": action}


def _where(path: Path, sheet, row) -> str:
    return f"{path.name}, sheet {sheet!r}, row {row}" if sheet is not None else f"{path.name}, row {row}"


def _where_entry(r: dict) -> str:
    return _where(Path(str(r["file"])), r.get("sheet"), r.get("row"))


def _header_columns(path, sheet, raw, hdr, dataset, fmt) -> dict[str, int]:
    keys = [_key(v) if not _isna(v) else "" for v in raw.iloc[hdr].tolist()]
    cols: dict[str, int] = {}
    aliases = dict(_ALIASES, emotion=_ALIASES["emotion"] + fmt.emotion_aliases)
    for std, names in aliases.items():
        for alias in names:
            if alias in keys:
                cols[std] = keys.index(alias)
                break
    _check_required(path, sheet, hdr + 1, cols, dataset, fmt,
                    found=[str(v) for v in raw.iloc[hdr].tolist() if not _isna(v)])
    return cols


def _check_required(path, sheet, row, cols, dataset, fmt, found) -> None:
    required = ["subject", "clip", "onset"]
    required += ["emotion"] if fmt.clip_classes is None else []
    required += ["apex"] if fmt.apex_required else []
    required += ["aus"] if fmt.aus_required else []
    missing = [c for c in required if c not in cols]
    if missing:
        raise AnnotationError(
            f"{_where(path, sheet, row)}: header lacks column(s) {missing} for dataset "
            f"{dataset!r}; found {found}")


def _read_grid(path, sheet, raw, dataset, fmt, col_map, opts, report) -> list[dict]:
    if col_map is not None:
        _check_required(path, sheet, 1, col_map, dataset, fmt, found=sorted(col_map))
        too_far = [k for k, c in col_map.items() if c >= raw.shape[1]]
        if too_far:
            raise AnnotationError(f"{_where(path, sheet, 1)}: columns {too_far} are beyond the sheet's "
                                  f"{raw.shape[1]} columns")
        cols = col_map
        hdr = _find_header(raw)
        start = hdr + 1 if hdr is not None else _first_data_row(raw, cols["onset"])
    else:
        hdr = _find_header(raw)
        if hdr is None:
            raise AnnotationError(
                f"{_where(path, sheet, 1)}: no header row with a subject and a clip/filename column "
                f"in the first {_HEADER_SCAN_ROWS} rows (for a sheet without a header, name the "
                f"columns: columns={{'subject': 'A', 'clip': 'B', ...}} / --columns subject=A,clip=B,...)")
        cols = _header_columns(path, sheet, raw, hdr, dataset, fmt)
        start = hdr + 1
    subset = None
    if dataset == "dfme":
        subset = path.stem if _generic_sheet_name(sheet) else str(sheet)
    out = []
    for i in range(start, len(raw)):
        cells = raw.iloc[i].tolist()
        if all(_blank(v) for v in cells):
            continue  # blank line
        row = i + 1
        notes: list[tuple[str, str]] = []
        try:
            rec = _parse_row(cells, cols, fmt, raw, notes, opts)
        except _RowError as exc:
            report.append(_entry(path, sheet, row, exc.kind, str(exc), "skipped"))
            continue
        for kind, note in notes:
            report.append(_entry(path, sheet, row, kind, note, "kept"))
        rec.update(dataset=dataset, row=row, sheet=sheet, file=path.name)
        if subset is not None and rec.get("subset") is None:
            rec["subset"] = subset
        out.append(rec)
    return out


def _first_data_row(raw: pd.DataFrame, onset_col: int) -> int:
    """First row whose onset cell is a number (title rows of header-less sheets come before)."""
    for i in range(len(raw)):
        v = raw.iat[i, onset_col]
        if isinstance(v, (int, float)) and not _isna(v) or (isinstance(v, str) and v.strip().isdigit()):
            return i
    return len(raw)


def _parse_row(cells, cols, fmt, grid, notes, opts) -> dict:
    def get(name):
        return cells[cols[name]] if name in cols and cols[name] < len(cells) else None

    subject = _cell_str(get("subject"))
    if subject is None:
        raise _RowError("missing_field", "missing subject")
    clip = _cell_str(get("clip"))
    if clip is None:
        raise _RowError("missing_field", "missing clip/filename")
    onset = _frame(get("onset"), "onset", grid, notes)
    if onset is None or isinstance(onset, str):
        raise _RowError("missing_field", "missing onset frame" + (f" ({onset!r})" if onset else ""))
    apex = _frame(get("apex"), "apex", grid, notes) if "apex" in cols else None
    offset_missing = False
    try:
        offset = _frame(get("offset"), "offset", grid, notes) if "offset" in cols else None
    except _RowError as exc:  # recognition needs only onset and apex: keep the row
        notes.append(("offset_missing", f"{exc}: set to NA"))
        offset, offset_missing = None, True
    if offset_missing:
        pass
    elif isinstance(offset, str) or offset == 0:
        notes.append(("offset_missing", f"offset {offset!r}: set to NA"))
        offset, offset_missing = None, True
    elif offset is None and "offset" in cols:
        notes.append(("offset_missing", "offset blank: NA"))
        offset_missing = True
    apex_estimated = False
    if apex is None or isinstance(apex, str):
        shown = f"apex {apex!r}" if apex is not None else "apex blank"
        estimate = opts["apex_estimate"] == "middle" or not fmt.apex_required
        if not estimate or offset is None:
            why = "" if offset is not None or not estimate else " and no offset to estimate it from"
            raise _RowError("apex_missing", f"{shown} (not annotated){why}")
        apex = (onset + offset) // 2
        apex_estimated = True
        notes.append(("apex_estimated", f"{shown}: estimated as the middle frame {apex}"))
    if onset > apex:
        raise _RowError("onset_after_apex", f"onset {onset} after apex {apex}")
    if offset is not None and offset < apex:
        notes.append(("offset_before_apex", f"offset {offset} before apex {apex}: set to NA"))
        offset, offset_missing = None, True
    if onset == apex:
        notes.append(("onset_eq_apex", f"onset == apex ({onset})"))
    if offset is not None and apex == offset:
        notes.append(("apex_eq_offset", f"apex == offset ({apex})"))
    emotion = _emotion(get("emotion") if "emotion" in cols else None, clip, fmt, notes)
    aus, descriptors, uncoded, coding = _parse_aus(get("aus") if "aus" in cols else None, "aus" in cols, fmt,
                                                   notes)
    rec = {"subject": fmt.subject(subject), "clip": clip, "onset": onset, "apex": apex,
           "offset": pd.NA if offset is None else offset, "aus": aus, "emotion": emotion,
           "onset_eq_apex": onset == apex, "apex_eq_offset": offset is not None and apex == offset,
           "aus_uncoded": uncoded, "offset_missing": offset_missing, "apex_estimated": apex_estimated,
           "aus_coding": coding, "descriptors": descriptors}
    for extra in EXTRA_COLUMNS:
        if extra in cols:
            rec[extra] = _cell_str(get(extra))
    if rec.get("fps") is not None:
        rec["fps"] = _frame(rec["fps"], "fps", grid, notes)
        if not isinstance(rec["fps"], int) or rec["fps"] <= 0:
            raise _RowError("bad_value", f"fps {rec['fps']!r} is not a positive frame rate")
    return rec


def _emotion(cell, clip: str, fmt: SheetFormat, notes) -> str:
    """The class as given; SMIC: codes 0/1/2 translated, checked against the clip name."""
    emotion = _cell_str(cell)
    if fmt.clip_classes is None:
        if emotion is None:
            raise _RowError("missing_field", "missing emotion")
        return emotion
    if emotion is not None and emotion in SMIC_CODES:
        emotion = SMIC_CODES[emotion]
    tokens = [t.lower() for t in re.split(r"[_\-\s]+", clip)]
    from_clip = next((fmt.clip_classes[t] for t in tokens if t in fmt.clip_classes), None)
    if emotion is None:
        if from_clip is None:
            raise _RowError("missing_field", f"missing emotion, and clip {clip!r} names no class")
        notes.append(("emotion_from_clip", f"class {from_clip!r} from clip name {clip!r}"))
        return from_clip
    if from_clip is not None and emotion.lower() != from_clip:
        notes.append(("label_disagrees", f"sheet says {emotion!r}, clip name {clip!r} says {from_clip!r}"))
    return emotion


def _parse_aus(cell, has_column: bool, fmt: SheetFormat, notes) -> tuple[frozenset, tuple, bool, str]:
    """(AUs, descriptors, uncoded, coding) of an AU cell; see :func:`psyau_graph.au.parse_facs`.

    ``coding`` (:data:`psyau_graph.au.AU_CODINGS`): ``"none"`` for a blank cell, no AU
    column or a lone ``?``; ``"partial"`` for a ``?`` or partly unreadable cell with AUs;
    else ``"coded"``. A cell with unreadable parts and no readable AU (``xyz``, ``??``)
    leaves the row out.
    """
    if _blank(cell):
        if fmt.aus_required or has_column:
            notes.append(("aus_missing", "AU cell blank: AU labels unknown"))
        return frozenset(), (), False, "none"
    code = _cell_str(cell)
    codes = parse_facs(code, errors="report")
    if not codes.ok:
        if not codes:
            raise _RowError("bad_value", f"unparseable action units {code!r} ({'; '.join(codes.problems)})")
        notes.append(("aus_partial", f"action units {code!r} partly unreadable, kept {sorted(codes)} "
                                     f"({'; '.join(codes.problems)})"))
    aus = frozenset(int(a) for a in codes)
    descriptors = tuple(codes.descriptors)
    if codes.uncoded:
        notes.append(("aus_uncoded", f"AU cell {code!r}: uncoded movement, kept {sorted(aus)}"))
    if descriptors:
        notes.append(("descriptors", f"AU cell {code!r}: descriptors {list(descriptors)}, AUs {sorted(aus)}"))
    coding = "coded" if codes.ok and not codes.uncoded else ("partial" if aus else "none")
    return aus, descriptors, codes.uncoded, coding


def _dedupe(df: pd.DataFrame, report: list[dict]) -> pd.DataFrame:
    """Drop exact repeats of (subject, clip, onset, apex); make ``sample`` unique per subject."""
    dup = df.duplicated(["subject", "clip", "onset", "apex"], keep="first")
    for _, r in df[dup].iterrows():
        report.append({"file": r["file"], "sheet": r["sheet"], "row": int(r["row"]), "kind": "duplicate",
                       "problem": f"duplicate of an earlier row (subject {r['subject']}, clip {r['clip']}, "
                                  f"onset {r['onset']}, apex {r['apex']})", "action": "skipped"})
    df = df[~dup].copy()
    repeated = df.duplicated(["subject", "clip"], keep=False)
    df["sample"] = df["clip"].where(~repeated, df["clip"] + "_" + df["onset"].astype(str))
    return df


# ---------------------------------------------------------------- the report
def report_summary(report, *, first: int = 5) -> list[str]:
    """One line per kind of oddity, e.g.
    ``"3 rows: AU cell '?' (kept; AUs it does not list are unknown): rows 42, 45, 50"``.

    Args:
        report: ``df.attrs["report"]`` (or a DataFrame carrying it).
        first: how many sheet rows to name per line.
    """
    if isinstance(report, pd.DataFrame):
        report = report.attrs.get("report", [])
    groups: dict[str, list[dict]] = {}
    for r in report:
        groups.setdefault(r.get("kind") or r.get("action", "other"), []).append(r)
    places = {(r.get("file"), r.get("sheet")) for r in report if r.get("kind") != "label_scheme"}
    lines = []
    for kind, entries in groups.items():
        text = REPORT_KINDS.get(kind, "emotion not in the label scheme: dropped" if kind == "label_scheme" else kind)
        if kind in ("sheet_skipped", "sheet_ignored"):
            names = ", ".join(f"{r['file']}:{r['sheet']}" for r in entries)
            lines.append(f"{len(entries)} sheet(s): {text}: {names}")
            continue
        where = [(f"{r['file']}:{r['sheet'] or ''}:" if len(places) > 1 else "") + str(r["row"])
                 for r in entries[:first]]
        more = f" (+{len(entries) - first} more)" if len(entries) > first else ""
        noun = "row" if len(entries) == 1 else "rows"
        lines.append(f"{len(entries)} {noun}: {text}: {noun} " + ", ".join(where) + more)
    return lines


def summarize_report(df) -> str:
    """Every report entry, one line each (``file, sheet, row: problem [action]``)."""
    report = df.attrs.get("report", []) if isinstance(df, pd.DataFrame) else df
    lines = []
    for r in report:
        where = f"sheet {r['sheet']!r}, " if r.get("sheet") is not None else ""
        lines.append(f"{r['file']}, {where}row {r['row']}: {r['problem']} [{r['action']}]")
    return "\n".join(lines)
