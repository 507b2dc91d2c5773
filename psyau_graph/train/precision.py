"""Mixed precision for training and inference: one setting, ``"fp32" | "bf16" | "fp16"``.

* ``"fp32"``: no autocast (the reference).
* ``"bf16"``: ``torch.autocast`` with bfloat16, on CPU (AMX/AVX-512-BF16 matrix units where
  present) or CUDA. Matrix products and convolutions run in bf16 with fp32 accumulation;
  parameters, optimizer state, BatchNorm statistics and the loss stay fp32, and the
  DPK-GAT attention logits, softmax and prior mixing are computed in fp32.
* ``"fp16"``: ``torch.autocast`` with float16, CUDA only, with a gradient scaler
  (:func:`grad_scaler`) against underflow of small fp16 gradients.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["PRECISIONS", "check_precision", "autocast", "grad_scaler", "outputs_to_float"]


def check_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """Validate ``precision`` for ``device``; returns it. Raises ``ValueError`` naming what was expected."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (got device {str(device)!r}); "
                         "use 'bf16' on CPU")
    if precision == "bf16" and kind not in ("cpu", "cuda"):
        raise ValueError(f"precision 'bf16' is supported on cpu and cuda devices, got {str(device)!r}")
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """The autocast context of ``precision`` on ``device`` (a no-op context for ``"fp32"``)."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: str | torch.device = "cpu") -> Optional["torch.amp.GradScaler"]:
    """A ``torch.amp.GradScaler`` for ``"fp16"`` (CUDA), else ``None`` (bf16 has fp32's range)."""
    check_precision(precision, device)
    if precision != "fp16":
        return None
    return torch.amp.GradScaler("cuda")


def outputs_to_float(out: Any) -> Any:
    """Model output with its low-precision floating tensors cast to fp32, so the loss and
    metrics are computed in fp32. Works on tensors and on NamedTuples of tensors / None / dicts."""
    if torch.is_tensor(out):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, tuple) and hasattr(out, "_replace"):
        return out._replace(**{k: outputs_to_float(v) for k, v in out._asdict().items()})
    if isinstance(out, dict):
        return {k: outputs_to_float(v) for k, v in out.items()}
    return out
