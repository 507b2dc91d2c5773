"""Optical flow between grey frames: TV-L1 (ours, batched torch), DIS and Farnebäck (OpenCV).

All methods return the same convention: channel 0 = u (horizontal, x, along
columns), channel 1 = v (vertical, y, along rows), in pixels, such that

    apex(x + u, y + v) ≈ onset(x, y).

This is OpenCV's convention for ``calcOpticalFlowFarneback`` and
``DISOpticalFlow.calc`` (their ``(H, W, 2)`` output is transposed to
``(2, H, W)``) and skimage's ``optical_flow_tvl1`` with its (v, u) channels
swapped. The tests check all three on a known sub-pixel shift.

Inputs: ``uint8`` grey (0..255) or floating-point grey in [0, 1], numpy arrays or
torch tensors. Float images slightly outside [0, 1] (interpolation overshoot)
are accepted; anything beyond [-0.5, 1.5] is rejected as probably on the 0..255
scale. OpenCV's methods work on ``uint8``: float input is clipped to [0, 1] and
rounded to 0..255 for them.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from .tvl1 import tvl1_flow

__all__ = ["METHODS", "compute_flow", "compute_flow_batch", "apex_window_flow", "match_brightness", "FlowError"]

METHODS = ("tvl1", "dis", "farneback")
Array = Union[np.ndarray, torch.Tensor]

_FLOAT_RANGE = (-0.5, 1.5)

#: OpenCV DIS presets by name.
_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
#: Defaults for DIS at 128² (docs/optical_flow.md, "DIS on real faces": 16-px patches
#: lower the noise floor on still faces by about a third against 8-px ones and keep the
#: peak of a local sub-pixel motion; finest scale 1 would lower it more but halves that
#: peak; stride 8 (half-overlapping patches) is as accurate as 3 and as fast as patch 8 at
#: stride 3). These override every setting a preset makes, so ``preset`` changes nothing else.
DIS_DEFAULTS = dict(preset="medium", finest_scale=0, patch_size=16, patch_stride=8,
                    grad_descent_iterations=25, variational_refinement_iterations=5)
#: Defaults for Farnebäck at 128².
FARNEBACK_DEFAULTS = dict(pyr_scale=0.5, levels=3, winsize=11, iterations=5, poly_n=5,
                          poly_sigma=1.1, flags=0)


class FlowError(FloatingPointError):
    """The flow computation produced unusable (non-finite) values.

    A subclass of :class:`FloatingPointError`, which :func:`tvl1_flow` raises itself.
    """


# ---------------------------------------------------------------- input handling


def _to_numpy(img: Array, name: str) -> np.ndarray:
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(img).__name__}")
    return img


def _check_images(img: np.ndarray, name: str, ndim: int) -> None:
    what = "(H, W)" if ndim == 2 else "(B, H, W)" if ndim == 3 else "(T, H, W)"
    if img.ndim != ndim:
        raise ValueError(f"{name} must be a grey image of shape {what}, got shape {img.shape}")
    if img.size == 0:
        raise ValueError(f"{name} is empty: shape {img.shape}")
    if min(img.shape[-2:]) < 2:
        raise ValueError(f"{name} must be at least 2×2 pixels, got {img.shape[-2:]}")
    if img.dtype == np.uint8:
        return
    if not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 (0..255) or float grey in [0, 1], got dtype {img.dtype}")
    if not np.isfinite(img).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(img.min()), float(img.max())
    if lo < _FLOAT_RANGE[0] or hi > _FLOAT_RANGE[1]:
        raise ValueError(
            f"{name} is float with values in [{lo:.3g}, {hi:.3g}]; expected grey in [0, 1] "
            "(pass uint8 for 0..255 images)"
        )


def _as_float(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32, copy=False)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8))


def _check_method(method: str) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"unknown flow method {method!r}; expected one of {METHODS}")
    return method.lower()


def _check_output(flow: np.ndarray, method: str) -> np.ndarray:
    if not np.isfinite(flow).all():
        bad = int((~np.isfinite(flow)).sum())
        raise FlowError(f"{method} flow has {bad} non-finite values")
    return flow


def match_brightness(onset: Array, apex: Array) -> tuple[np.ndarray, np.ndarray]:
    """Give ``apex`` the global mean and standard deviation of ``onset`` (gain and offset).

    TV-L1 and Farnebäck assume constant brightness: a lighting flicker of a few percent
    between the frames shows up as flow larger than a micro-expression (see
    docs/optical_flow.md). This removes a global gain/offset change before the flow; it
    does not remove local lighting changes. DIS normalises each patch's mean itself.

    Args:
        onset, apex: grey frames, uint8 or float in [0, 1], same shape.

    Returns:
        ``(onset, apex)`` as float32 in [0, 1] scale; ``apex`` is
        ``(apex - mean(apex)) * std(onset) / std(apex) + mean(onset)``, clipped to [-0.5, 1.5].

    Shapes:
        - onset, apex, outputs: :math:`(H, W)` or :math:`(B, H, W)` (per image)

    Raises:
        ValueError: different shapes, or a constant ``apex`` (no contrast to match).
    """
    a, b = _to_numpy(onset, "onset"), _to_numpy(apex, "apex")
    _check_images(a, "onset", a.ndim if a.ndim in (2, 3) else 2)
    _check_images(b, "apex", a.ndim if a.ndim in (2, 3) else 2)
    if a.shape != b.shape:
        raise ValueError(f"onset and apex must have the same shape, got {a.shape} and {b.shape}")
    a, b = _as_float(a), _as_float(b)
    axes = (-2, -1)
    sa, sb = a.std(axis=axes, keepdims=True), b.std(axis=axes, keepdims=True)
    if (sb < 1e-6).any():
        raise ValueError("apex is constant: there is no brightness to match")
    out = (b - b.mean(axis=axes, keepdims=True)) * (sa / sb) + a.mean(axis=axes, keepdims=True)
    return a, np.clip(out, _FLOAT_RANGE[0], _FLOAT_RANGE[1]).astype(np.float32)


_match = match_brightness  # the name the flow functions' keyword hides


# ---------------------------------------------------------------- OpenCV methods


def _dis_flow(a: np.ndarray, b: np.ndarray, params: dict) -> np.ndarray:
    import cv2

    opts = {**DIS_DEFAULTS, **params}
    unknown = set(opts) - set(DIS_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown DIS parameter(s) {sorted(unknown)}; known: {sorted(DIS_DEFAULTS)}")
    preset = opts["preset"]
    if preset not in _DIS_PRESETS:
        raise ValueError(f"DIS preset must be one of {sorted(_DIS_PRESETS)}, got {preset!r}")
    dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    dis.setFinestScale(int(opts["finest_scale"]))
    dis.setPatchSize(int(opts["patch_size"]))
    dis.setPatchStride(int(opts["patch_stride"]))
    dis.setGradientDescentIterations(int(opts["grad_descent_iterations"]))
    dis.setVariationalRefinementIterations(int(opts["variational_refinement_iterations"]))
    try:
        flow = dis.calc(_as_uint8(a), _as_uint8(b), None)  # (H, W, 2): (dx, dy)
    except cv2.error as exc:  # e.g. images under 12 px on both sides
        raise ValueError(f"OpenCV DIS failed on images of shape {a.shape}: {str(exc).strip()}") from exc
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def _farneback_flow(a: np.ndarray, b: np.ndarray, params: dict) -> np.ndarray:
    import cv2

    opts = {**FARNEBACK_DEFAULTS, **params}
    unknown = set(opts) - set(FARNEBACK_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown Farneback parameter(s) {sorted(unknown)}; known: {sorted(FARNEBACK_DEFAULTS)}")
    try:
        flow = cv2.calcOpticalFlowFarneback(
            _as_uint8(a), _as_uint8(b), None, float(opts["pyr_scale"]), int(opts["levels"]),
            int(opts["winsize"]), int(opts["iterations"]), int(opts["poly_n"]),
            float(opts["poly_sigma"]), int(opts["flags"]),
        )
    except cv2.error as exc:
        raise ValueError(f"OpenCV Farneback failed on images of shape {a.shape} with {opts}: "
                         f"{str(exc).strip()}") from exc
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def _tvl1_batch(a: np.ndarray, b: np.ndarray, params: dict) -> np.ndarray:
    p = params.pop("params", None)
    device = params.pop("device", None)  # TV-L1 runs where its input tensors are (e.g. "cuda")
    if device is not None:
        from ..train.device import check_device

        device = check_device(device)
    flow = tvl1_flow(torch.tensor(_as_float(a), device=device), torch.tensor(_as_float(b), device=device),
                     p, **params)
    return flow.cpu().numpy()


# ---------------------------------------------------------------- public API


def compute_flow(onset: Array, apex: Array, method: str = "tvl1", *, match_brightness: bool = False,
                 **params) -> np.ndarray:
    """Optical flow from ``onset`` to ``apex``.

    Args:
        onset: reference grey frame, uint8 or float in [0, 1].
        apex: moving grey frame, same shape.
        method: ``"tvl1"`` (default; :func:`tvl1_flow`), ``"dis"`` or ``"farneback"``.
        match_brightness: first give the apex the onset's global mean and contrast
            (:func:`match_brightness`); use it where the lighting flickers between frames.
            (default: ``False``)
        **params: method parameters: :class:`TVL1Params` fields (or ``params=TVL1Params(...)``)
            and ``device`` (torch device to run on, e.g. ``"cuda"``) for TV-L1, keys of
            ``DIS_DEFAULTS`` / ``FARNEBACK_DEFAULTS`` for the others.

    Returns:
        float32 flow, channel 0 = u (x), 1 = v (y): ``apex(x+u, y+v) ≈ onset(x, y)``.

    Shapes:
        - onset, apex: :math:`(H, W)`
        - output: :math:`(2, H, W)`

    Raises:
        TypeError, ValueError: bad input (type, shape, dtype, range, non-finite) or method.
        FlowError: the computed flow is not finite.
    """
    method = _check_method(method)
    a, b = _to_numpy(onset, "onset"), _to_numpy(apex, "apex")
    _check_images(a, "onset", 2)
    _check_images(b, "apex", 2)
    if a.shape != b.shape:
        raise ValueError(f"onset and apex must have the same shape, got {a.shape} and {b.shape}")
    if match_brightness:
        a, b = _match(a, b)
    if method == "tvl1":
        flow = _tvl1_batch(a[None], b[None], dict(params))[0]
    elif method == "dis":
        flow = _dis_flow(a, b, params)
    else:
        flow = _farneback_flow(a, b, params)
    return _check_output(flow, method)


def compute_flow_batch(onsets: Array, apexes: Array, method: str = "tvl1", *, match_brightness: bool = False,
                       **params) -> np.ndarray:
    """Optical flow for a batch of pairs; TV-L1 runs batched in torch, DIS/Farnebäck loop.

    Args:
        onsets: reference grey frames, uint8 or float in [0, 1].
        apexes: moving grey frames, same shape.
        method: ``"tvl1"`` (default), ``"dis"`` or ``"farneback"``.
        match_brightness: as for :func:`compute_flow`, per pair. (default: ``False``)
        **params: as for :func:`compute_flow`.

    Returns:
        float32 flows, channel 0 = u (x), 1 = v (y).

    Shapes:
        - onsets, apexes: :math:`(B, H, W)`
        - output: :math:`(B, 2, H, W)`
    """
    method = _check_method(method)
    a, b = _to_numpy(onsets, "onsets"), _to_numpy(apexes, "apexes")
    _check_images(a, "onsets", 3)
    _check_images(b, "apexes", 3)
    if a.shape != b.shape:
        raise ValueError(f"onsets and apexes must have the same shape, got {a.shape} and {b.shape}")
    if match_brightness:
        a, b = _match(a, b)
    if method == "tvl1":
        flow = _tvl1_batch(a, b, dict(params))
    else:
        fn = _dis_flow if method == "dis" else _farneback_flow
        flow = np.stack([fn(x, y, params) for x, y in zip(a, b)])
    return _check_output(flow, method)


def apex_window_indices(num_frames: int, onset_idx: int, apex_idx: int, window: int = 1) -> list[int]:
    """Frame indices averaged by :func:`apex_window_flow`.

    ``apex - window … apex + window``, clipped to the clip ``[0, num_frames - 1]``
    and to frames after the onset (the onset→onset flow is zero by definition and
    would only dilute the average).

    Raises:
        ValueError: indices outside the clip, ``apex_idx <= onset_idx`` or ``window < 0``.
    """
    for name, val in (("num_frames", num_frames), ("onset_idx", onset_idx), ("apex_idx", apex_idx),
                      ("window", window)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool):
            raise TypeError(f"{name} must be an int, got {val!r}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if not 0 <= onset_idx < num_frames:
        raise ValueError(f"onset_idx {onset_idx} outside the clip of {num_frames} frames")
    if not 0 <= apex_idx < num_frames:
        raise ValueError(f"apex_idx {apex_idx} outside the clip of {num_frames} frames")
    if apex_idx <= onset_idx:
        raise ValueError(f"apex_idx ({apex_idx}) must come after onset_idx ({onset_idx})")
    lo = max(apex_idx - window, onset_idx + 1)
    hi = min(apex_idx + window, num_frames - 1)
    return list(range(lo, hi + 1))


def apex_window_flow(frames: Union[Array, Sequence[Array]], onset_idx: int, apex_idx: int,
                     window: int = 1, method: str = "tvl1", **params) -> np.ndarray:
    """Onset→frame flow averaged over the frames around the apex (SPEC §3).

    The flows onset→f for f in ``apex - window … apex + window`` (clipped to the
    clip and to frames after the onset, see :func:`apex_window_indices`) are
    averaged. TV-L1 computes them as one batch. ``window=0`` is the plain
    onset→apex flow.

    Args:
        frames: the clip's grey frames, a (T, H, W) array/tensor or a sequence of (H, W).
        onset_idx: index of the onset frame in ``frames``.
        apex_idx: index of the apex frame (> onset_idx).
        window: half-width of the apex window in frames. (default: ``1``)
        method: ``"tvl1"`` (default), ``"dis"`` or ``"farneback"``.
        **params: as for :func:`compute_flow` (``match_brightness`` included).

    Returns:
        float32 averaged flow (u, v).

    Shapes:
        - frames: :math:`(T, H, W)`
        - output: :math:`(2, H, W)`
    """
    method = _check_method(method)
    if isinstance(frames, (list, tuple)):
        if len(frames) == 0:
            raise ValueError("frames is empty")
        arrs = [_to_numpy(f, f"frames[{i}]") for i, f in enumerate(frames)]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise ValueError(f"frames have different shapes: {sorted(shapes)}")
        dtypes = {a.dtype for a in arrs}
        if len(dtypes) != 1:
            raise ValueError(f"frames have different dtypes: {sorted(map(str, dtypes))}")
        frames = np.stack(arrs)
    else:
        frames = _to_numpy(frames, "frames")
    _check_images(frames, "frames", 3)
    idx = apex_window_indices(len(frames), onset_idx, apex_idx, window)
    onsets = np.repeat(frames[onset_idx][None], len(idx), axis=0)
    flows = compute_flow_batch(onsets, frames[idx], method, **params)
    return flows.mean(axis=0, dtype=np.float64).astype(np.float32)
