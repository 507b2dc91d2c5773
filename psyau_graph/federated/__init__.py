"""Federated training: framework-free core, in-process engine, Flower adapters.

- :mod:`.core` — pure functions on state dicts (FedAvg, proximal term, P-FedProx mixture,
  shared keys, update validation)
- :mod:`.run` — :class:`FederatedRun`, the in-process engine; :mod:`.compare` —
  :func:`compare_strategies`
- :mod:`.flower` — Flower ``ClientApp``/``ServerApp``/strategies, simulation and
  deployment runners
"""
from .compare import compare_strategies
from .config import STRATEGIES, FederatedConfig
from .core import RejectedUpdate, fedavg, personalised_init, prox_term, shared_keys
from .run import FederatedRun, RoundFailed

__all__ = ["FederatedConfig", "FederatedRun", "RejectedUpdate", "RoundFailed", "STRATEGIES",
           "compare_strategies", "fedavg", "personalised_init", "prox_term", "shared_keys"]
