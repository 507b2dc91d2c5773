"""Per-round server checkpoint of the Flower engines (simulation and deployment).

After every completed round (train, aggregate, evaluate) the ServerApp writes
``OUT/federation_state.pt`` atomically (:func:`save_server_state`). It holds:

* ``global``: the global shared tensors the next round starts from (name -> tensor);
* ``strategy``: the strategy's :meth:`state_dict` — records, failures, rejections and
  round times so far, and for P-FedProx every lab's last model :math:`\\hat W_j` and
  sample count :math:`n_j` keyed by the lab's **client index** (the ``partition-id`` its
  SuperNode reports), not by Flower node id, which changes when a node or the
  simulation restarts;
* ``rng``: the server process's Python, NumPy and torch RNG states (Flower samples
  nodes with :mod:`random`; the DP wrapper draws its noise from NumPy);
* ``round``, ``repeat``, ``run_tag`` (names the clients' local-state files, see
  :mod:`.client_app`), ``config`` (checked on resume), ``wall_time`` so far.

Client-side local state (the full local model: BatchNorm statistics under FedBN and
every non-shared tensor) never reaches the server; each client keeps it on its own disk
(:mod:`.client_app`). The file is read with the package's safe loader
(``weights_only=True``): tensors and plain values only.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ...errors import PsyauError
from ..config import FederatedConfig

STATE_FILE = "federation_state.pt"
FORMAT = "psyau_graph.flower_federation_state/1"


class ResumeError(PsyauError):
    """The run cannot continue from its checkpoint (missing, another configuration or
    split, the labs that reconnected are not the saved ones)."""


def rng_state() -> dict:
    """Python, NumPy and torch RNG states of this process (plain values / tensors)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_server_state(path: str | Path, *, config: FederatedConfig, repeat: int, rnd: int,
                      global_arrays: dict, strategy_state: dict, run_tag: str,
                      wall_time: float) -> Path:
    """Write the checkpoint after round ``rnd`` (atomic: temporary file + ``os.replace``).

    Args:
        global_arrays: the global shared tensors after round ``rnd`` (name -> tensor).
        strategy_state: ``strategy.state_dict()``.
    """
    from ...train.checkpoint import atomic_torch_save
    return atomic_torch_save({"format": FORMAT, "config": config.to_dict(), "repeat": int(repeat),
                              "round": int(rnd), "global": dict(global_arrays),
                              "strategy": strategy_state, "rng": rng_state(), "run_tag": str(run_tag),
                              "wall_time": float(wall_time)}, path)


def load_server_state(path: str | Path, config: FederatedConfig, repeat: int) -> dict:
    """Read a checkpoint (safe loading); refuse one of another configuration or split."""
    from ..run import load_state
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"cannot resume: no server checkpoint {path}")
    state = load_state(path, config, fmt=FORMAT, kind="Flower federation checkpoint", error=ResumeError)
    if int(state["repeat"]) != int(repeat):
        raise ResumeError(f"cannot resume from {path}: it is split {state['repeat']}, not {repeat}")
    return state
