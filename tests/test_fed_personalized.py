"""FedRep / FedAS / ELLP (hand computations on tiny models), equal-subject client split,
P-FedProx scoring, and federated runs from a pretrained (frozen) AU module."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from psyau_graph.federated import core, personalized
from psyau_graph.federated.balance import equal_subject_partition
from psyau_graph.federated.client import partition
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.run import FederatedRun, ServerState
from psyau_graph.federated.task import ToyTask, make_toy_data


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_data(tmp_path_factory.mktemp("toy") / "toy.pt", subjects=6, per_subject=24,
                         seed=3, shift=1.5)


def _cfg(**kw):
    base = dict(clients=3, rounds=2, local_epochs=2, lr=0.02, batch_size=16, repeats=1)
    base.update(kw)
    return FederatedConfig(**base)


# ----------------------------------------------------------------- Fisher-weighted average
def test_fisher_average_by_hand():
    s1 = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}
    s2 = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([3.0])}
    f1, f2 = {"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([3.0, 1.0])}
    out = personalized.fisher_average([s1, s2], [f1, f2], [2, 1], eps=1e-12)
    # w0: (2*1*1 + 1*3*3) / (2*1 + 1*3) = 11/5 ; w1: only client 2 has information -> 4
    assert torch.allclose(out["w"], torch.tensor([2.2, 4.0]))
    # "b" has no Fisher entry: sample-weighted mean (2*0 + 1*3) / 3
    assert torch.allclose(out["b"], torch.tensor([1.0]))
    # all-zero Fisher: eps makes it the sample-weighted mean
    z = {"w": torch.zeros(2)}
    out = personalized.fisher_average([s1, s2], [z, z], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.5, 3.5]))


def test_fisher_average_rejects_bad_fisher():
    s = {"w": torch.ones(2)}
    with pytest.raises(ValueError, match="Fisher of 'w'"):
        personalized.fisher_average([s, s], [{"w": torch.tensor([-1.0, 0.0])}, {"w": torch.ones(2)}], [1, 1])
    with pytest.raises(KeyError, match="no Fisher"):
        personalized.fisher_average([s, s], [{"w": torch.ones(2)}, {}], [1, 1])


class _LineTask:
    """y = w x, squared error, one sample per batch: hand-computable gradients."""

    head_prefixes = ("head",)

    def train_epoch(self, model, loader, optimizer, extra_loss):
        for x, y in loader:
            optimizer.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            optimizer.step()
        return {"loss": float(loss.detach())}


def test_diagonal_fisher_by_hand_and_model_unchanged():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    loader = [(torch.tensor([[1.0]]), torch.tensor([[0.0]])), (torch.tensor([[2.0]]), torch.tensor([[0.0]]))]
    f = personalized.diagonal_fisher(_LineTask(), model, loader, ["weight"])
    # grad = 2 (w x - y) x: batch 1 -> 4, batch 2 -> 16; mean of squares (16 + 256) / 2
    assert torch.allclose(f["weight"], torch.tensor([[136.0]]))
    assert float(model.weight) == 2.0 and model.weight.grad is None


def test_fedrep_epoch_split():
    assert personalized.fedrep_epochs(50, None) == (10, 40)
    assert personalized.fedrep_epochs(1, None) == (1, 1)
    assert personalized.fedrep_epochs(5, 2) == (2, 3)


# ----------------------------------------------------------------- client routine
def _one_client(toy, strategy, **kw):
    from psyau_graph.federated.client import client_data, initial_state
    task = ToyTask()
    cfg = _cfg(strategy=strategy, **kw)
    run = FederatedRun(toy, cfg, task=task, progress=False)
    parts = partition(run.subjects, cfg.clients, cfg.part_seed, cfg.balance)
    data = client_data(run.dataset, parts[0], cfg, 0, 0)
    init = initial_state(task, 0)
    keys = core.shared_keys(task.make_model(), exclude_prefixes=("head",))
    return task, cfg, data, init, keys


def test_fedrep_trains_head_then_body(toy, monkeypatch):
    task, cfg, data, init, keys = _one_client(toy, "fedrep", local_epochs=3, head_epochs=1)
    phases = []
    real = personalized._train_phase

    def spy(task_, model, data_, cfg_, trainable, epochs, seed):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        out = real(task_, model, data_, cfg_, trainable, epochs, seed)
        changed = {k for k, v in model.state_dict().items()
                   if k.endswith("weight") and not torch.equal(v, before[k])}
        phases.append((epochs, changed))
        return out

    monkeypatch.setattr(personalized, "_train_phase", spy)
    new, shared, m, fisher = personalized.personal_local_train(
        task, init, core.select(init, keys), data, cfg, client=0, rnd=1, repeat=0, keys=keys,
        personal=("head",))
    assert fisher is None and set(shared) == set(keys) and "head.weight" not in shared
    assert phases[0] == (1, {"head.weight"})                        # head phase: body fixed
    assert phases[1][0] == 2 and "head.weight" not in phases[1][1]  # body phase: head fixed
    assert "body.0.weight" in phases[1][1]
    assert m["n_train"] == data.n_train


def test_personal_tensor_from_server_is_refused(toy):
    task, cfg, data, init, keys = _one_client(toy, "fedrep")
    with pytest.raises(ValueError, match="must not be received"):
        personalized.personal_local_train(task, init, init, data, cfg, client=0, rnd=1, repeat=0,
                                          keys=keys, personal=("head",))


@pytest.mark.parametrize("strategy, align_calls", [("fedas", 1), ("ellp", 0)])
def test_fedas_aligns_head_ellp_does_not_and_both_send_fisher(toy, monkeypatch, strategy, align_calls):
    task, cfg, data, init, keys = _one_client(toy, strategy, align_epochs=2)
    calls = []
    real = personalized._train_phase

    def spy(task_, model, data_, cfg_, trainable, epochs, seed):
        calls.append((sorted(trainable) == ["head.bias", "head.weight"], epochs))
        return real(task_, model, data_, cfg_, trainable, epochs, seed)

    monkeypatch.setattr(personalized, "_train_phase", spy)
    _, shared, _, fisher = personalized.personal_local_train(
        task, init, core.select(init, keys), data, cfg, client=0, rnd=1, repeat=0, keys=keys,
        personal=("head",))
    assert sum(head_only for head_only, _ in calls) == align_calls
    if align_calls:
        assert calls[0] == (True, 2)
    assert calls[-1] == (False, cfg.local_epochs)
    params = {k for k, _ in task.make_model().named_parameters()}
    assert set(fisher) == set(keys) & params      # body parameters only, no buffers, no head
    assert all(bool((f >= 0).all()) and float(f.sum()) > 0 for f in fisher.values())


# ----------------------------------------------------------------- server + engine
def test_server_state_fisher_aggregation_matches_formula():
    init = {"w": torch.zeros(2)}
    s = ServerState("fedas", init)
    upd = {0: {"w": torch.tensor([1.0, 1.0])}, 1: {"w": torch.tensor([3.0, 5.0])}}
    fis = {0: {"w": torch.tensor([1.0, 1.0])}, 1: {"w": torch.tensor([1.0, 3.0])}}
    s.aggregate(upd, {0: 1, 1: 1}, fis)
    assert torch.allclose(s.global_shared["w"], torch.tensor([2.0, 4.0]))
    r = ServerState("fedrep", init)
    r.aggregate(upd, {0: 3, 1: 1})
    assert torch.allclose(r.global_shared["w"], torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="Fisher"):
        ServerState("ellp", init).aggregate(upd, {0: 1, 1: 1})


@pytest.mark.parametrize("strategy", personalized.PERSONAL_STRATEGIES)
def test_personalised_runs_keep_heads_local(toy, monkeypatch, strategy):
    import psyau_graph.federated.run as run_mod
    received, evaluated = [], []
    real_eval = run_mod.local_evaluate

    def spy_eval(task, full, sent, data, cfg):
        evaluated.append((full["head.weight"].clone(), sent))
        return real_eval(task, full, sent, data, cfg)

    real_train = personalized.personal_local_train

    def spy_train(task, full, shared_in, data, cfg, **kw):
        received.append(set(shared_in))
        return real_train(task, full, shared_in, data, cfg, **kw)

    monkeypatch.setattr(run_mod, "local_evaluate", spy_eval)
    monkeypatch.setattr(personalized, "personal_local_train", spy_train)
    res = FederatedRun(toy, _cfg(strategy=strategy), task=ToyTask(), progress=False).run()
    assert all("head.weight" not in r and "body.0.weight" in r for r in received)
    last = evaluated[-3:]
    assert not torch.allclose(last[0][0], last[1][0])            # every client its own head
    assert all(torch.equal(last[0][1]["body.0.weight"], e[1]["body.0.weight"]) for e in last)
    assert len(res["records"]) == 2 * 3
    assert all(np.isfinite(r["uf1"]) for r in res["records"])


@pytest.mark.parametrize("mode", ["local", "mixture"])
def test_pfedprox_is_scored_on_the_local_model_by_default(toy, monkeypatch, mode):
    import psyau_graph.federated.run as run_mod
    sent_at_eval = []
    real = run_mod.local_evaluate

    def spy(task, full, sent, data, cfg):
        sent_at_eval.append(sent)
        return real(task, full, sent, data, cfg)

    monkeypatch.setattr(run_mod, "local_evaluate", spy)
    kw = {} if mode == "local" else {"pfedprox_eval": "mixture"}
    FederatedRun(toy, _cfg(strategy="p-fedprox", **kw), task=ToyTask(), progress=False).run()
    if mode == "local":
        assert FederatedConfig().pfedprox_eval == "local"
        assert all(s is None for s in sent_at_eval)
    else:
        assert all(s is not None for s in sent_at_eval)


def test_bad_new_options_are_named():
    for kw, msg in [(dict(balance="x"), "balance"), (dict(pfedprox_eval="x"), "pfedprox_eval"),
                    (dict(head_epochs=0), "head_epochs"), (dict(align_epochs=-1), "align_epochs")]:
        with pytest.raises(ValueError, match=msg):
            FederatedConfig(**kw)


# ----------------------------------------------------------------- client split
def test_equal_subject_partition_counts_and_coverage():
    subjects = ["a"] * 10 + ["b"] * 2 + ["c"] * 7 + ["d"] * 1 + ["e"] * 3 + ["f"] * 3 + ["g"] * 4
    parts = equal_subject_partition(subjects, 3, seed=1)
    counts = sorted(len({subjects[i] for i in p}) for p in parts)
    assert counts == [2, 2, 3]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(subjects)))
    subj_sets = [{subjects[i] for i in p} for p in parts]
    assert all(not (subj_sets[i] & subj_sets[j]) for i in range(3) for j in range(i + 1, 3))
    assert [p.tolist() for p in parts] == [p.tolist() for p in equal_subject_partition(subjects, 3, 1)]
    with pytest.raises(ValueError, match="exceeds"):
        equal_subject_partition(subjects, 8)


def test_default_balance_is_subjects_and_samples_is_kept():
    # 4 subjects: one large (12 samples), three small (4 each), 2 clients
    subjects = ["big"] * 12 + ["s1"] * 4 + ["s2"] * 4 + ["s3"] * 4
    assert FederatedConfig().balance == "subjects"
    by_subj = partition(subjects, 2, 0)
    assert sorted(len({subjects[i] for i in p}) for p in by_subj) == [2, 2]
    by_samp = partition(subjects, 2, 0, "samples")
    assert sorted(len(p) for p in by_samp) == [12, 12]       # big alone vs the three small ones
    assert sorted(len({subjects[i] for i in p}) for p in by_samp) == [1, 3]


# ----------------------------------------------------------------- pretrained AU module
@pytest.fixture(scope="module")
def au_file(tmp_path_factory):
    from psyau_graph.nn import FedPsyAU, FedPsyAUConfig
    from psyau_graph.train.pretrain import save_au_module
    torch.manual_seed(123)
    m = FedPsyAU(FedPsyAUConfig())
    path = save_au_module(m, tmp_path_factory.mktemp("au") / "au.pt")
    return path, {k: v.clone() for k, v in m.au_module().state_dict().items()}


@pytest.mark.parametrize("freeze", [True, False])
def test_task_loads_pretrained_au_module(au_file, freeze):
    from psyau_graph.federated.task import FedPsyAUTask
    path, saved = au_file
    task = FedPsyAUTask(au_module=str(path), freeze_au=freeze)
    model = task.make_model()
    got = model.au_module().state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved)
    keys = core.shared_keys(model)
    au_keys = [k for k in keys if k.startswith("au_net.")]
    if freeze:
        assert au_keys == [] and all(not p.requires_grad for p in model.au_module().parameters())
        assert any(k.startswith("dsi.") for k in keys)
    else:
        assert au_keys


def test_freeze_without_module_and_missing_file_are_errors(tmp_path):
    from psyau_graph.federated.task import FedPsyAUTask
    with pytest.raises(ValueError, match="freeze_au needs au_module"):
        FedPsyAUTask(freeze_au=True)
    with pytest.raises(FileNotFoundError, match="AU module file not found"):
        FedPsyAUTask(au_module=str(tmp_path / "none.pt"))


# ----------------------------------------------------------------- CLI
def test_cli_runs_new_strategies_and_options(toy, tmp_path, capsys):
    import json
    from psyau_graph.cli import main

    out = tmp_path / "fed"
    rc = main(["federate", "--data", str(toy), "--task", "toy", "--clients", "2", "--rounds", "1",
               "--local-epochs", "2", "--strategy", "fedrep,fedas,ellp", "--repeats", "1",
               "--balance", "samples", "--head-epochs", "1", "--align-epochs", "1",
               "--lr", "0.02", "--batch-size", "16", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"]) == {"fedrep", "fedas", "ellp"}
    assert summary["config"]["balance"] == "samples"


def test_cli_help_lists_strategies_and_options(capsys):
    from psyau_graph.cli import main
    with pytest.raises(SystemExit):
        main(["federate", "--help"])
    text = capsys.readouterr().out
    for word in ("fedrep", "fedas", "ellp", "--balance", "--pfedprox-eval", "--personal",
                 "--au-module", "--freeze-au", "--head-epochs", "--align-epochs"):
        assert word in text


def test_cli_au_module_errors_exit_2(toy, tmp_path, capsys):
    from psyau_graph.cli import main
    rc = main(["federate", "--data", str(toy), "--freeze-au", "--strategy", "fedavg",
               "--out", str(tmp_path / "x")])
    assert rc == 2 and "freeze_au needs au_module" in capsys.readouterr().err
    rc = main(["federate", "--data", str(toy), "--au-module", str(tmp_path / "none.pt"),
               "--strategy", "fedavg", "--out", str(tmp_path / "y")])
    assert rc == 2 and "AU module file not found" in capsys.readouterr().err


def test_real_network_fedas_from_frozen_pretrained_au_module(tmp_path, au_file):
    from _fed_helpers import make_clip_cache
    from psyau_graph.federated.task import FedPsyAUTask
    path, saved = au_file
    cache = make_clip_cache(tmp_path / "cache", clips_per_subject=4)
    task = FedPsyAUTask(au_module=str(path), freeze_au=True)
    cfg = FederatedConfig(clients=2, rounds=1, local_epochs=1, strategy="fedas", lr=1e-3,
                          batch_size=4, repeats=1)
    res = FederatedRun(str(cache), cfg, task=task, progress=False).run()
    assert len(res["records"]) == 2 and all(np.isfinite(r["loss"]) for r in res["records"])
    model = task._fed_model  # the frozen AU module did not move during training
    got = model.au_module().state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in saved)


def test_flower_run_config_carries_new_options_and_only_plain_values():
    from psyau_graph.federated.flower.common import from_run_config, to_run_config
    cfg = FederatedConfig(balance="samples", pfedprox_eval="mixture", strategy="p-fedprox")
    rc = to_run_config(cfg, {"name": "toy"})
    assert all(isinstance(v, (str, int, float, bool)) for v in rc.values())
    back, _, _ = from_run_config(rc)
    assert back.balance == "samples" and back.pfedprox_eval == "mixture"


def test_cli_strategy_lists_match_the_package():
    from psyau_graph.cli import federate as cli_federate
    from psyau_graph.federated.config import STRATEGIES
    from psyau_graph.federated.personalized import PERSONAL_STRATEGIES

    assert cli_federate.STRATEGY_CHOICES == STRATEGIES
    # FedRep/FedAS/ELLP run on every engine; only the local baseline stays in-process
    assert set(PERSONAL_STRATEGIES) <= set(STRATEGIES)
    assert cli_federate.INPROCESS_ONLY == ("local",)
