"""``psyau preprocess``: annotated clips → per-clip feature cache (flow, strain, 65 ROIs)."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "preprocess", help="frames → aligned 128² flow + strain → 65 ROI patches, cached per clip",
        description="Read an annotation sheet, find each clip's frames, and write one cache file per "
                    "clip (<out>/clips/<dataset>/<subject>/<clip>.pt) plus <out>/report.json. "
                    "Re-running resumes: clips already cached are not redone.")
    p.add_argument("--annotations", required=True, help="annotation sheet (xlsx/csv)")
    p.add_argument("--dataset", required=True,
                   help="sheet format / data set name: casme2, samm, casme3, dfme, smic, synth")
    p.add_argument("--frames", required=True, help="root folder of the data set's frames")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--layout", default=None,
                   help="frame layout pattern, e.g. '{subject}/{clip}/img{frame}.jpg', or a data set "
                        "name (default: the data set's known layouts)")
    p.add_argument("--flow", default="tvl1", choices=("tvl1", "dis", "farneback"),
                   help="optical flow method (default: tvl1)")
    p.add_argument("--match-brightness", action="store_true",
                   help="give each apex frame the onset's global brightness and contrast before the flow "
                        "(use where the lighting flickers: TV-L1 then reports flicker as motion)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    p.add_argument("--apex-window", type=int, default=1,
                   help="± frames averaged around the apex (default: 1)")
    p.add_argument("--landmarks", default="dlib", choices=("dlib", "face_alignment"),
                   help="landmark backend (default: dlib)")
    p.add_argument("--on-error", default="skip", choices=("skip", "raise"),
                   help="a clip that fails (no face, missing frame): skip and report (default) or stop")
    p.add_argument("--bad-rows", default="report", choices=("report", "raise"),
                   help="annotation rows that cannot be read: report and drop (default) or stop")
    p.add_argument("--flow-batch-clips", type=int, default=0,
                   help="compute the flow of this many clips in one batched call in the main process "
                        "(faster with tvl1; default 0: each worker does whole clips)")
    p.add_argument("--limit", type=int, default=None, help="only the first N annotation rows")
    p.set_defaults(_run=run)
    return p


def run(args) -> int:
    import logging

    from psyau_graph.data.annotations import read_annotations
    from psyau_graph.preprocess.batch import preprocess_dataset

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    df = read_annotations(args.annotations, args.dataset, errors=args.bad_rows)
    problems = df.attrs.get("report") or []
    if args.limit is not None:
        df = df.iloc[: args.limit]
    report = preprocess_dataset(df, args.frames, args.out, dataset=args.dataset, layout=args.layout,
                                flow=args.flow, workers=args.workers, apex_window=args.apex_window,
                                errors=args.on_error, landmarks_backend=args.landmarks,
                                flow_batch_clips=args.flow_batch_clips,
                                flow_params={"match_brightness": True} if args.match_brightness else None)
    rate = report["timings"]["clips_per_s"]
    print(f"{args.dataset}: {report['processed']} processed, {report['cached']} already cached, "
          f"{len(report['skipped'])} skipped, {len(problems)} annotation row problem(s)"
          + (f"; {rate:.1f} clips/s" if rate else ""))
    for s in report["skipped"][:20]:
        print(f"  skipped {s['subject']}/{s['clip']}: {s['reason'].splitlines()[0]}")
    if len(report["skipped"]) > 20:
        print(f"  ... {len(report['skipped']) - 20} more in {args.out}/report.json")
    return 0
