"""Tiny astronaut-based clips for the preprocessing tests (written by the tests themselves)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def astronaut_grey(size: int = 256) -> np.ndarray:
    """The astronaut photo cropped around her face (face ≈ 90 px wide), grey uint8 (size, size)."""
    from skimage import data

    g = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    top, left = 0, 94  # face box in the full photo ≈ (179, 83)-(266, 170)
    return np.ascontiguousarray(g[top:top + size, left:left + size])


def mouth_pull_frames(n: int = 6, amp: float = 2.0, size: int = 256) -> np.ndarray:
    """``n`` frames where a Gaussian bump around the mouth moves right by up to ``amp`` px.

    Frame k moves by amp * k / (n - 2) (capped at amp), so the apex is frame n - 2.
    The true flow onset → apex is u ≈ +amp at the mouth, 0 on the forehead.

    Shapes:
        return: (n, size, size) uint8.
    """
    g = astronaut_grey(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bump = np.exp(-((xx - 127) ** 2 + (yy - 160) ** 2) / (2 * 14.0 ** 2)).astype(np.float32)
    out = []
    for k in range(n):
        a = min(amp, amp * k / max(n - 2, 1))
        out.append(cv2.remap(g, xx - a * bump, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


def write_clip(folder: Path, frames: np.ndarray, first: int = 1, fmt: str = "img{n}.jpg") -> list[int]:
    """Write frames as images numbered first, first+1, ...; returns the numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    nums = list(range(first, first + len(frames)))
    for n, f in zip(nums, frames):
        assert cv2.imwrite(str(folder / fmt.format(n=n)), f)
    return nums
