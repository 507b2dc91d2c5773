"""Federated core: hand-computed FedAvg / FedProx / P-FedProx numbers, shared keys, validation."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from psyau_graph.federated import core


def _s(**kw):
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in kw.items()}


def test_fedavg_weighted_by_sample_counts():
    # Prepare: three clients with 10, 30, 60 samples
    states = [_s(w=[1.0, 2.0], b=[0.0]), _s(w=[3.0, 4.0], b=[1.0]), _s(w=[5.0, 0.0], b=[2.0])]
    # Execute
    out = core.fedavg(states, [10, 30, 60])
    # Assert: 0.1*1+0.3*3+0.6*5 = 4.0 ; 0.1*2+0.3*4+0 = 1.4 ; 0.3+1.2 = 1.5
    assert torch.allclose(out["w"], torch.tensor([4.0, 1.4]))
    assert torch.allclose(out["b"], torch.tensor([1.5]))
    assert out["w"].dtype == torch.float32


def test_fedavg_zero_sample_client_has_no_weight_and_all_zero_raises():
    out = core.fedavg([_s(w=[2.0]), _s(w=[100.0])], [5, 0])
    assert torch.allclose(out["w"], torch.tensor([2.0]))
    with pytest.raises(ValueError, match="all weights are 0"):
        core.fedavg([_s(w=[2.0]), _s(w=[1.0])], [0, 0])
    with pytest.raises(ValueError, match="shape"):
        core.fedavg([_s(w=[2.0]), _s(w=[1.0, 2.0])], [1, 1])


def test_prox_term_is_half_mu_squared_norm_and_differentiable():
    lin = nn.Linear(2, 1, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        lin.bias.copy_(torch.tensor([3.0]))
    anchor = {"weight": torch.tensor([[0.0, 0.0]]), "bias": torch.tensor([1.0])}
    term = core.prox_term(lin, anchor, mu=0.5)
    # ||W-Wt||^2 = 1 + 4 + 4 = 9 -> 0.5/2 * 9 = 2.25  (squared, not un-squared norm 3 -> 0.75)
    assert math.isclose(term.item(), 2.25, rel_tol=1e-6)
    term.backward()
    # d/dW mu/2 ||W-A||^2 = mu (W-A)
    assert torch.allclose(lin.weight.grad, torch.tensor([[0.5, 1.0]]))
    assert torch.allclose(lin.bias.grad, torch.tensor([1.0]))
    with pytest.raises(ValueError):
        core.prox_term(lin, anchor, mu=-1.0)


def test_pfedprox_weights_hand_computed():
    w = core.pfedprox_weights({"a": 10, "b": 30, "c": 10}, "a", theta=0.9)
    # others: b 30, c 10 -> 0.1*0.75, 0.1*0.25
    assert w == pytest.approx({"a": 0.9, "b": 0.075, "c": 0.025})
    assert sum(w.values()) == pytest.approx(1.0)


def test_personalised_init_formula():
    states = {"a": _s(w=[1.0]), "b": _s(w=[11.0]), "c": _s(w=[21.0])}
    n = {"a": 10, "b": 30, "c": 10}
    out = core.personalised_init(states, n, theta=0.9)
    # a: 0.9*1 + 0.075*11 + 0.025*21 = 0.9 + 0.825 + 0.525 = 2.25
    assert out["a"]["w"].item() == pytest.approx(2.25, rel=1e-6)
    # b: 0.9*11 + 0.05*1 + 0.05*21 = 9.9 + 0.05 + 1.05 = 11.0
    assert out["b"]["w"].item() == pytest.approx(11.0, rel=1e-6)
    # c: 0.9*21 + 0.025*1 + 0.075*11 = 18.9 + 0.025 + 0.825 = 19.75
    assert out["c"]["w"].item() == pytest.approx(19.75, rel=1e-6)


def test_personalised_init_edge_cases():
    # one client -> its own model
    one = core.personalised_init({"a": _s(w=[3.0])}, {"a": 7})
    assert one["a"]["w"].item() == 3.0
    # a client with 0 samples gets omega = 0 in others' mixtures
    out = core.personalised_init({"a": _s(w=[1.0]), "b": _s(w=[5.0]), "z": _s(w=[1000.0])},
                                 {"a": 10, "b": 10, "z": 0}, theta=0.8)
    assert out["a"]["w"].item() == pytest.approx(0.8 * 1 + 0.2 * 5)
    # ... and itself still receives theta*own + others
    assert out["z"]["w"].item() == pytest.approx(0.8 * 1000 + 0.1 * 1 + 0.1 * 5)
    # all others have 0 samples -> own model
    lone = core.personalised_init({"a": _s(w=[1.0]), "b": _s(w=[9.0])}, {"a": 4, "b": 0})
    assert lone["a"]["w"].item() == 1.0
    # theta outside [0, 1]
    with pytest.raises(ValueError, match="theta"):
        core.personalised_init({"a": _s(w=[1.0]), "b": _s(w=[9.0])}, {"a": 1, "b": 1}, theta=1.5)
    # theta = 1 -> pure local; theta = 0 -> mean of the others
    assert core.personalised_init({"a": _s(w=[1.0]), "b": _s(w=[9.0])}, {"a": 1, "b": 1},
                                  theta=0.0)["a"]["w"].item() == 9.0


def test_personalised_init_subset_uses_last_known_models():
    # c was not sampled last round: its older model still contributes
    states = {"a": _s(w=[0.0]), "b": _s(w=[0.0]), "c": _s(w=[10.0])}
    out = core.personalised_init(states, {"a": 1, "b": 1, "c": 2}, theta=0.5, clients=["a"])
    assert list(out) == ["a"]
    assert out["a"]["w"].item() == pytest.approx(0.5 * 0 + (0.5 / 3) * 0 + (1.0 / 3) * 10)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.au = nn.Linear(3, 3)
        self.bn = nn.BatchNorm1d(3)
        self.head = nn.Linear(3, 2)


def test_shared_keys_fedbn_default_share_option_and_exclusion():
    net = _Net()
    keys = core.shared_keys(net)
    assert keys == ["au.weight", "au.bias", "bn.weight", "bn.bias", "head.weight", "head.bias"]
    with_bn = core.shared_keys(net, share_bn_stats=True)
    assert "bn.running_mean" in with_bn and "bn.running_var" in with_bn
    assert "bn.num_batches_tracked" not in with_bn
    assert core.shared_keys(net, exclude_prefixes=("au",)) == keys[2:]
    for p in net.head.parameters():
        p.requires_grad_(False)
    assert "head.weight" not in core.shared_keys(net)
    with pytest.raises(TypeError):
        core.shared_keys(net, exclude_prefixes="au")


@pytest.mark.parametrize("update, reason", [
    ({"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(1)}, "NaN/Inf"),
    ({"w": torch.tensor([1.0, float("inf")]), "b": torch.zeros(1)}, "NaN/Inf"),
    ({"w": torch.zeros(2)}, "wrong key set"),
    ({"w": torch.zeros(2), "b": torch.zeros(1), "x": torch.zeros(1)}, "wrong key set"),
    ({"w": torch.zeros(3), "b": torch.zeros(1)}, "shape"),
])
def test_bad_updates_are_rejected_and_never_averaged(update, reason, caplog):
    ref = {"w": torch.zeros(2), "b": torch.zeros(1)}
    good = {"w": torch.tensor([2.0, 4.0]), "b": torch.tensor([1.0])}
    accepted, rejected = core.filter_updates({"good": good, "bad": update}, ref, round=3)
    assert list(accepted) == ["good"]
    assert len(rejected) == 1 and rejected[0].client == "bad" and rejected[0].round == 3
    assert reason in rejected[0].reason
    assert "rejected" in caplog.text
    avg = core.fedavg(list(accepted.values()), [1])
    assert torch.equal(avg["w"], good["w"])
