"""Mixed precision: every layer autocast-clean, DPK-GAT attention in fp32, the GEMM LFE equal to
the convolutional one, and the ``precision`` setting of training."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, fedpsyau_loss
from psyau_graph.nn.ablations import ablation_switches
from psyau_graph.nn.dpk_gat import region_graph
from psyau_graph.nn.dpk_gat_conv import DPKGATConv
from psyau_graph.nn.lfe import LFE, conv_as_matrix
from psyau_graph.train.fit import TrainConfig, fit, make_loader, train_one_epoch
from psyau_graph.train.precision import autocast, check_precision, grad_scaler, outputs_to_float

from _fakes_train import make_items

SETTINGS = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII")
BF16 = dict(atol=5e-2, rtol=5e-2)  # bf16 keeps 8 mantissa bits: relative error ~ 4e-3 per rounding


def _inputs(b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 65, 3, 5, 5, generator=g), torch.randn(b, 3, 28, 28, generator=g),
            torch.randint(0, 3, (b,), generator=g), (torch.rand(b, 12, generator=g) > 0.5).float())


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_ablation_setting_trains_under_bf16_autocast(setting):
    ablation_switches(setting)  # a known setting
    torch.manual_seed(0)
    model = FedPsyAU(FedPsyAUConfig(ablation=setting)).train()
    rois, flow, y, au = _inputs()
    with autocast("bf16", "cpu"):
        out = model(None if setting == "I" else rois, flow)
    assert out.logits.dtype == torch.bfloat16  # the autocast really ran in bf16
    loss, _ = fedpsyau_loss(outputs_to_float(out), y, au)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None for g in grads)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert p.grad.dtype == p.dtype == torch.float32, name  # parameters and grads stay fp32
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("impl", ["dense", "sparse"])
def test_full_model_bf16_logits_close_to_fp32(impl):
    torch.manual_seed(1)
    model = FedPsyAU(FedPsyAUConfig(gat_impl=impl)).eval()
    rois, flow, _, _ = _inputs(4, seed=1)
    with torch.no_grad():
        ref = model(rois, flow).logits
        with autocast("bf16", "cpu"):
            low = model(rois, flow).logits
    torch.testing.assert_close(low.float(), ref, **BF16)


def _au_batch(b=8, seed=0):
    adj, prior = region_graph("global")
    n = adj.shape[0]
    tgt, src = torch.nonzero(adj, as_tuple=True)
    ei = torch.stack([src, tgt])
    batch = Batch.from_data_list([Data(edge_index=ei, edge_prior=prior[tgt, src], num_nodes=n) for _ in range(b)])
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 25, generator=g), adj, prior, batch


@pytest.mark.parametrize("mode", ["paper", "authors"])
@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_dpk_gat_conv_under_autocast_matches_fp32_and_attends_in_fp32(path, mode):
    torch.manual_seed(0)
    x, adj, prior, batch = _au_batch()
    b, n, _ = x.shape
    conv = DPKGATConv(25, 64, heads=3, prior_mode=mode, residual=True).eval()

    def run():
        if path == "dense":
            out, alpha = conv.forward_dense(x, adj, prior, beta=0.3, return_attention_weights=True)
            return out.reshape(b * n, -1), alpha, None
        out, (ei, alpha) = conv(x.reshape(b * n, 25), batch.edge_index, batch.edge_prior, beta=0.3,
                                return_attention_weights=True)
        return out, alpha, ei

    ref, ref_alpha, ei = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, alpha, _ = run()
    assert alpha.dtype == torch.float32  # attention logits, softmax and mixing accumulate in fp32
    torch.testing.assert_close(out.float(), ref, **BF16)
    torch.testing.assert_close(alpha, ref_alpha, atol=2e-2, rtol=0)
    # every target's weights still sum to 1 to fp32 accuracy
    sums = alpha.sum(-1) if path == "dense" else torch.zeros(b * n, alpha.shape[1]).index_add_(0, ei[1], alpha)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)


def test_dense_and_sparse_paths_agree_in_fp32_with_gradients():
    torch.manual_seed(0)
    x, adj, prior, batch = _au_batch(5)
    b, n, _ = x.shape
    conv = DPKGATConv(25, 16, heads=3).train()
    conv.dropout = 0.0
    xd = x.clone().requires_grad_()
    xs = x.reshape(b * n, 25).clone().requires_grad_()
    dense = conv.forward_dense(xd, adj, prior, beta=0.4)
    gd = torch.autograd.grad(dense.square().sum(), [xd, *conv.parameters()])
    sparse = conv(xs, batch.edge_index, batch.edge_prior, beta=0.4)
    gs = torch.autograd.grad(sparse.square().sum(), [xs, *conv.parameters()])
    torch.testing.assert_close(dense.reshape(sparse.shape), sparse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gd[0].reshape(gs[0].shape), gs[0], atol=1e-4, rtol=1e-4)
    for a, c in zip(gd[1:], gs[1:]):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)


def test_dense_softmax_handles_rows_without_edges():
    conv = DPKGATConv(4, 3, heads=2, add_self_loops=False)
    adj = torch.ones(3, 3)
    adj[1] = 0  # node 1 receives nothing
    out, alpha = conv.forward_dense(torch.randn(2, 3, 4), adj, return_attention_weights=True)
    assert torch.isfinite(out).all() and torch.isfinite(alpha).all()
    assert torch.equal(alpha[:, :, 1], torch.zeros_like(alpha[:, :, 1]))
    torch.testing.assert_close(alpha[:, :, [0, 2]].sum(-1), torch.ones(2, 2, 2))


# ----------------------------------------------------------------------------- GEMM LFE
def test_conv_as_matrix_is_the_convolution():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 4, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=1).flatten(1)
    torch.testing.assert_close(x.flatten(1) @ conv_as_matrix(w, 5), ref, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="odd square kernel"):
        conv_as_matrix(torch.randn(2, 2, 2, 2), 5)


def _pair(dtype=torch.float32):
    torch.manual_seed(0)
    gemm, conv = LFE(impl="gemm"), LFE(impl="conv")
    with torch.no_grad():  # non-trivial BatchNorm affine parameters and running statistics
        for m in gemm.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0)
    conv.load_state_dict(gemm.state_dict())
    return gemm.to(dtype), conv.to(dtype)


def test_gemm_lfe_equals_conv_lfe_in_training_mode():
    gemm, conv = _pair()
    rois = torch.randn(6, 65, 3, 5, 5)
    out_g, out_c = gemm.train()(rois), conv.train()(rois)
    torch.testing.assert_close(out_g, out_c, atol=1e-5, rtol=1e-5)
    # BatchNorm semantics: the same batch statistics were folded into the running ones
    for mg, mc in zip(gemm.modules(), conv.modules()):
        if isinstance(mg, torch.nn.BatchNorm2d):
            torch.testing.assert_close(mg.running_mean, mc.running_mean, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(mg.running_var, mc.running_var, atol=1e-6, rtol=1e-5)
            assert int(mg.num_batches_tracked) == int(mc.num_batches_tracked) == 1


def test_gemm_lfe_equals_conv_lfe_in_eval_mode_chunked_or_not():
    gemm, conv = _pair()
    rois = torch.randn(11, 65, 3, 5, 5)
    ref = conv.eval()(rois)
    gemm.eval()
    torch.testing.assert_close(gemm(rois), ref, atol=1e-5, rtol=1e-5)
    gemm.eval_chunk = 0
    torch.testing.assert_close(gemm(rois), ref, atol=1e-5, rtol=1e-5)


def test_gemm_lfe_gradients_equal_conv_lfe():
    gemm, conv = _pair(torch.float64)  # fp64: no ReLU-boundary flips from rounding
    rois = torch.randn(4, 65, 3, 5, 5, dtype=torch.float64)
    xg, xc = rois.clone().requires_grad_(), rois.clone().requires_grad_()
    gg = torch.autograd.grad(gemm.train()(xg).square().sum(), [xg, *gemm.parameters()])
    gc = torch.autograd.grad(conv.train()(xc).square().sum(), [xc, *conv.parameters()])
    for a, c in zip(gg, gc):
        torch.testing.assert_close(a, c, atol=1e-9, rtol=1e-9)


def test_gemm_lfe_under_bf16_autocast_close_to_fp32():
    gemm, _ = _pair()
    gemm.eval()
    rois = torch.randn(3, 65, 3, 5, 5)
    ref = gemm(rois)
    with autocast("bf16"):
        low = gemm(rois)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), ref, **BF16)


def _trio(dtype=torch.float64):
    """``mixed``, ``conv`` and ``auto`` LFEs with the same weights (non-trivial BatchNorm)."""
    _, conv = _pair(dtype)
    mixed, auto = LFE(impl="mixed").to(dtype), LFE(impl="auto").to(dtype)
    mixed.load_state_dict(conv.state_dict()), auto.load_state_dict(conv.state_dict())
    return mixed, conv, auto


@pytest.mark.parametrize("channels_last", [True, False])
def test_mixed_lfe_equals_conv_lfe_forward_backward_and_statistics(channels_last):
    mixed, conv, _ = _trio()
    mixed.channels_last = conv.channels_last = channels_last
    rois = torch.randn(4, 65, 3, 5, 5, dtype=torch.float64)
    xm, xc = rois.clone().requires_grad_(), rois.clone().requires_grad_()
    out_m, out_c = mixed.train()(xm), conv.train()(xc)
    assert out_m.is_contiguous() and out_m.shape == out_c.shape
    torch.testing.assert_close(out_m, out_c, atol=1e-10, rtol=1e-10)
    gm = torch.autograd.grad(out_m.square().sum(), [xm, *mixed.parameters()])
    gc = torch.autograd.grad(out_c.square().sum(), [xc, *conv.parameters()])
    for a, c in zip(gm, gc):
        torch.testing.assert_close(a, c, atol=1e-9, rtol=1e-9)
    for bm, bc in zip(mixed.modules(), conv.modules()):
        if isinstance(bm, torch.nn.BatchNorm2d):
            torch.testing.assert_close(bm.running_mean, bc.running_mean, atol=1e-12, rtol=1e-10)
            torch.testing.assert_close(bm.running_var, bc.running_var, atol=1e-12, rtol=1e-10)
    # eval mode, chunked (5 · 65 patches in chunks of 100) and not
    mixed.eval(), conv.eval()
    ref = conv(rois)
    mixed.eval_chunk = 100
    torch.testing.assert_close(mixed(rois), ref, atol=1e-10, rtol=1e-10)
    mixed.eval_chunk = 0
    torch.testing.assert_close(mixed(rois), ref, atol=1e-10, rtol=1e-10)


def test_mixed_lfe_adds_a_convolution_bias_like_conv():
    mixed, conv, _ = _trio()
    for m in (mixed, conv):
        for block in m.net:
            block[0].bias = torch.nn.Parameter(torch.full((block[0].out_channels,), 0.1, dtype=torch.float64))
    conv.load_state_dict(mixed.state_dict())
    rois = torch.randn(2, 65, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(mixed.train()(rois), conv.train()(rois), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("out_channels_last", [True, False])
def test_thin_conv_matrix_product_equals_conv2d_in_either_layout(layout, out_channels_last):
    from psyau_graph.nn.lfe import _thin_conv

    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 6, 5, 5, generator=g, dtype=torch.float64)
    w = torch.randn(3, 6, 3, 3, generator=g, dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    y = _thin_conv(x, w, 5, out_channels_last=out_channels_last)
    torch.testing.assert_close(y, F.conv2d(x, w, padding=1), atol=1e-12, rtol=0)
    assert y.is_contiguous(memory_format=torch.channels_last if out_channels_last else torch.contiguous_format)


def test_auto_lfe_picks_mixed_only_when_training_under_cpu_low_precision_autocast():
    _, _, auto = _trio(torch.float32)
    x = torch.randn(2, 3, 5, 5)
    auto.train()
    assert auto._resolved_impl(x) == "conv"
    with autocast("bf16"):
        assert auto._resolved_impl(x) == "mixed"
    auto.eval()
    with autocast("bf16"):
        assert auto._resolved_impl(x) == "conv"  # eval keeps the folded convolutions
    assert LFE().impl == "auto"


def test_auto_lfe_under_bf16_training_close_to_conv_lfe():
    mixed, conv, auto = _trio(torch.float32)
    rois = torch.randn(3, 65, 3, 5, 5)
    with autocast("bf16"):
        out_a, out_c = auto.train()(rois), conv.train()(rois)
    assert out_a.dtype == out_c.dtype == torch.bfloat16
    torch.testing.assert_close(out_a.float(), out_c.float(), **BF16)


def test_lfe_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl must be one of"):
        LFE(impl="winograd")


# ----------------------------------------------------------------------------- training setting
def test_precision_validation():
    assert check_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("fp8")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        check_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")
    assert grad_scaler("bf16") is None and grad_scaler("fp32") is None


def test_outputs_to_float_casts_low_precision_fields_only():
    from psyau_graph.nn.model import FedPsyAUOutput

    out = FedPsyAUOutput(torch.ones(2, 3, dtype=torch.bfloat16), None, torch.ones(2, 12, dtype=torch.float16),
                         {"a": torch.ones(1, dtype=torch.bfloat16)})
    f = outputs_to_float(out)
    assert f.logits.dtype == f.au_gat.dtype == f.attention["a"].dtype == torch.float32 and f.au_afe is None
    idx = torch.arange(3)
    assert outputs_to_float(idx) is idx


def test_train_one_epoch_bf16_runs_the_model_in_bf16_and_learns():
    torch.manual_seed(0)
    items = make_items(n_subjects=2, per_subject=4)
    model = FedPsyAU(FedPsyAUConfig(ablation="VI"))
    seen = []
    model.dsi.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rec = train_one_epoch(model, make_loader(items, 4, shuffle=True), opt, precision="bf16", progress=False)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert rec["n"] == 8 and rec["loss"] > 0
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed and all(model.state_dict()[k].dtype == torch.float32 for k in changed)


def test_fit_with_bf16_records_it_and_refuses_to_resume_in_fp32(tmp_path):
    torch.manual_seed(0)
    items = make_items(n_subjects=2, per_subject=4)
    cfg = TrainConfig(epochs=1, batch_size=4, precision="bf16", progress=False)
    fit(FedPsyAU(FedPsyAUConfig(ablation="II")), items, cfg, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="precision"):
        fit(FedPsyAU(FedPsyAUConfig(ablation="II")), items, TrainConfig(epochs=2, batch_size=4, progress=False),
            checkpoint_dir=tmp_path, resume=True)


def test_scaled_step_path_with_clipping_matches_the_plain_step():
    """The GradScaler branch (used for fp16 on CUDA) exercised on the CPU: with a constant
    scale it must give the same update as the plain step, gradient clipping included."""
    items = make_items(n_subjects=2, per_subject=4)
    states = []
    for use_scaler in (False, True):
        torch.manual_seed(0)
        model = FedPsyAU(FedPsyAUConfig(ablation="II"))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=10**6) if use_scaler else None
        train_one_epoch(model, make_loader(items, 4, shuffle=False), opt, grad_clip=0.5, scaler=scaler,
                        progress=False)
        states.append(model.state_dict())
    for k, v in states[0].items():
        torch.testing.assert_close(states[1][k], v, atol=1e-5, rtol=1e-4, msg=k)


def test_eval_lfe_folds_batchnorm_into_the_convolutions_exactly():
    _, conv = _pair()
    conv.eval()
    rois = torch.randn(9, 3, 5, 5)
    ref = conv.net(rois)  # the modules one by one: conv, BatchNorm (running statistics), ReLU
    torch.testing.assert_close(conv(rois), ref, atol=1e-5, rtol=1e-5)
    conv.eval_chunk = 4  # chunked as well
    torch.testing.assert_close(conv(rois), ref, atol=1e-5, rtol=1e-5)
    # gradients reach the convolution and BatchNorm parameters through the fold
    x = rois.clone().requires_grad_()
    gf = torch.autograd.grad(conv(x).square().sum(), [x, *conv.parameters()])
    gr = torch.autograd.grad(conv.net(x).square().sum(), [x, *conv.parameters()])
    for a, c in zip(gf, gr):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    # training mode never folds: batch statistics are used and the running ones move
    before = conv.net[0][1].running_mean.clone()
    conv.train()(rois)
    assert not torch.equal(conv.net[0][1].running_mean, before)
