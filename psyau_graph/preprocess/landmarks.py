"""Stage 2: face detection and 68 landmarks (dlib layout), offline.

Default backend ``"dlib"``: dlib's HOG frontal face detector and the 68-point
shape predictor shipped by the ``face_recognition_models`` package. That package
is located with :func:`importlib.util.find_spec` and never imported (its import
needs ``pkg_resources``, gone from setuptools ≥ 81).

Per clip: the face is detected once, on the onset frame. Detection first runs on
a copy downscaled so its longest side is at most ``detect_max_side`` pixels (fast),
then at full resolution, then upsampled once (small faces); the first attempt that
finds a face wins. With several faces the largest box is taken and a warning says
so. The same box is then used on every other frame ("tracking" by a fixed box: a
micro-expression clip has a still head), see :func:`track_landmarks`.
:func:`preprocess_clip <psyau_graph.preprocess.pipeline.preprocess_clip>` predicts
landmarks on the onset frame only, because one alignment per clip is taken from it.

Optional backend ``"face_alignment"`` (package not installed by default): uses
only weights already in the torch hub cache; never downloads.
"""
from __future__ import annotations

import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "NoFaceError",
    "LandmarkBackendError",
    "FaceDetection",
    "dlib_predictor_path",
    "detect_face",
    "predict_landmarks",
    "detect_landmarks",
    "track_landmarks",
    "face_alignment_weights",
]

log = logging.getLogger(__name__)

_DETECTOR = None
_PREDICTOR = None
_FA_MODEL = None


class NoFaceError(RuntimeError):
    """No face found in a clip's onset frame."""


class LandmarkBackendError(RuntimeError):
    """A landmark backend cannot run (missing package or weights)."""


@dataclass
class FaceDetection:
    """A face box and its landmarks.

    Attributes:
        box: (left, top, right, bottom) in pixels of the full-resolution frame.
        landmarks: (68, 2) float32 (x, y), dlib order.
        num_faces: how many faces the detector found (the largest was kept).
        attempt: which detection attempt succeeded ("downscaled", "full", "upsampled").
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    num_faces: int = 1
    attempt: str = "full"


def dlib_predictor_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside ``face_recognition_models``."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkBackendError(
            "package face_recognition_models not found: install face-recognition-models "
            "(it ships shape_predictor_68_face_landmarks.dat)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / "shape_predictor_68_face_landmarks.dat"
        if p.is_file():
            return p
    raise LandmarkBackendError(
        f"shape_predictor_68_face_landmarks.dat not found under models/ of "
        f"{list(spec.submodule_search_locations)}")


def _dlib():
    """Module-level lazy singletons: (detector, predictor). Loading takes ~3 s once."""
    global _DETECTOR, _PREDICTOR
    if _DETECTOR is None or _PREDICTOR is None:
        try:
            import dlib
        except ImportError as exc:
            raise LandmarkBackendError(f"dlib is not installed (pip install dlib-bin): {exc}") from exc
        _DETECTOR = dlib.get_frontal_face_detector()
        _PREDICTOR = dlib.shape_predictor(str(dlib_predictor_path()))
    return _DETECTOR, _PREDICTOR


def _grey(image: np.ndarray, clip: str) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"clip {clip!r}: expected a uint8 image, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 3:
        import cv2

        return cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    if a.ndim != 2:
        raise ValueError(f"clip {clip!r}: expected an image (H, W) or (H, W, 3), got shape {a.shape}")
    return np.ascontiguousarray(a)


def detect_face(image: np.ndarray, *, clip: str = "<image>", detect_max_side: int = 320):
    """Find the largest face.

    Args:
        image: uint8 grey (H, W) or RGB (H, W, 3).
        clip: clip name for messages.
        detect_max_side: longest side of the downscaled copy tried first (default: 320;
            0 disables the downscaled attempt).

    Returns:
        ``(box, num_faces, attempt)``; box = (left, top, right, bottom) in full-resolution pixels.

    Raises:
        NoFaceError: no attempt found a face.
    """
    import cv2

    det, _ = _dlib()
    g = _grey(image, clip)
    H, W = g.shape
    attempts = []
    if detect_max_side and max(H, W) > detect_max_side:
        s = detect_max_side / max(H, W)
        attempts.append(("downscaled", cv2.resize(g, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA), s, 0))
    attempts += [("full", g, 1.0, 0), ("upsampled", g, 1.0, 1)]
    for label, img, s, up in attempts:
        rects = det(img, up)
        if len(rects):
            boxes = [(r.left() / s, r.top() / s, r.right() / s, r.bottom() / s) for r in rects]
            areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
            best = int(np.argmax(areas))
            if len(boxes) > 1:
                msg = f"clip {clip!r}: {len(boxes)} faces found, using the largest (box {tuple(round(v) for v in boxes[best])})"
                log.warning(msg)
                warnings.warn(msg, stacklevel=2)
            box = tuple(int(round(v)) for v in boxes[best])
            return box, len(boxes), label
    raise NoFaceError(f"clip {clip!r}: no face found (HOG detector, {H}×{W} image, tried "
                      f"{', '.join(a[0] for a in attempts)})")


def predict_landmarks(image: np.ndarray, box, *, clip: str = "<image>") -> np.ndarray:
    """dlib 68-point landmarks inside a given face box.

    Shapes:
        image: (H, W) uint8 grey or (H, W, 3) RGB; box: (left, top, right, bottom).
        return: (68, 2) float32 (x, y).
    """
    import dlib

    _, pred = _dlib()
    g = _grey(image, clip)
    l, t, r, b = (int(v) for v in box)
    shape = pred(g, dlib.rectangle(l, t, r, b))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def detect_landmarks(image: np.ndarray, *, backend: str = "dlib", clip: str = "<image>",
                     detect_max_side: int = 320) -> FaceDetection:
    """Detect the (largest) face and its 68 landmarks in one frame.

    Args:
        image: uint8 (H, W) grey or (H, W, 3) RGB.
        backend: "dlib" (default) or "face_alignment" (needs cached weights).
        clip: clip name for messages.
        detect_max_side: see :func:`detect_face`.

    Shapes:
        return.landmarks: (68, 2) float32.
    """
    if backend == "dlib":
        box, n, attempt = detect_face(image, clip=clip, detect_max_side=detect_max_side)
        return FaceDetection(box, predict_landmarks(image, box, clip=clip), n, attempt)
    if backend == "face_alignment":
        return _fa_detect(image, clip)
    raise ValueError(f"backend: expected 'dlib' or 'face_alignment', got {backend!r}")


def track_landmarks(frames: np.ndarray, box, *, clip: str = "<frames>") -> np.ndarray:
    """Landmarks on every frame from one fixed face box (the onset detection).

    Shapes:
        frames: (T, H, W) uint8; return: (T, 68, 2) float32.
    """
    return np.stack([predict_landmarks(f, box, clip=clip) for f in frames])


# ---------------------------------------------------------------- face-alignment backend
#: weight files face-alignment (2D FAN + SFD detector) loads from the torch hub cache
FA_WEIGHT_PATTERNS = {"landmark network (2DFAN-4)": "2DFAN4*.zip", "face detector (SFD)": "s3fd*.pth"}


def face_alignment_weights() -> dict[str, Path]:
    """The face-alignment weight files found in ``torch.hub.get_dir()/checkpoints``.

    Raises:
        LandmarkBackendError: a file is missing; the message says which file goes where.
    """
    import torch

    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    found, missing = {}, []
    for what, pattern in FA_WEIGHT_PATTERNS.items():
        hits = sorted(ckpt.glob(pattern)) if ckpt.is_dir() else []
        if hits:
            found[what] = hits[-1]
        else:
            missing.append(f"{what}: a file matching {pattern!r} (e.g. 2DFAN4-cd938726ad.zip, "
                           f"s3fd-619a316812.pth as published by face-alignment)")
    if missing:
        raise LandmarkBackendError(
            "face_alignment backend: weights not in the torch hub cache and downloads are disabled. "
            f"Put these files in {ckpt}:\n  " + "\n  ".join(missing))
    return found


def _fa_detect(image: np.ndarray, clip: str) -> FaceDetection:
    global _FA_MODEL
    if _FA_MODEL is None:
        face_alignment_weights()  # fail before importing / building anything
        try:
            import face_alignment
        except ImportError as exc:
            raise LandmarkBackendError(
                "face_alignment backend: package face-alignment is not installed "
                f"(pip install face-alignment): {exc}") from exc
        lt = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        _FA_MODEL = face_alignment.FaceAlignment(lt, device="cpu", flip_input=False)
    a = np.asarray(image)
    rgb = np.repeat(a[:, :, None], 3, 2) if a.ndim == 2 else a
    preds = _FA_MODEL.get_landmarks_from_image(rgb)
    if not preds:
        raise NoFaceError(f"clip {clip!r}: no face found (face_alignment backend)")
    if len(preds) > 1:
        warnings.warn(f"clip {clip!r}: {len(preds)} faces found, using the largest", stacklevel=2)
    spans = [np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for p in preds]
    lm = np.asarray(preds[int(np.argmax(spans))][:, :2], dtype=np.float32)
    box = (int(lm[:, 0].min()), int(lm[:, 1].min()), int(lm[:, 0].max()), int(lm[:, 1].max()))
    return FaceDetection(box, lm, len(preds), "face_alignment")
