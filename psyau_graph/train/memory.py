"""Keep freed memory in the process on Linux/glibc, so large tensors are not page-faulted anew.

glibc's ``malloc`` serves every allocation above its mmap threshold (at most 32 MiB by
default) with a fresh ``mmap`` and unmaps it on ``free``. A training step of FED-PsyAU at
B = 256 allocates and frees activations of ~100 MiB (the LFE runs on B·65 patches at
once), so every step touches brand-new pages: the kernel zero-fills them, one page
fault per 4 KiB. Measured on the LFE training step alone (B = 256, one thread): 0.81 s
with glibc's defaults, 0.45 s after :func:`keep_freed_memory` (the per-ROI loop of the
authors' structure, whose activations stay below the threshold, takes 0.42 s either way).

:func:`keep_freed_memory` raises the mmap and trim thresholds with ``mallopt`` so freed
blocks are reused. The cost: the process keeps up to ``limit`` bytes of freed memory
instead of returning it to the system (its resident size stays near its peak). Nothing
in the library calls it on import; the ``psyau`` command calls it at start-up, and a
script can call it once before training. It is a no-op (returning ``False``) where the C
library is not glibc.
"""
from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds to ``limit`` bytes (default 1 GiB).

    Args:
        limit: allocations up to this size come from the reusable heap, and up to this
            much freed memory stays with the process (1 MiB ≤ ``limit`` < 2 GiB).

    Returns:
        ``True`` if both thresholds were set, ``False`` on a platform without glibc.
    """
    if not isinstance(limit, int) or not (1 << 20) <= limit < (1 << 31):
        raise ValueError(f"limit must be an int in [1 MiB, 2 GiB), got {limit!r}")
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, limit)) and bool(mallopt(_M_TRIM_THRESHOLD, limit))


@functools.lru_cache(maxsize=1)
def _mallopt():
    """The C library's ``mallopt`` (looked up once), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt  # symbols of the running process, libc's among them
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn
