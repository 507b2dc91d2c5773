"""Run several strategies on the same clients and splits and compare them (for the demo)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import STRATEGIES, FederatedConfig
from .results import summarize, summary_table, write_csv, write_json
from .run import FederatedRun
from .task import Task


def compare_strategies(dataset, clients: int = 3, rounds: int = 5, local_epochs: int = 2,
                       strategies: Sequence[str] = STRATEGIES, out_dir: str | Path | None = None,
                       *, model_config: Mapping | Any = None, task: Task | None = None,
                       progress: bool = True, **config) -> dict:
    """Run ``strategies`` in-process on the same partition, splits and initial model.

    Args:
        dataset: cache folder (or loaded dataset) of the task.
        clients, rounds, local_epochs: K, R, E (defaults: 3, 5, 2 — demo scale).
        strategies: subset of :data:`~psyau_graph.federated.config.STRATEGIES` (default: all seven).
        out_dir: where to write ``comparison.json``, ``comparison.csv`` and the plots
            (default: ``None`` = write nothing).
        model_config: ``FedPsyAUConfig`` (or its fields as a dict).
        task: alternative task (default: the paper's network).
        **config: further :class:`FederatedConfig` fields (``lr``, ``repeats``, ``seed`` ...);
            ``repeats`` defaults to 1 here.

    Returns:
        ``{"summary": {strategy: ...}, "table": str, "records": [...], "failures": [...]}``.
    """
    config.setdefault("repeats", 1)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; expected a subset of {STRATEGIES}")
    base = FederatedConfig(clients=clients, rounds=rounds, local_epochs=local_epochs, **config)
    records, failures, rejected = [], [], []
    for s in strategies:
        run = FederatedRun(dataset, replace(base, strategy=s), model_config, task=task,
                           progress=progress)
        dataset = run.dataset  # load once, reuse
        task = run.task
        res = run.run(None)
        records += res["records"]
        failures += res["failures"]
        rejected += res["rejected"]
    summary = summarize(records)
    out = {"config": base.to_dict(), "strategies": list(strategies), "summary": summary,
           "table": summary_table(summary), "records": records, "failures": failures,
           "rejected": rejected}
    if out_dir is not None:
        from .plots import plot_clients, plot_loss
        d = Path(out_dir)
        write_json(d / "comparison.json", out)
        write_csv(d / "comparison.csv", records)
        plot_clients(records, d / "clients_uf1_uar.png")
        plot_loss(records, d / "loss_by_round.png")
    return out
