"""Flower deployment engine on one machine (loopback): SuperLink + SuperNodes + ``flwr run``.

This is what two labs do on two machines (see ``docs/federated.md``), compressed onto
127.0.0.1 for tests, the benchmark and ``psyau federate --engine deployment``. Every
process is started in its own session and stopped by PID (process-group kill) in
:meth:`LocalDeployment.stop`, also when something fails; every wait is bounded.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from ..config import FederatedConfig
from .common import to_run_config
from .simulation import offline_env

APP_DIR = Path(__file__).resolve().parent / "app"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _proc_table() -> dict[int, tuple[str, int, int]]:
    """``pid -> (state, ppid, pgid)`` of every process (Linux ``/proc``; empty elsewhere)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        rest = text[text.rindex(")") + 2:].split()
        table[int(stat.parent.name)] = (rest[0], int(rest[1]), int(rest[2]))
    return table


def _signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _bin(name: str) -> str:
    cand = Path(sys.executable).with_name(name)
    if cand.exists():
        return str(cand)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"Flower command {name!r} not found beside {sys.executable} or on PATH")
    return found


def make_tls_certificates(out_dir: str | Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """Self-signed CA and a server certificate for ``host`` (for tests and trials only).

    Returns:
        ``{"ca": ca.pem, "cert": server.pem, "key": server.key}``.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "psyau test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san = [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        san = [x509.DNSName(host)]
    if host != "localhost":
        san.append(x509.DNSName("localhost"))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": out / "ca.pem", "cert": out / "server.pem", "key": out / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    os.chmod(paths["key"], 0o600)
    return paths


class LocalDeployment:
    """SuperLink and one SuperNode per data folder on 127.0.0.1, free ports.

    Args:
        work_dir: folder for logs, ``FLWR_HOME`` and certificates (owned by this run).
        node_data: one data folder per SuperNode (its ``data-path`` node config).
        tls: use TLS with a freshly generated self-signed CA (default: ``False``).
        startup_timeout: seconds to wait for each port (default: ``60``).
        warm: keep ClientApps warm (default: ``False``): SuperNodes run with
            ``--isolation process`` and each gets a long-running
            :mod:`~psyau_graph.federated.flower.warm_exec` executor, started and stopped
            here, that forks a pre-imported process per message instead of Flower's
            fresh ``flwr-clientapp`` process (``docs/federated.md``).
        poll_interval: warm mode only (default: ``0.1``): seconds between polls on the
            message path, set through every knob Flower offers (the ServerApp's reply
            polling via the run config ``grid-poll-interval``, SuperExec's
            ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``) and, for the SuperNode's hard-coded
            waits, by starting SuperNodes with the opt-in launcher
            :mod:`~psyau_graph.federated.flower.fast_supernode` (which refuses to start on
            Flower code it was not checked against); with it, each message's tensors
            travel packed as one array per dtype (run config ``pack-arrays``,
            :mod:`~psyau_graph.federated.flower.packing`). ``None``: Flower's own waits
            and one object per tensor.
        threads_per_node: torch/OpenMP threads of each node's ClientApp processes (default:
            the machine's CPU count divided by the number of nodes, at least 1, unless
            ``OMP_NUM_THREADS`` is set already): the nodes share one machine here.

    After :meth:`start`, :attr:`launch` describes how the processes were started (also
    added to every :meth:`run` result as ``"deployment"``).
    """

    def __init__(self, work_dir: str | Path, node_data: list[str | Path], *, tls: bool = False,
                 startup_timeout: float = 60.0, warm: bool = False,
                 poll_interval: float | None = 0.1, threads_per_node: int | None = None):
        self.work = Path(work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.node_data = [str(p) for p in node_data]
        self.tls = tls
        self.warm = bool(warm)
        self.startup_timeout = float(startup_timeout)
        self.env = {**os.environ, **offline_env(self.work)}
        # the SuperLink/SuperNode spawn helper commands (flower-superexec, flwr-serverapp,
        # flwr-clientapp) by name: put this interpreter's bin folder first on PATH
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                            self.env.get("PATH", "")])
        if threads_per_node is None and "OMP_NUM_THREADS" not in self.env:
            threads_per_node = max(1, (os.cpu_count() or 1) // max(1, len(self.node_data)))
        if threads_per_node is not None:
            self.env["OMP_NUM_THREADS"] = str(int(threads_per_node))
        self.poll_interval = float(poll_interval) if (self.warm and poll_interval) else None
        if self.poll_interval is not None:
            self.env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = str(self.poll_interval)
        self.pack_arrays = self.poll_interval is not None
        self.launch = {"warm": self.warm, "tls": self.tls, "pack_arrays": self.pack_arrays,
                       "omp_num_threads": self.env.get("OMP_NUM_THREADS"),
                       "poll_interval_s": self.poll_interval,
                       "supernode_launcher": "flower-supernode"}
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._seen: set[int] = set()
        self.port: int | None = None
        self.certs: dict[str, Path] | None = None

    # -------------------------------------------------------------- processes
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")
        try:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                 cwd=self.work, start_new_session=True)
        finally:
            log.close()
        self.procs.append((name, p))
        return p

    def _wait_port(self, port: int, name: str, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{self.log(name)[-2000:]}")
            if _port_open(port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{name} did not open port {port} within {self.startup_timeout:.0f} s:\n"
                           f"{self.log(name)[-2000:]}")

    def log(self, name: str) -> str:
        p = self.work / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self) -> "LocalDeployment":
        self.port = free_port()
        link = [_bin("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation"]
        node_sec: list[str]
        if self.tls:
            self.certs = make_tls_certificates(self.work / "certs")
            link += ["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile",
                     str(self.certs["cert"]), "--ssl-keyfile", str(self.certs["key"])]
            node_sec = ["--root-certificates", str(self.certs["ca"])]
        else:
            link += ["--insecure"]
            node_sec = ["--insecure"]
        supernode = [_bin("flower-supernode")]
        if self.poll_interval is not None:
            from . import fast_supernode
            self.launch.update(supernode_launcher="psyau_graph.federated.flower.fast_supernode",
                               patched=fast_supernode.patch_report(self.poll_interval))
            supernode = [sys.executable, "-m", "psyau_graph.federated.flower.fast_supernode",
                         "--poll-interval", str(self.poll_interval), "--"]
        sl = self._spawn("superlink", link)
        self._wait_port(self.port, "superlink", sl)
        for i, path in enumerate(self.node_data):
            nport = free_port()
            node_cfg = f"data-path={json.dumps(path)} partition-id={i} num-partitions={len(self.node_data)}"
            isolation = ["--isolation", "process"] if self.warm else []
            sn = self._spawn(f"supernode{i}", [
                *supernode, *node_sec, "--superlink", f"127.0.0.1:{self.port}",
                "--host", "127.0.0.1", "--port", str(nport), "--node-config", node_cfg,
                "--max-retries", "20", "--max-wait-time", "60", *isolation])
            self._wait_port(nport, f"supernode{i}", sn)
            if self.warm:
                self._spawn(f"warm-exec{i}", [
                    sys.executable, "-m", "psyau_graph.federated.flower.warm_exec",
                    "--runtime-api-address", f"127.0.0.1:{nport}", "--parent-pid", str(sn.pid)])
        self._write_flwr_config()
        return self

    def _write_flwr_config(self) -> None:
        lines = ['[superlink]', 'default = "lab"', '', '[superlink.lab]',
                 f'address = "127.0.0.1:{self.port}"']
        if self.tls:
            lines.append(f'root-certificates = {json.dumps(str(self.certs["ca"]))}')
        else:
            lines.append("insecure = true")
        home = Path(self.env["FLWR_HOME"])
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def _tree(self) -> set[int]:
        """Live PIDs of every started process, its process group and its descendants
        (the SuperLink/SuperNode start flower-superexec, flwr-serverapp and flwr-clientapp in
        sessions of their own, so process groups alone do not cover them). Linux ``/proc``."""
        table = _proc_table()
        roots = {p.pid for _, p in self.procs}
        found: set[int] = set()
        frontier = {pid for pid in roots if pid in table}
        frontier |= {pid for pid, (_, _, pg) in table.items() if pg in roots}
        while frontier:
            found |= frontier
            frontier = {pid for pid, (_, pp, _) in table.items() if pp in found and pid not in found}
        return {pid for pid in found if table[pid][0] != "Z"}

    def _remember_tree(self) -> None:
        self._seen |= self._tree()

    def stop(self) -> None:
        """Stop everything started here: SIGTERM to the process groups and every descendant
        seen, wait up to 10 s, then SIGKILL what is left (by PID)."""
        self._remember_tree()
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for pid in sorted(self._seen):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for _, p in self.procs:
                p.poll()
            if not self.alive():
                break
            time.sleep(0.2)
        for pid in self.alive():
            _signal(pid, signal.SIGKILL)
        for _, p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def alive(self) -> list[int]:
        """PIDs of live (non-zombie) processes among those started here and their
        descendants (Linux ``/proc``)."""
        table = _proc_table()
        pids = (self._seen | self._tree()) & set(table)
        return sorted(pid for pid in pids if table[pid][0] != "Z")

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    # -------------------------------------------------------------- run
    def run(self, config: FederatedConfig, task_spec: dict, out_dir: str | Path, *,
            timeout: float = 900.0, repeat: int = 0) -> dict:
        """``flwr run`` the app with ``config``; wait (bounded) for the server's ``metrics.json``."""
        out = Path(out_dir).resolve()
        rc = to_run_config(config, task_spec, out=str(out), repeat=repeat, timeout=timeout,
                           grid_poll_interval=self.poll_interval or 0.0,
                           pack_arrays=self.pack_arrays)
        rc_file = self.work / "run_config.toml"
        rc_file.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in rc.items()) + "\n")
        metrics = out / "metrics.json"
        if metrics.exists():
            metrics.unlink()
        cmd = [_bin("flwr"), "run", str(APP_DIR), "lab", "--run-config", str(rc_file), "--stream"]
        t0 = time.perf_counter()
        runner = self._spawn("flwr-run", cmd)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self._remember_tree()
                if metrics.exists():
                    break
                if runner.poll() is not None and not metrics.exists():
                    # the stream may end a moment before the server writes its results
                    time.sleep(1.0)
                    if not metrics.exists():
                        raise RuntimeError(f"flwr run ended (code {runner.returncode}) without "
                                           f"results:\n{self.log('flwr-run')[-3000:]}\n"
                                           f"superlink log:\n{self.log('superlink')[-3000:]}")
                time.sleep(0.3)
            else:
                raise TimeoutError(f"no results after {timeout:.0f} s:\n{self.log('flwr-run')[-3000:]}")
        finally:
            if runner.poll() is None:
                try:
                    os.killpg(runner.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    runner.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(runner.pid, signal.SIGKILL)
                    runner.wait(timeout=10)
        res = json.loads(metrics.read_text())
        res["engine"] = "deployment"
        res["deployment"] = dict(self.launch)
        res["client_wall_time"] = time.perf_counter() - t0
        return res
