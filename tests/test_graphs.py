"""AU graphs as PyG Data: direction convention, edge priors, batching, networkx round trip."""
from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.utils import scatter

from psyau_graph.au import AUS
from psyau_graph.graphs import (
    adjacency_to_edge_index, au_graph, au_graph_batch, edge_values_to_dense, from_networkx, to_networkx,
)
from psyau_graph.priors import extrinsic_prior, psych_adjacency, restrict_prior


def test_direction_convention_on_a_hand_made_adjacency():
    a = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0]])  # node 0 attends to 1; node 2 attends to 0
    ei = adjacency_to_edge_index(a)
    assert ei.tolist() == [[0, 1, 1, 0], [0, 0, 1, 2]]  # columns (j, i), ordered by target
    assert ei.dtype == torch.long


@pytest.mark.parametrize("region, nodes", [("upper", list(range(6))), ("lower", list(range(6, 12))),
                                           ("global", list(range(12)))])
def test_graph_matches_adjacency_and_registry(region, nodes):
    g = au_graph(region)
    a = psych_adjacency(region)
    assert g.num_nodes == len(nodes)
    assert g.au_idx.tolist() == nodes and g.au.tolist() == [AUS[k] for k in nodes]
    assert g.edge_index.dtype == torch.long and g.edge_index.shape == (2, int(a.sum()))
    src, tgt = g.edge_index
    assert np.all(a[tgt.numpy(), src.numpy()] == 1)  # every edge j -> i has A[i, j] = 1
    assert g.edge_prior.dtype == torch.float32 and g.edge_prior.shape == (g.edge_index.size(1),)


def test_global_graph_only_cross_region_edges_plus_self_loops():
    g = au_graph("global")
    src, tgt = g.edge_index
    same_region = (src < 6) == (tgt < 6)
    assert torch.all(src[same_region] == tgt[same_region])  # intra-region: only self loops
    loops = src[src == tgt]
    assert sorted(loops.tolist()) == list(range(12))
    pairs = set(zip(src.tolist(), tgt.tolist()))
    assert (1, 6) in pairs and (6, 1) not in pairs  # AU2 -> AU9 message (AU9 attends AU2), not back


def test_edge_prior_is_the_prior_renormalised_over_incoming_edges():
    for region in ("upper", "lower", "global"):
        g = au_graph(region, prior="dfme")
        sums = scatter(g.edge_prior, g.edge_index[1], dim=0, dim_size=g.num_nodes, reduce="sum")
        assert torch.allclose(sums, torch.ones(g.num_nodes))
    # by hand for node AU5 (idx 3) of the upper graph: neighbours AU1, AU2, AU5
    d = extrinsic_prior("dfme", "upper")
    g = au_graph("upper", prior="dfme")
    into3 = g.edge_index[1] == 3
    assert g.edge_index[0, into3].tolist() == [0, 1, 3]
    expected = d[3, [0, 1, 3]] / d[3, [0, 1, 3]].sum()
    assert np.allclose(g.edge_prior[into3].numpy(), expected, atol=1e-6)
    assert np.isclose(g.prior_kept[3].item(), d[3, [0, 1, 3]].sum() / d[3].sum(), atol=1e-6)


def test_prior_variants():
    none = au_graph("upper", prior=None)
    assert "edge_prior" not in none and none.edge_index.size(1) == 18
    uni = au_graph("lower", prior="uniform")
    deg = scatter(torch.ones(uni.edge_index.size(1)), uni.edge_index[1], dim=0, dim_size=6, reduce="sum")
    assert torch.allclose(uni.edge_prior, 1.0 / deg[uni.edge_index[1]])
    full = extrinsic_prior("samm")
    from_12 = au_graph("upper", prior=full)
    from_6 = au_graph("upper", prior=restrict_prior(full, "upper"))
    assert torch.allclose(from_12.edge_prior, from_6.edge_prior)
    assert torch.allclose(au_graph("upper", prior=torch.tensor(full)).edge_prior, from_12.edge_prior)
    assert not torch.allclose(au_graph("global", "casme2").edge_prior, au_graph("global", "dfme").edge_prior)


def test_bad_arguments():
    with pytest.raises(ValueError, match="region"):
        au_graph("face")
    with pytest.raises(ValueError, match="0 or 1"):
        au_graph("upper", adjacency=np.full((6, 6), 0.5))
    with pytest.raises(ValueError, match="6×6"):
        au_graph("upper", adjacency=np.ones((5, 5)))
    with pytest.raises(ValueError, match="does not fit"):
        au_graph("global", prior=np.ones((6, 6)))
    with pytest.raises(ValueError, match="outside the adjacency"):
        au_graph("global", prior="dfme", on_outside="raise")
    with pytest.raises(ValueError, match="batch_size"):
        au_graph_batch("upper", 0)


def test_custom_adjacency_and_uniform_fallback():
    a = np.eye(6)
    a[0, 1] = 1
    d = np.eye(6)  # row 0 keeps mass, row 1 (self loop only) too; no row is empty
    g = au_graph("upper", prior=d, adjacency=a)
    assert g.edge_index.tolist() == [[0, 1, 1, 2, 3, 4, 5], [0, 0, 1, 2, 3, 4, 5]]
    assert g.edge_prior.tolist() == [1, 0, 1, 1, 1, 1, 1]
    d2 = np.zeros((6, 6))
    d2[1:, 1:] = np.eye(5)  # row 0 has no mass at all
    with pytest.warns(RuntimeWarning, match="uniform"):
        g2 = au_graph("upper", prior=d2, adjacency=a)
    assert g2.edge_prior[:2].tolist() == [0.5, 0.5]


def test_batch_offsets():
    b = au_graph_batch("upper", batch_size=3, prior="dfme")
    g = au_graph("upper", prior="dfme")
    e, n = g.edge_index.size(1), g.num_nodes
    assert b.num_graphs == 3 and b.num_nodes == 18 and b.edge_index.shape == (2, 3 * e)
    for k in range(3):
        assert torch.equal(b.edge_index[:, k * e:(k + 1) * e], g.edge_index + k * n)
        assert torch.equal(b.edge_prior[k * e:(k + 1) * e], g.edge_prior)
    assert b.batch.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert b.au.tolist() == g.au.tolist() * 3 and b.ptr.tolist() == [0, 6, 12, 18]
    first = b.get_example(1)
    assert torch.equal(first.edge_index, g.edge_index)


def test_networkx_round_trip_preserves_prior():
    for region in ("upper", "lower", "global"):
        g = au_graph(region, prior="casme2")
        nxg = to_networkx(g)
        assert isinstance(nxg, nx.DiGraph) and nxg.number_of_edges() == g.edge_index.size(1)
        j, i = g.edge_index[:, 5].tolist()
        assert nxg.has_edge(j, i) and nxg.edges[j, i]["prior"] == pytest.approx(g.edge_prior[5].item())
        assert nxg.nodes[0]["label"] == f"AU{g.au[0].item()}"
        back = from_networkx(nxg)
        assert torch.equal(back.edge_index, g.edge_index)
        assert torch.allclose(back.edge_prior, g.edge_prior)
        assert torch.equal(back.au, g.au) and torch.equal(back.au_idx, g.au_idx) and back.num_nodes == g.num_nodes


def test_from_networkx_plain_graphs():
    und = nx.Graph([(0, 1)])
    d = from_networkx(und)
    assert d.edge_index.tolist() == [[1, 0], [0, 1]] and "edge_prior" not in d
    mixed = nx.DiGraph()
    mixed.add_edge(0, 1, prior=0.5)
    mixed.add_edge(1, 0)
    with pytest.raises(ValueError, match="some edges"):
        from_networkx(mixed)


def test_edge_values_to_dense_inverts_the_convention():
    g = au_graph("global", "dfme")
    dense = edge_values_to_dense(g.edge_index, g.edge_prior, 12)
    a = psych_adjacency("global")
    assert torch.all(dense[torch.tensor(a) == 0] == 0)
    assert torch.allclose(dense.sum(dim=1), torch.ones(12))
    multi = edge_values_to_dense(g.edge_index, torch.stack([g.edge_prior, 2 * g.edge_prior], 1), 12)
    assert multi.shape == (2, 12, 12) and torch.allclose(multi[1], 2 * dense)
    with pytest.raises(ValueError, match="one per edge"):
        edge_values_to_dense(g.edge_index, g.edge_prior[:-1], 12)


def test_graphs_feed_dpkgatconv():
    from psyau_graph.nn import dpk_gat_conv as nn_mod

    torch.manual_seed(0)
    b = au_graph_batch("global", batch_size=4, prior="dfme")
    conv = nn_mod.DPKGATConv(25, 8, heads=3, beta=1.0, add_self_loops=False)  # the graph as given
    x = torch.randn(b.num_nodes, 25)
    out, (ei, alpha) = conv(x, b.edge_index, b.edge_prior, return_attention_weights=True)
    assert out.shape == (48, 24)
    # with beta = 1 the attention is the prior itself
    assert torch.allclose(alpha, b.edge_prior[:, None].expand(-1, 3), atol=1e-6)
