"""Client-side work shared by every engine: partition, split, local training, evaluation.

A client keeps a *full* local state (every tensor of the model, including BatchNorm
running statistics and anything not shared). Each round it overwrites the shared
tensors with what it received, trains E epochs, and sends back only the shared
tensors (see :func:`psyau_graph.federated.core.shared_keys`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from . import core
from .config import FederatedConfig, round_seed
from .task import ClientFailure, Task

#: exceptions of local training that count as *this client failed* (recorded, the round
#: goes on if the quorum is met); anything else is a programming error and stops the run
DECLARED_FAILURES: tuple[type[BaseException], ...] = (
    ClientFailure, MemoryError, OSError) + ((torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ())


@dataclass
class ClientData:
    """A client's dataset and its 70/30 split (indices into ``dataset``)."""

    dataset: Any
    train_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def n_train(self) -> int:
        return int(len(self.train_idx))


def partition(subjects: list[str], n_clients: int, seed: int, balance: str = "subjects"
              ) -> list[np.ndarray]:
    """Disjoint subject groups → per-client index arrays.

    ``balance="subjects"`` (default, the paper): equal subject counts
    (:func:`~psyau_graph.federated.balance.equal_subject_partition`); ``"samples"``:
    near-equal sample counts (``client_partition`` of the data package).
    """
    n_subj = len(set(subjects))
    if n_clients > n_subj:
        raise ValueError(f"clients ({n_clients}) exceeds the number of subjects ({n_subj})")
    if balance == "subjects":
        from .balance import equal_subject_partition
        return equal_subject_partition(subjects, n_clients, seed)
    if balance != "samples":
        raise ValueError(f"balance must be 'subjects' or 'samples', got {balance!r}")
    from ..data.splits import client_partition
    return [np.asarray(p, dtype=np.int64) for p in client_partition(subjects, n_clients, seed)]


def within_client_split(n: int, train_frac: float, repeat: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The ``repeat``-th random train/test split of ``n`` samples (relative indices)."""
    if n < 2:
        raise ValueError(f"a client needs at least 2 samples for a train/test split, has {n}")
    from ..data.splits import repeated_random_splits
    for r, (tr, te) in enumerate(repeated_random_splits(n, train_frac=train_frac,
                                                        repeats=repeat + 1, seed=seed)):
        if r == repeat:
            return np.asarray(tr, dtype=np.int64), np.asarray(te, dtype=np.int64)
    raise RuntimeError(f"repeated_random_splits yielded fewer than {repeat + 1} splits")


def client_data(dataset, indices: np.ndarray, cfg: FederatedConfig, repeat: int,
                client: int) -> ClientData:
    """Split one client's samples ``indices`` (into ``dataset``) 70/30 for ``repeat``."""
    tr, te = within_client_split(len(indices), cfg.train_frac, repeat, cfg.seed + 7919 * client)
    indices = np.asarray(indices, dtype=np.int64)
    return ClientData(dataset, indices[tr], indices[te])


def initial_state(task: Task, seed: int) -> dict[str, torch.Tensor]:
    """The common initial model of round 0 (same seed → same weights in every engine)."""
    torch.manual_seed(int(seed))
    return {k: v.detach().clone() for k, v in task.make_model().state_dict().items()}


def model_shared_keys(task: Task, cfg: FederatedConfig) -> list[str]:
    return core.shared_keys(task.make_model(), cfg.share_bn_stats, cfg.exclude_prefixes)


def _model_with(task: Task, full_state: Mapping, shared: Mapping | None):
    """The task's model holding ``full_state`` with ``shared`` overwritten.

    One model object per task is built once and reused (building the network costs more
    than loading a state dict); every tensor of the state dict is overwritten each time.
    """
    model = getattr(task, "_fed_model", None)
    if model is None:
        model = task.make_model()
        task._fed_model = model
    state = dict(full_state)
    if shared is not None:
        for k, v in shared.items():
            if k not in state:
                raise KeyError(f"received tensor {k!r} is not part of the model")
            state[k] = v
    model.load_state_dict(state)
    return model


def local_train(task: Task, full_state: Mapping, shared_in: Mapping | None, data: ClientData,
                cfg: FederatedConfig, *, client: int, rnd: int, repeat: int = 0,
                keys: list[str] | None = None) -> tuple[dict, dict, dict]:
    """One round of local training.

    Args:
        task: the task.
        full_state: the client's full local state (start of the round).
        shared_in: tensors received from the server (``None`` for local-only).
        data: the client's data.
        cfg: run config (epochs, lr, batch size, mu).
        client, rnd, repeat: for the seed of this round (:func:`round_seed`).
        keys: shared keys (default: :func:`model_shared_keys`).

    Returns:
        ``(new_full_state, shared_out, metrics)`` with ``metrics = {"train_loss", "n_train"}``.
    """
    check = getattr(task, "check_fault", None)
    if check is not None:
        check(client, rnd)
    seed = round_seed(cfg.seed, repeat, rnd, client)
    model = _model_with(task, full_state, shared_in)
    compute = _compute_kwargs(cfg)
    if compute:
        model.to(cfg.device)
    torch.manual_seed(seed)  # after building the model: same random stream in every engine
    keys = keys if keys is not None else core.shared_keys(model, cfg.share_bn_stats,
                                                          cfg.exclude_prefixes)
    extra = None
    if cfg.uses_prox and shared_in is not None and cfg.mu > 0:
        anchor = {k: v.detach().to(cfg.device, copy=True) for k, v in shared_in.items()}
        extra = lambda m: core.prox_term(m, anchor, cfg.mu)  # noqa: E731
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    last = {}
    for epoch in range(cfg.local_epochs):
        loader = task.loader(data.dataset, data.train_idx, cfg.batch_size, True, seed + epoch)
        last = task.train_epoch(model, loader, opt, extra, **compute)
    new_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if compute:
        model.to("cpu")  # the cached model object holds CPU tensors between rounds
    shared_out = core.select(new_state, keys)
    return new_state, shared_out, {"train_loss": float(last.get("loss", float("nan"))),
                                   "n_train": data.n_train}


def local_evaluate(task: Task, full_state: Mapping, shared_in: Mapping | None, data: ClientData,
                   cfg: FederatedConfig) -> dict:
    """Evaluate ``full_state`` with ``shared_in`` overwritten on the client's test split.

    Returns:
        ``{"uf1", "uar", "acc", "loss", "n_test"}``.
    """
    model = _model_with(task, full_state, shared_in)
    compute = _compute_kwargs(cfg)
    loader = task.loader(data.dataset, data.test_idx, cfg.batch_size, False, 0)
    try:
        out = dict(task.evaluate(model.to(cfg.device), loader, **compute))
    finally:
        model.to("cpu")
    out["n_test"] = int(len(data.test_idx))
    return out


def _compute_kwargs(cfg: FederatedConfig) -> dict:
    """``precision``/``device`` for the task's train/evaluate calls, only where not the defaults
    (so tasks written before these settings keep working on CPU in fp32)."""
    kw = {}
    if getattr(cfg, "precision", "fp32") != "fp32":
        kw["precision"] = cfg.precision
    if str(getattr(cfg, "device", "cpu")) != "cpu":
        kw["device"] = cfg.device
    return kw


def clone_state(state: Mapping) -> dict:
    return {k: v.detach().clone() for k, v in copy.copy(dict(state)).items()}
