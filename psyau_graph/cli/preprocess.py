"""``psyau preprocess``: annotated clips → per-clip feature cache (flow, strain, 65 ROIs)."""
from __future__ import annotations

import argparse

from ._compute import add_compute_args, check_compute_args

#: clips whose apex-window pairs go to the GPU in one batched TV-L1 call (3 pairs each at ±1)
GPU_FLOW_BATCH_CLIPS = 32


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "preprocess", help="frames → aligned 128² flow + strain → 65 ROI patches, cached per clip",
        description="Read an annotation sheet, find each clip's frames, and write one cache file per "
                    "clip (<out>/clips/<dataset>/<subject>/<clip>.pt) plus <out>/report.json. "
                    "Re-running resumes: clips already cached are not redone.")
    p.add_argument("--annotations", required=True, nargs="+",
                   help="annotation sheet(s) (xlsx/csv); several files are read in order and "
                        "concatenated (DFME's training / test A / test B files)")
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
                   help="± frames averaged around the apex at 200 fps (default: 1); a clip whose "
                        "sheet gives its frame rate (DFME Fps) gets the same time span in its frames")
    p.add_argument("--landmarks", default="dlib", choices=("dlib", "face_alignment"),
                   help="landmark backend (default: dlib)")
    p.add_argument("--on-error", default="skip", choices=("skip", "raise"),
                   help="a clip that fails (no face, missing frame): skip and report (default) or stop")
    p.add_argument("--bad-rows", default="report", choices=("report", "raise"),
                   help="annotation rows that cannot be used: report and leave out (default) or stop, "
                        "listing them all")
    p.add_argument("--columns", default=None,
                   help="for a sheet without a header row: NAME=COLUMN pairs, e.g. "
                        "'subject=A,clip=B,onset=C,apex=D,offset=E,aus=F,emotion=G'")
    p.add_argument("--apex-estimate", default=None, choices=("middle",),
                   help="opt-in: a row whose apex is not annotated ('/', blank) gets the middle of "
                        "onset..offset (flagged apex_estimated) instead of being left out")
    p.add_argument("--check-annotations", action="store_true",
                   help="only read the sheet: print the summary, write <out>/annotation_report.json, "
                        "process no frames")
    p.add_argument("--flow-batch-clips", type=int, default=None,
                   help="compute the flow of this many clips in one batched call in the main process "
                        f"(default: 0 on the CPU, each worker does whole clips; {GPU_FLOW_BATCH_CLIPS} "
                        "with a CUDA --device)")
    add_compute_args(p, precision=False)
    p.add_argument("--face-box", default="largest", metavar="CHOICE",
                   help="which face of each onset frame: 'largest' (default, over all detection passes), "
                        "'centre' (nearest the frame centre) or 'LEFT,TOP,RIGHT,BOTTOM' in pixels; a "
                        "face_box column of the sheet or of --face-boxes overrides it per clip")
    p.add_argument("--face-boxes", default=None, metavar="CSV",
                   help="CSV with columns subject, clip, face_box (same values as --face-box) giving "
                        "the face of single clips")
    p.add_argument("--limit", type=int, default=None, help="only the first N annotation rows")
    for action in p._actions:
        if action.dest == "device":
            action.help = ("torch device of the TV-L1 flow: cpu (default), cuda, cuda:N, or auto (cuda:0 where "
                           "CUDA is available and --flow is tvl1, else cpu). On a GPU the flow of "
                           "--flow-batch-clips clips runs batched in the main process while the workers "
                           "read frames and align; the device used is recorded in report.json; an "
                           "unavailable device is an error, nothing falls back to the CPU")
    p.set_defaults(_run=run)
    return p


def check_device_args(args) -> None:
    """Resolve ``--device`` (``auto`` → a GPU only for TV-L1) and ``--flow-batch-clips``;
    raise ``ValueError`` (exit 2) on a device this run cannot use."""
    from psyau_graph.preprocess.batch import _flow_device

    if str(args.device).strip().lower() == "auto" and args.flow != "tvl1":
        args.device = "cpu"  # only TV-L1 can use a GPU; auto asks for the best available, not for an error
    check_compute_args(args)
    if args.flow_batch_clips is None:
        args.flow_batch_clips = 0 if args.device == "cpu" else GPU_FLOW_BATCH_CLIPS
    _flow_device(args.device, args.flow, args.flow_batch_clips)


def write_annotation_report(df, out_dir) -> str:
    """``<out_dir>/annotation_report.json``: every report entry plus counts (written atomically)."""
    import json
    import os
    import tempfile
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = df.attrs.get("report") or []
    doc = {"source": df.attrs.get("source"), "rows_kept": int(len(df)),
           "rows_left_out": sum(e["action"] in ("skipped", "sheet skipped") for e in entries),
           "entries": entries}
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".annotation_report.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
        os.replace(tmp, out / "annotation_report.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(out / "annotation_report.json")


def run(args) -> int:
    import logging

    from psyau_graph.data.annotations import read_annotations, report_summary
    from psyau_graph.preprocess.batch import preprocess_dataset

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_device_args(args)  # before anything is read or written
    from psyau_graph.preprocess.landmarks import parse_face_box

    face = parse_face_box(args.face_box, what="--face-box")
    sheets = args.annotations[0] if len(args.annotations) == 1 else list(args.annotations)
    df = read_annotations(sheets, args.dataset, errors=args.bad_rows, columns=args.columns,
                          apex_estimate=args.apex_estimate)
    problems = df.attrs.get("report") or []
    where = write_annotation_report(df, args.out)
    print(f"{args.dataset} annotations: {len(df)} usable row(s); {len(problems)} report entr(ies) in {where}")
    for line in report_summary(df):
        print(f"  {line}")
    if args.check_annotations:
        return 0
    if args.face_boxes:
        df = merge_face_boxes(df, args.face_boxes)
    if args.limit is not None:
        df = df.iloc[: args.limit]
    report = preprocess_dataset(df, args.frames, args.out, dataset=args.dataset, layout=args.layout,
                                flow=args.flow, workers=args.workers, apex_window=args.apex_window,
                                errors=args.on_error, landmarks_backend=args.landmarks,
                                flow_batch_clips=args.flow_batch_clips, face=face, device=args.device,
                                flow_params={"match_brightness": True} if args.match_brightness else None)
    rate = report["timings"]["clips_per_s"]
    print(f"{args.dataset}: {report['processed']} processed, {report['cached']} already cached, "
          f"{len(report['skipped'])} skipped, {len(problems)} annotation report entr(ies)"
          + (f"; flow on {args.device}" if args.device != "cpu" else "")
          + (f"; {rate:.1f} clips/s" if rate else ""))
    for s in report["skipped"][:20]:
        print(f"  skipped {s['subject']}/{s['clip']}: {s['reason'].splitlines()[0]}")
    if len(report["skipped"]) > 20:
        print(f"  ... {len(report['skipped']) - 20} more in {args.out}/report.json")
    return 0


def merge_face_boxes(df, csv_path):
    """Add / override the ``face_box`` column of an annotation table from a CSV
    (columns subject, clip, face_box); every row of the CSV must name a clip of the table.

    Raises:
        FileNotFoundError: no such CSV. FaceBoxError: a bad column, value or unknown clip.
    """
    from pathlib import Path

    import pandas as pd

    from psyau_graph.preprocess.landmarks import FaceBoxError, parse_face_box

    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"--face-boxes: file not found: {path}")
    boxes = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"subject", "clip", "face_box"} - set(boxes.columns)
    if missing:
        raise FaceBoxError(f"--face-boxes {path}: missing column(s) {sorted(missing)} "
                           f"(expected subject, clip, face_box)")
    known = set(zip(df["subject"].astype(str), df["clip"].astype(str)))
    table = {}
    for i, r in enumerate(boxes.itertuples(index=False), start=2):
        key = (r.subject.strip(), r.clip.strip())
        if key not in known:
            raise FaceBoxError(f"--face-boxes {path} row {i}: clip {key[0]}/{key[1]} is not in the sheet")
        parse_face_box(r.face_box, what=f"--face-boxes {path} row {i}")
        table[key] = r.face_box
    df = df.copy()
    old = df["face_box"] if "face_box" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["face_box"] = [table.get((str(s), str(c)), o) for s, c, o in zip(df["subject"], df["clip"], old)]
    return df
