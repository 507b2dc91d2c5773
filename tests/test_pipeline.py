"""preprocess_clip end to end on an astronaut clip with known motion around the mouth."""
from __future__ import annotations

import numpy as np
import pytest

from _preprocess_helpers import mouth_pull_frames, write_clip
from psyau_graph.preprocess.frames import FrameError
from psyau_graph.preprocess.keypoints import keypoint_names, roi_groups
from psyau_graph.preprocess.landmarks import NoFaceError
from psyau_graph.preprocess.pipeline import ClipFeatures, preprocess_clip
from psyau_graph.preprocess.rois import extract_rois, face_flow_map


@pytest.fixture(scope="module")
def frames():
    return mouth_pull_frames(n=6, amp=2.0)  # apex = frame 4


@pytest.fixture(scope="module")
def feats(frames):
    return preprocess_clip(frames, 0, 4, flow="dis", name="astro")


def test_contract_fields(feats):
    assert isinstance(feats, ClipFeatures)
    for name, shape, dtype in [("rois", (65, 3, 5, 5), np.float32), ("flow28", (3, 28, 28), np.float32),
                               ("keypoints", (65, 2), np.float32), ("flow", (3, 128, 128), np.float32),
                               ("onset_crop", (128, 128), np.uint8), ("apex_crop", (128, 128), np.uint8)]:
        a = getattr(feats, name)
        assert a.shape == shape and a.dtype == dtype, name
    assert feats.matrix.shape == (2, 3) and feats.apex_numbers == [3, 4, 5]
    assert (feats.keypoints > 0).all() and (feats.keypoints < 128).all()
    assert feats.flow_method == "dis" and set(feats.timings) >= {"landmarks", "flow"}
    # stages agree when called alone
    np.testing.assert_array_equal(feats.rois, extract_rois(feats.flow, feats.keypoints))
    np.testing.assert_allclose(feats.flow28, face_flow_map(feats.flow), atol=1e-6)
    assert (feats.flow[2] >= 0).all()


def test_motion_lands_on_mouth_rois(feats):
    names = keypoint_names()
    mouth = [names.index(f"dlib{i}") for i in range(48, 68)]
    brows = [names.index(f"dlib{i}") for i in range(17, 27)]
    u_mouth = feats.rois[mouth, 0].mean()
    u_brow = np.abs(feats.rois[brows, 0]).mean()
    # the frames move +2 px (×1.1 crop scale) to the right at the mouth; DIS sees most of it
    assert u_mouth > 0.8 and u_brow < 0.2
    assert np.abs(feats.rois[mouth, 1]).mean() < 0.5  # no vertical motion put in
    g4 = roi_groups()[4]
    assert feats.rois[g4, 0].mean() > feats.rois[roi_groups()[1], 0].mean() + 0.3


def test_apex_window_and_sources(frames, tmp_path):
    one = preprocess_clip(frames, 0, 4, flow="farneback", apex_window=0)
    assert one.apex_numbers == [4]
    nums = write_clip(tmp_path / "EP01", frames, first=46, fmt="img{n}.png")
    fromdisk = preprocess_clip(tmp_path / "EP01", 46, 50, flow="farneback", apex_window=0)
    assert fromdisk.onset == 46 and fromdisk.apex == 50 and nums[-1] == 51
    np.testing.assert_allclose(fromdisk.rois, one.rois, atol=1e-4)  # PNG is lossless


def test_onset_equals_apex_reported(frames):
    f = preprocess_clip(frames, 2, 2, flow="dis", apex_window=0)
    assert f.apex == 3 and any("onset == apex" in n for n in f.notes)


def test_errors_name_the_clip(frames):
    blank = np.full((6, 200, 200), 120, np.uint8)
    with pytest.raises(NoFaceError, match="'blank'"):
        preprocess_clip(blank, 0, 3, flow="dis", name="blank")
    with pytest.raises(FrameError, match="'astro'.*outside"):
        preprocess_clip(frames, 0, 40, flow="dis", name="astro")
    with pytest.raises(ValueError, match="flow"):
        preprocess_clip(frames, 0, 4, flow="lucas-kanade")


def test_tvl1_default(frames):
    f = preprocess_clip(frames, 0, 4, apex_window=0)
    assert f.flow_method == "tvl1" and f.flow.shape == (3, 128, 128)
    names = keypoint_names()
    mouth = [names.index(f"dlib{i}") for i in range(48, 68)]
    assert f.rois[mouth, 0].mean() > 0.8


def test_prepare_then_finish_equals_preprocess(frames, feats):
    from psyau_graph.preprocess.pipeline import finish_clip, flow_batch, prepare_clip

    prep = prepare_clip(frames, 0, 4, name="astro")
    assert prep.apex_crops.shape == (3, 128, 128) and prep.apex_numbers == [3, 4, 5]
    f2 = flow_batch(np.repeat(prep.onset_crop[None], 3, 0), prep.apex_crops, "dis")
    out = finish_clip(prep, f2, flow_method="dis")
    np.testing.assert_allclose(out.rois, feats.rois, atol=1e-5)
    with pytest.raises(ValueError, match="flows"):
        finish_clip(prep, f2[:2], flow_method="dis")
