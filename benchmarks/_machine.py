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


#: CPU features that decide which kernels the low-precision paths get (AMX tiles on Intel
#: Sapphire Rapids and later; AVX-512 BF16 / VNNI on AMD Zen 4 and Intel Cooper Lake and later)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpu_model() -> dict:
    """``{"cpu_model", "cpu_flags"}`` from ``/proc/cpuinfo`` (model name and the
    :data:`CPU_FLAGS` present); ``{}`` where the file does not exist (not Linux)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    flags = set(fields.get("flags", "").split())
    return {"cpu_model": fields.get("model name", ""), "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def machine_info(start_load: float, **extra) -> dict:
    """Platform, cores, CPU model and its low-precision features, and the load average at
    the start and the end of the run."""
    import torch

    info = {"cpus": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), **cpu_model(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_start": start_load, "load_average_1min_end": load_average()}
    info.update(extra)
    return info
