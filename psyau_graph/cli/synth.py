"""``psyau synth``: write the built-in synthetic micro-expression set."""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synth", help="generate the synthetic micro-expression set (frames + annotation sheet + true flow)",
        description="Generate synthetic micro-expression clips from one public-domain face photo "
                    "(CASME II folder layout, annotations.csv readable with dataset 'synth'). "
                    "Resumes: clips already written are skipped.")
    p.add_argument("--out", required=True, help="output folder (frames root)")
    p.add_argument("--subjects", type=int, default=12, help="number of subjects (default 12)")
    p.add_argument("--clips-per-subject", type=int, default=10, help="clips per subject (default 10)")
    p.add_argument("--frames-per-clip", type=int, default=16, help="frames per clip (default 16)")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (default 256)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--amplitude", type=float, nargs=2, metavar=("MIN", "MAX"), default=(0.3, 1.6),
                   help="peak displacement at apex in pixels (default 0.3 1.6)")
    p.add_argument("--noise", type=float, default=3.0, help="sensor noise std in grey levels (default 3)")
    p.add_argument("--class-alpha", type=float, default=0.8,
                   help="Dirichlet concentration of each subject's emotion mix (default 0.8)")
    p.add_argument("--au-unknown-frac", type=float, default=0.0,
                   help="fraction of clips whose AU cell is '?' (no AU coding; their AUs are still rendered) "
                        "(default 0)")
    p.add_argument("--au-mode", choices=("prototype", "real"), default="prototype",
                   help="AU sets from FACS prototypes per emotion (default) or from real (AU set, emotion) "
                        "rows of the CASME II / SAMM coding sheets (shipped as counts)")
    p.add_argument("--au-source", choices=("casme2", "samm", "casme2+samm"), default="casme2+samm",
                   help="with --au-mode real: the sheets whose rows are drawn (default casme2+samm, pooled)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2); output does not depend on it")
    p.add_argument("--xlsx", action="store_true", help="also write annotations.xlsx")
    p.add_argument("--figure", default=None, help="also write a PNG of onset/apex/true flow per emotion")
    p.set_defaults(_run=run)
    return p


def run(args) -> int:
    import time

    from psyau_graph.data.synth import SynthConfig, generate_synthetic

    cfg = SynthConfig(subjects=args.subjects, clips_per_subject=args.clips_per_subject,
                      frames_per_clip=args.frames_per_clip, size=args.size, seed=args.seed,
                      amplitude=tuple(args.amplitude), noise=args.noise, class_alpha=args.class_alpha,
                      au_unknown_frac=args.au_unknown_frac,
                      au_mode=args.au_mode, au_source=args.au_source)
    t0 = time.perf_counter()
    sheet = generate_synthetic(args.out, config=cfg, xlsx=args.xlsx, workers=args.workers)
    import json

    info = json.loads((sheet.parent / "synth_info.json").read_text())["last_run"]
    print(f"synthetic set: {cfg.subjects} subjects x {cfg.clips_per_subject} clips -> {sheet.parent} "
          f"({info['clips_written']} written, {info['clips_skipped']} already present, "
          f"{time.perf_counter() - t0:.1f} s)")
    print(f"annotations: {sheet}  (read_annotations(path, 'synth'))")
    if args.figure:
        from psyau_graph.data.synth_figure import plot_synthetic_examples

        print(f"figure: {plot_synthetic_examples(sheet.parent, args.figure)}")
    return 0
