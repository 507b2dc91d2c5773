r"""Framework-free federated aggregation: pure functions on state dicts.

Nothing here knows about Flower or about the network; a *state* is a mapping
``name -> torch.Tensor`` (a subset of ``model.state_dict()``). The in-process engine
(:mod:`psyau_graph.federated.run`) and the Flower adapters
(:mod:`psyau_graph.federated.flower`) both call these functions.

Formulas (paper §4.4, SPEC §8):

* FedAvg: :math:`W^{t} = \sum_i \frac{n_i}{\sum_k n_k} \hat W_i^{t}`.
* FedProx proximal term in each client's loss:
  :math:`\frac{\alpha_4}{2}\lVert W - W_t\rVert_2^2` (squared norm) with :math:`W_t` the
  weights the client received this round.
* P-FedProx personalised start of client *i* in round *t*:
  :math:`W_i^t = \theta \hat W_i^{t-1} + \sum_{j\ne i} \omega_j \hat W_j^{t-1}`,
  :math:`\omega_j = (1-\theta)\, n_j / \sum_{k\ne i} n_k`.

Edge cases of the personalised initialisation (documented choices):

* one client, or every other client has 0 samples: there is nobody to mix with, so
  the share :math:`1-\theta` stays with the client and :math:`W_i^t = \hat W_i^{t-1}`;
* a client with 0 samples gets :math:`\omega_j = 0` in everybody else's mixture (it
  still receives its own personalised mixture);
* clients not sampled in a round keep their last known :math:`\hat W_j` (the caller
  keeps that dictionary: the server-side state of the P-FedProx strategy), so they
  keep contributing with their last model.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

State = Mapping[str, torch.Tensor]

#: buffer names of BatchNorm layers that hold running statistics
BN_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def shared_keys(model: nn.Module, share_bn_stats: bool = False,
                exclude_prefixes: Sequence[str] = ()) -> list[str]:
    """Names of the tensors that cross the wire, in ``state_dict`` order.

    Trainable parameters (``requires_grad=True``) are shared. BatchNorm running
    statistics stay on the client by default (FedBN); with ``share_bn_stats=True``
    ``running_mean``/``running_var`` are shared too (``num_batches_tracked`` never: an
    integer counter). Anything under one of ``exclude_prefixes`` (e.g. a frozen
    pretrained AU module) is never shared.

    Args:
        model: the network.
        share_bn_stats: also share BatchNorm running mean/variance (default: ``False``).
        exclude_prefixes: state-dict name prefixes to keep local (default: ``()``).

    Returns:
        list of state-dict keys.
    """
    if isinstance(exclude_prefixes, str):
        raise TypeError("exclude_prefixes must be a sequence of prefixes, not a single string")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    bn_stats: set[str] = set()
    if share_bn_stats:
        for mname, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                for b in ("running_mean", "running_var"):
                    bn_stats.add(f"{mname}.{b}" if mname else b)
    keys = []
    for name in model.state_dict().keys():
        if any(name == p or name.startswith(p.rstrip(".") + ".") for p in exclude_prefixes):
            continue
        if name in trainable or name in bn_stats:
            keys.append(name)
    return keys


def select(state: State, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Detached copies of ``state[k]`` for ``k`` in ``keys`` (a clear KeyError if one is missing)."""
    out = {}
    for k in keys:
        if k not in state:
            raise KeyError(f"state has no tensor {k!r}")
        out[k] = state[k].detach().clone()
    return out


def _check_weights(weights: Sequence[float], n: int, what: str) -> list[float]:
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ValueError(f"{what}: got {len(w)} weights for {n} states")
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError(f"{what}: weights must be finite and >= 0, got {w}")
    if sum(w) <= 0:
        raise ValueError(f"{what}: all weights are 0 (no client has samples); nothing to average")
    return w


def weighted_average(states: Sequence[State], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """:math:`\\sum_i w_i S_i / \\sum_i w_i`, key by key (accumulated in float64).

    Args:
        states: states with identical key sets and shapes.
        weights: non-negative weights, not all 0.

    Returns:
        dict with the dtype of ``states[0]`` per key (integers are rounded).
    """
    if not states:
        raise ValueError("weighted_average: no states given")
    w = _check_weights(weights, len(states), "weighted_average")
    total = sum(w)
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], 1):
        if set(s.keys()) != set(keys):
            raise ValueError(f"weighted_average: state {i} has keys {sorted(set(s) ^ set(keys))} "
                             "that the others do not share")
    out = {}
    for k in keys:
        ref = states[0][k]
        acc = torch.zeros(ref.shape, dtype=torch.float64)
        for s, wi in zip(states, w):
            if s[k].shape != ref.shape:
                raise ValueError(f"weighted_average: {k!r} has shape {tuple(s[k].shape)}, "
                                 f"expected {tuple(ref.shape)}")
            if wi:
                acc += s[k].detach().to(torch.float64) * (wi / total)
        out[k] = acc.round().to(ref.dtype) if not ref.is_floating_point() else acc.to(ref.dtype)
    return out


def fedavg(states: Sequence[State], num_samples: Sequence[int]) -> dict[str, torch.Tensor]:
    """FedAvg: average of client states weighted by their training-sample counts.

    Args:
        states: one state per client (same keys and shapes).
        num_samples: ``n_i`` per client (>= 0, not all 0).
    """
    return weighted_average(states, num_samples)


def prox_term(model: nn.Module, anchor: State, mu: float) -> torch.Tensor:
    r"""FedProx/P-FedProx proximal term :math:`\frac{\mu}{2}\sum_k \lVert W_k - A_k\rVert_2^2`.

    Differentiable with respect to the model's parameters named in ``anchor`` (only
    parameters; buffers in ``anchor`` are ignored). ``anchor`` is the state the client
    received this round (detached).

    Args:
        model: the network being trained.
        anchor: ``name -> tensor`` received weights :math:`W_t`.
        mu: :math:`\alpha_4` (paper: 0.001).

    Returns:
        scalar tensor.
    """
    if mu < 0:
        raise ValueError(f"mu must be >= 0, got {mu}")
    params = dict(model.named_parameters())
    terms = []
    for k, a in anchor.items():
        p = params.get(k)
        if p is None:
            continue
        if p.shape != a.shape:
            raise ValueError(f"prox_term: {k!r} has shape {tuple(p.shape)}, anchor {tuple(a.shape)}")
        terms.append(((p - a.detach().to(p.dtype)) ** 2).sum())
    if not terms:
        return torch.zeros((), requires_grad=False)
    return 0.5 * mu * torch.stack(terms).sum()


def pfedprox_weights(num_samples: Mapping[Hashable, int], client: Hashable,
                     theta: float = 0.9) -> dict[Hashable, float]:
    """Mixing weights of P-FedProx for ``client``: ``{client: θ, j: ω_j}`` summing to 1.

    ``ω_j = (1 − θ)·n_j / Σ_{k≠i} n_k``. If no other client has samples, the client
    keeps weight 1 (see module docstring).
    """
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"theta must lie in [0, 1], got {theta}")
    if client not in num_samples:
        raise KeyError(f"unknown client {client!r}; known: {list(num_samples)}")
    for j, n in num_samples.items():
        if n < 0:
            raise ValueError(f"client {j!r} has a negative sample count {n}")
    others = {j: float(n) for j, n in num_samples.items() if j != client}
    total = sum(others.values())
    if total <= 0:
        return {client: 1.0}
    w = {client: float(theta)}
    for j, n in others.items():
        w[j] = (1.0 - theta) * n / total
    return w


def personalised_init(states: Mapping[Hashable, State], num_samples: Mapping[Hashable, int],
                      theta: float = 0.9, clients: Iterable[Hashable] | None = None
                      ) -> dict[Hashable, dict[str, torch.Tensor]]:
    r"""P-FedProx: each client's start :math:`W_i^t` from everyone's last models.

    Args:
        states: ``client -> Ŵ_j^{t-1}`` last known model of every client (clients not
            sampled last round keep their older model here).
        num_samples: ``client -> n_j`` training samples.
        theta: weight on the client's own model (default: ``0.9``).
        clients: which clients to compute (default: all in ``states``).

    Returns:
        ``client -> W_i^t``.
    """
    if set(states) != set(num_samples):
        raise ValueError(f"personalised_init: states for {sorted(map(str, states))} but sample "
                         f"counts for {sorted(map(str, num_samples))}")
    targets = list(states) if clients is None else list(clients)
    out = {}
    for i in targets:
        w = pfedprox_weights(num_samples, i, theta)
        ids = [j for j in w if w[j] > 0]
        out[i] = weighted_average([states[j] for j in ids], [w[j] for j in ids])
    return out


@dataclass(frozen=True)
class RejectedUpdate:
    """A client update that was not aggregated, and why."""

    client: str
    round: int
    reason: str

    def to_dict(self) -> dict:
        return {"client": self.client, "round": self.round, "reason": self.reason}


def check_update(update: State, reference: State) -> str | None:
    """Why ``update`` is unusable against ``reference`` (same keys, shapes, finite), else None."""
    missing = sorted(set(reference) - set(update))
    extra = sorted(set(update) - set(reference))
    if missing or extra:
        return f"wrong key set: missing {missing[:5]}, unexpected {extra[:5]}"
    for k, ref in reference.items():
        t = update[k]
        if not isinstance(t, torch.Tensor):
            return f"{k!r} is a {type(t).__name__}, expected a tensor"
        if tuple(t.shape) != tuple(ref.shape):
            return f"{k!r} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}"
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            return f"{k!r} has {n_bad} NaN/Inf value(s)"
    return None


def filter_updates(updates: Mapping[Hashable, State], reference: State, round: int
                   ) -> tuple[dict[Hashable, State], list[RejectedUpdate]]:
    """Split client updates into accepted ones and :class:`RejectedUpdate` records (logged)."""
    accepted, rejected = {}, []
    for cid, upd in updates.items():
        reason = check_update(upd, reference)
        if reason is None:
            accepted[cid] = upd
        else:
            rec = RejectedUpdate(str(cid), int(round), reason)
            log.warning("round %d: update of client %s rejected: %s", round, cid, reason)
            rejected.append(rec)
    return accepted, rejected


# ----------------------------------------------------------------- robust aggregation
def _stack(states: Sequence[State], k: str) -> torch.Tensor:
    ref = states[0][k]
    for i, s in enumerate(states):
        if k not in s or s[k].shape != ref.shape:
            raise ValueError(f"robust aggregation: state {i} lacks {k!r} or has another shape")
    return torch.stack([s[k].detach().to(torch.float64) for s in states])


def coordinate_median(states: Sequence[State]) -> dict[str, torch.Tensor]:
    """Coordinate-wise median of client states (unweighted; the mean of the two middle
    values for an even count). Shapes: each ``[*shape]`` → ``[*shape]``."""
    if not states:
        raise ValueError("coordinate_median: no states given")
    out = {}
    for k, ref in states[0].items():
        med = torch.quantile(_stack(states, k), 0.5, dim=0) if len(states) > 1 else _stack(states, k)[0]
        out[k] = med.to(ref.dtype) if ref.is_floating_point() else med.round().to(ref.dtype)
    return out


def trimmed_mean(states: Sequence[State], trim: float) -> dict[str, torch.Tensor]:
    """Coordinate-wise trimmed mean: per coordinate drop the ``floor(trim·n)`` largest and
    smallest values, average the rest (unweighted).

    Args:
        states: ``n`` client states.
        trim: fraction cut at each end, ``0 <= trim < 0.5``; at least one value must remain.
    """
    if not states:
        raise ValueError("trimmed_mean: no states given")
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    n = len(states)
    cut = int(math.floor(trim * n))
    out = {}
    for k, ref in states[0].items():
        vals = _stack(states, k).sort(dim=0).values[cut:n - cut]
        m = vals.mean(dim=0)
        out[k] = m.to(ref.dtype) if ref.is_floating_point() else m.round().to(ref.dtype)
    return out


def bound_update_norms(updates: Mapping[Hashable, State], sent: Mapping[Hashable, State], factor: float
                       ) -> tuple[dict[Hashable, dict[str, torch.Tensor]], list[dict]]:
    r"""Scale down updates whose L2 norm exceeds ``factor`` × the round's median norm.

    The update of client *i* is :math:`\Delta_i = \hat W_i - W_i` (what it sent back minus
    what it received, floating-point tensors only); if
    :math:`\lVert\Delta_i\rVert > f\cdot\mathrm{median}_j\lVert\Delta_j\rVert` it becomes
    :math:`W_i + \Delta_i\, f\,\mathrm{median}/\lVert\Delta_i\rVert`.

    Returns:
        ``(bounded updates, records)`` with one record ``{"client", "norm", "median",
        "scale"}`` per scaled update.
    """
    if not factor > 0:
        raise ValueError(f"norm bound factor must be > 0, got {factor}")
    norms = {}
    for c, upd in updates.items():
        sq = sum(float(((upd[k].to(torch.float64) - sent[c][k].to(torch.float64)) ** 2).sum())
                 for k in upd if upd[k].is_floating_point())
        norms[c] = math.sqrt(sq)
    if not norms:
        return {}, []
    med = float(torch.quantile(torch.tensor(list(norms.values()), dtype=torch.float64), 0.5))
    out, scaled = {}, []
    for c, upd in updates.items():
        limit = factor * med
        if norms[c] > limit and norms[c] > 0:
            s = limit / norms[c]
            out[c] = {k: (sent[c][k] + (v - sent[c][k]) * s).to(v.dtype) if v.is_floating_point() else v
                      for k, v in upd.items()}
            scaled.append({"client": c, "norm": norms[c], "median": med, "scale": s})
            log.warning("update of client %s scaled by %.3g: norm %.4g > %.3g x median %.4g",
                        c, s, norms[c], factor, med)
        else:
            out[c] = dict(upd)
    return out, scaled
