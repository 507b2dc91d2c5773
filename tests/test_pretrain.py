"""AU-module pretraining, save/load and freezing."""
from __future__ import annotations

import pytest
import torch

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, fedpsyau_loss
from psyau_graph.train.pretrain import load_au_module, pretrain_au_module, save_au_module


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small models run faster on one intra-op thread (no thread sync on tiny ops)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 65, 3, 5, 5, generator=g), (torch.rand(n, 12, generator=g) > 0.5).float()


def test_pretrain_reduces_au_loss_and_leaves_classifier_alone():
    torch.manual_seed(0)
    model = FedPsyAU()
    dsi_before = {k: v.clone() for k, v in model.dsi.state_dict().items()}
    au_before = [p.detach().clone() for p in model.au_module().parameters()]
    hist = pretrain_au_module(model, _data(), epochs=3, lr=3e-3, batch_size=12, progress=False)
    assert len(hist) == 3 and all(torch.isfinite(torch.tensor(hist)))
    assert hist[-1] < hist[0]
    for k, v in model.dsi.state_dict().items():
        torch.testing.assert_close(v, dsi_before[k], rtol=0, atol=0)
    assert any(not torch.equal(a, p) for a, p in zip(au_before, model.au_module().parameters()))


def test_save_load_gives_identical_au_outputs(tmp_path):
    torch.manual_seed(0)
    model = FedPsyAU()
    pretrain_au_module(model, _data(), epochs=1, batch_size=6, progress=False)
    path = save_au_module(model, tmp_path / "au.pt")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    torch.manual_seed(1)
    fresh = FedPsyAU()
    load_au_module(fresh, path)
    rois, _ = _data(4, seed=3)
    flow = torch.randn(4, 3, 28, 28)
    model.eval(), fresh.eval()
    a, b = model(rois, flow), fresh(rois, flow)
    torch.testing.assert_close(a.au_afe, b.au_afe, rtol=0, atol=0)
    torch.testing.assert_close(a.au_gat, b.au_gat, rtol=0, atol=0)
    assert not torch.allclose(a.logits, b.logits)  # the classifier was not loaded


def test_frozen_au_module_is_unchanged_by_a_training_step(tmp_path):
    torch.manual_seed(0)
    src = FedPsyAU()
    path = save_au_module(src, tmp_path / "au.pt")
    model = load_au_module(FedPsyAU(), path, freeze=True)
    au = model.au_module()
    assert all(not p.requires_grad for p in au.parameters())
    assert all(p.requires_grad for p in model.dsi.parameters())
    before = {k: v.clone() for k, v in au.state_dict().items()}  # params and BN buffers
    dsi_before = [p.detach().clone() for p in model.dsi.parameters()]
    model.train()
    assert not au.training and model.dsi.training  # frozen module stays in eval mode
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    rois, au_t = _data(6)
    out = model(rois, torch.randn(6, 3, 28, 28))
    loss, _ = fedpsyau_loss(out, torch.randint(0, 3, (6,)), au_t)
    loss.backward()
    opt.step()
    for k, v in au.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(a, p) for a, p in zip(dsi_before, model.dsi.parameters()))
    with pytest.raises(ValueError, match="frozen"):
        pretrain_au_module(model, _data(), progress=False)


def test_load_errors(tmp_path):
    model = FedPsyAU()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_au_module(model, tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an AU-module file"):
        load_au_module(model, tmp_path / "other.pt")
    path = save_au_module(FedPsyAU(FedPsyAUConfig(hidden=32)), tmp_path / "au32.pt")
    with pytest.raises(ValueError, match="hidden"):
        load_au_module(model, path)
    with pytest.raises(ValueError, match="no AU module"):
        pretrain_au_module(FedPsyAU(FedPsyAUConfig.from_ablation("I")), _data(), progress=False)


def test_pretrain_accepts_pyg_batches():
    from torch_geometric.data import Batch, Data

    torch.manual_seed(0)
    rois, au = _data(4)
    batch = Batch.from_data_list([Data(x=rois[i], au=au[i:i + 1]) for i in range(4)])
    hist = pretrain_au_module(FedPsyAU(), [batch], epochs=1, progress=False)
    assert len(hist) == 1 and hist[0] > 0


def test_pretrain_device_and_precision():
    """bf16 autocast on the CPU trains (finite, decreasing loss); an unavailable device is an
    error before anything runs; fp16 needs CUDA."""
    torch.manual_seed(0)
    model = FedPsyAU()
    hist = pretrain_au_module(model, _data(), epochs=2, lr=3e-3, batch_size=12, progress=False,
                              device="cpu", precision="bf16")
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(hist)))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32
    with pytest.raises(ValueError, match="needs a CUDA device"):
        pretrain_au_module(model, _data(), epochs=1, progress=False, precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            pretrain_au_module(model, _data(), epochs=1, progress=False, device="cuda")


def test_pretrain_loss_leaves_unknown_labels_out_and_weights_positives():
    """By hand: the masked loss is the mean BCE over known entries, with pos_weight on the
    positive term; flipping an unknown label changes nothing."""
    g = torch.Generator().manual_seed(0)
    afe, gat = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    au = (torch.rand(5, 12, generator=g) > 0.7).float()
    known = torch.ones(5, 12)
    known[1] = 0  # a clip without AU coding
    known[3, :4] = 0  # partial coding
    pw = torch.linspace(1.0, 6.0, 12)

    def by_hand(logits):
        p = torch.sigmoid(logits)
        each = -(pw * au * torch.log(p) + (1 - au) * torch.log(1 - p))
        return each[known.bool()].mean()

    from psyau_graph.train.pretrain import au_pretrain_loss

    got = au_pretrain_loss(afe, gat, au, (0.5, 2.0), au_mask=known, pos_weight=pw)
    torch.testing.assert_close(got, 0.5 * by_hand(afe) + 2.0 * by_hand(gat))
    flipped = au.clone()
    flipped[known == 0] = 1 - flipped[known == 0]
    torch.testing.assert_close(au_pretrain_loss(afe, gat, flipped, au_mask=known, pos_weight=pw),
                               au_pretrain_loss(afe, gat, au, au_mask=known, pos_weight=pw))
    assert not torch.allclose(au_pretrain_loss(afe, gat, flipped), au_pretrain_loss(afe, gat, au))
    with pytest.raises(ValueError, match="pos_weight"):
        au_pretrain_loss(afe, gat, au, pos_weight=torch.ones(3))


def test_pretrain_ignores_unknown_labels_and_uses_pos_weight():
    """Training with (rois, au, au_known): unknown labels, whatever their value, do not change
    the run; a positive weight does."""
    rois, au = _data(12)
    known = torch.ones(12, 12)
    known[::3] = 0
    flipped = au.clone()
    flipped[known == 0] = 1 - flipped[known == 0]

    def run(labels, mask=None, pw=None):
        torch.manual_seed(0)
        model = FedPsyAU()
        data = (rois, labels) if mask is None else (rois, labels, mask)
        hist = pretrain_au_module(model, data, epochs=2, lr=3e-3, batch_size=6, progress=False, pos_weight=pw)
        return hist, [p.detach().clone() for p in model.au_module().parameters()]

    h1, p1 = run(au, known)
    h2, p2 = run(flipped, known)
    assert h1 == h2 and all(torch.equal(a, b) for a, b in zip(p1, p2))
    h3, _ = run(flipped)  # without the mask the flipped labels are trained on
    assert h3 != h1
    h4, _ = run(au, known, torch.full((12,), 4.0))
    assert h4 != h1


def test_pretrain_reads_au_known_from_pyg_batches():
    from torch_geometric.data import Batch, Data

    rois, au = _data(4)
    known = torch.ones(4, 12)
    known[0] = 0
    flipped = au.clone()
    flipped[0] = 1 - flipped[0]
    hists = []
    for labels in (au, flipped):
        batch = Batch.from_data_list([Data(x=rois[i], au=labels[i:i + 1], au_known=known[i:i + 1])
                                      for i in range(4)])
        torch.manual_seed(0)
        hists.append(pretrain_au_module(FedPsyAU(), [batch], epochs=1, progress=False))
    assert hists[0] == hists[1]


def test_au_module_f1_counts_known_labels_only():
    from psyau_graph.train.metrics import au_f1
    from psyau_graph.train.pretrain import au_module_f1

    torch.manual_seed(0)
    model = FedPsyAU()
    rois, au = _data(8)
    known = torch.ones(8, 12)
    known[:3] = 0
    res = au_module_f1(model, (rois, au, known), batch_size=3)
    model.eval()
    with torch.no_grad():
        _, afe, gat, _ = model.au_module()(rois)
    assert res["labels_known"] == 5 * 12 and res["n"] == 8 and res["threshold"] == 0.5
    assert res["afe"] == au_f1(au, torch.sigmoid(afe), mask=known)
    assert res["gat"] == au_f1(au, torch.sigmoid(gat), mask=known)
    assert model.au_module().training is False  # restored to the mode it had
