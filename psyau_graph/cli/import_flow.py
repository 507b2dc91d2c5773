"""``psyau import-flow``: flow images + apex crops + a composite label list → the clip cache."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "import-flow", help="build the clip cache from STSTNet-style flow images (MEGC 2019 composite)",
        description="Read a MEGC 2019 composite label list, pair each row with its (u, v, strain) flow "
                    "image and its apex face crop, find landmarks on the crop, and write the normal clip "
                    "cache (<out>/clips/<dataset>/<subject>/<clip>.pt) plus <out>/report.json. "
                    "See docs/flow_images.md.")
    p.add_argument("--flow-images", required=True, help="folder of the flow images (e.g. 28x28 PNG)")
    p.add_argument("--apex-crops", required=True,
                   help="folder of the apex face crops (e.g. 224x224 JPEG); landmarks are found on them")
    p.add_argument("--labels", required=True, help="composite label list (CSV, either layout)")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--casme2-sheet", default=None, help="CASME II annotation sheet, for AU labels")
    p.add_argument("--samm-sheet", default=None, help="SAMM annotation sheet, for AU labels")
    p.add_argument("--channels", default="opencv", choices=("opencv", "rgb"),
                   help="flow image channel order: opencv = u, v, strain as cv2.imread returns the planes "
                        "(B, G, R; default, as the STSTNet Python code reads them), rgb = R, G, B")
    p.add_argument("--landmarks", default="dlib", choices=("dlib", "face_alignment"),
                   help="landmark backend (default: dlib)")
    p.add_argument("--bad-rows", default="raise", choices=("raise", "report"),
                   help="list rows that cannot be read: stop listing all of them (default) or leave out and report")
    p.set_defaults(_run=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from psyau_graph.preprocess.flow_images import import_flow_images, summary_line

    sheets = {k: v for k, v in (("casme2", args.casme2_sheet), ("samm", args.samm_sheet)) if v}
    report = import_flow_images(args.labels, args.flow_images, args.out, crop_dir=args.apex_crops,
                                au_sheets=sheets, channels=args.channels, landmarks_backend=args.landmarks,
                                errors=args.bad_rows)
    print(f"import-flow: {summary_line(report)}")
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0
