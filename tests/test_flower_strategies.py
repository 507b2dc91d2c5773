"""Flower strategies for FedRep / FedAS / ELLP and robust aggregation, by hand computation on
mock replies (Flower ``Message`` / ``RecordDict`` / ``ArrayRecord`` built directly, no
processes)."""
from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import MessageType
from flwr.supercore.task_identity import TaskIdentity

from psyau_graph.federated import core
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.strategy import (ELLP, FedAS, FedRep, PFedProx, TrackedFedAvg,
                                                   TrackedFedProx, make_strategy)
from psyau_graph.federated.run import RoundFailed


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Messages built outside a Flower run need a (fake) task identity of this process."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture
def all_nodes(monkeypatch):
    """Flower's node sampling replaced by 'every node of the grid' (no SuperLink)."""
    from flwr.serverapp.strategy import fedavg as fedavg_mod
    monkeypatch.setattr(fedavg_mod, "sample_nodes", lambda grid, m, n: (list(grid.nodes), list(grid.nodes)))


class _Grid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return list(self.nodes)


def _reply(node: int, arrays: dict, n: int, fisher: dict | None = None, loss: float = 0.5) -> Message:
    req = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node,
                  message_type=MessageType.TRAIN)
    TaskIdentity._node_id = node  # the reply's source node (restored by the fixture)
    content = {"arrays": ArrayRecord(dict(arrays)),
               "metrics": MetricRecord({"num-examples": n, "train_loss": loss, "client-index": node % 10})}
    if fisher is not None:
        content["fisher"] = ArrayRecord(dict(fisher))
    return Message(RecordDict(content), reply_to=req)


def _t(*v):
    return torch.tensor(list(v), dtype=torch.float32)


BODY = {"body.w": torch.zeros(2), "body.m": torch.zeros(1)}  # body.m: a buffer (no Fisher)


def _personal(cls, **kw):
    fisher = ["body.w"] if cls is not FedRep else None
    s = cls(personal_prefixes=("head",), fisher_keys=fisher, min_clients=2, min_train_nodes=1,
            min_available_nodes=1, **kw)
    s._remember_reference(ArrayRecord(dict(BODY)))
    return s


# ----------------------------------------------------------------- FedRep / FedAS / ELLP
def test_fedrep_aggregates_the_sample_weighted_body_and_rejects_personal_tensors():
    s = _personal(FedRep)
    replies = [_reply(1, {"body.w": _t(1, 2), "body.m": _t(4)}, 10),
               _reply(2, {"body.w": _t(3, 6), "body.m": _t(0)}, 30),
               # a reply that leaks the personal head: wrong key set, not aggregated
               _reply(3, {"body.w": _t(100, 100), "body.m": _t(100), "head.w": _t(9)}, 60)]
    arrays, metrics = s.aggregate_train(1, replies)
    out = arrays.to_torch_state_dict()
    assert set(out) == {"body.w", "body.m"}                      # never a personal key
    # (10·[1,2] + 30·[3,6]) / 40 = [2.5, 5]; (10·4 + 30·0) / 40 = 1
    assert torch.allclose(out["body.w"], _t(2.5, 5.0)) and torch.allclose(out["body.m"], _t(1.0))
    assert [r["client"] for r in s.rejected] == ["3"] and "head.w" in s.rejected[0]["reason"]
    assert metrics["train_loss"] == pytest.approx(0.5)


@pytest.mark.parametrize("cls", [FedAS, ELLP])
def test_fisher_strategies_aggregate_with_fisher_weights(cls):
    s = _personal(cls, eps=1e-12)
    replies = [_reply(1, {"body.w": _t(1, 2), "body.m": _t(4)}, 2, fisher={"body.w": _t(1, 0)}),
               _reply(2, {"body.w": _t(3, 4), "body.m": _t(1)}, 1, fisher={"body.w": _t(3, 1)})]
    out = s.aggregate_train(1, replies)[0].to_torch_state_dict()
    assert set(out) == {"body.w", "body.m"}
    # w0 = (2·1·1 + 1·3·3) / (2·1 + 1·3) = 11/5; w1: only node 2 has information → 4;
    # body.m (no Fisher: a buffer) by sample count: (2·4 + 1·1) / 3 = 3
    assert torch.allclose(out["body.w"], _t(2.2, 4.0)) and torch.allclose(out["body.m"], _t(3.0))
    # the same hand values in whichever order the replies arrive
    again = _personal(cls, eps=1e-12).aggregate_train(1, replies[::-1])[0].to_torch_state_dict()
    assert all(torch.equal(again[k], out[k]) for k in out)


@pytest.mark.parametrize("cls", [FedAS, ELLP])
def test_fisher_strategies_reject_a_missing_or_bad_fisher(cls):
    s = _personal(cls)
    good = [_reply(1, {"body.w": _t(1, 2), "body.m": _t(4)}, 2, fisher={"body.w": _t(1, 1)}),
            _reply(2, {"body.w": _t(3, 4), "body.m": _t(1)}, 1, fisher={"body.w": _t(1, 1)})]
    bad = [_reply(3, {"body.w": _t(9, 9), "body.m": _t(9)}, 5),                                # none
           _reply(4, {"body.w": _t(9, 9), "body.m": _t(9)}, 5, fisher={"body.w": _t(-1, 1)}),  # < 0
           _reply(5, {"body.w": _t(9, 9), "body.m": _t(9)}, 5, fisher={"body.m": _t(1)})]      # keys
    out = s.aggregate_train(1, good + bad)[0].to_torch_state_dict()
    assert torch.allclose(out["body.w"], _t(5 / 3, 8 / 3))  # equal Fisher: the sample-weighted mean
    reasons = {r["client"]: r["reason"] for r in s.rejected}
    assert set(reasons) == {"3", "4", "5"}
    assert "no Fisher" in reasons["3"] and ">= 0" in reasons["4"] and "missing ['body.w']" in reasons["5"]
    with pytest.raises(RoundFailed):   # quorum 2, one accepted
        s.aggregate_train(2, [good[0], bad[0]])


@pytest.mark.parametrize("cls", [FedRep, FedAS, ELLP])
def test_personal_strategies_send_only_the_body(cls, all_nodes):
    s = _personal(cls)
    body = ArrayRecord({"body.w": _t(1, 2), "body.m": _t(3)})
    for msgs in (s.configure_train(1, body, ConfigRecord(), _Grid([7, 8])),
                 s.configure_evaluate(1, body, ConfigRecord(), _Grid([7, 8]))):
        msgs = list(msgs)
        assert sorted(int(m.metadata.dst_node_id) for m in msgs) == [7, 8]
        for m in msgs:
            assert set(m.content["arrays"].keys()) == {"body.w", "body.m"}
    with pytest.raises(ValueError, match="personal tensors"):
        s.configure_train(2, ArrayRecord({"body.w": _t(1, 2), "head.w": _t(1)}), ConfigRecord(), _Grid([7]))


def test_make_strategy_builds_the_personal_strategies():
    assert isinstance(make_strategy("fedrep", num_nodes=2, personal_prefixes=("head",)), FedRep)
    s = make_strategy("ellp", num_nodes=2, personal_prefixes=("head",), fisher_keys=["body.w"])
    assert isinstance(s, ELLP) and s.fisher_keys == ["body.w"]
    with pytest.raises(ValueError, match="fisher_keys"):
        make_strategy("fedas", num_nodes=2, personal_prefixes=("head",))
    with pytest.raises(ValueError, match="personal_prefixes"):
        make_strategy("fedrep", num_nodes=2)
    with pytest.raises(ValueError, match="fedavg and fedprox"):
        make_strategy("fedrep", num_nodes=2, personal_prefixes=("head",), aggregation="median")


# ----------------------------------------------------------------- robust aggregation
# three honest nodes and node 4, whose update is 100× the honest one (sent: zeros)
HONEST = {1: _t(1.0, 10.0), 2: _t(2.0, 20.0), 3: _t(3.0, 30.0)}
ATTACK = _t(200.0, 2000.0)   # 100 × node 2's update
N = {1: 10, 2: 10, 3: 20, 4: 10}


def _robust_replies():
    upd = {**HONEST, 4: ATTACK}
    return [_reply(j, {"w": upd[j]}, N[j]) for j in (1, 2, 3, 4)]


def _robust(cls, **kw):
    s = cls(min_clients=4, min_train_nodes=1, min_available_nodes=1, **kw)
    s._remember_reference(ArrayRecord({"w": torch.zeros(2)}))
    return s


HONEST_MEAN = (10 * HONEST[1] + 10 * HONEST[2] + 20 * HONEST[3]) / 40   # [2.25, 22.5]


@pytest.mark.parametrize("cls", [TrackedFedAvg, TrackedFedProx])
@pytest.mark.parametrize("kw,hand", [
    # median of {1, 2, 3, 200} = 2.5, of {10, 20, 30, 2000} = 25
    (dict(aggregation="median"), _t(2.5, 25.0)),
    # trimmed mean, beta 0.25: one value cut at each end → mean of {2, 3}, {20, 30}
    (dict(aggregation="trimmed-mean", trim_fraction=0.25), _t(2.5, 25.0)),
])
def test_median_and_trimmed_mean_with_one_scaled_update(cls, kw, hand):
    plain = _robust(cls).aggregate_train(1, _robust_replies())[0].to_torch_state_dict()["w"]
    s = _robust(cls, **kw)
    replies = _robust_replies()
    out = s.aggregate_train(1, replies)[0].to_torch_state_dict()["w"]
    assert torch.allclose(out, hand)
    # the plain weighted mean is dragged far off; the robust result stays near the honest mean
    assert float((plain - HONEST_MEAN).norm()) > 100 * float((out - HONEST_MEAN).norm())
    # the received replies were not emptied by Flower's aggregation (it pops what it reads)
    assert all(set(c["arrays"].keys()) == {"w"} for c in s.received)


def _norm_bound_hand(factor: float) -> torch.Tensor:
    norms = {j: float(v.norm()) for j, v in {**HONEST, 4: ATTACK}.items()}
    med = sorted(norms.values())[1:3]
    med = (med[0] + med[1]) / 2                  # median of 4 norms: mean of the middle two
    bounded = ATTACK * (factor * med / norms[4])
    return (10 * HONEST[1] + 10 * HONEST[2] + 20 * HONEST[3] + 10 * bounded) / 50


@pytest.mark.parametrize("cls", [TrackedFedAvg, TrackedFedProx])
def test_norm_bound_scales_the_outlier_to_the_bound(cls):
    s = _robust(cls, norm_bound=2.0)
    out = s.aggregate_train(1, _robust_replies())[0].to_torch_state_dict()["w"]
    assert torch.allclose(out, _norm_bound_hand(2.0), rtol=1e-6)
    assert [(r["node"], r["round"]) for r in s.scaled] == [(4, 1)]
    rec = s.scaled[0]
    assert rec["norm"] * rec["scale"] == pytest.approx(2.0 * rec["median"])
    plain = _robust(cls).aggregate_train(1, _robust_replies())[0].to_torch_state_dict()["w"]
    assert float((plain - HONEST_MEAN).norm()) > 10 * float((out - HONEST_MEAN).norm())


def test_norm_bound_measures_pfedprox_updates_against_each_nodes_mixture(all_nodes):
    """P-FedProx node i is sent its own mixture W_i; its update is Ŵ_i − W_i."""
    s = PFedProx(theta=0.5, min_clients=3, min_train_nodes=1, min_available_nodes=1, norm_bound=2.0)
    s._remember_reference(ArrayRecord({"w": torch.zeros(1)}))
    s.aggregate_train(1, [_reply(j, {"w": _t(v)}, 10) for j, v in ((1, 0.0), (2, 2.0), (3, 4.0))])
    msgs = list(s.configure_train(2, ArrayRecord({"w": _t(2.0)}), ConfigRecord(), _Grid([1, 2, 3])))
    sent = {int(m.metadata.dst_node_id): float(m.content["arrays"]["w"].numpy()[0]) for m in msgs}
    # θ = 0.5: W_1 = 0.5·0 + 0.25·2 + 0.25·4 = 1.5; W_2 = 0.5·2 + 0.25·(0 + 4) = 2; W_3 = 2.5
    assert sent == pytest.approx({1: 1.5, 2: 2.0, 3: 2.5})
    # updates Δ = +1, +1, +100 (node 3) → median norm 1, bound 2: node 3 lands at 2.5 + 2
    s.aggregate_train(2, [_reply(1, {"w": _t(2.5)}, 10), _reply(2, {"w": _t(3.0)}, 10),
                          _reply(3, {"w": _t(102.5)}, 10)])
    assert [r["node"] for r in s.scaled] == [3]
    assert float(s.hat[3]["w"]) == pytest.approx(4.5)
    assert float(s.hat[1]["w"]) == pytest.approx(2.5)


def test_robust_options_are_checked():
    with pytest.raises(ValueError, match="aggregation"):
        TrackedFedAvg(aggregation="mode")
    with pytest.raises(ValueError, match="trim_fraction"):
        TrackedFedAvg(aggregation="trimmed-mean", trim_fraction=0.5)
    with pytest.raises(ValueError, match="differential privacy"):
        FederatedConfig(strategy="fedavg", aggregation="median", dp_noise_multiplier=1.0)
    with pytest.raises(ValueError, match="differential privacy"):
        FederatedConfig(strategy="fedprox", norm_bound=2.0, dp_noise_multiplier=1.0)


# ----------------------------------------------------------------- server-side state
def test_strategy_state_round_trips_through_a_safe_checkpoint(tmp_path, all_nodes):
    from psyau_graph.train.checkpoint import atomic_torch_save, safe_torch_load

    s = PFedProx(theta=0.9, min_clients=2, min_train_nodes=1, min_available_nodes=1, norm_bound=2.0)
    s._remember_reference(ArrayRecord({"w": torch.zeros(2)}))
    s.aggregate_train(1, [_reply(1, {"w": _t(1, 2)}, 10), _reply(2, {"w": _t(3, 4)}, 30)])
    atomic_torch_save(s.state_dict(), tmp_path / "strategy.pt")
    back = PFedProx(theta=0.9, min_clients=2, min_train_nodes=1, min_available_nodes=1, norm_bound=2.0)
    back.load_state_dict(safe_torch_load(tmp_path / "strategy.pt", "strategy state"))
    # the checkpoint keys Ŵ_j/n_j by client index: they come back once the nodes say who is who
    assert back.hat == {}
    back.bind_nodes(s.node_client)
    assert set(back.hat) == {1, 2} and back.n == {1: 10, 2: 30}
    assert torch.equal(back.hat[2]["w"], _t(3, 4)) and back.node_client == s.node_client
    # the restored strategy sends the same personalised models as the original
    a = list(s.configure_train(2, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), _Grid([1, 2])))
    b = list(back.configure_train(2, ArrayRecord({"w": torch.zeros(2)}), ConfigRecord(), _Grid([1, 2])))
    for x, y in zip(a, b):
        assert torch.equal(x.content["arrays"].to_torch_state_dict()["w"],
                           y.content["arrays"].to_torch_state_dict()["w"])
    f = _personal(FedAS)
    f.aggregate_train(1, [_reply(1, {"body.w": _t(1, 2), "body.m": _t(4)}, 2, fisher={"body.w": _t(1, 1)}),
                          _reply(2, {"body.w": _t(1, 2), "body.m": _t(4)}, 2, fisher={"body.w": _t(1, 1)})])
    g = _personal(FedAS)
    g.load_state_dict(f.state_dict())
    assert g.node_client == {1: 1, 2: 2} and g.train_loss == f.train_loss
    with pytest.raises(ValueError, match="strategy state is for 'fedas'"):
        _personal(ELLP).load_state_dict(f.state_dict())


def test_run_config_carries_the_personalised_options():
    from psyau_graph.federated.flower.common import from_run_config, to_run_config
    cfg = FederatedConfig(strategy="fedrep", personal_prefixes=("head", "body.2"), head_epochs=3,
                          align_epochs=2, aggregation="mean", norm_bound=1.5)
    rc = to_run_config(cfg, {"name": "toy"})
    assert all(isinstance(v, (str, int, float, bool)) for v in rc.values())
    back, _, _ = from_run_config(rc)
    assert back.personal_prefixes == ("head", "body.2") and back.head_epochs == 3
    assert back.align_epochs == 2 and back.norm_bound == 1.5
    default, _, _ = from_run_config(to_run_config(FederatedConfig(strategy="fedas"), {"name": "toy"}))
    assert default.head_epochs is None and default.personal_prefixes == ()
    med, _, _ = from_run_config(to_run_config(FederatedConfig(strategy="fedavg", aggregation="trimmed-mean",
                                                              trim_fraction=0.25), {"name": "toy"}))
    assert med.aggregation == "trimmed-mean" and math.isclose(med.trim_fraction, 0.25)


# ----------------------------------------------------------------- CLI routing
class _Called(Exception):
    pass


def test_cli_sends_personal_and_robust_runs_to_the_flower_engine(tmp_path, monkeypatch, capsys):
    """``--engine simulation`` hands FedRep/FedAS/ELLP and robust fedavg to the simulation
    engine (no in-process redirect); the run itself is covered by test_flower_sim_personal."""
    import psyau_graph.federated.flower.simulation as sim_mod
    from psyau_graph.cli import main
    from psyau_graph.federated.task import make_toy_data

    data = make_toy_data(tmp_path / "toy.pt", subjects=4, per_subject=6, seed=1)
    seen = []

    def spy(data, cfg, task_spec, out_dir, **kw):
        seen.append(cfg)
        raise _Called

    monkeypatch.setattr(sim_mod, "run_simulation", spy)
    base = ["federate", "--task", "toy", "--data", str(data), "--clients", "2", "--rounds", "1",
            "--local-epochs", "1", "--repeats", "1", "--engine", "simulation", "--out", str(tmp_path / "o")]
    for strategy, extra in (("fedrep", ["--personal", "head", "--head-epochs", "2"]), ("fedas", []),
                            ("ellp", []), ("fedavg", ["--aggregation", "median", "--norm-bound", "2"])):
        with pytest.raises(_Called):
            main(base + ["--strategy", strategy] + extra)
        assert seen[-1].strategy == strategy
    assert seen[0].personal_prefixes == ("head",) and seen[0].head_epochs == 2
    assert seen[-1].aggregation == "median" and seen[-1].norm_bound == 2.0
    assert "in-process" not in capsys.readouterr().err    # no redirect warning
