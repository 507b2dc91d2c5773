"""Tests of the FED-PsyAU network modules (LFE, SSE, AFE, DPK-GAT, DSI, FedPsyAU, loss)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from psyau_graph.au import NUM_AUS
from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, FedPsyAUOutput, fedpsyau_loss
from psyau_graph.nn.afe import AFE, AUHead, GroupSE, default_groups
from psyau_graph.nn.dpk_gat import DPKGAT, DPKGATBlock, region_graph
from psyau_graph.nn.dsi import DSI, Inception
from psyau_graph.nn.lfe import LFE
from psyau_graph.nn.sse import SSE
from psyau_graph.priors import psych_adjacency


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small models run faster on one intra-op thread (no thread sync on tiny ops)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 65, 3, 5, 5, generator=g), torch.randn(b, 3, 28, 28, generator=g)


def _targets(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 3, (b,), generator=g), (torch.rand(b, 12, generator=g) > 0.5).float()


# --------------------------------------------------------------------------- LFE
def test_lfe_shapes_and_batched_equals_per_roi():
    torch.manual_seed(0)
    lfe = LFE().eval()
    rois, _ = _inputs(3)
    out = lfe(rois)
    assert out.shape == (3, 65, 3, 5, 5)
    per_roi = torch.stack([lfe(rois[:, k]) for k in range(65)], dim=1)  # the authors' loop
    torch.testing.assert_close(out, per_roi)
    assert (out >= 0).all()  # final ReLU
    with pytest.raises(ValueError, match="rois"):
        lfe(torch.randn(2, 65, 2, 5, 5))
    plain = LFE(channels_last=False).eval()
    plain.load_state_dict(lfe.state_dict())
    torch.testing.assert_close(plain(rois), out, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous()



def test_lfe_eval_chunks_equal_one_call_and_training_is_never_chunked():
    torch.manual_seed(0)
    rois, _ = _inputs(3)  # 195 patches
    chunked, whole = LFE(eval_chunk=7), LFE(eval_chunk=0)
    whole.load_state_dict(chunked.state_dict())
    for m in (chunked, whole):  # give BatchNorm non-trivial running statistics
        m.train()(rois * 3.0 + 1.0)
    chunked.eval(), whole.eval()
    torch.testing.assert_close(chunked(rois), whole(rois), atol=1e-6, rtol=1e-5)
    # training mode: BatchNorm statistics over all patches of the batch, so no chunking
    chunked.train(), whole.train()
    torch.testing.assert_close(chunked(rois), whole(rois), atol=1e-6, rtol=1e-5)
    per_chunk = torch.cat([whole(c) for c in rois.reshape(-1, 3, 5, 5).split(7)])
    assert not torch.allclose(per_chunk.reshape(3, 65, 3, 5, 5), chunked(rois), atol=1e-3)
    with pytest.raises(ValueError, match="eval_chunk"):
        LFE(eval_chunk=-1)

# --------------------------------------------------------------------------- SSE
def test_sse_shapes_and_no_cross_sample_mixing():
    torch.manual_seed(0)
    sse = SSE(heads=3).eval()
    z, _ = _inputs(5)
    out = sse(z)
    assert out.shape == z.shape
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(sse(z[perm]), out[perm])
    z2 = z.clone()
    z2[0] += 1.0  # change sample 0 only
    out2 = sse(z2)
    torch.testing.assert_close(out2[1:], out[1:])
    assert not torch.allclose(out2[0], out[0])


def test_sse_attends_over_rois_and_uses_positions():
    torch.manual_seed(0)
    sse = SSE(heads=5).eval()
    z, _ = _inputs(2)
    out = sse(z)
    z2 = z.clone()
    z2[:, 10] += 1.0  # one ROI changes -> other ROI tokens of the same sample change (attention over ROIs)
    assert not torch.allclose(sse(z2)[:, 20], out[:, 20])
    # identical tokens at different keypoints differ only through the positional embedding
    same = z[:, :1].expand(2, 65, 3, 5, 5).contiguous()
    o = sse(same)
    assert not torch.allclose(o[:, 0], o[:, 1])
    with pytest.raises(ValueError, match="divide"):
        SSE(heads=4)


# --------------------------------------------------------------------------- AFE
def test_group_se_by_hand():
    gse = GroupSE(4)
    torch.nn.init.zeros_(gse.fc.weight)
    torch.nn.init.zeros_(gse.fc.bias)
    z = torch.randn(2, 4, 3, 5, 5)
    out, w = gse(z, return_weights=True)
    torch.testing.assert_close(w, torch.full((2, 4), 0.5))
    torch.testing.assert_close(out, 1.5 * z)


def test_afe_shapes_norm_and_group_locality():
    torch.manual_seed(0)
    rois_by_group, aus_by_group = default_groups(True)
    assert [len(rois_by_group[g]) for g in (1, 2, 3, 4)] == [23, 48, 38, 52]
    assert aus_by_group == {1: [0, 1, 2], 2: [3, 4, 5], 3: [6, 7], 4: [8, 9, 10, 11]}
    afe = AFE().eval()
    z, _ = _inputs(3)
    f = afe(z)
    assert f.shape == (3, NUM_AUS, 25)
    norms = f.norm(dim=-1)
    assert torch.all(((norms - 1).abs() < 1e-4) | (norms < 1e-6))
    assert (norms > 0.5).float().mean() > 0.5  # most nodes are non-zero, hence unit length
    # a ROI used only by group 4 moves only the AU nodes of group 4 (AU12/14/15/17 = idx 8..11)
    only4 = sorted(set(rois_by_group[4]) - set().union(*(rois_by_group[g] for g in (1, 2, 3))))
    assert only4, "expected a keypoint used by group 4 alone"
    z2 = z.clone()
    z2[:, only4[0]] += 3.0
    f2 = afe(z2)
    torch.testing.assert_close(f2[:, :8], f[:, :8])
    assert not torch.allclose(f2[:, 8:], f[:, 8:])


def test_afe_without_grouping_and_bad_groups():
    afe = AFE(grouping=False).eval()
    assert len(afe.branches) == 1 and afe.branches[0].num_rois == 65 and afe.branches[0].num_aus == 12
    assert afe(torch.randn(2, 65, 3, 5, 5)).shape == (2, 12, 25)
    with pytest.raises(ValueError, match="exactly once"):
        AFE({1: [0, 1]}, {1: [0, 1, 1]})
    with pytest.raises(ValueError, match="ROI indices"):
        AFE({1: [0, 70]}, {1: list(range(12))})
    assert AUHead()(torch.randn(2, 12, 25)).shape == (2, 12)


# --------------------------------------------------------------------------- DPK-GAT
def test_region_graph_adjacency_and_prior():
    adj, prior = region_graph("upper")
    torch.testing.assert_close(adj, torch.as_tensor(psych_adjacency("upper"), dtype=torch.float32))
    torch.testing.assert_close(prior.sum(1), torch.ones(6), atol=1e-5, rtol=0)
    assert (prior[adj == 0] == 0).all()
    adj_c, none = region_graph("lower", psych_prior=False, prior=None)
    assert none is None and (adj_c == 1).all()
    adj_g, _ = region_graph("global", psych_prior=False)
    assert adj_g[0, 6] == 1 and adj_g[0, 1] == 0 and adj_g[0, 0] == 1  # cross-region + self loops only


def test_dpk_gat_block_dense_equals_sparse():
    torch.manual_seed(0)
    adj, prior = region_graph("global")
    dense = DPKGATBlock(adj, prior, impl="dense").eval()
    sparse = DPKGATBlock(adj, prior, impl="sparse").eval()
    sparse.load_state_dict(dense.state_dict())
    x = torch.randn(5, 12, 25)
    out_d, (a1, a2) = dense(x, beta=0.4, return_attention=True)
    out_s, (s1, s2) = sparse(x, beta=0.4, return_attention=True)
    torch.testing.assert_close(out_d, out_s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a1, s1, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(a2, s2, atol=1e-6, rtol=1e-5)
    assert a1.shape == (5, 3, 12, 12) and a2.shape == (5, 1, 12, 12)
    torch.testing.assert_close(a1.sum(-1), torch.ones(5, 3, 12))
    assert (a1[:, :, adj == 0] == 0).all()  # attention only along the psychological adjacency
    assert (a1[:, :, 0, 1] == 0).all()  # intra-region off-diagonal edges are absent in the whole-face graph
    # the cached disjoint union is reused for the same batch size
    sparse(x)
    assert len(sparse._cache) == 1


def test_dpk_gat_local_stage_keeps_regions_apart():
    torch.manual_seed(0)
    gat = DPKGAT(local=True, global_=False).eval()
    f = torch.randn(3, 12, 25)
    h = gat(f)
    f2 = f.clone()
    f2[:, 6:] += 1.0  # lower face only
    h2 = gat(f2)
    torch.testing.assert_close(h2[:, :6], h[:, :6])
    assert not torch.allclose(h2[:, 6:], h[:, 6:])
    full = DPKGAT().eval()
    assert not torch.allclose(full(f2)[:, :6], full(f)[:, :6])  # the global stage links the regions


def test_dpk_gat_beta_changes_output_only_with_a_data_prior():
    torch.manual_seed(0)
    f = torch.randn(2, 12, 25)
    with_prior = DPKGAT().eval()
    assert not torch.allclose(with_prior(f, beta=0.0), with_prior(f, beta=1.0))
    no_prior = DPKGAT(prior=None).eval()
    torch.testing.assert_close(no_prior(f, beta=0.0), no_prior(f, beta=1.0))


# --------------------------------------------------------------------------- DSI
def test_dsi_shapes():
    assert Inception(12, 16)(torch.randn(2, 12, 5, 5)).shape == (2, 64, 5, 5)
    dsi = DSI(7)
    assert dsi(torch.randn(2, 12, 5, 5), torch.randn(2, 3, 28, 28)).shape == (2, 7)
    single = DSI(7, au_stream=False)
    assert single.au is None and single(None, torch.randn(2, 3, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError, match="AU maps"):
        dsi(None, torch.randn(2, 3, 28, 28))


# --------------------------------------------------------------------------- FedPsyAU
def test_fedpsyau_default_config_matches_paper():
    c = FedPsyAUConfig()
    assert (c.num_classes, c.heads, c.hidden, c.dropout, c.beta) == (3, 3, 64, 0.5, 0.3)
    assert c.loss_weights == (0.2, 0.8, 0.8) and c.ablation == "VI" and c.prior == "dfme"
    assert all(getattr(c, k) for k in ("use_lfe", "use_sse", "local_gat", "global_gat", "dual_stream",
                                      "au_grouping", "psych_prior", "data_prior"))
    assert FedPsyAUConfig(**c.to_dict()) == c
    with pytest.raises(ValueError, match="ablation"):
        FedPsyAUConfig(ablation="XIV")
    with pytest.raises(ValueError, match="loss_weights"):
        FedPsyAUConfig(loss_weights=(1.0, -1.0, 0.0))


def test_fedpsyau_forward_shapes_loss_and_backward():
    torch.manual_seed(0)
    model = FedPsyAU(FedPsyAUConfig(num_classes=5))
    rois, flow = _inputs(4)
    out = model(rois, flow, return_attention=True)
    assert isinstance(out, FedPsyAUOutput)
    assert out.logits.shape == (4, 5) and out.au_afe.shape == (4, 12) and out.au_gat.shape == (4, 12)
    assert set(out.attention) == {f"{r}.{i}" for r in ("upper", "lower", "global") for i in (0, 1)}
    assert model(rois, flow).attention is None
    y = torch.tensor([0, 1, 4, 2])
    _, au = _targets(4)
    loss, parts = fedpsyau_loss(out, y, au)
    assert torch.isfinite(loss)
    expected = 0.2 * F.cross_entropy(out.logits, y) + 0.8 * F.binary_cross_entropy_with_logits(out.au_afe, au) \
        + 0.8 * F.binary_cross_entropy_with_logits(out.au_gat, au)
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"ce", "au_afe", "au_gat"}
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_fedpsyau_loss_weights_and_bad_targets():
    torch.manual_seed(0)
    model = FedPsyAU().eval()
    rois, flow = _inputs(2)
    out = model(rois, flow)
    y, au = _targets(2)
    loss, _ = fedpsyau_loss(out, y, au, weights=(1.0, 0.0, 0.0))
    torch.testing.assert_close(loss, F.cross_entropy(out.logits, y))
    with pytest.raises(ValueError, match="au"):
        fedpsyau_loss(out, y, au[:, :6])
    with pytest.raises(ValueError, match="y"):
        fedpsyau_loss(out, y[:1], au)


def test_fedpsyau_eval_is_deterministic_and_sample_independent():
    torch.manual_seed(123)
    a = FedPsyAU().eval()
    torch.manual_seed(123)
    b = FedPsyAU().eval()
    rois, flow = _inputs(6)
    oa, ob = a(rois, flow), b(rois, flow)
    torch.testing.assert_close(oa.logits, ob.logits, rtol=0, atol=0)
    torch.testing.assert_close(oa.au_gat, ob.au_gat, rtol=0, atol=0)
    perm = torch.tensor([5, 2, 0, 1, 4, 3])
    op = a(rois[perm], flow[perm])
    torch.testing.assert_close(op.logits, oa.logits[perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(op.au_afe, oa.au_afe[perm], atol=1e-5, rtol=1e-5)
    single = a(rois[2:3], flow[2:3])  # batch of one == row of the batch
    torch.testing.assert_close(single.logits, oa.logits[2:3], atol=1e-5, rtol=1e-5)


def test_fedpsyau_dense_and_sparse_gat_agree():
    torch.manual_seed(0)
    dense = FedPsyAU(FedPsyAUConfig(gat_impl="dense")).eval()
    sparse = FedPsyAU(FedPsyAUConfig(gat_impl="sparse")).eval()
    sparse.load_state_dict(dense.state_dict())
    rois, flow = _inputs(3)
    torch.testing.assert_close(dense(rois, flow).logits, sparse(rois, flow).logits, atol=1e-5, rtol=1e-5)


def test_forward_batch_matches_forward():
    torch.manual_seed(0)
    model = FedPsyAU().eval()
    rois, flow = _inputs(3)
    y, au = _targets(3)
    data = [Data(x=rois[i], flow=flow[i:i + 1], au=au[i:i + 1], y=y[i:i + 1]) for i in range(3)]
    batch = Batch.from_data_list(data)
    assert batch.x.shape == (3 * 65, 3, 5, 5) and batch.flow.shape == (3, 3, 28, 28)
    torch.testing.assert_close(model.forward_batch(batch).logits, model(rois, flow).logits)


def test_fedpsyau_bad_inputs():
    model = FedPsyAU()
    rois, flow = _inputs(2)
    with pytest.raises(ValueError, match="rois"):
        model(rois[:, :64], flow)
    with pytest.raises(ValueError, match="flow"):
        model(rois, flow[:, :2])
    with pytest.raises(ValueError, match="batch size"):
        model(rois, flow[:1])


def test_au_module_is_everything_before_the_classifier():
    model = FedPsyAU()
    au = model.au_module()
    names = {n.split(".")[0] for n, _ in au.named_children()}
    assert names == {"lfe", "sse", "afe", "afe_head", "gat", "gat_head"}
    n_total = sum(p.numel() for p in model.parameters())
    n_au = sum(p.numel() for p in au.parameters())
    n_dsi = sum(p.numel() for p in model.dsi.parameters())
    assert n_au + n_dsi == n_total
    with pytest.raises(ValueError, match="no AU module"):
        FedPsyAU(FedPsyAUConfig.from_ablation("I")).au_module()


def test_state_dict_roundtrip_and_deepcopy():
    torch.manual_seed(0)
    a = FedPsyAU().eval()
    b = FedPsyAU().eval()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    rois, flow = _inputs(2)
    torch.testing.assert_close(a(rois, flow).logits, b(rois, flow).logits)
    c = copy.deepcopy(a)
    torch.testing.assert_close(c(rois, flow).logits, a(rois, flow).logits)


@pytest.mark.slow
def test_torch_compile_smoke():
    torch.manual_seed(0)
    model = FedPsyAU().eval()
    rois, flow = _inputs(2)
    compiled = torch.compile(model, backend="eager", fullgraph=False)
    torch.testing.assert_close(compiled(rois, flow).logits, model(rois, flow).logits, atol=1e-5, rtol=1e-5)
