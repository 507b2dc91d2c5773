"""65 keypoints and ROI groups: data integrity and the 68 → 65 mapping."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from psyau_graph.preprocess import keypoints as K

PRIORS = Path(__file__).resolve().parents[1] / "priors"


def test_spec_shape_and_choice():
    spec = K.keypoint_spec()
    assert len(spec) == K.NUM_KEYPOINTS == 65
    dlib_single = [k["dlib"][0] for k in spec if k["kind"] == "dlib"]
    mids = [k for k in spec if k["kind"] == "midpoint"]
    assert len(mids) == 7 and all(len(k["dlib"]) == 2 for k in mids)
    assert all(k["region"] in ("brow", "cheek") for k in mids)
    jaw = [d for d in dlib_single if d <= 16]
    assert len(jaw) == 7  # 10 of the 17 contour points dropped
    assert sorted(dlib_single) == sorted(jaw + list(range(17, 68)))  # all non-jaw points kept
    assert len(set(K.keypoint_names())) == 65


def test_landmarks_to_keypoints_matches_definition():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0, 128, size=(68, 2))
    kp = K.landmarks_to_keypoints(lm)
    assert kp.shape == (65, 2) and kp.dtype == np.float32
    for k in K.keypoint_spec():
        expect = lm[k["dlib"]].mean(axis=0)
        np.testing.assert_allclose(kp[k["index"]], expect, rtol=1e-5, atol=1e-4)
    # named anchors
    names = K.keypoint_names()
    np.testing.assert_allclose(kp[names.index("glabella")], (lm[21] + lm[22]) / 2, atol=1e-4)
    np.testing.assert_allclose(kp[names.index("dlib8")], lm[8], atol=1e-4)
    # batched
    kb = K.landmarks_to_keypoints(np.stack([lm, lm + 1]))
    assert kb.shape == (2, 65, 2)
    np.testing.assert_allclose(kb[1], kp + 1, atol=1e-4)
    W = K.keypoint_matrix()
    assert W.shape == (65, 68)
    np.testing.assert_allclose(W.sum(1), 1.0)


@pytest.mark.parametrize("bad", [np.zeros((65, 2)), np.zeros((68, 3)), np.full((68, 2), np.nan)])
def test_landmarks_bad_input(bad):
    with pytest.raises(ValueError, match="lm68"):
        K.landmarks_to_keypoints(bad)


def test_roi_groups_sizes_ranges_coverage():
    groups = K.roi_groups()
    assert sorted(groups) == [1, 2, 3, 4]
    assert {g: len(v) for g, v in groups.items()} == {1: 23, 2: 48, 3: 38, 4: 52}
    assert sum(len(v) for v in groups.values()) == 161
    for g, ks in groups.items():
        assert len(set(ks)) == len(ks), f"group {g} has duplicates"
        assert all(0 <= k < 65 for k in ks)
        assert ks == sorted(ks)
    # decided: every keypoint serves at least one group
    assert set().union(*map(set, groups.values())) == set(range(65))
    info = K.roi_group_info()
    assert info[1]["aus"] == [1, 2, 4] and info[4]["aus"] == [12, 14, 15, 17]
    groups[1].append(99)  # a copy: the cached data is not changed
    assert len(K.roi_groups()[1]) == 23


def test_groups_follow_regions():
    spec = K.keypoint_spec()
    region = {k["index"]: k["region"] for k in spec}
    g = K.roi_groups()
    # primary regions are fully covered
    assert {i for i, r in region.items() if r == "brow"} <= set(g[1])
    assert {i for i, r in region.items() if r == "eye"} <= set(g[2])
    assert {i for i, r in region.items() if r.startswith("nose")} <= set(g[3])
    assert {i for i, r in region.items() if r.endswith("lip")} <= set(g[4])
    # g1 (brows + eyes) contains no mouth point
    assert not any(region[i].endswith("lip") for i in g[1])


def test_json_files_are_the_packaged_ones():
    doc = json.loads((PRIORS / "roi_groups.json").read_text())
    assert doc["groups"]["2"]["keypoints"] == K.roi_groups()[2]
    assert all("description" in v for v in doc["groups"].values())
    kdoc = json.loads((PRIORS / "keypoints65.json").read_text())
    assert all(k.get("description") for k in kdoc["keypoints"] if k["kind"] == "midpoint")
