"""Real (AU set, emotion) statistics for the synthetic generator's ``au_mode="real"``.

The shipped file ``au_stats_casme2_samm.json`` holds derived counts only: for each of
the CASME II and SAMM coding sheets (``CASME2-coding.xlsx``, first sheet, 250 rows;
``SAMM-coding.xlsx``, sheet ``MICRO_ONLY``, 159 rows, as distributed with the data sets),
the number of sample rows showing each pair

    (sorted tuple of the row's AUs among the 12 graph AUs, emotion class)

where the emotion class is the row's emotion under the ``synth`` label scheme (the
seven emotions the generator emits). Rows are read with
:func:`psyau_graph.data.annotations.read_annotations` (its rules: laterality and
intensity dropped, ``ref(X)`` = X, alternatives ``X or Y`` count all, descriptors
skipped). Rows whose emotion the scheme does not have (CASME II ``others`` and
``repression``, SAMM ``Other``) are not counted, only tallied per emotion under
``dropped_emotions``; a row with an uncoded AU cell would be left out as well
(tallied under ``rows_aus_uncoded``; neither sheet has one). A row none of whose
AUs is a graph AU is counted with the empty tuple (the generator cannot render it and
skips it; it adds nothing to a co-occurrence matrix).

Regenerate (``REFERENCE`` = the folder holding the two sheets)::

    python -m psyau_graph.data.au_stats REFERENCE            # rewrites the shipped file
    python -m psyau_graph.data.au_stats REFERENCE --out x.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..au import AUS

STATS_FILE = Path(__file__).with_name("au_stats_casme2_samm.json")
SCHEME = "synth"
#: data set → (file name, sheet layout for read_annotations)
SHEETS = {"casme2": ("CASME2-coding.xlsx", "casme2"), "samm": ("SAMM-coding.xlsx", "samm")}
#: the sources ``au_mode="real"`` accepts; "casme2+samm" pools both sheets' counts
SOURCES = ("casme2", "samm", "casme2+samm")


def compute_au_stats(reference_dir) -> dict:
    """The content of the shipped JSON, computed from the two coding sheets.

    Args:
        reference_dir: folder holding ``CASME2-coding.xlsx`` and ``SAMM-coding.xlsx``.

    Returns:
        dict with ``aus``, ``label_scheme``, ``classes`` and ``datasets``: name →
        {``file``, ``sheet``, ``rows``, ``rows_counted``, ``rows_aus_uncoded``,
        ``dropped_emotions``, ``pairs``: [[AU list, emotion, count], ...] sorted}.
    """
    from .annotations import read_annotations
    from .labels import class_names, map_emotion

    reference_dir = Path(reference_dir)
    graph = set(AUS)
    datasets = {}
    for name, (file, layout) in SHEETS.items():
        path = reference_dir / file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: coding sheet not found (expected {file} in {reference_dir})")
        df = read_annotations(path, layout, errors="raise")
        counts: dict[tuple[tuple[int, ...], str], int] = {}
        dropped: dict[str, int] = {}
        uncoded = 0
        for aus, emotion, flag in zip(df["aus"], df["emotion"], df["aus_uncoded"]):
            cls = map_emotion(emotion, SCHEME, name)
            if cls is None:
                key = str(emotion).strip().lower()
                dropped[key] = dropped.get(key, 0) + 1
                continue
            if bool(flag):  # unknown AU set: not the same as "no AU"
                uncoded += 1
                continue
            key = (tuple(sorted(int(a) for a in aus if int(a) in graph)), cls)
            counts[key] = counts.get(key, 0) + 1
        pairs = [[list(k[0]), k[1], v] for k, v in sorted(counts.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
        sheets = sorted(set(df["sheet"].astype(str))) if "sheet" in df.columns else []
        datasets[name] = {"file": file, "sheet": sheets[0] if len(sheets) == 1 else sheets, "rows": int(len(df)),
                          "rows_counted": int(sum(counts.values())), "rows_aus_uncoded": uncoded,
                          "dropped_emotions": dict(sorted(dropped.items())), "pairs": pairs}
    return {"description": "counts of (sorted AUs among the 12 graph AUs, emotion class under the 'synth' label "
                           "scheme) over the sample rows of the CASME II and SAMM coding sheets; derived counts "
                           "only (see psyau_graph/data/au_stats.py)",
            "aus": list(AUS), "label_scheme": SCHEME, "classes": class_names(SCHEME), "datasets": datasets}


def dumps(stats: dict) -> str:
    """The JSON text exactly as shipped (one pair per line, trailing newline)."""
    lines = ["{"]
    head = {k: v for k, v in stats.items() if k != "datasets"}
    for k, v in head.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    lines.append(' "datasets": {')
    names = list(stats["datasets"])
    for n, name in enumerate(names):
        d = stats["datasets"][name]
        lines.append(f"  {json.dumps(name)}: {{")
        for k, v in d.items():
            if k != "pairs":
                lines.append(f"   {json.dumps(k)}: {json.dumps(v)},")
        lines.append('   "pairs": [')
        pairs = d["pairs"]
        for i, p in enumerate(pairs):
            lines.append(f"    {json.dumps(p)}" + ("," if i < len(pairs) - 1 else ""))
        lines.append("   ]")
        lines.append("  }" + ("," if n < len(names) - 1 else ""))
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_au_stats(reference_dir, out=None) -> Path:
    """Compute the statistics and write them (atomically) to ``out`` (default: the shipped file)."""
    out = Path(out) if out is not None else STATS_FILE
    text = dumps(compute_au_stats(reference_dir))
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    _load.cache_clear()
    return out


@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_au_stats(path=None) -> dict:
    """The shipped statistics (or those in ``path``), as written by :func:`write_au_stats`."""
    return _load(str(Path(path) if path is not None else STATS_FILE))


def pair_counts(source: str = "casme2+samm", *, path=None) -> dict[tuple[tuple[int, ...], str], int]:
    """(AU tuple, emotion) → count for ``source`` ("casme2", "samm" or "casme2+samm": summed)."""
    if source not in SOURCES:
        raise ValueError(f"au_source={source!r}: expected one of {', '.join(SOURCES)}")
    stats = load_au_stats(path)
    out: dict[tuple[tuple[int, ...], str], int] = {}
    for name in source.split("+"):
        for aus, emotion, n in stats["datasets"][name]["pairs"]:
            key = (tuple(int(a) for a in aus), str(emotion))
            out[key] = out.get(key, 0) + int(n)
    return out


def stats_cooccurrence(source: str = "casme2+samm", *, region: str = "global", path=None) -> np.ndarray:
    """Row-normalised AU co-occurrence prior of the counted rows of ``source``.

    Each counted row contributes its AU tuple ``count`` times (see
    :func:`psyau_graph.priors.cooccurrence_prior` for the definition). Rows whose
    emotion the ``synth`` scheme lacks are not in the counts, so for CASME II this is
    the prior of 129 of its 250 rows, not the shipped ``extrinsic_casme2`` prior.

    Returns:
        (12, 12) float64 (``region="global"``) or (6, 6) (``"upper"``/``"lower"``).
    """
    from ..priors import cooccurrence_prior

    sets = [aus for (aus, _), n in pair_counts(source, path=path).items() for _ in range(n)]
    return cooccurrence_prior(sets, region=region)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m psyau_graph.data.au_stats",
                                description="rebuild the (AU set, emotion) counts of the CASME II and SAMM sheets")
    p.add_argument("reference", help="folder holding CASME2-coding.xlsx and SAMM-coding.xlsx")
    p.add_argument("--out", default=None, help="output JSON (default: the package's shipped file)")
    args = p.parse_args(argv)
    try:
        out = write_au_stats(args.reference, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
