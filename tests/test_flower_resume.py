"""Resume a federation on the Flower engines, and crash injection on the deployment engine.

Unit tests (mock replies, no Flower runtime): the strategies' state round-trips through the
server checkpoint with P-FedProx's per-lab models keyed by client index, not node id.
Loopback tests (slow, bounded, every process stopped by PID): a ``psyau federate --engine
simulation`` process killed after its round-2 checkpoint, then ``--resume``, reaches the
metrics of an uninterrupted run; on the deployment engine a new ServerApp (a new ``flwr run``
against the same SuperLink and SuperNodes) continues from the checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.checkpoint import (ResumeError, load_server_state, rng_state,
                                                     save_server_state, set_rng_state)
from psyau_graph.federated.flower.strategy import PFedProx, TrackedFedAvg
from psyau_graph.federated.task import make_toy_data

from test_fed_faults import _reply  # noqa: F401  (mock replies; its fixture gives them an identity)
from test_fed_faults import _task_identity  # noqa: F401

KEYS = ("uf1", "uar", "acc", "loss", "train_loss", "n_train", "n_test", "status")


# ----------------------------------------------------------------- unit: strategy state
def test_pfedprox_state_is_keyed_by_client_index_and_rebinds_to_new_nodes(tmp_path):
    strat = PFedProx(theta=0.9, min_train_nodes=2, min_available_nodes=2)
    strat._remember_reference(ArrayRecord({"w": torch.zeros(1)}))
    # node 11 reports client index 1, node 12 client index 2 (_reply: index = node % 10)
    strat.aggregate_train(1, [_reply(11, {"w": torch.tensor([1.0])}, 10),
                              _reply(12, {"w": torch.tensor([11.0])}, 30)])
    cfg = FederatedConfig(clients=3, strategy="p-fedprox")
    path = tmp_path / "federation_state.pt"
    save_server_state(path, config=cfg, repeat=0, rnd=1, global_arrays={"w": torch.tensor([8.5])},
                      strategy_state=strat.state_dict(), run_tag="ab" * 16, wall_time=1.0)
    state = load_server_state(path, cfg, 0)
    assert sorted(state["strategy"]["hat"]) == [1, 2] and state["strategy"]["n"] == {1: 10, 2: 30}

    again = PFedProx(theta=0.9, min_train_nodes=2, min_available_nodes=2)
    again.load_state_dict(state["strategy"])
    again.bind_nodes({507: 2, 93: 1})          # the restarted nodes got other ids
    assert list(again.hat) == [93, 507]          # canonical order: by client index
    assert again.hat[507]["w"].item() == 11.0 and again.n[93] == 10
    want = strat.personalised(11, ArrayRecord({})).to_torch_state_dict()["w"]
    got = again.personalised(93, ArrayRecord({})).to_torch_state_dict()["w"]
    assert torch.equal(got, want)                # the same mixture reaches the same lab
    short = PFedProx(theta=0.9)
    short.load_state_dict(state["strategy"])
    with pytest.raises(ResumeError, match=r"no node reports client index \[2\]"):
        short.bind_nodes({93: 1})


def test_tracked_state_round_trip_and_checkpoint_checks(tmp_path):
    strat = TrackedFedAvg(min_clients=1, min_train_nodes=1, min_available_nodes=1)
    strat.records = [{"round": 1, "client": 0, "uf1": 0.5}]
    strat.failures = [{"round": 1, "node": 3, "client": 2, "error": "ClientFailure('x')"}]
    strat.round_times = {1: 0.25}
    cfg = FederatedConfig(clients=3, strategy="fedavg")
    path = tmp_path / "federation_state.pt"
    save_server_state(path, config=cfg, repeat=1, rnd=1, global_arrays={"w": torch.ones(2)},
                      strategy_state=strat.state_dict(), run_tag="cd" * 16, wall_time=2.0)
    again = TrackedFedAvg(min_clients=1)
    again.load_state_dict(load_server_state(path, cfg, 1)["strategy"])
    assert again.records == strat.records and again.failures == strat.failures
    assert again.round_times == {1: 0.25}
    with pytest.raises(ResumeError, match="configuration differs.*lr"):
        load_server_state(path, FederatedConfig(clients=3, strategy="fedavg", lr=0.5), 1)
    with pytest.raises(ResumeError, match="split 1, not 0"):
        load_server_state(path, cfg, 0)
    with pytest.raises(ResumeError, match="no server checkpoint"):
        load_server_state(tmp_path / "missing.pt", cfg, 0)
    with pytest.raises(ValueError, match="strategy state is for 'fedavg'"):
        PFedProx().load_state_dict(again.state_dict())


def test_rng_state_round_trip():
    import random

    import numpy as np
    saved = rng_state()
    a = (random.random(), float(np.random.normal()), float(torch.rand(1)))
    set_rng_state(saved)
    assert (random.random(), float(np.random.normal()), float(torch.rand(1))) == a


def test_checkpoint_is_loaded_safely(tmp_path):
    """A checkpoint whose pickle would run code is refused (the safe loader)."""
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "federation_state.pt"
    torch.save({"format": "psyau_graph.flower_federation_state/1", "x": Evil()}, path)
    with pytest.raises(ValueError, match=f"refusing to load federation checkpoint {path}"):
        load_server_state(path, FederatedConfig(), 0)


def test_client_local_state_files(tmp_path):
    """Local-state files: written per round, two newest kept, restored only on resume."""
    from psyau_graph.federated.flower import client_app as ca

    class Ctx:
        def __init__(self):
            self.state, self.node_config = {}, {"state-dir": str(tmp_path)}

    extras = {"client-state": "", "repeat": 0}
    conf = {"run-tag": "ef" * 16, "resumed-from": 0}
    ctx = Ctx()
    for r in (1, 2, 3):
        ca._save_local(ctx, extras, conf, 4, r, {"w": torch.full((2,), float(r))})
    folder = tmp_path / ("ef" * 16)
    assert sorted(p.name for p in folder.iterdir()) == ["client4_round2.pt", "client4_round3.pt"]
    cfg = FederatedConfig(strategy="fedavg")
    from psyau_graph.federated.task import ToyTask
    # resumed at round 3 (server checkpoint after round 2): the round-2 state, not round 3's
    got = ca._local_state(Ctx(), ToyTask(), cfg, extras, 4, {**conf, "resumed-from": 2}, 2)
    assert torch.equal(got["w"], torch.full((2,), 2.0))
    # a fresh run never reads the files
    fresh = ca._local_state(Ctx(), ToyTask(), cfg, extras, 4, conf, 2)
    assert set(fresh) == set(ToyTask().make_model().state_dict())
    with pytest.raises(RuntimeError, match=r"client 5: no saved local state of a round <= 2 in"):
        ca._local_state(Ctx(), ToyTask(), cfg, extras, 5, {**conf, "resumed-from": 2}, 2)
    with pytest.raises(ValueError, match="not a hex token"):
        ca._save_local(ctx, extras, {"run-tag": "../x"}, 4, 1, {})


# ----------------------------------------------------------------- loopback helpers
def _tree(root: int) -> set[int]:
    """PIDs of ``root``, its process group/session members and all descendants (/proc)."""
    from psyau_graph.federated.flower.deployment import _proc_table
    table = _proc_table()
    found = {root} if root in table else set()
    found |= {pid for pid, (_, _, pg) in table.items() if pg == root}
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, (_, pp, _) in table.items() if pp in frontier and pid not in found}
        found |= frontier
    return {pid for pid in found if table.get(pid, ("Z",))[0] != "Z"}


def _kill_tree(pids: set[int]) -> None:
    for pid in sorted(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pids: set[int]) -> set[int]:
    from psyau_graph.federated.flower.deployment import _proc_table
    table = _proc_table()
    return {p for p in pids if p in table and table[p][0] != "Z"}


def _checkpoint_round(path: Path) -> int:
    from psyau_graph.train.checkpoint import safe_torch_load
    try:
        return int(safe_torch_load(path, "federation checkpoint")["round"])
    except (OSError, ValueError, EOFError, RuntimeError):
        return 0


def _records(metrics: Path) -> dict:
    res = json.loads(metrics.read_text())
    return {(r["round"], r["client"]): {k: r.get(k) for k in KEYS} for r in res["records"]}


_CLI = "import sys; from psyau_graph.cli import main; sys.exit(main(sys.argv[1:]))"

#: runs ``psyau federate``; the checkpoint after round 2 is followed by a pause, so that the
#: test reliably kills the server process between the round-2 and round-3 checkpoints
_SLOW_AFTER_2 = """
import sys, time
import psyau_graph.federated.flower.server_app as sa
real = sa.save_server_state
def save_then_pause(path, **kw):
    real(path, **kw)
    if kw["rnd"] == 2:
        time.sleep(120)
sa.save_server_state = save_then_pause
from psyau_graph.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ----------------------------------------------------------------- loopback: simulation
@pytest.mark.slow
@pytest.mark.loopback
def test_simulation_resume_after_killed_server_matches_uninterrupted(tmp_path):
    data = make_toy_data(tmp_path / "toy.pt", subjects=6, per_subject=20, seed=11, shift=1.5)
    base = [sys.executable, "-c", _CLI]
    args = ["federate", "--task", "toy", "--engine", "simulation", "--data", str(data),
            "--clients", "3", "--rounds", "4", "--local-epochs", "1", "--repeats", "1",
            "--strategy", "p-fedprox", "--lr", "0.02", "--batch-size", "16"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": str(tmp_path / "ray"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    ref = subprocess.run(base + args + ["--out", str(tmp_path / "ref")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / "cut"
    ckpt = out / "p-fedprox" / "repeat0" / "federation_state.pt"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_AFTER_2, *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "cut.log", "wb"),
                            start_new_session=True)
    pids: set[int] = set()
    try:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and proc.poll() is None and _checkpoint_round(ckpt) < 2:
            time.sleep(0.2)
        assert _checkpoint_round(ckpt) == 2, (tmp_path / "cut.log").read_text()[-3000:]
        pids = _tree(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)    # the server process (the psyau federate process)
        proc.wait(timeout=30)
    finally:
        pids |= _tree(proc.pid) if proc.poll() is None else set()
        _kill_tree(pids | {proc.pid})        # and what it had started (Ray), by PID
        proc.wait(timeout=30)
    time.sleep(1.0)
    assert _alive(pids) == set()
    assert not (out / "p-fedprox" / "repeat0" / "metrics.json").exists()
    assert proc.returncode == -signal.SIGKILL

    res = subprocess.run(base + args + ["--out", str(out), "--resume"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = _records(out / "p-fedprox" / "repeat0" / "metrics.json")
    want = _records(tmp_path / "ref" / "p-fedprox" / "repeat0" / "metrics.json")
    assert sorted(got) == [(r, c) for r in range(1, 5) for c in range(3)]
    assert got == want                        # exact: see docs/federated.md (resume)
    saved = json.loads((out / "p-fedprox" / "repeat0" / "metrics.json").read_text())
    assert saved["resumed_after_round"] == 2
    assert json.loads((out / "summary.json").read_text())["summary"] == \
        json.loads((tmp_path / "ref" / "summary.json").read_text())["summary"]


# ----------------------------------------------------------------- loopback: deployment
def _serverapp_pids(dep) -> list[int]:
    out = []
    for pid in dep.alive():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(Path(a).name == "flwr-serverapp" for a in cmd.split()[:2]):
            out.append(pid)
    return out


@pytest.mark.slow
@pytest.mark.loopback
def test_deployment_restarted_serverapp_continues_from_checkpoint(tmp_path):
    """Kill the ServerApp process (by PID) after its round-2 checkpoint; a new ``flwr run``
    against the same SuperLink and SuperNodes with ``resume`` continues from the checkpoint
    (the nodes restore their local state from their state folders) and reaches the metrics
    of an uninterrupted run on the same deployment."""
    import threading

    from psyau_graph.federated.flower.deployment import LocalDeployment

    labs = [make_toy_data(tmp_path / f"lab{i}" / "toy.pt", subjects=3, per_subject=20, seed=i + 1).parent
            for i in range(2)]
    cfg = FederatedConfig(clients=2, rounds=4, local_epochs=1, strategy="p-fedprox", lr=0.02,
                          batch_size=16, repeats=1)
    spec = {"name": "toy"}
    dep = LocalDeployment(tmp_path / "run", labs, startup_timeout=120)
    cut = tmp_path / "cut"
    ckpt = cut / "federation_state.pt"
    errors: list = []
    try:
        dep.start()
        ref = dep.run(cfg, spec, tmp_path / "ref", timeout=600)

        def first_run():
            try:
                dep.run(cfg, spec, cut, timeout=600)
            except Exception as exc:  # expected: its ServerApp is killed
                errors.append(exc)
        t = threading.Thread(target=first_run, daemon=True)
        t.start()
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and _checkpoint_round(ckpt) < 2 and t.is_alive():
            time.sleep(0.1)
        killed_after = _checkpoint_round(ckpt)
        servers = _serverapp_pids(dep)
        assert servers, "no ServerApp process found"
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        runner = [p for name, p in dep.procs if name == "flwr-run"][-1]
        runner.send_signal(signal.SIGTERM)   # the `flwr run --stream` of the killed run
        t.join(timeout=120)
        assert not t.is_alive() and errors, "the interrupted run did not end"
        assert 2 <= killed_after < cfg.rounds and not (cut / "metrics.json").exists()
        assert not _serverapp_pids(dep)
        res = dep.run(cfg, spec, cut, timeout=600, resume=True)
    finally:
        dep.stop()
    assert dep.alive() == []
    assert res["resumed_after_round"] == killed_after
    key = lambda r: (r["round"], r["client"])  # noqa: E731
    got = {key(r): {k: r.get(k) for k in KEYS} for r in res["records"]}
    want = {key(r): {k: r.get(k) for k in KEYS} for r in ref["records"]}
    assert sorted(got) == [(r, c) for r in range(1, 5) for c in range(2)]
    assert got == want
    assert res["summary"] == ref["summary"]
    # each node kept its own local-state files (never sent to the server): one folder per
    # federation (the resumed run kept the interrupted run's tag), the two newest rounds
    for i in range(2):
        tags = sorted(dep.node_state_dir(i).iterdir())
        assert len(tags) == 2, tags
        for tag in tags:
            assert sorted(p.name for p in tag.iterdir()) == [f"client{i}_round3.pt", f"client{i}_round4.pt"]
