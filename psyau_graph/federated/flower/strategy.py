"""Flower strategies: Flower's own FedAvg/FedProx with validation and per-client
records, and :class:`PFedProx`, which sends each node its personalised model.

Where state lives:

* server side, in the strategy object (one per run): the reference key set/shapes of
  the shared model, per-client records, and for P-FedProx the last accepted model
  :math:`\\hat W_j` and sample count :math:`n_j` of every node, **keyed by Flower node
  id** (``self.hat``, ``self.n``) while the run lasts; :meth:`_Tracked.state_dict` (the
  server checkpoint, :mod:`.checkpoint`) re-keys them by the lab's stable client index,
  since Flower node ids change when a SuperNode or the simulation restarts;
* client side, in ``Context.state``: the full local model (BatchNorm statistics under
  FedBN), see :mod:`.client_app`.

Validation: every train reply is checked before aggregation. A ``"failure"`` reply (a
declared data/resource failure of the client) or a Flower error reply saying the node
or its message was lost → failure recorded; a Flower error reply saying the ClientApp
*raised* (a programming error) → :class:`ClientCrashed`, the run stops; NaN/Inf, wrong
keys or shapes → :class:`RejectedUpdate` logged. A round with fewer accepted updates
than the quorum raises :class:`RoundFailed` naming the failed nodes. Rejected or
failed nodes are sampled again in the next round (retry).
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp.strategy import FedAvg, FedProx

from .. import core
from ..run import RoundFailed, quorum_message

log = logging.getLogger(__name__)


class ClientCrashed(RuntimeError):
    """A ClientApp raised an undeclared exception (a programming error): the run stops."""


#: Flower error codes meaning the ClientApp itself raised (not: the node was lost)
_RAISED = (ErrorCode.CLIENT_APP_RAISED_EXCEPTION, ErrorCode.LOAD_CLIENT_APP_EXCEPTION)


class _Tracked:
    """Mixin: validate train replies, keep per-client records (on the server)."""

    def _init_tracking(self, min_clients: int, strategy_name: str) -> None:
        self.min_clients = int(min_clients)
        self.strategy_name = strategy_name
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
        self._sent[server_round] = list(messages)
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
    def state_dict(self) -> dict:
        """What the server checkpoint keeps of this strategy after a completed round:
        records, failures, rejections and round times so far (plain values)."""
        return {"strategy": self.strategy_name, "records": list(self.records),
                "failures": list(self.failures), "rejected": list(self.rejected),
                "round_times": {int(k): float(v) for k, v in self.round_times.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a resumed ServerApp, before its first round)."""
        if state.get("strategy") != self.strategy_name:
            raise ValueError(f"strategy state of {state.get('strategy')!r}, this run is {self.strategy_name!r}")
        self.records = list(state["records"])
        self.failures = list(state["failures"])
        self.rejected = list(state["rejected"])
        self.round_times = {int(k): float(v) for k, v in state["round_times"].items()}

    def bind_nodes(self, node_client: dict[int, int]) -> None:
        """Tell the strategy which Flower node serves which client index (a resumed run
        asks every node once, before its first round)."""
        self.node_client.update({int(n): int(c) for n, c in node_client.items()})

    # Flower hooks -----------------------------------------------------------
    def configure_train(self, server_round, arrays, config, grid):
        self.round_start[server_round] = time.perf_counter()
        self._remember_reference(arrays)
        return self._remember_sent(server_round,
                                   super().configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round, replies):
        return super().aggregate_train(server_round, self._validated(server_round, list(replies)))

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


class TrackedFedAvg(_Tracked, FedAvg):
    """Flower's :class:`FedAvg` (weighted by ``num-examples``) + validation and records."""

    def __init__(self, *, min_clients: int = 1, **kw):
        FedAvg.__init__(self, **kw)
        self._init_tracking(min_clients, "fedavg")


class TrackedFedProx(_Tracked, FedProx):
    """Flower's :class:`FedProx` (sends ``proximal-mu``) + validation and records."""

    def __init__(self, *, min_clients: int = 1, **kw):
        FedProx.__init__(self, **kw)
        self._init_tracking(min_clients, "fedprox")


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
        **kw: :class:`flwr.serverapp.strategy.FedProx` arguments.
    """

    def __init__(self, *, theta: float = 0.9, proximal_mu: float = 0.001, min_clients: int = 1,
                 **kw):
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {theta}")
        super().__init__(proximal_mu=proximal_mu, min_clients=min_clients, **kw)
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
            content = RecordDict({self.arrayrecord_key: self.personalised(node, arrays),
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
        ok = self._validated(server_round, list(replies))
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


def make_strategy(name: str, *, num_nodes: int, mu: float = 0.001, theta: float = 0.9,
                  min_clients: int = 1):
    """Flower strategy for ``name`` sampling all ``num_nodes`` nodes every round."""
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=num_nodes,
                  min_evaluate_nodes=num_nodes, min_available_nodes=num_nodes,
                  min_clients=min_clients)
    if name == "fedavg":
        return TrackedFedAvg(**common)
    if name == "fedprox":
        return TrackedFedProx(proximal_mu=mu, **common)
    if name == "p-fedprox":
        return PFedProx(theta=theta, proximal_mu=mu, **common)
    raise ValueError(f"Flower engines run fedavg | fedprox | p-fedprox, got {name!r} "
                     "(the local-only baseline runs in-process)")
