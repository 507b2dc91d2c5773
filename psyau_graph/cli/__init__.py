"""Command-line interface: ``psyau <command> ...``.

Each command lives in its own module of this package and exposes
``add_parser(subparsers)`` (registers its arguments) and ``run(args) -> int``.
Modules are imported only when their command runs, so ``psyau --help`` stays fast
and a missing optional dependency only affects its own command.

Bad input ends the command with one line on stderr naming the command and the
problem, exit status 2 (as for a bad flag): any :class:`psyau_graph.errors.PsyauError`
(no face, a missing or unreadable frame, a bad sheet, face box or checkpoint), any
other ``ValueError``, an ``OSError`` such as a missing file, and a command's own
``SystemExit("message")``. ``PSYAU_TRACEBACK=1`` in the environment shows the full
traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

#: command name -> module (relative to this package) implementing it
COMMANDS = {
    "priors": "priors",
    "synth": "synth",
    "preprocess": "preprocess",
    "import-flow": "import_flow",
    "train": "train",
    "evaluate": "evaluate",
    "pretrain": "pretrain",
    "predict": "predict",
    "federate": "federate",
    "demo": "demo",
}


def _load(name: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")


def build_parser(commands=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="psyau", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands or COMMANDS:
        try:
            module = _load(name)
        except ModuleNotFoundError as exc:  # command not built yet, or optional extra missing
            if exc.name and exc.name.startswith(__name__):
                continue
            p = sub.add_parser(name, help=f"(unavailable: {exc})")
            p.set_defaults(_unavailable=str(exc))
            continue
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the requested command's module when one is named.
    wanted = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(wanted)
    args = parser.parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    if getattr(args, "_unavailable", None):
        parser.exit(2, f"psyau {args.command}: unavailable ({args._unavailable})\n")
    from ..train.memory import keep_freed_memory

    keep_freed_memory()  # large activations are reused, not page-faulted every step (see that module)
    from ..errors import PsyauError

    try:
        return int(_load(args.command).run(args) or 0)
    except SystemExit as exc:
        # a command's own `raise SystemExit("message")`: the same one line and status 2
        if not isinstance(exc.code, str):
            raise
        return _error_line(args.command, exc.code.removeprefix(f"psyau {args.command}: "), show_hint=False)
    except (PsyauError, OSError, ValueError) as exc:
        # bad input (no face, a missing frame, a malformed sheet, a bad value): one line, no traceback
        if os.environ.get("PSYAU_TRACEBACK"):
            raise
        return _error_line(args.command, str(exc))


def _error_line(command: str, message: str, *, show_hint: bool = True) -> int:
    """Print ``psyau COMMAND: error: MESSAGE`` as ONE line on stderr (a multi-line
    message is joined with "; "); return the exit status 2."""
    text = "; ".join(line.strip() for line in message.strip().splitlines() if line.strip())
    hint = " [PSYAU_TRACEBACK=1 shows where it was raised]" if show_hint else ""
    print(f"psyau {command}: error: {text}{hint}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
