"""ROI patches around the 65 keypoints and the whole-face 28×28 flow map (paper §4.1).

Both functions take the 3-channel motion map (u, v, ε) of the aligned 128×128
face crop. They accept NumPy arrays or torch tensors and return the same kind.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["roi_centres", "extract_rois", "face_flow_map"]


def roi_centres(keypoints, height: int, width: int, size: int = 5) -> np.ndarray:
    """Integer patch centres: keypoints rounded half-up, then clamped inside the image.

    A keypoint closer than ``size // 2`` pixels to a border (or outside the image)
    gets its centre moved inward so the whole ``size × size`` patch lies inside:
    the patch is *shifted*, never padded, so every ROI holds real flow values.

    Shapes:
        keypoints: (..., K, 2) as (x, y) pixel coordinates.
        return: (..., K, 2) int64 (cx, cy).
    """
    kp = keypoints.detach().cpu().numpy() if isinstance(keypoints, torch.Tensor) else np.asarray(keypoints)
    if kp.ndim < 2 or kp.shape[-1] != 2:
        raise ValueError(f"keypoints: expected shape (..., K, 2) as (x, y), got {kp.shape}")
    if not np.all(np.isfinite(kp)):
        raise ValueError("keypoints: contains non-finite coordinates")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size: expected a positive odd patch size, got {size}")
    if height < size or width < size:
        raise ValueError(f"image {height}×{width} is smaller than the {size}×{size} patch")
    half = size // 2
    c = np.floor(kp.astype(np.float64) + 0.5).astype(np.int64)
    c[..., 0] = np.clip(c[..., 0], half, width - 1 - half)
    c[..., 1] = np.clip(c[..., 1], half, height - 1 - half)
    return c


def extract_rois(flow3, keypoints, size: int = 5):
    """Cut a ``size × size`` patch of every channel around each keypoint.

    Vectorised gather (no Python loop over keypoints). Centres are the keypoints
    rounded half-up; near a border the patch is shifted inside the image (see
    :func:`roi_centres`).

    Args:
        flow3: motion map, channels (u, v, ε) (any number of channels works).
        keypoints: (x, y) in the pixel coordinates of ``flow3``.
        size: patch side, odd (default: 5).

    Shapes:
        flow3: (C, H, W) or batched (B, C, H, W).
        keypoints: (K, 2) or (B, K, 2).
        return: (K, C, size, size) or (B, K, C, size, size), same type (NumPy/torch) and
        dtype as ``flow3``.
    """
    is_torch = isinstance(flow3, torch.Tensor)
    x = flow3 if is_torch else np.asarray(flow3)
    batched = x.ndim == 4
    if x.ndim not in (3, 4):
        raise ValueError(f"flow3: expected (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    H, W = int(x.shape[-2]), int(x.shape[-1])
    c = roi_centres(keypoints, H, W, size)
    if batched and (c.ndim != 3 or c.shape[0] != x.shape[0]):
        raise ValueError(f"keypoints: expected (B={x.shape[0]}, K, 2) for batched flow3, got {c.shape}")
    if not batched and c.ndim != 2:
        raise ValueError(f"keypoints: expected (K, 2) for flow3 of shape {tuple(x.shape)}, got {c.shape}")
    off = np.arange(size) - size // 2
    rows = c[..., 1, None] + off  # (..., K, S)
    cols = c[..., 0, None] + off
    if is_torch:
        rows = torch.as_tensor(rows, device=x.device)
        cols = torch.as_tensor(cols, device=x.device)
    if not batched:
        # x[:, rows[K,S,1], cols[K,1,S]] -> (C, K, S, S)
        p = x[:, rows[:, :, None], cols[:, None, :]]
        return p.permute(1, 0, 2, 3).contiguous() if is_torch else np.ascontiguousarray(p.transpose(1, 0, 2, 3))
    B = x.shape[0]
    bidx = np.arange(B)[:, None, None, None]
    if is_torch:
        bidx = torch.as_tensor(bidx, device=x.device)
        xp = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        p = xp[bidx, rows[:, :, :, None], cols[:, :, None, :]]  # (B, K, S, S, C)
        return p.permute(0, 1, 4, 2, 3).contiguous()
    xp = x.transpose(0, 2, 3, 1)
    p = xp[bidx, rows[:, :, :, None], cols[:, :, None, :]]
    return np.ascontiguousarray(p.transpose(0, 1, 4, 2, 3))


def face_flow_map(flow3, size: int = 28):
    """Resize the whole-face motion map to ``size × size`` by area averaging.

    Area interpolation (mean over the source pixels each target pixel covers,
    ``torch.nn.functional.interpolate(mode="area")``) keeps the mean motion of
    each region instead of sampling single pixels.

    Args:
        flow3: motion map, channels (u, v, ε).
        size: output side (default: 28, the paper's global stream input).

    Shapes:
        flow3: (C, H, W) or (B, C, H, W).
        return: (C, size, size) or (B, C, size, size), float32, same type (NumPy/torch).
    """
    is_torch = isinstance(flow3, torch.Tensor)
    t = flow3 if is_torch else torch.from_numpy(np.ascontiguousarray(flow3))
    if t.ndim not in (3, 4):
        raise ValueError(f"flow3: expected (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    if size < 1:
        raise ValueError(f"size: expected a positive output side, got {size}")
    t4 = (t if t.ndim == 4 else t[None]).to(torch.float32)
    out = F.interpolate(t4, size=(size, size), mode="area")
    out = out if t.ndim == 4 else out[0]
    return out if is_torch else out.numpy()
