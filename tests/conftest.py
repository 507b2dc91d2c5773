"""Test-wide settings: offline, CPU, deterministic, headless plotting."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """The folder of real reference data (priors, annotation sheets) beside the repo."""
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {SHARED_REFERENCE} (expected beside the repository)")
    return SHARED_REFERENCE
