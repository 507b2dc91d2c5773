"""AU graph priors: the psychological adjacency and data-driven co-occurrence priors.

Two kinds of matrix, both indexed in the AU node order of :mod:`psyau_graph.au`:

* **psychological (intrinsic) adjacency** ``A``: binary; ``A[i, j] = 1`` means node i
  attends to node j (a message j → i; in PyG ``edge_index`` the column ``(j, i)``).
  Upper 6×6, lower 6×6, and the 12×12 cross-region matrix of the whole-face graph
  (intra-region entries 0 except the diagonal).
* **extrinsic (data-driven) prior** ``D``: the AU co-occurrence count matrix
  (``C[i, j]`` = samples showing both AU i and AU j, ``C[i, i]`` = samples showing
  AU i) with each row divided by its sum. The 6×6 region priors are the 12×12 one
  restricted to the region and renormalised.

The matrices ship as CSV files (AU labels on both axes) in the package
``psyau_graph._priors`` (the repository's ``priors/`` folder); :func:`priors_dir`
says which directory is in use. Provenance: ``priors/README.md``.
"""
from __future__ import annotations

import functools
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .au import AUS, UPPER, FACSCodes, parse_facs, region_aus, region_indices

__all__ = [
    "PRIORS_DIR", "priors_dir", "prior_path", "SOURCES", "REGIONS",
    "load_prior_csv", "save_prior_csv", "validate_prior",
    "psych_adjacency", "extrinsic_prior", "restrict_prior", "normalize_rows",
    "cooccurrence_counts", "cooccurrence_prior", "read_au_sets", "mask_prior",
    "build_dataset_priors", "DATASET_SHEETS",
]

REGIONS = ("upper", "lower", "global")
#: named extrinsic priors shipped with the package
SOURCES = ("dfme", "casme2", "samm")
#: the real annotation sheets our shipped priors are computed from: name -> (file, dataset)
DATASET_SHEETS: dict[str, tuple[str, str]] = {
    "casme2": ("CASME2-coding.xlsx", "casme2"),
    "samm": ("SAMM-coding.xlsx", "samm"),
}
_ROW_SUM_TOL = 5e-3



def _chmod_like_open(path) -> None:
    """Give a ``mkstemp`` file (0600) the permissions ``open()`` would have (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)

def _find_priors_dir() -> Path:
    """The installed ``psyau_graph._priors`` package, else the source tree's ``priors/``."""
    try:
        from importlib.resources import files

        candidate = Path(str(files("psyau_graph._priors")))
        if (candidate / "intrinsic_upper.csv").is_file():
            return candidate
    except (ModuleNotFoundError, TypeError):  # not installed as a package / not on disk
        pass
    fallback = Path(__file__).resolve().parents[1] / "priors"
    if not (fallback / "intrinsic_upper.csv").is_file():
        raise FileNotFoundError(
            "prior files not found: neither the package 'psyau_graph._priors' nor the "
            f"source folder {fallback} holds intrinsic_upper.csv")
    return fallback


#: directory the shipped prior CSVs are read from (installed package or source tree)
PRIORS_DIR: Path = _find_priors_dir()


def priors_dir() -> Path:
    """Directory the shipped prior CSV files are read from (see :data:`PRIORS_DIR`)."""
    return PRIORS_DIR


def prior_path(kind: str, region: str = "global", source: str = "dfme") -> Path:
    """Path of a shipped prior file.

    Args:
        kind: ``"intrinsic"`` (psychological adjacency) or ``"extrinsic"``.
        region: "upper", "lower" or "global".
        source: for extrinsic priors, one of :data:`SOURCES` (default: "dfme").
    """
    region_indices(region)
    if kind == "intrinsic":
        name = "intrinsic_global_cross.csv" if region == "global" else f"intrinsic_{region}.csv"
    elif kind == "extrinsic":
        if source not in SOURCES:
            raise ValueError(f"source={source!r}: expected one of {SOURCES} or a CSV path")
        name = f"extrinsic_{source}_{region}.csv"
    else:
        raise ValueError(f"kind={kind!r}: expected 'intrinsic' or 'extrinsic'")
    return PRIORS_DIR / name


# --------------------------------------------------------------------------- CSV I/O

def validate_prior(matrix, *, aus: Iterable[int] | None = None, binary: bool = False,
                   name: str = "prior") -> np.ndarray:
    """Check a prior/adjacency matrix and return it as a float64 array.

    Args:
        matrix: array-like (N, N).
        aus: the AU numbers of the rows/columns, in node order (default: the 12 AUs for
            N = 12; for N = 6 the upper or lower AUs — either is accepted).
        binary: require entries in {0, 1} (adjacency matrices).
        name: used in error messages (e.g. a file name).

    Raises:
        ValueError: not 2-D, non-square, wrong size for ``aus``, non-finite, negative,
            or (``binary``) an entry other than 0/1.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {m.shape}")
    if m.shape[0] != m.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {m.shape}")
    expected = tuple(int(a) for a in aus) if aus is not None else None
    if expected is not None and m.shape[0] != len(expected):
        raise ValueError(f"{name}: expected {len(expected)}×{len(expected)} for AUs {expected}, got {m.shape}")
    if expected is None and m.shape[0] not in (6, 12):
        raise ValueError(f"{name}: expected 12×12 (all AUs) or 6×6 (upper/lower), got {m.shape}")
    if not np.all(np.isfinite(m)):
        bad = np.argwhere(~np.isfinite(m))[0]
        raise ValueError(f"{name}: non-finite value {m[tuple(bad)]} at row {bad[0]}, column {bad[1]}")
    if np.any(m < 0):
        bad = np.argwhere(m < 0)[0]
        raise ValueError(f"{name}: negative value {m[tuple(bad)]} at row {bad[0]}, column {bad[1]}")
    if binary and not np.all((m == 0) | (m == 1)):
        bad = np.argwhere((m != 0) & (m != 1))[0]
        raise ValueError(f"{name}: adjacency entries must be 0 or 1, got {m[tuple(bad)]} at {tuple(bad)}")
    return m


def _parse_label(label: str, path, axis: str) -> int:
    text = str(label).strip()
    digits = text[2:] if text.upper().startswith("AU") else text
    try:
        return int(digits)
    except ValueError:
        raise ValueError(f"{path}: {axis} label {label!r} is not an AU label like 'AU12'") from None


def load_prior_csv(path, *, aus: Iterable[int] | None = None, binary: bool = False) -> np.ndarray:
    """Read a prior CSV (first row ``AU,AU1,AU2,...``, first column the row labels).

    The labels must be the same on both axes and in node order: all 12 AUs, the 6
    upper AUs, or the 6 lower AUs (or exactly ``aus`` when given).

    Args:
        path: CSV file.
        aus: expected AU numbers in order (default: inferred, see above).
        binary: require 0/1 entries.

    Returns:
        float64 array (N, N).

    Raises:
        FileNotFoundError: no such file.
        ValueError: malformed file, labels not matching, or a value check of
            :func:`validate_prior` failing (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prior file not found: {path}")
    lines = [ln for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a header row and at least one data row")
    rows = [[c.strip() for c in ln.split(",")] for ln in lines]
    header = rows[0]
    col_aus = tuple(_parse_label(c, path, "column") for c in header[1:])
    row_aus, values = [], []
    for k, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):
            raise ValueError(f"{path}: line {k} has {len(r)} fields, the header has {len(header)}")
        row_aus.append(_parse_label(r[0], path, "row"))
        try:
            values.append([float(v) for v in r[1:]])
        except ValueError:
            raise ValueError(f"{path}: line {k} holds a non-numeric value: {r[1:]}") from None
    row_aus = tuple(row_aus)
    if row_aus != col_aus:
        raise ValueError(f"{path}: row labels {row_aus} differ from column labels {col_aus}")
    allowed = [tuple(aus)] if aus is not None else [AUS, region_aus("upper"), region_aus("lower")]
    if col_aus not in [tuple(int(a) for a in al) for al in allowed]:
        raise ValueError(f"{path}: AU labels {col_aus} are not in the expected order "
                         f"(one of {[tuple(a) for a in allowed]})")
    return validate_prior(np.array(values), aus=col_aus, binary=binary, name=str(path))


def save_prior_csv(matrix, path, *, aus: Iterable[int] | None = None, decimals: int | None = 4) -> Path:
    """Write a matrix as a prior CSV with AU labels, atomically (temp file + ``os.replace``).

    Args:
        matrix: (N, N) array.
        path: output file (its folder must exist).
        aus: AU numbers of the rows/columns (default: the 12 AUs).
        decimals: digits after the point (default: 4, as the shipped files); ``None``
            writes integers (count matrices).
    """
    aus = tuple(aus) if aus is not None else AUS
    m = validate_prior(matrix, aus=aus, name=str(path))
    path = Path(path)
    fmt = (lambda v: f"{v:.{decimals}f}") if decimals is not None else (lambda v: str(int(round(v))))
    lines = ["AU," + ",".join(f"AU{a}" for a in aus)]
    lines += [f"AU{a}," + ",".join(fmt(v) for v in row) for a, row in zip(aus, m)]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\n".join(lines) + "\n")
        _chmod_like_open(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@functools.lru_cache(maxsize=None)
def _cached(path: str, binary: bool) -> np.ndarray:
    m = load_prior_csv(path, binary=binary)
    m.setflags(write=False)
    return m


# --------------------------------------------------------------------------- matrices

def psych_adjacency(region: str = "global") -> np.ndarray:
    """Psychological adjacency of ``region`` (float64 0/1, a fresh copy).

    ``A[i, j] = 1``: node i attends to node j (message j → i). Upper and lower are
    6×6; "global" is the 12×12 cross-region matrix of the whole-face graph (self loops
    plus upper↔lower edges; intra-region off-diagonal entries are 0). It is symmetric
    except for one pair: ``A[AU9, AU2] = 1`` but ``A[AU2, AU9] = 0`` (AU9 attends to
    AU2, not the reverse), kept as the authors published it.
    """
    idx = region_indices(region)
    m = np.array(_cached(str(prior_path("intrinsic", region)), True))
    if not np.all(np.diag(m) == 1):
        raise ValueError(f"{prior_path('intrinsic', region)}: the diagonal must be all 1")
    if region == "global":
        n_up = len(UPPER)
        intra = m.copy()
        intra[:n_up, n_up:] = 0
        intra[n_up:, :n_up] = 0
        np.fill_diagonal(intra, 0)
        if intra.any():
            raise ValueError(f"{prior_path('intrinsic', region)}: intra-region off-diagonal entries must be 0")
    assert m.shape == (len(idx), len(idx))
    return m


def normalize_rows(matrix) -> np.ndarray:
    """Divide each row by its sum; a row summing to 0 stays 0."""
    m = np.asarray(matrix, dtype=np.float64)
    s = m.sum(axis=1, keepdims=True)
    return np.divide(m, s, out=np.zeros_like(m), where=s > 0)


def restrict_prior(prior, region: str) -> np.ndarray:
    """Restrict a 12×12 prior to ``region``'s AUs and renormalise the rows.

    This is how the 6×6 DFME priors derive from the 12×12 one. For a prior computed
    from counts it equals the co-occurrence prior of the region's AUs alone.
    """
    m = validate_prior(prior, aus=AUS, name="prior")
    idx = list(region_indices(region))
    return normalize_rows(m[np.ix_(idx, idx)])


def extrinsic_prior(source="dfme", region: str = "global") -> np.ndarray:
    """Data-driven co-occurrence prior ``D`` (float64, rows sum to 1 or are all 0).

    Args:
        source: "dfme" (default; from 7,526 DFME samples, the authors' matrix),
            "casme2", "samm" (computed from the public annotation sheets), a path to a
            prior CSV, or an array (12×12, or 6×6 matching ``region``).
        region: "global" (12×12), "upper" or "lower" (6×6). Shipped 6×6 files are
            used as published; a 12×12 CSV/array is restricted with
            :func:`restrict_prior`.

    Rows are renormalised exactly (the shipped files are rounded to 4 decimals), so
    any non-negative matrix (e.g. counts) is accepted.
    """
    n = len(region_indices(region))
    if isinstance(source, str) and source in SOURCES:
        m = np.array(_cached(str(prior_path("extrinsic", region, source)), False))
        sums = m.sum(axis=1)
        if np.any((sums > 0) & (np.abs(sums - 1) > _ROW_SUM_TOL)):
            raise ValueError(f"{prior_path('extrinsic', region, source)}: rows must sum to 1 (got {sums})")
        return normalize_rows(m)
    if isinstance(source, str) and not Path(source).suffix:
        raise ValueError(f"source={source!r}: expected one of {SOURCES}, a CSV path or an array")
    if isinstance(source, (str, os.PathLike)):
        m = load_prior_csv(source)
        name = str(source)
    else:
        m = validate_prior(source, name="prior array")
        name = "prior array"
    if m.shape[0] == 12 and n == 6:
        return restrict_prior(m, region)
    if m.shape[0] != n:
        raise ValueError(f"{name}: a {m.shape} prior does not fit region {region!r} ({n} AUs)")
    return normalize_rows(m)


def mask_prior(prior, adjacency, *, on_outside: str = "mask", name: str = "prior"):
    """Keep the prior only where the adjacency has edges and renormalise each row.

    The co-occurrence prior knows nothing of the psychological adjacency, so it
    usually has mass on non-edges (the DFME 12×12 prior puts most of it inside the
    regions, which the whole-face graph excludes). That mass is dropped and each
    row renormalised over the node's neighbours — the paper's ``D_ij`` for
    ``j ∈ N(i)``. A row whose neighbours receive no mass at all gets a uniform
    distribution over its neighbours, with a ``RuntimeWarning``.

    Args:
        prior: (N, N) non-negative.
        adjacency: (N, N) 0/1.
        on_outside: what to do when mass lies outside the adjacency: "mask"
            (default, silent), "warn" (``RuntimeWarning`` with the largest dropped
            fraction) or "raise" (``ValueError``).
        name: used in messages.

    Returns:
        ``(masked, kept)``: masked (N, N) rows summing to 1 over the neighbours, and
        kept (N,) the fraction of each row's prior mass that lay on its neighbours.
    """
    if on_outside not in ("mask", "warn", "raise"):
        raise ValueError(f"on_outside={on_outside!r}: expected 'mask', 'warn' or 'raise'")
    d = validate_prior(prior, aus=range(len(np.atleast_1d(prior))), name=name)
    a = validate_prior(adjacency, aus=range(d.shape[0]), binary=True, name="adjacency")
    total = d.sum(axis=1)
    inside = (d * a).sum(axis=1)
    kept = np.divide(inside, total, out=np.ones_like(total), where=total > 0)
    dropped = 1.0 - kept
    if np.any(dropped > 1e-12):
        msg = (f"{name}: {dropped.max():.1%} of a row's mass (row {int(dropped.argmax())}) lies outside the "
               "adjacency; it is dropped and rows renormalised over each node's neighbours")
        if on_outside == "raise":
            raise ValueError(msg)
        if on_outside == "warn":
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
    masked = normalize_rows(d * a)
    empty = (masked.sum(axis=1) == 0) & (a.sum(axis=1) > 0)
    if empty.any():
        warnings.warn(f"{name}: rows {np.flatnonzero(empty).tolist()} have no prior mass on their "
                      "neighbours; using a uniform prior over their neighbours", RuntimeWarning, stacklevel=2)
        masked[empty] = normalize_rows(a[empty])
    return masked, kept


# --------------------------------------------------------------------------- co-occurrence

def cooccurrence_counts(au_sets: Iterable[Iterable[int]], aus: Iterable[int] = AUS) -> tuple[np.ndarray, int]:
    """Co-occurrence counts over samples.

    Args:
        au_sets: one iterable of AU numbers per sample (or a FACS code string, parsed
            with :func:`~psyau_graph.au.parse_facs`). AUs not in ``aus`` are ignored.
        aus: AU numbers of the rows/columns (default: the 12 AUs).

    Returns:
        ``(C, n_samples)``: ``C`` int64 (len(aus), len(aus)) with ``C[i, j]`` = number
        of samples showing both ``aus[i]`` and ``aus[j]``, ``C[i, i]`` = samples
        showing ``aus[i]``.
    """
    aus = tuple(int(a) for a in aus)
    index = {a: k for k, a in enumerate(aus)}
    counts = np.zeros((len(aus), len(aus)), dtype=np.int64)
    n = 0
    for k, sample in enumerate(au_sets):
        if isinstance(sample, str):
            sample = parse_facs(sample, context=f"sample {k}")
        try:
            present = sorted({index[int(a)] for a in sample if int(a) in index})
        except (TypeError, ValueError):
            raise TypeError(f"au_sets[{k}]={sample!r}: expected an iterable of AU numbers") from None
        if present:
            counts[np.ix_(present, present)] += 1
        n += 1
    return counts, n


def cooccurrence_prior(au_sets, *, dataset: str | None = None, region: str = "global",
                       errors: str = "raise", return_counts: bool = False):
    """Row-normalised AU co-occurrence prior (the extrinsic prior ``D``).

    ``C[i, j]`` = samples showing both AU i and AU j, ``C[i, i]`` = samples showing
    AU i; ``D = C / C.sum(axis=1)``. An AU that never occurs gives a row of zeros
    (it stays zero: no prior for that node; :func:`mask_prior` falls back to uniform
    when building a graph). AUs outside the 12 graph AUs are ignored.

    Args:
        au_sets: one of

            * an iterable with one AU collection (or FACS string) per sample;
            * a ``pandas.DataFrame``: its ``aus`` column (as produced by
              ``psyau_graph.data.annotations.read_annotations``) or else its FACS
              text column ("Action Units" / "AU");
            * a path to an annotation sheet (xlsx/csv); then ``dataset`` names its
              layout ("casme2", "samm", ...), see :func:`read_au_sets`.
        dataset: layout of the sheet when ``au_sets`` is a path.
        region: "global" (12×12, default), "upper" or "lower" (6×6: the 12×12 prior
            restricted and renormalised).
        errors: for FACS text: "raise" (default) or "report" (unreadable rows are
            skipped and listed in the returned info; needs ``return_counts=True`` to
            see them).
        return_counts: also return a dict ``{"counts", "n_samples", "problems"}``.

    Returns:
        (N, N) float64, or ``(prior, info)`` with ``return_counts=True``.
    """
    problems: list[str] = []
    if isinstance(au_sets, (str, os.PathLike)):
        if dataset is None:
            raise ValueError("dataset= is required when au_sets is a sheet path (e.g. 'casme2', 'samm')")
        au_sets, problems = read_au_sets(au_sets, dataset, errors=errors)
    elif _is_dataframe(au_sets):
        au_sets, problems = _au_sets_from_frame(au_sets, errors=errors)
    counts, n = cooccurrence_counts(au_sets, AUS)
    prior = normalize_rows(counts)
    if region != "global":
        prior = restrict_prior(prior, region)
    if return_counts:
        return prior, {"counts": counts, "n_samples": n, "problems": problems}
    return prior


def _is_dataframe(obj) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns")


_AU_COLUMNS = ("action units", "action unit", "aus", "au")


def _find_au_column(columns) -> object:
    names = {str(c).strip().lower(): c for c in columns}
    for want in _AU_COLUMNS:
        if want in names:
            return names[want]
    raise ValueError(f"no AU column found among {list(columns)} (looked for {_AU_COLUMNS})")


def _au_sets_from_frame(df, *, errors: str = "raise", row_offset: int = 0, source: str = "table"):
    """AU sets from a table: its ``aus`` column of sets, else a FACS text column."""
    problems: list[str] = []
    if "aus" in df.columns and all(isinstance(v, (set, frozenset, list, tuple)) for v in df["aus"]):
        return [frozenset(int(a) for a in v) for v in df["aus"]], problems
    col = _find_au_column(df.columns)
    sets = []
    for k, value in enumerate(df[col].tolist()):
        where = f"{source} row {k + 1 + row_offset}"
        codes = parse_facs(value, errors=errors, context=where)
        if not codes.ok:
            problems.extend(codes.problems)
            continue  # unreadable rows do not count as samples; they are reported
        sets.append(codes)
    return sets, problems


def _preferred_sheet(sheet_names: list[str], dataset: str):
    wanted = {"samm": ["MICRO_ONLY"], "casme3": ["label"]}.get(dataset, [])
    for w in wanted:
        if w in sheet_names:
            return w
    return sheet_names[0]


def _read_sheet_internal(path: Path, dataset: str, errors: str):
    """Small reader for CASME II / SAMM-like sheets: finds the header row by its AU column."""
    import pandas as pd

    if path.suffix.lower() in (".csv", ".txt"):
        raw = pd.read_csv(path, header=None, dtype=object)
    else:
        with pd.ExcelFile(path) as xls:
            raw = pd.read_excel(xls, sheet_name=_preferred_sheet(xls.sheet_names, dataset), header=None)
    header_row = None
    for r in range(min(len(raw), 40)):
        cells = {str(v).strip().lower() for v in raw.iloc[r].tolist() if isinstance(v, str)}
        if cells & {"action units", "action unit", "au"} and cells & {"filename", "subject"}:
            header_row = r
            break
    if header_row is None:
        raise ValueError(f"{path}: no header row with 'Action Units' and 'Filename'/'Subject' in the first 40 rows")
    body = raw.iloc[header_row + 1:].copy()
    body.columns = [str(c).strip() for c in raw.iloc[header_row].tolist()]
    keep = ~body.isna().all(axis=1)  # blank spreadsheet rows are not samples
    body = body[keep.to_numpy()]
    sheet_rows = (np.flatnonzero(keep.to_numpy()) + header_row + 2).tolist()  # 1-based sheet rows
    col = _find_au_column(body.columns)
    sets, problems = [], []
    for row, value in zip(sheet_rows, body[col].tolist()):
        codes = parse_facs(value, errors=errors, context=f"{path.name} row {row}")
        if not codes.ok:
            problems.extend(codes.problems)
            continue
        sets.append(codes)
    return sets, problems


def read_au_sets(path, dataset: str, *, errors: str = "raise") -> tuple[list[FACSCodes], list[str]]:
    """AU sets, one per sample row, of an annotation sheet.

    Uses ``psyau_graph.data.annotations.read_annotations`` when that module is
    available and knows ``dataset``; its rules then decide which rows are samples
    (duplicates and rows without subject/onset/emotion are skipped and reported;
    partly readable AU codes keep the readable AUs, with a note). Otherwise a small
    reader is used: it finds the header row by its AU column ("Action Units"/"AU")
    and a "Filename"/"Subject" column (SAMM: sheet MICRO_ONLY; CAS(ME)^3: sheet
    "label"; otherwise the first sheet), skips blank rows, and treats every other
    row as a sample.

    Args:
        path: xlsx or csv file.
        dataset: "casme2", "samm", "casme3", ... (selects the layout); any other
            name uses the small reader.
        errors: "raise" (default): an unreadable row raises, naming file and row.
            "report": such rows are left out and described in the returned list.

    Returns:
        ``(au_sets, report)``: one frozenset per sample, and one human-readable line
        per reported row (``"<file> row <n>: <problem> (<action>)"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation sheet not found: {path}")
    if errors not in ("raise", "report"):
        raise ValueError(f"errors={errors!r}: expected 'raise' or 'report'")
    try:
        from .data import annotations as _annotations  # the data-set module, when present
    except ImportError:
        _annotations = None
    known = getattr(_annotations, "FORMATS", {}) if _annotations is not None else {}
    if _annotations is not None and dataset in known:
        df = _annotations.read_annotations(path, dataset, errors=errors)
        report = []
        for entry in df.attrs.get("report", []):
            if isinstance(entry, dict):
                report.append(f"{entry.get('file', path.name)} row {entry.get('row')}: {entry.get('problem')} "
                              f"({entry.get('action', 'reported')})")
            else:
                report.append(str(entry))
        return [frozenset(int(a) for a in v) for v in df["aus"]], report
    return _read_sheet_internal(path, dataset, errors)


# --------------------------------------------------------------------------- builder

def build_dataset_priors(reference_dir, out_dir=None, *,
                         sheets: Mapping[str, tuple[str, str]] = DATASET_SHEETS) -> dict:
    """Compute and write the extrinsic priors of real annotation sheets.

    For each ``name -> (file, dataset)`` in ``sheets`` writes, atomically,
    ``extrinsic_<name>_global.csv`` (12×12), ``extrinsic_<name>_upper.csv`` and
    ``extrinsic_<name>_lower.csv`` (6×6, restriction + renormalisation of the exact
    12×12 prior), rounded to 4 decimals, and ``cooccurrence_counts_<name>.csv`` (the
    integer counts C). Every sheet row is one sample; unreadable AU codes raise.

    Args:
        reference_dir: folder holding the sheets.
        out_dir: output folder (default: :func:`priors_dir`).
        sheets: which sheets (default: :data:`DATASET_SHEETS`, CASME II and SAMM).

    Returns:
        dict name -> {"files": [Path, ...], "n_samples": int, "counts": ndarray}.
    """
    reference_dir = Path(reference_dir)
    out_dir = Path(out_dir) if out_dir is not None else PRIORS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, (file, dataset) in sheets.items():
        prior, info = cooccurrence_prior(reference_dir / file, dataset=dataset, return_counts=True)
        files = [save_prior_csv(prior, out_dir / f"extrinsic_{name}_global.csv")]
        for region in ("upper", "lower"):
            files.append(save_prior_csv(restrict_prior(prior, region), out_dir / f"extrinsic_{name}_{region}.csv",
                                        aus=region_aus(region)))
        files.append(save_prior_csv(info["counts"], out_dir / f"cooccurrence_counts_{name}.csv", decimals=None))
        result[name] = {"files": files, "n_samples": info["n_samples"], "counts": info["counts"]}
    _cached.cache_clear()
    return result
