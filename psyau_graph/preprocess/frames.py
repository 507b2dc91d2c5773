"""Stage 1: frames in. Open a clip and pick the onset / apex frames by frame NUMBER.

A clip can be a folder of images, a list of image paths (or ``(number, path)``
pairs, as returned by :func:`psyau_graph.data.layouts.find_clip_frames`), a video
file, or arrays. Frames are addressed by the number the annotation uses: CASME II
names its frames ``img46.jpg`` and its sheet says onset 46, so frame 46 is the
file ``img46.jpg`` whatever its position in the folder. The number of an image
file is the last run of digits in its file name (``006_05562.jpg`` → 5562).
Video frames and arrays are numbered ``first_number, first_number + 1, ...``
(default 0 for videos and arrays: pass ``first_number`` to match your sheet).

Images are read lazily (only the frames asked for), in grey (``uint8``) or RGB.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "FrameError",
    "MissingFrameError",
    "IMAGE_SUFFIXES",
    "Clip",
    "open_clip",
    "frame_number",
    "SelectedFrames",
    "select_frames",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".webm")
_DIGITS = re.compile(r"(\d+)")


class FrameError(ValueError):
    """A frame of a clip is unusable (unreadable, out of range, bad order)."""


class MissingFrameError(FrameError):
    """A frame number the annotation asks for has no image in the clip."""


def frame_number(path) -> int:
    """The frame number of an image file: the last run of digits in its stem.

    ``img46.jpg`` → 46, ``reg_img046.jpg`` → 46, ``006_05562.jpg`` → 5562.
    """
    digits = _DIGITS.findall(Path(path).stem)
    if not digits:
        raise FrameError(f"cannot read a frame number from file name {Path(path).name!r}")
    return int(digits[-1])


def _to_grey(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        code = cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        return cv2.cvtColor(img, code)
    raise FrameError(f"expected a grey (H, W) or colour (H, W, 3) frame, got shape {img.shape}")


def _as_uint8(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise FrameError(f"{what}: non-finite pixel values")
        scale = 255.0 if a.size and a.max() <= 1.0 else 1.0
        return np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise FrameError(f"{what}: unsupported pixel type {a.dtype}")


@dataclass
class Clip:
    """A clip's frames addressed by frame number; images read on demand.

    Attributes:
        name: clip name used in error messages.
        numbers: sorted frame numbers, (T,).
        paths: image path per frame number (folder / path list sources), or None.
        arrays: in-memory frames per frame number (video / array sources), or None;
            RGB (H, W, 3) or grey (H, W) uint8.
    """

    name: str
    numbers: list[int]
    paths: dict[int, Path] | None = None
    arrays: dict[int, np.ndarray] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.numbers)

    def __contains__(self, number: int) -> bool:
        return int(number) in (self.paths if self.paths is not None else self.arrays)

    def _check(self, number: int, role: str = "frame") -> int:
        n = int(number)
        if not self.numbers:
            raise MissingFrameError(f"clip {self.name!r} has no frames")
        lo, hi = self.numbers[0], self.numbers[-1]
        if n < lo or n > hi:
            raise FrameError(f"clip {self.name!r}: {role} {n} is outside the clip (frames {lo}..{hi})")
        if n not in self:
            raise MissingFrameError(f"clip {self.name!r}: {role} {n} is missing (frames {lo}..{hi}, "
                                    f"{len(self.numbers)} present)")
        return n

    def read(self, number: int, *, colour: bool = False, role: str = "frame") -> np.ndarray:
        """Frame ``number`` as uint8 grey (H, W), or RGB (H, W, 3) with ``colour=True``."""
        n = self._check(number, role)
        key = (n, colour)
        if key in self._cache:
            return self._cache[key]
        if self.arrays is not None:
            img = self.arrays[n]
            out = (img if img.ndim == 3 else np.repeat(img[:, :, None], 3, 2)) if colour else _to_grey(img)
        else:
            import cv2

            path = self.paths[n]
            raw = cv2.imread(str(path), cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
            if raw is None:
                why = "file does not exist" if not path.exists() else "unreadable or not an image"
                raise FrameError(f"clip {self.name!r}: {role} {n} ({path}): {why}")
            out = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB) if colour else raw
        self._cache[key] = out
        return out

    def read_many(self, numbers: Sequence[int], *, colour: bool = False, role: str = "frame") -> np.ndarray:
        """Frames stacked: (N, H, W) grey or (N, H, W, 3) colour; all must share a size."""
        imgs = [self.read(n, colour=colour, role=role) for n in numbers]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise FrameError(f"clip {self.name!r}: frames {list(numbers)} differ in size: {sorted(shapes)}")
        return np.stack(imgs)


def _from_video(path: Path, name: str, first_number: int) -> Clip:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FrameError(f"clip {name!r}: cannot open video {path}")
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise FrameError(f"clip {name!r}: video {path} has no readable frames")
    numbers = list(range(first_number, first_number + len(frames)))
    return Clip(name, numbers, arrays=dict(zip(numbers, frames)))


def open_clip(source, *, name: str | None = None, first_number: int = 0) -> Clip:
    """Open a clip from any supported source (no image is decoded yet).

    Args:
        source: a folder of images; a video file; a list of image paths; a list of
            ``(number, path)`` pairs; an array (T, H, W) / (T, H, W, 3); a list of
            (H, W[, 3]) arrays; or a :class:`Clip` (returned as is).
        name: clip name for messages (default: the folder / file name, or ``"<arrays>"``).
        first_number: number of the first frame for videos and arrays (default: 0).

    Shapes:
        array sources: (T, H, W) grey or (T, H, W, 3) RGB, uint8 or float in [0, 1].

    Raises:
        FileNotFoundError: the folder / file does not exist.
        FrameError: no frames, duplicate frame numbers, unnamed numbers, bad arrays.
    """
    if isinstance(source, Clip):
        return source
    if isinstance(source, (str, Path)):
        p = Path(source)
        name = name or p.name
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise MissingFrameError(f"clip {name!r}: no image files ({', '.join(IMAGE_SUFFIXES)}) in {p}")
            return _from_paths([(frame_number(f), f) for f in files], name)
        if p.is_file():
            if p.suffix.lower() in VIDEO_SUFFIXES:
                return _from_video(p, name, first_number)
            raise FrameError(f"clip {name!r}: {p} is neither a folder of images nor a video "
                             f"({', '.join(VIDEO_SUFFIXES)})")
        raise FileNotFoundError(f"clip {name!r}: {p} does not exist")
    if isinstance(source, np.ndarray):
        if source.ndim not in (3, 4):
            raise FrameError(f"clip {name or '<arrays>'!r}: expected frames (T, H, W) or (T, H, W, 3), "
                             f"got shape {source.shape}")
        source = list(source)
    if isinstance(source, (list, tuple)):
        name = name or "<arrays>"
        if not source:
            raise MissingFrameError(f"clip {name!r}: empty frame list")
        first = source[0]
        if isinstance(first, (str, Path)):
            return _from_paths([(frame_number(f), Path(f)) for f in source], name)
        if isinstance(first, tuple) and len(first) == 2 and isinstance(first[1], (str, Path)):
            return _from_paths([(int(n), Path(f)) for n, f in source], name)
        arrays = {}
        for i, a in enumerate(source):
            a = np.asarray(a)
            if a.ndim not in (2, 3):
                raise FrameError(f"clip {name!r}: frame {i} has shape {a.shape}, expected (H, W[, 3])")
            arrays[first_number + i] = _as_uint8(a, f"clip {name!r} frame {first_number + i}")
        return Clip(name, sorted(arrays), arrays=arrays)
    raise TypeError(f"open_clip: unsupported source type {type(source).__name__}")


def _from_paths(pairs: list[tuple[int, Path]], name: str) -> Clip:
    paths: dict[int, Path] = {}
    for n, f in pairs:
        if n in paths:
            raise FrameError(f"clip {name!r}: frame number {n} appears twice ({paths[n].name}, {Path(f).name})")
        paths[n] = Path(f)
    return Clip(name, sorted(paths), paths=paths)


@dataclass
class SelectedFrames:
    """The frames the flow is computed between.

    Attributes:
        onset: onset frame number used.
        apex: the annotated apex (or its replacement, see ``notes``).
        apex_numbers: frame numbers averaged around the apex (``apex`` included).
        onset_image: (H, W) uint8 grey.
        apex_images: (N, H, W) uint8 grey, one per ``apex_numbers``.
        notes: what was changed or dropped and why (empty when taken as annotated).
    """

    onset: int
    apex: int
    apex_numbers: list[int]
    onset_image: np.ndarray
    apex_images: np.ndarray
    notes: list[str] = field(default_factory=list)


def select_frames(clip, onset: int, apex: int, *, apex_window: int = 1, name: str | None = None) -> SelectedFrames:
    """Pick the onset frame and the apex window by annotated frame number.

    Rules:
        - onset > apex: :class:`FrameError`.
        - onset == apex (real sheets have such rows): the apex becomes the next frame
          (apex + 1, or the next present number); if the clip has none, the onset
          becomes the previous frame. The change is recorded in ``notes``.
        - the window is ``apex - apex_window .. apex + apex_window``, restricted to frames
          that exist and come after the onset; the apex itself must exist.
        - numbers outside the clip: :class:`FrameError`; inside but absent:
          :class:`MissingFrameError`.

    Args:
        clip: anything :func:`open_clip` accepts.
        onset, apex: annotated frame numbers.
        apex_window: half-width of the apex window in frames (default: 1, i.e. ±1).
        name: clip name for messages.

    Shapes:
        return.onset_image: (H, W) uint8; return.apex_images: (N, H, W) uint8, N ≤ 2·apex_window + 1.
    """
    c = open_clip(clip, name=name)
    onset, apex = int(onset), int(apex)
    if apex_window < 0:
        raise ValueError(f"apex_window: expected ≥ 0, got {apex_window}")
    notes: list[str] = []
    if onset > apex:
        raise FrameError(f"clip {c.name!r}: onset {onset} is after apex {apex}")
    c._check(onset, "onset")
    c._check(apex, "apex")
    if onset == apex:
        later = [n for n in c.numbers if n > apex]
        earlier = [n for n in c.numbers if n < onset]
        if later:
            notes.append(f"onset == apex == {apex}: apex moved to the next frame {later[0]}")
            apex = later[0]
        elif earlier:
            notes.append(f"onset == apex == {apex} at the clip's end: onset moved to the previous frame {earlier[-1]}")
            onset = earlier[-1]
        else:
            raise FrameError(f"clip {c.name!r}: onset == apex == {apex} and the clip has a single frame")
    window = [n for n in range(apex - apex_window, apex + apex_window + 1) if n > onset and n in c]
    dropped = [n for n in range(apex - apex_window, apex + apex_window + 1) if n not in window]
    if dropped:
        notes.append(f"apex window: frames {dropped} not used (absent or not after the onset)")
    onset_image = c.read(onset, role="onset")
    apex_images = c.read_many(window, role="apex-window frame")
    if apex_images.shape[1:] != onset_image.shape:
        raise FrameError(f"clip {c.name!r}: onset {onset} is {onset_image.shape} but apex frames are "
                         f"{apex_images.shape[1:]}")
    return SelectedFrames(onset, apex, window, onset_image, apex_images, notes)
