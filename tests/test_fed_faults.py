"""Faults: crashing clients, bad updates, thresholds — in-process and in the Flower strategies
(mock replies, no Flower runtime)."""
from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from flwr.supercore.task_identity import TaskIdentity

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.strategy import PFedProx, TrackedFedAvg, make_strategy
from psyau_graph.federated.run import FederatedRun, RoundFailed
from psyau_graph.federated.task import ToyTask, make_toy_data


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("toy") / "toy.pt", subjects=4, per_subject=20, seed=5)


def _cfg(**kw):
    base = dict(clients=3, rounds=3, local_epochs=1, lr=0.02, batch_size=16, repeats=1,
                strategy="fedavg")
    base.update(kw)
    return FederatedConfig(**base)


def test_crashing_client_round_completes_logged_and_retried(toy, caplog):
    run = FederatedRun(toy, _cfg(min_clients=2), task=ToyTask(fail=[(1, 2)]), progress=False)
    res = run.run()
    assert [f["round"] for f in res["failures"]] == [2] and res["failures"][0]["client"] == 1
    assert "injected failure" in res["failures"][0]["error"]
    assert "failed during local training" in caplog.text
    status = {(r["round"], r["client"]): r["status"] for r in res["records"]}
    assert status[(2, 1)] == "failed" and status[(2, 0)] == "ok"
    assert status[(3, 1)] == "ok"            # retried next round
    assert len(res["records"]) == 9          # every round still evaluated every client


def test_too_few_clients_stops_with_clear_error(toy):
    run = FederatedRun(toy, _cfg(min_clients=3), task=ToyTask(fail=[(0, 1)]), progress=False)
    with pytest.raises(RoundFailed, match="below the quorum of 3"):
        run.run()


def test_nan_update_rejected_in_process_never_averaged(toy, monkeypatch):
    import psyau_graph.federated.run as run_mod
    real = run_mod.local_train
    seen = {}

    def poisoned(task, full, shared_in, data, cfg, **kw):
        seen[(kw["rnd"], kw["client"])] = shared_in
        st, shared, m = real(task, full, shared_in, data, cfg, **kw)
        if kw["client"] == 2 and kw["rnd"] == 1:
            shared = {k: torch.full_like(v, float("nan")) for k, v in shared.items()}
        return st, shared, m

    monkeypatch.setattr(run_mod, "local_train", poisoned)
    res = FederatedRun(toy, _cfg(rounds=2, min_clients=2), task=ToyTask(), progress=False).run()
    assert len(res["rejected"]) == 1 and res["rejected"][0]["client"] == "2"
    assert "NaN/Inf" in res["rejected"][0]["reason"]
    for k, v in seen[(2, 0)].items():
        assert torch.isfinite(v).all(), k     # the global of round 2 has no NaN


# ----------------------------------------------------------------- Flower strategies, mock replies
@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Messages built outside a Flower run need a (fake) task identity of this process."""
    from flwr.supercore.task_identity import TaskIdentity
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _reply(node: int, arrays: dict, n: int, loss: float = 0.5) -> Message:
    req = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node,
                  message_type=MessageType.TRAIN)
    TaskIdentity._node_id = node  # the reply's source node (restored by the fixture)
    rep = Message(RecordDict({"arrays": ArrayRecord({k: v for k, v in arrays.items()}),
                              "metrics": MetricRecord({"num-examples": n, "train_loss": loss,
                                                       "client-index": node % 10})}), reply_to=req)
    return rep


def _error_reply(node: int) -> Message:
    req = Message(RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)
    TaskIdentity._node_id = node
    rep = Message(Error(code=0, reason="client crashed"), reply_to=req)
    return rep


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)


def test_tracked_fedavg_weighted_average_and_rejections():
    # Prepare
    strat = TrackedFedAvg(min_clients=2, min_train_nodes=1, min_available_nodes=1)
    strat._remember_reference(ArrayRecord({"w": torch.zeros(2)}))
    replies = [_reply(11, {"w": torch.tensor([1.0, 2.0])}, 10),
               _reply(12, {"w": torch.tensor([4.0, 8.0])}, 30),
               _reply(13, {"w": torch.tensor([float("inf"), 0.0])}, 1000),
               _reply(14, {"w": torch.zeros(3)}, 1000),
               _error_reply(15)]
    # Execute
    arrays, metrics = strat.aggregate_train(1, replies)
    # Assert: 0.25*[1,2] + 0.75*[4,8] = [3.25, 6.5]
    assert torch.allclose(arrays.to_torch_state_dict()["w"], torch.tensor([3.25, 6.5]))
    reasons = sorted(r["reason"] for r in strat.rejected)
    assert len(reasons) == 2 and "NaN/Inf" in reasons[0] and "shape" in reasons[1]
    assert strat.failures[0]["node"] == 15 and "crashed" in strat.failures[0]["error"]
    with pytest.raises(RoundFailed):
        strat.aggregate_train(2, [replies[0], replies[2]])


def test_pfedprox_configure_train_sends_each_node_its_own_model():
    strat = PFedProx(theta=0.9, min_train_nodes=2, min_available_nodes=2)
    strat._remember_reference(ArrayRecord({"w": torch.zeros(1)}))
    strat.aggregate_train(1, [_reply(1, {"w": torch.tensor([1.0])}, 10),
                              _reply(2, {"w": torch.tensor([11.0])}, 30)])
    import psyau_graph.federated.flower.strategy as smod
    from flwr.serverapp.strategy import fedavg as fedavg_mod

    def fake_sample(grid, min_available, sample_size):
        return list(grid.get_node_ids()), list(grid.get_node_ids())

    orig = fedavg_mod.sample_nodes
    fedavg_mod.sample_nodes = fake_sample
    try:
        msgs = strat.configure_train(2, ArrayRecord({"w": torch.tensor([7.0])}), ConfigRecord(),
                                     _Grid([1, 2, 3]))
    finally:
        fedavg_mod.sample_nodes = orig
    got = {m.metadata.dst_node_id: m.content["arrays"].to_torch_state_dict()["w"].item() for m in msgs}
    assert got[1] == pytest.approx(0.9 * 1 + 0.1 * 11)
    assert got[2] == pytest.approx(0.9 * 11 + 0.1 * 1)
    assert got[3] == pytest.approx(7.0)        # unknown node: the global model
    assert all(m.content["config"]["proximal-mu"] == pytest.approx(0.001) for m in msgs)
    assert smod is not None


def test_make_strategy_rejects_local_and_unknown():
    with pytest.raises(ValueError, match="in-process"):
        make_strategy("local", num_nodes=2)
    with pytest.raises(ValueError, match="theta"):
        PFedProx(theta=2.0)


# ----------------------------------------------------------------- quorum, declared vs programming errors
def test_default_quorum_is_every_client_and_stops_with_one_line(toy):
    assert _cfg().quorum == 3
    run = FederatedRun(toy, _cfg(), task=ToyTask(fail=[(1, 2)]), progress=False)
    with pytest.raises(RoundFailed) as e:
        run.run()
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("round 2: 2 of 3 client updates accepted")
    assert "client 1: ClientFailure('injected failure of client 1 in round 2')" in msg


@pytest.mark.parametrize("value,quorum", [(None, 3), (2, 2), (0.5, 2), (1.0, 3), (0.1, 1)])
def test_quorum_from_count_or_fraction(value, quorum):
    assert _cfg(min_clients=value).quorum == quorum


@pytest.mark.parametrize("text,value", [("all", None), ("2", 2), ("0.5", 0.5)])
def test_parse_min_clients(text, value):
    from psyau_graph.federated.config import parse_min_clients
    assert parse_min_clients(text) == value


@pytest.mark.parametrize("bad", [0, 4, 1.5, 0.0, True, "2"])
def test_bad_min_clients_rejected(bad):
    with pytest.raises(ValueError, match="min_clients"):
        _cfg(min_clients=bad)


def test_programming_error_in_a_client_stops_the_run(toy):
    run = FederatedRun(toy, _cfg(min_clients=1), task=ToyTask(bug=[(2, 1)]), progress=False)
    with pytest.raises(TypeError, match="injected programming error of client 2 in round 1"):
        run.run()


def test_failed_client_never_enters_the_headline_mean(toy):
    # client 1 fails in the final round: its stale model's score is recorded, not averaged
    res = FederatedRun(toy, _cfg(min_clients=2), task=ToyTask(fail=[(1, 3)]), progress=False).run()
    final = {r["client"]: r for r in res["records"] if r["round"] == 3}
    assert final[1]["status"] == "failed" and "injected failure" in final[1]["error"]
    s = res["summary"]["fedavg"]
    assert s["mean"]["clients"] == [0, 2]
    assert s["mean"]["uf1"] == pytest.approx((final[0]["uf1"] + final[2]["uf1"]) / 2)
    c1 = s["clients"][1]
    assert c1["trained"] == 2 and c1["failed"] == 1 and "injected failure" in c1["why"][0]
    assert math.isnan(c1["uf1"])
    assert s["clients"][0]["trained"] == 3 and s["clients"][0]["failed"] == 0


def test_cli_below_quorum_one_line_exit_1(toy, tmp_path, capsys, monkeypatch):
    from psyau_graph.cli import main
    import psyau_graph.federated.task as task_mod

    real = task_mod.ToyTask.__init__

    def failing(self, *a, **kw):  # the CLI builds ToyTask(); inject a crash of client 0 in round 1
        real(self, *a, **{**kw, "fail": [(0, 1)]})

    monkeypatch.setattr(task_mod.ToyTask, "__init__", failing)
    rc = main(["federate", "--task", "toy", "--data", str(toy), "--clients", "2", "--rounds", "2",
               "--local-epochs", "1", "--repeats", "1", "--strategy", "fedavg", "--lr", "0.02",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("psyau federate: error: round 1: 1 of 2 client updates accepted")
    assert "client 0" in err[0]


def _failure_reply(node: int, reason: str) -> Message:
    req = Message(RecordDict({}), dst_node_id=node, message_type=MessageType.TRAIN)
    TaskIdentity._node_id = node
    return Message(RecordDict({"failure": ConfigRecord({"reason": reason, "client-index": node % 10})}),
                   reply_to=req)


def test_flower_declared_failure_recorded_programming_error_stops():
    from psyau_graph.federated.flower.strategy import ClientCrashed

    strat = TrackedFedAvg(min_clients=2, min_train_nodes=1, min_available_nodes=1)
    strat._remember_reference(ArrayRecord({"w": torch.zeros(2)}))
    ok = [_reply(11, {"w": torch.ones(2)}, 10), _reply(12, {"w": torch.ones(2)}, 10)]
    strat.aggregate_train(1, ok + [_failure_reply(13, "ClientFailure('disk gone')")])
    assert strat.failures[-1] == {"round": 1, "node": 13, "client": 3, "error": "ClientFailure('disk gone')"}
    with pytest.raises(RoundFailed, match=r"round 2: 1 of 2 .*client 3: ClientFailure\('disk gone'\)"):
        strat.aggregate_train(2, ok[:1] + [_failure_reply(13, "ClientFailure('disk gone')")])
    req = Message(RecordDict({}), dst_node_id=14, message_type=MessageType.TRAIN)
    TaskIdentity._node_id = 14
    raised = Message(Error(code=2, reason="<class 'TypeError'>:<'bug'>"), reply_to=req)
    with pytest.raises(ClientCrashed, match="node 14 raised <class 'TypeError'>"):
        strat.aggregate_train(3, ok + [raised])


@pytest.mark.slow
def test_simulation_engine_crash_injection(tmp_path):
    from psyau_graph.federated.flower.simulation import run_simulation
    from psyau_graph.federated.flower.strategy import ClientCrashed

    data = make_toy_data(tmp_path / "toy.pt", subjects=4, per_subject=20, seed=5)
    cfg = _cfg(rounds=2, min_clients=2)
    res = run_simulation(data, cfg, {"name": "toy", "fail": [[1, 2]]}, num_cpus=2)
    assert [(f["round"], f["client"]) for f in res["failures"]] == [(2, 1)]
    final = {r["client"]: r for r in res["records"] if r["round"] == 2}
    assert final[1]["status"] == "failed" and res["summary"]["fedavg"]["mean"]["clients"] == [0, 2]
    with pytest.raises(RoundFailed, match="round 1: 2 of 3"):
        run_simulation(data, _cfg(rounds=2), {"name": "toy", "fail": [[0, 1]]}, num_cpus=2)
    with pytest.raises(ClientCrashed, match="injected programming error"):
        run_simulation(data, _cfg(rounds=2, min_clients=1), {"name": "toy", "bug": [[2, 1]]}, num_cpus=2)


# ----------------------------------------------------------------- resume a killed server
_KILLER = """
import os, sys
import psyau_graph.federated.run as run_mod
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.task import ToyTask
real = run_mod.FederatedRun._save_state
def save_then_die(self, repeat, rnd, *a):
    real(self, repeat, rnd, *a)
    if rnd == 2:
        os._exit(9)   # the server process dies right after round 2's checkpoint
run_mod.FederatedRun._save_state = save_then_die
cfg = FederatedConfig(**eval(sys.argv[3]))
run_mod.FederatedRun(sys.argv[1], cfg, task=ToyTask(), progress=False).run(sys.argv[2])
"""


@pytest.mark.parametrize("strategy", ["p-fedprox", "fedavg"])
def test_resume_after_killed_server_matches_uninterrupted(toy, tmp_path, strategy, monkeypatch):
    import os
    import subprocess
    import sys

    kw = dict(clients=3, rounds=4, local_epochs=1, lr=0.02, batch_size=16, repeats=1, strategy=strategy)
    ref = FederatedRun(toy, FederatedConfig(**kw), task=ToyTask(), progress=False).run(tmp_path / "ref")
    out = tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(toy), str(out), repr(kw)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert not (out / "metrics.json").exists() and (out / "federation_state.pt").is_file()
    import psyau_graph.federated.run as run_mod
    trained = []
    real = run_mod.local_train

    def counting(*a, **k):
        trained.append(k["rnd"])
        return real(*a, **k)

    monkeypatch.setattr(run_mod, "local_train", counting)
    res = FederatedRun(toy, FederatedConfig(**kw), task=ToyTask(), progress=False).run(out, resume=True)
    assert trained == [3, 3, 3, 4, 4, 4]    # only the rounds the killed server had not finished
    key = lambda r: (r["round"], r["client"])  # noqa: E731
    got = sorted(res["records"], key=key)
    want = sorted(ref["records"], key=key)
    assert [key(r) for r in got] == [(r, c) for r in range(1, 5) for c in range(3)]
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("uf1", "uar", "acc", "loss", "train_loss")} == \
               {k: w[k] for k in ("uf1", "uar", "acc", "loss", "train_loss")}
    assert res["summary"] == ref["summary"]


def test_resume_refuses_other_config(toy, tmp_path):
    kw = dict(clients=3, rounds=2, local_epochs=1, lr=0.02, batch_size=16, repeats=1, strategy="fedavg")
    FederatedRun(toy, FederatedConfig(**kw), task=ToyTask(), progress=False).run(tmp_path)
    with pytest.raises(ValueError, match="configuration differs.*lr"):
        FederatedRun(toy, FederatedConfig(**{**kw, "lr": 0.01}), task=ToyTask(),
                     progress=False).run(tmp_path, resume=True)


def test_cli_resume_flag(toy, tmp_path, capsys):
    import json

    from psyau_graph.cli import main

    argv = ["federate", "--task", "toy", "--data", str(toy), "--clients", "2", "--rounds", "2",
            "--local-epochs", "1", "--repeats", "1", "--strategy", "fedavg", "--lr", "0.02",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    first = json.loads((tmp_path / "o" / "summary.json").read_text())["summary"]
    assert main(argv + ["--resume"]) == 0       # nothing left to train: same summary again
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["summary"] == first
    capsys.readouterr()
    # on a Flower engine this folder holds no checkpoint of that engine: one line, exit 2
    assert main(argv + ["--resume", "--engine", "simulation"]) == 2
    err = capsys.readouterr().err
    assert "--resume: nothing to resume in" in err and "fedavg" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------- robust aggregation
def test_median_trimmed_mean_and_norm_bound_on_states():
    from psyau_graph.federated import core
    states = [{"w": torch.tensor([1.0, 10.0])}, {"w": torch.tensor([2.0, 20.0])},
              {"w": torch.tensor([3.0, 30.0])}, {"w": torch.tensor([1000.0, -1000.0])}]
    assert torch.allclose(core.coordinate_median(states)["w"], torch.tensor([2.5, 15.0]))
    assert torch.allclose(core.trimmed_mean(states, 0.25)["w"], torch.tensor([2.5, 15.0]))
    assert torch.allclose(core.trimmed_mean(states, 0.0)["w"], torch.tensor([251.5, -235.0]))
    sent = {i: {"w": torch.zeros(2)} for i in range(4)}
    upd = {i: s for i, s in enumerate(states)}
    bounded, scaled = core.bound_update_norms(upd, sent, 2.0)
    assert [r["client"] for r in scaled] == [3]
    med = scaled[0]["median"]
    assert float(bounded[3]["w"].norm()) == pytest.approx(2.0 * med)
    assert torch.equal(bounded[0]["w"], states[0]["w"])
    with pytest.raises(ValueError, match="trim"):
        core.trimmed_mean(states, 0.5)


def _scaled_attacker(monkeypatch, factor=100.0, attacker=2):
    import psyau_graph.federated.run as run_mod
    real = run_mod.local_train

    def attack(task, full, shared_in, data, cfg, **kw):
        st, shared, m = real(task, full, shared_in, data, cfg, **kw)
        if kw["client"] == attacker:
            shared = {k: shared_in[k] + (v - shared_in[k]) * factor if v.is_floating_point() else v
                      for k, v in shared.items()}
        return st, shared, m

    monkeypatch.setattr(run_mod, "local_train", attack)


@pytest.mark.parametrize("kw", [dict(aggregation="median"), dict(aggregation="trimmed-mean", trim_fraction=0.25),
                                dict(norm_bound=2.0)])
def test_scaled_update_is_contained(toy, monkeypatch, kw):
    base = dict(clients=4, rounds=1, min_clients=None)

    def global_after(extra):
        run = FederatedRun(toy, _cfg(**base, **extra), task=ToyTask(), progress=False)
        seen = {}
        import psyau_graph.federated.run as run_mod
        real_agg = run_mod.ServerState.aggregate

        def spy(self, accepted, n, fishers=None):
            real_agg(self, accepted, n, fishers)
            seen["g"] = self.global_shared
        monkeypatch.setattr(run_mod.ServerState, "aggregate", spy)
        res = run.run()
        return seen["g"], res

    honest, _ = global_after({})
    _scaled_attacker(monkeypatch)
    attacked_mean, _ = global_after({})
    attacked_robust, res = global_after(kw)
    dist = lambda a: math.sqrt(sum(float(((a[k] - honest[k]) ** 2).sum()) for k in honest))  # noqa: E731
    assert dist(attacked_mean) > 10 * dist(attacked_robust)
    if "norm_bound" in kw:
        assert [r["client"] for r in res["scaled"]] == [2]


def test_robust_aggregation_refused_where_not_implemented():
    with pytest.raises(ValueError, match="fedavg and fedprox"):
        _cfg(strategy="p-fedprox", aggregation="median")
    from psyau_graph.federated.flower.server_app import check_flower_supported
    check_flower_supported(_cfg(norm_bound=2.0, aggregation="median"))  # Flower runs it too
    with pytest.raises(ValueError, match="local-only baseline runs in-process"):
        check_flower_supported(_cfg(strategy="local"))


def _eval_reply(node: int, uf1: float, n: int) -> Message:
    req = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node,
                  message_type=MessageType.EVALUATE)
    TaskIdentity._node_id = node
    return Message(RecordDict({"metrics": MetricRecord({"num-examples": n, "uf1": uf1, "uar": uf1,
                                                        "client-index": node % 10})}), reply_to=req)


def test_flower_strategy_prints_a_progress_line_per_round_off_a_terminal():
    import io

    from psyau_graph.progress import LineProgress

    strat = TrackedFedAvg(min_clients=2, min_train_nodes=1, min_available_nodes=1)
    stream = io.StringIO()  # not a terminal, as under nohup or a scheduler
    strat.progress = LineProgress(2, "federate fedavg (flower) split 0", "round", every_pct=0, stream=stream)
    for rnd in (1, 2):
        strat.aggregate_evaluate(rnd, [_eval_reply(11, 0.5, 10), _eval_reply(12, 0.7, 10)])
    lines = [ln for ln in stream.getvalue().splitlines() if ln.startswith("psyau progress")]
    assert len(lines) == 2
    assert "1/2 rounds" in lines[0] and "2/2 rounds" in lines[1]
    assert all("mean client UF1 0.600" in ln for ln in lines)


def test_flower_app_declares_every_run_config_key():
    # `flwr run` refuses a run-config key the app's pyproject.toml does not declare
    import tomllib
    from importlib import resources

    from psyau_graph.federated.config import FederatedConfig
    from psyau_graph.federated.flower.common import to_run_config

    app = resources.files("psyau_graph.federated.flower") / "app" / "pyproject.toml"
    declared = set(tomllib.loads(app.read_text())["tool"]["flwr"]["app"]["config"])
    sent = set(to_run_config(FederatedConfig(), {"name": "fedpsyau"}))
    assert sent <= declared, f"not declared in the app's pyproject.toml: {sorted(sent - declared)}"
