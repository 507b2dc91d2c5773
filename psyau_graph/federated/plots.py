"""Plots of federated runs, in the spirit of the paper's Fig. 5/6 (Agg backend, PNG)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .results import summarize  # noqa: E402

_ORDER = ("local", "fedavg", "fedprox", "p-fedprox", "fedrep", "fedas", "ellp")
_STYLES = {"local": ("-", "o"), "fedavg": ("--", "s"), "fedprox": (":", "^"), "p-fedprox": ("-", "D"),
           "fedrep": ("-.", "v"), "fedas": ("--", "P"), "ellp": (":", "X")}
_COLORS = {"local": "#9e9e9e", "fedavg": "#4c72b0", "fedprox": "#55a868", "p-fedprox": "#dd8452",
           "fedrep": "#8172b3", "fedas": "#937860", "ellp": "#da8bc3"}  # one distinct colour each


def _strategies(records):
    present = {r["strategy"] for r in records}
    return [s for s in _ORDER if s in present] + sorted(present - set(_ORDER))


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_clients(records: list[dict], path) -> Path:
    """Grouped bars: final-round UF1 (left) and UAR (right) per client, one bar per strategy.

    Error bars are the std over repeats.
    """
    summary = summarize(records)
    strategies = _strategies(records)
    clients = sorted({c for s in summary.values() for c in s["clients"]})
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.6 * len(clients) + 3) * 2 / 1.4, 4.2),
                             sharey=True)
    width = 0.8 / max(len(strategies), 1)
    x = np.arange(len(clients))
    for ax, metric in zip(axes, ("uf1", "uar")):
        for k, s in enumerate(strategies):
            vals = [summary[s]["clients"].get(c, {}).get(metric, np.nan) for c in clients]
            errs = [summary[s]["clients"].get(c, {}).get(f"{metric}_std", 0.0) for c in clients]
            ax.bar(x + (k - (len(strategies) - 1) / 2) * width, vals, width, yerr=errs,
                   label=s, color=_COLORS.get(s), capsize=2)
        ax.set_xticks(x, [f"Client {c + 1}" if isinstance(c, int) else str(c) for c in clients])
        ax.set_title(f"{metric.upper()} per client (final round)")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("score on the client's test split")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, title="strategy", loc="lower center", ncol=len(strategies),
               bbox_to_anchor=(0.5, -0.1), fontsize=9)
    return _save(fig, path)


def plot_loss(records: list[dict], path) -> Path:
    """Training loss by round, one panel per client, one line per strategy (mean over repeats)."""
    strategies = _strategies(records)
    clients = sorted({r["client"] for r in records})
    cols = min(len(clients), 4)
    rows = int(np.ceil(len(clients) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, c in zip(axes.flat, clients):
        for s in strategies:
            rs = [r for r in records if r["strategy"] == s and r["client"] == c
                  and r.get("train_loss") is not None]
            rounds = sorted({r["round"] for r in rs})
            if not rounds:
                continue
            ys = [np.mean([r["train_loss"] for r in rs if r["round"] == t]) for t in rounds]
            ls, mk = _STYLES.get(s, ("-", "o"))
            ax.plot(rounds, ys, linestyle=ls, marker=mk, ms=4, label=s, color=_COLORS.get(s))
        ax.set_title(f"Client {c + 1}" if isinstance(c, int) else str(c))
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(clients):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Local training loss by communication round")
    fig.tight_layout()
    return _save(fig, path)
