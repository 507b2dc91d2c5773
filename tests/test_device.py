"""``--device`` / ``--precision`` plumbing, tested on the CPU: validation, clear errors (exit 2),
and the settings reaching local training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from psyau_graph.cli import main
from psyau_graph.federated.client import _compute_kwargs
from psyau_graph.federated.config import FederatedConfig
from psyau_graph.federated.run import FederatedRun
from psyau_graph.federated.task import ToyTask, make_toy_data
from psyau_graph.preprocess.flow import compute_flow
from psyau_graph.train.device import check_device
from psyau_graph.train.fit import TrainConfig


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_check_device(no_cuda, monkeypatch):
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_device("cuda")
    with pytest.raises(ValueError, match="must be a torch device"):
        check_device("gpu0")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        check_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        check_device("cuda:3")


def test_configs_refuse_an_unavailable_device(no_cuda):
    with pytest.raises(ValueError, match="CUDA is not available"):
        TrainConfig(device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        FederatedConfig(device="cuda")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        FederatedConfig(precision="fp16")
    assert FederatedConfig(precision="bf16").to_dict()["precision"] == "bf16"


@pytest.mark.parametrize("argv", [
    ["train", "--data", "{d}", "--out", "{d}/o", "--device", "cuda"],
    ["train", "--data", "{d}", "--out", "{d}/o", "--precision", "fp16"],
    ["federate", "--data", "{d}", "--out", "{d}/o", "--device", "cuda"],
    ["predict", "--checkpoint", "{d}/m.pt", "--frames", "{d}", "--onset", "1", "--apex", "2", "--device", "cuda"],
    ["demo", "--out", "{d}/o", "--device", "cuda"],
    ["demo", "--out", "{d}/o", "--precision", "fp16"],
])
def test_commands_exit_2_on_a_device_or_precision_they_cannot_use(argv, tmp_path, capsys, no_cuda, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    assert main([a.format(d=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert f"psyau {argv[0]}" in err and ("CUDA is not available" in err or "needs a CUDA device" in err)
    assert not (tmp_path / "o").exists()  # nothing started


def test_compute_kwargs_only_when_not_default():
    assert _compute_kwargs(FederatedConfig()) == {}
    assert _compute_kwargs(FederatedConfig(precision="bf16")) == {"precision": "bf16"}


class _SpyTask(ToyTask):
    seen: list

    def train_epoch(self, model, loader, optimizer, extra_loss, **kw):
        self.seen.append(("train", kw))
        return super().train_epoch(model, loader, optimizer, extra_loss, **kw)

    def evaluate(self, model, loader, **kw):
        self.seen.append(("eval", kw))
        return super().evaluate(model, loader, **kw)


def test_federated_precision_reaches_local_training_and_evaluation(tmp_path):
    toy = make_toy_data(tmp_path / "toy.pt", subjects=4, per_subject=12, seed=0, shift=1.5)
    task = _SpyTask()
    task.seen = []
    cfg = FederatedConfig(clients=2, rounds=1, local_epochs=1, lr=0.02, batch_size=8, repeats=1,
                          strategy="fedavg", precision="bf16")
    res = FederatedRun(toy, cfg, task=task, progress=False).run()
    kinds = {k for k, _ in task.seen}
    assert kinds == {"train", "eval"} and all(kw == {"precision": "bf16"} for _, kw in task.seen)
    assert res is not None


def test_tvl1_device_argument_runs_there_and_returns_numpy():
    rng = np.random.default_rng(0)
    a = rng.random((24, 24)).astype(np.float32)
    b = np.roll(a, 1, axis=1)
    cpu = compute_flow(a, b, "tvl1", num_iter=5)
    dev = compute_flow(a, b, "tvl1", num_iter=5, device="cpu")
    assert isinstance(dev, np.ndarray) and np.array_equal(cpu, dev)
    with pytest.raises(ValueError, match="must be a torch device"):
        compute_flow(a, b, "tvl1", device="gpu0")
