"""What the machine was doing during a benchmark run: recorded, not assumed.

Every benchmark stores ``machine_info(start_load)`` in its JSON so a reader can tell a
quiet machine from a shared one: the 1-minute load average is read when the run starts
and again when it ends (``os.getloadavg``; a load near the number of cores means
the machine was busy with other work as well).
"""
from __future__ import annotations

import os
import platform


def load_average() -> float:
    """1-minute load average, or ``nan`` where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return float("nan")


def machine_info(start_load: float, **extra) -> dict:
    """Platform, cores and the load average at the start and the end of the run."""
    import torch

    info = {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_start": start_load, "load_average_1min_end": load_average()}
    info.update(extra)
    return info
