"""FedRep / FedAS / ELLP and robust aggregation on the Flower simulation engine (Ray): the same
per-client numbers as the in-process engine, and the personal head never crosses the wire.
Tolerances as in tests/test_flower_sim.py (one torch thread on both sides)."""
from __future__ import annotations

import math

import pytest
import torch

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.run import FederatedRun
from psyau_graph.federated.task import ToyTask, make_toy_data

pytestmark = pytest.mark.slow

_RUNS = ["fedrep", "fedas", "ellp", "robust"]
BASE = dict(clients=3, rounds=2, local_epochs=3, lr=0.02, batch_size=16, repeats=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sp")  # short: Ray's socket paths under it must stay < 108 bytes
    return make_toy_data(tmp / "toy.pt", subjects=6, per_subject=20, seed=11, shift=1.5), tmp


def _both(toy, name, **kw):
    from psyau_graph.federated.flower.simulation import run_simulation

    data, tmp = toy
    cfg = FederatedConfig(**BASE, **kw)
    sim = run_simulation(data, cfg, {"name": "toy"}, None, num_cpus=2, work_dir=tmp / f"w{_RUNS.index(name)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray ClientApp actor (one CPU)
    try:
        ref = FederatedRun(data, cfg, task=ToyTask(), progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return sim, ref


def _same_records(sim, ref):
    key = lambda r: (r["round"], r["client"])  # noqa: E731
    s, i = {key(r): r for r in sim["records"]}, {key(r): r for r in ref["records"]}
    assert set(s) == set(i) and len(s) == BASE["clients"] * BASE["rounds"]
    for k in i:
        assert s[k]["status"] == i[k]["status"] == "ok", k
        assert s[k]["n_train"] == i[k]["n_train"] and s[k]["n_test"] == i[k]["n_test"]
        assert math.isclose(s[k]["train_loss"], i[k]["train_loss"], rel_tol=1e-4), k
        assert math.isclose(s[k]["loss"], i[k]["loss"], rel_tol=1e-4), k
        assert s[k]["uf1"] == pytest.approx(i[k]["uf1"], abs=1e-12)
        assert s[k]["uar"] == pytest.approx(i[k]["uar"], abs=1e-12)


@pytest.mark.parametrize("strategy", ["fedrep", "fedas", "ellp"])
def test_personal_strategy_on_simulation_matches_inprocess(toy, strategy):
    sim, ref = _both(toy, strategy, strategy=strategy, head_epochs=1)
    _same_records(sim, ref)
    keys = set(sim["shared_keys"])
    assert keys and not any(k.startswith("head.") for k in keys)   # the body only
    received = sim["strategy_object"].received
    train = [c for c in received if "arrays" in c]
    assert len(train) == BASE["clients"] * BASE["rounds"]
    for c in train:
        assert set(c["arrays"].keys()) == keys
        if strategy == "fedrep":
            assert set(c.keys()) == {"arrays", "metrics"}
        else:  # the body's trainable parameters' Fisher information, nothing of the head
            assert set(c.keys()) == {"arrays", "metrics", "fisher"}
            assert set(c["fisher"].keys()) == keys


def test_robust_aggregation_on_simulation_matches_inprocess(toy):
    # bound 1.02: client 2's update norm is 1.03-1.06 x the median in both rounds (in-process)
    sim, ref = _both(toy, "robust", strategy="fedprox", aggregation="median", norm_bound=1.02)
    _same_records(sim, ref)
    # the same updates were scaled down on both engines
    scaled_sim = sorted((r["round"], r["client"]) for r in sim["scaled"])
    assert scaled_sim and scaled_sim == sorted((r["round"], r["client"]) for r in ref["scaled"])
