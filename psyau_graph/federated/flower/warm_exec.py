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

The parent never runs a torch operation (so no OpenMP pool exists at fork time) and
reaps its children between polls. Each child writes one line when its task ends: wall
time, CPU time and torch threads (to tell training from waiting and contention). Only ClientApp tasks are served; any other task type
is refused (Flower reports it as a failed launch). The SuperNode's Runtime API is on
127.0.0.1 and is used without TLS, as Flower's default subprocess mode does; TLS between
SuperNode and SuperLink is unaffected.

Run: ``python -m psyau_graph.federated.flower.warm_exec --runtime-api-address
127.0.0.1:PORT [--parent-pid PID]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


class ForkClientAppExecutor:
    """Flower SuperExec executor that forks a pre-imported process per ClientApp task.

    Implements Flower's ``Executor`` protocol (``flwr.supercore.superexec.executor``).
    """

    def __init__(self) -> None:
        self.children: set[int] = set()

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
                      f"threads", file=sys.stderr, flush=True)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.children.add(pid)
        print(f"warm executor: task {spec.task_id} runs in forked pid {pid}", file=sys.stderr,
              flush=True)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (non-blocking)."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        self.reconcile()


def _preload() -> None:
    """Import what every ClientApp task needs, without running any torch operation."""
    import torch  # noqa: F401
    import torch_geometric  # noqa: F401

    import psyau_graph.federated.flower.client_app  # noqa: F401
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
