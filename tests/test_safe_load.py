"""Every loader of the package refuses a torch file whose pickle would run code.

Each test writes a file whose unpickling calls :func:`_leave_marker` (standing in for
``os.system``); the loader must refuse it with a one-line error naming the file, and
the marker must not appear.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psyau_graph.train import checkpoint as ck_mod
from psyau_graph.train.checkpoint import UnsafeFileError, build_model, load_checkpoint, safe_torch_load


def _leave_marker(path: str) -> str:
    Path(path).write_text("code ran")
    return "payload"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_leave_marker, (self.marker,))


def _evil_file(tmp_path: Path, content: dict, name: str = "evil.pt") -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    path = tmp_path / name
    torch.save({**content, "payload": _Payload(marker)}, path)
    return path, marker


def _assert_refused(excinfo, path: Path, marker: Path) -> None:
    msg = str(excinfo.value)
    assert str(path) in msg and "\n" not in msg
    assert "_leave_marker" in msg
    assert not marker.exists()


def test_payload_runs_code_when_unpickled_unsafely(tmp_path):
    # guards the other tests: the file really executes code under a plain unpickler
    path, marker = _evil_file(tmp_path, {})
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_load_checkpoint_refuses_code(tmp_path):
    path, marker = _evil_file(tmp_path, {"format": ck_mod.FORMAT, "model": {}, "model_config": None})
    with pytest.raises(UnsafeFileError) as e:
        load_checkpoint(path)
    _assert_refused(e, path, marker)
    with pytest.raises(UnsafeFileError) as e:
        build_model(path)
    _assert_refused(e, path, marker)


def test_load_au_module_refuses_code(tmp_path):
    from psyau_graph.nn import FedPsyAU
    from psyau_graph.train.pretrain import FORMAT, load_au_module

    path, marker = _evil_file(tmp_path, {"format": FORMAT, "config": {}, "state_dict": {}})
    with pytest.raises(UnsafeFileError) as e:
        load_au_module(FedPsyAU(), path)
    _assert_refused(e, path, marker)


def test_toy_task_data_refuses_code(tmp_path):
    from psyau_graph.federated.task import ToyTask

    path, marker = _evil_file(tmp_path, {"x": torch.zeros(2, 8), "y": torch.zeros(2), "subjects": []}, "toy.pt")
    with pytest.raises(UnsafeFileError) as e:
        ToyTask().load_dataset(tmp_path)
    _assert_refused(e, path, marker)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_cli_refuses_code_with_exit_2(tmp_path, capsys, command):
    from psyau_graph.cli import main

    path, marker = _evil_file(tmp_path, {"format": ck_mod.FORMAT, "model": {}, "model_config": None})
    frames = tmp_path / "frames"
    frames.mkdir()
    argv = {"evaluate": ["evaluate", "--checkpoint", str(path), "--data", str(tmp_path)],
            "predict": ["predict", "--checkpoint", str(path), "--frames", str(frames), "--onset", "0",
                        "--apex", "1"]}[command]
    assert main(argv) == 2
    first = capsys.readouterr().err.strip().splitlines()[0]  # further lines: the CLI's traceback hint
    assert first.startswith(f"psyau {command}: error: refusing to load checkpoint {path}")
    assert not marker.exists()


def test_training_checkpoint_with_numpy_rng_state_loads(tmp_path):
    import random

    import numpy as np

    model = torch.nn.Linear(3, 2)
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}
    ck_mod.save_checkpoint(tmp_path / "c.pt", model, rng=rng, best=np.float64(0.5), epoch=3)
    ck = load_checkpoint(tmp_path / "c.pt")
    assert ck["epoch"] == 3 and float(ck["best"]) == 0.5
    np.random.set_state(ck["rng"]["numpy"])
    a = np.random.rand()
    np.random.set_state(rng["numpy"])
    assert np.random.rand() == a


def test_class_references_outside_package_are_refused(tmp_path):
    model = torch.nn.Linear(3, 2)
    bad_cfg = {"class": "os:system", "fields": {}}
    ck_mod.save_checkpoint(tmp_path / "c.pt", model, model_config=None)
    obj = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match="outside the psyau_graph package"):
        build_model({**obj, "model_config": bad_cfg})
    good_cfg = ck_mod.config_to_dict(__import__("psyau_graph.nn", fromlist=["FedPsyAUConfig"]).FedPsyAUConfig())
    with pytest.raises(ValueError, match="outside the psyau_graph package"):
        build_model({**obj, "model_config": good_cfg, "model_class": "subprocess:Popen"})
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        build_model({**obj, "model_config": good_cfg, "model_class": "psyau_graph.nn:FedPsyAUConfig"})


def test_not_a_torch_file_is_one_line_error(tmp_path):
    p = tmp_path / "junk.pt"
    p.write_bytes(b"not a zip or pickle")
    with pytest.raises(ValueError) as e:
        safe_torch_load(p, "checkpoint")
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        safe_torch_load(tmp_path / "missing.pt")
