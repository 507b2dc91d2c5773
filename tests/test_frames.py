"""Stage 1: opening clips from every source and picking frames by annotated number."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from psyau_graph.preprocess.frames import (FrameError, MissingFrameError, frame_number, open_clip,
                                           select_frames)


def numbered(n_frames=6, first=10, h=12, w=16):
    """Frames whose pixels all equal their frame number (lossless via PNG)."""
    return {first + i: np.full((h, w), first + i, np.uint8) for i in range(n_frames)}


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "EP01_01"
    d.mkdir()
    for n, f in numbered().items():
        cv2.imwrite(str(d / f"img{n}.png"), f)
    return d


def test_frame_number():
    assert frame_number("img46.jpg") == 46
    assert frame_number("reg_img046.jpg") == 46
    assert frame_number("006_05562.jpg") == 5562
    with pytest.raises(FrameError, match="frame number"):
        frame_number("onset.jpg")


def test_folder_by_number(folder):
    clip = open_clip(folder)
    assert clip.name == "EP01_01" and clip.numbers == list(range(10, 16))
    assert clip.read(13).shape == (12, 16) and clip.read(13)[0, 0] == 13
    assert clip.read(13, colour=True).shape == (12, 16, 3)
    sel = select_frames(folder, 10, 13, apex_window=1)
    assert (sel.onset, sel.apex, sel.apex_numbers, sel.notes) == (10, 13, [12, 13, 14], [])
    assert sel.onset_image[0, 0] == 10 and sel.onset_image.dtype == np.uint8
    assert [int(a[0, 0]) for a in sel.apex_images] == [12, 13, 14]
    assert select_frames(folder, 10, 13, apex_window=0).apex_numbers == [13]
    # the window never reaches the onset
    assert select_frames(folder, 12, 13, apex_window=2).apex_numbers == [13, 14, 15]


def test_missing_outside_order(folder):
    (folder / "img12.png").unlink()
    sel = select_frames(folder, 10, 13)
    assert sel.apex_numbers == [13, 14] and "12" in sel.notes[0]
    with pytest.raises(MissingFrameError, match=r"EP01_01.*apex 12 is missing"):
        select_frames(folder, 10, 12)
    with pytest.raises(FrameError, match=r"EP01_01.*apex 99 is outside the clip \(frames 10..15\)"):
        select_frames(folder, 10, 99)
    with pytest.raises(FrameError, match="onset 3 is outside"):
        select_frames(folder, 3, 13)
    with pytest.raises(FrameError, match="onset 14 is after apex 13"):
        select_frames(folder, 14, 13)
    with pytest.raises(ValueError, match="apex_window"):
        select_frames(folder, 10, 13, apex_window=-1)


def test_onset_equals_apex(folder):
    sel = select_frames(folder, 11, 11, apex_window=1)
    assert sel.onset == 11 and sel.apex == 12 and sel.apex_numbers == [12, 13]
    assert "onset == apex" in sel.notes[0]
    end = select_frames(folder, 15, 15, apex_window=0)
    assert (end.onset, end.apex) == (14, 15) and "previous frame" in end.notes[0]
    with pytest.raises(FrameError, match="single frame"):
        select_frames([np.zeros((4, 4), np.uint8)], 0, 0)


def test_unreadable_and_duplicates(folder):
    (folder / "img13.png").write_bytes(b"not an image")
    with pytest.raises(FrameError, match=r"EP01_01.*apex-window frame 13 .*img13.png.*unreadable"):
        select_frames(folder, 10, 13)
    cv2.imwrite(str(folder / "img011.png"), np.zeros((12, 16), np.uint8))
    with pytest.raises(FrameError, match="frame number 11 appears twice"):
        open_clip(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_clip(folder / "nope")


def test_path_lists_arrays(folder, tmp_path):
    paths = sorted(folder.glob("*.png"))
    c1 = open_clip(paths, name="x")
    assert c1.numbers == list(range(10, 16)) and c1.read(15)[0, 0] == 15
    c2 = open_clip([(100 + i, p) for i, p in enumerate(paths)], name="pairs")
    assert c2.numbers[0] == 100 and c2.read(100)[0, 0] == 10
    arr = np.stack(list(numbered().values()))
    c3 = open_clip(arr, first_number=10)
    assert c3.numbers == list(range(10, 16)) and c3.read(12)[0, 0] == 12
    rgb = np.repeat(arr[..., None], 3, -1)
    assert open_clip(rgb).read(0).shape == (12, 16)
    flt = open_clip([np.full((4, 4), 0.5)], name="f")
    assert flt.read(0)[0, 0] == 128
    with pytest.raises(FrameError, match="shape"):
        open_clip(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="unsupported"):
        open_clip(42)


def test_video(tmp_path):
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for k in range(5):
        vw.write(np.full((24, 32, 3), 40 * k, np.uint8))
    vw.release()
    clip = open_clip(path, first_number=1)
    assert clip.numbers == [1, 2, 3, 4, 5]
    sel = select_frames(clip, 1, 4, apex_window=1)
    assert sel.apex_numbers == [3, 4, 5]
    # grey levels survive MJPEG within a few levels
    assert abs(int(sel.onset_image.mean()) - 0) <= 3 and abs(int(sel.apex_images[1].mean()) - 120) <= 3
    with pytest.raises(FrameError, match="outside"):
        select_frames(clip, 0, 4)
