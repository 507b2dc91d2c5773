"""Stage 3: one similarity transform per clip levels the eyes and crops to 128²."""
from __future__ import annotations

import numpy as np
import pytest

from psyau_graph.preprocess.align import (AlignConfig, align_clip, alignment_matrix, eye_centres,
                                          transform_points, warp_frames)


def template_face() -> np.ndarray:
    """A rough dlib-ordered 68-point face (x, y) with a level eye line, ~100 px wide."""
    rng = np.random.default_rng(0)
    lm = np.zeros((68, 2))
    t = np.linspace(-1, 1, 17)
    lm[0:17] = np.c_[150 + 50 * t, 150 + 60 * np.sqrt(1 - 0.8 * t ** 2) - 10]  # jaw
    lm[17:27] = np.c_[np.r_[np.linspace(110, 140, 5), np.linspace(160, 190, 5)], np.full(10, 95.0)]  # brows
    lm[27:36] = np.c_[150 + rng.uniform(-10, 10, 9), np.linspace(110, 150, 9)]  # nose
    lm[36:42] = np.c_[np.linspace(115, 140, 6), 110 + rng.uniform(-3, 3, 6)]  # eye L
    lm[42:48] = np.c_[np.linspace(160, 185, 6), 110 + rng.uniform(-3, 3, 6)]  # eye R
    lm[48:68] = np.c_[150 + 22 * np.cos(np.linspace(0, 2 * np.pi, 20)), 170 + 8 * np.sin(np.linspace(0, 2 * np.pi, 20))]
    return lm


def similarity(lm, angle_deg, scale, shift):
    a = np.deg2rad(angle_deg)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (lm @ R.T) * scale + shift


@pytest.mark.parametrize("angle, scale, shift", [(0, 1, (0, 0)), (17, 1.3, (40, -20)), (-25, 0.7, (300, 100))])
def test_eyes_level_and_invariance(angle, scale, shift):
    base = template_face()
    lm = similarity(base, angle, scale, shift)
    M = alignment_matrix(lm)
    assert M.shape == (2, 3)
    crop = transform_points(lm, M)
    le, re_ = eye_centres(crop)
    assert abs(le[1] - re_[1]) < 1e-4 and le[0] < re_[0]
    # the whole face fits in the 128² crop with the documented margins
    assert crop.min() > 2 and crop.max() < 126
    # a similarity-transformed face gives the same crop coordinates
    np.testing.assert_allclose(crop, transform_points(base, alignment_matrix(base)), atol=1e-3)


def test_margins():
    lm = template_face()
    cfg = AlignConfig(size=100, margin_side=0.0, margin_top=0.0, margin_bottom=0.0)
    crop = transform_points(lm, alignment_matrix(lm, cfg))
    # with no margin the landmarks touch two opposite edges of the square (pixel-centre convention)
    span = crop.max(0) - crop.min(0)
    assert abs(span.max() - 100) < 1e-3
    wide = transform_points(lm, alignment_matrix(lm, AlignConfig(size=100, margin_top=0.5)))
    assert wide[:, 1].min() > crop[:, 1].min() + 5  # more room above the brows
    with pytest.raises(ValueError, match="margin_top"):
        AlignConfig(margin_top=-0.1)


def test_warp_matches_point_transform():
    # a coordinate image: pixel value tells x; warping must put source x at M^-1(crop point)
    H, W = 300, 320
    xx = np.tile(np.arange(W, dtype=np.float32), (H, 1))
    lm = similarity(template_face(), 12, 1.1, (10, 5))
    M = alignment_matrix(lm)
    out = warp_frames(np.stack([xx, xx]), M)
    assert out.shape == (2, 128, 128)
    Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
    for (cx, cy) in [(10, 10), (64, 64), (100, 30)]:
        sx = transform_points([[cx, cy]], Minv)[0, 0]
        assert abs(out[0, cy, cx] - sx) < 0.01


def test_align_clip_uint8():
    lm = template_face()
    frames = np.random.default_rng(1).integers(0, 255, (3, 300, 300), dtype=np.uint8)
    res = align_clip(frames, lm)
    assert res.frames.shape == (3, 128, 128) and res.frames.dtype == np.uint8
    assert res.landmarks.shape == (68, 2) and res.matrix.shape == (2, 3)
    single = align_clip(frames[0], lm)
    np.testing.assert_array_equal(single.frames, res.frames[0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="lm68"):
        alignment_matrix(np.zeros((65, 2)))
    with pytest.raises(ValueError, match="eye centres coincide"):
        alignment_matrix(np.zeros((68, 2)))
    with pytest.raises(ValueError, match="matrix"):
        transform_points(np.zeros((3, 2)), np.eye(3))
