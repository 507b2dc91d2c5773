"""Schedules for the prior weight β of :class:`~psyau_graph.nn.DPKGATConv`.

A schedule is a small object the training loop steps once per epoch::

    schedule = make_beta_schedule("authors", beta0=0.3, total_epochs=50)
    for epoch in range(50):
        train_one_epoch(model, loader, optimizer, beta=schedule.value)
        schedule.step()

Epochs are 0-based: ``value`` is the β of the current epoch and ``step()``
moves to the next epoch. Every schedule but ``"authors"`` starts at epoch 0 with
``beta0``; the authors' compound decay already applies its first factor in
epoch 0 (see :class:`AuthorsBeta`).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

KINDS = ("constant", "linear", "cosine", "authors")


class BetaSchedule:
    """Base class: β as a function of the epoch index.

    Args:
        beta0 (float, optional): β at epoch 0, in [0, 1]. (default: ``0.3``)
        total_epochs (int, optional): Length ``T`` of the decay in epochs;
            required (> 0) except for the constant schedule.
            (default: ``None``)
        beta_min (float, optional): Final value of the linear and cosine
            schedules, in [0, ``beta0``]. (default: ``0.0``)
    """

    kind = "base"

    def __init__(self, beta0: float = 0.3, total_epochs: Optional[int] = None, beta_min: float = 0.0):
        self.beta0 = _unit_interval(beta0, "beta0")
        self.beta_min = _unit_interval(beta_min, "beta_min")
        if self.beta_min > self.beta0:
            raise ValueError(f"beta_min ({beta_min}) must not exceed beta0 ({beta0})")
        if total_epochs is not None:
            if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs <= 0:
                raise ValueError(f"total_epochs must be a positive int, got {total_epochs!r}")
        self.total_epochs = total_epochs
        self.epoch = 0

    def value_at(self, epoch: int) -> float:
        """β during (0-based) ``epoch``."""
        raise NotImplementedError

    @property
    def value(self) -> float:
        """β of the current epoch."""
        return self.value_at(self.epoch)

    def step(self) -> float:
        """Advance one epoch; returns the new β."""
        self.epoch += 1
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "beta0": self.beta0, "total_epochs": self.total_epochs,
                "beta_min": self.beta_min, "epoch": self.epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"state_dict is for a {state.get('kind')!r} schedule, not {self.kind!r}")
        fresh = type(self)(state["beta0"], state["total_epochs"], state["beta_min"])
        epoch = state["epoch"]
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"state_dict epoch must be a non-negative int, got {epoch!r}")
        self.beta0, self.total_epochs, self.beta_min = fresh.beta0, fresh.total_epochs, fresh.beta_min
        self.epoch = epoch

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(beta0={self.beta0}, total_epochs={self.total_epochs}, "
                f"beta_min={self.beta_min}, epoch={self.epoch})")

    def _progress(self, epoch: int) -> float:
        return min(max(epoch, 0) / self.total_epochs, 1.0)


class ConstantBeta(BetaSchedule):
    """β = ``beta0`` at every epoch (the authors' federated code: 0.3)."""

    kind = "constant"

    def value_at(self, epoch: int) -> float:
        return self.beta0


class LinearBeta(BetaSchedule):
    """β_t = beta0 + (beta_min − beta0)·min(t/T, 1): reaches ``beta_min`` at epoch T and stays."""

    kind = "linear"

    def value_at(self, epoch: int) -> float:
        return self.beta0 + (self.beta_min - self.beta0) * self._progress(epoch)


class CosineBeta(BetaSchedule):
    """β_t = beta_min + (beta0 − beta_min)·(1 + cos(π·min(t/T, 1)))/2."""

    kind = "cosine"

    def value_at(self, epoch: int) -> float:
        return self.beta_min + (self.beta0 - self.beta_min) * 0.5 * (1.0 + math.cos(math.pi * self._progress(epoch)))


class AuthorsBeta(BetaSchedule):
    r"""The authors' compound decay: β_t = beta0·r_t, r_t = r_{t−1}·(1 − t/T), r_0 = 1.

    Indexed as the authors' training loop runs it: the update is applied at
    the start of every epoch with a 1-based counter, so 0-based epoch e trains with

        β_e = beta0 · Π_{k=1..e+1} (1 − k/T),

    e.g. T = 4: 3/4, 3/8, 3/32, 0 (times beta0). Epoch 0 already uses
    (1 − 1/T), the last epoch (e = T − 1) uses 0, and β stays 0 after that (it
    never turns negative). ``beta_min`` is not used.
    """

    kind = "authors"

    def value_at(self, epoch: int) -> float:
        r = 1.0
        for t in range(1, min(max(epoch, 0) + 1, self.total_epochs) + 1):
            r *= 1.0 - t / self.total_epochs
        return self.beta0 * r


_CLASSES = {cls.kind: cls for cls in (ConstantBeta, LinearBeta, CosineBeta, AuthorsBeta)}


def make_beta_schedule(kind: str, beta0: float = 0.3, total_epochs: Optional[int] = None,
                       beta_min: float = 0.0) -> BetaSchedule:
    """Build a β schedule.

    Args:
        kind (str): ``"constant"``, ``"linear"``, ``"cosine"`` or ``"authors"``.
        beta0 (float, optional): β at epoch 0. (default: ``0.3``)
        total_epochs (int, optional): Decay length T (> 0), required for all
            kinds but ``"constant"``. (default: ``None``)
        beta_min (float, optional): End value of ``"linear"``/``"cosine"``.
            (default: ``0.0``)
    """
    if kind not in _CLASSES:
        raise ValueError(f"unknown beta schedule kind {kind!r}; expected one of {KINDS}")
    if kind != "constant" and total_epochs is None:
        raise ValueError(f"the {kind!r} beta schedule needs total_epochs (a positive int)")
    return _CLASSES[kind](beta0, total_epochs, beta_min)


def _unit_interval(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
