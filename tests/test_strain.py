"""Optical strain on analytic flow fields."""
import math

import numpy as np
import pytest
import torch

from psyau_graph.preprocess.strain import flow_with_strain, optical_strain


def linear_flow(a, b, c, d, h=7, w=9, dtype=np.float64):
    """u = a x + b y, v = c x + d y (x along columns, y along rows)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(dtype)
    return np.stack([a * xx + b * yy, c * xx + d * yy])


def test_linear_flow_constant_strain_by_hand():
    # u_x = 0.1, u_y = 0.2, v_x = -0.05, v_y = 0.3
    # eps = sqrt(0.1^2 + 0.3^2 + 0.5 * (0.2 - 0.05)^2) = sqrt(0.01 + 0.09 + 0.01125)
    eps = optical_strain(linear_flow(0.1, 0.2, -0.05, 0.3))
    assert eps.shape == (7, 9)
    np.testing.assert_allclose(eps, math.sqrt(0.11125), rtol=1e-12)  # borders included


def test_rotation_and_translation_have_zero_strain():
    omega = 0.03
    rot = linear_flow(0.0, -omega, omega, 0.0)  # u = -w y, v = w x
    np.testing.assert_allclose(optical_strain(rot), 0.0, atol=1e-12)
    shift = np.stack([np.full((5, 6), 1.7), np.full((5, 6), -0.4)])
    np.testing.assert_allclose(optical_strain(shift), 0.0, atol=1e-12)


def test_expansion():
    a = 0.05
    np.testing.assert_allclose(optical_strain(linear_flow(a, 0, 0, a)), math.sqrt(2) * a, rtol=1e-12)


def test_axes_are_x_columns_y_rows():
    # u = 0.2 y only: a pure shear term, eps = sqrt(0.5) * 0.2; a swapped x/y would give u_x = 0.2.
    # u = 0.2 x only: eps = 0.2. These differ, so the test pins the axes.
    np.testing.assert_allclose(optical_strain(linear_flow(0, 0.2, 0, 0)), math.sqrt(0.5) * 0.2, rtol=1e-12)
    np.testing.assert_allclose(optical_strain(linear_flow(0.2, 0, 0, 0)), 0.2, rtol=1e-12)


def test_central_inside_one_sided_at_borders():
    # u = x^2: central difference is exactly 2x inside; at x = 0 the one-sided difference is 1 - 0 = 1,
    # at x = W-1 it is (W-1)^2 - (W-2)^2 = 2W - 3.
    h, w = 4, 6
    xx = np.tile(np.arange(w, dtype=np.float64), (h, 1))
    flow = np.stack([xx**2, np.zeros((h, w))])
    eps = optical_strain(flow)
    np.testing.assert_allclose(eps[:, 1:-1], 2 * xx[:, 1:-1])
    np.testing.assert_allclose(eps[:, 0], 1.0)
    np.testing.assert_allclose(eps[:, -1], 2 * w - 3)


def test_torch_matches_numpy_and_batches():
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(3, 2, 2, 8, 10)).astype(np.float32)
    ref = optical_strain(flow)
    assert ref.shape == (3, 2, 8, 10) and ref.dtype == np.float32
    out = optical_strain(torch.from_numpy(flow))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    # each item of the batch on its own
    np.testing.assert_allclose(optical_strain(flow[1, 0]), ref[1, 0], rtol=1e-6)


def test_flow_with_strain_channels():
    flow = linear_flow(0.1, 0.2, -0.05, 0.3)
    f3 = flow_with_strain(flow)
    assert f3.shape == (3, 7, 9)
    np.testing.assert_array_equal(f3[:2], flow)
    np.testing.assert_allclose(f3[2], math.sqrt(0.11125))
    t3 = flow_with_strain(torch.from_numpy(np.stack([flow, -flow])))
    assert t3.shape == (2, 3, 7, 9)
    torch.testing.assert_close(t3[1, :2], torch.from_numpy(-flow))


def test_gradcheck():
    flow = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(optical_strain, (flow,))


@pytest.mark.parametrize(
    "bad, err",
    [
        (np.zeros((3, 5, 5)), ValueError),  # 3 channels
        (np.zeros((2, 1, 5)), ValueError),  # H < 2
        (np.zeros((5, 5)), ValueError),  # no channel axis
        (np.zeros((2, 5, 5), dtype=np.int64), TypeError),
        ([[0.0]], TypeError),
    ],
)
def test_bad_input(bad, err):
    with pytest.raises(err):
        optical_strain(bad)
