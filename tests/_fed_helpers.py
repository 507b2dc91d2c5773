"""Helpers for the federated tests: a tiny clip cache in the preprocessing layout."""
from __future__ import annotations

from pathlib import Path

import torch

EMOTIONS = ("positive", "negative", "surprise")


def make_clip_cache(root: Path, subjects=("s01", "s02", "s03", "s04"), clips_per_subject: int = 6,
                    seed: int = 0, dataset: str = "synth") -> Path:
    """Random-feature clips (class-dependent mean) written as ``clips/<ds>/<subject>/<clip>.pt``."""
    g = torch.Generator().manual_seed(seed)
    for si, s in enumerate(subjects):
        d = root / "clips" / dataset / s
        d.mkdir(parents=True, exist_ok=True)
        for c in range(clips_per_subject):
            y = (si + c) % len(EMOTIONS)
            rois = torch.randn(65, 3, 5, 5, generator=g) * 0.5 + y
            flow28 = torch.randn(3, 28, 28, generator=g) * 0.5 + y
            torch.save({"rois": rois, "flow28": flow28,
                        "keypoints": torch.rand(65, 2, generator=g) * 128,
                        "flow": torch.zeros(3, 8, 8, dtype=torch.float16),
                        "meta": {"dataset": dataset, "subject": s, "clip": f"c{c}", "onset": 0,
                                 "apex": 1, "offset": 2, "aus": [1, 2] if y == 2 else [12],
                                 "emotion": EMOTIONS[y], "flow_method": "dis"}},
                       d / f"c{c}.pt")
    return root
