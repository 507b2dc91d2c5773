"""Flower ``ClientApp``: a thin wrapper over :mod:`psyau_graph.federated.client`.

What a client reads: only its own data.

* Deployment: the SuperNode's ``--node-config "data-path='...' partition-id=N"`` names
  the lab's own cache; the whole of it is this client's data.
* Simulation: every virtual node reads the run's ``data`` cache and keeps only its own
  subject group (``partition-id`` of ``num-partitions``, same partition as the
  in-process engine).

What persists on the client between rounds lives in ``Context.state``: the full local
model state (``"local-state"``, an ``ArrayRecord`` — this is where the BatchNorm
statistics kept local under FedBN, the personal head under FedRep/FedAS/ELLP, and any
non-shared tensor, survive between rounds).

``Context.state`` lasts one Flower run only, and a resumed server is a new run. So, when
a state folder is configured (deployment: the node config ``state-dir``, on the lab's
own disk; simulation: the run config ``client-state``), the client also writes its
full local state after every train message it handles, atomically, to
``DIR/<run-tag>/client<i>_round<r>.pt`` (``run-tag`` comes from the server and names one
federation; ``i`` is the client index). It keeps the two newest rounds, since a server
killed during round ``r`` resumes at ``r`` while this client may already have trained
it. A resumed server sends ``resumed-from = k``; a client with no in-memory state then
restores its newest file of a round ≤ ``r - 1`` and stops with an error naming the
folder if there is none (starting over from the initial model would silently change
the results). A fresh run (``resumed-from = 0``) never reads these files.

The dataset is read through :mod:`~psyau_graph.federated.flower.node_cache` (keyed by data
path, task spec and the files' sizes and modification times): loaded once per process, and
in the warm executor once for all its forked tasks.

When the server packs a message's arrays into one tensor per dtype (run config
``pack-arrays``, :mod:`~psyau_graph.federated.flower.packing`), the ClientApp unpacks them
and packs its train reply the same way.

What crosses the wire in a reply: an ``ArrayRecord`` of the shared tensors (train) and a
``MetricRecord`` of numbers (``num-examples``, losses, UF1/UAR, ``client-index``); under
FedAS/ELLP a second ``ArrayRecord`` ``"fisher"`` (the body's diagonal Fisher); or,
when local training raised a declared failure (:data:`~psyau_graph.federated.client.DECLARED_FAILURES`),
a ``ConfigRecord`` ``"failure"`` with the reason.
"""
from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .. import core, personalized
from ..client import (DECLARED_FAILURES, ClientData, client_data, initial_state, local_evaluate,
                      local_train, partition)
from ...train.memory import keep_freed_memory
from ..task import make_task
from . import node_cache
from .common import from_run_config
from .packing import pack_content, unpack_content

log = logging.getLogger(__name__)



def _setup(context: Context, spec: dict | None):
    keep_freed_memory()  # as the psyau command does (idempotent; see psyau_graph.train.memory)
    rc = spec if spec is not None else context.run_config
    cfg, task_spec, extras = from_run_config(rc)
    task = make_task(task_spec)
    node = context.node_config
    client = int(node.get("partition-id", 0))
    own = str(node.get("data-path", "") or "")
    path = own or extras["data"]
    if not path:
        raise ValueError("no data: set node config 'data-path' (deployment) or run config 'data'")
    dataset = node_cache.CACHE.get(task, task_spec, path)
    if own:
        import numpy as np
        indices = np.arange(len(task.subjects(dataset)))
    else:
        k = int(node.get("num-partitions", cfg.clients))
        indices = partition(task.subjects(dataset), k, cfg.part_seed, cfg.balance)[client]
    data: ClientData = client_data(dataset, indices, cfg, extras["repeat"], client)
    return cfg, task, data, client, extras


def _state_dir(context: Context, extras, config) -> Path | None:
    """``DIR/<run-tag>`` where this client keeps its local-state files, or ``None``."""
    base = str(context.node_config.get("state-dir", "") or "") or extras["client-state"]
    tag = str(config.get("run-tag", "") or "")
    if not base or not tag:
        return None
    if not re.fullmatch(r"[0-9a-f]{8,64}", tag):
        raise ValueError(f"run-tag {tag!r} from the server is not a hex token")
    return Path(base) / tag


def _saved_rounds(folder: Path, client: int) -> dict[int, Path]:
    pat = re.compile(rf"client{int(client)}_round(\d+)\.pt")
    return {int(m.group(1)): p for p in folder.glob(f"client{int(client)}_round*.pt")
            if (m := pat.fullmatch(p.name))} if folder.is_dir() else {}


def _local_state(context: Context, task, cfg, extras, client: int, config, upto: int) -> dict:
    """The client's full local state for a message of round ``upto + 1`` (train) or
    ``upto`` (evaluate): in memory during a run; after a server restart
    (``resumed-from`` > 0) from the newest saved round ≤ ``upto``; else the common
    initial model."""
    if "local-state" in context.state:
        return context.state["local-state"].to_torch_state_dict()
    if int(config.get("resumed-from", 0) or 0) > 0 and upto >= 1:
        folder = _state_dir(context, extras, config)
        if folder is None:
            raise RuntimeError(f"client {client}: the server resumed the federation but this client has "
                               "no state folder (node config 'state-dir' or run config 'client-state'); "
                               "its local state cannot be restored")
        saved = {r: p for r, p in _saved_rounds(folder, client).items() if r <= upto}
        if not saved:
            raise RuntimeError(f"client {client}: no saved local state of a round <= {upto} in {folder}; "
                               "it cannot continue the resumed federation")
        from ...train.checkpoint import safe_torch_load
        rnd = max(saved)
        state = safe_torch_load(saved[rnd], "client local state")
        log.info("client %d: restored its local state after round %d from %s", client, rnd, saved[rnd])
        return dict(state)
    return initial_state(task, cfg.seed + extras["repeat"])


def _save_local(context: Context, extras, config, client: int, rnd: int, state: dict) -> None:
    """Atomic ``client<i>_round<r>.pt``; files older than round ``r - 1`` are removed."""
    folder = _state_dir(context, extras, config)
    if folder is None:
        return
    from ...train.checkpoint import atomic_torch_save
    atomic_torch_save(state, folder / f"client{int(client)}_round{int(rnd)}.pt")
    for r, p in _saved_rounds(folder, client).items():
        if r < rnd - 1:
            p.unlink(missing_ok=True)


def _task_model(task):
    """The task's model object that the client routines reuse (built once per task)."""
    if getattr(task, "_fed_model", None) is None:
        task._fed_model = task.make_model()
    return task._fed_model


def build_client_app(spec: dict | None = None) -> ClientApp:
    """A ``ClientApp``; ``spec`` (a run-config dict) overrides ``context.run_config``
    (used by the simulation engine, which has no run config of its own)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        packed = unpack_content(msg.content)  # the server packed the arrays: reply packed
        cfg, task, data, client, extras = _setup(context, spec)
        rnd = int(msg.content["config"]["server-round"])
        if "proximal-mu" in msg.content["config"]:  # sent by Flower's FedProx (and PFedProx)
            cfg = replace(cfg, mu=float(msg.content["config"]["proximal-mu"]))
        conf = msg.content["config"]
        shared_in = msg.content["arrays"].to_torch_state_dict()
        full = _local_state(context, task, cfg, extras, client, conf, rnd - 1)
        fisher = None
        try:
            if cfg.strategy in personalized.PERSONAL_STRATEGIES:
                # FedRep/FedAS/ELLP: the in-process engine's client routine; only the body
                # arrives and leaves, the head stays in this node's local state
                personal = personalized.personal_prefixes(task, cfg.personal_prefixes)
                keys = core.shared_keys(_task_model(task), cfg.share_bn_stats,
                                        tuple(cfg.exclude_prefixes) + personal)
                new_state, shared_out, m, fisher = personalized.personal_local_train(
                    task, full, shared_in, data, cfg, client=client, rnd=rnd,
                    repeat=extras["repeat"], keys=keys, personal=personal)
            else:
                new_state, shared_out, m = local_train(task, full, shared_in, data, cfg, client=client,
                                                       rnd=rnd, repeat=extras["repeat"])
        except DECLARED_FAILURES as exc:
            # a declared data/resource failure: a normal reply saying so (the server records
            # it and goes on if the quorum is met); any other exception becomes Flower's
            # error reply, which the server treats as a programming error (run stops)
            log.warning("round %d: client %d failed during local training: %r", rnd, client, exc)
            context.state["local-state"] = ArrayRecord(full)  # unchanged: what round rnd + 1 starts from
            _save_local(context, extras, conf, client, rnd, full)
            return Message(RecordDict({"failure": ConfigRecord({"reason": repr(exc),
                                                                "client-index": int(client)})}),
                           reply_to=msg)
        context.state["local-state"] = ArrayRecord(new_state)
        _save_local(context, extras, conf, client, rnd, new_state)
        metrics = MetricRecord({"num-examples": int(m["n_train"]),
                                "train_loss": float(m["train_loss"]),
                                "client-index": int(client),
                                "dp-weight": 1})  # uniform weight, used only in DP mode
        content = RecordDict({"arrays": ArrayRecord(shared_out), "metrics": metrics})
        if fisher is not None:  # FedAS/ELLP: the body's diagonal Fisher, for the server's weighting
            content["fisher"] = ArrayRecord(fisher)
        if packed:
            pack_content(content)  # packs "arrays"; the Fisher record travels as it is
        return Message(content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        unpack_content(msg.content)
        cfg, task, data, client, extras = _setup(context, spec)
        conf = msg.content["config"]
        shared_in = msg.content["arrays"].to_torch_state_dict()
        full = _local_state(context, task, cfg, extras, client, conf,
                            int(conf.get("server-round", 0) or 0))
        if cfg.strategy == "p-fedprox" and cfg.pfedprox_eval == "local":
            shared_in = None  # score the locally trained model Ŵ_i, as the in-process engine
        ev = local_evaluate(task, full, shared_in, data, cfg)
        metrics = {"num-examples": int(ev["n_test"]), "n_train": int(data.n_train),
                   "client-index": int(client)}
        for k in ("uf1", "uar", "acc", "loss"):
            if k in ev:
                metrics[k] = float(ev[k])
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        """A resumed server asks which lab this node is: its client index (``partition-id``)."""
        return Message(RecordDict({"metrics": MetricRecord(
            {"client-index": int(context.node_config.get("partition-id", 0))})}), reply_to=msg)

    return app


#: the app ``flwr run`` loads (``[tool.flwr.app.components] clientapp``)
app = build_client_app()
