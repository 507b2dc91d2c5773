"""compute_flow / compute_flow_batch / apex_window_flow: conventions, batching, errors."""
import numpy as np
import pytest
import torch
from _flowdata import epe, face, make_pair, smooth_field

import psyau_graph.preprocess.flow as flowmod
from psyau_graph.preprocess.flow import (
    METHODS,
    FlowError,
    apex_window_flow,
    apex_window_indices,
    compute_flow,
    compute_flow_batch,
)


@pytest.fixture(scope="module")
def base():
    return face(64)


def shifted(base, du, dv):
    truth = np.empty((2,) + base.shape, np.float32)
    truth[0], truth[1] = du, dv
    return make_pair(base, truth)


@pytest.mark.parametrize("method", METHODS)
def test_sign_convention_on_pure_shift(base, method):
    # I1(x + u, y + v) = I0(x, y) with (u, v) = (0.8, -0.5): every method must report +0.8 on
    # channel 0 and -0.5 on channel 1.
    i0, i1 = shifted(base, 0.8, -0.5)
    flow = compute_flow(i0, i1, method)
    assert flow.shape == (2, 64, 64) and flow.dtype == np.float32
    inner = flow[:, 12:-12, 12:-12].reshape(2, -1).mean(1)
    np.testing.assert_allclose(inner, [0.8, -0.5], atol=0.15)


def test_methods_agree_with_each_other(base):
    i0, i1 = shifted(base, -0.6, 1.1)
    flows = {m: compute_flow(i0, i1, m)[:, 12:-12, 12:-12].reshape(2, -1).mean(1) for m in METHODS}
    np.testing.assert_allclose(flows["dis"], flows["tvl1"], atol=0.15)
    np.testing.assert_allclose(flows["farneback"], flows["tvl1"], atol=0.15)


@pytest.mark.parametrize("method", METHODS)
def test_uint8_float_numpy_torch_inputs(base, method):
    rng = np.random.default_rng(0)
    truth = smooth_field(rng, 64, 1.0)
    i0, i1 = make_pair(base, truth)
    u0, u1 = (np.round(i0 * 255).astype(np.uint8), np.round(i1 * 255).astype(np.uint8))
    ref = compute_flow(u0, u1, method)
    # float input quantised the same way gives the same flow; torch tensors too
    np.testing.assert_allclose(compute_flow(u0 / np.float32(255), u1 / np.float32(255), method), ref, atol=1e-4)
    np.testing.assert_allclose(compute_flow(torch.from_numpy(u0), torch.from_numpy(u1), method), ref, atol=1e-4)
    assert epe(ref, truth) < 0.3  # a loose bound valid for all three methods on this pair


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_single(base, method):
    rng = np.random.default_rng(1)
    pairs = [make_pair(base, smooth_field(rng, 64, m)) for m in (0.5, 1.5)]
    i0 = np.stack([p[0] for p in pairs])
    i1 = np.stack([p[1] for p in pairs])
    batch = compute_flow_batch(i0, i1, method)
    assert batch.shape == (2, 2, 64, 64) and batch.dtype == np.float32
    for k in range(2):
        np.testing.assert_allclose(batch[k], compute_flow(i0[k], i1[k], method), atol=1e-4)


def test_params_are_passed_through(base):
    i0, i1 = shifted(base, 0.5, 0.0)
    a = compute_flow(i0, i1, "tvl1", num_warp=1, num_iter=2)
    b = compute_flow(i0, i1, "tvl1")
    assert not np.allclose(a, b)
    with pytest.raises(TypeError):
        compute_flow(i0, i1, "dis", winsize=3)
    with pytest.raises(TypeError):
        compute_flow(i0, i1, "farneback", preset="fast")


def clip_frames(base, speeds, dv=0.0):
    """Frames whose displacement from frame 0 is (speeds[k], dv * k): returns (T, H, W) float32."""
    frames = []
    for k, du in enumerate(speeds):
        truth = np.empty((2,) + base.shape, np.float32)
        truth[0], truth[1] = -du, -dv * k
        # make_pair returns (I0 = base moved by truth, base); the moved image is frame k
        frames.append(make_pair(base, truth)[0])
    return np.stack(frames)


def test_apex_window_indices():
    assert apex_window_indices(10, 0, 5, 1) == [4, 5, 6]
    assert apex_window_indices(10, 0, 9, 1) == [8, 9]  # clipped at the end of the clip
    assert apex_window_indices(10, 3, 4, 2) == [4, 5, 6]  # never the onset or before
    assert apex_window_indices(10, 0, 5, 0) == [5]
    for args in [(10, 5, 5, 1), (10, 6, 5, 1), (10, 0, 10, 1), (10, -1, 5, 1), (10, 0, 5, -1)]:
        with pytest.raises(ValueError):
            apex_window_indices(*args)


@pytest.mark.parametrize("method", ["tvl1", "dis"])
def test_apex_window_flow_averages(base, method):
    speeds = [0.0, 0.3, 0.6, 1.2, 0.9, 0.6]
    frames = clip_frames(base, speeds)
    singles = {k: compute_flow(frames[0], frames[k], method) for k in (2, 3, 4, 5)}
    avg = apex_window_flow(frames, 0, 3, window=1, method=method)
    np.testing.assert_allclose(avg, (singles[2] + singles[3] + singles[4]) / 3, atol=1e-4)
    inner = avg[0, 12:-12, 12:-12].mean()
    assert abs(inner - (0.6 + 1.2 + 0.9) / 3) < 0.1
    # window 0 is the plain onset→apex flow; clipping at the end averages apex-1, apex only
    np.testing.assert_allclose(apex_window_flow(frames, 0, 3, window=0, method=method), singles[3], atol=1e-5)
    np.testing.assert_allclose(apex_window_flow(list(frames), 0, 5, window=1, method=method),
                               (singles[4] + singles[5]) / 2, atol=1e-4)


@pytest.mark.parametrize(
    "a, b, err",
    [
        (np.zeros((16, 16), np.uint8), np.zeros((16, 17), np.uint8), ValueError),  # shape mismatch
        (np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 16), np.uint8), ValueError),  # not 2-D
        (np.zeros((0, 16), np.float32), np.zeros((0, 16), np.float32), ValueError),  # empty
        (np.full((16, 16), np.nan, np.float32), np.zeros((16, 16), np.float32), ValueError),
        (np.full((16, 16), np.inf, np.float32), np.zeros((16, 16), np.float32), ValueError),
        (np.full((16, 16), 200.0, np.float32), np.zeros((16, 16), np.float32), ValueError),  # 0..255 floats
        (np.zeros((16, 16), np.int16), np.zeros((16, 16), np.int16), TypeError),
        ("onset.png", "apex.png", TypeError),
    ],
)
@pytest.mark.parametrize("method", METHODS)
def test_bad_inputs(a, b, err, method):
    with pytest.raises(err):
        compute_flow(a, b, method)


def test_bad_input_messages_name_the_argument():
    with pytest.raises(ValueError, match="apex"):
        compute_flow(np.zeros((16, 16), np.float32), np.full((16, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match="onsets"):
        compute_flow_batch(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32))


def test_opencv_failures_become_clear_errors():
    tiny = np.zeros((9, 9), np.uint8)
    with pytest.raises(ValueError, match="DIS failed on images of shape"):
        compute_flow(tiny, tiny, "dis")
    with pytest.raises(ValueError, match="Farneback failed"):
        compute_flow(np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8), "farneback", pyr_scale=1.5)


def test_real_non_finite_flow_raises(base):
    # Farneback with a zero window divides by zero: NaN flow, which must not pass through.
    img = np.round(base * 255).astype(np.uint8)
    with pytest.raises(FlowError, match="non-finite"):
        compute_flow(img, img, "farneback", winsize=0)


def test_unknown_method(base):
    with pytest.raises(ValueError, match="unknown flow method"):
        compute_flow(base, base, "lucas-kanade")
    with pytest.raises(ValueError, match="unknown flow method"):
        apex_window_flow(np.stack([base, base]), 0, 1, method="raft")


def test_apex_window_bad_frames(base):
    with pytest.raises(ValueError, match="different shapes"):
        apex_window_flow([base, base[:32]], 0, 1)
    with pytest.raises(ValueError, match="empty"):
        apex_window_flow([], 0, 1)
    with pytest.raises(ValueError, match="after onset"):
        apex_window_flow(np.stack([base, base]), 1, 1)


@pytest.mark.parametrize("method", METHODS)
def test_non_finite_output_raises(base, monkeypatch, method):
    def nan_flow(a, b, params):
        return np.full((a.shape[0] if a.ndim == 3 else 1, 2) + a.shape[-2:], np.nan, np.float32)[
            (slice(None),) if a.ndim == 3 else 0
        ]

    target = {"tvl1": "_tvl1_batch", "dis": "_dis_flow", "farneback": "_farneback_flow"}[method]
    monkeypatch.setattr(flowmod, target, nan_flow)
    with pytest.raises(FlowError, match="non-finite"):
        compute_flow_batch(base[None], base[None], method)
