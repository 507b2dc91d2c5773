"""Differential privacy: epsilon accounting and Flower's clipping wrapper around our FedAvg."""
from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.strategy import TrackedFedAvg
from psyau_graph.federated.privacy import dp_epsilon, privacy_report, wrap_dp
from psyau_graph.federated.run import FederatedRun
from psyau_graph.federated.task import ToyTask, make_toy_data


def _classical_bound(sigma, rounds, delta):
    # RDP of the Gaussian mechanism R*a/(2 s^2), converted with eps = rdp + log(1/d)/(a-1)
    return min(rounds * a / (2 * sigma ** 2) + math.log(1 / delta) / (a - 1)
               for a in [1 + x / 100 for x in range(1, 20000)])


@pytest.mark.parametrize("sigma, rounds", [(1.0, 1), (2.0, 10), (5.0, 40)])
def test_epsilon_matches_gaussian_rdp_composition(sigma, rounds):
    eps = dp_epsilon(sigma, rounds, 1e-5)
    bound = _classical_bound(sigma, rounds, 1e-5)
    # Opacus converts RDP -> (eps, delta) with a slightly tighter formula than the classical one
    assert 0.8 * bound <= eps <= bound + 1e-6


def test_epsilon_monotone_and_bad_input():
    assert dp_epsilon(2.0, 10) < dp_epsilon(1.0, 10)
    assert dp_epsilon(2.0, 20) > dp_epsilon(2.0, 10)
    for bad in (dict(noise_multiplier=0.0, rounds=1), dict(noise_multiplier=1.0, rounds=0),
                dict(noise_multiplier=1.0, rounds=1, delta=1.5)):
        with pytest.raises(ValueError):
            dp_epsilon(**bad)
    rep = privacy_report(1.5, 0.5, 10, 5)
    assert rep["epsilon"] == pytest.approx(dp_epsilon(1.5, 10, 1e-5))
    assert rep["noise_std_on_mean_update"] == pytest.approx(1.5 * 0.5 / 5)


@pytest.fixture
def _identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _reply(node, w, n):
    req = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node,
                  message_type=MessageType.TRAIN)
    TaskIdentity._node_id = node
    return Message(RecordDict({"arrays": ArrayRecord({"w": w}),
                               "metrics": MetricRecord({"num-examples": n, "train_loss": 0.1,
                                                        "client-index": node, "dp-weight": 1})}),
                   reply_to=req)


def test_dp_wrapper_clips_updates_and_weighs_clients_equally(_identity):
    inner = TrackedFedAvg(min_clients=1, min_train_nodes=2, min_available_nodes=2)
    dp = wrap_dp(inner, noise_multiplier=1e-6, clipping_norm=1.0, num_clients=2)
    start = torch.tensor([1.0, 1.0, 1.0, 1.0])
    dp.current_arrays = ArrayRecord({"w": start})
    inner._remember_reference(ArrayRecord({"w": start}))
    replies = [_reply(1, start + torch.tensor([100.0, 0, 0, 0]), 10),
               _reply(2, start + torch.tensor([0, 3.0, 0, 0]), 990)]
    arrays, _ = dp.aggregate_train(1, replies)
    w = arrays.to_torch_state_dict()["w"]
    # each update clipped to norm 1, then averaged with equal weights (not 10 : 990)
    assert torch.allclose(w - start, torch.tensor([0.5, 0.5, 0.0, 0.0]), atol=1e-4)
    assert inner.weighted_by_key == "dp-weight"


def test_dp_config_rules(tmp_path):
    with pytest.raises(ValueError, match="not 'p-fedprox'"):
        FederatedConfig(strategy="p-fedprox", dp_noise_multiplier=1.0)
    with pytest.raises(ValueError, match="dp_clipping_norm"):
        FederatedConfig(strategy="fedavg", dp_noise_multiplier=1.0, dp_clipping_norm=0.0)
    data = make_toy_data(tmp_path / "t.pt", subjects=3, per_subject=10)
    with pytest.raises(ValueError, match="Flower engines"):
        FederatedRun(data, FederatedConfig(clients=2, strategy="fedavg", dp_noise_multiplier=1.0),
                     task=ToyTask())
