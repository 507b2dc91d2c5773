"""A warm ClientApp executor for one SuperNode (``flower-supernode --isolation process``).

Flower 1.42 runs every ClientApp message in a fresh ``flwr-clientapp`` process: in the
default ``subprocess`` isolation the SuperNode starts ``flower-superexec``, which starts
``flwr-clientapp --token ...`` per message; that process imports torch, PyG and this
package before it can train (seconds per message on a small CPU). With
``--isolation process`` the SuperNode starts no executor and waits for one to connect to
its Runtime API. This module is that executor: it runs Flower's own SuperExec loop
(``run_superexec``) but launches each task by ``os.fork()`` of a process that has already
imported torch, PyG and the ClientApp, and the child runs Flower's unchanged
``run_clientapp`` for that task's token. The per-message start-up becomes a fork.

What survives between messages: the parent imports everything a task imports (torch,
PyG, the network's modules, the data and training code) and keeps the node's loaded
dataset (:mod:`~psyau_graph.federated.flower.node_cache`). The parent does not know the
run's task spec before the first message (it comes with the run config, which only the
child fetches), so the first child to load a dataset reports ``(data path, task spec)``
to the parent through a pipe; the parent then loads it between polls and every later
child inherits it copy-on-write; for a task spec it has not seen, the parent also builds
the network once and discards it (its first build in a process imports more modules and
has PyG generate and compile the propagate code of each message-passing class; that took
most of a task's CPU time). The cache key includes the files' sizes and
modification times, checked by each child, so a changed data file is read again. Nothing
of a run's state is kept in the parent: each child gets its run's context from the
SuperNode and builds its model as before, so results are the same with the cache warm or
cold.

The parent never runs a parallel torch operation (so no OpenMP pool exists at fork time:
it loads datasets and builds the network with torch at 1 thread and restores the thread
count before forking) and
reaps its children between polls. Each child writes one line when its task ends: wall
time, CPU time, torch threads (to tell training from waiting and contention) and its
dataset cache hits and misses. Only ClientApp tasks are served; any other task type is
refused (Flower reports it as a failed launch). The SuperNode's Runtime API is on
127.0.0.1 and is used without TLS, as Flower's default subprocess mode does; TLS between
SuperNode and SuperLink is unaffected.

Run: ``python -m psyau_graph.federated.flower.warm_exec --runtime-api-address
127.0.0.1:PORT [--parent-pid PID]``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time


#: the line each forked task writes when it ends (written in :meth:`ForkClientAppExecutor.launch`);
#: groups: exit code, wall s, CPU s, torch threads, dataset cache hits, misses
TASK_LINE = re.compile(r"ended with code (-?\d+) after ([0-9.]+) s wall, ([0-9.]+) s CPU, (\d+) torch "
                       r"threads, dataset cache (\d+) hit\(s\) (\d+) miss\(es\)")


class ForkClientAppExecutor:
    """Flower SuperExec executor that forks a pre-imported process per ClientApp task.

    Implements Flower's ``Executor`` protocol (``flwr.supercore.superexec.executor``).
    """

    def __init__(self) -> None:
        self.children: set[int] = set()
        # children -> parent: one JSON line {"path", "task_spec"} per dataset a child loaded
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._pending = b""
        self._refused: set[tuple] = set()
        #: datasets the parent loaded for its children (data path, canonical task spec)
        self.preloaded: list[tuple[str, str]] = []
        #: task specs whose network the parent built once, or tried to (canonical task spec)
        self.warmed: list[str] = []

    def get_eligible_capacity(self, supported_task_types, *, insecure=False,
                              root_certificates_path=None):
        from flwr.supercore.constant import TaskType
        del insecure, root_certificates_path
        return {t for t in supported_task_types if t == TaskType.CLIENT_APP}, set()

    def wait_for_capacity(self, task_type=None, *, fab_hash=None, insecure=False,
                          root_certificates_path=None) -> None:
        del task_type, fab_hash, insecure, root_certificates_path

    def launch(self, spec):
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"warm executor runs ClientApp tasks only, got {spec.task_type}")
        certs = None
        if not spec.insecure and spec.root_certificates_path is not None:
            with open(spec.root_certificates_path, "rb") as f:
                certs = f.read()
        pid = os.fork()
        if pid == 0:  # child: run one task with Flower's own ClientApp runner, then exit
            code = 1
            t0, c0 = time.perf_counter(), time.process_time()
            from . import node_cache
            os.close(self._rfd)
            wfd = self._wfd
            node_cache.CACHE.on_miss = lambda path, task_spec: os.write(
                wfd, (json.dumps({"path": path, "task_spec": task_spec}) + "\n").encode())
            h0, m0 = node_cache.CACHE.hits, node_cache.CACHE.misses
            try:
                from flwr.supernode.runtime.run_clientapp import run_clientapp
                run_clientapp(runtime_api_address=spec.runtime_api_address, token=spec.token,
                              insecure=spec.insecure, certificates=certs,
                              parent_pid=spec.parent_pid,
                              runtime_dependency_install=spec.runtime_dependency_install)
                code = 0
            except SystemExit as e:  # flwr_exit ends run_clientapp with sys.exit(code)
                code = e.code if isinstance(e.code, int) else 1
            except BaseException as e:  # noqa: BLE001 - report, then leave the child
                print(f"warm executor: ClientApp task failed: {e!r}", file=sys.stderr, flush=True)
            finally:
                import torch
                print(f"warm executor: task {spec.task_id} (pid {os.getpid()}) ended with code "
                      f"{code} after {time.perf_counter() - t0:.2f} s wall, "
                      f"{time.process_time() - c0:.2f} s CPU, {torch.get_num_threads()} torch "
                      f"threads, dataset cache {node_cache.CACHE.hits - h0} hit(s) "
                      f"{node_cache.CACHE.misses - m0} miss(es)", file=sys.stderr, flush=True)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)
        print(f"warm executor: task {spec.task_id} runs in forked pid {pid}", file=sys.stderr,
              flush=True)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (non-blocking), then preload what they reported."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)
        self._preload_reported()

    def _preload_reported(self) -> None:
        """Build the networks and load the datasets the children reported (into this
        process's cache; torch at 1 thread, so no OpenMP pool exists when the next child
        is forked)."""
        while True:
            try:
                chunk = os.read(self._rfd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        if not lines:
            return
        import torch

        from . import node_cache
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for line in lines:
                req = json.loads(line)
                ident = (req["path"], node_cache.spec_key(req["task_spec"]))
                if ident[1] not in self.warmed:
                    self.warmed.append(ident[1])  # tried once per spec, whatever the outcome
                    try:
                        self._build_network_once(req["task_spec"])
                    except Exception as e:  # noqa: BLE001 - each task builds it anyway
                        print(f"warm executor: could not build the network of {ident[1]} "
                              f"({e!r}); each task builds it itself", file=sys.stderr, flush=True)
                if ident in self._refused:
                    continue
                t0 = time.perf_counter()
                try:
                    loaded = node_cache.CACHE.preload(req["task_spec"], req["path"])
                except Exception as e:  # noqa: BLE001 - the children load it themselves
                    self._refused.add(ident)
                    print(f"warm executor: could not preload {req['path']} ({e!r}); each task "
                          "loads it itself", file=sys.stderr, flush=True)
                    continue
                if loaded:
                    self.preloaded.append(ident)
                    print(f"warm executor: preloaded dataset {req['path']} for the next tasks "
                          f"in {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)
        finally:
            torch.set_num_threads(threads)

    @staticmethod
    def _build_network_once(task_spec: dict) -> None:
        """Build (and discard) the task's network once, so that what its first build in a
        process does (lazy imports; PyG generating and compiling each message-passing
        class's propagate code) is done here and inherited by the children. The parent's
        random state is left as it was; each task still builds and seeds its own model."""
        import torch

        from ..task import make_task
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            make_task(task_spec).make_model()
        print(f"warm executor: built the network once for the next tasks in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.reconcile()


def _preload() -> None:
    """Import what every ClientApp task needs, without running any torch operation."""
    import torch  # noqa: F401
    import torch_geometric  # noqa: F401

    import psyau_graph.federated.flower.client_app  # noqa: F401
    import psyau_graph.federated.personalized  # noqa: F401
    import psyau_graph.nn  # noqa: F401  (the network's modules)
    import psyau_graph.data.dataset  # noqa: F401
    import psyau_graph.train.fit  # noqa: F401
    import psyau_graph.train.checkpoint  # noqa: F401
    from flwr.supernode.runtime import run_clientapp  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m psyau_graph.federated.flower.warm_exec",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--runtime-api-address", required=True,
                    help="host:port of the SuperNode's Runtime API")
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="exit when this process (the SuperNode) exits")
    args = ap.parse_args(argv)
    _preload()
    import importlib

    rs = importlib.import_module("flwr.supercore.superexec.run_superexec")

    executor = ForkClientAppExecutor()
    # run_superexec builds its executor with get_executor(); hand it ours instead.
    rs.get_executor = lambda *a, **k: executor
    rs.run_superexec(runtime_api_address=args.runtime_api_address, insecure=True,
                     parent_pid=args.parent_pid, runtime_dependency_install=False)


if __name__ == "__main__":
    main()
