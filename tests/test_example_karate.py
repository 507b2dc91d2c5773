"""The KarateClub example runs end to end and learns (offline: PyG ships the data)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "karate_dpkgat.py"


@pytest.mark.slow  # a few seconds of CPU; over 20 s of wall time on a busy machine
def test_karate_example_learns():
    spec = importlib.util.spec_from_file_location("karate_dpkgat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--epochs", "60", "--seeds", "1"])
    assert len(results) == 3
    for name, r in results.items():
        assert r["train_acc"] == 1.0, name  # the 4 labelled members are fitted
        # 4 classes; the majority class is 12 of the 30 test members (0.4)
        assert r["test_acc"] > 0.5, (name, r["test_acc"])
