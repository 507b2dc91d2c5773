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
