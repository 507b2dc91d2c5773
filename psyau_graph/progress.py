"""Plain-text progress lines for batch jobs (``nohup``, cluster schedulers, log files).

tqdm bars hide themselves when stderr is not a terminal (``disable=None``), which
leaves a long run under a scheduler silent. :class:`LineProgress` is their
counterpart: it writes nothing on a terminal (the bar is shown there) and, off a
terminal, one line per step (``every_pct=0``: per fold, per round) or each time
another ``every_pct`` percent is done (clips, epochs), with elapsed time and ETA::

    psyau progress | preprocess synth: 12/60 clips (20%) | elapsed 0:01:23 | ETA 0:05:32

The ETA is the mean time per completed step times the steps left, counted from the
first step done in this run (steps given as ``initial`` or ``update(resumed=True)``
are left out of it).
"""
from __future__ import annotations

import sys
import time
from typing import IO, Optional

__all__ = ["LineProgress", "format_seconds", "is_terminal"]

PREFIX = "psyau progress"


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def format_seconds(s: float) -> str:
    """``3723.4`` → ``"1:02:03"`` (hours not zero-padded); negative or NaN → ``"?"``."""
    if not s == s or s < 0:  # NaN or negative
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LineProgress:
    """Progress lines on a non-terminal stream; silent on a terminal or when disabled.

    Args:
        total: number of steps (folds, clips, rounds, epochs); ``0`` prints nothing.
        desc: what runs, e.g. ``"preprocess casme2"``, ``"loso folds"``.
        unit: name of one step, plural added by ``"s"`` (default: ``"step"``).
        every_pct: print when another ``every_pct`` % is done; ``0`` = every step.
            The last step is always printed. (default: ``10``)
        stream: where to write (default: ``sys.stderr`` at construction time).
        enabled: ``False`` silences it (the commands' ``progress=False``). (default: ``True``)
        initial: steps already done before this run (resume). (default: ``0``)
    """

    def __init__(self, total: int, desc: str, unit: str = "step", *, every_pct: float = 10.0,
                 stream: Optional[IO[str]] = None, enabled: bool = True, initial: int = 0):
        if total < 0 or initial < 0:
            raise ValueError(f"total and initial must be >= 0, got {total} and {initial}")
        if every_pct < 0:
            raise ValueError(f"every_pct must be >= 0, got {every_pct}")
        self.total, self.desc, self.unit = int(total), desc, unit
        self.every_pct = float(every_pct)
        self.stream = sys.stderr if stream is None else stream
        self.active = bool(enabled) and self.total > 0 and not is_terminal(self.stream)
        self.n = self.initial = int(initial)
        self._t0 = time.perf_counter()
        self._next_pct = self._after(100.0 * self.n / self.total if self.total else 0.0)

    def _after(self, pct: float) -> float:
        if self.every_pct == 0:
            return -1.0
        return (int(pct // self.every_pct) + 1) * self.every_pct

    def line(self, note: str = "") -> str:
        """The line for the current state (without newline)."""
        elapsed = time.perf_counter() - self._t0
        done_here = self.n - self.initial
        eta = elapsed / done_here * (self.total - self.n) if done_here > 0 else float("nan")
        pct = 100.0 * self.n / self.total if self.total else 100.0
        units = self.unit if self.total == 1 else self.unit + "s"
        text = (f"{PREFIX} | {self.desc}: {self.n}/{self.total} {units} ({pct:.0f}%) | "
                f"elapsed {format_seconds(elapsed)} | ETA {format_seconds(eta)}")
        return f"{text} | {note}" if note else text

    def update(self, n: int = 1, note: str = "", *, resumed: bool = False) -> None:
        """Count ``n`` more steps done; print a line if a threshold was crossed.

        ``note`` (e.g. ``"UF1 0.412"``) is appended to the line when one is printed.
        ``resumed=True``: the steps were loaded, not run; they are left out of the ETA.
        """
        before = self.n
        self.n = min(self.n + int(n), self.total)
        if resumed:
            self.initial += self.n - before
        if not self.active:
            return
        pct = 100.0 * self.n / self.total
        if self.every_pct == 0 or pct >= self._next_pct or self.n >= self.total:
            self._next_pct = self._after(pct)
            self.stream.write(self.line(note) + "\n")
            self.stream.flush()

    def write(self, message: str) -> None:
        """One free-form line (a stage of the demo), with the elapsed time, when active."""
        if self.active:
            elapsed = format_seconds(time.perf_counter() - self._t0)
            self.stream.write(f"{PREFIX} | {self.desc}: {message} | elapsed {elapsed}\n")
            self.stream.flush()
