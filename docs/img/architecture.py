"""Draws docs/img/architecture.png: the FED-PsyAU data flow with tensor shapes.

    python docs/img/architecture.py
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parent / "architecture.png"

COLORS = {"in": "#e8eef7", "lrm": "#d6ecd2", "afr": "#fde9c9", "gat": "#f9d5cf", "dsi": "#e3d9f2", "out": "#eeeeee"}


def box(ax, x, y, w, h, title, shape, kind):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                fc=COLORS[kind], ec="#444444", lw=1.2))
    ax.text(x, y + 0.13, title, ha="center", va="center", fontsize=10.5, weight="bold")
    ax.text(x, y - 0.17, shape, ha="center", va="center", fontsize=9, family="monospace", color="#222222")


def arrow(ax, p, q, label=None):
    ax.add_patch(FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=13, lw=1.2, color="#333333"))
    if label:
        ax.text((p[0] + q[0]) / 2 + 0.08, (p[1] + q[1]) / 2, label, fontsize=8.5, color="#555555", va="center")


def main() -> Path:
    fig, ax = plt.subplots(figsize=(13, 8.2))
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.3, 8.3)
    ax.axis("off")
    W, H = 2.6, 0.7
    # main column (AU path)
    x = 2.2
    ys = [7.5, 6.5, 5.5, 4.5, 3.5, 2.5]
    box(ax, x, ys[0], W, H, "ROI patches Θ", "(B, 65, 3, 5, 5)", "in")
    box(ax, x, ys[1], W, H, "LFE (one call)", "(B·65, 3, 5, 5)", "lrm")
    box(ax, x, ys[2], W, H, "SSE (65 tokens)", "(B, 65, 75)", "lrm")
    box(ax, x, ys[3], W, H, "AFE × 4 groups", "GroupSE·3×3·1×1·L2", "afr")
    box(ax, x, ys[4], W, H, "F_AU", "(B, 12, 25)", "afr")
    for a, b in zip(ys[:-2], ys[1:-1]):
        arrow(ax, (x, a - H / 2), (x, b + H / 2))
    # GAT column
    gx = 6.6
    box(ax, gx - 1.45, 4.5, 2.4, H, "upper DPK-GAT", "AU 0–5: (B, 6, 25)", "gat")
    box(ax, gx + 1.45, 4.5, 2.4, H, "lower DPK-GAT", "AU 6–11: (B, 6, 25)", "gat")
    box(ax, gx, 3.4, W, H, "h_local (+res)", "(B, 12, 25)", "gat")
    box(ax, gx, 2.3, W + 0.4, H, "global DPK-GAT (+res)", "cross-region + self loops", "gat")
    box(ax, gx, 1.2, W, H, "h_global", "(B, 12, 25) → (B, 12, 5, 5)", "gat")
    arrow(ax, (x + W / 2, ys[4]), (gx - 1.45, 4.5 - H / 2))
    arrow(ax, (x + W / 2, ys[4]), (gx + 1.45, 4.5 - H / 2))
    arrow(ax, (gx - 1.45, 4.5 - H / 2), (gx - 0.4, 3.4 + H / 2))
    arrow(ax, (gx + 1.45, 4.5 - H / 2), (gx + 0.4, 3.4 + H / 2))
    arrow(ax, (gx, 3.4 - H / 2), (gx, 2.3 + H / 2))
    arrow(ax, (gx, 2.3 - H / 2), (gx, 1.2 + H / 2))
    ax.text(gx - 2.6, 5.2, "each block: DPKGATConv(25→64, 3 heads) ‖ ELU ‖ DPKGATConv(192→25, 1 head)\n"
            "α = (1−β)·softmax_{j∈N(i)} e_ij + β·D_ij ;  h = block(x) + x", fontsize=8, color="#555555")
    # AU heads
    box(ax, x, 1.3, W, H, "AFE AU head", "MLP 300→128→12", "out")
    arrow(ax, (x, ys[4] - H / 2), (x, 1.3 + H / 2))
    box(ax, gx - 2.6, 0.1, W - 0.4, H, "GAT AU head", "MLP 300→128→12", "out")
    arrow(ax, (gx - W / 2, 1.2), (gx - 2.6 + (W - 0.4) / 2, 0.1))
    # DSI
    dx = 10.6
    box(ax, dx, 7.5, W, H, "whole-face flow", "(B, 3, 28, 28)", "in")
    box(ax, dx, 5.9, W + 0.2, H, "flow stream", "Inc·pool·Inc·pool → 3136", "dsi")
    box(ax, dx, 3.4, W + 0.2, H, "AU stream", "Inc·Inc·pool → 576", "dsi")
    box(ax, dx + 0.1, 2.0, W + 0.6, H, "concat · dropout · FC", "(B, 3712) → (B, C)", "dsi")
    box(ax, dx, 0.8, W, H, "emotion logits", "(B, C)", "out")
    arrow(ax, (dx, 7.5 - H / 2), (dx, 5.9 + H / 2))
    arrow(ax, (gx + W / 2, 1.2), (dx - W / 2 - 0.1, 3.4))
    arrow(ax, (dx + 1.5, 5.9), (dx + 1.5, 2.0 + H / 2))
    ax.plot([dx + 1.4, dx + 1.5], [5.9, 5.9], color="#333333", lw=1.2)
    arrow(ax, (dx, 3.4 - H / 2), (dx, 2.0 + H / 2))
    arrow(ax, (dx, 2.0 - H / 2), (dx, 0.8 + H / 2))
    ax.text(0.3, 8.0, "FED-PsyAU data flow (B = batch, C = classes)", fontsize=13, weight="bold")
    legend = [("LRM (LFE+SSE)", "lrm"), ("AFE", "afr"), ("DPK-GAT", "gat"), ("DSI", "dsi")]
    for i, (name, kind) in enumerate(legend):
        ax.add_patch(FancyBboxPatch((7.2 + i * 1.5, 8.0), 0.25, 0.2, boxstyle="square,pad=0", fc=COLORS[kind], ec="#444"))
        ax.text(7.52 + i * 1.5, 8.1, name, fontsize=8, va="center")
    fig.tight_layout()
    tmp = OUT.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, OUT)
    return OUT


if __name__ == "__main__":
    print(main())
