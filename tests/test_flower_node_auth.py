"""SuperNode authentication on the deployment engine (Flower's ``--enable-supernode-auth``
with keys registered through ``flwr supernode register``), and a killed SuperNode that comes
back mid-run. Loopback only; every wait is bounded and every process is stopped by PID."""
from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from types import SimpleNamespace

import pytest

from psyau_graph.errors import PsyauError
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.deployment import LocalDeployment
from psyau_graph.federated.flower.node_auth import fingerprint, load_node_keys, make_node_keys
from psyau_graph.federated.task import make_toy_data


def test_node_keys_are_private_and_reload(tmp_path):
    from cryptography.hazmat.primitives import serialization

    keys = make_node_keys(tmp_path / "k", 2)
    for i, k in enumerate(keys):
        assert k.private.name == f"node{i}" and k.public.name == f"node{i}.pub"
        assert stat.S_IMODE(os.stat(k.private).st_mode) == 0o600
        pub = serialization.load_ssh_public_key(k.public.read_bytes())
        assert pub.curve.name == "secp384r1"
        assert k.fingerprint == fingerprint(k.public.read_bytes()) and k.fingerprint.startswith("SHA256:")
    assert keys[0].fingerprint != keys[1].fingerprint
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o700
    again = load_node_keys(tmp_path / "k", 2)
    assert [k.fingerprint for k in again] == [k.fingerprint for k in keys]


def test_node_keys_bad_input_names_the_file(tmp_path):
    make_node_keys(tmp_path / "k", 2)
    with pytest.raises(PsyauError, match="node2.pub: missing"):
        load_node_keys(tmp_path / "k", 3)
    # a private key that is not the public key's half
    (tmp_path / "k" / "node1").write_bytes((tmp_path / "k" / "node0").read_bytes())
    with pytest.raises(PsyauError, match=r"node1: does not belong to the public key .*node1\.pub"):
        load_node_keys(tmp_path / "k", 2)
    # two labs with one key
    (tmp_path / "k" / "node1.pub").write_bytes((tmp_path / "k" / "node0.pub").read_bytes())
    with pytest.raises(PsyauError, match="node1.pub: same public key as"):
        load_node_keys(tmp_path / "k", 2)
    (tmp_path / "k" / "node0.pub").write_text("not a key\n")
    with pytest.raises(PsyauError, match="node0.pub: not an OpenSSH public key"):
        load_node_keys(tmp_path / "k", 2)


def test_node_auth_needs_tls(tmp_path):
    with pytest.raises(ValueError, match="needs TLS"):
        LocalDeployment(tmp_path, [tmp_path], tls=False, node_auth=True)
    assert LocalDeployment(tmp_path, [tmp_path], tls=True).node_auth is True
    assert LocalDeployment(tmp_path, [tmp_path], tls=True, node_auth=False).node_auth is False
    assert LocalDeployment(tmp_path, [tmp_path], tls=False).node_auth is False


def _wait(cond, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def _node1_killed_in_round_2(tmp_path):
    """3 toy labs on TLS, quorum 2, FedAvg, 3 rounds, the run in a thread; SuperNode 1 is
    SIGKILLed (by PID) right after it pulled its round-2 train message. Yields a namespace
    (``dep``, ``node1`` its node id, ``runner``, ``result``, ``errors``, ``sent_before_kill``);
    every process is stopped on exit."""
    labs = [make_toy_data(tmp_path / f"lab{c}" / "toy.pt", subjects=3, per_subject=20, seed=s).parent
            for c, s in (("A", 1), ("B", 2), ("C", 3))]
    cfg = FederatedConfig(clients=3, rounds=3, local_epochs=1, strategy="fedavg", lr=0.02,
                          batch_size=16, repeats=1, min_clients=2)
    dep = LocalDeployment(tmp_path / "run", labs, tls=True, startup_timeout=120)
    result, errors = {}, []

    def go():
        try:
            result.update(dep.run(cfg, {"name": "toy"}, tmp_path / "out", timeout=900))
        except Exception as exc:  # reported by the callers' assertions
            errors.append(exc)

    runner = threading.Thread(target=go, daemon=True)
    try:
        dep.start()
        node1 = next(r["node_id"] for r in dep.registered if r["node"] == 1)
        runner.start()
        _wait(lambda: dep.log("supernode1").count("Receiving: train message") >= 2, 600,
              "SuperNode 1 to receive its round-2 train message")
        killed = dep.kill_node(1)
        sent_before_kill = dep.log("supernode1").count("Sending: train message")
        assert dep.nodes[1]["proc"].pid in killed
        yield SimpleNamespace(dep=dep, node1=node1, runner=runner, result=result, errors=errors,
                              sent_before_kill=sent_before_kill)
    finally:
        dep.stop()


@pytest.mark.slow
@pytest.mark.loopback
def test_unregistered_supernode_is_refused(tmp_path):
    """Two registered labs and one SuperNode with a valid key that was never registered: the
    SuperLink refuses to activate it, it exits, never pulls a message, and the registered
    labs complete a 2-round run."""
    labs = [make_toy_data(tmp_path / f"lab{c}" / "toy.pt", subjects=3, per_subject=20, seed=s).parent
            for c, s in (("A", 1), ("B", 2), ("C", 3))]
    intruder = make_node_keys(tmp_path / "intruder", 1, prefix="intruder")[0]
    cfg = FederatedConfig(clients=2, rounds=2, local_epochs=1, strategy="fedavg", lr=0.02,
                          batch_size=16, repeats=1)
    dep = LocalDeployment(tmp_path / "run", labs[:2], tls=True, startup_timeout=120)
    try:
        dep.start()
        assert dep.node_auth and len(dep.registered) == 2
        sneak = dep.start_node(2, data_path=labs[2], private_key=intruder.private,
                               name="intruder", wait=False)
        _wait(lambda: sneak.poll() is not None, 120, "the unregistered SuperNode to give up")
        listed = {int(n["node-id"]) for n in dep.list_nodes()}
        res = dep.run(cfg, {"name": "toy"}, tmp_path / "out", timeout=600)
    finally:
        dep.stop()
    assert dep.alive() == []
    assert sneak.returncode != 0
    log = dep.log("intruder")
    assert "Failed to activate SuperNode" in log
    assert "Receiving:" not in log  # it never received a message
    assert "No SuperNode found with the given public key" in dep.log("superlink")
    assert listed == {r["node_id"] for r in dep.registered}
    # only the registered nodes trained and were scored, every round
    assert sorted((r["round"], r["client"]) for r in res["records"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert {r["node"] for r in res["records"]} == listed
    assert res["security"]["node_auth"] is True and res["security"]["tls"] is True
    assert [k["fingerprint"] for k in res["security"]["registered_keys"]] == \
        [k.fingerprint for k in dep.node_keys]
    for i in (0, 1):  # each registered SuperNode signed in with its own private key
        args = dep.nodes[i]["proc"].args
        assert args[args.index("--auth-supernode-private-key") + 1] == str(dep.node_keys[i].private)


@pytest.mark.slow
@pytest.mark.loopback
# in CI (`make test-loopback`) since it passed 3/3 with the next test beside it, load 5-10
# (docs/federated.md, "A SuperNode that dies and comes back")
def test_killed_supernode_rejoins_next_round(tmp_path):
    """3 labs, quorum 2: SuperNode 1 is killed (SIGKILL, by PID) right after it pulled its
    round-2 train message, restarted with the same key once the SuperLink saw it go offline;
    round 2 counts it as failed, it trains again from round 3 and the run completes."""
    with _node1_killed_in_round_2(tmp_path) as k:
        dep, node1 = k.dep, k.node1

        def offline():
            return any(int(n["node-id"]) == node1 and n["status"] == "offline"
                       for n in dep.list_nodes())
        _wait(offline, 300, "the SuperLink to mark SuperNode 1 offline", step=2.0)
        dep.restart_node(1)
        k.runner.join(timeout=900)
        assert not k.runner.is_alive(), "the run did not finish"
    result, sent_before_kill = k.result, k.sent_before_kill
    assert dep.alive() == []
    assert not k.errors, k.errors
    assert sent_before_kill == 1, "node 1 replied to round 2 before it was killed"
    # the restarted SuperNode signed in as the same registered node
    assert dep.log("superlink").count(f"Activated node_id={node1}") == 2
    assert "Receiving: train message" in dep.log("supernode1.restart1")
    failed = [f for f in result["failures"] if f["round"] == 2]
    assert [f["node"] for f in failed] == [node1]
    # given up on by our node watch, or answered by Flower's SuperLink while it was offline
    assert f"lost node {node1}" in failed[0]["error"] or "Node Unavailable" in failed[0]["error"]
    assert all(x["node"] == node1 for x in result["lost_nodes"])
    status = {(r["round"], r["client"]): r["status"] for r in result["records"]}
    assert status[(2, 1)] == "failed"
    assert all(status[(rnd, c)] == "ok" for rnd in (1, 3) for c in range(3))
    assert status[(2, 0)] == status[(2, 2)] == "ok"
    assert not any(f["round"] != 2 for f in result["failures"])



@pytest.mark.slow
@pytest.mark.loopback
# in CI (`make test-loopback`) since it passed 3/3 with the previous test beside it, load 5-10
def test_supernode_restarted_at_once_is_released_and_rejoins(tmp_path):
    """3 labs, quorum 2: SuperNode 1 is killed right after it pulled its round-2 train
    message and restarted at once, before the SuperLink counts it offline. Flower 1.42
    refuses to sign in a node id it still counts online (until the dead process's last
    heartbeat + 60 s), so it is restarted with the launcher that keeps signing in; the
    SuperLink tags the old session offline and activates the new one in one step, no
    SuperLink reply for the lost message is written, and the ServerApp's node watch
    (``last_activated_at`` changed) releases round 2, naming node 1. It trains again in
    round 3 and the run completes.

    Between the old session's expiry and the new sign-in there is a window of one sign-in
    try (< 0.1 s measured). A ServerApp pull or node listing that lands in it releases the
    message as "Node Unavailable" (Flower) or "went offline" (the watch) instead; both are
    correct outcomes, so the test accepts them (with the reason in the failure record) rather
    than fail by chance in ~1-2 % of runs. The "restarted" rule released it in all 6 measured
    runs (docs/federated.md); its logic is pinned by the unit test in test_fast_supernode."""
    with _node1_killed_in_round_2(tmp_path) as k:
        dep, node1 = k.dep, k.node1
        activated = f"Activated node_id={node1}"
        dep.restart_node(1, sign_in_retry=150)
        # nothing here lists the nodes before the new process is in (a listing tags a node
        # whose heartbeats stopped offline); the SuperLink's log says when it activated it
        _wait(lambda: dep.log("superlink").count(activated) == 2 or dep.nodes[1]["proc"].poll()
              is not None, 180, "the restarted SuperNode 1 to sign in", step=0.5)
        assert dep.nodes[1]["proc"].poll() is None, dep.log("supernode1.restart1")[-2000:]
        k.runner.join(timeout=900)
        assert not k.runner.is_alive(), "the run did not finish"
        listed = [n for n in dep.list_nodes() if int(n["node-id"]) == node1]
    result, sent_before_kill = k.result, k.sent_before_kill
    assert dep.alive() == []
    assert not k.errors, k.errors
    assert sent_before_kill == 1, "node 1 replied to round 2 before it was killed"
    restart_log = dep.log("supernode1.restart1")
    # it was restarted before the SuperLink let the node id sign in again ...
    assert "the SuperLink still counts this node online" in restart_log, restart_log[-2000:]
    # ... and then signed in as the same registered node, and trained again
    assert dep.log("superlink").count(activated) == 2
    assert "Receiving: train message" in restart_log
    failed = [f for f in result["failures"] if f["round"] == 2]
    assert [f["node"] for f in failed] == [node1]
    # released by the node watch's "activated again" rule, or (a pull or listing inside the
    # sign-in window, see the docstring) as seen offline by Flower or by the watch
    seen = f"offline-at/online-at of node {node1} on the SuperLink: {listed}"
    error = failed[0]["error"]
    by_watch = [f"lost node {node1}: it restarted (activated again at", f"lost node {node1}: it went offline"]
    assert any(w in error for w in by_watch) or "Node Unavailable" in error, (error, seen)
    if any(w in error for w in by_watch):
        assert [(x["node"], x["message_type"]) for x in result["lost_nodes"]] == [(node1, "train")], seen
        assert result["lost_nodes"][0]["reason"].startswith(f"lost node {node1}: it ")
    else:
        assert result["lost_nodes"] == [], seen
    status = {(r["round"], r["client"]): r["status"] for r in result["records"]}
    assert status[(2, 1)] == "failed"
    assert all(status[(rnd, c)] == "ok" for rnd in (1, 3) for c in range(3))
    assert status[(2, 0)] == status[(2, 2)] == "ok"
    assert not any(f["round"] != 2 for f in result["failures"])

# ---------------------------------------------------------------- the CLI: refuses before starting
def _federate(tmp_path, *extra):
    from psyau_graph.cli import main

    toy = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=3, per_subject=10, seed=1)
    make_toy_data(tmp_path / "labB" / "toy.pt", subjects=3, per_subject=10, seed=2)
    argv = ["federate", "--task", "toy", "--data", str(toy), "--out", str(tmp_path / "fed"),
            "--engine", "deployment", "--clients", "2", "--rounds", "1", "--local-epochs", "1",
            "--repeats", "1", "--strategy", "fedavg",
            "--node-data", str(tmp_path / "labA"), str(tmp_path / "labB"), *extra]
    return main(argv)


def _one_line(err: str, pattern: str) -> None:
    import re

    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(rf"psyau federate: error: .*{pattern}", lines[0]), lines[0]


def test_cli_deployment_without_tls_or_insecure_refuses_to_start(tmp_path, capsys):
    assert _federate(tmp_path) == 2
    _one_line(capsys.readouterr().err, "refuses to start without TLS: give --tls .* or --insecure")
    assert not (tmp_path / "fed").exists()  # nothing started, nothing written


@pytest.mark.parametrize("extra, pattern", [
    (["--tls-certs", "{tmp}/none"], r"--tls-certs: .*none/ca\.pem is missing"),
    (["--insecure", "--tls"], "--insecure and --tls/--tls-certs exclude each other"),
    (["--insecure", "--node-keys", "{tmp}/keys"], "--node-keys needs node authentication"),
    (["--tls", "--node-keys", "{tmp}/keys"], r"keys/node0\.pub: missing"),
])
def test_cli_bad_security_options_are_one_line(tmp_path, capsys, extra, pattern):
    (tmp_path / "keys").mkdir()
    assert _federate(tmp_path, *[a.replace("{tmp}", str(tmp_path)) for a in extra]) == 2
    _one_line(capsys.readouterr().err, pattern)
    assert not (tmp_path / "fed").exists()


def test_cli_security_flags_need_the_deployment_engine(tmp_path, capsys):
    from psyau_graph.cli import main

    toy = make_toy_data(tmp_path / "toy.pt", subjects=3, per_subject=10, seed=1)
    assert main(["federate", "--task", "toy", "--data", str(toy), "--out", str(tmp_path / "fed"),
                 "--no-node-auth"]) == 2
    _one_line(capsys.readouterr().err, "--no-node-auth: deployment engine only")


def test_cli_help_shows_the_security_flags(capsys):
    from psyau_graph.cli import main

    with pytest.raises(SystemExit):
        main(["federate", "--help"])
    out = capsys.readouterr().out
    for flag in ("--insecure", "--tls-certs", "--no-node-auth", "--node-keys"):
        assert flag in out


def test_node_unavailable_reply_is_traced_to_the_lost_node(monkeypatch):
    """The SuperLink answers for a SuperNode that stopped sending heartbeats with an error
    reply from its own id; the strategy records the failure under the lost node (found by
    the message id it replies to), and the quorum still passes with the others."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
    from flwr.supercore.task_identity import TaskIdentity

    from psyau_graph.federated.flower.strategy import TrackedFedAvg

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    strat = TrackedFedAvg(min_clients=2, min_train_nodes=3, min_available_nodes=3)
    strat._remember_reference(ArrayRecord({"w": torch.zeros(2)}))
    sent = [Message(RecordDict({"config": ConfigRecord({"server-round": 2})}), dst_node_id=n,
                    message_type=MessageType.TRAIN) for n in (101, 202, 303)]
    for m in sent:  # what Flower's grid does when it pushes them
        m.metadata.__dict__["_message_id"] = m.object_id
    strat._remember_sent(2, sent)
    replies = []
    for m, n in zip(sent[:2], (101, 303)):
        TaskIdentity._node_id = n
        replies.append(Message(RecordDict({
            "arrays": ArrayRecord({"w": torch.ones(2)}),
            "metrics": MetricRecord({"num-examples": 5, "train_loss": 0.1, "client-index": n // 101 - 1})}),
            reply_to=m if n == 101 else sent[2]))
    lost = create_message_error_unavailable_res_message(sent[1].metadata, "node_unavail")
    assert int(lost.metadata.src_node_id) == SUPERLINK_NODE_ID
    strat.aggregate_train(2, [*replies, lost])
    assert [(f["round"], f["node"]) for f in strat.failures] == [(2, 202)]
    assert "Node Unavailable" in strat.failure_reason[2][202]


@pytest.mark.slow
@pytest.mark.loopback
def test_cli_deployment_records_node_auth_in_summary(tmp_path, capsys):
    """``psyau federate --engine deployment --tls``: node authentication on by default, the
    generated private keys are mode 0600, and summary.json names the registered keys."""
    import json

    from psyau_graph.federated.flower.node_auth import fingerprint as fp

    assert _federate(tmp_path, "--tls") == 0
    summary = json.loads((tmp_path / "fed" / "summary.json").read_text())
    sec = summary["security"]["fedavg"]
    assert sec["tls"] is True and sec["node_auth"] is True
    keys = tmp_path / "fed" / "fedavg" / "deployment" / "node_keys"
    assert [k["node"] for k in sec["registered_keys"]] == [0, 1]
    for k in sec["registered_keys"]:
        i = k["node"]
        assert k["fingerprint"] == fp((keys / f"node{i}.pub").read_bytes())
        assert stat.S_IMODE(os.stat(keys / f"node{i}").st_mode) == 0o600
    assert summary["engines"]["fedavg"] == "deployment"


def test_polling_grid_gives_up_on_a_node_that_went_offline_or_restarted(monkeypatch):
    """A pending message whose node goes offline, or is activated again (a SuperNode that
    died after pulling it and came back under the same node id, which the SuperLink never
    answers for once it is online again), gets a "Node Unavailable" reply naming the node
    and why; the strategy traces it to that node. A node that stays up is waited for."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord, Message, MessageType, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
    from flwr.supercore.task_identity import TaskIdentity

    from psyau_graph.federated.flower import polling_grid
    from psyau_graph.federated.flower.polling_grid import PollingGrid

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    clock = [0.0]
    monkeypatch.setattr(polling_grid.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(polling_grid.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))

    class Grid:
        def __init__(self, schedule):
            self.schedule = schedule  # time -> {node: last_activated_at}, latest one applies

        def get_nodes(self):
            t = max(k for k in self.schedule if k <= clock[0])
            return [SimpleNamespace(node_id=n, last_activated_at=a) for n, a in self.schedule[t].items()]

        def push_messages(self, msgs):
            for m in msgs:
                m.metadata.__dict__["_message_id"] = m.object_id
            return [m.metadata.message_id for m in msgs]

        def pull_messages(self, ids):
            return []

    def msgs():
        return [Message(RecordDict({"config": ConfigRecord({"server-round": 2})}), dst_node_id=n,
                        message_type=MessageType.TRAIN) for n in (101, 202, 303)]

    up = {101: "t0", 202: "t0", 303: "t0"}
    grid = PollingGrid(Grid({0.0: up, 3.0: {101: "t0", 303: "t0"}, 9.0: {**up, 303: "t8"}}),
                       0.5, watch_nodes=2.0)
    sent = msgs()
    got = grid.send_and_receive(sent, timeout=20.0)
    assert [(int(m.metadata.reply_to_message_id == s.metadata.message_id)) for m, s in
            zip(got, sent[1:])] == [1, 1]
    assert all(m.has_error() and m.error.code == ErrorCode.NODE_UNAVAILABLE and
               int(m.metadata.src_node_id) == SUPERLINK_NODE_ID for m in got)
    assert [(r["node"], r["reason"].split(":")[1].strip().split(" (")[0]) for r in grid.lost] == \
        [(202, "it went offline while its reply to a train message was pending"),
         (303, "it restarted")]
    assert "lost node 202" in got[0].error.reason
    # node 101 never replied and stayed up: waited for until the timeout, not given up on
    assert clock[0] >= 20.0 and 101 not in {r["node"] for r in grid.lost}
    # off by default: nothing given up on
    quiet = PollingGrid(Grid({0.0: up, 1.0: {}}), 0.5)
    assert quiet.send_and_receive(msgs(), timeout=5.0) == [] and quiet.lost == []
