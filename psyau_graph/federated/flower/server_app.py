"""Flower ``ServerApp``: builds the strategy and runs ``strategy.start``.

The initial model is the same common initial model as the in-process engine (seeded
from ``seed + repeat``); only its shared tensors are sent. At the end the server writes
``metrics.json``/``metrics.csv`` and plots to the run config's ``out`` folder (if set).
"""
from __future__ import annotations

import logging
import time
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from ...progress import LineProgress
from .. import core, personalized
from ..client import initial_state
from ..results import summarize
from ..run import write_outputs
from ..task import make_task
from .common import from_run_config
from ..privacy import privacy_report, wrap_dp
from ..run import RoundFailed
from .strategy import ClientCrashed, make_strategy

log = logging.getLogger(__name__)


def check_flower_supported(cfg) -> None:
    """Options the Flower engines do not implement raise instead of being ignored."""
    if cfg.strategy == "local":
        raise ValueError("the local-only baseline runs in-process (engine 'inprocess')")


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
        inner.progress = LineProgress(cfg.rounds, f"federate {cfg.strategy} (flower) split {extras['repeat']}",
                                      "round", every_pct=0)
        strategy = inner
        if cfg.dp_noise_multiplier > 0:
            strategy = wrap_dp(inner, noise_multiplier=cfg.dp_noise_multiplier,
                               clipping_norm=cfg.dp_clipping_norm, num_clients=cfg.clients)
        t0 = time.perf_counter()
        try:
            strategy.start(grid=grid, initial_arrays=ArrayRecord(core.select(init, keys)),
                           num_rounds=cfg.rounds, timeout=extras["timeout"],
                           train_config=ConfigRecord({"local-epochs": cfg.local_epochs}),
                           evaluate_config=ConfigRecord({}))
        except (RoundFailed, ClientCrashed) as exc:
            # Flower logs and swallows a ServerApp exception; hand it to an in-process
            # caller so that the run stops there with the same error
            if sink is not None:
                sink({"error": exc})
            raise
        wall = time.perf_counter() - t0
        records = sorted(inner.records, key=lambda r: (r["round"], r["client"]))
        result = {"engine": "flower", "config": cfg.to_dict(), "records": records,
                  "summary": summarize(records) if records else {},
                  "failures": inner.failures, "rejected": inner.rejected, "scaled": inner.scaled,
                  "wall_time": wall, "round_time_mean": wall / cfg.rounds,
                  "round_times": [inner.round_times.get(r) for r in range(1, cfg.rounds + 1)],
                  "shared_keys": keys,
                  "privacy": (privacy_report(cfg.dp_noise_multiplier, cfg.dp_clipping_norm,
                                             cfg.rounds, cfg.clients, cfg.dp_delta)
                              if cfg.dp_noise_multiplier > 0 else None)}
        if extras["out"]:
            write_outputs(result, extras["out"])
        if sink is not None:
            sink({**result, "strategy_object": inner})

    return app


#: the app ``flwr run`` loads (``[tool.flwr.app.components] serverapp``)
app = build_server_app()
