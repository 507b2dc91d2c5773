"""Peak memory of preprocessing ONE clip from a 4K video: seeking vs decoding every frame.

A short 2880×2160 video (``--frames`` frames, 25 fps, MPEG-4 part 2 ``mp4v`` in .mp4) is
generated with OpenCV in a temporary folder: the astronaut photo (public domain, from
scikit-image) scaled to a 1600 px face region, shifted by a pixel every few frames. One
clip (onset, apex, apex window ±1: 4 frames needed) is preprocessed in a fresh
subprocess per variant, so each measures its own peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``):

- ``baseline``: the same imports and the dlib models loaded, no clip (what every variant pays);
- ``seek`` (this package): ``preprocess_clip(video, ...)``, which decodes only the frames used;
- ``decode_all`` (the peer, what ``open_clip`` did before): every frame decoded into memory
  (RGB, as before), then the same ``preprocess_clip`` on the frames it needs.

Reported per variant: peak RSS (MiB), peak above the baseline, wall time, frames decoded.

    python benchmarks/video_memory.py [--frames 60] [--onset 30] [--apex 45] [--flow dis]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np
variant, video, onset, apex, flow = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
import cv2
from psyau_graph.preprocess import frames as F
from psyau_graph.preprocess.landmarks import _dlib
from psyau_graph.preprocess.pipeline import preprocess_clip
_dlib()
t0 = time.perf_counter()
decoded = 0
if variant == "seek":
    clip = F.open_clip(video)
    feats = preprocess_clip(clip, onset, apex, flow=flow, apex_window=1)
    decoded = clip.video.decoded
elif variant == "decode_all":
    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    decoded = len(frames)
    feats = preprocess_clip(frames, onset, apex, flow=flow, apex_window=1, name="video")
wall = time.perf_counter() - t0
out = {"variant": variant, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
       "wall_s": wall, "frames_decoded": decoded}
if variant != "baseline":
    out["face_box"] = list(feats.face_box)
    out["rois_sum"] = float(np.abs(feats.rois).sum())
print(json.dumps(out))
"""


def make_video(path: Path, n_frames: int, size=(2880, 2160)) -> float:
    """Write the test video; returns seconds spent encoding."""
    import cv2
    import numpy as np
    from skimage import data

    W, H = size
    face = cv2.resize(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), (1600, 1600), interpolation=cv2.INTER_CUBIC)
    base = np.full((H, W, 3), 150, np.uint8)
    y0, x0 = (H - 1600) // 2, (W - 1600) // 2
    base[y0:y0 + 1600, x0:x0 + 1600] = face
    t0 = time.perf_counter()
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, H))
    if not vw.isOpened():
        raise SystemExit("this OpenCV build cannot write mp4v video")
    for k in range(n_frames):
        vw.write(np.roll(base, k // 4, axis=1))
    vw.release()
    return time.perf_counter() - t0


def run_child(variant: str, video: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", CHILD, variant, str(video), str(args.onset), str(args.apex),
                          args.flow], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--onset", type=int, default=30)
    ap.add_argument("--apex", type=int, default=45)
    ap.add_argument("--flow", default="dis")
    ap.add_argument("--out", default=str(HERE / "results" / "video_memory.json"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _machine import load_average, machine_info

    load0 = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip4k.mp4"
        enc = make_video(video, args.frames)
        mib = video.stat().st_size / 2 ** 20
        runs = {v: run_child(v, video, args) for v in ("baseline", "seek", "decode_all")}
    base = runs["baseline"]["peak_rss_mib"]
    for v in ("seek", "decode_all"):
        runs[v]["peak_above_baseline_mib"] = runs[v]["peak_rss_mib"] - base
    same = runs["seek"]["face_box"] == runs["decode_all"]["face_box"] and \
        abs(runs["seek"]["rois_sum"] - runs["decode_all"]["rois_sum"]) <= 1e-3 * max(1.0, runs["seek"]["rois_sum"])
    result = {
        "benchmark": "video_memory",
        "video": {"size": [2880, 2160], "frames": args.frames, "codec": "mp4v", "file_mib": round(mib, 1),
                  "encode_s": round(enc, 1)},
        "clip": {"onset": args.onset, "apex": args.apex, "apex_window": 1, "frames_needed": 4, "flow": args.flow},
        "runs": runs,
        "same_features": bool(same),
        "machine": machine_info(load0),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for v, r in runs.items():
        extra = f", +{r['peak_above_baseline_mib']:.0f} MiB over baseline" if v != "baseline" else ""
        print(f"{v:<11} peak RSS {r['peak_rss_mib']:7.0f} MiB{extra}; {r['wall_s']:.2f} s; "
              f"{r['frames_decoded']} frames decoded")
    print(f"same features: {same}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
