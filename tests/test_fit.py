"""fit/train_one_epoch/evaluate: determinism, resume equivalence, warm-up, β schedule."""
from __future__ import annotations

import importlib

import pytest
import torch

from psyau_graph.train.checkpoint import load_checkpoint
from psyau_graph.train.fit import (
    TrainConfig, effective_warmup_epochs, evaluate, fit, make_loader, seed_everything, train_one_epoch,
)

from _fakes_train import LinearBeta, TinyModel, make_items, one_thread, tiny_loss  # noqa: F401

fitmod = importlib.import_module("psyau_graph.train.fit")  # the module (the package exports the function `fit`)


@pytest.fixture
def stand_in_beta(monkeypatch):
    made = []

    def factory(config):
        if config.beta_schedule is None:
            return None
        s = LinearBeta(config.beta0, config.epochs)
        made.append(s)
        return s

    monkeypatch.setattr(fitmod, "_make_beta_schedule", factory)
    return made


def _run(cfg, data, **kw):
    seed_everything(cfg.seed)
    model = TinyModel()
    res = fit(model, data, cfg, loss_fn=tiny_loss, **kw)
    return model, res


def _cfg(**kw):
    base = dict(epochs=4, lr=1e-2, batch_size=8, warmup_epochs=1, beta_schedule="linear", seed=3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_two_runs_same_seed_identical(stand_in_beta):
    data = make_items()
    m1, r1 = _run(_cfg(), data)
    m2, r2 = _run(_cfg(), data)
    assert _same_weights(m1, m2)
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    m3, r3 = _run(_cfg(seed=4), data)
    assert not _same_weights(m1, m3)


def test_training_reduces_loss_and_learns(stand_in_beta):
    data = make_items(per_subject=8)
    model, res = _run(_cfg(epochs=15, beta_schedule=None), data)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    ev = evaluate(model, make_loader(data, 16, shuffle=False), num_classes=3, loss_fn=tiny_loss)
    assert ev["acc"] > 0.8
    assert ev["y_pred"].shape == (len(data),) and ev["probabilities"].shape == (len(data), 3)
    assert torch.allclose(torch.tensor(ev["probabilities"].sum(1)), torch.ones(len(data)), atol=1e-5)
    assert ev["subjects"][0] == "s00" and len(ev["datasets"]) == len(data)
    assert 0 <= ev["au_f1"] <= 1 and len(ev["au_f1_per_au"]) == 12


def test_resume_after_kill_matches_uninterrupted(tmp_path, stand_in_beta):
    data = make_items()
    cfg = _cfg(epochs=5)
    full, rfull = _run(cfg, data, checkpoint_dir=tmp_path / "full")

    class Killed(RuntimeError):
        pass

    def kill_after_2(epoch, rec, model):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        _run(cfg, data, checkpoint_dir=tmp_path / "cut", callbacks=[kill_after_2])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    seed_everything(123)  # a fresh process would start from different RNG state
    resumed = TinyModel()
    rres = fit(resumed, data, cfg, loss_fn=tiny_loss, checkpoint_dir=tmp_path / "cut", resume=True)
    assert rres.resumed_from == 2
    assert _same_weights(full, resumed)
    assert [h["loss"] for h in rres.history] == [h["loss"] for h in rfull.history]
    assert [h["beta"] for h in rres.history] == [h["beta"] for h in rfull.history]
    assert rres.beta == rfull.beta


def test_resume_refuses_changed_config(tmp_path, stand_in_beta):
    data = make_items(n_subjects=2)
    _run(_cfg(epochs=2), data, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="config differs"):
        _run(_cfg(epochs=2, lr=0.5), data, checkpoint_dir=tmp_path, resume=True)


def test_warmup_linear_then_constant(stand_in_beta):
    data = make_items(n_subjects=4, per_subject=4)  # 16 items, batch 8 -> 2 steps / epoch
    cfg = _cfg(epochs=10, warmup_epochs=2, lr=0.1)
    assert effective_warmup_epochs(cfg) == 2
    assert effective_warmup_epochs(_cfg(epochs=3, warmup_epochs=10)) == 0
    assert effective_warmup_epochs(_cfg(epochs=100, warmup_epochs=10)) == 10
    _, res = _run(cfg, data)
    lrs = [h["lr"] for h in res.history]  # lr after the last step of each epoch
    # 4 warm-up steps: factors 1/4, 2/4, 3/4, 1 -> after epoch 1 the next lr is 0.1 * 3/4
    assert lrs[0] == pytest.approx(0.1 * 3 / 4)
    assert all(lr == pytest.approx(0.1) for lr in lrs[1:])


def test_beta_schedule_stepped_per_epoch_and_passed(stand_in_beta):
    data = make_items(n_subjects=2, per_subject=8)  # 16 items -> 2 batches/epoch
    model, res = _run(_cfg(epochs=4, beta0=0.4), data)
    expected = [0.4 * (1 - t / 4) for t in range(4)]
    assert [h["beta"] for h in res.history] == pytest.approx(expected)
    seen = [b for b in model.betas_seen]
    assert seen == pytest.approx([b for b in expected for _ in range(2)])
    assert res.beta == pytest.approx(expected[-1])
    m2, r2 = _run(_cfg(epochs=2, beta_schedule=None), data)
    assert all(b is None for b in m2.betas_seen) and r2.beta is None


def test_extra_loss_added(stand_in_beta):
    data = make_items(n_subjects=2)
    seed_everything(0)
    m = TinyModel()
    loader = make_loader(data, 8, shuffle=False)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    r0 = train_one_epoch(m, loader, opt, loss_weights=(0.2, 0.8, 0.8), loss_fn=tiny_loss, progress=False)
    r1 = train_one_epoch(m, loader, opt, loss_weights=(0.2, 0.8, 0.8), loss_fn=tiny_loss, progress=False,
                         extra_loss=lambda mod: torch.tensor(2.0))
    assert r1["extra"] == pytest.approx(2.0)
    # dropout differs between the two passes, so compare the loss minus the parts
    assert r1["loss"] - r1["extra"] == pytest.approx(
        0.2 * r1["ce"] + 0.8 * r1["au_afe"] + 0.8 * r1["au_gat"], rel=1e-5)


def test_select_val_restores_best_epoch(stand_in_beta):
    data = make_items(n_subjects=4)
    val = make_items(n_subjects=2, seed=9)
    model, res = _run(_cfg(epochs=4, select="val"), data, val_set=val)
    best = max(range(4), key=lambda i: (res.history[i]["val_uf1"], -i))
    assert res.best_epoch == best + 1
    assert all("val_uar" in h for h in res.history)
    with pytest.raises(ValueError, match="val_set"):
        _run(_cfg(select="val"), data)


def test_bad_config():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="select"):
        TrainConfig(select="test")


def test_real_schedule_and_real_model_deterministic_and_resumable(tmp_path):
    """FedPsyAU + the real 'authors' β schedule: same seed → same weights; kill + resume → same."""
    from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, make_beta_schedule

    data = make_items(n_subjects=2, per_subject=5)
    cfg = TrainConfig(epochs=3, lr=1e-3, batch_size=5, warmup_epochs=0, beta_schedule="authors", seed=1,
                      progress=False)

    def build():
        seed_everything(cfg.seed)
        return FedPsyAU(FedPsyAUConfig(num_classes=3))

    m1, m2 = build(), build()
    r1 = fit(m1, data, cfg, checkpoint_dir=tmp_path / "a")
    r2 = fit(m2, data, cfg)
    assert _same_weights(m1, m2) and [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    sched = make_beta_schedule("authors", beta0=0.3, total_epochs=3)
    expected = []
    for _ in range(3):
        expected.append(sched.value)
        sched.step()
    assert [h["beta"] for h in r1.history] == pytest.approx(expected)

    def kill(epoch, rec, model):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(build(), data, cfg, checkpoint_dir=tmp_path / "b", callbacks=[kill])
    m3 = build()
    fit(m3, data, cfg, checkpoint_dir=tmp_path / "b", resume=True)
    assert _same_weights(m1, m3)


def test_select_val_returns_the_best_epochs_beta(stand_in_beta, monkeypatch):
    """With select='val' the returned β is the best epoch's, not the last epoch's."""
    scores = iter([0.2, 0.9, 0.5, 0.4])  # best validation UF1 at epoch 2 of 4
    real_evaluate = fitmod.evaluate

    def scripted(*args, **kwargs):
        ev = real_evaluate(*args, **kwargs)
        ev["uf1"] = next(scores)
        return ev

    monkeypatch.setattr(fitmod, "evaluate", scripted)
    data = make_items(n_subjects=4)
    val = make_items(n_subjects=2, seed=9)
    model, res = _run(_cfg(epochs=4, beta0=0.4, select="val"), data, val_set=val)
    assert res.best_epoch == 2
    assert res.beta == pytest.approx(res.history[1]["beta"])
    assert res.beta != pytest.approx(res.history[-1]["beta"])
