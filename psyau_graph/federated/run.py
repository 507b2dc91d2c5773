"""In-process federated engine: K clients, R rounds, E local epochs, one process.

The server logic (:class:`ServerState`) is the same for the in-process engine and
the Flower strategies' bookkeeping: it keeps the global shared tensors and, for
P-FedProx, the last known model :math:`\\hat W_j` and sample count of every client.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from ..progress import LineProgress
from . import core, personalized
from .client import (DECLARED_FAILURES, client_data, clone_state, initial_state, local_evaluate,
                     local_train, partition)
from .config import FederatedConfig
from .results import summarize, write_csv, write_json
from .task import FedPsyAUTask, Task

log = logging.getLogger(__name__)


class RoundFailed(RuntimeError):
    """Fewer accepted client updates than the quorum (``min_clients``) in a round."""


def quorum_message(rnd: int, accepted: int, total: int, quorum: int, why: Mapping[Any, str]) -> str:
    """One line: which clients failed in which round, and the quorum missed."""
    who = "; ".join(f"client {c}: {w}" for c, w in sorted(why.items(), key=lambda x: str(x[0])))
    return (f"round {rnd}: {accepted} of {total} client updates accepted, below the quorum of {quorum} "
            f"(min_clients); failed: {who or 'none reported'}").replace("\n", " ")


STATE_FILE = "federation_state.pt"
STATE_FORMAT = "psyau_graph.federation_state/1"


def load_state(path: str | Path, config: FederatedConfig, *, fmt: str = STATE_FORMAT,
               kind: str = "federation checkpoint", error: type[Exception] = ValueError) -> dict:
    """Read a per-round server checkpoint (safe loading) and check it belongs to ``config``.

    ``fmt``/``kind`` name the expected format and what it is (the Flower engines' checkpoint
    uses its own); a wrong format or another configuration raises ``error``."""
    from ..train.checkpoint import safe_torch_load
    path = Path(path)
    state = safe_torch_load(path, "federation checkpoint")
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise error(f"{path} is not a {kind} (expected format {fmt!r})")
    saved, now = state["config"], config.to_dict()
    diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if diff:
        raise error(f"cannot resume from {path}: configuration differs (saved, now): {diff}")
    return state


class ServerState:
    """Server-side state of one run (global model and P-FedProx per-client models).

    Args:
        strategy: ``fedavg | fedprox | p-fedprox``.
        init_shared: the common initial shared tensors.
        theta: P-FedProx θ.
    """

    def __init__(self, strategy: str, init_shared: Mapping, theta: float = 0.9,
                 aggregation: str = "mean", trim_fraction: float = 0.2):
        self.aggregation, self.trim_fraction = aggregation, trim_fraction
        self.strategy = strategy
        self.theta = theta
        self.global_shared = clone_state(init_shared)
        self.hat: dict[Any, dict] = {}       # client -> last accepted model Ŵ_j
        self.n: dict[Any, int] = {}          # client -> training samples

    def model_for(self, client) -> dict:
        """What ``client`` receives: the global model, or its personalised mixture."""
        if self.strategy != "p-fedprox" or not self.hat:
            return self.global_shared
        if client not in self.hat:
            # never heard from this client: it receives the sample-weighted mean of the others
            return self.global_shared
        return core.personalised_init(self.hat, self.n, self.theta, clients=[client])[client]

    def aggregate(self, accepted: Mapping[Any, Mapping], num_samples: Mapping[Any, int],
                  fishers: Mapping[Any, Mapping] | None = None) -> None:
        """Fold accepted client updates into the state (``fishers``: FedAS/ELLP only)."""
        if not accepted:
            return
        ids = list(accepted)
        if self.strategy in personalized.PERSONAL_STRATEGIES:
            if sum(int(num_samples[c]) for c in ids) > 0:
                self.global_shared = personalized.aggregate(self.strategy, accepted, num_samples, fishers)
        elif self.strategy == "p-fedprox":
            for c in ids:
                self.hat[c] = clone_state(accepted[c])
                self.n[c] = int(num_samples[c])
            ids_all = list(self.hat)
            if sum(self.n[c] for c in ids_all) > 0:
                self.global_shared = core.fedavg([self.hat[c] for c in ids_all],
                                                 [self.n[c] for c in ids_all])
        elif self.aggregation == "median":
            self.global_shared = core.coordinate_median([accepted[c] for c in ids])
        elif self.aggregation == "trimmed-mean":
            self.global_shared = core.trimmed_mean([accepted[c] for c in ids], self.trim_fraction)
        else:
            if sum(int(num_samples[c]) for c in ids) > 0:
                self.global_shared = core.fedavg([accepted[c] for c in ids],
                                                 [int(num_samples[c]) for c in ids])


class FederatedRun:
    """Run one strategy in-process.

    Args:
        dataset: a dataset object of ``task`` or a path the task can load (cache folder).
        config: :class:`FederatedConfig`.
        model_config: ``FedPsyAUConfig`` fields as a dict (used when ``task`` is None).
        task: the task (default: :class:`FedPsyAUTask` with ``model_config``).
        progress: show a progress bar per round (default: ``True``; hidden off a TTY).
    """

    def __init__(self, dataset, config: FederatedConfig, model_config: Mapping | Any = None,
                 *, task: Task | None = None, progress: bool = True):
        if model_config is not None and not isinstance(model_config, Mapping):
            from dataclasses import asdict
            model_config = asdict(model_config)
        self.task = task if task is not None else FedPsyAUTask(dict(model_config or {}))
        if isinstance(dataset, (str, Path)):
            self.dataset = self.task.load_dataset(dataset)
        else:
            self.dataset = dataset
            if hasattr(self.task, "adopt"):
                self.task.adopt(dataset)
        self.config = config
        self.subjects = self.task.subjects(self.dataset)
        config.validate(num_subjects=len(set(self.subjects)))
        if config.dp_noise_multiplier > 0:
            raise ValueError("differential privacy runs on the Flower engines (simulation, "
                             "deployment), not in-process")
        self.progress = progress
        self.failures: list[dict] = []
        self.rejected: list[dict] = []
        self.round_times: list[float] = []
        self._state_path: Path | None = None
        self.scaled: list[dict] = []

    # ------------------------------------------------------------------ one repeat
    def _save_state(self, repeat, rnd, local, server, records) -> None:
        """Atomic per-round checkpoint of everything the next round needs (see :meth:`run`)."""
        if self._state_path is None:
            return
        from ..train.checkpoint import atomic_torch_save
        atomic_torch_save({"format": STATE_FORMAT, "config": self.config.to_dict(), "repeat": repeat,
                           "round": rnd, "local": local, "global": server.global_shared,
                           "hat": server.hat, "n": server.n, "records": records,
                           "failures": self.failures, "rejected": self.rejected,
                           "round_times": self.round_times, "scaled": self.scaled}, self._state_path)

    def _run_repeat(self, repeat: int, parts, records: list[dict], resume: dict | None = None) -> None:
        cfg, task = self.config, self.task
        K = cfg.clients
        datas = [client_data(self.dataset, parts[i], cfg, repeat, i) for i in range(K)]
        init = initial_state(task, cfg.seed + repeat)
        personal = None
        if cfg.strategy in personalized.PERSONAL_STRATEGIES:
            personal = personalized.personal_prefixes(task, cfg.personal_prefixes)
        keys = core.shared_keys(task.make_model(), cfg.share_bn_stats,
                                tuple(cfg.exclude_prefixes) + tuple(personal or ()))
        local = {i: clone_state(init) for i in range(K)}
        server = ServerState(cfg.strategy, core.select(init, keys), cfg.theta, cfg.aggregation,
                             cfg.trim_fraction)
        first = 1
        if resume is not None:  # continue after the last completed round of this repeat
            local = {int(i): dict(v) for i, v in resume["local"].items()}
            server.global_shared = dict(resume["global"])
            server.hat = {int(i): dict(v) for i, v in resume["hat"].items()}
            server.n = {int(i): int(v) for i, v in resume["n"].items()}
            first = int(resume["round"]) + 1
        federated = cfg.strategy != "local"
        bar = tqdm(range(first, cfg.rounds + 1), desc=f"{cfg.strategy} r{repeat}", unit="round",
                   disable=None if self.progress else True, leave=False)
        lines = LineProgress(cfg.rounds, f"federate {cfg.strategy} split {repeat}", "round", every_pct=0,
                             enabled=self.progress)
        for rnd in bar:
            t0 = time.perf_counter()
            updates, n_train, status, train_loss, why, sent_to, fishers = {}, {}, {}, {}, {}, {}, {}
            for i in range(K):
                sent = sent_to[i] = server.model_for(i) if federated else None
                try:
                    if personal is not None:
                        new_state, shared_out, m, fishers[i] = personalized.personal_local_train(
                            task, local[i], sent, datas[i], cfg, client=i, rnd=rnd, repeat=repeat,
                            keys=keys, personal=personal)
                    else:
                        new_state, shared_out, m = local_train(task, local[i], sent, datas[i], cfg,
                                                               client=i, rnd=rnd, repeat=repeat, keys=keys)
                except DECLARED_FAILURES as exc:  # data/resource failure: recorded, round goes on
                    log.warning("round %d: client %d failed during local training: %r", rnd, i, exc)
                    self.failures.append({"strategy": cfg.strategy, "repeat": repeat, "round": rnd,
                                          "client": i, "error": repr(exc)})
                    status[i], why[i] = "failed", repr(exc)
                    continue
                # any other exception is a programming error: it propagates with its traceback
                local[i] = new_state
                updates[i], n_train[i], train_loss[i] = shared_out, m["n_train"], m["train_loss"]
                status[i] = "ok"
            if federated:
                accepted, rejected = core.filter_updates(updates, server.global_shared, rnd)
                for rec in rejected:
                    status[int(rec.client)] = "rejected"
                    why[int(rec.client)] = f"update rejected: {rec.reason}"
                    self.rejected.append({"strategy": cfg.strategy, "repeat": repeat, **rec.to_dict()})
                if len(accepted) < cfg.quorum:
                    raise RoundFailed(quorum_message(rnd, len(accepted), K, cfg.quorum, why))
                if cfg.norm_bound > 0:
                    accepted, scaled = core.bound_update_norms(accepted, sent_to, cfg.norm_bound)
                    self.scaled += [{"strategy": cfg.strategy, "repeat": repeat, "round": rnd, **r}
                                    for r in scaled]
                server.aggregate(accepted, n_train, fishers if personal is not None else None)
            elif sum(s == "ok" for s in status.values()) < cfg.quorum:
                raise RoundFailed(quorum_message(rnd, sum(s == "ok" for s in status.values()), K,
                                                 cfg.quorum, why))
            for i in range(K):
                sent = server.model_for(i) if federated else None
                if cfg.strategy == "p-fedprox" and cfg.pfedprox_eval == "local":
                    sent = None  # the locally trained personalised model Ŵ_i, as the authors score it
                ev = local_evaluate(task, local[i], sent, datas[i], cfg)
                records.append({"strategy": cfg.strategy, "repeat": repeat, "round": rnd, "client": i,
                                "status": status[i], "n_train": datas[i].n_train,
                                "train_loss": train_loss.get(i), **ev,
                                **({"error": why[i]} if i in why else {})})
            self.round_times.append(time.perf_counter() - t0)
            self._save_state(repeat, rnd, local, server, records)
            last = [r for r in records if r["round"] == rnd and r["repeat"] == repeat]
            mean_uf1 = f"{sum(r['uf1'] for r in last) / len(last):.3f}"
            bar.set_postfix(uf1=mean_uf1)
            lines.update(1, f"mean client UF1 {mean_uf1}")

    def run(self, out_dir: str | Path | None = None, resume: bool = False) -> dict:
        """Run all repeats; write ``metrics.json``/``metrics.csv`` (and plots) to ``out_dir``.

        With ``out_dir``, after every round the server state is written atomically to
        ``out_dir/federation_state.pt`` (:data:`STATE_FILE`): every client's full local
        state, the global shared tensors, P-FedProx's per-client models and sample
        counts, the repeat and round, and the records, failures and rejections so far.
        No RNG state is needed: every client's round is seeded by
        :func:`~psyau_graph.federated.config.round_seed`. ``resume=True`` continues from
        that file (same configuration required) and reaches the metrics of an
        uninterrupted run.

        Returns:
            ``{"config", "records", "summary", "failures", "rejected", "round_times"}``.
        """
        cfg = self.config
        parts = partition(self.subjects, cfg.clients, cfg.part_seed, cfg.balance)
        records: list[dict] = []
        self._state_path = Path(out_dir) / STATE_FILE if out_dir is not None else None
        start, state = 0, None
        if resume:
            if self._state_path is None:
                raise ValueError("resume needs the output folder of the interrupted run")
            state = load_state(self._state_path, cfg)
            records = list(state["records"])
            self.failures, self.rejected = list(state["failures"]), list(state["rejected"])
            self.round_times = list(state["round_times"])
            self.scaled = list(state.get("scaled", []))
            start = int(state["repeat"])
            if int(state["round"]) >= cfg.rounds:
                start, state = start + 1, None
        for repeat in range(start, cfg.repeats):
            self._run_repeat(repeat, parts, records, resume=state if repeat == start else None)
        result = {"engine": "inprocess", "config": cfg.to_dict(), "records": records,
                  "summary": summarize(records), "failures": self.failures,
                  "rejected": self.rejected, "round_times": self.round_times, "scaled": self.scaled,
                  "client_sizes": [int(len(p)) for p in parts]}
        if out_dir is not None:
            write_outputs(result, out_dir)
        return result


def write_outputs(result: dict, out_dir: str | Path, plots: bool = True) -> Path:
    """Write ``metrics.json``, ``metrics.csv`` and the plots of ``result`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    write_csv(out / "metrics.csv", result["records"])
    if plots:
        from .plots import plot_clients, plot_loss
        plot_clients(result["records"], out / "clients_uf1_uar.png")
        plot_loss(result["records"], out / "loss_by_round.png")
    return out
