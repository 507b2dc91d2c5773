"""Flower deployment engine on one machine (loopback): SuperLink + SuperNodes + ``flwr run``.

This is what two labs do on two machines (see ``docs/federated.md``), compressed onto
127.0.0.1 for tests, the benchmark and ``psyau federate --engine deployment``. Every
process is started in its own session and stopped by PID (process-group kill) in
:meth:`LocalDeployment.stop`, also when something fails; every wait is bounded.

With TLS, SuperNode authentication is on by default: the SuperLink runs with
``--enable-supernode-auth``, each lab's public key is registered through the Control API
(``flwr supernode register``) and each SuperNode signs in with its private key
(:mod:`.node_auth`). :meth:`LocalDeployment.kill_node` / :meth:`~LocalDeployment.restart_node`
stop a SuperNode like a dying machine and bring it back with the same key.
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
from .node_auth import NodeKey, load_node_keys, make_node_keys
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
        node_auth: SuperNode authentication (Flower's ``--enable-supernode-auth``): only
            SuperNodes whose public keys are registered may join. ``None`` (default): on
            exactly when ``tls`` is (Flower refuses it without TLS).
        node_keys: folder with one key pair per node (``node<i>`` private, ``node<i>.pub``
            public; see :func:`~psyau_graph.federated.flower.node_auth.load_node_keys`);
            default: fresh P-384 pairs generated in ``work_dir/node_keys`` (mode 0600).
        certs: ``{"ca", "cert", "key"}`` PEM paths of an existing CA certificate and server
            certificate/key (with ``tls``); default: a fresh self-signed test CA.
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
                 startup_timeout: float = 60.0, warm: bool = False, node_auth: bool | None = None,
                 node_keys: str | Path | None = None, certs: dict[str, str | Path] | None = None,
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
        self.certs: dict[str, Path] | None = ({k: Path(v) for k, v in certs.items()}
                                              if certs is not None else None)
        if certs is not None and not tls:
            raise ValueError("certs given but tls=False")
        self._init_node_auth(node_auth, node_keys)
        #: per node index: its SuperNode process, Runtime API port and log name (latest start)
        self.nodes: dict[int, dict] = {}

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
        if self.tls:
            if self.certs is None:
                self.certs = make_tls_certificates(self.work / "certs")
            link += ["--ssl-ca-certfile", str(self.certs["ca"]), "--ssl-certfile",
                     str(self.certs["cert"]), "--ssl-keyfile", str(self.certs["key"])]
        else:
            link += ["--insecure"]
        if self.node_auth:
            link += ["--enable-supernode-auth"]
        #: the SuperNode command (Flower's, or the opt-in fast launcher in warm mode)
        self._supernode_cmd = [_bin("flower-supernode")]
        if self.poll_interval is not None:
            from . import fast_supernode
            self.launch.update(supernode_launcher="psyau_graph.federated.flower.fast_supernode",
                               patched=fast_supernode.patch_report(self.poll_interval))
            self._supernode_cmd = [sys.executable, "-m", "psyau_graph.federated.flower.fast_supernode",
                                   "--poll-interval", str(self.poll_interval), "--"]
        sl = self._spawn("superlink", link)
        self._wait_port(self.port, "superlink", sl)
        self._write_flwr_config()
        if self.node_auth:
            self._register_node_keys()
        for i in range(len(self.node_data)):
            self.start_node(i)
        return self

    def _node_security(self) -> list[str]:
        return (["--root-certificates", str(self.certs["ca"])] if self.tls else ["--insecure"])

    def start_node(self, i: int, *, data_path: str | Path | None = None,
                   private_key: str | Path | None = None, name: str | None = None,
                   wait: bool = True) -> subprocess.Popen:
        """Start (or restart) SuperNode ``i`` (its partition index) and wait for its Runtime
        API port; with node authentication it signs in with node ``i``'s private key.

        Args:
            i: partition index (node config ``partition-id``).
            data_path: its data folder (default: ``node_data[i]``).
            private_key: its private key (default: node ``i``'s registered key).
            name: log/process name (default: ``supernode<i>``, then ``supernode<i>.restart<k>``).
            wait: wait (bounded) for its Runtime API port (default: ``True``; ``False`` for a
                node expected to be refused, which may exit before the port is seen).
        """
        path = str(data_path) if data_path is not None else self.node_data[i]
        if name is None:
            starts = sum(1 for n, _ in self.procs if n == f"supernode{i}" or
                         n.startswith(f"supernode{i}.restart"))
            name = f"supernode{i}" if starts == 0 else f"supernode{i}.restart{starts}"
        nport = free_port()
        node_cfg = (f"data-path={json.dumps(path)} partition-id={i} num-partitions={len(self.node_data)} "
                    f"state-dir={json.dumps(str(self.node_state_dir(i)))}")
        isolation = ["--isolation", "process"] if self.warm else []
        auth = []
        if private_key is None and self.node_auth and i < len(self.node_keys):
            private_key = self.node_keys[i].private
        if private_key is not None:
            auth = ["--auth-supernode-private-key", str(private_key)]
        sn = self._spawn(name, [
            *self._supernode_cmd, *self._node_security(), "--superlink", f"127.0.0.1:{self.port}",
            "--host", "127.0.0.1", "--port", str(nport), "--node-config", node_cfg,
            "--max-retries", "20", "--max-wait-time", "60", *isolation, *auth])
        if wait:
            self._wait_port(nport, name, sn)
        warm = None
        if self.warm:
            warm = self._spawn(name.replace("supernode", "warm-exec"), [
                sys.executable, "-m", "psyau_graph.federated.flower.warm_exec",
                "--runtime-api-address", f"127.0.0.1:{nport}", "--parent-pid", str(sn.pid)])
        self.nodes[i] = {"proc": sn, "port": nport, "name": name, "warm": warm}
        return sn

    def _write_flwr_config(self) -> None:
        lines = ['[superlink]', 'default = "lab"', '', '[superlink.lab]',
                 f'address = "127.0.0.1:{self.port}"']
        if self.tls:
            lines.append(f'root-certificates = {json.dumps(str(self.certs["ca"]))}')
        else:
            lines.append("insecure = true")
        home = Path(self.env["FLWR_HOME"])
        (home / "config.toml").write_text("\n".join(lines) + "\n")

    def _tree(self, roots: set[int] | None = None) -> set[int]:
        """Live PIDs of every started process (or of ``roots``), its process group and its
        descendants (the SuperLink/SuperNode start flower-superexec, flwr-serverapp and
        flwr-clientapp in sessions of their own, so process groups alone do not cover them).
        Linux ``/proc``."""
        table = _proc_table()
        if roots is None:
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

    # -------------------------------------------------------------- node authentication
    def _init_node_auth(self, node_auth: bool | None, node_keys: str | Path | None) -> None:
        self.node_auth = self.tls if node_auth is None else bool(node_auth)
        if self.node_auth and not self.tls:
            raise ValueError("node authentication needs TLS: Flower's SuperLink refuses "
                             "--enable-supernode-auth together with --insecure")
        if node_keys is not None and not self.node_auth:
            raise ValueError("node keys given but node authentication is off")
        #: one key pair per node (index order); filled at start when generated here
        self.node_keys: list[NodeKey] = []
        #: ``{"node", "fingerprint", "node_id"}`` per public key registered with the SuperLink
        self.registered: list[dict] = []
        if node_keys is not None:  # checked before anything starts
            self.node_keys = load_node_keys(node_keys, len(self.node_data))

    def _flwr_cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``flwr <args>`` against this SuperLink (connection ``lab``); its stdout.
        A non-zero exit raises with Flower's output."""
        cmd = [_bin("flwr"), *args]
        try:
            done = subprocess.run(cmd, env=self.env, cwd=self.work, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"`flwr {' '.join(args)}` did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            raise RuntimeError(f"`flwr {' '.join(args)}` failed (code {done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def register_key(self, public_key: str | Path) -> int:
        """Register an OpenSSH public key with the SuperLink (``flwr supernode register``,
        Flower's Control API); returns the node id the SuperLink assigned to it."""
        out = self._flwr_cli("supernode", "register", str(public_key), "lab", "--format", "json")
        try:
            return int(json.loads(out[out.index("{"):])["node-id"])
        except (ValueError, KeyError) as exc:
            raise RuntimeError(f"unexpected output of `flwr supernode register`: {out!r}") from exc

    def _register_node_keys(self) -> None:
        if not self.node_keys:
            self.node_keys = make_node_keys(self.work / "node_keys", len(self.node_data))
        for i, key in enumerate(self.node_keys):
            node_id = self.register_key(key.public)
            self.registered.append({"node": i, "fingerprint": key.fingerprint, "node_id": node_id})

    def list_nodes(self) -> list[dict]:
        """The SuperLink's SuperNodes (``flwr supernode list --format json``): one dict per
        node with at least ``node-id`` and ``status`` (e.g. ``registered``, ``online``,
        ``offline``)."""
        out = self._flwr_cli("supernode", "list", "lab", "--format", "json")
        data = json.loads(out[out.index("{"):])
        return list(data.get("nodes", []))

    def security(self) -> dict:
        """What protected this deployment (recorded in the run's outputs): TLS, node
        authentication and the fingerprints of the registered public keys."""
        return {"tls": self.tls, "node_auth": self.node_auth,
                "registered_keys": [dict(r) for r in self.registered]}

    # -------------------------------------------------------------- node failure
    def kill_node(self, i: int) -> list[int]:
        """SIGKILL SuperNode ``i`` with everything it started (its ClientApp processes, its
        warm executor): a lab machine that dies. Returns the PIDs killed."""
        node = self.nodes[i]
        roots = {node["proc"].pid} | ({node["warm"].pid} if node["warm"] is not None else set())
        pids = self._tree(roots)
        for pid in sorted(pids):
            _signal(pid, signal.SIGKILL)
        for p in (node["proc"], node["warm"]):
            if p is not None:
                p.wait(timeout=30)
        return sorted(pids)

    def restart_node(self, i: int) -> subprocess.Popen:
        """Start SuperNode ``i`` again after :meth:`kill_node` (same data, same key, so the
        SuperLink knows it as the same registered node); logs to ``supernode<i>.restart<k>``."""
        if self.nodes[i]["proc"].poll() is None:
            raise RuntimeError(f"SuperNode {i} is still running")
        return self.start_node(i)

    # -------------------------------------------------------------- resume
    def node_state_dir(self, i: int) -> Path:
        """Node ``i``'s folder for its local-state files (node config ``state-dir``): inside
        ``work_dir``, so a deployment restarted on the same ``work_dir`` finds them."""
        return (self.work / "node_state" / f"node{int(i)}").resolve()

    @staticmethod
    def _raise_server_error(out: Path) -> None:
        """Re-raise the error a ServerApp recorded in ``out/run_error.json``, if any."""
        from ..run import RoundFailed
        from .server_app import ERROR_FILE
        from .checkpoint import ResumeError
        from .strategy import ClientCrashed
        path = out / ERROR_FILE
        if not path.exists():
            return
        err = json.loads(path.read_text())
        kinds = {"RoundFailed": RoundFailed, "ClientCrashed": ClientCrashed, "ResumeError": ResumeError}
        raise kinds.get(err["type"], RuntimeError)(err["message"])

    # -------------------------------------------------------------- run
    def run(self, config: FederatedConfig, task_spec: dict, out_dir: str | Path, *,
            timeout: float = 900.0, repeat: int = 0, resume: bool = False) -> dict:
        """``flwr run`` the app with ``config``; wait (bounded) for the server's ``metrics.json``.

        The server writes ``out_dir/federation_state.pt`` after every round; ``resume=True``
        continues from it (a new ``flwr run``; the SuperNodes restore their local state
        from :meth:`node_state_dir`). A run the server stopped (quorum missed, a ClientApp
        raised) raises the server's :class:`~psyau_graph.federated.run.RoundFailed` or
        :class:`~.strategy.ClientCrashed` with its one-line message."""
        out = Path(out_dir).resolve()
        rc = to_run_config(config, task_spec, out=str(out), repeat=repeat, timeout=timeout,
                           resume=resume, grid_poll_interval=self.poll_interval or 0.0,
                           pack_arrays=self.pack_arrays)
        rc_file = self.work / "run_config.toml"
        rc_file.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in rc.items()) + "\n")
        metrics = out / "metrics.json"
        if metrics.exists():
            metrics.unlink()
        from .server_app import ERROR_FILE
        (out / ERROR_FILE).unlink(missing_ok=True)
        cmd = [_bin("flwr"), "run", str(APP_DIR), "lab", "--run-config", str(rc_file), "--stream"]
        t0 = time.perf_counter()
        runner = self._spawn("flwr-run", cmd)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                self._remember_tree()
                if metrics.exists():
                    break
                self._raise_server_error(out)
                if runner.poll() is not None and not metrics.exists():
                    # the stream may end a moment before the server writes its results
                    time.sleep(1.0)
                    self._raise_server_error(out)
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
        res["security"] = self.security()
        res["deployment"] = dict(self.launch)
        res["client_wall_time"] = time.perf_counter() - t0
        return res
