"""β schedules: values against hand-computed sequences, state round trip, errors."""
from __future__ import annotations

import math

import pytest

from psyau_graph.nn import BetaSchedule, make_beta_schedule


def _run(schedule: BetaSchedule, epochs: int) -> list[float]:
    values = [schedule.value]
    for _ in range(epochs - 1):
        values.append(schedule.step())
    return values


def test_constant():
    assert _run(make_beta_schedule("constant", beta0=0.3), 5) == [0.3] * 5


def test_linear_to_zero_and_to_beta_min():
    assert _run(make_beta_schedule("linear", 0.3, total_epochs=4), 7) == pytest.approx(
        [0.3, 0.225, 0.15, 0.075, 0.0, 0.0, 0.0])
    assert _run(make_beta_schedule("linear", 0.3, total_epochs=4, beta_min=0.1), 6) == pytest.approx(
        [0.3, 0.25, 0.2, 0.15, 0.1, 0.1])


def test_cosine():
    c = 0.15 * (1 + math.cos(math.pi / 4))  # 0.2560660...
    assert _run(make_beta_schedule("cosine", 0.3, total_epochs=4), 6) == pytest.approx(
        [0.3, c, 0.15, 0.3 - c, 0.0, 0.0])


def test_authors_compound_decay():
    # as the authors run it: epoch 0 already uses (1 - 1/T), the last epoch (T - 1) uses 0
    # T = 4: 3/4, 3/4*2/4, 3/8*1/4, 0, stays 0
    assert _run(make_beta_schedule("authors", 0.3, total_epochs=4), 7) == pytest.approx(
        [0.225, 0.1125, 0.028125, 0.0, 0.0, 0.0, 0.0])
    s = make_beta_schedule("authors", 0.5, total_epochs=10)
    assert s.value_at(0) == pytest.approx(0.5 * 0.9)
    assert s.value_at(2) == pytest.approx(0.5 * 0.9 * 0.8 * 0.7)
    assert s.value_at(9) == 0.0 and s.value_at(8) > 0.0
    assert s.value_at(25) == 0.0


def test_state_dict_round_trip_resumes_the_sequence():
    s = make_beta_schedule("cosine", 0.4, total_epochs=6, beta_min=0.05)
    for _ in range(3):
        s.step()
    state = s.state_dict()
    assert state == {"kind": "cosine", "beta0": 0.4, "total_epochs": 6, "beta_min": 0.05, "epoch": 3}
    fresh = make_beta_schedule("cosine", 0.3, total_epochs=2)
    fresh.load_state_dict(state)
    assert fresh.value == s.value
    assert [fresh.step() for _ in range(3)] == [s.step() for _ in range(3)]
    with pytest.raises(ValueError, match="'cosine' schedule, not 'linear'"):
        make_beta_schedule("linear", total_epochs=3).load_state_dict(state)
    with pytest.raises(ValueError, match="epoch"):
        fresh.load_state_dict({**state, "epoch": -1})


def test_errors():
    with pytest.raises(ValueError, match="unknown beta schedule kind 'exp'"):
        make_beta_schedule("exp", total_epochs=3)
    for t in (0, -2, 2.5):
        with pytest.raises(ValueError, match="total_epochs must be a positive int"):
            make_beta_schedule("linear", total_epochs=t)
    with pytest.raises(ValueError, match="needs total_epochs"):
        make_beta_schedule("authors")
    for b in (-0.1, 1.01):
        with pytest.raises(ValueError, match=r"beta0 must be a number in \[0, 1\]"):
            make_beta_schedule("constant", beta0=b)
    with pytest.raises(ValueError, match="beta_min"):
        make_beta_schedule("linear", beta0=0.2, total_epochs=3, beta_min=0.5)
