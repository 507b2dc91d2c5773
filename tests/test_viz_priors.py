"""Prior / AU-graph / attention plots: each writes a readable PNG and returns its path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psyau_graph.graphs import au_graph
from psyau_graph.priors import extrinsic_prior, psych_adjacency
from psyau_graph.viz.priors import (
    FACE_POSITIONS, draw_au_graph, plot_attention, plot_prior, plot_prior_comparison,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, min_w=200, min_h=150):
    import matplotlib.image as mpimg

    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_w and h >= min_h
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert not list(path.parent.glob(".*.png"))  # temp file replaced
    return img


def test_plot_prior_12x12_and_6x6(tmp_path):
    p = plot_prior(extrinsic_prior("dfme"), title="DFME", out=tmp_path / "dfme.png",
                   adjacency=psych_adjacency("global"))
    assert p == tmp_path / "dfme.png"
    _check_png(p)
    _check_png(plot_prior(psych_adjacency("upper"), region="upper", out=tmp_path / "sub" / "up.png"))
    _check_png(plot_prior(torch.eye(6), labels=[9, 10, 12, 14, 15, 17], out=tmp_path / "t.png"))


def test_plot_prior_errors(tmp_path):
    with pytest.raises(ValueError, match="out"):
        plot_prior(np.eye(12))
    with pytest.raises(ValueError, match="square"):
        plot_prior(np.ones((3, 4)), out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="labels"):
        plot_prior(np.eye(12), labels=["a"], out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="region='upper'"):
        plot_prior(np.eye(12), region="upper", out=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_prior_comparison_default_and_custom(tmp_path):
    img = _check_png(plot_prior_comparison(out=tmp_path / "cmp.png"), min_w=900)
    assert img.shape[1] > 2 * img.shape[0]  # three panels side by side
    _check_png(plot_prior_comparison({"a": np.eye(6), "b": np.ones((6, 6)) / 6}, region="lower",
                                     out=tmp_path / "cmp6.png"))
    with pytest.raises(ValueError, match="same size"):
        plot_prior_comparison({"a": np.eye(6), "b": np.eye(12)}, out=tmp_path / "bad.png")


def test_plot_attention_from_dense_and_from_layer_output(tmp_path):
    g = au_graph("lower", "dfme")
    rng = np.random.default_rng(0)
    _check_png(plot_attention(rng.random((3, 6, 6)), g, out=tmp_path / "att.png"))
    alpha = torch.rand(g.edge_index.size(1), 2)
    _check_png(plot_attention((g.edge_index, alpha), g, out=tmp_path / "att2.png"))
    with pytest.raises(ValueError, match="same shape"):
        plot_attention(np.eye(12), g, out=tmp_path / "bad.png")


def test_draw_au_graph_regions(tmp_path):
    for region in ("upper", "lower", "global"):
        _check_png(draw_au_graph(au_graph(region, "dfme"), out=tmp_path / f"{region}.png"))
    _check_png(draw_au_graph(au_graph("global", prior=None), out=tmp_path / "plain.png"))


def test_face_positions_put_upper_aus_above_lower_aus():
    from psyau_graph.au import AU_REGION

    upper_y = [FACE_POSITIONS[a][1] for a, r in AU_REGION.items() if r == "upper"]
    lower_y = [FACE_POSITIONS[a][1] for a, r in AU_REGION.items() if r == "lower"]
    assert min(upper_y) > max(lower_y)
    assert len(set(FACE_POSITIONS.values())) == 12  # no two nodes on the same spot
