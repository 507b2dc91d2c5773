"""Stage 1: frames in. Open a clip and pick the onset / apex frames by frame NUMBER.

A clip can be a folder of images, a list of image paths (or ``(number, path)``
pairs, as returned by :func:`psyau_graph.data.layouts.find_clip_frames`), a video
file, or arrays. Frames are addressed by the number the annotation uses: CASME II
names its frames ``img46.jpg`` and its sheet says onset 46, so frame 46 is the
file ``img46.jpg`` whatever its position in the folder. The number of an image
file is the last run of digits in its file name (``006_05562.jpg`` → 5562).
Video frames and arrays are numbered ``first_number, first_number + 1, ...``
(default 0 for videos and arrays: pass ``first_number`` to match your sheet).

Images are read lazily (only the frames asked for), in grey (``uint8``) or RGB;
grey, grey + alpha, RGB, RGBA and 16-bit files are accepted (:func:`read_image`).
Videos are never decoded whole: :class:`VideoFrames` seeks to the frames a clip
needs and keeps only those.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import PsyauError

__all__ = [
    "FrameError",
    "MissingFrameError",
    "IMAGE_SUFFIXES",
    "Clip",
    "open_clip",
    "frame_number",
    "read_image",
    "VideoFrames",
    "SelectedFrames",
    "select_frames",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".wmv", ".webm")
_DIGITS = re.compile(r"(\d+)")


class FrameError(PsyauError):
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
        arrays: in-memory frames per frame number (array sources), or None;
            RGB (H, W, 3) or grey (H, W) uint8.
        video: the video reader (video sources), or None: frames are decoded only when
            read (see :class:`VideoFrames`).
    """

    name: str
    numbers: list[int]
    paths: dict[int, Path] | None = None
    arrays: dict[int, np.ndarray] | None = None
    video: "VideoFrames | None" = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.numbers)

    def __contains__(self, number: int) -> bool:
        n = int(number)
        if self.video is not None:
            return self.numbers[0] <= n <= self.numbers[-1]
        return n in (self.paths if self.paths is not None else self.arrays)

    def prefetch(self, numbers: Sequence[int], *, colour: bool = False) -> None:
        """Decode the frames ``numbers`` of a video in ONE ascending pass (seeking between
        them), keeping only those; no-op for images and arrays (read on demand anyway)."""
        if self.video is None:
            return
        want = sorted({self._check(n) for n in numbers} - {k[0] for k in self._cache if k[1] == colour})
        if want:
            got = self.video.read([n - self.numbers[0] for n in want], colour=colour)
            for n in want:
                self._cache[(n, colour)] = got[n - self.numbers[0]]

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
        if self.video is not None:
            self.prefetch([n], colour=colour)
            return self._cache[key]
        if self.arrays is not None:
            img = self.arrays[n]
            out = (img if img.ndim == 3 else np.repeat(img[:, :, None], 3, 2)) if colour else _to_grey(img)
        else:
            import cv2

            out = read_image(self.paths[n], colour=colour, what=f"clip {self.name!r}: {role} {n}")
        self._cache[key] = out
        return out

    def read_many(self, numbers: Sequence[int], *, colour: bool = False, role: str = "frame") -> np.ndarray:
        """Frames stacked: (N, H, W) grey or (N, H, W, 3) colour; all must share a size."""
        imgs = [self.read(n, colour=colour, role=role) for n in numbers]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise FrameError(f"clip {self.name!r}: frames {list(numbers)} differ in size: {sorted(shapes)}")
        return np.stack(imgs)


def read_image(path, *, colour: bool = False, what: str = "image") -> np.ndarray:
    """One image file as uint8 grey (H, W) or RGB (H, W, 3).

    Accepts grey, grey + alpha, RGB/BGR, RGBA (alpha dropped), 8- or 16-bit (16-bit is
    scaled to 8 bits by keeping the high byte, ``value >> 8``), in any format
    OpenCV reads (JPEG, PNG, BMP, TIFF).

    Raises:
        FrameError: the file is missing, unreadable, or of an unsupported pixel type.
    """
    import cv2

    path = Path(path)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        why = "file does not exist" if not path.exists() else "unreadable or not an image"
        raise FrameError(f"{what} ({path}): {why}")
    if raw.dtype == np.uint16:
        raw = (raw >> 8).astype(np.uint8)
    elif raw.dtype != np.uint8:
        raise FrameError(f"{what} ({path}): unsupported pixel type {raw.dtype} (expected 8- or 16-bit)")
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[:, :, 0]
    if raw.ndim == 2:
        return np.repeat(raw[:, :, None], 3, 2) if colour else raw
    if raw.ndim != 3 or raw.shape[2] not in (2, 3, 4):
        raise FrameError(f"{what} ({path}): unsupported image shape {raw.shape}")
    if raw.shape[2] == 2:  # grey + alpha
        g = np.ascontiguousarray(raw[:, :, 0])
        return np.repeat(g[:, :, None], 3, 2) if colour else g
    if colour:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB if raw.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY if raw.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)


class VideoFrames:
    """Frames of a video file, decoded only when asked for and never kept here.

    :meth:`read` takes the positions a clip needs (onset, apex window) and decodes them
    in one ascending pass: it seeks (``CAP_PROP_POS_FRAMES``) to a wanted frame more than
    :attr:`SEEK_GAP` frames ahead, otherwise it skips forward with ``grab()`` (decode
    without conversion, nothing kept). A seek is trusted only if OpenCV reports the
    position asked for, before and after the read; otherwise the video is marked
    not seekable and read sequentially from its start (again keeping only the wanted
    frames), and :attr:`notes` says so.

    Attributes:
        path: the video file; name: clip name for messages.
        count: number of frames (``CAP_PROP_FRAME_COUNT``, or counted once when the
            container does not say).
        seekable: False after a seek failed or landed elsewhere (or with ``seek=False``).
        notes: what was done about unreliable seeking / frame counts.
        decoded: how many frames were decoded so far (for tests and benchmarks).
    """

    SEEK_GAP = 8

    def __init__(self, path, name: str, *, seek: bool = True):
        import cv2

        self.path, self.name, self.seekable, self.notes, self.decoded = Path(path), name, seek, [], 0
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise FrameError(f"clip {name!r}: cannot open video {self.path}")
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if n <= 0:  # container does not say: count once, decoding but keeping nothing
                n = 0
                while cap.grab():
                    n += 1
                self.notes.append(f"video {self.path.name}: frame count not in the container; counted {n}")
        finally:
            cap.release()
        if n <= 0:
            raise FrameError(f"clip {name!r}: video {self.path} has no readable frames")
        self.count = n

    def _open(self):
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise FrameError(f"clip {self.name!r}: cannot open video {self.path}")
        return cap

    def read(self, positions: Sequence[int], *, colour: bool = False) -> dict[int, np.ndarray]:
        """Decode the frames at 0-based ``positions``; returns {position: frame}.

        Shapes:
            each frame (H, W) uint8 grey, or (H, W, 3) uint8 RGB with ``colour=True``.
        """
        want = sorted(set(int(p) for p in positions))
        if want and (want[0] < 0 or want[-1] >= self.count):
            raise FrameError(f"clip {self.name!r}: video position {want[-1] if want[-1] >= self.count else want[0]} "
                             f"outside 0..{self.count - 1}")
        try:
            return self._read(want, colour, seek=self.seekable)
        except _SeekUnreliable as exc:
            self.seekable = False
            self.notes.append(f"video {self.path.name}: {exc}; read sequentially instead")
            return self._read(want, colour, seek=False)

    def _read(self, want, colour, *, seek: bool):
        import cv2

        cap = self._open()
        out, pos = {}, 0  # pos: position of the next frame the decoder returns
        try:
            for p in want:
                if seek and p - pos > self.SEEK_GAP:
                    if not cap.set(cv2.CAP_PROP_POS_FRAMES, p) or round(cap.get(cv2.CAP_PROP_POS_FRAMES)) != p:
                        raise _SeekUnreliable(f"seeking to frame {p} failed")
                    pos = p
                while pos < p:
                    if not cap.grab():
                        raise FrameError(f"clip {self.name!r}: video {self.path} ends at frame {pos} "
                                         f"(the container said {self.count} frames)")
                    self.decoded += 1
                    pos += 1
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise FrameError(f"clip {self.name!r}: video {self.path}: frame {p} cannot be decoded "
                                     f"(the container said {self.count} frames)")
                self.decoded += 1
                pos += 1
                if seek and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) != pos:
                    raise _SeekUnreliable(f"after seeking, frame {p} was read at position "
                                          f"{cap.get(cv2.CAP_PROP_POS_FRAMES) - 1:.0f}")
                if colour:
                    out[p] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                else:
                    out[p] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
                del bgr
        finally:
            cap.release()
        return out


class _SeekUnreliable(Exception):
    """Internal: a seek failed or landed on another frame."""


def _from_video(path: Path, name: str, first_number: int, seek: bool = True) -> Clip:
    v = VideoFrames(path, name, seek=seek)
    return Clip(name, list(range(first_number, first_number + v.count)), video=v)


def open_clip(source, *, name: str | None = None, first_number: int = 0, seek: bool = True) -> Clip:
    """Open a clip from any supported source (no image is decoded yet).

    Args:
        source: a folder of images; a video file; a list of image paths; a list of
            ``(number, path)`` pairs; an array (T, H, W) / (T, H, W, 3); a list of
            (H, W[, 3]) arrays; or a :class:`Clip` (returned as is).
        name: clip name for messages (default: the folder / file name, or ``"<arrays>"``).
        first_number: number of the first frame for videos and arrays (default: 0).
        seek: videos: seek to the frames needed (default True); False reads sequentially
            from the start (still keeping only the frames needed).

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
                return _from_video(p, name, first_number, seek)
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
    c.prefetch([onset, *window])  # videos: one decoding pass over just these frames
    onset_image = c.read(onset, role="onset")
    apex_images = c.read_many(window, role="apex-window frame")
    if apex_images.shape[1:] != onset_image.shape:
        raise FrameError(f"clip {c.name!r}: onset {onset} is {onset_image.shape} but apex frames are "
                         f"{apex_images.shape[1:]}")
    return SelectedFrames(onset, apex, window, onset_image, apex_images, notes)
