"""``--prior``: the data-driven co-occurrence prior D a training run gives the model.

Shared by ``psyau train`` (and usable by other commands that build a ``FedPsyAUConfig``).
Values: a shipped source (``dfme``, the authors' matrix from 7,526 DFME samples, the
default; ``casme2``; ``samm``), ``auto`` (the co-occurrence prior of the known AU labels
of the clips the run uses), or a path to a prior CSV (``AU,AU1,...`` header, AU row
labels; read as text, nothing in it is executed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

PRIOR_HELP = ("data-driven prior D of the settings that use one: dfme (default: the authors' matrix, from "
              "7,526 DFME samples), casme2, samm (shipped, from the public coding sheets), auto (the AU "
              "co-occurrence prior of the clips of this run whose 12 AU labels are all known; computed over "
              "all of them, test folds included) or a prior CSV path; the prior used is written to "
              "--out/prior.csv and recorded in results.json")


def add_prior_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", default="dfme", help=PRIOR_HELP)


def resolve_prior(value: str, dataset, out_dir) -> tuple[str, dict]:
    """Check ``--prior`` and build what the model config gets.

    Args:
        value: the ``--prior`` string.
        dataset: the run's dataset (``au_labels`` property → ``(au, au_known)``, both (N, 12));
            read only for ``auto`` (``None`` where ``auto`` is refused, as in ``psyau federate``).
        out_dir: the run's output folder; ``prior.csv`` (the 12 × 12 global prior used,
            rows summing to 1 or all 0) is written there atomically.

    Returns:
        ``(source, record)``: ``source`` for ``FedPsyAUConfig.prior`` (a shipped name or
        a CSV path) and a JSON-able record of what was chosen.

    Raises:
        PsyauError: a missing or malformed prior file, or ``auto`` with no clip whose
            AU labels are all known (one line naming the argument and the file).
    """
    import numpy as np

    from psyau_graph.au import AUS
    from psyau_graph.errors import PsyauError
    from psyau_graph.priors import cooccurrence_counts, normalize_rows, save_prior_csv

    out = Path(out_dir)
    record: dict = {"argument": value}
    if value == "auto":
        au, known = dataset.au_labels
        full = known.bool().all(dim=1)
        n_known = int(full.sum())
        if n_known == 0:
            raise PsyauError("--prior auto: no clip of this run has all 12 AU labels known (no AU coding); "
                             "give a shipped prior (dfme, casme2, samm) or a CSV path")
        sets = [[AUS[j] for j in np.flatnonzero(row)] for row in au[full].numpy() > 0.5]
        counts, n = cooccurrence_counts(sets, AUS)
        matrix = normalize_rows(counts)
        out.mkdir(parents=True, exist_ok=True)
        path = save_prior_csv(matrix, out / "prior.csv", decimals=6)
        source = str(path.resolve())
        record.update(kind="auto", description="AU co-occurrence prior (priors.cooccurrence_counts, rows "
                      "normalised) of the clips of this run whose 12 AU labels are all known, test folds included",
                      n_clips=n, n_clips_total=len(dataset), n_clips_unknown_aus=len(dataset) - n_known,
                      counts=counts.astype(int).tolist())
    else:
        source, matrix, more = check_prior(value)
        out.mkdir(parents=True, exist_ok=True)
        save_prior_csv(matrix, out / "prior.csv", decimals=6)
        record.update(more)
    record.update(file="prior.csv", matrix=np.round(matrix, 6).tolist())
    return source, record


def check_prior(value: str):
    """A shipped name or a prior CSV path, checked for the three graphs.

    Returns:
        ``(source, matrix, record)``: ``source`` for ``FedPsyAUConfig.prior`` (the name, or
        the CSV's absolute path), the (12, 12) global prior (rows sum to 1 or are all 0)
        and ``{"kind": "shipped" | "file", "source": value}``.

    Raises:
        PsyauError: an unknown name, a missing file or a malformed prior (one line).
    """
    from psyau_graph.errors import PsyauError
    from psyau_graph.priors import SOURCES, extrinsic_prior

    if value in SOURCES:
        source, kind = value, "shipped"
    elif Path(value).suffix:
        if not Path(value).is_file():
            raise PsyauError(f"--prior {value}: no such file (expected a prior CSV, or one of "
                             f"{', '.join(SOURCES)}, auto)")
        source, kind = str(Path(value).resolve()), "file"
    else:
        raise PsyauError(f"--prior {value}: expected one of {', '.join(SOURCES)}, auto, or a CSV path")
    try:
        matrix = extrinsic_prior(source, "global")
        for region in ("upper", "lower"):
            extrinsic_prior(source, region)
    except (ValueError, OSError) as exc:
        raise PsyauError(f"--prior {value}: {exc}") from None
    return source, matrix, {"kind": kind, "source": value}
