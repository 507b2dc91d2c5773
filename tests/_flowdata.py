"""Synthetic image pairs with known motion for the optical-flow tests (not a test module)."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates, zoom


def face(size: int = 64) -> np.ndarray:
    """The astronaut's face (public-domain photo shipped with scikit-image), grey float32 in [0, 1]."""
    from skimage import color, data, transform

    grey = color.rgb2gray(data.astronaut())[40:200, 150:310]
    return transform.resize(grey, (size, size), anti_aliasing=True).astype(np.float32)


def smooth_field(rng: np.random.Generator, size: int, magnitude: float, knots: int = 4) -> np.ndarray:
    """A smooth random (2, size, size) displacement field (u, v) with max |component| = magnitude."""
    coarse = rng.normal(size=(2, knots, knots))
    field = np.stack([zoom(c, size / knots, order=3, mode="nearest") for c in coarse])[:, :size, :size]
    return (field / np.abs(field).max() * magnitude).astype(np.float32)


def make_pair(base: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(I0, I1) with I1 = base and I0(x, y) = base(x + u, y + v), so I1(x + u, y + v) = I0(x, y)."""
    h, w = base.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    i0 = map_coordinates(base.astype(np.float64), [yy + flow[1], xx + flow[0]], order=3, mode="nearest")
    return np.clip(i0, 0, 1).astype(np.float32), base.copy()


def epe(flow: np.ndarray, truth: np.ndarray, border: int = 4) -> float:
    """Mean end-point error over the interior (``border`` pixels dropped on each side)."""
    err = np.sqrt(((np.asarray(flow) - truth) ** 2).sum(axis=-3))
    return float(err[..., border:-border, border:-border].mean())
