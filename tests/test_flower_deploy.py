"""Flower deployment engine on loopback with TLS: a SuperLink and two SuperNodes, each node
with its own data folder (node config ``data-path``), 2 rounds with ``flwr run``; every
process started is stopped by PID (process group), also on failure."""
from __future__ import annotations

import json

import pytest

from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.flower.deployment import LocalDeployment, make_tls_certificates
from psyau_graph.federated.task import make_toy_data


def test_tls_certificates_are_a_valid_chain(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = make_tls_certificates(tmp_path)
    ca = x509.load_pem_x509_certificate(paths["ca"].read_bytes())
    cert = x509.load_pem_x509_certificate(paths["cert"].read_bytes())
    assert cert.issuer == ca.subject
    ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                           ec.ECDSA(cert.signature_hash_algorithm))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    assert oct(paths["key"].stat().st_mode & 0o777) == "0o600"


@pytest.mark.slow
@pytest.mark.loopback
def test_two_labs_over_tls_two_rounds(tmp_path):
    lab_a = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=3, per_subject=20, seed=1)
    lab_b = make_toy_data(tmp_path / "labB" / "toy.pt", subjects=3, per_subject=20, seed=2)
    cfg = FederatedConfig(clients=2, rounds=2, local_epochs=1, strategy="p-fedprox", lr=0.02,
                          batch_size=16, repeats=1)
    dep = LocalDeployment(tmp_path / "run", [lab_a.parent, lab_b.parent], tls=True,
                          startup_timeout=120)
    try:
        dep.start()
        res = dep.run(cfg, {"name": "toy"}, tmp_path / "out", timeout=600)
    finally:
        dep.stop()
    # every process we started (and anything in their process groups) is gone
    assert dep.alive() == []
    assert all(p.poll() is not None for _, p in dep.procs)
    # TLS was used: the SuperLink got the certificate, the nodes the CA, no insecure flag
    assert "--insecure" not in " ".join(" ".join(p.args) for _, p in dep.procs)
    assert "Option `--insecure`" not in dep.log("supernode0")
    # 2 rounds × 2 nodes, each node reported its own data (60 samples → 42/18)
    assert sorted((r["round"], r["client"]) for r in res["records"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert {r["n_train"] + r["n_test"] for r in res["records"]} == {60}
    assert all(0.0 <= r["uf1"] <= 1.0 for r in res["records"])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["config"]["rounds"] == 2 and len(saved["records"]) == 4


@pytest.mark.slow
@pytest.mark.loopback
def test_stop_mid_run_leaves_no_process(tmp_path):
    """Interrupted while a run is in progress: the SuperLink's and SuperNodes' helper
    processes (flower-superexec, flwr-serverapp, flwr-clientapp) are stopped too."""
    import threading
    import time

    lab_a = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=2, per_subject=20, seed=1)
    lab_b = make_toy_data(tmp_path / "labB" / "toy.pt", subjects=2, per_subject=20, seed=2)
    cfg = FederatedConfig(clients=2, rounds=50, local_epochs=1, strategy="fedavg", lr=0.02,
                          batch_size=16, repeats=1)
    dep = LocalDeployment(tmp_path / "run", [lab_a.parent, lab_b.parent], startup_timeout=120)
    errors = []
    try:
        dep.start()
        t = threading.Thread(target=lambda: errors.append(
            _run_quietly(dep, cfg, tmp_path / "out")), daemon=True)
        t.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "flwr-serverapp" not in _cmdlines(dep):
            time.sleep(0.5)
        assert "flwr-serverapp" in _cmdlines(dep), "the run never started"
    finally:
        dep.stop()
    assert dep.alive() == []
    assert "flwr-serverapp" not in _cmdlines(dep)


def _cmdlines(dep) -> str:
    from pathlib import Path
    out = []
    for pid in dep.alive():
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(out)


def _run_quietly(dep, cfg, out):
    try:
        dep.run(cfg, {"name": "toy"}, out, timeout=600)
    except Exception as exc:  # expected: the deployment is stopped under the run
        return exc
    return None


@pytest.mark.slow
@pytest.mark.loopback
def test_warm_clientapps_over_tls_two_rounds(tmp_path):
    """``warm=True``: SuperNodes in process isolation, one warm executor each that forks a
    pre-imported process per message; no ``flwr-clientapp`` and no SuperNode-side
    ``flower-superexec`` is ever started, the 2-round run completes over TLS and nothing is
    left running."""
    import threading
    import time

    lab_a = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=3, per_subject=20, seed=1)
    lab_b = make_toy_data(tmp_path / "labB" / "toy.pt", subjects=3, per_subject=20, seed=2)
    cfg = FederatedConfig(clients=2, rounds=2, local_epochs=1, strategy="p-fedprox", lr=0.02,
                          batch_size=16, repeats=1)
    dep = LocalDeployment(tmp_path / "run", [lab_a.parent, lab_b.parent], tls=True, warm=True,
                          startup_timeout=120)
    seen_cmdlines: list[str] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen_cmdlines.append(_cmdlines(dep))
            time.sleep(0.3)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        dep.start()
        sampler.start()
        res = dep.run(cfg, {"name": "toy"}, tmp_path / "out", timeout=600)
    finally:
        stop.set()
        dep.stop()
    sampler.join(timeout=10)
    assert dep.alive() == []
    assert all(p.poll() is not None for _, p in dep.procs)
    node_cmds = [" ".join(p.args) for name, p in dep.procs if name.startswith("supernode")]
    assert "--insecure" not in " ".join(" ".join(p.args) for name, p in dep.procs
                                        if name.startswith(("superlink", "supernode")))
    # warm mode's default: SuperNodes through the checked launcher with capped polling
    # sleeps, every Flower poll interval on the message path at 0.1 s, recorded in the result
    assert len(node_cmds) == 2
    assert all("-m psyau_graph.federated.flower.fast_supernode --poll-interval 0.1 --" in c
               for c in node_cmds)
    assert all("capped at 0.1 s" in dep.log(f"supernode{i}") for i in (0, 1))
    assert res["deployment"]["supernode_launcher"] == "psyau_graph.federated.flower.fast_supernode"
    assert res["deployment"]["poll_interval_s"] == 0.1
    assert res["deployment"]["patched"]["flwr"] == __import__("flwr").__version__
    assert dep.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.1"
    run_config = (tmp_path / "run" / "run_config.toml").read_text()
    assert "grid-poll-interval = 0.1" in run_config and "pack-arrays = true" in run_config
    assert res["deployment"]["pack_arrays"] is True  # tensors crossed packed, per dtype
    procs = {line for c in seen_cmdlines for line in c.splitlines()}
    progs = [line.split()[:2] for line in procs]
    assert any("psyau_graph.federated.flower.warm_exec" in line for line in procs)
    assert not any(a.endswith("flwr-clientapp") for p in progs for a in p)
    # the only SuperExec is the SuperLink's own (for the ServerApp), none for a SuperNode
    superexecs = [line for line in procs if "bin/flower-superexec" in line]
    assert all(f"--runtime-api-address 127.0.0.1:{dep.port} " in line + " " for line in superexecs)
    for i in (0, 1):  # each node served its train and evaluate messages by fork, every round
        assert dep.log(f"warm-exec{i}").count("runs in forked pid") >= 2
        assert dep.log(f"warm-exec{i}").count("ended with code 0 after") >= 2
    assert sorted((r["round"], r["client"]) for r in res["records"]) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert {r["n_train"] + r["n_test"] for r in res["records"]} == {60}
    assert all(0.0 <= r["uf1"] <= 1.0 for r in res["records"])


@pytest.mark.slow
@pytest.mark.loopback
def test_warm_dataset_cache_is_hit_and_changes_no_result(tmp_path):
    """The warm executor keeps the node's loaded dataset for later messages: the first task
    of each node loads it (a miss, reported to the executor, which preloads it), every later
    task finds it (a hit, in its task line); the run's records are the same as a cold
    deployment's (fresh ``flwr-clientapp`` per message) on the same data; every process of
    both deployments is stopped."""
    from psyau_graph.federated.flower.warm_exec import TASK_LINE

    lab_a = make_toy_data(tmp_path / "labA" / "toy.pt", subjects=3, per_subject=20, seed=1)
    lab_b = make_toy_data(tmp_path / "labB" / "toy.pt", subjects=3, per_subject=20, seed=2)
    cfg = FederatedConfig(clients=2, rounds=3, local_epochs=1, strategy="fedavg", lr=0.02,
                          batch_size=16, repeats=1)
    results, deps = {}, {}
    for warm in (True, False):
        dep = deps[warm] = LocalDeployment(tmp_path / f"run_{warm}", [lab_a.parent, lab_b.parent],
                                           tls=True, warm=warm, startup_timeout=120)
        try:
            dep.start()
            results[warm] = dep.run(cfg, {"name": "toy"}, tmp_path / f"out_{warm}", timeout=900)
        finally:
            dep.stop()
        assert dep.alive() == []
        assert all(p.poll() is not None for _, p in dep.procs)
    for i in (0, 1):
        log = deps[True].log(f"warm-exec{i}")
        lines = [m.groups() for m in TASK_LINE.finditer(log)]
        assert all(g[0] == "0" for g in lines), lines  # every task ended with code 0
        counts = [(int(g[4]), int(g[5])) for g in lines]
        assert len(counts) == 2 * cfg.rounds  # a train and an evaluate task per round
        assert counts[0] == (0, 1) and counts[1:] == [(1, 0)] * (len(counts) - 1), counts
        assert log.count("preloaded dataset") == 1

    def key(res):
        return sorted((r["round"], r["client"], r["n_train"], r["n_test"], r["uf1"], r["uar"])
                      for r in res["records"])
    assert len(results[True]["records"]) == 2 * cfg.rounds
    assert key(results[True]) == key(results[False])
