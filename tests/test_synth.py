"""The synthetic micro-expression generator."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from psyau_graph.data.annotations import read_annotations
from psyau_graph.data.layouts import find_clip_frames
from psyau_graph.data.synth import (EMOTIONS, SynthConfig, astronaut_landmarks, au_field, generate_synthetic,
                                    load_gt_flow, make_identity, plan_dataset, render_clip)

SMALL = dict(subjects=2, clips_per_subject=3, frames_per_clip=8, size=128)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    sheet = generate_synthetic(out, config=SynthConfig(**SMALL, seed=3), progress=False)
    return out, sheet


def test_written_as_a_normal_dataset(small_set):
    out, sheet = small_set
    df = read_annotations(sheet, "synth")
    assert len(df) == 6 and df.attrs["report"] == []
    assert sorted(df["subject"].unique()) == ["sub01", "sub02"]
    assert set(df["emotion"]) <= set(EMOTIONS)
    for _, row in df.iterrows():
        frames = find_clip_frames(out, row)  # dataset column "synth" → CASME II layout
        nums = [n for n, _ in frames]
        assert len(nums) == 8 and nums == list(range(nums[0], nums[0] + 8))
        assert nums[0] <= row["onset"] < row["apex"] <= row["offset"] <= nums[-1]
        assert frames[0][1].name == f"img{nums[0]}.jpg"
        flow = load_gt_flow(out, row["subject"], row["clip"])
        assert flow.shape == (2, 128, 128) and np.isfinite(flow).all()
        with np.load(out / row["subject"] / row["clip"] / "flow_gt.npz") as z:
            assert set(z["aus"].tolist()) == set(row["aus"]) and str(z["emotion"]) == row["emotion"]
    assert not list(out.glob("*/.tmp_*"))


def test_deterministic_and_seed_dependent(small_set, tmp_path):
    out, _ = small_set
    again = generate_synthetic(tmp_path / "a", config=SynthConfig(**SMALL, seed=3), progress=False,
                               workers=1).parent  # the fixture used 2 worker processes
    for f in sorted(out.glob("sub*/EP*/*")):
        assert (again / f.relative_to(out)).read_bytes() == f.read_bytes(), f
    other = generate_synthetic(tmp_path / "b", config=SynthConfig(**SMALL, seed=4), progress=False).parent
    a = (out / "sub01" / "EP01" / "flow_gt.npz").read_bytes()
    assert (other / "sub01" / "EP01" / "flow_gt.npz").read_bytes() != a


def test_resume_skips_existing_and_replaces_partial(small_set, tmp_path):
    out, _ = small_set
    cfg = SynthConfig(**SMALL, seed=3)
    root = generate_synthetic(tmp_path / "r", config=cfg, progress=False).parent
    import shutil

    shutil.rmtree(root / "sub02" / "EP02")
    (root / "sub01" / "EP03" / "flow_gt.npz").unlink()  # a partial clip folder
    (root / "sub01" / ".tmp_EP01_999").mkdir()  # debris of a killed run, ignored
    generate_synthetic(root, config=cfg, progress=False)
    info = json.loads((root / "synth_info.json").read_text())["last_run"]
    assert info == {**info, "clips_written": 2, "clips_skipped": 4}
    for clip in ("sub02/EP02", "sub01/EP03"):
        for f in sorted((out / clip).iterdir()):
            assert (root / clip / f.name).read_bytes() == f.read_bytes()


def test_true_flow_explains_the_motion():
    cfg = SynthConfig(subjects=1, clips_per_subject=8, frames_per_clip=10, size=160, noise=0.0, blink_prob=0.0)
    import cv2

    face, lm = make_identity(np.random.default_rng(0), cfg.size)
    face = cv2.GaussianBlur(face, (0, 0), 2.0)  # smooth texture: bilinear resampling error negligible

    for plan in plan_dataset(cfg)[:4]:
        frames, flow, nums = render_clip(plan, face, lm, cfg)
        on = frames[nums.index(plan.onset)].astype(np.float32)
        ap = frames[nums.index(plan.apex)].astype(np.float32)
        yy, xx = np.mgrid[0:cfg.size, 0:cfg.size].astype(np.float32)
        back = cv2.remap(ap, xx + flow[0], yy + flow[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        inner = (slice(20, -20), slice(20, -20))
        err_warped = np.abs(back - on)[inner].mean()
        err_raw = np.abs(ap - on)[inner].mean()
        wrong = cv2.remap(ap, xx - flow[0], yy - flow[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        err_wrong_sign = np.abs(wrong - on)[inner].mean()
        # two independent uint8 roundings alone give a mean |difference| of ~0.33 grey levels
        assert err_warped < 0.55 and err_warped < 0.5 * err_raw < err_wrong_sign, (plan, err_warped, err_raw)
        # peak expression ≤ 2 px plus head motion (≤ 0.5 px per axis at each of two frames)
        assert np.hypot(flow[0], flow[1]).max() <= 2.0 + 2 * 0.5 * np.sqrt(2) + 0.3


def test_au_fields_are_local_and_unilateral():
    lm = astronaut_landmarks() * 0.5  # 256-pixel coordinates
    f12 = au_field([12], lm, 256, {12: 1.0})
    mag = np.hypot(f12[..., 0], f12[..., 1])
    corner, brow = lm[48].round().astype(int), lm[19].round().astype(int)
    assert mag[corner[1], corner[0]] > 0.8 and mag[brow[1], brow[0]] < 0.05
    assert f12[corner[1], corner[0], 1] < 0  # lip corner moves up
    left = au_field([12], lm, 256, {12: 1.0}, side="l")
    right_corner = lm[54].round().astype(int)
    assert np.hypot(*left[right_corner[1], right_corner[0]]) < 0.05 < np.hypot(*left[corner[1], corner[0]])
    f1 = au_field([1], lm, 256, {1: 1.0})
    inner_brow = lm[21].round().astype(int)
    assert f1[inner_brow[1], inner_brow[0], 1] < -0.5  # AU1 raises the inner brow


def test_plans_heterogeneous_and_faithful():
    plans = plan_dataset(SynthConfig(subjects=6, clips_per_subject=40, seed=0))
    by_subject = {}
    for p in plans:
        by_subject.setdefault(p.subject, Counter())[p.emotion] += 1
    mixes = np.array([[c[e] / 40 for e in EMOTIONS] for c in by_subject.values()])
    assert np.abs(mixes - mixes.mean(0)).max() > 0.2  # subjects' class mixes differ
    assert set(p.emotion for p in plans) == set(EMOTIONS)
    for p in plans:
        assert p.aus and all(a in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17) for a in p.aus)
        if p.shown == "contempt":
            assert any(t[0] in "LR" for t in p.facs.split("+"))  # unilateral 12/14
    atypical = sum(p.shown != p.emotion for p in plans)
    assert 0.05 * len(plans) < atypical < 0.3 * len(plans)  # atypical_prob = 0.15
    happy = [set(p.aus) for p in plans if p.shown == "happiness"]
    assert sum({6, 12} <= s for s in happy) > len(happy) / 2  # prototype mostly kept, sometimes dropped
    assert any(not {6, 12} <= s for s in happy)


def test_identities_differ():
    a, la = make_identity(np.random.default_rng([0, 0, 1]), 128)
    b, lb = make_identity(np.random.default_rng([0, 1, 1]), 128)
    assert a.shape == (128, 128, 3) and la.shape == (68, 2)
    assert np.abs(la - lb).mean() > 1.0 and np.abs(a - b).mean() > 0.02


@pytest.mark.parametrize("kw, msg", [(dict(subjects=0), "subjects"), (dict(frames_per_clip=3), "frames_per_clip"),
                                     (dict(size=50), "size"), (dict(amplitude=(2.0, 1.0)), "amplitude")])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SynthConfig(**kw).validate()


def test_cli(tmp_path, capsys):
    from psyau_graph.cli import main

    rc = main(["synth", "--out", str(tmp_path / "s"), "--subjects", "1", "--clips-per-subject", "2",
               "--frames-per-clip", "6", "--size", "112", "--xlsx"])
    assert rc == 0 and "2 written" in capsys.readouterr().out
    x = read_annotations(tmp_path / "s" / "annotations.xlsx", "synth")
    c = read_annotations(tmp_path / "s" / "annotations.csv", "synth")
    assert x[["subject", "clip", "onset", "apex", "aus"]].equals(c[["subject", "clip", "onset", "apex", "aus"]])


def test_shipped_landmarks_match_dlib():
    pytest.importorskip("dlib")
    from psyau_graph.data.synth import detect_astronaut_landmarks

    got = np.asarray(detect_astronaut_landmarks()["landmarks_xy"], float)
    assert np.abs(got - astronaut_landmarks()).max() <= 1.0
