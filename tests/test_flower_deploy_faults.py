"""Crash injection on the deployment engine (loopback, 3 SuperNodes, one ``flwr run`` each):
a declared failure is recorded and kept out of the headline mean; below the quorum the run
stops with one line naming the client and the round; a programming error in a ClientApp
stops the run, its traceback in that node's log. Every process is stopped by PID."""
from __future__ import annotations

import pytest

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.strategy import ClientCrashed
from psyau_graph.federated.run import RoundFailed
from psyau_graph.federated.task import make_toy_data

pytestmark = [pytest.mark.slow, pytest.mark.loopback]


def _cfg(**kw):
    return FederatedConfig(**{**dict(clients=3, rounds=2, local_epochs=1, lr=0.02, batch_size=16,
                                      repeats=1, strategy="fedavg"), **kw})


def test_deployment_engine_crash_injection(tmp_path):
    from psyau_graph.federated.flower.deployment import LocalDeployment

    labs = [make_toy_data(tmp_path / f"lab{i}" / "toy.pt", subjects=3, per_subject=20, seed=i + 1).parent
            for i in range(3)]
    dep = LocalDeployment(tmp_path / "run", labs, startup_timeout=120)
    try:
        dep.start()
        # a declared failure of client 1 in round 2, quorum 2: recorded, not averaged
        res = dep.run(_cfg(min_clients=2), {"name": "toy", "fail": [[1, 2]]}, tmp_path / "declared",
                      timeout=600)
        assert [(f["round"], f["client"]) for f in res["failures"]] == [(2, 1)]
        assert "injected failure of client 1 in round 2" in res["failures"][0]["error"]
        final = {r["client"]: r for r in res["records"] if r["round"] == 2}
        assert final[1]["status"] == "failed" and "injected failure" in final[1]["error"]
        assert final[0]["status"] == final[2]["status"] == "ok"
        mean = res["summary"]["fedavg"]["mean"]
        assert mean["clients"] == [0, 2]
        assert mean["uf1"] == pytest.approx((final[0]["uf1"] + final[2]["uf1"]) / 2)
        # below the default quorum (every client): one line naming the client and the round
        with pytest.raises(RoundFailed) as e:
            dep.run(_cfg(), {"name": "toy", "fail": [[0, 1]]}, tmp_path / "quorum", timeout=600)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("round 1: 2 of 3 client updates accepted")
        assert "client 0: ClientFailure('injected failure of client 0 in round 1')" in msg
        assert not (tmp_path / "quorum" / "metrics.json").exists()
        # a programming error in client 2's ClientApp: the run stops, even with quorum 1
        with pytest.raises(ClientCrashed, match="round 1: the ClientApp of node .* raised") as e:
            dep.run(_cfg(min_clients=1), {"name": "toy", "bug": [[2, 1]]}, tmp_path / "bug", timeout=600)
        assert "injected programming error of client 2 in round 1" in str(e.value)
        assert not (tmp_path / "bug" / "metrics.json").exists()
        node_log = dep.log("supernode2")
        assert "Traceback" in node_log and "injected programming error of client 2" in node_log
    finally:
        dep.stop()
    assert dep.alive() == []
    assert all(p.poll() is not None for _, p in dep.procs)
