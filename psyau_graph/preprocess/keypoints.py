"""The 65 FED-PsyAU keypoints and the four ROI groups (paper §4.1, Table 1).

The paper refines dlib's 68 landmarks into 65 keypoints: 10 jaw-contour points
are dropped and 7 midpoints are added in the brow and cheek regions. Which ones
is not published; our choice lives as data in ``priors/keypoints65.json`` (each
keypoint = the mean of one or two dlib points, with an anatomical reason) and
the ROI-group membership in ``priors/roi_groups.json`` (group g → keypoint
indices, sizes 23/48/38/52 as in the paper). See ``docs/keypoints.md``.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

NUM_KEYPOINTS = 65
NUM_LANDMARKS = 68
GROUP_SIZES = {1: 23, 2: 48, 3: 38, 4: 52}

__all__ = [
    "NUM_KEYPOINTS",
    "GROUP_SIZES",
    "load_prior_json",
    "keypoint_spec",
    "keypoint_names",
    "keypoint_matrix",
    "landmarks_to_keypoints",
    "roi_groups",
    "roi_group_info",
]


def _priors_dir_file(name: str) -> Any:
    """Locate a data file of the packaged ``priors/`` folder (installed or source tree)."""
    try:
        from importlib.resources import files

        candidate = files("psyau_graph._priors").joinpath(name)
        if candidate.is_file():
            return candidate
    except (ModuleNotFoundError, FileNotFoundError, TypeError):
        pass  # not installed as a package: fall back to the source tree below
    path = Path(__file__).resolve().parents[2] / "priors" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"priors data file {name!r} not found in package psyau_graph._priors nor at {path}"
        )
    return path


def load_prior_json(name: str) -> dict:
    """Read ``priors/<name>`` (a JSON file) and return the parsed object."""
    return json.loads(_priors_dir_file(name).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def keypoint_spec() -> tuple[dict, ...]:
    """The 65 keypoint records of ``keypoints65.json`` (index, name, kind, dlib, region).

    Validated on load: 65 records in index order, dlib indices in 0..67.
    """
    doc = load_prior_json("keypoints65.json")
    kps = doc.get("keypoints")
    if not isinstance(kps, list) or len(kps) != NUM_KEYPOINTS:
        raise ValueError(f"keypoints65.json: expected {NUM_KEYPOINTS} keypoints, got "
                         f"{None if kps is None else len(kps)}")
    for i, k in enumerate(kps):
        if k.get("index") != i:
            raise ValueError(f"keypoints65.json: record {i} has index {k.get('index')!r}")
        src = k.get("dlib")
        if not src or any(not (0 <= int(d) < NUM_LANDMARKS) for d in src):
            raise ValueError(f"keypoints65.json: keypoint {i} has bad dlib sources {src!r}")
    return tuple(kps)


def keypoint_names() -> list[str]:
    """Names of the 65 keypoints in order (``dlib<j>`` for kept dlib points)."""
    return [k["name"] for k in keypoint_spec()]


@lru_cache(maxsize=1)
def _matrix() -> np.ndarray:
    W = np.zeros((NUM_KEYPOINTS, NUM_LANDMARKS), dtype=np.float64)
    for k in keypoint_spec():
        for d in k["dlib"]:
            W[k["index"], int(d)] = 1.0 / len(k["dlib"])
    W.setflags(write=False)
    return W


def keypoint_matrix() -> np.ndarray:
    """The (65, 68) averaging matrix W with keypoints = W @ landmarks (rows sum to 1)."""
    return _matrix().copy()


def landmarks_to_keypoints(lm68: np.ndarray) -> np.ndarray:
    """Map dlib 68 landmarks to the 65 FED-PsyAU keypoints.

    Args:
        lm68: landmarks in dlib order, (x, y) per point.

    Shapes:
        lm68: (68, 2) or batched (..., 68, 2).
        return: (65, 2) or (..., 65, 2), float32.
    """
    a = np.asarray(lm68, dtype=np.float64)
    if a.ndim < 2 or a.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"lm68: expected shape (..., 68, 2), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("lm68: contains non-finite coordinates")
    return np.einsum("kl,...lc->...kc", _matrix(), a).astype(np.float32)


@lru_cache(maxsize=1)
def _groups() -> tuple[tuple[int, tuple[int, ...], dict], ...]:
    doc = load_prior_json("roi_groups.json")
    groups = doc.get("groups")
    if not isinstance(groups, dict) or sorted(groups) != ["1", "2", "3", "4"]:
        raise ValueError("roi_groups.json: expected groups '1'..'4'")
    out = []
    for key in sorted(groups, key=int):
        g = int(key)
        rec = groups[key]
        ks = tuple(int(k) for k in rec["keypoints"])
        if len(ks) != GROUP_SIZES[g]:
            raise ValueError(f"roi_groups.json: group {g} has {len(ks)} keypoints, "
                             f"expected {GROUP_SIZES[g]}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"roi_groups.json: group {g} lists a keypoint twice")
        bad = [k for k in ks if not 0 <= k < NUM_KEYPOINTS]
        if bad:
            raise ValueError(f"roi_groups.json: group {g} has indices outside 0..64: {bad}")
        out.append((g, ks, {k: v for k, v in rec.items() if k != "keypoints"}))
    return tuple(out)


def roi_groups() -> dict[int, list[int]]:
    """ROI group g (1..4) → sorted keypoint indices (sizes 23/48/38/52; groups overlap).

    Returns a fresh dict each call (safe to mutate).
    """
    return {g: list(ks) for g, ks, _ in _groups()}


def roi_group_info() -> dict[int, dict]:
    """Group g → its metadata (``aus``, ``primary``, ``secondary``, ``size``, ``description``)."""
    return {g: dict(info) for g, _, info in _groups()}
