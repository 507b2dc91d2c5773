"""Plots of AU priors, AU graphs and learned attention (matplotlib, Agg backend, PNG).

Every function writes one PNG atomically and returns its path.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..au import AU_NAMES, AU_REGION, AUS, NUM_AUS

__all__ = ["plot_prior", "draw_au_graph", "plot_attention", "plot_prior_comparison", "FACE_POSITIONS"]

#: where each AU node is drawn: (x, y) on a schematic face (x right, y up), roughly
#: at its muscle: brows on top, eyes/cheeks below, nose, mouth, chin at the bottom.
FACE_POSITIONS: dict[int, tuple[float, float]] = {
    2: (-0.95, 1.05),   # outer brow (frontalis, lateral)
    1: (-0.3, 1.2),     # inner brow (frontalis, medial)
    4: (0.4, 1.1),      # brow lowerer (corrugator, glabella)
    5: (-0.6, 0.6),     # upper lid raiser
    7: (0.35, 0.65),    # lid tightener (orbicularis oculi, inner)
    6: (1.05, 0.5),     # cheek raiser (orbicularis oculi, outer)
    9: (0.0, -0.05),    # nose wrinkler
    10: (-0.55, -0.35),  # upper lip raiser
    12: (-1.05, -0.65),  # lip corner puller (zygomaticus major)
    14: (0.95, -0.6),   # dimpler (buccinator)
    15: (-0.5, -1.05),  # lip corner depressor
    17: (0.35, -1.15),  # chin raiser (mentalis)
}
_REGION_LINE = 0.22  # y of the dashed line between upper and lower face
_REGION_COLOURS = {"upper": "#4C72B0", "lower": "#DD8452", "other": "#8C8C8C"}



def _chmod_like_open(path) -> None:
    """Give a ``mkstemp`` file (0600) the permissions ``open()`` would have (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out) -> Path:
    if out is None:
        raise ValueError("out: a PNG file path is required")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=fig.dpi, bbox_inches="tight")
        _chmod_like_open(tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _pyplot().close(fig)
    return out


def _as_matrix(m, name: str) -> np.ndarray:
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected a square matrix, got shape {a.shape}")
    return a


def _labels_for(n: int, labels, region: str | None) -> list[str]:
    if labels is not None:
        labels = [str(x) if not isinstance(x, (int, np.integer)) else f"AU{int(x)}" for x in labels]
        if len(labels) != n:
            raise ValueError(f"labels: expected {n} labels, got {len(labels)}")
        return labels
    if region is not None:
        from ..au import region_aus

        aus = region_aus(region)
        if len(aus) != n:
            raise ValueError(f"region={region!r} has {len(aus)} AUs but the matrix is {n}×{n}")
        return [f"AU{a}" for a in aus]
    if n == NUM_AUS:
        return [f"AU{a}" for a in AUS]
    return [str(k) for k in range(n)]


def _heatmap(ax, m, labels, *, vmin=0.0, vmax=None, cmap="viridis", annotate=True, adjacency=None):
    n = m.shape[0]
    vmax = float(m.max()) if vmax is None else vmax
    vmax = vmax if vmax > vmin else vmin + 1.0
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("j (source: attended AU)", fontsize=8)
    ax.set_ylabel("i (target: attending AU)", fontsize=8)
    for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        for t in tick_labels:
            au = int(t.get_text()[2:]) if t.get_text().startswith("AU") and t.get_text()[2:].isdigit() else None
            t.set_color(_REGION_COLOURS.get(AU_REGION.get(au, "other"), "black"))
    if annotate:
        integer = bool(np.all(m == np.round(m)))
        size = 6.5 if n > 6 else 8.5
        for i in range(n):
            for j in range(n):
                v = m[i, j]
                rgba = im.cmap(im.norm(v))
                light = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55
                text = "0" if v == 0 else (f"{v:.0f}" if integer or abs(v) >= 10 else f"{v:.2f}")
                style = "italic" if adjacency is not None and not adjacency[i, j] else "normal"
                ax.text(j, i, text, ha="center", va="center", fontsize=size, style=style,
                        color="black" if light else "white")
    if adjacency is not None:
        for i in range(n):
            for j in range(n):
                if adjacency[i, j]:
                    ax.add_patch(_pyplot().Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2, ec="red"))
    if labels == [f"AU{a}" for a in AUS]:  # mark the upper / lower blocks
        for pos in (5.5,):
            ax.axhline(pos, color="white", lw=2.5)
            ax.axvline(pos, color="white", lw=2.5)
        ax.text(2.5, -0.7, "upper face", ha="center", va="bottom", fontsize=8, color=_REGION_COLOURS["upper"])
        ax.text(8.5, -0.7, "lower face", ha="center", va="bottom", fontsize=8, color=_REGION_COLOURS["lower"])
    return im


def plot_prior(matrix, labels: Sequence | None = None, title: str | None = None, out=None, *,
               region: str | None = None, adjacency=None, cmap: str = "viridis",
               vmax: float | None = None) -> Path:
    """Annotated heatmap of a prior or adjacency matrix; upper/lower blocks marked for 12×12.

    Rows are targets i, columns sources j (``M[i, j]``: how much AU i attends to AU j).

    Args:
        matrix: (N, N) array or tensor.
        labels: N axis labels (AU numbers or strings; default: AU labels from
            ``region`` or, for 12×12, the 12 AUs).
        title: figure title (default: none).
        out: PNG path (required).
        region: "upper"/"lower"/"global" to label a 6×6 or 12×12 matrix.
        adjacency: optional (N, N) 0/1; its edges are outlined in red and values on
            non-edges are written in italics.
        cmap: matplotlib colour map (default: "viridis").
        vmax: top of the colour scale (default: the matrix maximum).

    Returns:
        Path of the PNG.
    """
    m = _as_matrix(matrix, "matrix")
    labs = _labels_for(m.shape[0], labels, region)
    adj = None if adjacency is None else _as_matrix(adjacency, "adjacency") != 0
    plt = _pyplot()
    size = 6.2 if m.shape[0] > 6 else 4.2
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    im = _heatmap(ax, m, labs, cmap=cmap, vmax=vmax, adjacency=adj)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=10, pad=22 if m.shape[0] == NUM_AUS else 6)
    return _save(fig, out)


def plot_prior_comparison(priors: Mapping[str, object] | None = None, out=None, *, region: str = "global",
                          title: str | None = None) -> Path:
    """Several priors side by side on one colour scale (default: DFME, CASME II, SAMM).

    Args:
        priors: name -> (N, N) matrix (default: the shipped DFME, CASME II and SAMM
            priors of ``region``).
        out: PNG path (required).
        region: "global", "upper" or "lower" (default: "global").
        title: overall title.
    """
    if priors is None:
        from ..priors import extrinsic_prior

        priors = {"DFME": extrinsic_prior("dfme", region), "CASME II": extrinsic_prior("casme2", region),
                  "SAMM": extrinsic_prior("samm", region)}
    mats = {k: _as_matrix(v, f"priors[{k!r}]") for k, v in priors.items()}
    if not mats:
        raise ValueError("priors: nothing to plot")
    n = next(iter(mats.values())).shape[0]
    if any(m.shape[0] != n for m in mats.values()):
        raise ValueError(f"priors: all matrices must have the same size, got {[m.shape for m in mats.values()]}")
    labs = _labels_for(n, None, region if n != NUM_AUS or region == "global" else None)
    vmax = max(float(m.max()) for m in mats.values())
    plt = _pyplot()
    size = 5.6 if n > 6 else 3.8
    fig, axes = plt.subplots(1, len(mats), figsize=(size * len(mats) + 0.8, size), dpi=100, squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        im = _heatmap(ax, m, labs, vmax=vmax)
        ax.set_title(name, fontsize=11, pad=22 if n == NUM_AUS else 6)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.015, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, out)


def plot_attention(learned, prior, out=None, *, labels: Sequence | None = None, region: str | None = None,
                   title: str | None = None) -> Path:
    """Learned attention next to the prior, on the same colour scale.

    Args:
        learned: (N, N) dense attention (row i: weights node i gives its sources),
            (H, N, N) (heads are averaged), or the ``(edge_index, alpha)`` pair returned
            by ``DPKGATConv(..., return_attention_weights=True)`` (alpha (E,) or (E, H)).
        prior: (N, N) matrix, or an AU-graph ``Data`` (its ``edge_prior`` is used and
            its AU numbers label the axes).
        out: PNG path (required).
        labels / region: axis labels, as in :func:`plot_prior`.
        title: overall title.
    """
    from ..graphs import edge_values_to_dense

    if hasattr(prior, "edge_index") and hasattr(prior, "num_nodes"):
        if labels is None and "au" in prior:
            labels = prior.au.tolist()
        prior = edge_values_to_dense(prior.edge_index, prior.edge_prior, int(prior.num_nodes))
    p = _as_matrix(prior, "prior")
    n = p.shape[0]
    if isinstance(learned, tuple):
        edge_index, alpha = learned
        learned = edge_values_to_dense(edge_index, alpha.detach(), n)
    if hasattr(learned, "detach"):
        learned = learned.detach().cpu().numpy()
    learned = np.asarray(learned, dtype=np.float64)
    heads = ""
    if learned.ndim == 3:
        heads = f" (mean of {learned.shape[0]} heads)"
        learned = learned.mean(axis=0)
    l_mat = _as_matrix(learned, "learned")
    if l_mat.shape != p.shape:
        raise ValueError(f"learned {l_mat.shape} and prior {p.shape} must have the same shape")
    labs = _labels_for(n, labels, region)
    vmax = max(float(l_mat.max()), float(p.max()))
    plt = _pyplot()
    size = 5.6 if n > 6 else 3.8
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 0.8, size), dpi=100)
    _heatmap(axes[0], l_mat, labs, vmax=vmax)
    axes[0].set_title("learned attention" + heads, fontsize=10, pad=22 if n == NUM_AUS else 6)
    im = _heatmap(axes[1], p, labs, vmax=vmax)
    axes[1].set_title("prior", fontsize=10, pad=22 if n == NUM_AUS else 6)
    fig.colorbar(im, ax=axes.tolist(), fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, out)


def draw_au_graph(data, out=None, *, title: str | None = None, show_names: bool = True) -> Path:
    """Draw an AU graph on a schematic face: upper AUs on top, lower below.

    Nodes sit roughly over their muscles (:data:`FACE_POSITIONS`) and are coloured by
    region; each directed edge j -> i is an arrow into the attending node i, its
    width proportional to ``edge_prior`` (uniform when the graph has none). Pairs
    with edges both ways are drawn as two curved arrows; self loops as small loops.

    Args:
        data: an AU graph (``psyau_graph.graphs.au_graph``) or a ``networkx.DiGraph``
            made by ``to_networkx``.
        out: PNG path (required).
        title: figure title (default: region and edge count).
        show_names: write the FACS name under each node.
    """
    import networkx as nx
    from matplotlib.patches import Ellipse

    from ..graphs import to_networkx

    g = data if isinstance(data, nx.Graph) else to_networkx(data)
    aus = {v: attrs.get("au") for v, attrs in g.nodes(data=True)}
    pos = {}
    for k, (v, au) in enumerate(aus.items()):
        pos[v] = FACE_POSITIONS.get(au, (1.4, 1.0 - 0.3 * k))
    plt = _pyplot()
    ys = [y for _, y in pos.values()] or [0.0]
    height = 7.0 * (min(max(ys) + 0.45, 1.75) - max(min(ys) - 0.45, -1.8)) / 3.55
    fig, ax = plt.subplots(figsize=(6.4, max(height, 3.2)), dpi=100)
    ax.add_patch(Ellipse((0, 0), 3.0, 3.3, fill=False, lw=1.5, ec="#BBBBBB"))
    ax.axhline(_REGION_LINE, color="#BBBBBB", lw=1, ls="--", xmin=0.05, xmax=0.95)
    ax.text(-1.6, _REGION_LINE + 0.04, "upper face", fontsize=9, color=_REGION_COLOURS["upper"], va="bottom")
    ax.text(-1.6, _REGION_LINE - 0.04, "lower face", fontsize=9, color=_REGION_COLOURS["lower"], va="top")
    priors = [attrs.get("prior") for _, _, attrs in g.edges(data=True)]
    have_prior = bool(priors) and all(p is not None for p in priors)
    colours = [_REGION_COLOURS.get(g.nodes[v].get("region", "other"), "#8C8C8C") for v in g.nodes]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=900, node_color=colours, edgecolors="black", linewidths=1)
    nx.draw_networkx_labels(g, pos, ax=ax, labels={v: f"AU{aus[v]}" for v in g.nodes}, font_size=9,
                            font_color="white", font_weight="bold")
    if show_names:
        for v in g.nodes:
            x, y = pos[v]
            ax.text(x, y - 0.16, AU_NAMES.get(aus[v], ""), ha="center", va="top", fontsize=7, color="#222222",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.75), zorder=5)
    for j, i, attrs in g.edges(data=True):
        w = attrs.get("prior", 1.0) if have_prior else 1.0
        width = 0.6 + 5.0 * float(w) if have_prior else 1.5
        alpha = 0.35 + 0.65 * float(w) if have_prior else 0.8
        if j == i:
            x, y = pos[i]
            ax.add_patch(Ellipse((x, y + 0.19), 0.14, 0.17, fill=False, lw=0.5 + 2.5 * float(w) if have_prior
                                 else 1.2, ec="#444444", alpha=alpha))
            continue
        rad = 0.18 if g.has_edge(i, j) else 0.0
        nx.draw_networkx_edges(g, pos, edgelist=[(j, i)], ax=ax, width=width, alpha=alpha, edge_color="#444444",
                               arrows=True, arrowstyle="-|>", arrowsize=14, node_size=900,
                               connectionstyle=f"arc3,rad={rad}")
    n_edges = g.number_of_edges()
    if title is None:
        region = getattr(data, "region", None) if not isinstance(data, nx.Graph) else None
        title = f"AU graph{f' ({region})' if region else ''}: {g.number_of_nodes()} nodes, {n_edges} edges"
    note = "arrow j → i: node i attends to j" + ("; width ∝ prior" if have_prior else "")
    ax.set_title(title + "\n" + note, fontsize=10)
    ys = [y for _, y in pos.values()] or [0.0]
    ax.set_xlim(-1.75, 1.75)
    ax.set_ylim(max(min(ys) - 0.45, -1.8), min(max(ys) + 0.45, 1.75))
    ax.set_aspect("equal")
    ax.axis("off")
    return _save(fig, out)
