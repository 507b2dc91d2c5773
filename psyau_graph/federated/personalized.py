r"""Personalised federated strategies compared in the paper's Fig. 5: FedRep, FedAS, ELLP.

Pure functions and one client-side routine; the in-process engine
(:mod:`psyau_graph.federated.run`) calls them. In all three, the *personal*
parameters (default: the task's classifier head, ``Task.head_prefixes``; configurable
with ``FederatedConfig.personal_prefixes``) never leave the client; the rest (the
*body* / representation) is shared.

* **FedRep** (Collins et al., ICML 2021). Client *i*, round *t*: load the global body
  :math:`\phi^t`, train the head :math:`h_i` for ``head_epochs`` with the body fixed,
  then the body for the remaining ``local_epochs - head_epochs`` epochs (at least 1)
  with the head fixed. Server: :math:`\phi^{t+1} = \sum_i \frac{n_i}{\sum_k n_k}\hat\phi_i`.
* **FedAS** (Yang et al., CVPR 2024). *Parameter alignment*: after loading the new
  global body, the client first fits its old personal head to that body for
  ``align_epochs`` (body fixed), then trains the whole model for ``local_epochs``.
  *Client synchronisation*: the client sends, with its body, the diagonal Fisher
  information :math:`F_i = \mathbb E[(\partial \ell/\partial \phi)^2]` of the body on its
  training data, and the server averages element-wise
  :math:`\phi^{t+1}_k = \sum_i n_i F_{i,k}\hat\phi_{i,k} / \sum_i n_i F_{i,k}`
  (:func:`fisher_average`, :math:`\varepsilon` added to every :math:`F`).
  This is a variant: a public implementation weights each client by one scalar (its
  Fisher trace) and aligns the shared part by distillation (see docs/federated.md).
* **ELLP**: the paper only describes it as "parameter decoupling with Fisher-information
  weighting"; no public description of its exact algorithm could be established. What
  is implemented is exactly that description: personal head kept local (decoupling),
  the whole model trained ``local_epochs`` from (global body, own head), body
  aggregated with :func:`fisher_average`. Unlike FedAS there is no alignment step.

Fisher information is estimated per batch as the squared gradient of the task's
training loss (the mean over the batch), averaged over batches (the "empirical Fisher"
of one pass; model in training mode, its state restored afterwards).
"""
from __future__ import annotations

import math
from typing import Hashable, Iterable, Mapping, Sequence

import torch
from torch import nn

from . import core

PERSONAL_STRATEGIES = ("fedrep", "fedas", "ellp")
FISHER_STRATEGIES = ("fedas", "ellp")


def _matches(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p.rstrip(".") or name.startswith(p.rstrip(".") + ".") for p in prefixes)


def personal_prefixes(task, configured: Sequence[str] | None) -> tuple[str, ...]:
    """The configured personal prefixes, else the task's ``head_prefixes`` (an error if neither)."""
    if configured:
        return tuple(configured)
    heads = tuple(getattr(task, "head_prefixes", ()) or ())
    if not heads:
        raise ValueError(f"task {type(task).__name__} names no classifier head (head_prefixes); "
                         "give personal_prefixes explicitly")
    return heads


def fisher_average(states: Sequence[Mapping[str, torch.Tensor]],
                   fishers: Sequence[Mapping[str, torch.Tensor]],
                   num_samples: Sequence[int], eps: float = 1e-8) -> dict[str, torch.Tensor]:
    r"""Element-wise Fisher-weighted average :math:`\sum_i n_i (F_i+\varepsilon) W_i / \sum_i n_i (F_i+\varepsilon)`.

    Keys of ``states`` without a Fisher entry (buffers) are averaged by sample count.

    Args:
        states: client states, same keys and shapes.
        fishers: per client, ``name -> F`` (same shape as the tensor, >= 0).
        num_samples: ``n_i`` (>= 0, not all 0).
        eps: added to every Fisher value (> 0), so an all-zero Fisher gives sample weights.
    """
    if not states or len(states) != len(fishers):
        raise ValueError(f"fisher_average: {len(states)} states but {len(fishers)} Fisher dicts")
    if not eps > 0:
        raise ValueError(f"fisher_average: eps must be > 0, got {eps}")
    n = core._check_weights(num_samples, len(states), "fisher_average")
    plain = [k for k in states[0] if k not in fishers[0]]
    out = core.weighted_average([{k: s[k] for k in plain} for s in states], n) if plain else {}
    for k in states[0]:
        if k in plain:
            continue
        ref = states[0][k]
        num = torch.zeros(ref.shape, dtype=torch.float64)
        den = torch.zeros(ref.shape, dtype=torch.float64)
        for s, f, ni in zip(states, fishers, n):
            if k not in f:
                raise KeyError(f"fisher_average: a client sent no Fisher information for {k!r}")
            fi = f[k].detach().to(torch.float64)
            if fi.shape != ref.shape or bool((fi < 0).any()) or not bool(torch.isfinite(fi).all()):
                raise ValueError(f"fisher_average: Fisher of {k!r} must be finite, >= 0, shape "
                                 f"{tuple(ref.shape)}")
            w = ni * (fi + eps)
            num += w * s[k].detach().to(torch.float64)
            den += w
        out[k] = (num / den).to(ref.dtype)
    return out


class _FisherProbe:
    """Optimizer stand-in: ``step()`` adds the squared gradients of ``params`` (no update)."""

    def __init__(self, params: Mapping[str, nn.Parameter]):
        self.params = dict(params)
        self.sums = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in self.params.items()}
        self.batches = 0
        self.param_groups = [{"lr": 0.0, "params": list(self.params.values())}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params.values():
            p.grad = None

    def step(self) -> None:
        for k, p in self.params.items():
            if p.grad is not None:
                self.sums[k] += p.grad.detach().to(torch.float64) ** 2
        self.batches += 1


def diagonal_fisher(task, model: nn.Module, loader, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of parameters ``keys``: mean over batches of grad².

    Runs one pass of ``task.train_epoch`` with an optimizer that never updates; the
    model's state dict (BatchNorm statistics included) is restored afterwards.

    Returns:
        ``name -> F`` (float32, shape of the parameter); keys that are buffers are skipped.
    """
    params = dict(model.named_parameters())
    chosen = {k: params[k] for k in keys if k in params}
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    probe = _FisherProbe(chosen)
    task.train_epoch(model, loader, probe, None)
    model.load_state_dict(saved)
    probe.zero_grad()
    b = max(probe.batches, 1)
    return {k: (s / b).to(torch.float32) for k, s in probe.sums.items()}


def _train_phase(task, model: nn.Module, data, cfg, trainable: set[str], epochs: int, seed: int) -> dict:
    """``epochs`` of AdamW on the parameters named in ``trainable`` (others fixed)."""
    saved_flags = {k: p.requires_grad for k, p in model.named_parameters()}
    last: dict = {}
    try:
        for k, p in model.named_parameters():
            p.requires_grad_(saved_flags[k] and k in trainable)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params or epochs < 1:
            return last
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        for e in range(epochs):
            loader = task.loader(data.dataset, data.train_idx, cfg.batch_size, True, seed + e)
            last = task.train_epoch(model, loader, opt, None)
    finally:
        for k, p in model.named_parameters():
            p.requires_grad_(saved_flags[k])
    return last


def fedrep_epochs(local_epochs: int, head_epochs: int | None) -> tuple[int, int]:
    """(head epochs, body epochs) of one FedRep round: default head = max(1, E // 5), body >= 1."""
    h = max(1, local_epochs // 5) if head_epochs is None else int(head_epochs)
    return h, max(1, local_epochs - h)


def personal_local_train(task, full_state: Mapping, shared_in: Mapping, data, cfg, *, client: int,
                         rnd: int, repeat: int, keys: list[str], personal: Sequence[str]
                         ) -> tuple[dict, dict, dict, dict | None]:
    """One round of a personalised client (FedRep / FedAS / ELLP).

    Args:
        full_state: the client's full state (its personal head included).
        shared_in: the global body (keys ``keys``; no personal tensor).
        keys: shared keys (the body); ``personal``: personal prefixes.

    Returns:
        ``(new_full_state, shared_out, metrics, fisher)``; ``fisher`` is ``None`` for FedRep.
    """
    from .client import _model_with
    from .config import round_seed

    check = getattr(task, "check_fault", None)
    if check is not None:
        check(client, rnd)
    leak = [k for k in shared_in if _matches(k, personal)]
    if leak:
        raise ValueError(f"personal tensors {leak[:3]} must not be received from the server")
    seed = round_seed(cfg.seed, repeat, rnd, client)
    model = _model_with(task, full_state, shared_in)
    torch.manual_seed(seed)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    head = {k for k in names if _matches(k, personal)}
    body = set(names) - head
    if not head:
        raise ValueError(f"no trainable parameter matches the personal prefixes {list(personal)}")
    last: dict = {}
    if cfg.strategy == "fedrep":
        h_ep, b_ep = fedrep_epochs(cfg.local_epochs, cfg.head_epochs)
        last = _train_phase(task, model, data, cfg, head, h_ep, seed) or last
        last = _train_phase(task, model, data, cfg, body, b_ep, seed + 1000) or last
    else:
        if cfg.strategy == "fedas":
            last = _train_phase(task, model, data, cfg, head, cfg.align_epochs, seed) or last
        last = _train_phase(task, model, data, cfg, set(names), cfg.local_epochs, seed + 1000) or last
    fisher = None
    if cfg.strategy in FISHER_STRATEGIES:
        loader = task.loader(data.dataset, data.train_idx, cfg.batch_size, False, seed)
        fisher = diagonal_fisher(task, model, loader, [k for k in keys if k in body])
    new_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loss = float(last.get("loss", math.nan)) if last else math.nan
    return new_state, core.select(new_state, keys), {"train_loss": loss, "n_train": data.n_train}, fisher


def aggregate(strategy: str, updates: Mapping[Hashable, Mapping], num_samples: Mapping[Hashable, int],
              fishers: Mapping[Hashable, Mapping] | None = None, eps: float = 1e-8) -> dict:
    """Server step: FedRep = sample-weighted mean of bodies; FedAS/ELLP = :func:`fisher_average`."""
    ids = list(updates)
    states, n = [updates[c] for c in ids], [int(num_samples[c]) for c in ids]
    if strategy == "fedrep":
        return core.fedavg(states, n)
    if strategy in FISHER_STRATEGIES:
        if fishers is None or any(c not in fishers for c in ids):
            raise ValueError(f"{strategy}: every accepted update needs its Fisher information")
        return fisher_average(states, [fishers[c] for c in ids], n, eps)
    raise ValueError(f"not a personalised strategy: {strategy!r}")
