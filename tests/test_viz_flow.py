"""plot_flow / plot_keypoints write readable PNGs; flow colour code is right."""
from __future__ import annotations

import numpy as np
import pytest

from psyau_graph.preprocess.keypoints import roi_groups
from psyau_graph.viz.flow import flow_to_rgb, plot_flow, plot_keypoints, primary_groups


def test_flow_to_rgb_code():
    u = np.array([[1.0, -1.0, 0.0, 0.0]])
    v = np.array([[0.0, 0.0, 1.0, 0.0]])
    rgb = flow_to_rgb(u, v)
    assert rgb.shape == (1, 4, 3)
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0], atol=1e-6)  # +x: red (hue 0)
    np.testing.assert_allclose(rgb[0, 1], [0, 1, 1], atol=1e-6)  # -x: cyan (hue 0.5)
    assert rgb[0, 3].max() == 0  # no motion: black
    half = flow_to_rgb(np.array([[0.5]]), np.array([[0.0]]), max_flow=1.0)
    np.testing.assert_allclose(half[0, 0], [0.5, 0, 0], atol=1e-6)


def test_primary_groups():
    pg = primary_groups()
    assert len(pg) == 65 and set(pg) == {1, 2, 3, 4}
    groups = roi_groups()
    assert all(k in groups[g] for k, g in enumerate(pg))
    assert pg[7] == 1 and pg[26] == 2 and pg[17] == 3 and pg[38] == 4  # brow, eye, nose, lip


def _png_ok(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_plot_flow_png(tmp_path):
    yy, xx = np.mgrid[0:128, 0:128].astype(float)
    u = np.exp(-((xx - 64) ** 2 + (yy - 90) ** 2) / 200)
    v = -0.5 * np.exp(-((xx - 64) ** 2 + (yy - 40) ** 2) / 200)
    face = (xx + yy).astype(np.uint8)
    kp = np.random.default_rng(0).uniform(0, 127, (65, 2))
    out = tmp_path / "f.png"
    fig = plot_flow((u, v), image=face, keypoints=kp, roi_groups=True, out=out, title="t")
    assert out.is_file() and len(fig.axes) >= 3
    _png_ok(out)
    # 3-channel array input, no face, no keypoints
    out2 = tmp_path / "g.png"
    plot_flow(np.stack([u, v, np.hypot(u, v)]), out=out2)
    _png_ok(out2)
    with pytest.raises(ValueError, match="flow"):
        plot_flow(np.zeros((4, 8, 8)))


def test_plot_keypoints_png(tmp_path):
    kp = np.random.default_rng(1).uniform(0, 127, (65, 2))
    img = np.random.default_rng(2).integers(0, 255, (128, 128), dtype=np.uint8)
    out = tmp_path / "k.png"
    fig = plot_keypoints(img, kp, roi_groups(), out, kinds=["dlib"] * 58 + ["midpoint"] * 7)
    assert len(fig.axes) == 5
    _png_ok(out)
