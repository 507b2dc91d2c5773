"""Flower simulation engine (Ray): same numbers as the in-process engine, and only arrays and
numeric metrics cross the wire. One simulation run is shared by every assertion (Ray start-up
is slow)."""
from __future__ import annotations

import math

import pytest
import torch

from psyau_graph.federated import core
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.run import FederatedRun
from psyau_graph.federated.task import ToyTask, make_toy_data

pytestmark = pytest.mark.slow

CFG = dict(clients=3, rounds=2, local_epochs=2, strategy="p-fedprox", lr=0.02, batch_size=16,
           repeats=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from psyau_graph.federated.flower.simulation import run_simulation

    tmp = tmp_path_factory.mktemp("sim")
    data = make_toy_data(tmp / "toy.pt", subjects=6, per_subject=20, seed=11, shift=1.5)
    cfg = FederatedConfig(**CFG)
    sim = run_simulation(data, cfg, {"name": "toy"}, tmp / "out", num_cpus=2, work_dir=tmp / "w")
    # Ray's ClientApp actors run torch with one thread (one CPU each); the reference does too,
    # since the thread count changes the float summation order of CPU kernels.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = FederatedRun(data, cfg, task=ToyTask(), progress=False).run()
    finally:
        torch.set_num_threads(threads)
    return sim, ref, tmp


def test_simulation_matches_inprocess(runs):
    """Same seeds, same data → same per-client numbers.

    Tolerance: both engines run the identical float32 code (one torch thread each) on the
    same inputs; what differs is the order in which Flower's FedAvg sums client updates
    (replies arrive in any order) and NumPy vs torch accumulation there, a relative rounding
    difference of ~1e-7 per weight, which two rounds of a few Adam steps on a small MLP keep
    far below 1e-4 (observed ~1e-7). So: rtol 1e-4 on losses, identical UF1/UAR (a flipped
    prediction would show up there). With torch's default 2 threads in-process instead, test
    losses differ by ~1e-3 relative — that is the CPU kernels' reduction order, not the
    engines.
    """
    sim, ref, _ = runs
    key = lambda r: (r["round"], r["client"])  # noqa: E731
    s = {key(r): r for r in sim["records"]}
    i = {key(r): r for r in ref["records"]}
    assert set(s) == set(i) and len(s) == 3 * 2
    for k in i:
        assert s[k]["n_train"] == i[k]["n_train"] and s[k]["n_test"] == i[k]["n_test"]
        assert math.isclose(s[k]["train_loss"], i[k]["train_loss"], rel_tol=1e-4), k
        assert math.isclose(s[k]["loss"], i[k]["loss"], rel_tol=1e-4), k
        assert s[k]["uf1"] == pytest.approx(i[k]["uf1"], abs=1e-12)
        assert s[k]["uar"] == pytest.approx(i[k]["uar"], abs=1e-12)


def test_server_wrote_outputs(runs):
    _, _, tmp = runs
    for name in ("metrics.json", "metrics.csv", "clients_uf1_uar.png", "loss_by_round.png"):
        assert (tmp / "out" / name).exists(), name


def test_only_arrays_and_numeric_metrics_cross_the_wire(runs):
    sim, _, _ = runs
    strategy = sim["strategy_object"]
    keys = set(sim["shared_keys"])
    assert strategy.received, "no replies were recorded"
    n_arrays = 0
    for content in strategy.received:
        assert set(content.keys()) <= {"arrays", "metrics"}
        assert len(content.config_records) == 0
        for rec in content.array_records.values():
            n_arrays += 1
            state = rec.to_torch_state_dict()
            assert set(state) == keys          # exactly the shared model tensors
            model = ToyTask().make_model().state_dict()
            for k, t in state.items():
                assert t.dtype == torch.float32 and t.shape == model[k].shape
        for rec in content.metric_records.values():
            assert set(rec) <= {"num-examples", "train_loss", "client-index", "n_train", "uf1",
                                "uar", "acc", "loss", "dp-weight"}
            for v in rec.values():
                assert isinstance(v, (int, float)) and not isinstance(v, bool)
    assert n_arrays == 3 * 2                     # one update per client per round
    # BatchNorm running statistics never left the clients (FedBN)
    assert not any("running" in k for k in keys)
    assert core.shared_keys(ToyTask().make_model()) == sim["shared_keys"]
