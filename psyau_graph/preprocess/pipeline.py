"""One clip through every stage: frames → face → alignment → flow + strain → keypoints → ROIs.

:func:`preprocess_clip` chains :mod:`.frames`, :mod:`.landmarks`, :mod:`.align`,
:mod:`.flow`/:mod:`.strain`, :mod:`.keypoints` and :mod:`.rois` and returns a
:class:`ClipFeatures`. Choices made here:

- landmarks are detected on the onset frame only; one similarity transform from
  them aligns every frame used (onset and the apex window);
- the flow onset → each apex-window frame is computed on the 128×128 crops
  (one batched call), the flows are averaged, then the strain of the averaged
  flow is taken (ε of the mean flow, so ε stays the strain of the u, v stored);
- keypoints are the 65 points mapped from the aligned onset landmarks.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .align import AlignConfig, alignment_matrix, transform_points, warp_frames
from .frames import open_clip, select_frames
from .keypoints import landmarks_to_keypoints
from .landmarks import detect_landmarks
from .rois import extract_rois, face_flow_map

__all__ = ["ClipFeatures", "PreparedClip", "preprocess_clip", "prepare_clip", "finish_clip",
           "flow_batch", "flow_and_strain"]

log = logging.getLogger(__name__)
FLOW_METHODS = ("tvl1", "dis", "farneback")


@dataclass
class ClipFeatures:
    """Everything the network needs from one clip (plus what produced it).

    Attributes:
        rois: (65, 3, 5, 5) float32 patches of (u, v, ε) around the keypoints.
        flow28: (3, 28, 28) float32 whole-face (u, v, ε) map, area-resized.
        keypoints: (65, 2) float32 (x, y) in the 128×128 crop.
        flow: (3, 128, 128) float32 (u, v, ε) on the crop.
        onset_crop: (128, 128) uint8 aligned onset frame.
        apex_crop: (128, 128) uint8 aligned apex frame.
        landmarks: (68, 2) float32 dlib landmarks in the crop.
        matrix: (2, 3) float64 frame → crop similarity transform.
        onset, apex: frame numbers used; apex_numbers: the averaged apex window.
        face_box: (left, top, right, bottom) in the onset frame.
        flow_method: "tvl1" | "dis" | "farneback".
        notes: changes made to the annotation (e.g. onset == apex) and warnings.
        timings: seconds per stage.
        face_selection: which face was taken and why (largest / nearest the centre / user box).
    """

    rois: np.ndarray
    flow28: np.ndarray
    keypoints: np.ndarray
    flow: np.ndarray
    onset_crop: np.ndarray
    apex_crop: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray
    onset: int
    apex: int
    apex_numbers: list[int]
    face_box: tuple[int, int, int, int]
    flow_method: str
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    face_selection: str = ""


def flow_batch(onsets: np.ndarray, apexes: np.ndarray, method: str = "tvl1", **params) -> np.ndarray:
    """Optical flow for a batch of grey pairs via :func:`psyau_graph.preprocess.flow.compute_flow_batch`.

    Shapes:
        onsets, apexes: (B, H, W) uint8; return: (B, 2, H, W) float32 (u, v).
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"flow: expected one of {FLOW_METHODS}, got {method!r}")
    # No stand-in here: a missing or broken flow module is an error, so that the
    # ``flow_method`` recorded with each clip is always the method that ran.
    from .flow import compute_flow_batch

    return compute_flow_batch(onsets, apexes, method, **params)


def flow_and_strain(flow2: np.ndarray) -> np.ndarray:
    """(u, v) → (u, v, ε) with ε = sqrt(u_x² + v_y² + ½(u_y + v_x)²).

    Shapes:
        flow2: (..., 2, H, W); return: (..., 3, H, W) float32.
    """
    try:
        from .strain import flow_with_strain
    except ImportError as exc:
        log.warning("psyau_graph.preprocess.strain unavailable (%s); using numpy.gradient", exc)
        u, v = flow2[..., 0, :, :], flow2[..., 1, :, :]
        ux, uy = np.gradient(u, axis=-1), np.gradient(u, axis=-2)
        vx, vy = np.gradient(v, axis=-1), np.gradient(v, axis=-2)
        eps = np.sqrt(ux ** 2 + vy ** 2 + 0.5 * (uy + vx) ** 2)
        return np.concatenate([flow2, eps[..., None, :, :]], axis=-3).astype(np.float32)
    return np.asarray(flow_with_strain(flow2), dtype=np.float32)


#: frame rate at which ``apex_window`` is given in frames (CASME II and SAMM: 200 fps).
REFERENCE_FPS = 200


def apex_window_frames(apex_window: int, fps: float | None = None, reference_fps: float = REFERENCE_FPS) -> int:
    """± frames of the apex window for a clip recorded at ``fps``.

    ``apex_window`` is a number of frames at ``reference_fps`` (200 fps: ±1 frame =
    ±5 ms); a clip at another frame rate gets the same time span, rounded half up to
    whole frames (300 fps: ±2, 500 fps: ±3 for ``apex_window=1``). ``fps=None`` (the
    sheet gives no frame rate) keeps ``apex_window`` frames.
    """
    if apex_window < 0:
        raise ValueError(f"apex_window must be >= 0, got {apex_window}")
    if fps is None:
        return int(apex_window)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return int(math.floor(apex_window * float(fps) / reference_fps + 0.5))


def preprocess_clip(frames, onset: int, apex: int, *, flow: str = "tvl1", apex_window: int = 1,
                    fps: float | None = None, landmarks_backend: str = "dlib", name: str | None = None,
                    align: AlignConfig | None = None, roi_size: int = 5, map_size: int = 28,
                    detect_max_side: int = 320, flow_params: dict | None = None,
                    face="largest") -> ClipFeatures:
    """Run one clip through the whole pipeline.

    Args:
        frames: a clip source (folder, video, path list, ``(number, path)`` list, arrays, ``Clip``),
            see :func:`psyau_graph.preprocess.frames.open_clip`.
        onset, apex: annotated frame numbers.
        flow: "tvl1" (default), "dis" or "farneback".
        apex_window: ± frames averaged around the apex (default: 1; 0 = apex only), at
            :data:`REFERENCE_FPS`; scaled by ``fps`` (:func:`apex_window_frames`).
        fps: the clip's frame rate when the sheet gives one (DFME), else None.
        landmarks_backend: "dlib" (default) or "face_alignment".
        name: clip name for messages.
        align: crop geometry (default: :class:`AlignConfig()`, 128×128).
        roi_size: ROI side (default: 5).
        map_size: whole-face map side (default: 28).
        detect_max_side: longest side for the fast downscaled face detection (default: 320).
        flow_params: extra keyword arguments for the flow method.
        face: which face of the onset frame: "largest" (default), "centre", or a box
            (left, top, right, bottom) / "L,T,R,B" in onset-frame pixels (see
            :func:`psyau_graph.preprocess.landmarks.detect_face`).

    Shapes:
        see :class:`ClipFeatures` (S = ``align.size``, default 128).

    Raises:
        FrameError / MissingFrameError: bad or missing frames; NoFaceError: no face;
        FloatingPointError: non-finite flow.
    """
    if flow not in FLOW_METHODS:
        raise ValueError(f"flow: expected one of {FLOW_METHODS}, got {flow!r}")
    prep = prepare_clip(frames, onset, apex, apex_window=apex_window, fps=fps,
                        landmarks_backend=landmarks_backend, name=name, align=align,
                        detect_max_side=detect_max_side, face=face)
    t0 = time.perf_counter()
    n = len(prep.apex_crops)
    f2 = flow_batch(np.repeat(prep.onset_crop[None], n, 0), prep.apex_crops, flow, **(flow_params or {}))
    prep.timings["flow"] = time.perf_counter() - t0
    return finish_clip(prep, f2, flow_method=flow, roi_size=roi_size, map_size=map_size)


@dataclass
class PreparedClip:
    """A clip after stages 1–3 (frames, landmarks, alignment), ready for the flow.

    Attributes:
        name: clip name; onset_crop: (S, S) uint8; apex_crops: (N, S, S) uint8 (apex window);
        landmarks: (68, 2) float32 in the crop; matrix: (2, 3); onset, apex, apex_numbers,
        face_box, notes, timings, face_selection: as in :class:`ClipFeatures`.
    """

    name: str
    onset_crop: np.ndarray
    apex_crops: np.ndarray
    landmarks: np.ndarray
    matrix: np.ndarray
    onset: int
    apex: int
    apex_numbers: list[int]
    face_box: tuple[int, int, int, int]
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    face_selection: str = ""


def prepare_clip(frames, onset: int, apex: int, *, apex_window: int = 1, fps: float | None = None,
                 landmarks_backend: str = "dlib",
                 name: str | None = None, align: AlignConfig | None = None,
                 detect_max_side: int = 320, face="largest") -> PreparedClip:
    """Stages 1–3 of :func:`preprocess_clip`: select frames, detect the face, align and crop.

    Lets a caller batch the flow of many clips in one call (see ``preprocess_dataset``).

    Shapes:
        return.onset_crop: (S, S) uint8; return.apex_crops: (N, S, S) uint8, N = apex-window size.
    """
    cfg = align or AlignConfig()
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    clip = open_clip(frames, name=name)
    sel = select_frames(clip, onset, apex, apex_window=apex_window_frames(apex_window, fps))
    t["frames"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    det = detect_landmarks(sel.onset_image, backend=landmarks_backend, clip=clip.name,
                           detect_max_side=detect_max_side, face=face)
    notes = list(sel.notes)
    if det.num_faces > 1:
        notes.append(f"{det.num_faces} faces found in the onset frame; used the {det.selection}")
    t["landmarks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    M = alignment_matrix(det.landmarks, cfg)
    onset_crop = warp_frames(sel.onset_image, M, cfg.size)
    apex_crops = warp_frames(sel.apex_images, M, cfg.size)
    lm_crop = transform_points(det.landmarks, M)
    t["align"] = time.perf_counter() - t0
    return PreparedClip(clip.name, onset_crop, apex_crops, lm_crop, M, sel.onset, sel.apex,
                        list(sel.apex_numbers), det.box, notes, t, det.selection)


def finish_clip(prep: PreparedClip, flows: np.ndarray, *, flow_method: str, roi_size: int = 5,
                map_size: int = 28) -> ClipFeatures:
    """Stages 4–6: average the apex-window flows, add strain, cut ROIs and the small map.

    Shapes:
        flows: (N, 2, S, S) flows onset → each ``prep.apex_crops`` frame.
    """
    f2 = np.asarray(flows, dtype=np.float32)
    n = len(prep.apex_crops)
    if f2.ndim != 4 or f2.shape[0] != n or f2.shape[1] != 2:
        raise ValueError(f"flows: expected ({n}, 2, H, W) for clip {prep.name!r}, got {f2.shape}")
    t = prep.timings
    t0 = time.perf_counter()
    flow3 = flow_and_strain(f2.mean(axis=0))
    if not np.all(np.isfinite(flow3)):
        raise FloatingPointError(f"clip {prep.name!r}: non-finite values in the {flow_method} flow / strain")
    kp = landmarks_to_keypoints(prep.landmarks)
    rois = extract_rois(flow3, kp, roi_size).astype(np.float32)
    flow28 = face_flow_map(flow3, map_size).astype(np.float32)
    t["rois"] = time.perf_counter() - t0
    apex_pos = prep.apex_numbers.index(prep.apex) if prep.apex in prep.apex_numbers else n // 2
    return ClipFeatures(
        rois=rois, flow28=flow28, keypoints=kp.astype(np.float32), flow=flow3.astype(np.float32),
        onset_crop=prep.onset_crop, apex_crop=prep.apex_crops[apex_pos], landmarks=prep.landmarks,
        matrix=prep.matrix, onset=prep.onset, apex=prep.apex, apex_numbers=list(prep.apex_numbers),
        face_box=prep.face_box, flow_method=flow_method, notes=list(prep.notes), timings=t,
        face_selection=prep.face_selection)
