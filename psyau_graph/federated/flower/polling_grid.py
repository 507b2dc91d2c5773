"""A ServerApp ``Grid`` that waits for replies with a poll interval of our choice.

In the deployment engine Flower 1.42 hands the ServerApp an ``HttpGrid``, whose
``send_and_receive`` pushes the messages and then asks the SuperLink for replies every
3 s (a fixed ``time.sleep(3)`` in ``flwr/superlink/grid/http_grid.py``), so every
message round-trip ends, on average, 1.5 s after its last reply arrived. The simulation
engine's ``InMemoryGrid`` polls every 0.1 s. :class:`PollingGrid` wraps any ``Grid``
and implements ``send_and_receive`` with the wrapped grid's public ``push_messages`` and
``pull_messages`` (the same loop as Flower's, with the interval as an argument); every
other call goes to the wrapped grid unchanged. Nothing in Flower is modified.

With ``pack_arrays=True`` it also packs the ``"arrays"`` record of every message it pushes
into one array per dtype and unpacks every reply it pulls
(:mod:`~psyau_graph.federated.flower.packing`), so the strategy sees per-tensor records
while one message crosses each hop as a handful of objects instead of one per tensor.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Iterable

from flwr.serverapp import Grid

from .packing import pack_content, unpack_content

log = logging.getLogger(__name__)


class PollingGrid(Grid):
    """``grid`` with ``send_and_receive`` polling for replies every ``interval`` seconds.

    Args:
        grid: the Grid Flower passed to the ServerApp.
        interval: seconds between two pulls while replies are missing (> 0, finite).
        pack_arrays: pack pushed messages' arrays and unpack replies (default: ``False``).
    """

    def __init__(self, grid: Grid, interval: float, pack_arrays: bool = False,
                 watch_nodes: float = 0.0):
        interval = float(interval)
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"grid poll interval must be a finite number of seconds > 0, "
                             f"got {interval!r}")
        self.inner = grid
        self.interval = interval
        self.pack_arrays = bool(pack_arrays)
        self.watch_nodes = float(watch_nodes)
        self.lost: list[dict] = []  # one record per message given up on (node offline or restarted)

    # delegated unchanged
    def set_run(self, run) -> None:
        self.inner.set_run(run)

    @property
    def run(self):
        return self.inner.run

    def create_message(self, *args, **kwargs):
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self):
        return self.inner.get_node_ids()

    def get_nodes(self):
        return self.inner.get_nodes()

    def push_messages(self, messages):
        if self.pack_arrays:
            messages = list(messages)
            for m in messages:
                pack_content(m.content)
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids):
        replies = list(self.inner.pull_messages(message_ids))
        if self.pack_arrays:
            for m in replies:
                if not m.has_error():
                    unpack_content(m.content)
        return replies

    def _node_sessions(self) -> dict[int, str]:
        """``node id -> last activation time`` of every online node (one SuperLink request)."""
        return {int(n.node_id): str(n.last_activated_at) for n in self.inner.get_nodes()}

    def send_and_receive(self, messages: Iterable, *, timeout: float | None = None) -> list:
        """Push ``messages``; pull replies every ``interval`` s until all arrived or
        ``timeout`` seconds passed (``None``: no limit). Returns the replies received.

        With ``watch_nodes = W > 0``, every ``W`` s the online nodes are listed; a pending
        message whose destination is offline, or was activated again since the push (a
        SuperNode that died and came back under the same node id never receives a message
        its previous process had pulled, and the SuperLink answers for it only while it is
        offline), gets a "Node Unavailable" error reply from the SuperLink's id (as Flower's
        own) with the reason, and is recorded in :attr:`lost`."""
        messages = list(messages)
        sessions = self._node_sessions() if self.watch_nodes > 0 else {}
        pending = set(self.push_messages(messages))
        # Flower sets each message's id in place when it pushes it
        by_id = {m.metadata.message_id: m for m in messages} if self.watch_nodes > 0 else {}
        del messages
        end = time.monotonic() + (timeout if timeout is not None else 0.0)
        next_watch = time.monotonic() + self.watch_nodes
        replies: list = []
        while timeout is None or time.monotonic() < end:
            got = self.pull_messages(pending)
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending and self.watch_nodes > 0 and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + self.watch_nodes
                now_on = self._node_sessions()
                for mid in sorted(pending):
                    meta = by_id[mid].metadata
                    node = int(meta.dst_node_id)
                    if node not in now_on:
                        why = "went offline"
                    elif sessions.get(node) is not None and now_on[node] != sessions[node]:
                        why = f"restarted (activated again at {now_on[node]})"
                    else:
                        continue
                    reason = (f"lost node {node}: it {why} while its reply to a "
                              f"{meta.message_type} message was pending")
                    log.warning(reason)
                    self.lost.append({"node": node, "message_type": str(meta.message_type),
                                      "reason": reason})
                    replies.append(_lost_reply(meta, reason))
                    pending.discard(mid)
            if not pending:
                break
            time.sleep(self.interval if timeout is None
                       else max(0.0, min(self.interval, end - time.monotonic())))
        return replies


def _lost_reply(meta, reason: str):
    """An error reply for message ``meta`` from the SuperLink's id, code NODE_UNAVAILABLE
    (what Flower's SuperLink writes for an offline node), carrying ``reason``."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode
    from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message

    msg = create_message_error_unavailable_res_message(meta, "node_unavail")
    msg.error = Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason)
    return msg
