"""pipeline.flow_batch never substitutes another flow implementation for the requested one."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from psyau_graph.preprocess import pipeline


def test_missing_flow_module_is_an_error_not_a_silent_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "psyau_graph.preprocess.flow", None)  # import now raises ImportError
    a = np.zeros((1, 16, 16), np.uint8)
    b = np.full((1, 16, 16), 10, np.uint8)
    with pytest.raises(ImportError):
        pipeline.flow_batch(a, b, "tvl1")
    with pytest.raises(ImportError):
        pipeline.flow_batch(a, b, "farneback")
