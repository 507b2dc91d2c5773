"""Stage 3: alignment and crop. One similarity transform per clip, from the onset.

The transform (rotation + uniform scale + translation) levels the eye line (eye
centres = means of dlib points 36–41 and 42–47), then crops a square around the
68 landmarks and resizes it to ``size × size`` (default 128). The crop box, in the
levelled frame, is the landmarks' bounding box widened by margins expressed as
fractions of the box's width (sides) and height (top / bottom), then grown to a
square about its centre. Defaults (:class:`AlignConfig`): 12 % each side, 20 %
above the brows (forehead: keeps brow ROIs off the border and frontalis motion in
view), 8 % below the chin. The same matrix is applied to every frame, so head
motion within the clip stays in the flow as it would in the paper's input; the
landmarks are transformed with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AlignConfig", "AlignedClip", "eye_centres", "alignment_matrix", "transform_points",
           "warp_frames", "align_clip"]


@dataclass(frozen=True)
class AlignConfig:
    """Crop geometry.

    Args:
        size: output side in pixels (default: 128, the paper's flow size).
        margin_side: extra width on each side, fraction of the landmark box width (default: 0.12).
        margin_top: extra height above, fraction of the box height (default: 0.20).
        margin_bottom: extra height below, fraction of the box height (default: 0.08).
    """

    size: int = 128
    margin_side: float = 0.12
    margin_top: float = 0.20
    margin_bottom: float = 0.08

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"AlignConfig.size: expected ≥ 8, got {self.size}")
        for k in ("margin_side", "margin_top", "margin_bottom"):
            if not 0 <= getattr(self, k) <= 2:
                raise ValueError(f"AlignConfig.{k}: expected a fraction in [0, 2], got {getattr(self, k)}")


@dataclass
class AlignedClip:
    """Aligned frames and the transform.

    Attributes:
        frames: (T, size, size) uint8 (or (size, size) for a single frame input).
        landmarks: (68, 2) float32, landmarks in crop pixels.
        matrix: (2, 3) float64, maps (x, y, 1) of the source frame to the crop.
    """

    frames: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray


def _check_lm(lm68) -> np.ndarray:
    a = np.asarray(lm68, dtype=np.float64)
    if a.shape != (68, 2):
        raise ValueError(f"lm68: expected shape (68, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("lm68: non-finite coordinates")
    return a


def eye_centres(lm68) -> tuple[np.ndarray, np.ndarray]:
    """Centres of the image-left eye (points 36–41) and the image-right eye (42–47), (2,) each."""
    a = _check_lm(lm68)
    return a[36:42].mean(0), a[42:48].mean(0)


def transform_points(points, matrix) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points.

    Shapes:
        points: (..., 2) (x, y); matrix: (2, 3); return: (..., 2) float32.
    """
    p = np.asarray(points, dtype=np.float64)
    M = np.asarray(matrix, dtype=np.float64)
    if M.shape != (2, 3):
        raise ValueError(f"matrix: expected shape (2, 3), got {M.shape}")
    if p.shape[-1] != 2:
        raise ValueError(f"points: expected shape (..., 2), got {p.shape}")
    return (p @ M[:, :2].T + M[:, 2]).astype(np.float32)


def alignment_matrix(lm68, config: AlignConfig | None = None) -> np.ndarray:
    """The similarity transform from a frame to the aligned crop.

    Args:
        lm68: landmarks of the reference (onset) frame.
        config: crop geometry (default: :class:`AlignConfig()`).

    Shapes:
        lm68: (68, 2); return: (2, 3) float64.
    """
    cfg = config or AlignConfig()
    a = _check_lm(lm68)
    le, re_ = eye_centres(a)
    dx, dy = re_ - le
    if np.hypot(dx, dy) < 1e-6:
        raise ValueError("lm68: the two eye centres coincide; cannot level the eye line")
    angle = np.arctan2(dy, dx)
    c, s = np.cos(-angle), np.sin(-angle)
    R = np.array([[c, -s], [s, c]])
    centre = (le + re_) / 2
    r = (a - centre) @ R.T  # landmarks with a level eye line, centred on the eyes
    x0, y0 = r.min(0)
    x1, y1 = r.max(0)
    w, h = x1 - x0, y1 - y0
    x0, x1 = x0 - cfg.margin_side * w, x1 + cfg.margin_side * w
    y0, y1 = y0 - cfg.margin_top * h, y1 + cfg.margin_bottom * h
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = cfg.size / side
    # crop(p) = scale * (R (p - centre) - corner) - 0.5: pixel centres sit at integer
    # coordinates, so the square's edges map to -0.5 and size - 0.5.
    A = scale * R
    t = -A @ centre - scale * np.array([cx - side / 2, cy - side / 2]) - 0.5
    return np.hstack([A, t[:, None]])


def warp_frames(frames, matrix, size: int = 128) -> np.ndarray:
    """Warp frames into the crop with one matrix (bilinear, replicated borders).

    Shapes:
        frames: (H, W), (H, W, 3), (T, H, W) or (T, H, W, 3) uint8 — a 3-D array whose last
        axis is 3 is read as one colour frame.
        return: same leading layout with (size, size).
    """
    import cv2

    f = np.asarray(frames)
    M = np.asarray(matrix, dtype=np.float64)
    single = f.ndim == 2 or (f.ndim == 3 and f.shape[-1] == 3)
    stack = f[None] if single else f
    if stack.ndim not in (3, 4):
        raise ValueError(f"frames: expected (H, W[, 3]) or (T, H, W[, 3]), got shape {f.shape}")
    out = np.stack([cv2.warpAffine(im, M, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REPLICATE) for im in stack])
    return out[0] if single else out


def align_clip(frames, lm68, config: AlignConfig | None = None) -> AlignedClip:
    """Align all frames of a clip with the transform computed from ``lm68`` (the onset's).

    Shapes:
        frames: (T, H, W) or (H, W) uint8; lm68: (68, 2).
        return.frames: (T, S, S) or (S, S); return.landmarks: (68, 2); return.matrix: (2, 3).
    """
    cfg = config or AlignConfig()
    M = alignment_matrix(lm68, cfg)
    return AlignedClip(warp_frames(frames, M, cfg.size), transform_points(lm68, M), M)
