"""The package's base error for problems a user can cause and fix.

Every error raised because of the user's input (a clip with no face, a missing or
unreadable frame, a bad sheet, a bad checkpoint, a bad face box) derives from
:class:`PsyauError`. It is a :class:`ValueError`, so code that already catches
``ValueError`` keeps working, and ``psyau`` ends any command on it with one line
on stderr and exit status 2 (see :mod:`psyau_graph.cli`).
"""
from __future__ import annotations

__all__ = ["PsyauError"]


class PsyauError(ValueError):
    """Bad user input (data, files, options): the message says which and what was expected."""
