"""Which face is taken: the largest over ALL detection passes, the one nearest the
centre, or a box the user gives; and the choice is recorded."""
from __future__ import annotations

import cv2
import dlib
import numpy as np
import pytest

from psyau_graph.preprocess import landmarks as L


@pytest.fixture(scope="module")
def two_faces():
    """A 300×560 photo: the astronaut's face (200 px) on the right, a 130 px copy at the left."""
    from skimage import data

    face = data.astronaut()[40:240, 120:320]
    canvas = np.full((300, 560, 3), 200, np.uint8)
    canvas[50:250, 330:530] = face
    canvas[85:215, 150:280] = cv2.resize(face, (130, 130))  # nearer the centre (x = 280)
    return canvas


class FakeDetector:
    """Stands in for dlib's HOG detector: per pass (image width, upsample) a list of boxes
    given in that pass's pixels; records the passes it was called for."""

    def __init__(self, per_pass):
        self.per_pass, self.calls = per_pass, []

    def __call__(self, img, up):
        key = (img.shape[1], up)
        self.calls.append(key)
        return [dlib.rectangle(*b) for b in self.per_pass.get(key, [])]


def test_all_passes_run_and_the_largest_face_wins(monkeypatch):
    L._dlib()
    # 640×480 frame: the downscaled pass (320 wide) finds only a small face far left; the
    # full pass finds that face again and the subject's larger face; upsampled finds nothing new
    fake = FakeDetector({(320, 0): [(10, 10, 50, 50)],
                         (640, 0): [(21, 19, 99, 101), (300, 100, 500, 300)],
                         (640, 1): [(20, 20, 100, 100)]})
    monkeypatch.setattr(L, "_DETECTOR", fake)
    img = np.zeros((480, 640), np.uint8)
    with pytest.warns(UserWarning, match="2 faces found, using the largest"):
        box, n, attempt = L.detect_face(img, clip="c")
    assert fake.calls == [(320, 0), (640, 0), (640, 1)]  # no pass stops the others
    assert box == (300, 100, 500, 300) and n == 2 and attempt == "full"
    with pytest.warns(UserWarning, match="nearest the centre"):
        box_c, _, _ = L.detect_face(img, clip="c", face="centre")
    assert box_c == (300, 100, 500, 300)
    fake.per_pass = {}
    with pytest.raises(L.NoFaceError, match="'c'.*downscaled, full, upsampled"):
        L.detect_face(img, clip="c")


def test_large_frames_cap_the_full_and_upsampled_passes(monkeypatch):
    L._dlib()
    fake = FakeDetector({(L.FULL_MAX_SIDE, 0): [(400, 300, 800, 700)]})
    monkeypatch.setattr(L, "_DETECTOR", fake)
    box, n, attempt = L.detect_face(np.zeros((2160, 2880), np.uint8), clip="4k")
    assert fake.calls == [(320, 0), (L.FULL_MAX_SIDE, 0)]  # no upsampling of a 4K frame
    s = 2880 / L.FULL_MAX_SIDE
    assert box == tuple(round(v * s) for v in (400, 300, 800, 700)) and attempt == "full"


def test_real_photo_largest_centre_and_user_box(two_faces):
    with pytest.warns(UserWarning, match="2 faces found, using the largest"):
        big = L.detect_landmarks(two_faces, clip="two", detect_max_side=0)
    assert big.box[0] > 300 and big.num_faces == 2 and big.selection.startswith("largest of 2")
    with pytest.warns(UserWarning, match="nearest the centre"):
        mid = L.detect_landmarks(two_faces, clip="two", detect_max_side=0, face="centre")
    assert mid.box[0] < 300 and mid.box[2] - mid.box[0] < big.box[2] - big.box[0]
    assert mid.selection.startswith("nearest the centre of 2")
    user = L.detect_landmarks(two_faces, clip="two", face="%d,%d,%d,%d" % big.box)
    assert user.box == big.box and user.attempt == "user box" and user.selection.startswith("user face box")
    np.testing.assert_allclose(user.landmarks, big.landmarks, atol=0.5)
    assert (user.landmarks[:, 0] > 300).all()  # the landmarks are on the chosen face


def test_parse_face_box_and_bad_boxes():
    assert L.parse_face_box(None) == L.parse_face_box("") == L.parse_face_box("Largest") == "largest"
    assert L.parse_face_box("center") == "centre"
    assert L.parse_face_box("10, 20, 110, 140") == (10, 20, 110, 140) == L.parse_face_box([10, 20, 110, 140.2])
    for bad in ("10,20,30", "a,b,c,d", "50,20,10,80", "-1,0,5,5", "biggest"):
        with pytest.raises(L.FaceBoxError, match="--face-box"):
            L.parse_face_box(bad, what="--face-box")
    with pytest.raises(L.FaceBoxError, match=r"outside the 64×48 frame"):
        L.detect_face(np.zeros((48, 64), np.uint8), face=(0, 0, 65, 10))


def test_pipeline_and_cache_record_the_face(tmp_path, two_faces):
    import pandas as pd

    from _preprocess_helpers import write_clip
    from psyau_graph.preprocess.batch import clip_cache_path, load_clip_cache, preprocess_dataset

    grey = cv2.cvtColor(two_faces, cv2.COLOR_RGB2GRAY)
    frames = np.stack([np.roll(grey, k // 2, axis=1) for k in range(4)])
    for clip in ("EP01", "EP02"):
        write_clip(tmp_path / "f" / "sub01" / clip, frames, first=1, fmt="img{n}.png")
    df = pd.DataFrame([dict(subject="sub01", clip="EP01", onset=1, apex=3, offset=4, aus=frozenset(), emotion="x"),
                       dict(subject="sub01", clip="EP02", onset=1, apex=3, offset=4, aus=frozenset(), emotion="x",
                            face_box="centre")])
    with pytest.warns(UserWarning):
        rep = preprocess_dataset(df, tmp_path / "f", tmp_path / "c", dataset="casme2", flow="dis", workers=1,
                                 progress=False)
    assert rep["processed"] == 2, rep["skipped"]
    m1 = load_clip_cache(clip_cache_path(tmp_path / "c", "casme2", "sub01", "EP01"))["meta"]
    m2 = load_clip_cache(clip_cache_path(tmp_path / "c", "casme2", "sub01", "EP02"))["meta"]
    assert m1["face_selection"].startswith("largest of 2") and m1["face_box"][0] > 300
    assert m2["face_selection"].startswith("nearest the centre of 2") and m2["face_box"][0] < 300
    assert any("nearest the centre" in n for n in m2["notes"])


def test_cli_face_box_options(tmp_path, two_faces, capsys):
    from _preprocess_helpers import write_clip
    from psyau_graph.cli import main
    from psyau_graph.preprocess.batch import clip_cache_path, load_clip_cache

    grey = cv2.cvtColor(two_faces, cv2.COLOR_RGB2GRAY)
    frames = np.stack([np.roll(grey, k // 2, axis=1) for k in range(4)])
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n"
                     + "".join(f"01,{c},1,3,4,12,happiness\n" for c in ("EP01", "EP02", "EP03")))
    for clip in ("EP01", "EP02", "EP03"):
        write_clip(tmp_path / "f" / "sub01" / clip, frames, first=1, fmt="img{n}.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("subject,clip,face_box\nsub01,EP02,centre\nsub01,EP03,\"340,60,520,240\"\n")
    base = ["preprocess", "--annotations", str(sheet), "--dataset", "casme2", "--frames", str(tmp_path / "f"),
            "--flow", "dis", "--workers", "1", "--out", str(tmp_path / "c")]
    with pytest.warns(UserWarning):
        assert main(base + ["--face-boxes", str(boxes)]) == 0
    meta = {c: load_clip_cache(clip_cache_path(tmp_path / "c", "casme2", "sub01", c))["meta"]
            for c in ("EP01", "EP02", "EP03")}
    assert meta["EP01"]["face_selection"].startswith("largest")
    assert meta["EP02"]["face_selection"].startswith("nearest the centre") and meta["EP02"]["face_box"][0] < 300
    assert meta["EP03"]["face_selection"] == "user face box (340, 60, 520, 240)"
    capsys.readouterr()
    boxes.write_text("subject,clip,face_box\nsub01,EP09,centre\n")
    assert main(base + ["--face-boxes", str(boxes)]) == 2
    err = capsys.readouterr().err
    assert "boxes.csv row 2: clip sub01/EP09 is not in the sheet" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--face-box", "nearest"]) == 2
    assert "--face-box: expected 'largest', 'centre'" in capsys.readouterr().err
