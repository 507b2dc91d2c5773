"""Dropout with cheaper masks on CPU.

``torch.nn.functional.dropout`` on CPU draws its mask with ``bernoulli_`` (≈ 21 ms for a
4.3 M-element mask on 2 threads of an AVX-512 CPU), the largest memory-bound op of a
FED-PsyAU training step after the convolutions. :func:`dropout` draws the same
distribution from uniform 31-bit integers (``random_`` on int32, ≈ 8 ms) compared with a
threshold: an element is kept when ``r ≥ t`` with ``r`` uniform on ``{0, …, 2³¹ − 1}`` and
``t = round(p · 2³¹)``, so ``P(keep) = 1 − t / 2³¹`` (within 2⁻³² of ``1 − p``, finer than
the float32 uniform ``bernoulli_`` compares with), each element independently; kept
elements are scaled by ``1 / (1 − p)`` as in ``F.dropout``. The gradient is the same
mask times the same scale. Only the random stream differs from ``F.dropout``: a seed
gives other masks than before (equal in distribution, not element by element).
Measured in ``benchmarks/README.md`` (model_speed).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

_TWO31 = 2 ** 31


def keep_mask(shape, p: float, device=None, generator=None) -> Tensor:
    """Bool tensor of ``shape``: each element True with probability ``1 − round(p·2³¹)/2³¹``."""
    r = torch.empty(shape, dtype=torch.int32, device=device)
    r.random_(generator=generator)  # uniform on {0, ..., 2**31 - 1}
    return r >= int(round(p * _TWO31))


def dropout(x: Tensor, p: float, training: bool = True, generator=None) -> Tensor:
    """Same contract as ``torch.nn.functional.dropout(x, p, training)`` (not in place).

    Args:
        x (Tensor): any shape, floating point.
        p (float): drop probability in ``[0, 1)``.
        training (bool): identity when False.

    Returns:
        Tensor of the shape and dtype of ``x``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if not training or p == 0.0:
        return x
    scale = torch.tensor(1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    mask = keep_mask(x.shape, p, x.device, generator)
    return x * (mask * scale)  # autograd keeps the scaled mask, as native dropout does


class Dropout(nn.Module):
    """Module form of :func:`dropout` (drop-in for ``nn.Dropout``, no parameters).

    Shapes:
        - **input:** any
        - **output:** same as the input
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
