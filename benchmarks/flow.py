"""Optical-flow benchmark: throughput (pairs/s) and accuracy (EPE) against known motion at 128².

Data: crops of the astronaut's face (scikit-image's public-domain photo), jittered in
position and scale, each deformed by a smooth random displacement field (bicubic
interpolation of a 4×4 grid of Gaussian knots) scaled so that its largest component is
between 0.2 and 2 px. ``I1`` is the crop, ``I0(x) = I1(x + flow(x))`` (cubic
interpolation), both quantised to uint8 like real video frames. So the ground truth obeys
the package convention ``I1(x + u, y + v) = I0(x, y)``.

Methods, all on the same pairs in the same run, interleaved repeat by repeat so that
load changes on a shared machine hit every method alike:

- ``ours/default``: :func:`psyau_graph.preprocess.tvl1_flow` with ``TVL1Params()``,
  batched at 1, 16 and 64 pairs per call;
- ``ours/fast``: the faster preset ``TVL1Params.fast()`` (``num_iter=15``), same batch sizes;
- ``ours/skimage-params``: our solver with skimage's own settings (2 projection steps,
  tol 1e-4) at batch 64, to separate implementation speed from parameter choice;
- ``skimage``: ``skimage.registration.optical_flow_tvl1`` with its defaults, one pair at a time;
- ``dis``, ``farneback``: OpenCV via :func:`psyau_graph.preprocess.compute_flow_batch`.

EPE = mean end-point error in px, over the interior (8 px border dropped, where motion
leaves the frame) and over the whole image. Timing: one warm-up pass, then ``--repeats``
timed passes over all pairs; median and min/max of pairs/s.

Usage: ``python benchmarks/flow.py [--pairs 64] [--repeats 3] [--threads 2] [--out PATH]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates, zoom

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from psyau_graph.preprocess.flow import compute_flow_batch  # noqa: E402
from psyau_graph.preprocess.tvl1 import TVL1Params, from_skimage_order, tvl1_flow  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402

SIZE = 128
BORDER = 8
#: Faster TV-L1 preset; must still match skimage's EPE on this benchmark (checked in the output).
FAST = TVL1Params.fast()
SKIMAGE_LIKE = TVL1Params.skimage()


def make_pairs(n: int, seed: int = 0, size: int = SIZE, magnitude: tuple[float, float] = (0.2, 2.0)
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` uint8 pairs (I0, I1) of shape (n, size, size) and their true flow (n, 2, size, size).

    The largest flow component of each pair is drawn uniformly from ``magnitude`` (px).
    """
    from skimage import color, data, transform

    grey = color.rgb2gray(data.astronaut())
    rng = np.random.default_rng(seed)
    i0s, i1s, flows = [], [], []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(n):
        side = int(rng.integers(140, 181))  # face region ~ rows 40:200, cols 150:310 of the photo
        top = int(rng.integers(30, 50)) + (160 - side) // 2
        left = int(rng.integers(140, 160)) + (160 - side) // 2
        crop = transform.resize(grey[top:top + side, left:left + side], (size, size), anti_aliasing=True)
        knots = rng.normal(size=(2, 4, 4))
        field = np.stack([zoom(k, size / 4, order=3, mode="nearest")[:size, :size] for k in knots])
        field *= rng.uniform(*magnitude) / np.abs(field).max()
        i0 = map_coordinates(crop, [yy + field[1], xx + field[0]], order=3, mode="nearest")
        i0s.append(np.round(np.clip(i0, 0, 1) * 255).astype(np.uint8))
        i1s.append(np.round(np.clip(crop, 0, 1) * 255).astype(np.uint8))
        flows.append(field.astype(np.float32))
    return np.stack(i0s), np.stack(i1s), np.stack(flows)


def epe(flow: np.ndarray, truth: np.ndarray, border: int = BORDER) -> float:
    err = np.sqrt(((flow - truth) ** 2).sum(axis=1))
    if border:
        err = err[:, border:-border, border:-border]
    return float(err.mean())


def run_ours(params: TVL1Params, batch: int):
    def fn(i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        a = torch.from_numpy(i0.astype(np.float32) / 255.0)
        b = torch.from_numpy(i1.astype(np.float32) / 255.0)
        out = [tvl1_flow(a[k:k + batch], b[k:k + batch], params) for k in range(0, len(a), batch)]
        return torch.cat(out).numpy()

    return fn


def with_threads(fn, threads: int):
    """Run ``fn`` with torch limited to ``threads`` intra-op threads, then restore."""

    def wrapped(i0, i1):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(i0, i1)
        finally:
            torch.set_num_threads(old)

    return wrapped


def run_skimage(i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    from skimage.registration import optical_flow_tvl1

    out = [from_skimage_order(optical_flow_tvl1(a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0))
           for a, b in zip(i0, i1)]
    return np.stack(out)


def run_cv(method: str):
    return lambda i0, i1: compute_flow_batch(i0, i1, method)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large-pairs", type=int, default=16,
                    help="pairs with 2-6 px motion scored for accuracy only (0 to skip)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "flow.json")
    args = ap.parse_args(argv)
    start_load = load_average()

    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    i0, i1, truth = make_pairs(args.pairs, args.seed)

    methods = {"skimage": run_skimage}
    for name, params in (("ours/default", TVL1Params()), ("ours/fast", FAST)):
        for batch in (1, 16, 64):
            methods[f"{name}/b{batch}"] = run_ours(params, batch)
    methods["ours/skimage-params/b64"] = run_ours(SKIMAGE_LIKE, 64)
    if args.threads != 1:  # the same solver with one torch thread, for a shared/oversubscribed machine
        methods["ours/default/b64/1thread"] = with_threads(run_ours(TVL1Params(), 64), 1)
        methods["ours/fast/b64/1thread"] = with_threads(run_ours(FAST, 64), 1)
    methods["dis"] = run_cv("dis")
    methods["farneback"] = run_cv("farneback")

    flows, times = {}, {m: [] for m in methods}
    for name, fn in methods.items():  # warm-up, and the flows scored for accuracy
        flows[name] = fn(i0, i1)
        print(f"warm-up {name}: EPE {epe(flows[name], truth):.4f}", flush=True)
    for r in range(args.repeats):
        for name, fn in methods.items():
            t = time.perf_counter()
            fn(i0, i1)
            times[name].append(time.perf_counter() - t)
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    results = {}
    for name in methods:
        rates = [args.pairs / t for t in times[name]]
        results[name] = {
            "pairs_per_s_median": statistics.median(rates),
            "pairs_per_s_min": min(rates),
            "pairs_per_s_max": max(rates),
            "epe_interior_px": epe(flows[name], truth),
            "epe_full_px": epe(flows[name], truth, border=0),
        }
    sk = results["skimage"]
    for name, res in results.items():
        res["speedup_vs_skimage"] = res["pairs_per_s_median"] / sk["pairs_per_s_median"]
        res["epe_le_skimage"] = res["epe_interior_px"] <= sk["epe_interior_px"]
        res["mean_distance_to_skimage_px"] = epe(flows[name], flows["skimage"])

    large, large_motion = {}, None
    if args.large_pairs:
        j0, j1, jt = make_pairs(args.large_pairs, args.seed + 100, magnitude=(2.0, 6.0))
        for name in ("skimage", "ours/default/b16", "ours/fast/b16", "ours/skimage-params/b64", "dis", "farneback"):
            large[name] = {"epe_interior_px": epe(methods[name](j0, j1), jt)}
        large_motion = float(np.sqrt((jt ** 2).sum(1)).mean())
        print("large motion (2-6 px) EPE:", {k: round(v["epe_interior_px"], 4) for k, v in large.items()},
              flush=True)

    report = {
        "benchmark": "optical flow, 128x128 astronaut-face pairs with smooth random motion (0.2-2 px)",
        "pairs": args.pairs,
        "repeats": args.repeats,
        "seed": args.seed,
        "torch_threads": args.threads,
        "mean_true_motion_px": float(np.sqrt((truth ** 2).sum(1)).mean()),
        "params": {"ours/default": vars(TVL1Params()), "ours/fast": vars(FAST),
                   "ours/skimage-params": vars(SKIMAGE_LIKE)},
        "machine": machine_info(start_load, opencv=cv2.__version__),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "results": results,
        "large_motion_accuracy": {"pairs": args.large_pairs, "magnitude_px": [2.0, 6.0],
                                  "mean_true_motion_px": large_motion, "results": large},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(tmp, args.out)

    print(f"\n{'method':28s} {'pairs/s (min-max)':>26s} {'x skimage':>9s} {'EPE in':>7s} {'EPE all':>7s}")
    for name, res in results.items():
        print(f"{name:28s} {res['pairs_per_s_median']:9.1f} ({res['pairs_per_s_min']:6.1f}-"
              f"{res['pairs_per_s_max']:6.1f}) {res['speedup_vs_skimage']:9.1f} "
              f"{res['epe_interior_px']:7.4f} {res['epe_full_px']:7.4f}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
