"""ROI patch extraction and the 28×28 face map, on hand-made maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psyau_graph.preprocess.rois import extract_rois, face_flow_map, roi_centres


def coord_map(h=128, w=128):
    """Channel 0 = x, channel 1 = y, channel 2 = 1000*y + x: every pixel tells where it is."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx, yy, 1000 * yy + xx])


def test_patch_centred_on_rounded_keypoint():
    f = coord_map()
    kp = np.array([[10.0, 20.0], [63.4, 70.6], [100.5, 50.49]])
    r = extract_rois(f, kp)
    assert r.shape == (3, 3, 5, 5) and r.dtype == np.float32
    for k, (cx, cy) in enumerate([(10, 20), (63, 71), (101, 50)]):
        assert r[k, 0, 2, 2] == cx and r[k, 1, 2, 2] == cy
        np.testing.assert_array_equal(r[k, 0, 0], np.arange(cx - 2, cx + 3))  # x along columns
        np.testing.assert_array_equal(r[k, 1, :, 0], np.arange(cy - 2, cy + 3))  # y along rows
        assert r[k, 2, 0, 0] == 1000 * (cy - 2) + (cx - 2)


def test_border_patches_shift_inside():
    f = coord_map(32, 40)
    kp = np.array([[0.0, 0.0], [39.0, 31.0], [-5.0, 100.0], [1.0, 30.2]])
    r = extract_rois(f, kp)
    assert r.shape == (4, 3, 5, 5)
    np.testing.assert_array_equal(r[0, 0, 2, 2], 2)  # centre moved to (2, 2)
    np.testing.assert_array_equal(r[0, 1, 2, 2], 2)
    assert (r[1, 0, 2, 2], r[1, 1, 2, 2]) == (37, 29)
    assert (r[2, 0, 2, 2], r[2, 1, 2, 2]) == (2, 29)
    assert (r[3, 0, 2, 2], r[3, 1, 2, 2]) == (2, 29)
    assert r[..., 0, :, :].min() >= 0 and r[..., 0, :, :].max() <= 39
    np.testing.assert_array_equal(roi_centres(kp, 32, 40), [[2, 2], [37, 29], [2, 29], [2, 29]])


def test_65_keypoints_torch_and_batched_agree():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(3, 128, 128)).astype(np.float32)
    kp = rng.uniform(-3, 131, size=(65, 2))
    r = extract_rois(f, kp)
    assert r.shape == (65, 3, 5, 5)
    rt = extract_rois(torch.from_numpy(f), torch.from_numpy(kp))
    assert isinstance(rt, torch.Tensor)
    np.testing.assert_array_equal(rt.numpy(), r)
    f2 = np.stack([f, -f])
    kp2 = np.stack([kp, kp[::-1]])
    rb = extract_rois(f2, kp2)
    assert rb.shape == (2, 65, 3, 5, 5)
    np.testing.assert_array_equal(rb[0], r)
    np.testing.assert_array_equal(rb[1], extract_rois(-f, kp[::-1]))
    rbt = extract_rois(torch.from_numpy(f2), kp2)
    np.testing.assert_array_equal(rbt.numpy(), rb)


@pytest.mark.parametrize(
    "args, match",
    [((np.zeros((128, 128)), np.zeros((65, 2))), "flow3"),
     ((np.zeros((3, 128, 128)), np.zeros((65, 3))), "keypoints"),
     ((np.zeros((3, 128, 128)), np.full((65, 2), np.nan)), "non-finite"),
     ((np.zeros((3, 4, 4)), np.zeros((65, 2))), "smaller"),
     ((np.zeros((2, 3, 8, 8)), np.zeros((65, 2))), "keypoints")],
)
def test_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        extract_rois(*args)
    with pytest.raises(ValueError, match="odd"):
        extract_rois(np.zeros((3, 16, 16)), np.zeros((1, 2)), size=4)


def test_face_flow_map_area_mean():
    # 56x56 -> 28x28 is exact 2x2 block averaging
    rng = np.random.default_rng(2)
    f = rng.normal(size=(3, 56, 56)).astype(np.float32)
    m = face_flow_map(f)
    assert m.shape == (3, 28, 28) and m.dtype == np.float32
    np.testing.assert_allclose(m, f.reshape(3, 28, 2, 28, 2).mean(axis=(2, 4)), atol=1e-6)
    # 128 -> 28: a constant map stays constant, the global mean is kept
    c = np.full((3, 128, 128), 0.7, np.float32)
    np.testing.assert_allclose(face_flow_map(c), 0.7, atol=1e-6)
    g = rng.normal(size=(3, 128, 128)).astype(np.float32)
    np.testing.assert_allclose(face_flow_map(g).mean(axis=(1, 2)), g.mean(axis=(1, 2)), atol=0.02)
    # a step edge keeps its position (left half −1, right half +1)
    s = np.ones((3, 128, 128), np.float32)
    s[:, :, :64] = -1
    ms = face_flow_map(s)
    assert (ms[:, :, :14] == -1).all() and (ms[:, :, 14:] == 1).all()
    mt = face_flow_map(torch.from_numpy(f)[None])
    assert tuple(mt.shape) == (1, 3, 28, 28)
    np.testing.assert_allclose(mt[0].numpy(), m, atol=1e-6)
    with pytest.raises(ValueError, match="flow3"):
        face_flow_map(np.zeros((128, 128)))
