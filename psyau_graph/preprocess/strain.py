r"""Optical strain of a flow field.

For a flow field :math:`(u, v)` (pixels), the optical strain magnitude is

.. math::
    \varepsilon = \sqrt{u_x^2 + v_y^2 + \tfrac{1}{2}\,(u_y + v_x)^2}

where :math:`u_x = \partial u / \partial x` (along columns, the last axis) and
:math:`u_y = \partial u / \partial y` (along rows). Derivatives are central
differences in the interior, :math:`(f_{i+1} - f_{i-1}) / 2`, and first-order
one-sided differences at the borders, :math:`f_1 - f_0` and
:math:`f_{n-1} - f_{n-2}`: the same scheme as :func:`numpy.gradient` with
``edge_order=1`` (and :func:`torch.gradient`). Linear flow fields are therefore
differentiated exactly everywhere, borders included. The strain is in units of
pixels per pixel (dimensionless).

A pure rotation :math:`u = -\omega y, v = \omega x` and a pure translation have
zero strain; a uniform expansion :math:`u = a x, v = a y` has
:math:`\varepsilon = \sqrt{2}\,|a|`.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]

__all__ = ["optical_strain", "flow_with_strain"]


def _check_flow(flow: Array, name: str = "flow") -> None:
    if not isinstance(flow, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(flow).__name__}")
    shape = tuple(flow.shape)
    if len(shape) < 3 or shape[-3] != 2:
        raise ValueError(f"{name} must have shape (..., 2, H, W) with channels (u, v); got {shape}")
    if shape[-2] < 2 or shape[-1] < 2:
        raise ValueError(f"{name} needs H >= 2 and W >= 2 to take derivatives; got {shape}")
    is_float = flow.is_floating_point() if isinstance(flow, torch.Tensor) else np.issubdtype(flow.dtype, np.floating)
    if not is_float:
        raise TypeError(f"{name} must be a floating-point array, got dtype {flow.dtype}")


def optical_strain(flow: Array) -> Array:
    r"""Optical strain magnitude :math:`\varepsilon` of a flow field.

    Args:
        flow: flow field, channel 0 = u (horizontal, x), channel 1 = v
            (vertical, y), in pixels. numpy array or torch tensor, floating point.

    Returns:
        Strain magnitude, same type, dtype and device as ``flow``.

    Shapes:
        - flow: :math:`(..., 2, H, W)` with :math:`H, W \ge 2`
        - output: :math:`(..., H, W)`

    Raises:
        TypeError: not an array/tensor, or not floating point.
        ValueError: wrong shape.
    """
    _check_flow(flow)
    if isinstance(flow, torch.Tensor):
        u, v = flow[..., 0, :, :], flow[..., 1, :, :]
        u_y, u_x = torch.gradient(u, dim=(-2, -1))
        v_y, v_x = torch.gradient(v, dim=(-2, -1))
        shear = u_y + v_x
        return torch.sqrt(u_x * u_x + v_y * v_y + 0.5 * shear * shear)
    u, v = flow[..., 0, :, :], flow[..., 1, :, :]
    u_y, u_x = np.gradient(u, axis=(-2, -1))
    v_y, v_x = np.gradient(v, axis=(-2, -1))
    shear = u_y + v_x
    return np.sqrt(u_x * u_x + v_y * v_y + 0.5 * shear * shear).astype(flow.dtype, copy=False)


def flow_with_strain(flow: Array) -> Array:
    """Append the optical strain as a third channel: (u, v) → (u, v, ε).

    Args:
        flow: flow field (u, v) in pixels, numpy or torch, floating point.

    Returns:
        Same type and dtype as ``flow``.

    Shapes:
        - flow: :math:`(..., 2, H, W)`
        - output: :math:`(..., 3, H, W)`, channels (u, v, ε)
    """
    eps = optical_strain(flow)
    if isinstance(flow, torch.Tensor):
        return torch.cat([flow, eps.unsqueeze(-3)], dim=-3)
    return np.concatenate([flow, eps[..., None, :, :]], axis=-3)
