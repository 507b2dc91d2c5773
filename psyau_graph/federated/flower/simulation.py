"""Run the Flower app on Flower's simulation runtime (Ray) on this machine."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from ..config import FederatedConfig
from .common import to_run_config

log = logging.getLogger(__name__)

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_IMPORT_WARNING": "1",
}


def offline_env(work_dir: str | Path) -> dict:
    """Environment for Flower/Ray processes: no telemetry, no update checks, no runtime
    dependency installation, and ``FLWR_HOME``/``RAY_TMPDIR`` inside ``work_dir``."""
    work = Path(work_dir)
    (work / "flwr_home").mkdir(parents=True, exist_ok=True)
    (work / "ray").mkdir(parents=True, exist_ok=True)
    return {**OFFLINE_ENV, "FLWR_HOME": str(work / "flwr_home"), "RAY_TMPDIR": str(work / "ray")}


def run_simulation(data: str | Path, config: FederatedConfig, task_spec: dict | None = None,
                   out_dir: str | Path | None = None, *, repeat: int = 0, num_cpus: int | None = None,
                   work_dir: str | Path | None = None, verbose: bool = False,
                   resume: bool = False) -> dict:
    """Run one strategy with ``config.clients`` virtual SuperNodes.

    Args:
        data: the cache every virtual node partitions (it keeps only its subject group).
        config: :class:`FederatedConfig` (any strategy but local).
        task_spec: task spec (default: ``{"name": "fedpsyau"}``).
        out_dir: where the server writes metrics/plots (default: none).
        repeat: which 70/30 split (default: ``0``).
        num_cpus: CPUs Ray may use (default: all); each ClientApp takes 1.
        work_dir: folder for ``FLWR_HOME``/``RAY_TMPDIR`` (default: a temp dir).
        verbose: Flower debug logging (default: ``False``).
        resume: continue from ``out_dir/federation_state.pt`` (default: ``False``). With
            ``out_dir`` the server writes that checkpoint after every round and the
            virtual clients keep their local state in ``out_dir/client_state``.

    Returns:
        the server's result dict (records, summary, failures, rejected, wall_time) plus
        ``"strategy_object"`` (the strategy, with ``received`` reply contents).
    """
    if config.strategy == "local":
        raise ValueError("the local-only baseline runs in-process (engine 'inprocess')")
    from .server_app import check_flower_supported
    check_flower_supported(config)
    task_spec = task_spec or {"name": "fedpsyau"}
    if resume and out_dir is None:
        raise ValueError("resume needs the output folder of the interrupted run")
    client_state = str(Path(out_dir) / "client_state") if out_dir is not None else ""
    rc = to_run_config(config, task_spec, data=str(data), out=str(out_dir or ""), repeat=repeat,
                       resume=resume, client_state=client_state)
    own_tmp = None
    if work_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="psyau-flwr-")
        work_dir = own_tmp.name
    env = offline_env(work_dir)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    results: list[dict] = []
    try:
        from flwr.simulation import run_simulation as flwr_run_simulation

        from .client_app import build_client_app
        from .server_app import build_server_app

        ncpu = num_cpus or os.cpu_count() or 1
        # Ray workers inherit this process's environment (set above); each ClientApp
        # actor reserves one CPU, so at most ``ncpu`` clients train at the same time.
        backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                   "init_args": {"num_cpus": ncpu, "include_dashboard": False,
                                 "_temp_dir": env["RAY_TMPDIR"]}}
        flwr_run_simulation(server_app=build_server_app(rc, sink=results.append),
                            client_app=build_client_app(rc), num_supernodes=config.clients,
                            backend_config=backend, verbose_logging=verbose)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            import ray
            if ray.is_initialized():
                ray.shutdown()
        finally:
            if own_tmp is not None:
                own_tmp.cleanup()
    if not results:
        raise RuntimeError("the Flower simulation ended without a result (see the Flower log)")
    res = results[0]
    if "error" in res:  # quorum missed or a ClientApp raised: the run stops with that error
        raise res["error"]
    res["engine"] = "simulation"
    return res
