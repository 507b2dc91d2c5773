"""The ``device`` setting of the commands and configs: validated once, with a clear error."""
from __future__ import annotations

import torch

__all__ = ["check_device", "resolve_device"]


def check_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, …) and check that it exists here.

    Raises:
        ValueError: not a torch device string, or a CUDA device on a machine without one
            (or with fewer GPUs than the index asks for). Nothing falls back to the CPU.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type not in ("cpu",):
        raise ValueError(f"device {str(device)!r}: only cpu and cuda devices are supported")
    return dev


def resolve_device(device: str | torch.device) -> torch.device:
    """:func:`check_device`, plus ``"auto"``: the first CUDA device when CUDA is available,
    else the CPU. The choice is explicit (the caller asked for it) and the returned device
    is what callers record; any other value is checked as by :func:`check_device`."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return check_device(device)
