"""End-to-end preprocessing throughput: clips/s of ``preprocess_dataset`` on 2 cores.

Measures the whole per-clip path (read frames from disk → dlib face + landmarks
on the onset → alignment → flow onset → apex window (±1, 3 pairs) → strain →
65 ROIs + 28² map → atomic cache write) on synthetic clips written by
``psyau_graph.data.synth.generate_synthetic`` (256² frames, astronaut-based).

Runs: one warm-up (it also loads the dlib models in this process: forked workers
then share them), then ``--repeats`` timed runs, each into an empty cache.
Peers in the same run: DIS with 1 worker, DIS with ``finest_scale=1`` (flow on the
64² level, upsampled), TV-L1 with 2 workers (fewer clips), whole clips per worker and with the flow of all
clips batched in the parent (``flow_batch_clips``).
Reported: median and spread (min, max) of clips/s, the cold first run (including
model loading and pool start), and the mean per-stage time per clip.

    python benchmarks/preprocess.py [--clips 40] [--tvl1-clips 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import load_average, machine_info

HERE = Path(__file__).resolve().parent


def run_once(df, root, cache, flow, workers, flow_params=None, batch=0):
    from psyau_graph.preprocess.batch import preprocess_dataset

    if cache.exists():
        shutil.rmtree(cache)
    t0 = time.perf_counter()
    rep = preprocess_dataset(df, root, cache, dataset="synth", flow=flow, workers=workers, progress=False,
                             flow_params=flow_params, flow_batch_clips=batch)
    wall = time.perf_counter() - t0
    if rep["skipped"]:
        raise RuntimeError(f"benchmark clips skipped: {rep['skipped'][:3]}")
    return rep["processed"] / wall, rep


def measure(df, root, cache, flow, workers, repeats, warmup=True, flow_params=None, batch=0):
    cold = None
    if warmup:
        cold, _ = run_once(df, root, cache, flow, workers, flow_params, batch)
    rates, stages = [], []
    for _ in range(repeats):
        r, rep = run_once(df, root, cache, flow, workers, flow_params, batch)
        rates.append(r)
        stages.append(rep["timings"]["stage_s_mean"])
    stage_mean = {k: float(np.mean([s[k] for s in stages])) for k in stages[0]}
    return {"flow": flow, "flow_params": flow_params or "defaults of psyau_graph.preprocess.flow", "workers": workers, "flow_batch_clips": batch, "clips": len(df), "repeats": repeats,
            "clips_per_s_median": float(np.median(rates)), "clips_per_s_min": float(min(rates)),
            "clips_per_s_max": float(max(rates)), "cold_first_run_clips_per_s": cold,
            "stage_s_per_clip_mean": stage_mean}


def landmark_profile(root, df, n=10):
    """Time of face detection + landmarks per frame, with and without the downscaled first try."""
    import cv2

    from psyau_graph.data.layouts import find_clip_frames
    from psyau_graph.preprocess.landmarks import detect_landmarks

    imgs = []
    for row in df.head(n).to_dict("records"):
        fr = dict(find_clip_frames(root, row, "synth"))
        imgs.append(cv2.imread(str(fr[int(row["onset"])]), cv2.IMREAD_GRAYSCALE))
    big = [cv2.resize(i, (640, 640)) for i in imgs]
    out = {}
    for label, batch, side in [("256px", imgs, 320), ("640px_downscaled_first", big, 320),
                               ("640px_full_res", big, 0)]:
        detect_landmarks(batch[0], detect_max_side=side)
        ts = []
        for im in batch:
            t0 = time.perf_counter()
            detect_landmarks(im, detect_max_side=side)
            ts.append(time.perf_counter() - t0)
        out[label] = {"median_s": float(np.median(ts)), "min_s": float(min(ts)), "max_s": float(max(ts))}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--tvl1-clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "preprocess.json"))
    args = ap.parse_args(argv)
    start_load = load_average()

    from psyau_graph.data.annotations import read_annotations
    from psyau_graph.data.synth import generate_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subjects = max(1, args.clips // 10)
        sheet = generate_synthetic(tmp / "frames", subjects=subjects, clips_per_subject=int(np.ceil(args.clips / subjects)),
                                   seed=0, progress=False)
        df = read_annotations(sheet, "synth").head(args.clips)
        res = {
            "what": "preprocess_dataset clips/s (frames from disk -> cache file), synthetic 256x256 clips, "
                    "apex window ±1 (3 flow pairs per clip)",
            "machine": None,  # filled in at the end (load average at start and end)
            "runs": [],
        }
        res["runs"].append(measure(df, tmp / "frames", tmp / "c", "dis", 2, args.repeats))
        res["runs"].append(measure(df, tmp / "frames", tmp / "c", "dis", 1, args.repeats, warmup=False))
        res["runs"].append(measure(df, tmp / "frames", tmp / "c", "dis", 2, args.repeats, warmup=False,
                                   flow_params={"finest_scale": 1}))
        dft = df.head(args.tvl1_clips)
        res["runs"].append(measure(dft, tmp / "frames", tmp / "c", "tvl1", 2, max(1, args.repeats - 1), warmup=False))
        res["runs"].append(measure(dft, tmp / "frames", tmp / "c", "tvl1", 2, max(1, args.repeats - 1), warmup=False,
                                   batch=len(dft)))
        res["landmarks_per_frame"] = landmark_profile(tmp / "frames", df)
        res["machine"] = machine_info(start_load)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from psyau_graph.train.protocols import atomic_write_text

    atomic_write_text(Path(args.out), json.dumps(res, indent=1) + "\n")
    for r in res["runs"]:
        print(f"{r['flow']:5s} {r['flow_params'] if isinstance(r['flow_params'], dict) else ''} workers={r['workers']} batch={r['flow_batch_clips']} clips={r['clips']}: {r['clips_per_s_median']:.2f} clips/s "
              f"(min {r['clips_per_s_min']:.2f}, max {r['clips_per_s_max']:.2f}); stages "
              + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in r["stage_s_per_clip_mean"].items()))
    print("landmarks:", {k: round(v["median_s"] * 1000, 1) for k, v in res["landmarks_per_frame"].items()}, "ms")


if __name__ == "__main__":
    main()
