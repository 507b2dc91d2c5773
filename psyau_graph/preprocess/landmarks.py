"""Stage 2: face detection and 68 landmarks (dlib layout), offline.

Default backend ``"dlib"``: dlib's HOG frontal face detector and the 68-point
shape predictor shipped by the ``face_recognition_models`` package. That package
is located with :func:`importlib.util.find_spec` and never imported (its import
needs ``pkg_resources``, gone from setuptools ≥ 81).

Per clip: the face is detected once, on the onset frame. Detection runs on a copy
downscaled so its longest side is at most ``detect_max_side`` pixels, at full
resolution, and upsampled once (small faces); ALL attempts run and their faces are
pooled (a face found by several attempts counts once), so a large face the
downscaled pass misses is not lost to a small one it finds. The face kept is the
largest (default), the one nearest the frame centre (``face="centre"``), or a box
given by the user (``face=(l, t, r, b)``); a warning names the choice when several
faces were found, and ``FaceDetection.selection`` records it. The same box is then
used on every other frame ("tracking" by a fixed box: a micro-expression clip has a
still head), see :func:`track_landmarks`.
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

from ..errors import PsyauError

__all__ = [
    "NoFaceError",
    "FaceBoxError",
    "FACE_MODES",
    "parse_face_box",
    "detect_faces",
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


class NoFaceError(PsyauError):
    """No face found in a clip's onset frame (or none inside the given face box)."""


class LandmarkBackendError(PsyauError):
    """A landmark backend cannot run (missing package or weights)."""


@dataclass
class FaceDetection:
    """A face box and its landmarks.

    Attributes:
        box: (left, top, right, bottom) in pixels of the full-resolution frame.
        landmarks: (68, 2) float32 (x, y), dlib order.
        num_faces: how many faces the detector found (the largest was kept).
        attempt: which detection attempt found the face kept ("downscaled", "full",
            "upsampled", "user box", "face_alignment").
        selection: one line saying which face was taken and why (stored in cache metadata).
    """

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    num_faces: int = 1
    attempt: str = "full"
    selection: str = ""


def _selection(face, n: int, attempt: str, box) -> str:
    if isinstance(face, tuple):
        return f"user face box {tuple(box)}"
    rule = "nearest the centre" if face == "centre" else "largest"
    return f"{rule} of {n} face(s) found (box {tuple(box)}, {attempt} pass)"


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


#: face choices accepted by :func:`detect_face` besides an explicit (left, top, right, bottom) box
FACE_MODES = ("largest", "centre")
#: the full-resolution pass runs on a copy at most this many pixels on its longest side
FULL_MAX_SIDE = 1600
#: the upsampled pass runs only when the (full) frame's longest side is at most this
UPSAMPLE_MAX_SIDE = 1024


class FaceBoxError(PsyauError):
    """A face box given by the user is malformed or outside the frame."""


def parse_face_box(value, *, what: str = "face box"):
    """A face choice from user input.

    Args:
        value: ``None`` / ``""`` / ``"largest"`` → ``"largest"``; ``"centre"`` (or ``"center"``)
            → ``"centre"``; ``"L,T,R,B"`` (string, pixels of the onset frame) or a sequence of
            4 numbers → ``(left, top, right, bottom)`` ints.
        what: what the value is, for the message (e.g. ``"--face-box"``, ``"sheet row 12"``).

    Raises:
        FaceBoxError: anything else, or a box with right ≤ left / bottom ≤ top.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "largest"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("", "largest"):
            return "largest"
        if v in ("centre", "center"):
            return "centre"
        parts = [x for x in v.replace(";", ",").replace(" ", ",").split(",") if x]
    else:
        parts = list(value)
    try:
        nums = [float(x) for x in parts]
    except (TypeError, ValueError):
        nums = []
    if len(nums) != 4 or not all(np.isfinite(nums)):
        raise FaceBoxError(f"{what}: expected 'largest', 'centre' or 'LEFT,TOP,RIGHT,BOTTOM' in pixels, "
                           f"got {value!r}")
    l, t, r, b = (int(round(x)) for x in nums)
    if r <= l or b <= t or min(l, t) < 0:
        raise FaceBoxError(f"{what}: box {value!r} needs 0 <= left < right and 0 <= top < bottom")
    return (l, t, r, b)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect_faces(image: np.ndarray, *, clip: str = "<image>", detect_max_side: int = 320):
    """Every face found by ALL detection attempts, the same face merged across attempts.

    Attempts (all of them run; none stops the others): a copy downscaled to at most
    ``detect_max_side`` px (if the frame is larger), the frame at full resolution (at most
    :data:`FULL_MAX_SIDE` px), and that image upsampled once by dlib when its longest side
    is at most :data:`UPSAMPLE_MAX_SIDE` (finds faces down to ~40 px). Boxes of different
    attempts overlapping by IoU ≥ 0.4 are one face; the box of the first attempt that found
    it is kept.

    Returns:
        ``(faces, attempts)``: faces = list of ``(box, attempt)`` with box (left, top, right,
        bottom) in full-resolution pixels; attempts = names of the attempts run.
    """
    import cv2

    det, _ = _dlib()
    g = _grey(image, clip)
    H, W = g.shape
    attempts = []
    if detect_max_side and max(H, W) > detect_max_side:
        s = detect_max_side / max(H, W)
        attempts.append(("downscaled", cv2.resize(g, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA), s, 0))
    if max(H, W) > FULL_MAX_SIDE:
        s = FULL_MAX_SIDE / max(H, W)
        full = cv2.resize(g, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA)
    else:
        s, full = 1.0, g
    attempts.append(("full", full, s, 0))
    if max(full.shape) <= UPSAMPLE_MAX_SIDE:
        attempts.append(("upsampled", full, s, 1))
    faces: list[tuple[tuple[float, float, float, float], str]] = []
    for label, img, sc, up in attempts:
        for r in det(img, up):
            box = (r.left() / sc, r.top() / sc, r.right() / sc, r.bottom() / sc)
            if not any(_iou(box, f[0]) >= 0.4 for f in faces):
                faces.append((box, label))
    out = [(tuple(int(round(v)) for v in b), a) for b, a in faces]
    return out, [a[0] for a in attempts]


def detect_face(image: np.ndarray, *, clip: str = "<image>", detect_max_side: int = 320,
                face="largest"):
    """Choose the face of a frame.

    Args:
        image: uint8 grey (H, W) or RGB (H, W, 3).
        clip: clip name for messages.
        detect_max_side: longest side of the downscaled copy tried (default: 320; 0 disables
            the downscaled attempt).
        face: ``"largest"`` (default): the largest face over all attempts of
            :func:`detect_faces`; ``"centre"``: the face whose box centre is nearest the frame
            centre; or a box (left, top, right, bottom) given by the user, used as is (no
            detection). See :func:`parse_face_box`.

    Returns:
        ``(box, num_faces, attempt)``; box = (left, top, right, bottom) in full-resolution
        pixels; attempt = the attempt that found the chosen face, or ``"user box"``.

    Raises:
        NoFaceError: no attempt found a face. FaceBoxError: a user box outside the frame.
    """
    g = _grey(image, clip)
    H, W = g.shape
    face = parse_face_box(face, what=f"clip {clip!r}: face")
    if isinstance(face, tuple):
        l, t, r, b = face
        if r > W or b > H:
            raise FaceBoxError(f"clip {clip!r}: face box {face} reaches outside the {W}×{H} frame")
        return face, 1, "user box"
    faces, attempts = detect_faces(g, clip=clip, detect_max_side=detect_max_side)
    if not faces:
        raise NoFaceError(f"clip {clip!r}: no face found (HOG detector, {H}×{W} image, tried "
                          f"{', '.join(attempts)})")
    if face == "centre":
        cx, cy = (W - 1) / 2, (H - 1) / 2
        key = [-((b[0] + b[2]) / 2 - cx) ** 2 - ((b[1] + b[3]) / 2 - cy) ** 2 for b, _ in faces]
    else:
        key = [(b[2] - b[0]) * (b[3] - b[1]) for b, _ in faces]
    best = int(np.argmax(key))
    box, attempt = faces[best]
    if len(faces) > 1:
        which = "nearest the centre" if face == "centre" else "the largest"
        msg = f"clip {clip!r}: {len(faces)} faces found, using {which} (box {box})"
        log.warning(msg)
        warnings.warn(msg, stacklevel=2)
    return box, len(faces), attempt


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
                     detect_max_side: int = 320, face="largest") -> FaceDetection:
    """Detect the (largest) face and its 68 landmarks in one frame.

    Args:
        image: uint8 (H, W) grey or (H, W, 3) RGB.
        backend: "dlib" (default) or "face_alignment" (needs cached weights).
        clip: clip name for messages.
        detect_max_side: see :func:`detect_face`.
        face: "largest" (default), "centre" or a user box (left, top, right, bottom); see
            :func:`detect_face`. ``return.selection`` says which face was taken.

    Shapes:
        return.landmarks: (68, 2) float32.
    """
    face = parse_face_box(face, what=f"clip {clip!r}: face")
    if backend == "dlib":
        box, n, attempt = detect_face(image, clip=clip, detect_max_side=detect_max_side, face=face)
        return FaceDetection(box, predict_landmarks(image, box, clip=clip), n, attempt,
                             _selection(face, n, attempt, box))
    if backend == "face_alignment":
        if face != "largest":
            raise FaceBoxError(f"clip {clip!r}: face={face!r} is supported by the dlib backend only")
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
    return FaceDetection(box, lm, len(preds), "face_alignment",
                         f"largest of {len(preds)} face(s) found (box {box}, face_alignment)")
