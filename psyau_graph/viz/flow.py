"""Plots of the preprocessing output: flow as colour, strain, keypoints and ROI boxes.

Flow colour code (Middlebury style): hue = direction of (u, v) in image
coordinates (y down), brightness = magnitude scaled to the largest magnitude in
the map (or ``max_flow``). A colour wheel in the corner shows the code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["flow_to_rgb", "plot_flow", "plot_keypoints", "GROUP_COLOURS", "primary_groups"]

#: colours of ROI groups 1..4 (colour-blind safe: Okabe–Ito)
GROUP_COLOURS = {1: "#E69F00", 2: "#56B4E9", 3: "#009E73", 4: "#CC79A7"}


def flow_to_rgb(u, v, max_flow: float | None = None) -> np.ndarray:
    """Flow as an RGB image: hue = direction, value = magnitude / max_flow.

    Shapes:
        u, v: (H, W); return: (H, W, 3) float in [0, 1].
    """
    from matplotlib.colors import hsv_to_rgb

    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    mag = np.hypot(u, v)
    m = float(max_flow) if max_flow else float(mag.max())
    hue = (np.arctan2(v, u) / (2 * np.pi)) % 1.0
    val = np.clip(mag / m, 0, 1) if m > 0 else np.zeros_like(mag)
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), val], axis=-1))


def _split(flow) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    if isinstance(flow, (tuple, list)):
        if len(flow) not in (2, 3):
            raise ValueError(f"flow: expected (u, v) or (u, v, ε), got {len(flow)} arrays")
        parts = [np.asarray(f, dtype=np.float64) for f in flow]
        return parts[0], parts[1], parts[2] if len(parts) == 3 else None
    a = np.asarray(flow.detach().cpu() if hasattr(flow, "detach") else flow, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] not in (2, 3):
        raise ValueError(f"flow: expected shape (2|3, H, W), got {a.shape}")
    return a[0], a[1], a[2] if a.shape[0] == 3 else None


def _strain(u, v):
    ux, uy = np.gradient(u, axis=1), np.gradient(u, axis=0)
    vx, vy = np.gradient(v, axis=1), np.gradient(v, axis=0)
    return np.sqrt(ux ** 2 + vy ** 2 + 0.5 * (uy + vx) ** 2)


def _wheel(ax, size=41):
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    rgb = flow_to_rgb(xx, yy, 1.0)
    alpha = (np.hypot(xx, yy) <= 1).astype(float)
    ax.imshow(np.dstack([rgb, alpha]))
    ax.set_axis_off()


#: keypoint region (keypoints65.json) → the ROI group whose primary region it is
REGION_PRIMARY = {"brow": 1, "eye": 2, "nose_bridge": 3, "nose_base": 3, "cheek": 3,
                  "outer_lip": 4, "inner_lip": 4, "jaw": 4}


def primary_groups(groups: dict | None = None, num_keypoints: int = 65) -> list[int | None]:
    """For each keypoint, the group to colour it by: the group whose primary region holds it
    (brow → 1, eye → 2, nose/cheek → 3, lips/jaw → 4) if that group contains it, else the
    lowest group containing it, else None. ``groups`` default: ``roi_groups()``."""
    from psyau_graph.preprocess.keypoints import keypoint_spec, roi_groups

    groups = groups if groups is not None else roi_groups()
    spec = keypoint_spec() if num_keypoints == 65 else None
    out: list[int | None] = []
    for k in range(num_keypoints):
        holding = sorted(g for g, ks in groups.items() if k in set(ks))
        pref = REGION_PRIMARY.get(spec[k]["region"]) if spec else None
        out.append(pref if pref in holding else (holding[0] if holding else None))
    return out


def _draw_rois(ax, keypoints, roi_size, roi_groups, shape):
    from matplotlib.patches import Rectangle

    from psyau_graph.preprocess.rois import roi_centres

    c = roi_centres(keypoints, shape[0], shape[1], roi_size)
    colour = ["white"] * len(c)
    if roi_groups:
        groups = roi_groups if isinstance(roi_groups, dict) else None
        for k, g in enumerate(primary_groups(groups, len(c))):
            colour[k] = GROUP_COLOURS.get(g, "white")
    h = roi_size / 2
    for (x, y), col in zip(c, colour):
        ax.add_patch(Rectangle((x - h, y - h), roi_size, roi_size, fill=False, lw=0.8, ec=col))
    kp = np.asarray(keypoints)
    ax.scatter(kp[:, 0], kp[:, 1], s=4, c=colour, linewidths=0)


def plot_flow(flow, image=None, keypoints=None, roi_groups=None, out=None, *, roi_size: int = 5,
              max_flow: float | None = None, title: str | None = None, arrows: bool = True):
    """Face, flow colour and strain side by side, with keypoints and ROI boxes.

    Args:
        flow: (u, v, ε) array (3, H, W), (u, v) array (2, H, W) or a tuple of maps; ε is
            computed (central differences) when absent.
        image: the aligned face (H, W) grey or (H, W, 3) (default None: no face panel).
        keypoints: (K, 2) (x, y) to draw with their ``roi_size`` boxes (default None).
        roi_groups: None (boxes white), True (the 4 groups of ``priors/roi_groups.json``,
            colour of the lowest group holding the point) or a dict group → indices.
        out: PNG path to write (default None: only return the figure).
        roi_size: box side (default: 5).
        max_flow: magnitude shown at full brightness (default: the map's maximum).
        title: figure title.
        arrows: draw a sparse quiver of (u, v) on the flow panel (default: True).

    Shapes:
        flow: (2|3, H, W); image: (H, W[, 3]); keypoints: (K, 2).

    Returns:
        the matplotlib Figure (closed after saving when ``out`` is given).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    u, v, eps = _split(flow)
    if eps is None:
        eps = _strain(u, v)
    H, W = u.shape
    panels = (["face"] if image is not None else []) + ["flow", "strain"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.8), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    mag = np.hypot(u, v)
    mmax = max_flow or float(mag.max())
    if image is not None:
        ax = axes["face"]
        img = np.asarray(image)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if img.dtype == np.uint8 else None)
        ax.set_title("aligned face")
    ax = axes["flow"]
    ax.imshow(flow_to_rgb(u, v, mmax))
    ax.set_title(f"flow (max |(u,v)| = {mmax:.2f} px)")
    if arrows:
        step = max(H // 16, 1)
        ys, xs = np.mgrid[step // 2:H:step, step // 2:W:step]
        ax.quiver(xs, ys, u[ys, xs], v[ys, xs], color="white", angles="xy", scale_units="xy",
                  scale=max(mmax / (0.9 * step), 1e-6), width=0.004)
    iax = ax.inset_axes([0.78, 0.78, 0.2, 0.2])
    _wheel(iax)
    ax = axes["strain"]
    im = ax.imshow(eps, cmap="magma")
    ax.set_title("optical strain ε")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    for name, ax in axes.items():
        ax.set_xticks([])
        ax.set_yticks([])
        if keypoints is not None and name in ("face", "strain"):
            _draw_rois(ax, keypoints, roi_size, roi_groups, (H, W))
            ax.set_xlim(-0.5, W - 0.5)
            ax.set_ylim(H - 0.5, -0.5)
    if keypoints is not None and roi_groups:
        from matplotlib.lines import Line2D

        names = {1: "g1 brows", 2: "g2 eyes", 3: "g3 nose/cheeks", 4: "g4 mouth"}
        handles = [Line2D([], [], marker="s", ls="", mfc="none", mec=c, label=names[g]) for g, c in GROUP_COLOURS.items()]
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05 if keypoints is not None and roi_groups else 0, 1, 1))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=120)
        plt.close(fig)
    return fig


def plot_keypoints(image, keypoints, groups: dict | None = None, out=None, *, numbers: bool = True,
                   kinds: list[str] | None = None, roi_size: int = 5, title: str | None = None):
    """The 65 keypoints on a face, plus one panel per ROI group.

    Args:
        image: face (H, W) or (H, W, 3).
        keypoints: (K, 2) (x, y).
        groups: group → keypoint indices (default None: only the keypoint panel).
        out: PNG path (default None).
        numbers: write each keypoint's index (default: True).
        kinds: per keypoint "dlib" or "midpoint" (midpoints drawn as stars; default: all dots).
        roi_size: box side drawn in the group panels (default: 5).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = np.asarray(image)
    kp = np.asarray(keypoints, dtype=float)
    n = 1 + (len(groups) if groups else 0)
    fig, axes = plt.subplots(1, n, figsize=(5.2 + 3.3 * (n - 1), 5.4),
                             gridspec_kw={"width_ratios": [1.6] + [1] * (n - 1)}, squeeze=False)
    axes = axes[0]
    kinds = kinds or ["dlib"] * len(kp)
    ax = axes[0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
    mid = np.array([k == "midpoint" for k in kinds])
    ax.scatter(kp[~mid, 0], kp[~mid, 1], s=14, c="#00e5ff", edgecolors="black", linewidths=0.4, label="dlib point kept")
    if mid.any():
        ax.scatter(kp[mid, 0], kp[mid, 1], s=70, marker="*", c="#ffdd00", edgecolors="black", linewidths=0.5,
                   label="added midpoint")
    if numbers:
        for i, (x, y) in enumerate(kp):
            ax.annotate(str(i), (x, y), xytext=(2, -2), textcoords="offset points", fontsize=5.5, color="white",
                        bbox=dict(boxstyle="square,pad=0.05", fc="black", alpha=0.45, lw=0))
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    ax.set_title(f"{len(kp)} keypoints" + (" (★ = added midpoint)" if mid.any() else ""))
    for ax, g in zip(axes[1:], sorted(groups or {})):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        col = GROUP_COLOURS.get(g, "red")
        idx = list(groups[g])
        others = [i for i in range(len(kp)) if i not in set(idx)]
        ax.scatter(kp[others, 0], kp[others, 1], s=5, c="white", alpha=0.5, linewidths=0)
        h = roi_size / 2
        for i in idx:
            ax.add_patch(Rectangle((kp[i, 0] - h, kp[i, 1] - h), roi_size, roi_size, fill=True, alpha=0.55,
                                   fc=col, ec="black", lw=0.4))
        ax.set_title(f"group {g}: {len(idx)} ROIs", color="black")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=130)
        plt.close(fig)
    return fig
