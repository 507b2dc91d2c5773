"""Figure of the synthetic set: onset, apex, difference and true flow for each emotion."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def flow_to_rgb(flow: np.ndarray, max_mag: float | None = None) -> np.ndarray:
    """Colour-code a flow field: hue = direction, value = magnitude.

    Shapes:
        flow: (2, H, W) (u, v) → (H, W, 3) float RGB in [0, 1].
    """
    from matplotlib.colors import hsv_to_rgb

    u, v = flow[0].astype(np.float32), flow[1].astype(np.float32)
    mag = np.hypot(u, v)
    top = max_mag if max_mag else max(float(mag.max()), 1e-6)
    hsv = np.stack([(np.arctan2(v, u) / (2 * np.pi)) % 1.0, np.ones_like(mag), np.clip(mag / top, 0, 1)], -1)
    return hsv_to_rgb(hsv)


def plot_synthetic_examples(out_dir, path, *, crop: float = 0.62) -> Path:
    """One row per emotion (first clip showing its own prototype): onset, apex, |apex − onset| ×8, true flow.

    Args:
        out_dir: a folder written by :func:`~psyau_graph.data.synth.generate_synthetic`.
        path: PNG to write (atomically).
        crop: fraction of the frame kept around its centre (default 0.62, the face).
    """
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from .annotations import read_annotations
    from .layouts import find_clip_frames
    from .synth import EMOTIONS, SHEET, load_gt_flow

    out_dir = Path(out_dir)
    df = read_annotations(out_dir / SHEET, "synth")
    def typical(row) -> bool:  # the clip shows its own emotion's AU prototype
        with np.load(out_dir / row["subject"] / row["clip"] / "flow_gt.npz") as z:
            return str(z["prototype"]) == row["emotion"]

    rows = []
    for e in EMOTIONS:
        cand = [r for _, r in df[df["emotion"] == e].iterrows()]
        if cand:
            rows.append(next((r for r in cand if typical(r)), cand[0]))
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.2 * len(rows)), squeeze=False)
    for r, row in zip(axes, rows):
        frames = dict(find_clip_frames(out_dir, row, dataset="synth"))
        on = np.asarray(Image.open(frames[int(row["onset"])]).convert("RGB"))
        ap = np.asarray(Image.open(frames[int(row["apex"])]).convert("RGB"))
        flow = load_gt_flow(out_dir, row["subject"], row["clip"])
        h, w = on.shape[:2]
        m0, m1 = int(h * (1 - crop) / 2), int(h * (1 + crop) / 2)
        sl = (slice(m0, m1), slice(m0, m1))
        diff = np.abs(ap.astype(np.float32) - on.astype(np.float32)).mean(-1)
        mag = np.hypot(flow[0], flow[1])
        r[0].imshow(on[sl])
        r[1].imshow(ap[sl])
        r[2].imshow(np.clip(diff[sl] * 8, 0, 255), cmap="gray", vmin=0, vmax=255)
        r[3].imshow(flow_to_rgb(flow[:, sl[0], sl[1]], max_mag=max(float(mag.max()), 0.25)))
        step = 12
        ys, xs = np.mgrid[0:m1 - m0:step, 0:m1 - m0:step]
        r[3].quiver(xs, ys, flow[0, sl[0], sl[1]][::step, ::step], flow[1, sl[0], sl[1]][::step, ::step],
                    color="white", angles="xy", scale_units="xy", scale=0.25, width=0.006)
        aus = "+".join(str(a) for a in sorted(row["aus"]))
        r[0].set_ylabel(f"{row['emotion']}\nAU {aus}", fontsize=9)
        r[3].set_title(f"max |flow| {mag.max():.2f} px", fontsize=8)
        for a in r:
            a.set_xticks([])
            a.set_yticks([])
    for a, t in zip(axes[0], ["onset", "apex", "|apex − onset| × 8", "true flow (hue = direction,\nbrightness / row max)"]):
        a.set_title(t if a is not axes[0][3] else t + "; " + a.get_title(), fontsize=8)
    fig.suptitle("Synthetic micro-expressions (first clip of each emotion; face region shown)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("tmp_" + path.name)
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
