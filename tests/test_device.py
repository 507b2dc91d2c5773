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
from psyau_graph.train.device import check_device, resolve_device
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
    ["pretrain", "--data", "{d}", "--out", "{d}/o", "--device", "cuda"],
    ["pretrain", "--data", "{d}", "--out", "{d}/o", "--precision", "fp16"],
    ["predict", "--checkpoint", "{d}/m.pt", "--frames", "{d}", "--onset", "1", "--apex", "2", "--device", "cuda"],
    ["demo", "--out", "{d}/o", "--device", "cuda"],
    ["demo", "--out", "{d}/o", "--precision", "fp16"],
    ["evaluate", "--checkpoint", "{d}/m.pt", "--data", "{d}", "--out", "{d}/o", "--device", "cuda"],
    ["evaluate", "--checkpoint", "{d}/m.pt", "--data", "{d}", "--out", "{d}/o", "--precision", "fp16"],
    ["preprocess", "--annotations", "{d}/s.csv", "--dataset", "synth", "--frames", "{d}", "--out", "{d}/o",
     "--device", "cuda"],
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


def test_resolve_device_auto(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("AUTO") == torch.device("cuda", 0)


def _fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def _preprocess_args(tmp_path, *extra):
    from psyau_graph.cli import build_parser

    return build_parser(["preprocess"]).parse_args(
        ["preprocess", "--annotations", str(tmp_path / "s.csv"), "--dataset", "synth", "--frames", str(tmp_path),
         "--out", str(tmp_path / "o"), *extra])


def test_preprocess_device_arguments(tmp_path, monkeypatch):
    from psyau_graph.cli.preprocess import GPU_FLOW_BATCH_CLIPS, check_device_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = _preprocess_args(tmp_path, "--device", "auto")
    check_device_args(args)
    assert (args.device, args.flow_batch_clips) == ("cpu", 0)  # the CPU default: whole clips per worker
    _fake_cuda(monkeypatch)
    args = _preprocess_args(tmp_path, "--device", "auto")
    check_device_args(args)
    assert (args.device, args.flow_batch_clips) == ("cuda:0", GPU_FLOW_BATCH_CLIPS)
    args = _preprocess_args(tmp_path, "--device", "auto", "--flow", "dis")
    check_device_args(args)
    assert args.device == "cpu"  # auto: only TV-L1 can use the GPU
    with pytest.raises(ValueError, match="only the TV-L1 flow"):
        check_device_args(_preprocess_args(tmp_path, "--device", "cuda", "--flow", "dis"))
    with pytest.raises(ValueError, match="flow_batch_clips must be"):
        check_device_args(_preprocess_args(tmp_path, "--device", "cuda", "--flow-batch-clips", "0"))
    args = _preprocess_args(tmp_path, "--device", "cuda", "--flow-batch-clips", "4")
    check_device_args(args)
    assert (args.device, args.flow_batch_clips) == ("cuda", 4)


def test_preprocess_cli_gpu_misuse_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    _fake_cuda(monkeypatch)
    argv = ["preprocess", "--annotations", str(tmp_path / "s.csv"), "--dataset", "synth", "--frames",
            str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cuda", "--flow", "farneback"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "psyau preprocess: error:" in err and "only the TV-L1 flow" in err
    assert not (tmp_path / "o").exists()


def test_preprocess_dataset_runs_the_flow_on_the_chosen_device(tmp_path, monkeypatch):
    """With a GPU device the batched TV-L1 call in the parent gets ``device``; the workers'
    settings do not (they never touch CUDA). CUDA is faked here, so the spy runs the flow on
    the CPU after recording the device it was asked for."""
    import pandas as pd

    from _preprocess_helpers import mouth_pull_frames, write_clip
    from psyau_graph.preprocess import pipeline
    from psyau_graph.preprocess.batch import preprocess_dataset

    frames = mouth_pull_frames(n=6, amp=1.5)
    rows = []
    for k in range(2):
        write_clip(tmp_path / "f" / "sub01" / f"EP0{k}", np.roll(frames, k, axis=2), first=10)
        rows.append(dict(dataset="casme2", subject="sub01", clip=f"EP0{k}", onset=10, apex=14, offset=15,
                         aus=frozenset({12}), emotion="happiness", row=k + 2))
    df = pd.DataFrame(rows)
    seen = []
    real = pipeline.flow_batch

    def spy(onsets, apexes, method="tvl1", **params):
        seen.append(params.pop("device", None))
        return real(onsets, apexes, method, **params)

    monkeypatch.setattr(pipeline, "flow_batch", spy)
    _fake_cuda(monkeypatch)
    rep = preprocess_dataset(df, tmp_path / "f", tmp_path / "c", dataset="casme2", flow="tvl1", workers=1,
                             flow_batch_clips=2, progress=False, device="cuda",
                             flow_params={"num_iter": 3, "num_warp": 1})
    assert rep["processed"] == 2 and rep["device"] == "cuda" and seen == ["cuda"]
    with pytest.raises(ValueError, match="flow_batch_clips must be"):
        preprocess_dataset(df, tmp_path / "f", tmp_path / "d", dataset="casme2", flow="tvl1", device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        preprocess_dataset(df, tmp_path / "f", tmp_path / "e", dataset="casme2", device="cuda",
                           flow_batch_clips=2)
    assert not (tmp_path / "e").exists()
