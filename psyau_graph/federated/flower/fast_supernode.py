"""``flower-supernode`` with its fixed polling sleeps capped (opt-in launcher, Flower 1.42).

A Flower 1.42 SuperNode relays messages between the SuperLink and its ClientApps in one
loop (``flwr/supernode/start_client_internal.py``) that waits with fixed sleeps, none of
which any option, environment variable or API changes:

=================================  =====  ==========================================
function                           sleep  when
=================================  =====  ==========================================
``start_client_internal``          3 s    the SuperLink had no message for this node
``_push_messages``                 0.5 s  the ClientApp's reply is not there yet
``yield_object_contents`` (nested) 0.5 s  a reply object's content is not stored yet
=================================  =====  ==========================================

The 3 s idle wait means a message sent by the ServerApp waits 1.5 s on average (up to
3 s) before its node even pulls it. This launcher makes exactly one change before it
calls Flower's own entry point (``flwr.supernode.cli.flower_supernode``): the name
``time`` inside that one module is bound to a stand-in whose ``sleep(s)`` sleeps
``min(s, poll_interval)``; every other attribute is the real ``time`` module's. Nothing
else in Flower is touched; the SuperNode's options are Flower's.

Before patching, :func:`check_patchable` reads the module's source and raises
:class:`FastSupernodeError` unless the installed Flower version is one this was checked
against *and* the module's only uses of ``time`` are those three ``time.sleep`` calls in
those functions with those values; so on any other Flower code it refuses to start
instead of silently doing nothing (or something else).

Run: ``python -m psyau_graph.federated.flower.fast_supernode [--poll-interval S] --
<flower-supernode options>``. The first line it writes to stderr says what it patched.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import math
import sys
import time as _time

from ...errors import PsyauError

#: Flower versions whose ``start_client_internal.py`` was read and matched the table above
CHECKED_FLWR_VERSIONS = ("1.42.0",)
#: (enclosing function path, seconds) of every ``time.sleep`` call expected in the module
EXPECTED_SLEEPS = ((("start_client_internal",), 3), (("_push_messages",), 0.5),
                   (("_push_messages", "yield_object_contents"), 0.5))
DEFAULT_POLL_INTERVAL = 0.1
TARGET_MODULE = "flwr.supernode.start_client_internal"


class FastSupernodeError(PsyauError):
    """The installed Flower is not the code this launcher patches (fix: Flower's own waits,
    ``LocalDeployment(poll_interval=None)`` / ``psyau federate --poll-interval 0``)."""


class CappedTime:
    """Stand-in for the ``time`` module: ``sleep(s)`` sleeps ``min(s, cap)`` seconds."""

    def __init__(self, cap: float):
        self.cap = float(cap)

    def sleep(self, seconds: float) -> None:
        _time.sleep(min(float(seconds), self.cap))

    def __getattr__(self, name):
        return getattr(_time, name)


def _time_uses(source: str) -> list[tuple[tuple[str, ...], str, object]]:
    """``(function path, attribute, constant argument or None)`` of every ``time.X`` use."""
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.stack: list[str] = []

        def _func(self, node):
            self.stack.append(node.name)
            self.generic_visit(node)
            self.stack.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = _func

        def visit_Call(self, node):
            f = node.func
            if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    and f.value.id == "time"):
                arg = (node.args[0].value if len(node.args) == 1 and not node.keywords
                       and isinstance(node.args[0], ast.Constant) else None)
                found.append((tuple(self.stack), f.attr, arg))
                for a in node.args:
                    self.visit(a)
                return
            self.generic_visit(node)

        def visit_Attribute(self, node):  # a use of time.X that is not a call
            if isinstance(node.value, ast.Name) and node.value.id == "time":
                found.append((tuple(self.stack), node.attr, "not-called"))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def check_patchable(module, version: str) -> None:
    """Raise :class:`FastSupernodeError` unless ``module`` (Flower ``version``) is the code
    described in this module's docstring."""
    name = getattr(module, "__name__", TARGET_MODULE)
    if version not in CHECKED_FLWR_VERSIONS:
        raise FastSupernodeError(
            f"fast_supernode: flwr {version} is installed, but its SuperNode loop was checked "
            f"only for flwr {', '.join(CHECKED_FLWR_VERSIONS)}; use Flower's own waits "
            f"(psyau federate --poll-interval 0)")
    if getattr(module, "time", None) is not _time:
        raise FastSupernodeError(f"fast_supernode: {name} does not use the time module as "
                                 f"expected (flwr {version}); not patching (psyau federate "
                                 f"--poll-interval 0 uses Flower's own waits)")
    uses = _time_uses(inspect.getsource(module))
    expected = sorted((path, "sleep", s) for path, s in EXPECTED_SLEEPS)
    if sorted(uses, key=repr) != sorted(expected, key=repr):
        raise FastSupernodeError(
            f"fast_supernode: {name} of flwr {version} does not match the code this launcher "
            f"patches: its time uses are {uses}, expected {expected}; not patching "
            f"(psyau federate --poll-interval 0 uses Flower's own waits)")


def patch_report(poll_interval: float) -> dict:
    """Check the installed Flower (raises :class:`FastSupernodeError` or ``ValueError``)
    and describe what :func:`patch` would do, without patching.

    Returns:
        ``{"flwr": version, "module": ..., "poll_interval_s": ..., "sleeps_capped": [...]}``.
    """
    import importlib

    import flwr

    poll_interval = float(poll_interval)
    if not math.isfinite(poll_interval) or not 0.01 <= poll_interval <= 3.0:
        raise ValueError(f"poll interval must be between 0.01 and 3 seconds, got {poll_interval!r}")
    check_patchable(importlib.import_module(TARGET_MODULE), flwr.__version__)
    return {"flwr": flwr.__version__, "module": TARGET_MODULE, "poll_interval_s": poll_interval,
            "sleeps_capped": [f"{'.'.join(p)}: {s} s" for p, s in EXPECTED_SLEEPS]}


def patch(poll_interval: float) -> dict:
    """Check, then cap the SuperNode loop's sleeps at ``poll_interval`` seconds in this
    process. Returns :func:`patch_report`'s description."""
    import importlib

    report = patch_report(poll_interval)
    importlib.import_module(TARGET_MODULE).time = CappedTime(report["poll_interval_s"])
    return report


def split_argv(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """A launcher's command line split at ``--``: ``(its own options, flower-supernode's)``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def run_flower_supernode(rest: list[str]) -> None:
    """Call Flower's own ``flower-supernode`` entry point in this (patched) process."""
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


def main(argv: list[str] | None = None) -> None:
    own, rest = split_argv(argv)
    ap = argparse.ArgumentParser(prog="python -m psyau_graph.federated.flower.fast_supernode",
                                 description=__doc__.splitlines()[0],
                                 epilog="flower-supernode options follow after '--'")
    ap.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL,
                    help=f"cap in seconds on the SuperNode's polling sleeps "
                         f"(default: {DEFAULT_POLL_INTERVAL})")
    args = ap.parse_args(own)
    try:
        done = patch(args.poll_interval)
    except ValueError as exc:  # FastSupernodeError is one
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"fast_supernode: flwr {done['flwr']}: sleeps in {done['module']} capped at "
          f"{done['poll_interval_s']} s ({'; '.join(done['sleeps_capped'])})",
          file=sys.stderr, flush=True)
    run_flower_supernode(rest)


if __name__ == "__main__":
    main()
