"""Centralised training and evaluation of FED-PsyAU-style models.

Framework-free: nothing here knows about the CLI or federation; the federated code
calls :func:`train_one_epoch` and :func:`evaluate` directly.

Model interface (``/tmp`` contract, ``psyau_graph.nn.FedPsyAU``): ``model(rois (B, 65, 3,
5, 5), flow (B, 3, 28, 28), beta=None, return_attention=False)`` returns an object with
``logits (B, C)``, ``au_afe (B, 12) | None``, ``au_gat (B, 12) | None``; the loss is
``loss_fn(out, y, au, weights=..., au_mask=..., pos_weight=...) -> (loss, parts)`` (default
``psyau_graph.nn.fedpsyau_loss``). Batches are PyG ``Batch`` objects with ``x (B·65, 3, 5,
5)``, ``flow (B, 3, 28, 28)``, ``y (B,)``, ``au (B, 12)`` and optionally ``au_known (B, 12)``.

AU supervision:

* ``au_mask``: the batch's ``au_known`` (1 = AU label known; clips without AU coding
  and the uncoded AUs of a ``?`` cell are 0), or None when the items carry no mask
  (then every label counts as known). Unknown labels enter neither the AU losses nor
  the AU F1.
* ``pos_weight``: with ``TrainConfig.au_pos_weight="train"`` (default) the (12,)
  weights ``n_neg / n_pos`` of the *training* set's known labels, clipped to ``[1, 50]``
  (:func:`psyau_graph.nn.model.au_pos_weight`), computed once per :func:`fit`; ``"none"``
  passes None (plain BCE).
* AU F1 rule: an AU is predicted present when the sigmoid of the GAT head's logit (the
  AFE head's when the model has no GAT head) is ≥ :data:`AU_THRESHOLD` = 0.5.

Schedules:

* learning rate: AdamW, linear warm-up per optimisation step from ``lr/steps`` to
  ``lr`` over the first ``warmup`` epochs, then constant. The paper's 10 warm-up
  epochs assume 50+ epochs; with fewer epochs the warm-up is scaled to
  ``min(warmup_epochs, epochs // 5)`` (:func:`effective_warmup_epochs`).
* β (prior weight of DPK-GAT): ``make_beta_schedule(kind, beta0, total_epochs)``; epoch
  ``e`` trains with ``schedule.value`` and the schedule is stepped once after the
  epoch. Evaluation uses the β of the epoch whose weights the model ends with (the last
  epoch, or with ``select="val"`` the best validation epoch). ``beta_schedule=None``
  passes ``beta=None`` (the model's configured β).
* determinism: ``seed`` seeds ``random``/``numpy``/``torch`` at the start of
  :func:`fit`, the training ``DataLoader`` shuffles with its own seeded generator, and
  ``torch.use_deterministic_algorithms`` is switched on for the duration of the fit.
  The model must be built by the caller after seeding (protocols do).
* checkpoints: ``<checkpoint_dir>/last.pt`` rewritten atomically after every epoch
  with model, optimizer, scheduler, β schedule, all RNG states, epoch and history;
  ``resume=True`` continues from it and reproduces an uninterrupted run exactly.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..progress import LineProgress
from .checkpoint import load_checkpoint, save_checkpoint
from .metrics import au_f1 as _au_f1
from .metrics import classification_report
from .precision import autocast, check_precision, grad_scaler, outputs_to_float

__all__ = [
    "TrainConfig", "FitResult", "seed_everything", "effective_warmup_epochs", "make_loader",
    "model_forward", "train_one_epoch", "evaluate", "fit", "dataset_au_labels", "train_pos_weight",
    "AU_THRESHOLD", "AU_POS_WEIGHTS",
]

DEFAULT_LOSS_WEIGHTS = (0.2, 0.8, 0.8)
#: an AU counts as predicted when its sigmoid probability is at least this (AU F1 rule)
AU_THRESHOLD = 0.5
#: values of ``TrainConfig.au_pos_weight``
AU_POS_WEIGHTS = ("train", "none")
#: upper clip of the AU positive weights (a fold with 1 positive in 500 gets 50, not 499)
AU_POS_WEIGHT_MAX = 50.0


@dataclass
class TrainConfig:
    """Centralised training settings (paper defaults where it gives them).

    Args:
        epochs: training epochs (default: 50).
        lr: AdamW learning rate (default: 5e-5, paper central setting).
        batch_size: mini-batch size (default: 32).
        weight_decay: AdamW weight decay (default: 1e-2).
        warmup_epochs: linear warm-up length before scaling (default: 10).
        beta_schedule: ``"constant"|"linear"|"cosine"|"authors"`` or ``None`` for the
            model's own β (default: ``"constant"``).
        beta0: initial β (default: 0.3).
        seed: seed for weights-independent randomness (default: 0).
        grad_clip: max gradient norm, ``None`` = no clipping (default: None).
        num_workers: DataLoader workers (default: 0).
        deterministic: enable ``torch.use_deterministic_algorithms`` (default: True).
        device: torch device (default: ``"cpu"``).
        loss_weights: (α1, α2, α3); ``None`` = the model config's (default: None).
        select: ``"last"`` (report the last epoch) or ``"val"`` (restore the epoch with
            the best validation UF1; needs a validation set) (default: ``"last"``).
        val_frac: fraction of training *subjects* carved out as validation when
            ``select="val"`` in protocols (default: 0.15).
        progress: show tqdm bars (default: True; hidden automatically off-TTY).
        precision: ``"fp32"`` (default), ``"bf16"`` (autocast on CPU or CUDA) or ``"fp16"``
            (CUDA autocast with a gradient scaler); see :mod:`psyau_graph.train.precision`.
        au_pos_weight: ``"train"`` (default): weight the positive term of each AU's BCE by
            ``n_neg / n_pos`` of the training set's known labels (clipped to [1, 50]), so rare
            AUs are not drowned by their absences; ``"none"``: plain BCE.
    """

    epochs: int = 50
    lr: float = 5e-5
    batch_size: int = 32
    weight_decay: float = 1e-2
    warmup_epochs: int = 10
    beta_schedule: str | None = "constant"
    beta0: float = 0.3
    seed: int = 0
    grad_clip: float | None = None
    num_workers: int = 0
    deterministic: bool = True
    device: str = "cpu"
    loss_weights: tuple[float, float, float] | None = None
    select: str = "last"
    val_frac: float = 0.15
    progress: bool = True
    precision: str = "fp32"
    au_pos_weight: str = "train"

    def __post_init__(self):
        from .device import check_device

        check_device(self.device)
        check_precision(self.precision, self.device)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be a positive int, got {self.epochs!r}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.au_pos_weight not in AU_POS_WEIGHTS:
            raise ValueError(f"TrainConfig.au_pos_weight must be one of {AU_POS_WEIGHTS}, got {self.au_pos_weight!r}")
        if self.select not in ("last", "val"):
            raise ValueError(f"TrainConfig.select must be 'last' or 'val', got {self.select!r}")
        if not 0 < self.val_frac < 1:
            raise ValueError(f"TrainConfig.val_frac must be in (0, 1), got {self.val_frac}")
        if self.loss_weights is not None:
            self.loss_weights = tuple(float(w) for w in self.loss_weights)
            if len(self.loss_weights) != 3:
                raise ValueError(f"TrainConfig.loss_weights needs 3 values, got {self.loss_weights}")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per epoch (``epoch, loss, lr, beta, time_s`` + loss parts,
            + ``val_*`` metrics when a validation set was given).
        beta: β of the epoch whose weights the model holds at the end (the last epoch, or
            the best validation epoch with ``select="val"``; use it for evaluation), or None.
        best_epoch: epoch whose weights the model holds at the end (1-based).
        resumed_from: epoch the run resumed after (0 = fresh run).
        train_time_s: wall time of this call.
        au_pos_weight: the (12,) AU positive weights the run trained with (a list), or None.
    """

    history: list[dict] = field(default_factory=list)
    beta: float | None = None
    best_epoch: int = 0
    resumed_from: int = 0
    train_time_s: float = 0.0
    au_pos_weight: list[float] | None = None


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def effective_warmup_epochs(config: TrainConfig) -> int:
    """Warm-up epochs actually used: ``min(warmup_epochs, epochs // 5)``."""
    return min(config.warmup_epochs, config.epochs // 5)


@contextmanager
def _deterministic(enabled: bool):
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def make_loader(dataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0):
    """PyG ``DataLoader`` with a seeded generator (drops a trailing batch of one when
    shuffling, since BatchNorm cannot train on a single sample)."""
    from torch_geometric.loader import DataLoader

    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    gen = torch.Generator()
    gen.manual_seed(seed)
    drop_last = shuffle and n > 1 and n % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen,
                      num_workers=num_workers, drop_last=drop_last)


def model_forward(model, batch, *, beta=None, return_attention: bool = False):
    """Run ``model`` on a PyG batch: reshapes ``batch.x`` (B·65, 3, 5, 5) → (B, 65, 3, 5, 5).

    Shapes:
        batch.x: (B·65, 3, 5, 5); batch.flow: (B, 3, 28, 28) → ``out.logits`` (B, C),
        ``out.au_afe``/``out.au_gat`` (B, 12) or None.
    """
    b = int(batch.num_graphs)
    x = batch.x
    if x.shape[0] % b:
        raise ValueError(f"batch.x has {x.shape[0]} rows, not a multiple of the {b} graphs in the batch")
    rois = x.reshape(b, x.shape[0] // b, *x.shape[1:])
    flow = batch.flow
    if flow.dim() == 3:
        flow = flow.unsqueeze(0)
    return model(rois, flow, beta=beta, return_attention=return_attention)


def _default_loss_fn():
    try:
        from psyau_graph.nn import fedpsyau_loss
    except ImportError as exc:
        raise ImportError("psyau_graph.nn.fedpsyau_loss is not available; pass loss_fn=") from exc
    return fedpsyau_loss


def _labels(batch, device):
    """``y (B,)``, ``au (B, 12)`` and ``au_known (B, 12)`` (None when the items carry no mask)."""
    b = int(batch.num_graphs)
    y = batch.y.reshape(-1).long().to(device)
    au = batch.au.reshape(b, -1).float().to(device)
    known = getattr(batch, "au_known", None)
    if known is not None:
        known = known.reshape(b, -1).float().to(device)
    return y, au, known


def dataset_au_labels(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """AU labels and their known mask of every item of ``dataset``.

    Uses ``dataset.au_labels`` when it has it (:class:`~psyau_graph.data.dataset.MEDataset`),
    else reads ``au`` / ``au_known`` item by item (an item without ``au_known`` counts as
    fully known).

    Shapes:
        return: ``(au (N, 12), known (N, 12))`` float.
    """
    fast = getattr(dataset, "au_labels", None)
    if fast is not None:
        au, known = fast
        return au.float(), known.float()
    aus, knowns = [], []
    for d in dataset:
        a = d.au.reshape(1, -1).float()
        k = getattr(d, "au_known", None)
        aus.append(a)
        knowns.append(torch.ones_like(a) if k is None else k.reshape(1, -1).float())
    if not aus:
        raise ValueError("dataset is empty")
    return torch.cat(aus), torch.cat(knowns)


def train_pos_weight(dataset, mode: str = "train") -> torch.Tensor | None:
    """The AU positive weights of ``TrainConfig.au_pos_weight`` for a training set.

    ``"train"``: (12,) ``n_neg / n_pos`` over the known labels of ``dataset``, clipped to
    ``[1, 50]`` (an AU without a known positive gets 1); ``"none"``: None.
    """
    if mode not in AU_POS_WEIGHTS:
        raise ValueError(f"au_pos_weight must be one of {AU_POS_WEIGHTS}, got {mode!r}")
    if mode == "none":
        return None
    from psyau_graph.nn.model import au_pos_weight

    au, known = dataset_au_labels(dataset)
    return au_pos_weight(au, known, max_weight=AU_POS_WEIGHT_MAX)


def _float(v) -> float:
    return float(v.detach()) if torch.is_tensor(v) else float(v)


def train_one_epoch(model, loader, optimizer, *, loss_weights=DEFAULT_LOSS_WEIGHTS, beta=None,
                    extra_loss: Callable[[torch.nn.Module], torch.Tensor] | None = None,
                    scheduler=None, loss_fn=None, grad_clip: float | None = None,
                    device: str | torch.device = "cpu", progress: bool = True,
                    desc: str = "train", precision: str = "fp32", scaler=None,
                    pos_weight: torch.Tensor | None = None) -> dict:
    """One pass over ``loader`` with gradient steps.

    Args:
        model: network with the FedPsyAU forward signature.
        loader: PyG DataLoader of ``Data`` items (see module doc).
        optimizer: a torch optimizer over ``model``'s parameters.
        loss_weights: (α1 CE, α2 AFE-AU BCE, α3 GAT-AU BCE) (default: (0.2, 0.8, 0.8)).
        beta: β passed to the model's forward (default: None = model's own).
        extra_loss: ``callable(model) -> scalar`` added to every batch loss (e.g. a
            FedProx proximal term) (default: None).
        scheduler: LR scheduler stepped after every optimisation step (default: None).
        loss_fn: ``loss_fn(out, y, au, weights=..., au_mask=..., pos_weight=...) -> (loss,
            parts)`` (default: ``psyau_graph.nn.fedpsyau_loss``); ``au_mask`` is the batch's
            ``au_known`` (B, 12) or None.
        grad_clip: max gradient norm (default: None).
        precision: ``"fp32"|"bf16"|"fp16"``: the forward pass runs under that autocast; the
            loss is computed in fp32 (default: ``"fp32"``).
        scaler: a ``torch.amp.GradScaler`` (needed for useful fp16 training; default: one is
            made for ``"fp16"``, none otherwise).
        pos_weight: (12,) AU positive weights passed to ``loss_fn`` (see
            :func:`train_pos_weight`) (default: None = plain BCE).

    Shapes:
        batches: ``x`` (B·65, 3, 5, 5), ``flow`` (B, 3, 28, 28), ``y`` (B,), ``au`` (B, 12),
        optional ``au_known`` (B, 12).

    Returns:
        ``{"loss": mean loss per sample, "n": samples, "lr": last lr, <part>: mean, "extra": mean}``.
    """
    loss_fn = loss_fn or _default_loss_fn()
    if scaler is None:
        scaler = grad_scaler(precision, device)
    else:
        check_precision(precision, device)
    model.train()
    tot, n, parts_sum, extra_sum = 0.0, 0, {}, 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=None if progress else True):
        batch = batch.to(device)
        y, au, known = _labels(batch, device)
        with autocast(precision, device):
            out = model_forward(model, batch, beta=beta)
        out = outputs_to_float(out)
        loss, parts = loss_fn(out, y, au, weights=tuple(loss_weights), au_mask=known, pos_weight=pos_weight)
        if extra_loss is not None:
            ex = extra_loss(model)
            loss = loss + ex
            extra_sum += _float(ex) * len(y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {float(loss)} (parts: "
                                     f"{ {k: _float(v) for k, v in (parts or {}).items()} })")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: scaled backward, unscale before clipping, skip steps with inf
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        bs = len(y)
        tot += float(loss.detach()) * bs
        n += bs
        for k, v in (parts or {}).items():
            if v is not None:
                parts_sum[k] = parts_sum.get(k, 0.0) + _float(v) * bs
    if n == 0:
        raise ValueError("training loader yielded no samples")
    rec = {"loss": tot / n, "n": n, "lr": float(optimizer.param_groups[0]["lr"])}
    rec.update({k: v / n for k, v in parts_sum.items() if k != "loss"})
    if extra_loss is not None:
        rec["extra"] = extra_sum / n
    return rec


@torch.no_grad()
def evaluate(model, loader, *, num_classes: int, loss_weights=DEFAULT_LOSS_WEIGHTS, beta=None,
             loss_fn=None, class_names: Sequence[str] | None = None,
             device: str | torch.device = "cpu", progress: bool = False, precision: str = "fp32",
             pos_weight: torch.Tensor | None = None) -> dict:
    """Predict every sample of ``loader`` and score it.

    Args:
        model: network with the FedPsyAU forward signature.
        loader: PyG DataLoader (not shuffled, so outputs follow the dataset order).
        num_classes: number of classes C.
        loss_weights, beta, loss_fn: as in :func:`train_one_epoch`.
        class_names: names for the report (default: indices).
        precision: autocast of the forward pass, ``"fp32"|"bf16"|"fp16"`` (default: ``"fp32"``).
        pos_weight: AU positive weights of the reported loss (default: None = plain BCE).

    Shapes:
        batches as in :func:`train_one_epoch`; outputs below with N = samples.

    Returns:
        dict with ``uf1, uar, acc, loss`` (floats), ``au_f1`` (mean over the AUs counted, or
        None when the model has no AU head), ``au_f1_per_au``, ``au_threshold`` (the rule:
        present when sigmoid ≥ :data:`AU_THRESHOLD`), ``au_labels_known`` (known AU labels
        scored), ``report`` (see
        :func:`~psyau_graph.train.metrics.classification_report`), and per sample:
        ``y_true (N,), y_pred (N,), probabilities (N, C), au_true (N, 12), au_known (N, 12),
        au_prob (N, 12) | None`` (numpy) and ``subjects, datasets, clips`` (lists of str, when
        the items carry them). AU probabilities come from the GAT head when present,
        else from the AFE head. AU F1 counts known labels only.
    """
    loss_fn = loss_fn or _default_loss_fn()
    model.eval()
    ys, probs, aus, knowns, au_probs = [], [], [], [], []
    meta = {"subjects": [], "datasets": [], "clips": []}
    tot, n = 0.0, 0
    for batch in tqdm(loader, desc="eval", leave=False, disable=None if progress else True):
        batch = batch.to(device)
        y, au, known = _labels(batch, device)
        with autocast(precision, device):
            out = model_forward(model, batch, beta=beta)
        out = outputs_to_float(out)
        loss, _ = loss_fn(out, y, au, weights=tuple(loss_weights), au_mask=known, pos_weight=pos_weight)
        tot += float(loss) * len(y)
        n += len(y)
        if out.logits.shape[-1] != num_classes:
            raise ValueError(f"model outputs {out.logits.shape[-1]} classes, expected num_classes={num_classes}")
        ys.append(y.cpu())
        probs.append(torch.softmax(out.logits.float(), -1).cpu())
        aus.append(au.cpu())
        knowns.append(torch.ones_like(au).cpu() if known is None else known.cpu())
        au_logits = out.au_gat if getattr(out, "au_gat", None) is not None else getattr(out, "au_afe", None)
        au_probs.append(None if au_logits is None else torch.sigmoid(au_logits.float()).cpu())
        for key, attr in (("subjects", "subject"), ("datasets", "dataset"), ("clips", "clip")):
            v = getattr(batch, attr, None)
            if v is not None:
                meta[key].extend([v] if isinstance(v, str) else list(v))
    if n == 0:
        raise ValueError("evaluation loader yielded no samples")
    y_true = torch.cat(ys).numpy()
    p = torch.cat(probs).numpy()
    y_pred = p.argmax(1)
    au_true = torch.cat(aus).numpy()
    au_known = torch.cat(knowns).numpy()
    au_prob = None if any(a is None for a in au_probs) else torch.cat(au_probs).numpy()
    rep = classification_report(y_true, y_pred, num_classes, class_names)
    au = _au_f1(au_true, au_prob, threshold=AU_THRESHOLD, mask=au_known) if au_prob is not None else None
    res = {
        "uf1": rep["uf1"], "uar": rep["uar"], "acc": rep["acc"], "loss": tot / n,
        "au_f1": None if au is None else au["mean"], "au_f1_per_au": None if au is None else au["per_au"],
        "au_threshold": AU_THRESHOLD, "au_labels_known": int(au_known.sum()),
        "report": rep, "y_true": y_true, "y_pred": y_pred, "probabilities": p,
        "au_true": au_true, "au_known": au_known, "au_prob": au_prob,
    }
    for k, v in meta.items():
        res[k] = v if len(v) == n else None
    return res


def _rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate(),
            "loader": gen.get_state()}


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    gen.set_state(state["loader"])


def _make_beta_schedule(config: TrainConfig):
    if config.beta_schedule is None:
        return None
    from psyau_graph.nn.schedules import make_beta_schedule

    return make_beta_schedule(config.beta_schedule, beta0=config.beta0, total_epochs=config.epochs)


_RESUME_KEYS = ("epochs", "lr", "batch_size", "weight_decay", "warmup_epochs", "beta_schedule", "beta0", "seed",
                "grad_clip", "loss_weights", "select", "precision", "au_pos_weight")


def fit(model, train_set, config: TrainConfig, *, val_set=None, checkpoint_dir=None, resume: bool = False,
        extra_loss=None, callbacks: Iterable[Callable[[int, dict, Any], None]] | None = None,
        loss_fn=None, num_classes: int | None = None, class_names=None) -> FitResult:
    """Train ``model`` on ``train_set`` (see the module doc for schedules and determinism).

    Args:
        model: network (already built, ideally right after :func:`seed_everything`).
        train_set: sequence of PyG ``Data`` items (its known AU labels give the AU positive
            weights, see ``TrainConfig.au_pos_weight``).
        config: :class:`TrainConfig`.
        val_set: optional validation items, evaluated after every epoch (``val_*`` in the
            history); with ``config.select == "val"`` the best-UF1 epoch is restored.
        checkpoint_dir: folder for ``last.pt`` (default: None = no checkpoints).
        resume: continue from ``<checkpoint_dir>/last.pt`` when it exists (default: False).
        extra_loss: ``callable(model) -> scalar`` added to the loss (default: None).
        callbacks: ``cb(epoch, record, model)`` called after each epoch's checkpoint is
            written (an exception there aborts the run; the checkpoint stays valid).
        loss_fn: see :func:`train_one_epoch`.
        num_classes: classes for validation metrics (default: ``train_set.num_classes``
            or ``model.config.num_classes``).
        class_names: names for reports (default: None).
    """
    if config.select == "val" and val_set is None:
        raise ValueError("TrainConfig.select='val' needs a val_set")
    callbacks = list(callbacks or [])
    loss_weights = config.loss_weights or tuple(getattr(getattr(model, "config", None), "loss_weights",
                                                        DEFAULT_LOSS_WEIGHTS))
    if num_classes is None:
        num_classes = getattr(train_set, "num_classes", None) or getattr(getattr(model, "config", None),
                                                                         "num_classes", None)
    t0 = time.perf_counter()
    device = torch.device(config.device)
    model.to(device)
    pos_weight = train_pos_weight(train_set, config.au_pos_weight)
    if pos_weight is not None:
        pos_weight = pos_weight.to(device)
    seed_everything(config.seed)
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                         num_workers=config.num_workers)
    val_loader = None if val_set is None else make_loader(val_set, config.batch_size, shuffle=False,
                                                           num_workers=config.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm_steps = effective_warmup_epochs(config) * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warm_steps) if warm_steps > 0 else 1.0)
    beta_sched = _make_beta_schedule(config)
    scaler = grad_scaler(config.precision, device)
    history: list[dict] = []
    start, best_uf1, best_epoch, best_state = 0, -math.inf, 0, None
    last_beta = best_beta = None
    ckpt_path = Path(checkpoint_dir) / "last.pt" if checkpoint_dir is not None else None
    if resume and ckpt_path is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        saved = dict(ck.get("train_config", {}))
        if saved:
            saved.setdefault("au_pos_weight", "none")  # written before the option: trained with plain BCE
        cur = dataclasses.asdict(config)
        diff = {k: (saved.get(k), cur[k]) for k in _RESUME_KEYS
                if k in saved and _norm(saved.get(k)) != _norm(cur[k])}
        if diff:
            raise ValueError(f"cannot resume {ckpt_path}: training config differs (saved, now): {diff}")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if beta_sched is not None and ck.get("beta_schedule") is not None:
            beta_sched.load_state_dict(ck["beta_schedule"])
        _set_rng_state(ck["rng"], loader.generator)
        history = list(ck["history"])
        start = int(ck["epoch"])
        best_uf1, best_epoch, best_state = ck.get("best_uf1", -math.inf), ck.get("best_epoch", 0), ck.get("best_state")
        last_beta = ck.get("last_beta")
        best_beta = ck.get("best_beta")
    resumed_from = start
    with _deterministic(config.deterministic):
        bar = tqdm(range(start, config.epochs), desc="epochs", disable=None if config.progress else True,
                   initial=start, total=config.epochs)
        lines = LineProgress(config.epochs, "train", "epoch", every_pct=20, enabled=config.progress, initial=start)
        for epoch in bar:
            te = time.perf_counter()
            beta = None if beta_sched is None else float(beta_sched.value)
            rec = train_one_epoch(model, loader, optimizer, loss_weights=loss_weights, beta=beta,
                                  extra_loss=extra_loss, scheduler=scheduler, loss_fn=loss_fn,
                                  grad_clip=config.grad_clip, device=device, progress=config.progress,
                                  desc=f"epoch {epoch + 1}", precision=config.precision, scaler=scaler,
                                  pos_weight=pos_weight)
            if beta_sched is not None:
                beta_sched.step()
            last_beta = beta
            rec = {"epoch": epoch + 1, **rec, "beta": beta}
            if val_loader is not None:
                ev = evaluate(model, val_loader, num_classes=num_classes, loss_weights=loss_weights, beta=beta,
                              loss_fn=loss_fn, class_names=class_names, device=device,
                              precision=config.precision, pos_weight=pos_weight)
                rec.update({f"val_{k}": ev[k] for k in ("loss", "uf1", "uar", "acc", "au_f1")})
                score = ev["uf1"] if not math.isnan(ev["uf1"]) else -math.inf
                if config.select == "val" and score > best_uf1:
                    best_uf1, best_epoch, best_beta = score, epoch + 1, beta
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            rec["time_s"] = time.perf_counter() - te
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            lines.update(1, f"loss {rec['loss']:.4f}")
            if ckpt_path is not None:
                save_checkpoint(ckpt_path, model, optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(),
                                beta_schedule=None if beta_sched is None else beta_sched.state_dict(),
                                rng=_rng_state(loader.generator), epoch=epoch + 1, history=history,
                                train_config=dataclasses.asdict(config), best_uf1=best_uf1,
                                best_epoch=best_epoch, best_state=best_state, last_beta=last_beta,
                                best_beta=best_beta)
            for cb in callbacks:
                cb(epoch + 1, rec, model)
    if config.select == "val" and best_state is not None:
        model.load_state_dict(best_state)
        last_beta = best_beta  # the restored weights were trained and validated with this β
    else:
        best_epoch = config.epochs
    return FitResult(history=history, beta=last_beta, best_epoch=best_epoch, resumed_from=resumed_from,
                     train_time_s=time.perf_counter() - t0,
                     au_pos_weight=None if pos_weight is None else [float(w) for w in pos_weight.cpu()])


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v
