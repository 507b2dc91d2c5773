"""Frames from real-world sources: pixel formats, zero padding, each data set's folder
layout, and videos decoded by seeking (only the frames a clip needs)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from psyau_graph.data.layouts import find_clip_frames
from psyau_graph.preprocess import frames as F
from psyau_graph.preprocess.frames import FrameError, open_clip, read_image, select_frames


def _pattern(n: int, h=24, w=32) -> np.ndarray:
    """A grey frame that encodes n: a bar whose position and brightness depend on n."""
    img = np.full((h, w), 20, np.uint8)
    x = (3 * n) % (w - 4)
    img[:, x:x + 4] = 60 + (7 * n) % 180
    return img


# ------------------------------------------------------------------ pixel formats
def test_pixel_formats(tmp_path):
    g = _pattern(5)
    rgb = np.stack([g, g // 2, 255 - g], -1)
    files = {
        "grey.png": g,
        "rgb.png": rgb[:, :, ::-1],  # cv2 writes BGR
        "rgba.png": np.dstack([rgb[:, :, ::-1], np.full(g.shape, 7, np.uint8)]),
        "grey16.png": g.astype(np.uint16) * 257,
        "rgb16.tif": (rgb[:, :, ::-1].astype(np.uint16) * 257),
        "grey.bmp": g,
        "rgb.bmp": rgb[:, :, ::-1],
    }
    for name, a in files.items():
        assert cv2.imwrite(str(tmp_path / name), a)
    want_grey_rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for name in files:
        grey = read_image(tmp_path / name)
        col = read_image(tmp_path / name, colour=True)
        assert grey.dtype == np.uint8 and grey.shape == g.shape, name
        assert col.dtype == np.uint8 and col.shape == g.shape + (3,), name
        if name.startswith("grey"):
            np.testing.assert_array_equal(grey, g, err_msg=name)
            np.testing.assert_array_equal(col[:, :, 1], g, err_msg=name)
        else:
            np.testing.assert_allclose(grey, want_grey_rgb, atol=1, err_msg=name)
            np.testing.assert_array_equal(col, rgb, err_msg=name)  # alpha dropped, RGB order
    (tmp_path / "broken.png").write_bytes(b"\x89PNG nothing")
    with pytest.raises(FrameError, match=r"broken\.png.*unreadable"):
        read_image(tmp_path / "broken.png", what="frame 3")
    with pytest.raises(FrameError, match="does not exist"):
        read_image(tmp_path / "gone.png")


def test_zero_padding_both_ways(tmp_path):
    for d, fmt in (("plain", "img{}.jpg"), ("padded", "img{:05d}.jpg")):
        (tmp_path / d).mkdir()
        for n in (8, 9, 10, 11):
            cv2.imwrite(str(tmp_path / d / fmt.format(n)), _pattern(n))
    a, b = open_clip(tmp_path / "plain"), open_clip(tmp_path / "padded")
    assert a.numbers == b.numbers == [8, 9, 10, 11]  # 10 sorts after 9, not after 1
    sel = select_frames(b, 8, 10, apex_window=1)
    assert sel.apex_numbers == [9, 10, 11]


# ------------------------------------------------------------------ data set layouts
# (root relative folder, dataset/layout name, row, file names) as each release ships them
LAYOUT_CASES = {
    "casme2_raw": ("CASME2_RAW_selected", "casme2", {"subject": "sub01", "clip": "EP02_01f"},
                   "sub01/EP02_01f/img{n}.jpg", 46),
    "casme2_reg_img": ("Cropped", "casme2", {"subject": "sub01", "clip": "EP02_01f"},
                       "sub01/EP02_01f/reg_img{n}.jpg", 46),
    "samm": ("SAMM", "samm", {"subject": "006", "clip": "006_1_2"}, "006/006_1_2/006_{n:05d}.jpg", 5562),
    "casme3_partA_color": ("part_A", "casme3", {"subject": "spNO.1", "clip": "a"},
                           "spNO.1/a/color/{n}.jpg", 120),
    "smic_hs": ("SMIC/HS", "smic", {"subject": "s1", "clip": "s1_po_01", "emotion": "positive"},
                "s1/micro/positive/s1_po_01/reg_image{n:06d}.bmp", 69434),
    "smic_vis": ("SMIC/VIS", "smic", {"subject": "s1", "clip": "s1_ne_01", "emotion": "negative"},
                 "s1/micro/negative/s1_ne_01/image{n:06d}.bmp", 3002),
    "smic_nir": ("SMIC/NIR", "smic", {"subject": "s3", "clip": "s3_sur_01", "emotion": "surprise"},
                 "s3/micro/surprise/s3_sur_01/image{n:06d}.jpg", 211),
    "dfme": ("DFME", "dfme", {"subset": "PartA", "subject": "001", "clip": "001_1"},
             "PartA/001/001_1/{n}.jpg", 1),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_dataset_layouts(tmp_path, case):
    root_rel, dataset, row, name, first = LAYOUT_CASES[case]
    root = tmp_path / root_rel
    for n in range(first, first + 5):
        p = root / name.format(n=n)
        p.parent.mkdir(parents=True, exist_ok=True)
        img = _pattern(n)
        if case == "smic_hs":  # SMIC-HS frames are colour BMP
            img = np.dstack([img] * 3)
        assert cv2.imwrite(str(p), img)
    frames = find_clip_frames(root, row, dataset=dataset)
    assert [n for n, _ in frames] == list(range(first, first + 5))
    sel = select_frames(open_clip(frames, name=case), first, first + 3, apex_window=1)
    assert sel.apex_numbers == [first + 2, first + 3, first + 4]
    lossless = name.endswith(".bmp")
    for n, img in zip(sel.apex_numbers, sel.apex_images):
        np.testing.assert_allclose(img.astype(int), _pattern(n), atol=0 if lossless else 12)


# ------------------------------------------------------------------ videos
def _write_video(path, n_frames, fourcc="MJPG", size=(32, 24)):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, size)
    if not vw.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for k in range(n_frames):
        g = cv2.resize(_pattern(k), size, interpolation=cv2.INTER_NEAREST)
        vw.write(np.dstack([g] * 3))
    vw.release()
    return path


@pytest.mark.parametrize("fourcc,ext", [("MJPG", "avi"), ("mp4v", "mp4"), ("XVID", "avi"), ("VP80", "webm"),
                                        ("FFV1", "mkv")])
def test_video_seeks_to_the_frames_needed(tmp_path, fourcc, ext):
    path = _write_video(tmp_path / f"v.{ext}", 60, fourcc)
    seq = open_clip(path, seek=False, first_number=1)
    assert seq.numbers == list(range(1, 61))
    ref = {n: seq.read(n) for n in (15, 40, 41, 42)}  # sequential decode: the reference
    clip = open_clip(path, first_number=1)
    assert clip.video.decoded == 0  # opening decodes nothing
    sel = select_frames(clip, 15, 41, apex_window=1)
    np.testing.assert_array_equal(sel.onset_image, ref[15])
    for n, img in zip(sel.apex_numbers, sel.apex_images):
        np.testing.assert_array_equal(img, ref[n])
    # each frame is the one asked for (its bar sits where _pattern(n - 1) puts it)
    x = int(np.argmax(sel.apex_images[1].mean(0)))
    assert abs(x - (3 * 40) % 28) <= 2
    assert clip.video.seekable and clip.video.notes == []
    assert clip.video.decoded == 4  # onset + 3 apex-window frames (both reached by seeking), nothing else
    assert len(clip._cache) == 4
    with pytest.raises(FrameError, match="outside the clip"):
        select_frames(clip, 15, 61)


def test_video_falls_back_to_sequential_when_seeking_fails(tmp_path, monkeypatch):
    path = _write_video(tmp_path / "v.avi", 30)
    ref = open_clip(path, seek=False).read(20)
    real = cv2.VideoCapture

    class NoSeek:  # a container that cannot seek: set() fails
        def __init__(self, *a):
            self._c = real(*a)

        def set(self, prop, value):
            return False if prop == cv2.CAP_PROP_POS_FRAMES else self._c.set(prop, value)

        def __getattr__(self, k):
            return getattr(self._c, k)

    monkeypatch.setattr(cv2, "VideoCapture", NoSeek)
    clip = open_clip(path)
    sel = select_frames(clip, 2, 20, apex_window=0)
    np.testing.assert_array_equal(sel.apex_images[0], ref)
    assert not clip.video.seekable and "read sequentially" in clip.video.notes[0]
    assert len(clip._cache) == 2  # only the two frames needed are kept


def test_video_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(FrameError, match=r"bad\.mp4"):
        open_clip(bad)
    assert issubclass(F.FrameError, ValueError)
