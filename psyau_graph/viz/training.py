"""Training plots: confusion matrices, loss/metric curves, per-fold bars, attention.

All functions draw with matplotlib's Agg backend, write a PNG atomically and return
its path.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_confusion", "plot_curves", "plot_fold_bars", "plot_attention_matrices", "save_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG atomically (temp file + ``os.replace``) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        _plt().close(fig)
    return path


def plot_confusion(cm, class_names: Sequence[str], path, *, title: str = "Confusion matrix") -> Path:
    """Counts (left) and row-normalised recall (right) of a confusion matrix.

    Shapes:
        cm: (C, C) counts, rows = true class, columns = predicted class.
    """
    plt = _plt()
    cm = np.asarray(cm, dtype=np.int64)
    c = cm.shape[0]
    if cm.shape != (c, c) or len(class_names) != c:
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.9 * c + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), layout="constrained")
    for ax, mat, sub, fmt, vmax in ((axes[0], cm, "counts", "d", max(1, cm.max())),
                                    (axes[1], norm, "row-normalised (recall)", ".2f", 1.0)):
        im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=vmax)
        ax.set_xticks(range(c), class_names, rotation=45, ha="right")
        ax.set_yticks(range(c), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(sub)
        for i in range(c):
            for j in range(c):
                v = mat[i, j]
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=9,
                        color="white" if v > 0.6 * vmax else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(f"{title}  (n = {int(cm.sum())})")
    return save_figure(fig, path)


def plot_curves(histories: Sequence[Sequence[Mapping]], path, *, title: str = "Training curves") -> Path:
    """Per-epoch training loss (every fold, thin) and their mean (thick); validation
    UF1/UAR when present; β and learning rate.

    Args:
        histories: one list of per-epoch dicts (``FitResult.history``) per fold.
    """
    plt = _plt()
    histories = [h for h in histories if h]
    if not histories:
        raise ValueError("no training history to plot")
    has_val = any("val_uf1" in r for h in histories for r in h)
    ncol = 3 if has_val else 2
    fig, axes = plt.subplots(1, ncol, figsize=(5 * ncol, 3.8))
    ax = axes[0]
    for k, h in enumerate(histories):
        ax.plot([r["epoch"] for r in h], [r["loss"] for r in h], lw=0.8, alpha=0.4, color="tab:blue",
                label="per fold" if k == 0 else None)
        if "val_loss" in h[0]:
            ax.plot([r["epoch"] for r in h], [r["val_loss"] for r in h], lw=0.8, alpha=0.4, color="tab:orange",
                    label="validation (per fold)" if k == 0 else None)
    n = min(len(h) for h in histories)
    ax.plot(range(1, n + 1), np.mean([[r["loss"] for r in h[:n]] for h in histories], 0), lw=2.2,
            color="navy", label="mean train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.legend(fontsize=8)
    if has_val:
        ax = axes[1]
        for key, color in (("val_uf1", "tab:green"), ("val_uar", "tab:red")):
            vals = [[r.get(key, np.nan) for r in h[:n]] for h in histories]
            vals = np.array([[np.nan if v is None else v for v in row] for row in vals], dtype=float)
            ax.plot(range(1, n + 1), np.nanmean(vals, 0), lw=2, color=color, label=f"mean {key[4:].upper()}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch")
        ax.set_title("validation metrics")
        ax.legend(fontsize=8)
    ax = axes[-1]
    h = histories[0]
    ax.plot([r["epoch"] for r in h], [r["lr"] for r in h], color="tab:purple", label="learning rate")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate", color="tab:purple")
    ax.set_ylim(0, 1.15 * max(r["lr"] for r in h))
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%.1e"))
    betas = [r.get("beta") for r in h]
    if any(b is not None for b in betas):
        ax2 = ax.twinx()
        ax2.plot([r["epoch"] for r in h], [np.nan if b is None else b for b in betas], color="tab:gray",
                 ls="--", label="β")
        ax2.set_ylabel("β (prior weight)", color="tab:gray")
        ax2.set_ylim(0, max(0.05, max(b for b in betas if b is not None) * 1.2))
    ax.set_title("schedules (fold 1): lr solid, β dashed")
    from matplotlib.ticker import MaxNLocator

    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_fold_bars(fold_metrics: Sequence[Mapping], path, *, pooled: Mapping | None = None,
                   title: str = "Per-fold scores") -> Path:
    """UF1 and UAR of every fold as grouped bars; pooled values as horizontal lines.

    Args:
        fold_metrics: one dict per fold with ``name`` (or index), ``uf1``, ``uar``, ``n_test``.
        pooled: ``{"uf1": .., "uar": ..}`` of the pooled predictions (default: None).
    """
    plt = _plt()
    k = len(fold_metrics)
    if k == 0:
        raise ValueError("no folds to plot")
    names = [str(f.get("name", i + 1)) for i, f in enumerate(fold_metrics)]
    x = np.arange(k)
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * k + 2.5), 3.8))
    for off, key, color in ((-width / 2, "uf1", "tab:blue"), (width / 2, "uar", "tab:orange")):
        vals = [np.nan if f.get(key) is None else f[key] for f in fold_metrics]
        ax.bar(x + off, vals, width, color=color, label=key.upper())
        if pooled is not None and pooled.get(key) is not None:
            ax.axhline(pooled[key], color=color, ls="--", lw=1.2, label=f"pooled {key.upper()} {pooled[key]:.3f}")
    ax.set_xticks(x, names, rotation=60 if k > 8 else 0, ha="right" if k > 8 else "center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("test fold")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22 if k <= 8 else -0.35))
    fig.tight_layout()
    return save_figure(fig, path)


def plot_attention_matrices(learned: Mapping[str, np.ndarray], path, *, priors: Mapping[str, np.ndarray] | None = None,
                            labels: Mapping[str, Sequence[str]] | None = None,
                            title: str = "Learned attention vs prior") -> Path:
    """One column per graph: the learned attention (top) and its prior (bottom).

    Args:
        learned: graph name → (N, N) mean attention, entry [i, j] = weight of j in i's update.
        priors: graph name → (N, N) prior on the same nodes (default: None).
        labels: graph name → N node labels (default: indices).
    """
    plt = _plt()
    names = list(learned)
    if not names:
        raise ValueError("no attention matrices to plot")
    rows = 2 if priors else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(4.2 * len(names), 3.9 * rows), squeeze=False)
    for c, name in enumerate(names):
        mats = [("learned", np.asarray(learned[name], dtype=float))]
        if priors:
            mats.append(("prior", None if priors.get(name) is None else np.asarray(priors[name], dtype=float)))
        vmax = max(1e-6, max(float(np.nanmax(m)) for _, m in mats if m is not None))
        for r, (kind, mat) in enumerate(mats):
            ax = axes[r, c]
            if mat is None:
                ax.axis("off")
                ax.set_title(f"{name}: no prior")
                continue
            im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=vmax)
            lab = list(labels[name]) if labels and name in labels else [str(i) for i in range(mat.shape[0])]
            ax.set_xticks(range(mat.shape[1]), lab[: mat.shape[1]], rotation=90, fontsize=7)
            ax.set_yticks(range(mat.shape[0]), lab[: mat.shape[0]], fontsize=7)
            ax.set_xlabel("source j")
            ax.set_ylabel("target i")
            ax.set_title(f"{name}: {kind}", fontsize=10)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
