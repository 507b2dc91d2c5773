"""AU-module pretraining (paper §5.1 and supplement §9.3).

The paper pretrains everything before the classifier (LRM + AFR: LFE, SSE, AFE,
DPK-GAT and the two AU heads) on AU-labelled data, then trains MER; the authors'
code keeps that module frozen during federated training. Here:

* :func:`pretrain_au_module` trains the AU module of a :class:`~psyau_graph.nn.FedPsyAU`
  on AU labels alone (BCE of both AU heads);
* :func:`save_au_module` / :func:`load_au_module` move it between models (atomic
  write; the configuration is checked on load), optionally frozen.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from psyau_graph.nn.ablations import SWITCHES

FORMAT = "psyau_graph.au_module/1"
#: config fields that change the AU module's parameters or buffers
_AU_FIELDS = tuple(s for s in SWITCHES if s != "dual_stream") + (
    "heads", "hidden", "sse_heads", "sse_ff", "au_hidden", "prior")


def au_pretrain_loss(au_afe: Tensor, au_gat: Optional[Tensor], au: Tensor,
                     weights: Sequence[float] = (1.0, 1.0)) -> Tensor:
    """``w_afe·BCE(au_afe, au) + w_gat·BCE(au_gat, au)`` (the GAT term only if that head exists).

    Shapes:
        au_afe, au_gat, au: ``(B, 12)``; output: scalar.
    """
    if au.shape != au_afe.shape:
        raise ValueError(f"au: expected multi-hot targets of shape {tuple(au_afe.shape)}, got {tuple(au.shape)}")
    loss = weights[0] * F.binary_cross_entropy_with_logits(au_afe, au.float())
    if au_gat is not None:
        loss = loss + weights[1] * F.binary_cross_entropy_with_logits(au_gat, au.float())
    return loss


def _batches(data, batch_size: int, generator: torch.Generator) -> Iterable[Tuple[Tensor, Tensor]]:
    """(rois (B, 65, 3, 5, 5), au (B, 12)) pairs from a tensor pair or a DataLoader."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        rois, au = data
        if rois.dim() != 5 or au.dim() != 2 or rois.shape[0] != au.shape[0]:
            raise ValueError(f"data: expected (rois (N, 65, 3, 5, 5), au (N, 12)), got "
                             f"{tuple(rois.shape)} and {tuple(au.shape)}")
        order = torch.randperm(rois.shape[0], generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield rois[idx], au[idx]
        return
    for batch in data:
        if isinstance(batch, (tuple, list)):
            yield batch[0], batch[1]
        else:  # PyG Batch: x (B·65, 3, 5, 5), au (B, 12)
            b = int(batch.num_graphs)
            yield batch.x.reshape(b, -1, *batch.x.shape[1:]), batch.au.reshape(b, -1)


def pretrain_au_module(model: nn.Module, data, *, epochs: int = 1, lr: float = 1e-4, batch_size: int = 32,
                       weight_decay: float = 1e-2, weights: Sequence[float] = (1.0, 1.0), beta=None,
                       seed: int = 0, progress: bool = True, device=None, precision: str = "fp32") -> list[float]:
    """Train ``model.au_module()`` on AU labels alone (AdamW; the classifier is not touched).

    Args:
        model: a :class:`~psyau_graph.nn.FedPsyAU` (with an AU path).
        data: ``(rois (N, 65, 3, 5, 5), au (N, 12))`` tensors, or an iterable of
            ``(rois, au)`` pairs or of PyG batches (``x``, ``au``).
        epochs (int): passes over ``data``. (default: ``1``)
        lr (float): learning rate. (default: ``1e-4``)
        batch_size (int): for tensor data. (default: ``32``)
        weight_decay (float): AdamW weight decay. (default: ``1e-2``)
        weights (tuple): (AFE head, GAT head) loss weights. (default: ``(1.0, 1.0)``)
        beta: DPK-GAT β (default: the model's).
        seed (int): shuffling seed for tensor data. (default: ``0``)
        progress (bool): tqdm bar. (default: ``True``)
        device: torch device to train on; the model is moved there and each batch too
            (default: ``None``, where the model's parameters are). An unavailable device
            is a ``ValueError``.
        precision (str): ``"fp32"``, ``"bf16"`` or ``"fp16"`` autocast of the forward pass
            (the loss in fp32; a gradient scaler for fp16), as in
            :func:`psyau_graph.train.fit.train_one_epoch`. (default: ``"fp32"``)

    Returns:
        mean loss per epoch.
    """
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
    params = [p for p in au_net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    au_net.train()
    history = []
    for epoch in tqdm(range(epochs), desc="pretrain AU", disable=None if progress else True):
        total, n = 0.0, 0
        for rois, au in _batches(data, batch_size, gen):
            rois, au = rois.to(device), au.to(device)
            with autocast(precision, device):
                _, au_afe, au_gat, _ = au_net(rois, beta=beta)
            loss = au_pretrain_loss(au_afe.float(), None if au_gat is None else au_gat.float(), au.float(), weights)
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
    return history


def save_au_module(model: nn.Module, path: Union[str, os.PathLike]) -> Path:
    """Save the AU module's state and the model configuration to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": model.au_module().state_dict()}
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
