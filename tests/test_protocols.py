"""run_protocol on a tiny fake dataset with a stand-in model: folds, pooling, outputs."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from psyau_graph.train.fit import TrainConfig
from psyau_graph.train.metrics import uar, uf1
from psyau_graph.train.protocols import make_folds, parse_protocol, run_protocol

from _fakes_train import TinyConfig, TinyModel, make_items, one_thread, tiny_loss  # noqa: F401


def _tc(**kw):
    base = dict(epochs=2, lr=1e-2, batch_size=8, warmup_epochs=0, beta_schedule=None, seed=0, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _run(data, protocol, out, **kw):
    return run_protocol(data, protocol, TinyConfig(), kw.pop("tc", _tc()), out, model_factory=TinyModel,
                        loss_fn=tiny_loss, **kw)


def _read_preds(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_parse_protocol():
    assert parse_protocol("LOSO") == ("loso",)
    assert parse_protocol("kfold:10") == ("kfold", 10)
    assert parse_protocol("split:0.7x10") == ("split", 0.7, 10)
    for bad in ("kfold:1", "split:1.5x3", "holdout", "kfold:"):
        with pytest.raises(ValueError, match="unknown protocol"):
            parse_protocol(bad)


def test_loso_pools_predictions_and_writes_outputs(tmp_path):
    data = make_items(n_subjects=4, per_subject=5)
    res = _run(data, "loso", tmp_path)
    assert len(res["folds"]) == 4
    rows = _read_preds(tmp_path / "predictions.csv")
    assert sorted(int(r["index"]) for r in rows) == list(range(len(data)))  # each sample tested once
    for f in res["folds"]:  # a subject is never in its own training set
        assert len(f["test_subjects"]) == 1 and f["n_train"] + f["n_test"] == len(data)
    yt = [int(r["y_true"]) for r in rows]
    yp = [int(r["y_pred"]) for r in rows]
    assert res["pooled"]["uf1"] == pytest.approx(uf1(yt, yp, 3))
    assert res["pooled"]["uar"] == pytest.approx(uar(yt, yp, 3))
    assert res["headline"]["uf1"] == res["pooled"]["uf1"]
    # per-fold metrics are computed on that fold's rows only
    f1 = res["folds"][0]
    rows1 = [r for r in rows if r["fold"] == "1"]
    assert f1["uf1"] == pytest.approx(uf1([int(r["y_true"]) for r in rows1], [int(r["y_pred"]) for r in rows1], 3))
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["pooled"]["confusion"] == res["pooled"]["confusion"]
    assert np.sum(saved["pooled"]["confusion"]) == len(data)
    for png in ("confusion.png", "curves.png", "folds.png", "attention.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert saved["model_selection"] == "last epoch"


def test_kfold_and_split_headlines(tmp_path):
    data = make_items(n_subjects=4, per_subject=4)
    res = _run(data, "kfold:2", tmp_path / "k", plots=False)
    assert len(res["folds"]) == 2
    assert not set(res["folds"][0]["test_subjects"]) & set(res["folds"][1]["test_subjects"])
    res = _run(data, "split:0.7x2", tmp_path / "s", plots=False)
    assert len(res["folds"]) == 2 and res["headline"]["source"] == "mean over repeats"
    assert res["headline"]["uf1"] == pytest.approx(np.mean([f["uf1"] for f in res["folds"]]))


def test_megc_and_lodo_per_dataset(tmp_path):
    data = make_items(n_subjects=4, per_subject=4, datasets=("casme2", "samm"))
    res = _run(data, "megc", tmp_path / "m", plots=False)
    assert len(res["folds"]) == 4 and set(res["per_dataset"]) == {"casme2", "samm"}
    assert sum(d["n"] for d in res["per_dataset"].values()) == len(data)
    res = _run(data, "lodo", tmp_path / "l", plots=False)
    assert [f["name"] for f in res["folds"]] == ["casme2", "samm"]
    with pytest.raises(ValueError, match="two datasets"):
        make_folds(make_items(n_subjects=2), "lodo")


def test_select_val_never_uses_test_subjects(tmp_path):
    data = make_items(n_subjects=5, per_subject=4)
    res = _run(data, "kfold:5", tmp_path, tc=_tc(select="val", val_frac=0.25), plots=False)
    for f in res["folds"]:
        assert f["n_val"] > 0 and f["val_subjects"]
        assert not set(f["val_subjects"]) & set(f["test_subjects"])
        assert f["n_train"] + f["n_val"] + f["n_test"] == len(data)


def test_resume_skips_finished_folds_same_result(tmp_path):
    data = make_items(n_subjects=3, per_subject=4)
    first = _run(data, "loso", tmp_path, plots=False)
    again = _run(data, "loso", tmp_path, plots=False, resume=True)
    assert again["pooled"] == first["pooled"] and again["folds"] == first["folds"]


def test_final_model_checkpoint(tmp_path):
    from psyau_graph.train.checkpoint import load_checkpoint

    data = make_items(n_subjects=3, per_subject=4)
    res = _run(data, "loso", tmp_path, plots=False, final_model=True)
    ck = load_checkpoint(tmp_path / res["final_model"]["path"])
    assert ck["class_names"] == data.class_names and ck["model_config"]["fields"]["num_classes"] == 3
    assert res["final_model"]["n_train"] == len(data)


def test_real_model_two_folds_with_attention_plot(tmp_path):
    """FedPsyAU itself through run_protocol (ablation by name), tiny data, one epoch."""
    from psyau_graph.train.checkpoint import build_model, load_checkpoint

    data = make_items(n_subjects=4, per_subject=3)
    res = run_protocol(data, "kfold:2", None, _tc(epochs=1, batch_size=6, beta_schedule="constant"), tmp_path,
                       ablation="VI", final_model=True)
    assert res["ablation"] == "VI" and res["model_config"]["num_classes"] == 3
    assert len(res["folds"]) == 2 and res["pooled"]["n"] == len(data)
    assert res["pooled"]["au_f1"] is not None
    assert set(res["plots"]) == {"confusion", "curves", "folds", "attention"}
    ck = load_checkpoint(tmp_path / "model.pt")
    assert ck["beta"] == pytest.approx(0.3)
    model, _ = build_model(ck)
    assert type(model).__name__ == "FedPsyAU" and model.config.ablation == "VI"
    # ablation I has no AU path: AU F1 is reported as None, not a crash
    res1 = run_protocol(data, "kfold:2", None, _tc(epochs=1, batch_size=6), tmp_path / "I", ablation="I")
    assert res1["pooled"]["au_f1"] is None and "attention" not in res1["plots"]
