"""Flower strategies: Flower's own FedAvg/FedProx (optionally with Flower's FedMedian or
FedTrimmedAvg aggregation) with validation and per-client records; :class:`PFedProx`,
which sends each node its personalised model; and :class:`FedRep`, :class:`FedAS`,
:class:`ELLP`, which exchange only the body (the personal head stays on the client).

Where state lives:

* server side, in the strategy object (one per run): the reference key set/shapes of
  the shared model, per-client records, and for P-FedProx the last accepted model
  :math:`\\hat W_j` and sample count :math:`n_j` of every node, **keyed by Flower node
  id** (``self.hat``, ``self.n``) while the run lasts; :meth:`_Tracked.state_dict` (the
  server checkpoint, :mod:`.checkpoint`) re-keys them by the lab's stable client index,
  since Flower node ids change when a SuperNode or the simulation restarts;
* client side, in ``Context.state``: the full local model (BatchNorm statistics under
  FedBN, and the personal head under FedRep/FedAS/ELLP), see :mod:`.client_app`.

Every strategy has ``state_dict()`` / ``load_state_dict()`` for its server-side state
(records, failures, per-node bookkeeping, P-FedProx's :math:`\\hat W_j`, :math:`n_j`): plain
Python containers and tensors, loadable with ``torch.load(..., weights_only=True)``. The
global arrays themselves are not part of it (Flower's ``start`` loop holds them).

Robust aggregation (``aggregation``, ``norm_bound``; see docs/federated.md):

* ``"median"`` / ``"trimmed-mean"`` (fedavg, fedprox): the validated replies are aggregated by
  Flower's own :class:`~flwr.serverapp.strategy.FedMedian` /
  :class:`~flwr.serverapp.strategy.FedTrimmedAvg` ``aggregate_train`` (coordinate-wise,
  unweighted; ``beta`` = ``trim_fraction``), which compute what
  :func:`~psyau_graph.federated.core.coordinate_median` /
  :func:`~psyau_graph.federated.core.trimmed_mean` compute in-process;
* ``norm_bound`` (every strategy): Flower ships no bound *relative to the round's median
  update norm* (its clipping strategies clip to a fixed norm and add DP noise), so
  :func:`~psyau_graph.federated.core.bound_update_norms` is applied to the validated
  replies before aggregation, against what each node was sent this round.

Validation: every train reply is checked before aggregation. A ``"failure"`` reply (a
declared data/resource failure of the client) or a Flower error reply saying the node
or its message was lost → failure recorded; a Flower error reply saying the ClientApp
*raised* (a programming error) → :class:`ClientCrashed`, the run stops; NaN/Inf, wrong
keys or shapes → :class:`RejectedUpdate` logged. A round with fewer accepted updates
than the quorum raises :class:`RoundFailed` naming the failed nodes. Rejected or
failed nodes are sampled again in the next round (retry).
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Iterable, Sequence

import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg

from .. import core, personalized
from ..config import AGGREGATIONS
from ..run import RoundFailed, quorum_message

log = logging.getLogger(__name__)


class ClientCrashed(RuntimeError):
    """A ClientApp raised an undeclared exception (a programming error): the run stops."""


#: Flower error codes meaning the ClientApp itself raised (not: the node was lost)
_RAISED = (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, ErrorCode.LOAD_CLIENT_APP_EXCEPTION)


class _Tracked:
    """Mixin: validate train replies, keep per-client records (on the server)."""

    def _init_tracking(self, min_clients: int, strategy_name: str, *, aggregation: str = "mean",
                       trim_fraction: float = 0.2, norm_bound: float = 0.0) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must lie in [0, 0.5), got {trim_fraction}")
        if norm_bound < 0:
            raise ValueError(f"norm_bound must be >= 0 (0 = off), got {norm_bound}")
        self.min_clients = int(min_clients)
        self.strategy_name = strategy_name
        self.aggregation = aggregation
        self.beta = float(trim_fraction)   # the attribute FedTrimmedAvg.aggregate_train reads
        self.norm_bound = float(norm_bound)
        self.scaled: list[dict] = []       # one record per update scaled down by the norm bound
        self.sent: dict[int, dict] = {}    # node -> what it was sent this round, if not the broadcast
        self.reference: dict | None = None
        self.records: list[dict] = []
        self.failures: list[dict] = []
        self.rejected: list[dict] = []
        self.train_loss: dict[int, dict] = {}   # round -> node -> (loss, client-index)
        self.node_client: dict[int, int] = {}   # node id -> client-index it reported
        self.received: list[RecordDict] = []     # every reply content (inspected by tests)
        self.round_start: dict[int, float] = {}
        self.round_times: dict[int, float] = {}  # round -> seconds (train + evaluate)
        self.failure_reason: dict[int, dict] = {}  # round -> node -> why it did not count
        self.progress = None  # a LineProgress the ServerApp sets: one line per round off a terminal
        self._sent: dict[int, list[Message]] = {}  # round -> train messages handed to Flower

    def _remember_sent(self, server_round: int, messages: Iterable[Message]) -> list[Message]:
        """Keep the train messages of a round (Flower sets their ids in place when it pushes
        them) so that a reply the SuperLink wrote for a lost node can be traced to it."""
        # only this round's: a reply is traced within its own round, and keeping every
        # round's messages would hold every round's models in memory
        self._sent = {server_round: list(messages)}
        return self._sent[server_round]

    def _reply_node(self, server_round: int, msg: Message) -> int:
        """The node a train reply is about. Error replies the SuperLink writes itself (e.g.
        "Node Unavailable" for a SuperNode that stopped sending heartbeats) come from the
        SuperLink's own id; they name the lost message, whose destination is the node."""
        src = int(msg.metadata.src_node_id)
        if msg.has_error() and src == SUPERLINK_NODE_ID:
            lost = msg.metadata.reply_to_message_id
            for sent in self._sent.get(server_round, []):
                if sent.metadata.message_id == lost:
                    return int(sent.metadata.dst_node_id)
        return src

    def _remember_reference(self, arrays: ArrayRecord) -> None:
        self.reference = arrays.to_torch_state_dict()

    def _extra_check(self, content: RecordDict) -> str | None:
        """Strategy-specific reason to reject a reply (after the arrays passed), else None."""
        return None

    # server-side state (a per-round checkpoint saves and restores it) -----------
    _STATE_ATTRS = ("records", "failures", "rejected", "scaled", "train_loss", "node_client",
                    "failure_reason", "round_times")

    def state_dict(self) -> dict:
        """Server-side state as plain containers (``torch.save``-able, ``weights_only`` loadable)."""
        return {"strategy": self.strategy_name,
                **{a: copy.deepcopy(getattr(self, a)) for a in self._STATE_ATTRS}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (the same strategy required)."""
        if state.get("strategy") != self.strategy_name:
            raise ValueError(f"strategy state is for {state.get('strategy')!r}, not {self.strategy_name!r}")
        missing = [a for a in self._STATE_ATTRS if a not in state]
        if missing:
            raise ValueError(f"strategy state lacks {missing}")
        for a in self._STATE_ATTRS:
            setattr(self, a, copy.deepcopy(state[a]))

    def _validated(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        ok, why = [], {}
        for msg in replies:
            node = self._reply_node(server_round, msg)
            if msg.has_error():
                if int(msg.error.code) in _RAISED:
                    raise ClientCrashed(f"round {server_round}: the ClientApp of node {node} raised "
                                        f"{msg.error.reason} (a programming error, not a declared "
                                        "data/resource failure; the node's log has the traceback)")
                log.warning("round %d: node %d failed: %s", server_round, node, msg.error.reason)
                self.failures.append({"round": server_round, "node": node,
                                      "error": str(msg.error.reason)})
                self.failure_reason.setdefault(server_round, {})[node] = str(msg.error.reason)
                why[self.node_client.get(node, f"node {node}")] = str(msg.error.reason)
                continue
            self.received.append(msg.content)
            if "failure" in msg.content:
                fr = msg.content["failure"]
                cid = int(fr.get("client-index", node))
                self.node_client[node] = cid
                log.warning("round %d: client %d (node %d) failed: %s", server_round, cid, node, fr["reason"])
                self.failures.append({"round": server_round, "node": node, "client": cid,
                                      "error": str(fr["reason"])})
                self.failure_reason.setdefault(server_round, {})[node] = str(fr["reason"])
                why[cid] = str(fr["reason"])
                continue
            if "arrays" not in msg.content or "metrics" not in msg.content:
                reason = f"reply carries {sorted(msg.content.keys())}, expected arrays + metrics"
            else:
                reason = core.check_update(msg.content["arrays"].to_torch_state_dict(),
                                           self.reference or {})
                if reason is None:
                    reason = self._extra_check(msg.content)
            if reason is not None:
                rec = core.RejectedUpdate(str(node), server_round, reason)
                log.warning("round %d: update of node %d rejected: %s", server_round, node, reason)
                self.rejected.append(rec.to_dict())
                self.failure_reason.setdefault(server_round, {})[node] = f"update rejected: {reason}"
                why[self.node_client.get(node, f"node {node}")] = f"update rejected: {reason}"
                continue
            m = msg.content["metrics"]
            cid = int(m.get("client-index", node))
            self.node_client[node] = cid
            self.train_loss.setdefault(server_round, {})[node] = float(m.get("train_loss", float("nan")))
            ok.append(msg)
        if len(ok) < self.min_clients:
            total = max(len(ok) + len(why), int(getattr(self, "min_train_nodes", 0) or 0))
            raise RoundFailed(quorum_message(server_round, len(ok), total, self.min_clients, why))
        return ok

    def _record_evaluate(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        ok = []
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            if msg.has_error():
                log.warning("round %d: evaluation on node %d failed: %s", server_round, node,
                            msg.error.reason)
                continue
            self.received.append(msg.content)
            m = msg.content["metrics"]
            cid = int(m.get("client-index", node))
            rec = {"strategy": self.strategy_name, "repeat": 0, "round": server_round,
                   "client": cid, "node": node,
                   "status": "ok" if node in self.train_loss.get(server_round, {}) else "failed",
                   "n_train": int(m.get("n_train", 0)), "n_test": int(m["num-examples"]),
                   "train_loss": self.train_loss.get(server_round, {}).get(node)}
            if rec["status"] != "ok":
                rec["error"] = self.failure_reason.get(server_round, {}).get(node, "no accepted update")
            for k in ("uf1", "uar", "acc", "loss"):
                if k in m:
                    rec[k] = float(m[k])
            self.records.append(rec)
            ok.append(msg)
        return ok

    # checkpoint ---------------------------------------------------------------
    def bind_nodes(self, node_client: dict[int, int]) -> None:
        """Tell the strategy which Flower node serves which client index (a resumed run
        asks every node once, before its first round)."""
        self.node_client.update({int(n): int(c) for n, c in node_client.items()})

    def _bounded(self, server_round: int, ok: list[Message]) -> list[Message]:
        """With ``norm_bound > 0``: updates whose norm exceeds ``norm_bound`` × the round's
        median are scaled down (:func:`core.bound_update_norms`; the reply is replaced by a
        copy carrying the bounded arrays, the received content is left as it came)."""
        if self.norm_bound <= 0 or not ok:
            return ok
        nodes = [int(m.metadata.src_node_id) for m in ok]
        updates = {j: m.content["arrays"].to_torch_state_dict() for j, m in zip(nodes, ok)}
        sent = {j: self.sent.get(j, self.reference) for j in nodes}
        bounded, scaled = core.bound_update_norms(updates, sent, self.norm_bound)
        for rec in scaled:
            j = rec["client"]
            self.scaled.append({"strategy": self.strategy_name, "round": server_round, "node": j,
                                "client": self.node_client.get(j, j), "norm": rec["norm"],
                                "median": rec["median"], "scale": rec["scale"]})
        hit = {r["client"] for r in scaled}
        return [_with_arrays(m, bounded[j]) if j in hit else m for j, m in zip(nodes, ok)]

    def _accepted(self, server_round: int, replies) -> list[Message]:
        """Validated (quorum checked) and norm-bounded replies, in a canonical order (by the
        client index nodes report), so float sums do not depend on reply arrival order."""
        ok = self._bounded(server_round, self._validated(server_round, list(replies)))
        return sorted(ok, key=lambda m: (self.node_client.get(int(m.metadata.src_node_id), 0),
                                         int(m.metadata.src_node_id)))

    # Flower hooks -----------------------------------------------------------
    def configure_train(self, server_round, arrays, config, grid):
        self.round_start[server_round] = time.perf_counter()
        self._remember_reference(arrays)
        self.sent = {}
        return self._remember_sent(server_round,
                                   super().configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round, replies):
        ok = self._accepted(server_round, replies)
        if self.aggregation == "median":
            # Flower's FedMedian / FedTrimmedAvg pop the arrays out of the replies they read:
            # hand them copies, so that the received contents stay inspectable
            return FedMedian.aggregate_train(self, server_round, [_with_arrays(m) for m in ok])
        if self.aggregation == "trimmed-mean":
            return FedTrimmedAvg.aggregate_train(self, server_round, [_with_arrays(m) for m in ok])
        return super().aggregate_train(server_round, ok)

    def aggregate_evaluate(self, server_round, replies):
        out = super().aggregate_evaluate(server_round,
                                         self._record_evaluate(server_round, list(replies)))
        if server_round in self.round_start:
            self.round_times[server_round] = time.perf_counter() - self.round_start[server_round]
        if self.progress is not None:
            scored = [r["uf1"] for r in self.records if r["round"] == server_round and "uf1" in r]
            self.progress.update(1, f"mean client UF1 {sum(scored) / len(scored):.3f}" if scored
                                 else "no client scored")
        return out


def _with_arrays(msg: Message, arrays: dict | None = None) -> Message:
    """A copy of reply ``msg`` whose ``"arrays"`` record is new (``arrays``, or a copy of its own)."""
    out = copy.copy(msg)
    content = RecordDict({k: v for k, v in msg.content.items()})
    content["arrays"] = ArrayRecord(arrays if arrays is not None
                                    else msg.content["arrays"].to_torch_state_dict())
    out.content = content
    return out


class TrackedFedAvg(_Tracked, FedAvg):
    """Flower's :class:`FedAvg` (weighted by ``num-examples``) + validation and records.

    Args:
        min_clients: the quorum (accepted updates per round) (default: ``1``).
        aggregation: ``"mean"`` (FedAvg's, default), ``"median"`` (Flower's FedMedian) or
            ``"trimmed-mean"`` (Flower's FedTrimmedAvg, ``beta = trim_fraction``).
        trim_fraction: fraction cut at each end by ``"trimmed-mean"`` (default: ``0.2``).
        norm_bound: bound on update norms relative to the round's median (``0`` = off).
        **kw: :class:`flwr.serverapp.strategy.FedAvg` arguments.
    """

    def __init__(self, *, min_clients: int = 1, aggregation: str = "mean", trim_fraction: float = 0.2,
                 norm_bound: float = 0.0, **kw):
        FedAvg.__init__(self, **kw)
        self._init_tracking(min_clients, "fedavg", aggregation=aggregation,
                            trim_fraction=trim_fraction, norm_bound=norm_bound)


class TrackedFedProx(_Tracked, FedProx):
    """Flower's :class:`FedProx` (sends ``proximal-mu``) + validation and records; the
    aggregation options of :class:`TrackedFedAvg`."""

    def __init__(self, *, min_clients: int = 1, aggregation: str = "mean", trim_fraction: float = 0.2,
                 norm_bound: float = 0.0, **kw):
        FedProx.__init__(self, **kw)
        self._init_tracking(min_clients, "fedprox", aggregation=aggregation,
                            trim_fraction=trim_fraction, norm_bound=norm_bound)


class PFedProx(TrackedFedProx):
    """Personalised FedProx (paper §4.4): node *i* receives
    :math:`\\theta \\hat W_i + \\sum_{j\\ne i}\\omega_j \\hat W_j` (see
    :func:`psyau_graph.federated.core.personalised_init`).

    Sampling is Flower's (``FedAvg.configure_train``); the messages it builds carry one
    shared ``RecordDict``, which we replace per node by one carrying that node's model.
    A node never heard from receives the current global (sample-weighted mean) model.

    Args:
        theta: weight of the node's own last model (default: ``0.9``).
        proximal_mu: α4 (default: ``0.001``).
        min_clients: quorum: accepted updates needed per round (default: ``1``;
            :func:`make_strategy` passes the run's :attr:`FederatedConfig.quorum`).
        norm_bound: bound on update norms relative to the round's median, each update
            measured against the mixture that node was sent (``0`` = off, default).
        **kw: :class:`flwr.serverapp.strategy.FedProx` arguments.
    """

    def __init__(self, *, theta: float = 0.9, proximal_mu: float = 0.001, min_clients: int = 1,
                 norm_bound: float = 0.0, **kw):
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}")
        super().__init__(proximal_mu=proximal_mu, min_clients=min_clients, norm_bound=norm_bound, **kw)
        self.strategy_name = "p-fedprox"
        self.theta = float(theta)
        self.hat: dict[int, dict] = {}
        self.n: dict[int, int] = {}

    def state_dict(self) -> dict:
        """:meth:`_Tracked.state_dict` plus every node's last model :math:`\\hat W_j` and
        sample count :math:`n_j`, keyed by the client index the node reported (stable
        across restarts; Flower node ids are not)."""
        out = super().state_dict()
        cid = {j: int(self.node_client.get(j, j)) for j in self.hat}
        if len(set(cid.values())) != len(cid):
            raise RuntimeError(f"two nodes reported the same client index: {cid}")
        out.update(theta=self.theta, hat={cid[j]: dict(self.hat[j]) for j in self.hat},
                   n={cid[j]: int(self.n[j]) for j in self.hat})
        return out

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if float(state["theta"]) != self.theta:
            raise ValueError(f"checkpoint has theta {state['theta']}, this run {self.theta}")
        # held by client index until bind_nodes learns which node serves which client
        self._pending = {int(c): (dict(state["hat"][c]), int(state["n"][c])) for c in state["hat"]}
        self.hat, self.n = {}, {}

    def bind_nodes(self, node_client: dict[int, int]) -> None:
        """Re-key the restored :math:`\\hat W_j`, :math:`n_j` by this run's node ids, in
        the canonical (client-index) order :meth:`aggregate_train` keeps."""
        super().bind_nodes(node_client)
        pending = getattr(self, "_pending", {})
        by_client = {int(c): int(n) for n, c in node_client.items()}
        missing = sorted(set(pending) - set(by_client))
        if missing:
            from .checkpoint import ResumeError
            raise ResumeError(f"cannot resume: no node reports client index {missing} "
                               f"(nodes report {sorted(by_client)})")
        for c in sorted(pending):
            node = by_client[c]
            self.hat[node], self.n[node] = pending[c]
        self._pending = {}

    def summary(self) -> None:
        log.info("P-FedProx: theta=%s", self.theta)
        super().summary()

    def personalised(self, node_id: int, fallback: ArrayRecord) -> ArrayRecord:
        """The ``ArrayRecord`` node ``node_id`` receives."""
        if node_id not in self.hat:
            return fallback
        mix = core.personalised_init(self.hat, self.n, self.theta, clients=[node_id])[node_id]
        return ArrayRecord(mix)

    def _personalise(self, messages: Iterable[Message], arrays: ArrayRecord) -> list[Message]:
        out = []
        for msg in messages:
            node = int(msg.metadata.dst_node_id)
            mine = self.personalised(node, arrays)
            if mine is not arrays:
                self.sent[node] = mine.to_torch_state_dict()  # what its update is measured against
            content = RecordDict({self.arrayrecord_key: mine,
                                  self.configrecord_key: msg.content[self.configrecord_key]})
            out.append(Message(content=content, message_type=msg.metadata.message_type,
                               dst_node_id=node))
        return out

    def configure_train(self, server_round, arrays, config, grid):
        msgs = super().configure_train(server_round, arrays, config, grid)
        return self._remember_sent(server_round, self._personalise(msgs, arrays))

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self._personalise(super().configure_evaluate(server_round, arrays, config, grid),
                                 arrays)

    def aggregate_train(self, server_round, replies):
        ok = self._accepted(server_round, replies)
        for msg in ok:
            node = int(msg.metadata.src_node_id)
            self.hat[node] = msg.content[self.arrayrecord_key].to_torch_state_dict()
            self.n[node] = int(msg.content["metrics"][self.weighted_by_key])
        # canonical order (by the client index nodes report): the float sums of the
        # mixtures then do not depend on the order in which replies arrived
        order = sorted(self.hat, key=lambda j: (self.node_client.get(j, j), j))
        self.hat = {j: self.hat[j] for j in order}
        self.n = {j: self.n[j] for j in order}
        # the returned "global" model is the sample-weighted mean over every node's last model
        # (what a node never heard from receives)
        nodes = list(self.hat)
        if sum(self.n[j] for j in nodes) == 0:
            return None, None
        glob = core.fedavg([self.hat[j] for j in nodes], [self.n[j] for j in nodes])
        metrics = self.train_metrics_aggr_fn([m.content for m in ok], self.weighted_by_key)
        return ArrayRecord(glob), metrics


class _PersonalBody(_Tracked, FedAvg):
    r"""Base of :class:`FedRep`, :class:`FedAS`, :class:`ELLP`: only the body crosses the wire.

    The server holds, and sends, the global body :math:`\phi` only (the ServerApp's initial
    arrays exclude the personal prefixes; :meth:`configure_train` refuses arrays that hold a
    personal tensor). Each client keeps its personal head in ``Context.state`` and trains
    with :func:`psyau_graph.federated.personalized.personal_local_train`, the routine of the
    in-process engine. A reply carrying a personal tensor fails validation (wrong key set).
    Aggregation: :func:`psyau_graph.federated.personalized.aggregate` (FedRep: sample-weighted
    mean; FedAS/ELLP: Fisher-weighted, the diagonal Fisher arriving as a second
    ``ArrayRecord`` ``"fisher"`` in the reply).

    Args:
        personal_prefixes: state-dict prefixes that stay on the client (non-empty).
        fisher_keys: FedAS/ELLP: the body tensors a reply's Fisher record must hold (the
            body's trainable parameters); required there.
        min_clients: the quorum (default: ``1``).
        norm_bound: bound on update norms relative to the round's median (``0`` = off).
        eps: added to every Fisher value (default: ``1e-8``).
        **kw: :class:`flwr.serverapp.strategy.FedAvg` arguments (sampling).
    """

    name = ""
    uses_fisher = False

    def __init__(self, *, personal_prefixes: Sequence[str], fisher_keys: Sequence[str] | None = None,
                 min_clients: int = 1, norm_bound: float = 0.0, eps: float = 1e-8, **kw):
        FedAvg.__init__(self, **kw)
        self._init_tracking(min_clients, self.name, norm_bound=norm_bound)
        if isinstance(personal_prefixes, str) or not personal_prefixes:
            raise ValueError(f"{self.name}: personal_prefixes must be a non-empty sequence of prefixes")
        self.personal = tuple(personal_prefixes)
        if self.uses_fisher and not fisher_keys:
            raise ValueError(f"{self.name}: fisher_keys (the body's trainable parameters) are required")
        self.fisher_keys = list(fisher_keys or ())
        self.eps = float(eps)

    def summary(self) -> None:
        log.info("%s: personal prefixes %s (kept on the clients)", self.name, list(self.personal))
        super().summary()

    def _body_only(self, arrays: ArrayRecord) -> None:
        leak = [k for k in arrays.keys() if personalized._matches(k, self.personal)]
        if leak:
            raise ValueError(f"{self.name}: the server's arrays hold personal tensors {leak[:3]}; "
                             "only the body may be sent")

    def configure_train(self, server_round, arrays, config, grid):
        self._body_only(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round, arrays, config, grid):
        self._body_only(arrays)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def _extra_check(self, content: RecordDict) -> str | None:
        if not self.uses_fisher:
            return None if "fisher" not in content else "unexpected Fisher record (FedRep sends none)"
        if "fisher" not in content:
            return "reply carries no Fisher information (record 'fisher')"
        fisher = content["fisher"].to_torch_state_dict()
        if set(fisher) != set(self.fisher_keys):
            return (f"Fisher record has keys missing {sorted(set(self.fisher_keys) - set(fisher))[:5]}, "
                    f"unexpected {sorted(set(fisher) - set(self.fisher_keys))[:5]}")
        for k, f in fisher.items():
            ref = (self.reference or {}).get(k)
            if ref is not None and tuple(f.shape) != tuple(ref.shape):
                return f"Fisher of {k!r} has shape {tuple(f.shape)}, expected {tuple(ref.shape)}"
            if not bool(torch.isfinite(f).all()) or bool((f < 0).any()):
                return f"Fisher of {k!r} must be finite and >= 0"
        return None

    def aggregate_train(self, server_round, replies):
        ok = self._accepted(server_round, replies)
        states = {i: m.content[self.arrayrecord_key].to_torch_state_dict() for i, m in enumerate(ok)}
        n = {i: int(m.content["metrics"][self.weighted_by_key]) for i, m in enumerate(ok)}
        if not ok or sum(n.values()) == 0:
            return None, None
        fishers = ({i: m.content["fisher"].to_torch_state_dict() for i, m in enumerate(ok)}
                   if self.uses_fisher else None)
        body = personalized.aggregate(self.name, states, n, fishers, self.eps)
        metrics = self.train_metrics_aggr_fn([m.content for m in ok], self.weighted_by_key)
        return ArrayRecord(body), metrics


class FedRep(_PersonalBody):
    """FedRep on Flower: head epochs then body epochs on the client; body averaged by
    sample count (``num-examples``)."""

    name = "fedrep"


class FedAS(_PersonalBody):
    """FedAS on Flower: head alignment, then local training, on the client; body averaged
    element-wise with the clients' diagonal Fisher weights."""

    name = "fedas"
    uses_fisher = True


class ELLP(_PersonalBody):
    """ELLP (as implemented here, see :mod:`psyau_graph.federated.personalized`) on Flower:
    decoupled personal head, body averaged with Fisher weights; no alignment step."""

    name = "ellp"
    uses_fisher = True


_PERSONAL = {c.name: c for c in (FedRep, FedAS, ELLP)}


def make_strategy(name: str, *, num_nodes: int, mu: float = 0.001, theta: float = 0.9,
                  min_clients: int = 1, aggregation: str = "mean", trim_fraction: float = 0.2,
                  norm_bound: float = 0.0, personal_prefixes: Sequence[str] = (),
                  fisher_keys: Sequence[str] | None = None):
    """Flower strategy for ``name`` sampling all ``num_nodes`` nodes every round.

    ``aggregation``/``trim_fraction`` apply to fedavg/fedprox (others: ``"mean"`` only);
    ``norm_bound`` to every strategy; ``personal_prefixes``/``fisher_keys`` to
    fedrep/fedas/ellp.
    """
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=num_nodes,
                  min_evaluate_nodes=num_nodes, min_available_nodes=num_nodes,
                  min_clients=min_clients, norm_bound=norm_bound)
    if aggregation != "mean" and name not in ("fedavg", "fedprox"):
        raise ValueError(f"aggregation {aggregation!r} is available for fedavg and fedprox, not {name!r}")
    if name == "fedavg":
        return TrackedFedAvg(aggregation=aggregation, trim_fraction=trim_fraction, **common)
    if name == "fedprox":
        return TrackedFedProx(proximal_mu=mu, aggregation=aggregation, trim_fraction=trim_fraction,
                              **common)
    if name == "p-fedprox":
        return PFedProx(theta=theta, proximal_mu=mu, **common)
    if name in _PERSONAL:
        return _PERSONAL[name](personal_prefixes=personal_prefixes, fisher_keys=fisher_keys, **common)
    raise ValueError(f"Flower engines run fedavg | fedprox | p-fedprox | fedrep | fedas | ellp, "
                     f"got {name!r} (the local-only baseline runs in-process)")
