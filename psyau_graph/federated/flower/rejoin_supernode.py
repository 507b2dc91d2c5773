"""``flower-supernode`` that keeps signing in while the SuperLink still counts its node id
as online (opt-in launcher for a SuperNode restarted after it died, Flower 1.42).

A SuperNode signs in with ``ActivateNode``. Flower 1.42's SuperLink activates a node only
if its status is ``registered`` or ``offline`` (``InMemoryLinkState.activate_node``); a
SuperNode that died without signing out (SIGKILL, power loss) stays ``online`` until
``online_until`` = its last heartbeat + 2 x 30 s (``HEARTBEAT_PATIENCE`` x
``HEARTBEAT_DEFAULT_INTERVAL``; heartbeats go every 17.5-22.5 s, so 37.5-60 s after it
died). A new SuperNode process with the same key started before then is refused with
HTTP 412 ``FLEET_NODE_ACTIVATION_FAILED`` ("could not be activated"), which Flower's
retry policy does not retry: the SuperNode exits ("Failed to initialize the connection to
the SuperLink"). A lab's service manager restarting it every few seconds gets in a few
seconds after ``online_until``.

This launcher makes exactly one change before it calls Flower's own entry point
(``flwr.supernode.cli.flower_supernode``): ``FleetHttpClient.ActivateNode`` is wrapped so
that a 412 ``FLEET_NODE_ACTIVATION_FAILED`` answer is retried every ``retry_every``
seconds for at most ``retry_for`` seconds (then the last error is raised, as Flower's
own); every other error and every other call is Flower's. The SuperLink tags the node
offline and activates it again in one locked step (``activate_node`` first calls
``_check_and_tag_offline_nodes``), so the new process is online at most about
``retry_every`` s after ``online_until``. :func:`check_patchable` refuses any Flower but
the version it was read for.

Run: ``python -m psyau_graph.federated.flower.rejoin_supernode [--retry-for S]
[--retry-every S] [--poll-interval S] -- <flower-supernode options>``
(``--poll-interval``: also apply :mod:`.fast_supernode`). The first line it writes to
stderr says what it patched.
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import time

from ...errors import PsyauError

#: Flower versions whose sign-in code (``flwr/supernode/fleet_http_connection.py``) was read
CHECKED_FLWR_VERSIONS = ("1.42.0",)
DEFAULT_RETRY_FOR = 120.0
DEFAULT_RETRY_EVERY = 0.05


class RejoinSupernodeError(PsyauError):
    """The installed Flower is not the code this launcher patches."""


def check_patchable(version: str) -> None:
    """Raise :class:`RejoinSupernodeError` unless Flower ``version`` signs in as described
    in this module's docstring (``client.ActivateNode`` on a ``FleetHttpClient``)."""
    if version not in CHECKED_FLWR_VERSIONS:
        raise RejoinSupernodeError(
            f"rejoin_supernode: flwr {version} is installed, but its sign-in was read only "
            f"for flwr {', '.join(CHECKED_FLWR_VERSIONS)}; restart the SuperNode with "
            f"Flower's own flower-supernode")
    from flwr.supercore.error import ApiErrorCode
    from flwr.supernode import fleet_http_connection
    from flwr.supernode.fleet_http_client import FleetHttpClient

    src = inspect.getsource(fleet_http_connection)
    if (not callable(getattr(FleetHttpClient, "ActivateNode", None))
            or "client.ActivateNode" not in src
            or not hasattr(ApiErrorCode, "FLEET_NODE_ACTIVATION_FAILED")):
        raise RejoinSupernodeError(
            f"rejoin_supernode: the SuperNode sign-in of flwr {version} does not match the "
            f"code this launcher patches; not patching")


def retrying_activate(activate, retry_for: float, retry_every: float, *,
                      clock=time.monotonic, sleep=time.sleep, say=None):
    """``activate`` (an unbound ``ActivateNode(self, request)``) retried while the SuperLink
    answers 412 ``FLEET_NODE_ACTIVATION_FAILED``, every ``retry_every`` s for at most
    ``retry_for`` s; any other error is raised at once."""
    import httpx
    from flwr.supercore.error import ApiErrorCode, FlowerError

    def wrapped(self, request):
        start = clock()
        deadline = start + retry_for
        tries = 0
        while True:
            try:
                out = activate(self, request)
            except httpx.HTTPStatusError as exc:
                err = FlowerError.from_json(exc.response.text)
                if (err is None or err.code != ApiErrorCode.FLEET_NODE_ACTIVATION_FAILED
                        or clock() + retry_every > deadline):
                    raise
                tries += 1
                if tries == 1 and say is not None:
                    say(f"rejoin_supernode: the SuperLink still counts this node online "
                        f"(HTTP {exc.response.status_code}, FLEET_NODE_ACTIVATION_FAILED); signing in "
                        f"again every {retry_every} s for at most {retry_for:.0f} s")
                sleep(retry_every)
                continue
            if tries and say is not None:
                spent = clock() - start
                say(f"rejoin_supernode: signed in after {tries} refused tries in {spent:.1f} s "
                    f"(one try per {spent / tries:.3f} s)")
            return out

    wrapped.__wrapped__ = activate
    return wrapped


def _check_args(retry_for: float, retry_every: float) -> tuple[float, float]:
    retry_for, retry_every = float(retry_for), float(retry_every)
    if not math.isfinite(retry_for) or retry_for <= 0:
        raise ValueError(f"--retry-for must be a finite number of seconds > 0, got {retry_for!r}")
    if not math.isfinite(retry_every) or not 0.01 <= retry_every <= 10.0:
        raise ValueError(f"--retry-every must be between 0.01 and 10 seconds, got {retry_every!r}")
    return retry_for, retry_every


def patch(retry_for: float = DEFAULT_RETRY_FOR, retry_every: float = DEFAULT_RETRY_EVERY,
          say=None) -> dict:
    """Check the installed Flower, then make this process's SuperNode retry a refused
    sign-in. Returns ``{"flwr", "retry_for_s", "retry_every_s"}``."""
    import flwr
    from flwr.supernode.fleet_http_client import FleetHttpClient

    retry_for, retry_every = _check_args(retry_for, retry_every)
    check_patchable(flwr.__version__)
    FleetHttpClient.ActivateNode = retrying_activate(FleetHttpClient.ActivateNode, retry_for,
                                                     retry_every, say=say)
    return {"flwr": flwr.__version__, "retry_for_s": retry_for, "retry_every_s": retry_every}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    from .fast_supernode import run_flower_supernode, split_argv

    own, rest = split_argv(argv)
    ap = argparse.ArgumentParser(prog="python -m psyau_graph.federated.flower.rejoin_supernode",
                                 description=__doc__.splitlines()[0],
                                 epilog="flower-supernode options follow after '--'")
    ap.add_argument("--retry-for", type=float, default=DEFAULT_RETRY_FOR,
                    help=f"seconds to keep signing in (default: {DEFAULT_RETRY_FOR:.0f})")
    ap.add_argument("--retry-every", type=float, default=DEFAULT_RETRY_EVERY,
                    help=f"seconds between two sign-in tries (default: {DEFAULT_RETRY_EVERY})")
    ap.add_argument("--poll-interval", type=float, default=None,
                    help="also cap the SuperNode loop's sleeps (fast_supernode)")
    args = ap.parse_args(own)
    try:
        done = patch(args.retry_for, args.retry_every, say=_say)
        fast = None
        if args.poll_interval is not None:
            from . import fast_supernode
            fast = fast_supernode.patch(args.poll_interval)
    except ValueError as exc:  # the launchers' errors are PsyauError, a ValueError
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    _say(f"rejoin_supernode: flwr {done['flwr']}: a refused sign-in (412 "
         f"FLEET_NODE_ACTIVATION_FAILED) is retried every {done['retry_every_s']} s for at "
         f"most {done['retry_for_s']:.0f} s"
         + (f"; sleeps capped at {fast['poll_interval_s']} s" if fast else ""))
    run_flower_supernode(rest)


if __name__ == "__main__":
    main()
