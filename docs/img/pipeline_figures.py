"""Make the figures of docs/preprocessing.md and docs/keypoints.md.

Run from the repository root:  python docs/img/pipeline_figures.py
Everything is computed from skimage's astronaut photo (through the synthetic data
generator), so the figures need no licensed data.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from psyau_graph.preprocess.align import AlignConfig, alignment_matrix, transform_points, warp_frames  # noqa: E402
from psyau_graph.preprocess.keypoints import keypoint_spec, landmarks_to_keypoints, roi_groups  # noqa: E402
from psyau_graph.preprocess.landmarks import detect_landmarks  # noqa: E402
from psyau_graph.preprocess.pipeline import preprocess_clip  # noqa: E402
from psyau_graph.viz.flow import plot_flow, plot_keypoints  # noqa: E402

OUT = Path(__file__).resolve().parent


def keypoint_figures():
    from skimage import data

    img = data.astronaut()
    det = detect_landmarks(img, clip="astronaut")
    M = alignment_matrix(det.landmarks, AlignConfig(size=384))  # a large crop for a legible figure
    crop = warp_frames(img, M, 384)
    kp = landmarks_to_keypoints(transform_points(det.landmarks, M))
    kinds = [k["kind"] for k in keypoint_spec()]
    # ROI boxes are 5 px on the 128² crop: draw them at the same relative size (×3)
    plot_keypoints(crop, kp, None, OUT / "keypoints65.png", kinds=kinds)
    plot_keypoints(crop, kp, roi_groups(), OUT / "keypoints65_groups.png", kinds=kinds, numbers=False,
                   roi_size=15, title="ROI groups g1 brows (23), g2 eyes (48), g3 nose/cheeks (38), g4 mouth (52)")


def pipeline_figures():
    import pandas as pd

    from psyau_graph.data.layouts import find_clip_frames
    from psyau_graph.data.synth import generate_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        sheet = generate_synthetic(tmp, subjects=1, clips_per_subject=6, seed=3, progress=False)
        df = pd.read_csv(sheet)
        pick = df[df["Estimated Emotion"].str.startswith("happ")]
        row = (pick if len(pick) else df).iloc[0]
        frames = find_clip_frames(tmp, {"subject": row["Subject"], "clip": row["Filename"]}, "synth")
        onset, apex = int(row["Onset Frame"]), int(row["Apex Frame"])
        feats = preprocess_clip(frames, onset, apex, flow="tvl1", name=f"{row['Subject']}/{row['Filename']}")
        import cv2

        raw = cv2.imread(str(dict(frames)[onset]), cv2.IMREAD_GRAYSCALE)
    label = f"synthetic clip {row['Subject']}/{row['Filename']} ({row['Estimated Emotion']}, AU {row['Action Units']})"
    det = detect_landmarks(raw)
    # 1. raw onset frame, face box and landmarks
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    ax = axes[0]
    ax.imshow(raw, cmap="gray")
    l, t, r, b = det.box
    ax.add_patch(plt.Rectangle((l, t), r - l, b - t, fill=False, ec="yellow", lw=1))
    ax.scatter(det.landmarks[:, 0], det.landmarks[:, 1], s=3, c="cyan")
    ax.set_title(f"onset frame {onset}: box + 68 landmarks", fontsize=9)
    axes[1].imshow(feats.onset_crop, cmap="gray", vmin=0, vmax=255)
    le, re_ = feats.landmarks[36:42].mean(0), feats.landmarks[42:48].mean(0)
    axes[1].plot([le[0], re_[0]], [le[1], re_[1]], "y-", lw=1)
    axes[1].scatter(feats.landmarks[:, 0], feats.landmarks[:, 1], s=3, c="cyan")
    axes[1].set_title("aligned onset 128² (eye line level)", fontsize=9)
    axes[2].imshow(feats.apex_crop, cmap="gray", vmin=0, vmax=255)
    axes[2].set_title(f"aligned apex (frame {feats.apex})", fontsize=9)
    d = feats.apex_crop.astype(int) - feats.onset_crop.astype(int)
    lim = max(np.abs(d).max(), 1)
    im = axes[3].imshow(d, cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[3].set_title("apex − onset (grey levels)", fontsize=9)
    fig.colorbar(im, ax=axes[3], fraction=0.046)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT / "pipeline_align.png", dpi=110)
    plt.close(fig)
    # 2. flow + strain with keypoints and ROI boxes
    plot_flow(feats.flow, feats.onset_crop, feats.keypoints, roi_groups=True, out=OUT / "pipeline_flow.png",
              title=f"TV-L1 flow onset → apex window {feats.apex_numbers} (mean), strain, 65 ROIs")
    # 3. the network inputs: 65 ROI patches and the 28² map
    fig = plt.figure(figsize=(13, 7.6))
    gs = fig.add_gridspec(2, 3, height_ratios=[1.5, 1])
    # mosaic of the 65 patches (5 rows × 13), channel v, one pixel of white between patches
    mosaic = np.full((5 * 6 - 1, 13 * 6 - 1), np.nan)
    for k in range(65):
        r, c = divmod(k, 13)
        mosaic[r * 6:r * 6 + 5, c * 6:c * 6 + 5] = feats.rois[k, 1]
    lim = np.nanmax(np.abs(mosaic))
    a = fig.add_subplot(gs[0, :])
    im = a.imshow(mosaic, cmap="coolwarm", vmin=-lim, vmax=lim)
    for k in range(65):
        r, c = divmod(k, 13)
        a.text(c * 6 + 2, r * 6 - 0.7, str(k), ha="center", va="bottom", fontsize=6)
    a.set_title("rois: 65 patches × (u, v, ε) × 5 × 5 — channel v (px, + = down) shown, keypoint index above", fontsize=9, pad=14)
    a.set_axis_off()
    fig.colorbar(im, ax=a, fraction=0.02)
    for j, (name, cmap) in enumerate([("u", "coolwarm"), ("v", "coolwarm"), ("ε", "magma")]):
        a = fig.add_subplot(gs[1, j])
        m = feats.flow28[j]
        kw = dict(vmin=-np.abs(m).max(), vmax=np.abs(m).max()) if cmap == "coolwarm" else {}
        im = a.imshow(m, cmap=cmap, **kw)
        a.set_title(f"flow28: {name} (3×28×28)", fontsize=9)
        a.set_xticks([])
        a.set_yticks([])
        fig.colorbar(im, ax=a, fraction=0.046)
    fig.tight_layout()
    fig.savefig(OUT / "pipeline_inputs.png", dpi=110)
    plt.close(fig)
    return feats


if __name__ == "__main__":
    import sys

    if "--inputs-only" not in sys.argv:
        keypoint_figures()
    f = pipeline_figures()
    print("timings", {k: round(v, 3) for k, v in f.timings.items()}, "notes", f.notes)
