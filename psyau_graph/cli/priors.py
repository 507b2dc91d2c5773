"""``psyau priors``: show the shipped AU priors, or compute one from an annotation sheet.

Examples::

    psyau priors show --name all --out priors_plots
    psyau priors compute --annotations CASME2-coding.xlsx --dataset casme2 --out casme2_prior.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHOW_NAMES = ("dfme", "casme2", "samm", "psych", "all")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("priors", help="show the AU priors or compute one from annotations",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="priors_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="write heatmaps and AU-graph drawings of the priors as PNG")
    show.add_argument("--name", choices=SHOW_NAMES, default="all",
                      help="which prior: a data prior (dfme, casme2, samm), the psychological adjacency "
                           "(psych), or all of them plus a side-by-side comparison (default: all)")
    show.add_argument("--out", required=True, type=Path, help="output folder for the PNG files")
    comp = sub.add_parser("compute", help="compute the 12×12 co-occurrence prior of an annotation sheet")
    comp.add_argument("--annotations", required=True, type=Path, help="annotation sheet (xlsx or csv)")
    comp.add_argument("--dataset", required=True,
                      help="sheet layout: casme2, samm, casme3, dfme, smic, synth (selects sheet and columns); "
                           "any other name reads a lab's own sheet with the generic reader")
    comp.add_argument("--out", required=True, type=Path, help="output CSV (AU labels on both axes)")
    comp.add_argument("--region", choices=("global", "upper", "lower"), default="global",
                      help="12×12 (global, default) or a 6×6 restriction")
    comp.add_argument("--strict", action="store_true",
                      help="fail on the first unreadable row (default: skip such rows and report them)")
    comp.add_argument("--plot", type=Path, default=None, help="also write a heatmap PNG here")
    p.set_defaults(_run=run)
    return p


def _show(name: str, out: Path) -> list[Path]:
    from tqdm import tqdm

    from ..graphs import au_graph
    from ..priors import SOURCES, extrinsic_prior, psych_adjacency
    from ..viz.priors import draw_au_graph, plot_prior, plot_prior_comparison

    titles = {"dfme": "DFME", "casme2": "CASME II", "samm": "SAMM"}
    jobs = []
    if name in ("psych", "all"):
        for region in ("upper", "lower", "global"):
            jobs.append((f"psych_{region}.png", lambda r=region, f=None: plot_prior(
                psych_adjacency(r), region=r, cmap="Greys", vmax=1.0, out=f,
                title=f"psychological adjacency ({r}); A[i, j] = 1: i attends to j")))
            jobs.append((f"graph_psych_{region}.png", lambda r=region, f=None: draw_au_graph(
                au_graph(r, prior=None), out=f, title=f"psychological AU graph ({r})")))
    for src in SOURCES:
        if name not in (src, "all"):
            continue
        for region in ("global", "upper", "lower"):
            jobs.append((f"prior_{src}_{region}.png", lambda s=src, r=region, f=None: plot_prior(
                extrinsic_prior(s, r), region=r, adjacency=psych_adjacency(r), out=f,
                title=f"{titles[s]} co-occurrence prior ({r}); red: graph edges")))
            jobs.append((f"graph_{src}_{region}.png", lambda s=src, r=region, f=None: draw_au_graph(
                au_graph(r, prior=s), out=f, title=f"AU graph ({r}) with the {titles[s]} prior")))
    if name == "all":
        jobs.append(("prior_comparison.png", lambda f=None: plot_prior_comparison(
            out=f, title="co-occurrence priors (12×12), same colour scale")))
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fname, job in tqdm(jobs, desc="plots", unit="png", disable=None):
        paths.append(job(f=out / fname))
    return paths


def _compute(args) -> int:
    from ..au import region_aus
    from ..priors import cooccurrence_prior, save_prior_csv

    try:
        prior, info = cooccurrence_prior(args.annotations, dataset=args.dataset, region=args.region,
                                         errors="raise" if args.strict else "report", return_counts=True)
    except ValueError as exc:  # unreadable row with --strict, or a sheet without the needed header
        print(f"psyau priors compute: {exc}", file=sys.stderr)
        return 2
    for line in info["problems"]:
        print(f"report: {line}", file=sys.stderr)
    out = save_prior_csv(prior, args.out, aus=region_aus(args.region))
    counts = info["counts"].diagonal()
    print(f"{info['n_samples']} samples read, {len(info['problems'])} report entries (stderr); "
          f"AU sample counts: " + ", ".join(f"AU{a}={c}" for a, c in zip(region_aus("global"), counts)))
    print(out)
    if args.plot is not None:
        from ..viz.priors import plot_prior

        print(plot_prior(prior, region=args.region, out=args.plot,
                         title=f"co-occurrence prior of {args.annotations.name} ({args.region})"))
    return 0


def run(args) -> int:
    if args.priors_command == "show":
        for path in _show(args.name, args.out):
            print(path)
        return 0
    if args.priors_command == "compute":
        if not args.annotations.is_file():
            print(f"psyau priors compute: annotation file not found: {args.annotations}", file=sys.stderr)
            return 2
        from ..data.annotations import DATASETS

        if args.dataset not in DATASETS:
            print(f"psyau priors compute: note: {args.dataset!r} is not one of the known layouts "
                  f"({', '.join(DATASETS)}); reading the sheet with the generic reader (header row "
                  f"found by its AU column, every other non-blank row a sample)", file=sys.stderr)
        return _compute(args)
    raise ValueError(f"unknown priors action {args.priors_command!r}")
