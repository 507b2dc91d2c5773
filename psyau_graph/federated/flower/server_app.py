"""Flower ``ServerApp``: builds the strategy and runs its rounds.

The initial model is the same common initial model as the in-process engine (seeded
from ``seed + repeat``); only its shared tensors are sent. At the end the server writes
``metrics.json``/``metrics.csv`` and plots to the run config's ``out`` folder (if set).

The rounds are :func:`run_rounds`, the loop of Flower's ``Strategy.start`` (configure
train → send/receive → aggregate train → configure evaluate → send/receive → aggregate
evaluate) made to start at any round and to call back after each one: with ``out``
set, the server writes its checkpoint (:mod:`.checkpoint`) after every round, and run
config ``resume = true`` continues from it.

A run that stops (quorum missed, a ClientApp raised) also writes ``OUT/run_error.json``
(``{"type", "message"}``), which :class:`~.deployment.LocalDeployment` turns back into
the same exception, since Flower only logs an exception raised in a ServerApp process.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.superlink.grid.inmemory_grid import InMemoryGrid
from flwr.serverapp import Grid, ServerApp

from ...progress import LineProgress
from .. import core, personalized
from ..client import initial_state
from ..results import summarize
from ..run import write_outputs
from ..task import make_task
from .common import from_run_config
from .polling_grid import PollingGrid
from ..privacy import privacy_report, wrap_dp
from ..run import RoundFailed
from .checkpoint import STATE_FILE, ResumeError, load_server_state, save_server_state, set_rng_state
from .strategy import ClientCrashed, make_strategy

ERROR_FILE = "run_error.json"
#: seconds between two listings of the online nodes while replies are pending (deployment)
NODE_WATCH_S = 2.0

log = logging.getLogger(__name__)


def check_flower_supported(cfg) -> None:
    """Options the Flower engines do not implement raise instead of being ignored."""
    if cfg.strategy == "local":
        raise ValueError("the local-only baseline runs in-process (engine 'inprocess')")


def run_rounds(strategy, grid: Grid, arrays: ArrayRecord, *, first: int, num_rounds: int,
               timeout: float, train_config: ConfigRecord, evaluate_config: ConfigRecord,
               after_round: Callable[[int, ArrayRecord], None] | None = None) -> ArrayRecord:
    """Rounds ``first..num_rounds`` of ``strategy`` (the loop of Flower's
    ``Strategy.start``, whose round numbers always begin at 1).

    Args:
        arrays: the global arrays round ``first`` starts from.
        after_round: called with ``(round, global arrays)`` after each completed round.

    Returns:
        the global arrays after the last round.
    """
    need = int(getattr(strategy, "min_available_nodes", 0) or 0)
    for rnd in range(first, num_rounds + 1):
        log.info("[ROUND %s/%s]", rnd, num_rounds)
        wait_for_nodes(grid, need, timeout, f"round {rnd} (train)")
        replies = grid.send_and_receive(messages=strategy.configure_train(rnd, arrays, train_config, grid),
                                        timeout=timeout)
        agg, _ = strategy.aggregate_train(rnd, replies)
        if agg is not None:
            arrays = agg
        wait_for_nodes(grid, need, timeout, f"round {rnd} (evaluate)")
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(rnd, arrays, evaluate_config, grid), timeout=timeout)
        strategy.aggregate_evaluate(rnd, replies)
        if after_round is not None:
            after_round(rnd, arrays)
    return arrays


def wait_for_nodes(grid: Grid, expected: int, timeout: float, what: str) -> None:
    """Wait (at most ``timeout`` s) until ``expected`` nodes are online, so that Flower's
    node sampling (which waits without a limit) never blocks a run forever; raises
    :class:`RoundFailed` with one line otherwise."""
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < expected:
        if time.monotonic() >= deadline:
            raise RoundFailed(f"{what}: {len(nodes)} of {expected} nodes online after "
                              f"{timeout:.0f} s (a lab that went offline did not come back)")
        time.sleep(1.0)


def ask_client_indices(grid: Grid, expected: int, timeout: float) -> dict[int, int]:
    """``node id -> client index`` of every connected node (a ``query`` message each,
    answered by :mod:`.client_app` with its ``partition-id``; waits up to ``timeout`` s
    for ``expected`` nodes)."""
    deadline = time.monotonic() + timeout
    nodes = list(grid.get_node_ids())
    while len(nodes) < expected and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    if len(nodes) < expected:
        raise ResumeError(f"cannot resume: {len(nodes)} of {expected} nodes connected after {timeout:.0f} s")
    msgs = [Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=int(n),
                    message_type=MessageType.QUERY) for n in nodes]
    out = {}
    for rep in grid.send_and_receive(msgs, timeout=timeout):
        node = int(rep.metadata.src_node_id)
        if rep.has_error():
            raise ResumeError(f"cannot resume: node {node} did not say its client index: {rep.error.reason}")
        out[node] = int(rep.content["metrics"]["client-index"])
    if sorted(out.values()) != list(range(expected)):
        raise ResumeError(f"cannot resume: the nodes report client indices {sorted(out.values())}, "
                           f"expected 0..{expected - 1}")
    return out


def _write_error(out: str, exc: BaseException) -> None:
    if not out:
        return
    from ..results import write_json
    write_json(Path(out) / ERROR_FILE, {"type": type(exc).__name__, "message": str(exc)})


def build_server_app(spec: dict | None = None, sink: Callable[[dict], None] | None = None
                     ) -> ServerApp:
    """A ``ServerApp``.

    Args:
        spec: run-config dict overriding ``context.run_config`` (simulation engine).
        sink: called with the result dict at the end (in-process callers).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        rc = spec if spec is not None else context.run_config
        cfg, task_spec, extras = from_run_config(rc)
        check_flower_supported(cfg)
        task = make_task(task_spec)
        init = initial_state(task, cfg.seed + extras["repeat"])
        personal, fisher_keys = (), None
        model = task.make_model()
        if cfg.strategy in personalized.PERSONAL_STRATEGIES:  # the head stays on the clients
            personal = personalized.personal_prefixes(task, cfg.personal_prefixes)
        keys = core.shared_keys(model, cfg.share_bn_stats, tuple(cfg.exclude_prefixes) + personal)
        if cfg.strategy in personalized.FISHER_STRATEGIES:  # what the clients' Fisher record holds
            trainable = {k for k, p in model.named_parameters() if p.requires_grad}
            fisher_keys = [k for k in keys if k in trainable]
        inner = make_strategy(cfg.strategy, num_nodes=cfg.clients, mu=cfg.mu, theta=cfg.theta,
                              min_clients=cfg.quorum, aggregation=cfg.aggregation,
                              trim_fraction=cfg.trim_fraction, norm_bound=cfg.norm_bound,
                              personal_prefixes=personal, fisher_keys=fisher_keys)
        # one line per round when stderr is not a terminal (batch jobs), as the in-process engine
        desc = f"federate {cfg.strategy} (flower) split {extras['repeat']}"
        inner.progress = LineProgress(cfg.rounds, desc, "round", every_pct=0)
        strategy = inner
        if cfg.dp_noise_multiplier > 0:
            strategy = wrap_dp(inner, noise_multiplier=cfg.dp_noise_multiplier,
                               clipping_norm=cfg.dp_clipping_norm, num_clients=cfg.clients)
        out = extras["out"]
        arrays, first, run_tag, wall_before = ArrayRecord(core.select(init, keys)), 1, uuid.uuid4().hex, 0.0
        state_path = Path(out) / STATE_FILE if out else None
        if out:
            (Path(out) / ERROR_FILE).unlink(missing_ok=True)
        # deployment (not the simulation's in-memory grid): nodes can die and come back, so
        # every NODE_WATCH_S the online nodes are listed and a reply lost with its SuperNode
        # is given up on
        watch = 0.0 if isinstance(grid, InMemoryGrid) else NODE_WATCH_S
        if watch > 0 or extras["grid_poll_interval"] > 0 or extras["pack_arrays"]:
            # 3.0 s: Flower's HttpGrid interval, when no other was asked for
            grid = PollingGrid(grid, extras["grid_poll_interval"] or 3.0,
                               pack_arrays=extras["pack_arrays"], watch_nodes=watch)
        t0 = time.perf_counter()
        try:
            if extras["resume"]:
                if state_path is None:
                    raise ResumeError("resume needs the run config 'out' of the interrupted run")
                state = load_server_state(state_path, cfg, extras["repeat"])
                inner.load_state_dict(state["strategy"])
                set_rng_state(state["rng"])
                arrays = ArrayRecord(state["global"])
                first, run_tag = int(state["round"]) + 1, str(state["run_tag"])
                wall_before = float(state["wall_time"])
                inner.progress = LineProgress(cfg.rounds, desc, "round", every_pct=0, initial=first - 1)
                if first <= cfg.rounds:  # Flower node ids are new: learn who is which lab
                    inner.bind_nodes(ask_client_indices(grid, cfg.clients, extras["timeout"]))
                log.info("resuming split %d after round %d of %d", extras["repeat"], first - 1, cfg.rounds)
            base = {"run-tag": run_tag, "resumed-from": first - 1}

            def after_round(rnd: int, glob: ArrayRecord) -> None:
                if state_path is not None:
                    save_server_state(state_path, config=cfg, repeat=extras["repeat"], rnd=rnd,
                                      global_arrays=glob.to_torch_state_dict(),
                                      strategy_state=inner.state_dict(), run_tag=run_tag,
                                      wall_time=wall_before + time.perf_counter() - t0)

            run_rounds(strategy, grid, arrays, first=first, num_rounds=cfg.rounds,
                       timeout=extras["timeout"],
                       train_config=ConfigRecord({"local-epochs": cfg.local_epochs, **base}),
                       evaluate_config=ConfigRecord(dict(base)), after_round=after_round)
        except (RoundFailed, ClientCrashed, ResumeError) as exc:
            # Flower logs and swallows a ServerApp exception; hand it to an in-process
            # caller (and to the error file) so that the run stops there with the same error
            _write_error(out, exc)
            if sink is not None:
                sink({"error": exc})
            raise
        wall = wall_before + time.perf_counter() - t0
        records = sorted(inner.records, key=lambda r: (r["round"], r["client"]))
        result = {"engine": "flower", "config": cfg.to_dict(), "records": records,
                  "summary": summarize(records) if records else {},
                  "failures": inner.failures,
                  "lost_nodes": list(getattr(grid, "lost", [])), "rejected": inner.rejected, "scaled": inner.scaled,
                  "wall_time": wall, "round_time_mean": wall / cfg.rounds,
                  "resumed_after_round": first - 1 if extras["resume"] else None,
                  "round_times": [inner.round_times.get(r) for r in range(1, cfg.rounds + 1)],
                  "shared_keys": keys,
                  "privacy": (privacy_report(cfg.dp_noise_multiplier, cfg.dp_clipping_norm,
                                             cfg.rounds, cfg.clients, cfg.dp_delta)
                              if cfg.dp_noise_multiplier > 0 else None)}
        if out:
            write_outputs(result, out)
        if sink is not None:
            sink({**result, "strategy_object": inner})

    return app


#: the app ``flwr run`` loads (``[tool.flwr.app.components] serverapp``)
app = build_server_app()
