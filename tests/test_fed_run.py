"""In-process federated engine on a tiny task: outputs, strategies, FedBN, config errors."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from psyau_graph.federated import core
from psyau_graph.federated.client import initial_state
from psyau_graph.federated.compare import compare_strategies
from psyau_graph.federated.config import STRATEGIES, FederatedConfig
from psyau_graph.federated.run import FederatedRun, ServerState
from psyau_graph.federated.task import ToyTask, make_toy_data


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("toy") / "toy.pt", subjects=6, per_subject=24,
                         seed=3, shift=1.5)


def _cfg(**kw):
    base = dict(clients=3, rounds=2, local_epochs=1, lr=0.02, batch_size=16, repeats=1)
    base.update(kw)
    return FederatedConfig(**base)


@pytest.mark.parametrize("kw, msg", [
    (dict(theta=1.5), "theta"), (dict(theta=-0.1), "theta"), (dict(strategy="fedsgd"), "strategy"),
    (dict(rounds=0), "rounds"), (dict(min_clients=4), "min_clients"), (dict(mu=-1.0), "mu"),
])
def test_bad_config_fails_before_anything_starts(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw)


def test_more_clients_than_subjects_is_rejected(toy):
    with pytest.raises(ValueError, match="exceeds the number of subjects"):
        FederatedRun(toy, _cfg(clients=7), task=ToyTask(), progress=False)


def test_run_writes_json_csv_plots_and_is_deterministic(toy, tmp_path):
    res = FederatedRun(toy, _cfg(strategy="fedavg"), task=ToyTask(), progress=False).run(tmp_path)
    again = FederatedRun(toy, _cfg(strategy="fedavg"), task=ToyTask(), progress=False).run()
    assert [r["uf1"] for r in res["records"]] == [r["uf1"] for r in again["records"]]
    assert [r["train_loss"] for r in res["records"]] == [r["train_loss"] for r in again["records"]]
    # one record per client per round, metrics in range
    assert len(res["records"]) == 3 * 2
    for r in res["records"]:
        assert 0.0 <= r["uf1"] <= 1.0 and 0.0 <= r["uar"] <= 1.0 and r["loss"] > 0
        assert r["n_train"] + r["n_test"] > 0 and r["status"] == "ok"
    # disjoint subject groups cover the data set; 70/30 inside each client
    sizes = res["client_sizes"]
    assert sum(sizes) == 6 * 24
    for c in range(3):
        r = [x for x in res["records"] if x["client"] == c][0]
        assert r["n_train"] + r["n_test"] == sizes[c]
        assert abs(r["n_train"] / sizes[c] - 0.7) < 0.05
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["config"]["strategy"] == "fedavg" and len(data["records"]) == 6
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 6 and {"uf1", "uar", "loss", "train_loss", "round", "client"} <= set(rows[0])
    for png in ("clients_uf1_uar.png", "loss_by_round.png"):
        assert (tmp_path / png).stat().st_size > 5000


def test_fedavg_global_equals_weighted_mean_of_client_updates(toy, monkeypatch):
    # Spy on local_train to capture what each client sends; the server's global must be
    # their sample-weighted mean (and the next round must start from it).
    import psyau_graph.federated.run as run_mod
    sent, received = [], []
    real = run_mod.local_train

    def spy(task, full, shared_in, data, cfg, **kw):
        received.append((kw["rnd"], kw["client"], shared_in))
        out = real(task, full, shared_in, data, cfg, **kw)
        sent.append((kw["rnd"], kw["client"], out[1], out[2]["n_train"]))
        return out

    monkeypatch.setattr(run_mod, "local_train", spy)
    FederatedRun(toy, _cfg(strategy="fedavg"), task=ToyTask(), progress=False).run()
    r1 = [s for s in sent if s[0] == 1]
    expect = core.fedavg([s[2] for s in r1], [s[3] for s in r1])
    for rnd, client, shared_in in received:
        if rnd == 2:
            for k in expect:
                assert torch.allclose(shared_in[k], expect[k], atol=1e-6)
    # round-1 inputs are the common initial model for everyone
    init = initial_state(ToyTask(), 0)
    for rnd, client, shared_in in received:
        if rnd == 1:
            assert torch.equal(shared_in["head.weight"], init["head.weight"])


def test_fedbn_keeps_batchnorm_stats_local():
    task = ToyTask()
    keys = core.shared_keys(task.make_model())
    assert not any("running" in k for k in keys)
    assert any(k.startswith("body.1.") for k in keys)  # BN affine params are shared
    keys_bn = core.shared_keys(task.make_model(), share_bn_stats=True)
    assert "body.1.running_mean" in keys_bn


def test_pfedprox_sends_personalised_models(toy, monkeypatch):
    import psyau_graph.federated.run as run_mod
    received = {}
    real = run_mod.local_train

    def spy(task, full, shared_in, data, cfg, **kw):
        received[(kw["rnd"], kw["client"])] = shared_in
        return real(task, full, shared_in, data, cfg, **kw)

    monkeypatch.setattr(run_mod, "local_train", spy)
    FederatedRun(toy, _cfg(strategy="p-fedprox", rounds=2), task=ToyTask(), progress=False).run()
    a, b = received[(2, 0)]["head.weight"], received[(2, 1)]["head.weight"]
    assert not torch.allclose(a, b)          # each client its own start
    assert torch.equal(received[(1, 0)]["head.weight"], received[(1, 1)]["head.weight"])


def test_server_state_pfedprox_matches_formula():
    s = ServerState("p-fedprox", {"w": torch.zeros(1)}, theta=0.9)
    s.aggregate({0: {"w": torch.tensor([1.0])}, 1: {"w": torch.tensor([11.0])}}, {0: 10, 1: 30})
    assert s.model_for(0)["w"].item() == pytest.approx(0.9 * 1 + 0.1 * 11)
    assert s.model_for(1)["w"].item() == pytest.approx(0.9 * 11 + 0.1 * 1)
    # a client never heard from gets the sample-weighted mean
    assert s.model_for(5)["w"].item() == pytest.approx(0.25 * 1 + 0.75 * 11)


def test_compare_strategies_runs_all_and_local_baseline_is_independent(toy, tmp_path):
    out = compare_strategies(toy, clients=3, rounds=2, local_epochs=1, task=ToyTask(),
                             out_dir=tmp_path, lr=0.02, batch_size=16, progress=False)
    assert set(out["summary"]) == set(STRATEGIES)  # the paper's comparison: all seven
    assert "p-fedprox" in out["table"] and "UF1" in out["table"]
    for s in out["summary"].values():
        assert set(s["clients"]) == {0, 1, 2}
    assert (tmp_path / "comparison.json").exists() and (tmp_path / "comparison.csv").exists()
    assert (tmp_path / "clients_uf1_uar.png").exists()
    with pytest.raises(ValueError, match="unknown strategies"):
        compare_strategies(toy, strategies=["fedsgd"], task=ToyTask())


def test_real_network_on_a_clip_cache(tmp_path):
    """The paper's network through the same engine (FedPsyAU, MEDataset, train_one_epoch)."""
    from _fed_helpers import make_clip_cache

    from psyau_graph.federated.task import FedPsyAUTask

    cache = make_clip_cache(tmp_path / "cache", clips_per_subject=5)
    torch.set_num_threads(1)
    task = FedPsyAUTask({"num_classes": 3})
    cfg = _cfg(clients=2, rounds=1, strategy="p-fedprox", lr=1e-3, batch_size=8)
    res = FederatedRun(cache, cfg, task=task, progress=False).run(tmp_path / "out")
    assert len(res["records"]) == 2
    for r in res["records"]:
        assert 0.0 <= r["uf1"] <= 1.0 and r["loss"] > 0 and r["train_loss"] > 0
    keys = core.shared_keys(task.make_model())
    assert not any(k.endswith("running_mean") for k in keys)   # FedBN on the real network
    assert (tmp_path / "out" / "metrics.json").exists()


def test_cli_federate_inprocess(toy, tmp_path, capsys):
    from psyau_graph.cli import main

    out = tmp_path / "fed"
    rc = main(["federate", "--data", str(toy), "--task", "toy", "--clients", "2", "--rounds", "2",
               "--local-epochs", "1", "--strategy", "local,p-fedprox", "--repeats", "1",
               "--lr", "0.02", "--batch-size", "16", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "p-fedprox" in text and "local" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"]) == {"local", "p-fedprox"}
    assert summary["engines"] == {"local": "inprocess", "p-fedprox": "inprocess"}
    for s in ("local", "p-fedprox"):
        assert (out / s / "metrics.csv").exists()
    assert (out / "clients_uf1_uar.png").exists() and (out / "loss_by_round.png").exists()


def test_cli_federate_bad_config_fails_before_starting(toy, tmp_path, capsys):
    from psyau_graph.cli import main

    rc = main(["federate", "--data", str(toy), "--task", "toy", "--theta", "1.5",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "theta" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    rc = main(["federate", "--data", str(toy), "--task", "toy", "--clients", "9",
               "--strategy", "fedavg", "--out", str(tmp_path / "y")])
    assert rc == 2 and "exceeds the number of subjects" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["federate", "--data", str(toy), "--strategy", "fedsgd", "--out", str(tmp_path)])
