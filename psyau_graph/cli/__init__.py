"""Command-line interface: ``psyau <command> ...``.

Each command lives in its own module of this package and exposes
``add_parser(subparsers)`` (registers its arguments) and ``run(args) -> int``.
Modules are imported only when their command runs, so ``psyau --help`` stays fast
and a missing optional dependency only affects its own command.

Bad input (``OSError`` such as a missing file, or ``ValueError``) ends the command with
one line on stderr naming the command and the problem, exit status 2 (as for a bad
flag); ``PSYAU_TRACEBACK=1`` in
the environment shows the full traceback instead.
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
    try:
        return int(_load(args.command).run(args) or 0)
    except (OSError, ValueError) as exc:
        # bad input (a missing file, a malformed sheet, a bad value): one clear line, no traceback
        if os.environ.get("PSYAU_TRACEBACK"):
            raise
        print(f"psyau {args.command}: error: {exc}\n(set PSYAU_TRACEBACK=1 to see where it was raised)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
