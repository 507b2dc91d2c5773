"""FedAS and robust FedAvg on the Flower deployment engine (loopback, two SuperNodes with
their own data folders): the run completes, only the body is shared, the options reach the
ServerApp. Every process started is stopped by PID (process group)."""
from __future__ import annotations

import pytest

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.deployment import LocalDeployment
from psyau_graph.federated.task import make_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.loopback]


def test_fedas_and_trimmed_mean_on_deployment(tmp_path):
    lab_a = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=3, per_subject=20, seed=1)
    lab_b = make_toy_data(tmp_path / "labB" / "toy.pt", subjects=3, per_subject=20, seed=2)
    base = dict(clients=2, rounds=2, local_epochs=2, lr=0.02, batch_size=16, repeats=1)
    dep = LocalDeployment(tmp_path / "run", [lab_a.parent, lab_b.parent], tls=False,
                          startup_timeout=120)
    try:
        dep.start()
        fedas = dep.run(FederatedConfig(strategy="fedas", norm_bound=3.0, **base), {"name": "toy"},
                        tmp_path / "fedas", timeout=600)
        robust = dep.run(FederatedConfig(strategy="fedavg", aggregation="trimmed-mean", **base),
                         {"name": "toy"}, tmp_path / "fedavg", timeout=600)
    finally:
        dep.stop()
    assert dep.alive() == []
    for res in (fedas, robust):
        assert sorted((r["round"], r["client"]) for r in res["records"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
        assert all(r["status"] == "ok" for r in res["records"])
        assert {r["n_train"] + r["n_test"] for r in res["records"]} == {60}
    # FedAS shares the body only: the head (toy task: "head.*") never left the nodes
    assert fedas["shared_keys"] and not any(k.startswith("head.") for k in fedas["shared_keys"])
    assert any(k.startswith("head.") for k in robust["shared_keys"])
    assert fedas["config"]["strategy"] == "fedas" and fedas["config"]["norm_bound"] == 3.0
    assert robust["config"]["aggregation"] == "trimmed-mean"
    # with two nodes the median norm is their mean, so no norm exceeds 2× it: a 3× bound scales none
    assert fedas["scaled"] == []
