"""The heterogeneous-graph example runs end to end and beats the majority class (offline, synthetic data)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hetero_dpkgat.py"


@pytest.mark.slow  # ~10 s of CPU; over 20 s of wall time on a busy machine
def test_hetero_example_learns():
    spec = importlib.util.spec_from_file_location("hetero_dpkgat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--epochs", "60", "--seed", "0"])
    assert set(results) == {"majority", 0.0, 0.5}
    for beta in (0.0, 0.5):
        assert results[beta] > results["majority"], (beta, results)


def test_hetero_example_rejects_bad_epochs():
    spec = importlib.util.spec_from_file_location("hetero_dpkgat", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as err:
        module.main(["--epochs", "0"])
    assert err.value.code == 2
