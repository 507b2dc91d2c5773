"""psyau train → evaluate → predict on a tiny cache (real FedPsyAU, one epoch)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from psyau_graph.cli import main

from _fakes_train import one_thread  # noqa: F401

import psyau_graph.data.dataset  # noqa: E402,F401  (a broken module fails here, never skips)
import psyau_graph.nn.model  # noqa: E402,F401

EMOTIONS = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]


def _write_cache(root, n_subjects=4, per_subject=3, seed=0):
    """Contract-format clip files (PIPE's save_clip) with random features."""
    from psyau_graph.preprocess.batch import clip_cache_path, save_clip

    rng = np.random.default_rng(seed)
    for s in range(n_subjects):
        for k in range(per_subject):
            feats = SimpleNamespace(rois=rng.normal(size=(65, 3, 5, 5)).astype(np.float32),
                                    flow28=rng.normal(size=(3, 28, 28)).astype(np.float32),
                                    keypoints=(rng.random((65, 2)) * 128).astype(np.float32),
                                    flow=rng.normal(size=(3, 128, 128)).astype(np.float32))
            meta = {"dataset": "synth", "subject": f"sub{s + 1:02d}", "clip": f"EP{k + 1:02d}", "onset": 0,
                    "apex": 5, "offset": 9, "aus": [4, 9] if k % 2 else [6, 12],
                    "emotion": EMOTIONS[(s + k) % 7], "flow_method": "dis"}
            save_clip(clip_cache_path(root, "synth", meta["subject"], meta["clip"]), feats, meta)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_train")
    cache = _write_cache(tmp / "cache")
    out = tmp / "run"
    argv = ["train", "--data", str(cache), "--classes", "synth", "--protocol", "kfold:2", "--epochs", "1",
            "--batch-size", "6", "--lr", "1e-3", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    return SimpleNamespace(cache=cache, out=out, argv=argv)


@pytest.mark.slow
def test_train_writes_results_and_model(trained, capsys):
    res = json.loads((trained.out / "results.json").read_text())
    assert res["protocol"] == "kfold:2" and res["ablation"] == "VI" and len(res["folds"]) == 2
    assert res["class_names"] == EMOTIONS and res["pooled"]["n"] == 12
    assert res["extra"]["classes"] == "synth"
    for name in ("model.pt", "predictions.csv", "confusion.png", "curves.png", "folds.png", "attention.png"):
        assert (trained.out / name).is_file(), name
    from psyau_graph.train.checkpoint import load_checkpoint

    ck = load_checkpoint(trained.out / "model.pt")
    assert ck["flow_method"] == "dis" and ck["label_scheme"] == "synth" and ck["class_names"] == EMOTIONS
    # --resume on a finished run redoes nothing and reports the same numbers
    assert main(trained.argv + ["--resume"]) == 0
    again = json.loads((trained.out / "results.json").read_text())
    assert again["pooled"] == res["pooled"] and again["folds"] == res["folds"]
    assert "UF1" in capsys.readouterr().out


def test_evaluate_json(trained, capsys, tmp_path):
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(trained.out / "model.pt"), "--data", str(trained.cache),
                 "--json", "--out", str(tmp_path)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 12 and ev["class_names"] == EMOTIONS and ev["label_scheme"] == "synth"
    assert int(np.sum(ev["confusion"])) == 12 and 0.0 <= ev["uf1"] <= 1.0
    assert len(ev["au_f1_per_au"]) == 12
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "evaluation.json").is_file()


def test_train_rejects_bad_protocol(trained, capsys, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    assert main(["train", "--data", str(trained.cache), "--protocol", "holdout",
                 "--out", str(trained.out / "x")]) == 2
    assert "psyau train: error: unknown protocol 'holdout'" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_runs_the_real_pipeline(trained, capsys, tmp_path):
    """A synthetic clip (real frames) through preprocess_clip and the trained model."""
    from psyau_graph.data.annotations import read_annotations
    from psyau_graph.data.synth import generate_synthetic

    sheet = generate_synthetic(tmp_path / "synth", subjects=1, clips_per_subject=1, frames_per_clip=10, seed=3)
    row = read_annotations(sheet, "synth").iloc[0]
    clip_dir = tmp_path / "synth" / row["subject"] / row["clip"]
    capsys.readouterr()
    rc = main(["predict", "--checkpoint", str(trained.out / "model.pt"), "--frames", str(clip_dir),
               "--onset", str(int(row["onset"])), "--apex", str(int(row["apex"])), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flow_method"] == "dis"  # taken from the checkpoint
    assert list(out["emotion"]) == EMOTIONS and sum(out["emotion"].values()) == pytest.approx(1.0, abs=1e-5)
    assert out["prediction"] == max(out["emotion"], key=out["emotion"].get)
    assert list(out["au"]) == [f"AU{a}" for a in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17)]
    assert all(0.0 <= p <= 1.0 for p in out["au"].values())
    # a frame number outside the clip: a clear message and exit code 2, no traceback
    rc = main(["predict", "--checkpoint", str(trained.out / "model.pt"), "--frames", str(clip_dir),
               "--onset", "99999", "--apex", "100000"])
    assert rc == 2 and "outside the clip" in capsys.readouterr().err
