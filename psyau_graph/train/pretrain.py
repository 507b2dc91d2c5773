"""AU-module pretraining (paper §5.1 and supplement §9.3).

The paper pretrains everything before the classifier (LRM + AFR: LFE, SSE, AFE,
DPK-GAT and the two AU heads) on AU-labelled data, then trains MER; the authors'
code keeps that module frozen during federated training. Here:

* :func:`pretrain_au_module` trains the AU module of a :class:`~psyau_graph.nn.FedPsyAU`
  on AU labels alone (BCE of both AU heads), leaving unknown AU labels (``au_known`` = 0)
  out of the loss and optionally weighting each AU's positive term (training-set
  prevalence, as :func:`psyau_graph.train.fit.fit` does);
* :func:`au_module_f1` scores both AU heads (sigmoid >= 0.5, known labels only);
* :func:`save_au_module` / :func:`load_au_module` move it between models (atomic
  write; the configuration is checked on load), optionally frozen.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from psyau_graph.nn.ablations import SWITCHES

FORMAT = "psyau_graph.au_module/1"
#: config fields that change the AU module's parameters or buffers
_AU_FIELDS = tuple(s for s in SWITCHES if s != "dual_stream") + (
    "heads", "hidden", "sse_heads", "sse_ff", "au_hidden", "prior")


def _au_bce(pred: Tensor, au: Tensor, au_mask: Optional[Tensor], pos_weight: Optional[Tensor]) -> Tensor:
    """BCE of one AU head over known labels only: the model's own masked AU loss."""
    from psyau_graph.nn.model import masked_au_bce

    return masked_au_bce(pred, au, au_mask, pos_weight)


def au_pretrain_loss(au_afe: Tensor, au_gat: Optional[Tensor], au: Tensor,
                     weights: Sequence[float] = (1.0, 1.0), *, au_mask: Optional[Tensor] = None,
                     pos_weight: Optional[Tensor] = None) -> Tensor:
    """``w_afe·BCE(au_afe, au) + w_gat·BCE(au_gat, au)`` (the GAT term only if that head exists).

    Each BCE is the mean over the known labels (``au_mask`` = 1) only, as in
    :func:`psyau_graph.nn.model.fedpsyau_loss`, so clips without AU coding do not teach
    the heads "no AU"; ``pos_weight[k]`` multiplies the positive term of AU k.

    Shapes:
        au_afe, au_gat, au: ``(B, 12)``; au_mask: ``(B, 12)`` or ``(B,)`` (default: all
        known); pos_weight: ``(12,)`` (default: 1); output: scalar.
    """
    if au.shape != au_afe.shape:
        raise ValueError(f"au: expected multi-hot targets of shape {tuple(au_afe.shape)}, got {tuple(au.shape)}")
    loss = weights[0] * _au_bce(au_afe, au.float(), au_mask, pos_weight)
    if au_gat is not None:
        loss = loss + weights[1] * _au_bce(au_gat, au.float(), au_mask, pos_weight)
    return loss


def _batches(data, batch_size: int, generator: torch.Generator
             ) -> Iterable[Tuple[Tensor, Tensor, Optional[Tensor]]]:
    """``(rois (B, 65, 3, 5, 5), au (B, 12), au_known (B, 12) | None)`` from a tensor tuple
    ``(rois, au[, au_known])`` (shuffled with ``generator``) or an iterable of such tuples or
    of PyG batches (``x``, ``au``, optional ``au_known``)."""
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and all(torch.is_tensor(t) for t in data):
        rois, au = data[0], data[1]
        known = data[2] if len(data) == 3 else None
        if rois.dim() != 5 or au.dim() != 2 or rois.shape[0] != au.shape[0]:
            raise ValueError(f"data: expected (rois (N, 65, 3, 5, 5), au (N, 12)), got "
                             f"{tuple(rois.shape)} and {tuple(au.shape)}")
        if known is not None and tuple(known.shape) != tuple(au.shape):
            raise ValueError(f"data: au_known must have the shape of au {tuple(au.shape)}, got {tuple(known.shape)}")
        order = torch.randperm(rois.shape[0], generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield rois[idx], au[idx], None if known is None else known[idx]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            yield batch[0], batch[1], batch[2] if len(batch) > 2 else None
        else:  # PyG Batch: x (B·65, 3, 5, 5), au (B, 12), au_known (B, 12) when the items carry it
            b = int(batch.num_graphs)
            known = getattr(batch, "au_known", None)
            yield (batch.x.reshape(b, -1, *batch.x.shape[1:]), batch.au.reshape(b, -1),
                   None if known is None else known.reshape(b, -1))


def pretrain_au_module(model: nn.Module, data, *, epochs: int = 1, lr: float = 1e-4, batch_size: int = 32,
                       weight_decay: float = 1e-2, weights: Sequence[float] = (1.0, 1.0), beta=None,
                       seed: int = 0, progress: bool = True, device=None, precision: str = "fp32",
                       pos_weight: Optional[Tensor] = None,
                       on_epoch: Optional[Callable[[int, float], None]] = None) -> list[float]:
    """Train ``model.au_module()`` on AU labels alone (AdamW; the classifier is not touched).

    Args:
        model: a :class:`~psyau_graph.nn.FedPsyAU` (with an AU path).
        data: ``(rois (N, 65, 3, 5, 5), au (N, 12)[, au_known (N, 12)])`` tensors, or an
            iterable of such tuples or of PyG batches (``x``, ``au``, optional ``au_known``,
            e.g. a loader over a :class:`~psyau_graph.data.dataset.MEDataset`). Entries
            with ``au_known`` = 0 are left out of the loss.
        epochs (int): passes over ``data``. (default: ``1``)
        lr (float): learning rate. (default: ``1e-4``)
        batch_size (int): for tensor data. (default: ``32``)
        weight_decay (float): AdamW weight decay. (default: ``1e-2``)
        weights (tuple): (AFE head, GAT head) loss weights. (default: ``(1.0, 1.0)``)
        beta: DPK-GAT β (default: the model's).
        seed (int): shuffling seed for tensor data. (default: ``0``)
        progress (bool): tqdm bar on a terminal, else one
            :class:`~psyau_graph.progress.LineProgress` line per epoch on stderr. (default: ``True``)
        device: torch device to train on; the model is moved there and each batch too
            (default: ``None``, where the model's parameters are). An unavailable device
            is a ``ValueError``.
        precision (str): ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the forward pass
            (the loss in fp32; a gradient scaler for fp16), as in
            :func:`psyau_graph.train.fit.train_one_epoch`. (default: ``"fp32"``)
        pos_weight: ``(12,)`` weights of each AU's positive BCE term, e.g.
            :func:`psyau_graph.train.fit.train_pos_weight` of the training set.
            (default: ``None`` = plain BCE)
        on_epoch: ``on_epoch(epoch, mean_loss)`` called after each epoch (epoch from 1).

    Returns:
        mean loss per epoch.
    """
    from ..progress import LineProgress
    from .device import check_device
    from .precision import autocast, check_precision, grad_scaler

    if device is None:
        device = next(model.parameters()).device
    device = check_device(device)
    check_precision(precision, device)
    model.to(device)
    scaler = grad_scaler(precision, device)
    au_net = model.au_module()
    if getattr(au_net, "frozen", False):
        raise ValueError("the AU module is frozen; unfreeze it (load_au_module(..., freeze=False)) to pretrain")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if pos_weight is not None:
        pos_weight = pos_weight.to(device)
    params = [p for p in au_net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    au_net.train()
    history = []
    lines = LineProgress(epochs, "pretrain AU", "epoch", every_pct=0, enabled=progress)
    for epoch in tqdm(range(epochs), desc="pretrain AU", disable=None if progress else True):
        total, n = 0.0, 0
        for rois, au, known in _batches(data, batch_size, gen):
            rois, au = rois.to(device), au.to(device)
            known = None if known is None else known.to(device)
            with autocast(precision, device):
                _, au_afe, au_gat, _ = au_net(rois, beta=beta)
            loss = au_pretrain_loss(au_afe.float(), None if au_gat is None else au_gat.float(), au.float(), weights,
                                    au_mask=known, pos_weight=pos_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite AU pretraining loss in epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            total += float(loss.detach()) * len(au)
            n += len(au)
        if n == 0:
            raise ValueError("data yielded no samples")
        history.append(total / n)
        lines.update(1, note=f"AU loss {history[-1]:.4f}")
        if on_epoch is not None:
            on_epoch(epoch + 1, history[-1])
    return history


@torch.no_grad()
def au_module_f1(model: nn.Module, data, *, batch_size: int = 64, beta=None, device=None,
                 precision: str = "fp32", threshold: float = 0.5) -> dict:
    """AU F1 of both AU heads of ``model.au_module()`` on ``data`` (eval mode, no shuffling).

    An AU counts as predicted present when its sigmoid probability is ``>= threshold``;
    entries whose label is unknown (``au_known`` = 0) are left out
    (:func:`psyau_graph.train.metrics.au_f1`).

    Args:
        data: as for :func:`pretrain_au_module`.

    Returns:
        ``{"afe": au_f1 dict, "gat": au_f1 dict | None, "threshold": float,
        "labels_known": int, "n": int}``; each au_f1 dict has ``per_au``, ``mean``,
        ``aus_counted``.
    """
    from .device import check_device
    from .metrics import au_f1
    from .precision import autocast, check_precision

    if device is None:
        device = next(model.parameters()).device
    device = check_device(device)
    check_precision(precision, device)
    model.to(device)
    au_net = model.au_module()
    was_training = au_net.training
    au_net.eval()
    afe, gat, aus, knowns = [], [], [], []
    try:
        for rois, au, known in _batches(data, batch_size, torch.Generator().manual_seed(0)):
            with autocast(precision, device):
                _, au_afe, au_gat, _ = au_net(rois.to(device), beta=beta)
            afe.append(torch.sigmoid(au_afe.float()).cpu())
            gat.append(None if au_gat is None else torch.sigmoid(au_gat.float()).cpu())
            aus.append(au.float().cpu())
            knowns.append(torch.ones_like(aus[-1]) if known is None else known.float().cpu())
    finally:
        au_net.train(was_training)
    if not aus:
        raise ValueError("data yielded no samples")
    au_true, au_known = torch.cat(aus), torch.cat(knowns)
    out = {"afe": au_f1(au_true, torch.cat(afe), threshold=threshold, mask=au_known), "gat": None,
           "threshold": float(threshold), "labels_known": int(au_known.sum()), "n": int(au_true.shape[0])}
    if all(g is not None for g in gat):
        out["gat"] = au_f1(au_true, torch.cat(gat), threshold=threshold, mask=au_known)
    return out


def save_au_module(model: nn.Module, path: Union[str, os.PathLike], meta: Optional[dict] = None) -> Path:
    """Save the AU module's state and the model configuration to ``path`` atomically.

    ``meta``: plain values (str, numbers, lists, dicts) describing how it was trained
    (``psyau pretrain`` records its arguments, loss history and AU F1); stored under
    ``"meta"``, not read by :func:`load_au_module`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.au_module().state_dict()}
    if meta is not None:
        obj["meta"] = dict(meta)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_au_module(model: nn.Module, path: Union[str, os.PathLike], freeze: bool = False) -> nn.Module:
    """Load a saved AU module into ``model`` (in place) and optionally freeze it.

    Raises:
        FileNotFoundError: ``path`` missing.
        UnsafeFileError: the file's pickle references code beyond tensors and plain
            values (it is not unpickled; see :func:`~psyau_graph.train.checkpoint.safe_torch_load`).
        ValueError: not an AU-module file, or saved with an AU configuration different
            from ``model.config`` (the differing fields are named).

    Returns:
        ``model``.
    """
    from .checkpoint import safe_torch_load

    path = Path(path)
    obj = safe_torch_load(path, "AU module file")
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path}: not an AU-module file (expected format {FORMAT!r})")
    saved, ours = obj["config"], model.config.to_dict()
    diff = [f"{k}: saved {saved.get(k)!r} vs model {ours.get(k)!r}" for k in _AU_FIELDS if saved.get(k) != ours.get(k)]
    if diff:
        raise ValueError(f"{path}: AU module configuration differs from the model's: " + "; ".join(diff))
    au_net = model.au_module()
    au_net.freeze(False)
    au_net.load_state_dict(obj["state_dict"])
    au_net.freeze(freeze)
    return model
