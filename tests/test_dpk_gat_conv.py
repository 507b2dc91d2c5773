"""DPKGATConv: hand-computed attention, GATConv equivalence, sparse/dense/batched paths, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv
from torch_geometric.utils import scatter

from psyau_graph.nn import DPKGATConv

MODES = ("paper", "authors")


def _graph(seed: int = 0, num_nodes: int = 7, num_edges: int = 18, zero_mass_target: bool = True):
    """Random directed graph without duplicate edges or self loops, a prior, and one zero-mass target."""
    g = torch.Generator().manual_seed(seed)
    pairs = set()
    while len(pairs) < num_edges:
        j, i = torch.randint(0, num_nodes, (2,), generator=g).tolist()
        if i != j:
            pairs.add((j, i))
    edge_index = torch.tensor(sorted(pairs)).t().contiguous()
    prior = torch.rand(edge_index.size(1), generator=g) + 0.05
    if zero_mass_target:
        target = int(edge_index[1, 0])
        prior[edge_index[1] == target] = 0.0
    x = torch.randn(num_nodes, 5, generator=g)
    return x, edge_index, prior


def _dense_reference(conv: DPKGATConv, x, edge_index, prior, beta):
    """The layer written directly from the formula with dense N x N matrices (no self loops added)."""
    N, H, C = x.size(0), conv.heads, conv.out_channels
    A = torch.zeros(N, N, dtype=torch.bool)
    A[edge_index[1], edge_index[0]] = True  # A[i, j]: edge j -> i
    D = torch.zeros(N, N, dtype=x.dtype)
    if prior is not None:
        D[edge_index[1], edge_index[0]] = prior.to(x.dtype)
    f = (x @ conv.lin.weight.t()).view(N, H, C)
    out = torch.zeros(N, H, C, dtype=x.dtype)
    alpha_all = torch.zeros(H, N, N, dtype=x.dtype)
    for h in range(H):
        s_src = f[:, h] @ conv.att_src[0, h]
        s_dst = f[:, h] @ conv.att_dst[0, h]
        for i in range(N):
            nb = A[i].nonzero().flatten()
            if nb.numel() == 0:
                continue
            e = F.leaky_relu(s_dst[i] + s_src[nb], conv.negative_slope)
            soft = torch.softmax(e, dim=0)
            alpha = soft
            if prior is not None:
                d = D[i, nb]
                if conv.prior_mode == "authors":
                    alpha = (1 - beta) * soft + beta * torch.softmax(d, dim=0)
                    alpha = alpha / alpha.sum()
                elif d.sum() > 0:
                    alpha = (1 - beta) * soft + beta * d / d.sum()
            alpha_all[h, i, nb] = alpha
            out[i, h] = (alpha.unsqueeze(-1) * f[nb, h]).sum(0)
    out = out.reshape(N, H * C) if conv.concat else out.mean(1)
    if conv.res is not None:
        out = out + x @ conv.res.weight.t()
    if conv.bias is not None:
        out = out + conv.bias
    return out, alpha_all


# --------------------------------------------------------------------------- hand-computed


def _identity_conv(**kw) -> DPKGATConv:
    conv = DPKGATConv(2, 2, heads=1, bias=False, **kw, add_self_loops=False)
    with torch.no_grad():
        conv.lin.weight.copy_(torch.eye(2))
        conv.att_src.zero_()
        conv.att_dst.zero_()
    return conv


def test_hand_computed_uniform_softmax_paper_mode():
    # node 0 receives from 1 and 2; zero attention vectors -> softmax = (1/2, 1/2)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    prior = torch.tensor([1.0, 3.0])  # normalised: 1/4, 3/4
    conv = _identity_conv(beta=0.4)
    out, (ei, alpha) = conv(x, edge_index, prior, return_attention_weights=True)
    expected_alpha = torch.tensor([0.6 * 0.5 + 0.4 * 0.25, 0.6 * 0.5 + 0.4 * 0.75])  # (0.4, 0.6)
    torch.testing.assert_close(alpha[:, 0], expected_alpha)
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.6], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(ei, edge_index)


def test_hand_computed_authors_mode():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    prior = torch.tensor([1.0, 3.0])  # softmax: 1/(1+e^2), e^2/(1+e^2)
    conv = _identity_conv(beta=0.4, prior_mode="authors")
    _, (_, alpha) = conv(x, edge_index, prior, return_attention_weights=True)
    p1 = 1.0 / (1.0 + math.e ** 2)
    expected = torch.tensor([0.3 + 0.4 * p1, 0.3 + 0.4 * (1 - p1)])
    torch.testing.assert_close(alpha[:, 0], expected)


def test_hand_computed_leaky_relu_logits():
    # C = 1, f = x, a_src = 1, a_dst = 0 -> e_0j = LeakyReLU(x_j): x_1 = 1 -> 1, x_2 = -1 -> -0.2
    conv = DPKGATConv(1, 1, heads=1, bias=False, beta=0.5, add_self_loops=False)
    with torch.no_grad():
        conv.lin.weight.fill_(1.0)
        conv.att_src.fill_(1.0)
        conv.att_dst.zero_()
    x = torch.tensor([[0.0], [1.0], [-1.0]])
    edge_index = torch.tensor([[1, 2], [0, 0]])
    prior = torch.tensor([0.0, 2.0])  # normalised: 0, 1
    out, (_, alpha) = conv(x, edge_index, prior, return_attention_weights=True)
    s1 = math.exp(1.0) / (math.exp(1.0) + math.exp(-0.2))
    expected = torch.tensor([0.5 * s1, 0.5 * (1 - s1) + 0.5])
    torch.testing.assert_close(alpha[:, 0], expected)
    torch.testing.assert_close(out[0, 0], expected[0] * 1.0 + expected[1] * -1.0)


# --------------------------------------------------------------------------- GATConv equivalence


@pytest.mark.parametrize("heads", [1, 3])
@pytest.mark.parametrize("concat", [True, False])
@pytest.mark.parametrize("self_loops", [False, True])
@pytest.mark.parametrize("residual", [False, True])
def test_beta_zero_reproduces_gatconv_exactly(heads, concat, self_loops, residual):
    torch.manual_seed(1)
    x, edge_index, prior = _graph(seed=heads)
    kw = dict(heads=heads, concat=concat, add_self_loops=self_loops, residual=residual)
    conv = DPKGATConv(5, 4, beta=0.7, **kw)
    gat = GATConv(5, 4, **kw)
    gat.load_state_dict(conv.state_dict(), strict=True)  # same parameter names and shapes
    ref, (ref_ei, ref_alpha) = gat(x, edge_index, return_attention_weights=True)
    for args in [dict(edge_prior=prior, beta=0.0), dict(edge_prior=prior, beta=torch.tensor(0.0)),
                 dict(edge_prior=None)]:
        out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True, **args)
        assert torch.equal(out, ref)
        assert torch.equal(ei, ref_ei)
        assert torch.equal(alpha, ref_alpha)
    # beta > 0 with a prior really changes the output
    assert not torch.allclose(conv(x, edge_index, prior), ref)


def test_beta_zero_reproduces_gatconv_on_sparse_adjacency():
    torch.manual_seed(2)
    x, edge_index, prior = _graph(seed=5)
    conv = DPKGATConv(5, 3, heads=2, add_self_loops=False)
    gat = GATConv(5, 3, heads=2, add_self_loops=False)
    gat.load_state_dict(conv.state_dict())
    adj = torch.sparse_coo_tensor(edge_index.flip(0), prior, (7, 7)).coalesce()  # adj[i, j]: j -> i
    assert torch.equal(conv(x, adj, "values", beta=0.0), gat(x, adj))
    assert torch.equal(conv(x, adj.to_sparse_csr()), gat(x, adj.to_sparse_csr()))


# --------------------------------------------------------------------------- formula checks


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("concat", [True, False])
def test_edge_index_path_matches_dense_reference(mode, concat):
    torch.manual_seed(3)
    x, edge_index, prior = _graph(seed=7)
    conv = DPKGATConv(5, 4, heads=3, concat=concat, prior_mode=mode, residual=True, add_self_loops=False)
    with torch.no_grad():
        conv.bias.normal_()
    out, (ei, alpha) = conv(x, edge_index, prior, beta=0.35, return_attention_weights=True)
    ref, ref_alpha = _dense_reference(conv, x, edge_index, prior, 0.35)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha, ref_alpha[:, ei[1], ei[0]].t(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_adjacency_matches_dense_reference(mode, layout):
    torch.manual_seed(4)
    x, edge_index, prior = _graph(seed=11)
    conv = DPKGATConv(5, 4, heads=2, prior_mode=mode, add_self_loops=False)
    adj = torch.sparse_coo_tensor(edge_index.flip(0), prior, (7, 7)).coalesce()
    if layout == "csr":
        adj = adj.to_sparse_csr()
    ref, _ = _dense_reference(conv, x, edge_index, prior, 0.5)
    torch.testing.assert_close(conv(x, adj, "values", beta=0.5), ref, atol=1e-5, rtol=1e-5)
    # the same prior given explicitly, aligned with the adjacency's row-major non-zeros
    order = (edge_index[1] * 7 + edge_index[0]).argsort()
    torch.testing.assert_close(conv(x, adj, prior[order], beta=0.5), ref, atol=1e-5, rtol=1e-5)
    # the sparse path returns the edges it used, source row first
    _, (ei, _) = conv(x, adj, "values", return_attention_weights=True)
    assert torch.equal(ei, edge_index[:, order])


@pytest.mark.parametrize("concat", [True, False])
def test_beta_one_is_pure_prior_aggregation(concat):
    torch.manual_seed(5)
    x, edge_index, prior = _graph(seed=13, zero_mass_target=False)
    conv = DPKGATConv(5, 4, heads=3, concat=concat, add_self_loops=False)
    out = conv(x, edge_index, prior, beta=1.0)
    mass = scatter(prior, edge_index[1], 0, 7, reduce="sum")
    d = prior / mass[edge_index[1]]
    f = conv.lin(x).view(7, 3, 4)
    agg = scatter(d.view(-1, 1, 1) * f[edge_index[0]], edge_index[1], 0, 7, reduce="sum")
    expected = (agg.reshape(7, 12) if concat else agg.mean(1)) + conv.bias
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_attention_is_a_distribution_per_target_and_head(mode):
    x, edge_index, prior = _graph(seed=17, num_nodes=9, num_edges=30)
    conv = DPKGATConv(5, 4, heads=3, prior_mode=mode, add_self_loops=True)
    for beta in (0.0, 0.3, 1.0):
        _, (ei, alpha) = conv(x, edge_index, prior, beta=beta, return_attention_weights=True)
        assert alpha.shape == (ei.size(1), 3)
        assert bool((alpha >= 0).all()) and bool((alpha <= 1).all())
        sums = scatter(alpha, ei[1], 0, 9, reduce="sum")
        torch.testing.assert_close(sums, torch.ones(9, 3))


def test_zero_prior_mass_target_falls_back_to_softmax():
    x, edge_index, prior = _graph(seed=19)
    target = int(edge_index[1, 0])  # its incoming prior is all zero (see _graph)
    conv = DPKGATConv(5, 4, heads=2, add_self_loops=False)
    _, (_, plain) = conv(x, edge_index, return_attention_weights=True)
    _, (_, mixed) = conv(x, edge_index, prior, beta=1.0, return_attention_weights=True)
    on_target = edge_index[1] == target
    torch.testing.assert_close(mixed[on_target], plain[on_target])
    assert not torch.allclose(mixed[~on_target], plain[~on_target])


def test_self_loop_prior_values():
    # node 0 has a self loop with prior 5 and an edge 1 -> 0 with prior 1;
    # node 1 has edges 0 -> 1 (prior 2) and 2 -> 1 (prior 4) and gets a new loop with the mean, 3;
    # node 2 has no incoming edge: its loop gets 0 -> zero mass -> softmax over {itself} = 1.
    x = torch.randn(3, 2)
    edge_index = torch.tensor([[0, 1, 0, 2], [0, 0, 1, 1]])
    prior = torch.tensor([5.0, 1.0, 2.0, 4.0])
    conv = DPKGATConv(2, 2, add_self_loops=True)
    _, (ei, alpha) = conv(x, edge_index, prior, beta=1.0, return_attention_weights=True)
    got = {(int(j), int(i)): float(a) for (j, i), a in zip(ei.t(), alpha[:, 0].detach())}
    expected = {(1, 0): 1 / 6, (0, 0): 5 / 6, (0, 1): 2 / 9, (2, 1): 4 / 9, (1, 1): 3 / 9, (2, 2): 1.0}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    conv_fill = DPKGATConv(2, 2, add_self_loops=True, fill_value=1.0)
    _, (ei, alpha) = conv_fill(x, edge_index, prior, beta=1.0, return_attention_weights=True)
    got = {(int(j), int(i)): float(a) for (j, i), a in zip(ei.t(), alpha[:, 0].detach())}
    assert got[(1, 1)] == pytest.approx(1 / 7, abs=1e-6)
    assert got[(0, 0)] == pytest.approx(5 / 6, abs=1e-6)


def test_per_call_beta_overrides_stored_beta():
    x, edge_index, prior = _graph(seed=23)
    conv = DPKGATConv(5, 4, heads=2, beta=0.3)
    default = conv(x, edge_index, prior)
    torch.testing.assert_close(conv(x, edge_index, prior, beta=0.3), default)
    torch.testing.assert_close(conv(x, edge_index, prior, beta=torch.tensor(0.6)),
                               conv(x, edge_index, prior, beta=0.6))
    assert not torch.allclose(conv(x, edge_index, prior, beta=0.6), default)
    assert conv.beta == 0.3


# --------------------------------------------------------------------------- batching, dense path


def _copies(n_copies: int = 4):
    x, edge_index, prior = _graph(seed=29)
    g = torch.Generator().manual_seed(3)
    data = [Data(x=torch.randn(7, 5, generator=g), edge_index=edge_index, edge_prior=prior)
            for _ in range(n_copies)]
    return data, edge_index, prior


@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_per_graph(mode):
    data, _, _ = _copies()
    batch = Batch.from_data_list(data)
    conv = DPKGATConv(5, 4, heads=3, prior_mode=mode, add_self_loops=True, residual=True)
    out = conv(batch.x, batch.edge_index, batch.edge_prior, beta=0.4)
    singles = torch.cat([conv(d.x, d.edge_index, d.edge_prior, beta=0.4) for d in data])
    torch.testing.assert_close(out, singles, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("self_loops", [False, True])
@pytest.mark.parametrize("concat", [True, False])
def test_dense_path_matches_sparse_path(mode, self_loops, concat):
    data, edge_index, prior = _copies()
    batch = Batch.from_data_list(data)
    conv = DPKGATConv(5, 4, heads=3, concat=concat, prior_mode=mode, add_self_loops=self_loops,
                      residual=True)
    with torch.no_grad():
        conv.bias.normal_()
    adj = torch.zeros(7, 7, dtype=torch.bool)
    adj[edge_index[1], edge_index[0]] = True
    dense_prior = torch.zeros(7, 7)
    dense_prior[edge_index[1], edge_index[0]] = prior
    sparse_out, (ei, sparse_alpha) = conv(batch.x, batch.edge_index, batch.edge_prior, beta=0.4,
                                          return_attention_weights=True)
    x = torch.stack([d.x for d in data])
    dense_out, dense_alpha = conv.forward_dense(x, adj, dense_prior, beta=0.4, return_attention_weights=True)
    torch.testing.assert_close(dense_out.reshape(sparse_out.shape), sparse_out, atol=1e-5, rtol=1e-5)
    b, i, j = ei[1] // 7, ei[1] % 7, ei[0] % 7
    torch.testing.assert_close(dense_alpha[b, :, i, j], sparse_alpha, atol=1e-6, rtol=1e-5)
    # without a prior the dense path is plain GAT as well
    torch.testing.assert_close(conv.forward_dense(x, adj).reshape(sparse_out.shape),
                               conv(batch.x, batch.edge_index), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- autograd, edge cases


def test_gradcheck_float64():
    x, edge_index, prior = _graph(seed=31, num_nodes=5, num_edges=9)
    conv = DPKGATConv(5, 3, heads=2, residual=True).double()
    x = x.double().requires_grad_()
    prior = prior.double().clamp_min(0.1).requires_grad_()
    beta = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p, b: conv(a, edge_index, p, beta=b), (x, prior, beta))
    authors = DPKGATConv(5, 3, heads=2, prior_mode="authors").double()
    assert torch.autograd.gradcheck(lambda a, p, b: authors(a, edge_index, p, beta=b), (x, prior, beta))
    adj = torch.zeros(5, 5, dtype=torch.bool)
    adj[edge_index[1], edge_index[0]] = True
    xd = torch.randn(2, 5, 5, dtype=torch.float64, requires_grad=True)
    pd = torch.rand(5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, p: conv.forward_dense(a, adj, p), (xd, pd))


def test_dense_attention_node_backward_matches_autograd():
    """The hand-written backward of the dense attention node against autograd on the plain ops,
    with negative logits (the LeakyReLU slope), a row without edges and a tensor beta."""
    g = torch.Generator().manual_seed(5)
    conv = DPKGATConv(4, 3, heads=2, add_self_loops=False, negative_slope=0.1).double()
    adj = torch.rand(6, 6, generator=g) > 0.4
    adj[2] = False  # node 2 has no incoming edge
    prior = torch.rand(6, 6, generator=g, dtype=torch.float64)
    x = torch.randn(3, 6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    out, alpha = conv.forward_dense(x, adj, prior, beta=beta, return_attention_weights=True)
    assert torch.equal(alpha[:, :, 2], torch.zeros_like(alpha[:, :, 2]))

    # reference: the same layer written with autograd-tracked elementary ops
    H, C = 2, 3
    f = conv.lin(x).view(3, 6, H, C).transpose(1, 2)  # (B, H, N, C)
    s = (f * conv.att_src.view(1, H, 1, C)).sum(-1)
    t = (f * conv.att_dst.view(1, H, 1, C)).sum(-1)
    e = F.leaky_relu(s.unsqueeze(-2) + t.unsqueeze(-1), 0.1).masked_fill(~adj, float("-inf"))
    p = torch.nan_to_num(torch.softmax(e, -1), nan=0.0)
    pm = prior.masked_fill(~adj, 0.0)
    mass = pm.sum(-1, keepdim=True)
    w = (mass > 0) * beta
    a_ref = (1 - w) * p + w * pm / mass.clamp_min(1e-300)
    ref = (a_ref @ f).transpose(1, 2).reshape(3, 6, H * C) + conv.bias
    torch.testing.assert_close(out, ref)
    weight = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((out * weight).sum(), (x, beta, conv.lin.weight, conv.att_src, conv.att_dst))
    want = torch.autograd.grad((ref * weight).sum(), (x, beta, conv.lin.weight, conv.att_src, conv.att_dst))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_empty_graph_and_node_without_incoming_edges():
    conv = DPKGATConv(5, 4, heads=2, residual=True, add_self_loops=False)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(4, 5)
    empty = torch.empty(2, 0, dtype=torch.long)
    out, (ei, alpha) = conv(x, empty, torch.empty(0), return_attention_weights=True)
    torch.testing.assert_close(out, conv.res(x) + conv.bias)  # no messages
    assert ei.shape == (2, 0) and alpha.shape == (0, 2)
    assert conv(torch.empty(0, 5), empty).shape == (0, 8)
    # node 3 receives nothing: output is residual + bias; other nodes still get messages
    edge_index = torch.tensor([[0, 1, 3], [1, 2, 0]])
    out = conv(x, edge_index, torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(out[3], conv.res(x[3]) + conv.bias)
    assert not torch.allclose(out[:3], conv.res(x[:3]) + conv.bias)
    # with self loops an isolated graph attends only to itself
    looped = DPKGATConv(5, 4, heads=2, add_self_loops=True, bias=False)
    torch.testing.assert_close(looped(x, empty, torch.empty(0)), looped.lin(x))


def test_reset_parameters_and_repr():
    conv = DPKGATConv(25, 64, heads=3, residual=True)
    assert repr(conv) == "DPKGATConv(25, 64, heads=3)"
    with torch.no_grad():
        for p in conv.parameters():
            p.fill_(7.0)
    conv.reset_parameters()
    assert torch.equal(conv.bias, torch.zeros(192))
    assert not bool((conv.lin.weight == 7.0).any())
    assert not bool((conv.att_src == 7.0).any())
    assert not bool((conv.res.weight == 7.0).any())


def test_dropout_acts_on_attention_only_in_training():
    x, edge_index, prior = _graph(seed=37)
    conv = DPKGATConv(5, 4, heads=2, dropout=0.5)
    conv.eval()
    torch.testing.assert_close(conv(x, edge_index, prior), conv(x, edge_index, prior))
    conv.train()
    torch.manual_seed(0)
    _, (_, alpha) = conv(x, edge_index, prior, return_attention_weights=True)
    assert bool((alpha == 0).any())


@pytest.mark.slow
def test_torch_compile_fullgraph():
    x, edge_index, prior = _graph(seed=41)
    conv = DPKGATConv(5, 4, heads=2)
    compiled = torch.compile(conv, fullgraph=True)
    torch.testing.assert_close(compiled(x, edge_index, prior), conv(x, edge_index, prior), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors():
    x, edge_index, prior = _graph(seed=43)
    conv = DPKGATConv(5, 4)
    with pytest.raises(ValueError, match=r"edge_prior must have shape \(18,\)"):
        conv(x, edge_index, prior[:-1])
    with pytest.raises(ValueError, match=r"edge_prior must have shape"):
        conv(x, edge_index, prior.view(-1, 1))
    bad = prior.clone()
    bad[3] = -0.5
    with pytest.raises(ValueError, match="non-negative; edge 3"):
        conv(x, edge_index, bad)
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        conv(x, edge_index, bad)
    for beta in (-0.1, 1.5, torch.tensor(2.0)):
        with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
            conv(x, edge_index, prior, beta=beta)
    with pytest.raises(ValueError, match="0-dim"):
        conv(x, edge_index, prior, beta=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="beta must be in"):
        DPKGATConv(5, 4, beta=1.2)
    with pytest.raises(ValueError, match="prior_mode"):
        DPKGATConv(5, 4, prior_mode="dense")
    with pytest.raises(ValueError, match="fill_value"):
        DPKGATConv(5, 4, fill_value="median")
    with pytest.raises(ValueError, match="sparse adjacency"):
        conv(x, edge_index, "values")
    with pytest.raises(ValueError, match=r"sparse adjacency must have shape \(7, 7\)"):
        conv(x, torch.sparse_coo_tensor(edge_index, prior, (7, 8)))
    with pytest.raises(ValueError, match="x must have shape"):
        conv(x.unsqueeze(0), edge_index)
    with pytest.raises(ValueError, match=r"adj must have shape \(7, 7\)"):
        conv.forward_dense(x, torch.ones(6, 6, dtype=torch.bool))
    with pytest.raises(TypeError, match="edge_index must be"):
        conv(x, edge_index.tolist())
    with pytest.raises(ValueError, match=r"edge_index must have shape \(2, E\)"):
        conv(x, edge_index[0])


def test_dense_path_single_graph_and_errors():
    x, edge_index, prior = _graph(seed=47)
    conv = DPKGATConv(5, 4, heads=2, add_self_loops=False)
    adj = torch.zeros(7, 7, dtype=torch.bool)
    adj[edge_index[1], edge_index[0]] = True
    dense_prior = torch.zeros(7, 7)
    dense_prior[edge_index[1], edge_index[0]] = prior
    out, alpha = conv.forward_dense(x, adj, dense_prior, beta=0.5, return_attention_weights=True)
    assert out.shape == (7, 8) and alpha.shape == (2, 7, 7)
    torch.testing.assert_close(out, conv(x, edge_index, prior, beta=0.5), atol=1e-5, rtol=1e-5)
    assert bool((alpha[:, ~adj] == 0).all())
    with pytest.raises(ValueError, match=r"prior must have shape \(7, 7\)"):
        conv.forward_dense(x, adj, dense_prior[:6])
    with pytest.raises(ValueError, match="prior must be finite and non-negative"):
        conv.forward_dense(x, adj, -dense_prior)
    with pytest.raises(ValueError, match="x must have shape"):
        conv.forward_dense(x.view(1, 1, 7, 5), adj)
