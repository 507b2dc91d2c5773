"""An explicit switch together with ablation= is never silently dropped."""
from __future__ import annotations

import dataclasses

import pytest

from psyau_graph.nn import FedPsyAUConfig
from psyau_graph.nn.ablations import SWITCHES, ablation_switches
from psyau_graph.train.protocols import resolve_model_config


def test_conflicting_explicit_switch_raises():
    with pytest.raises(ValueError, match=r"ablation='IX' sets psych_prior=False.*explicitly sets psych_prior=True"):
        resolve_model_config(FedPsyAUConfig(psych_prior=True), 3, "IX")


def test_agreeing_explicit_switch_and_inherited_switches():
    cfg = resolve_model_config(FedPsyAUConfig(psych_prior=False, hidden=32), 4, "IX")
    assert cfg.ablation == "IX" and cfg.hidden == 32 and cfg.num_classes == 4
    assert {k: getattr(cfg, k) for k in SWITCHES} == ablation_switches("IX")
    # switches a config only inherited from its own ablation give way to ablation=
    cfg = resolve_model_config(FedPsyAUConfig(ablation="IX"), 3, "VI")
    assert {k: getattr(cfg, k) for k in SWITCHES} == ablation_switches("VI")


def test_overrides_recorded_and_survive_a_round_trip():
    cfg = FedPsyAUConfig(ablation="IX", data_prior=True)
    assert cfg.overrides == ("data_prior",) and cfg.data_prior is True and cfg.psych_prior is False
    again = FedPsyAUConfig(**{**dataclasses.asdict(cfg), "overrides": list(cfg.overrides)})
    assert again == cfg
    with pytest.raises(ValueError, match="overrides: unknown switch"):
        FedPsyAUConfig(overrides=("nope",))
