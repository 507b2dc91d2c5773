"""The FED-PsyAU network (paper §4, Fig. 2) and its loss (§4.5).

Data flow (per sample; B is the batch)::

    rois (65, 3, 5, 5) ─ LFE ─ Φ (65, 3, 5, 5) ─ SSE ─ Z (65, 3, 5, 5)
        ─ AFE (4 ROI groups) ─ F_AU (12, 25) ──► AFE AU head → au_afe (12)
        ─ DPK-GAT upper ‖ lower (+res) ─ h_local (12, 25)
        ─ DPK-GAT whole face (+res) ─ h_global (12, 25) ──► GAT AU head → au_gat (12)
    h_global as (12, 5, 5) ─┐
    flow (3, 28, 28) ───────┴ DSI ─► logits (C)

See ``docs/architecture.md`` and :mod:`psyau_graph.nn.ablations` for the settings.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from psyau_graph.au import NUM_AUS
from psyau_graph.nn.ablations import SWITCHES, ablation_switches
from psyau_graph.nn.afe import AFE, AUHead
from psyau_graph.nn.dpk_gat import IMPLS, DPKGAT
from psyau_graph.nn.dsi import DSI
from psyau_graph.nn.lfe import LFE
from psyau_graph.nn.sse import SSE

NUM_ROIS = 65
ROI_SHAPE = (3, 5, 5)
FLOW_SHAPE = (3, 28, 28)
DEFAULT_LOSS_WEIGHTS = (0.2, 0.8, 0.8)


@dataclass
class FedPsyAUConfig:
    """Configuration of :class:`FedPsyAU` (defaults: the paper, §4-5).

    Args:
        num_classes (int): emotion classes. (default: ``3``)
        heads (int): heads of the first DPK-GAT layer. (default: ``3``)
        hidden (int): channels per head of the first DPK-GAT layer. (default: ``64``)
        dropout (float): DPK-GAT attention dropout and DSI dropout. (default: ``0.5``)
        feat_dropout (float): DPK-GAT feature dropout before each layer (authors: 0.5).
            (default: ``0.5``)
        au_dropout (float): dropout on the hidden layer of both AU heads. (default: ``0.5``)
        beta (float): prior weight β used when ``forward`` gets none. (default: ``0.3``)
        loss_weights (tuple): (α1 CE, α2 AFE BCE, α3 GAT BCE). (default: ``(0.2, 0.8, 0.8)``)
        ablation (str): Table 3 setting, I … XII; fills every switch left as None.
            (default: ``"VI"``)
        prior (str | None): data prior source ("dfme", "casme2", "samm", "uniform",
            a CSV path) used when ``data_prior``. (default: ``"dfme"``)
        use_lfe, use_sse, local_gat, global_gat, dual_stream, au_grouping, psych_prior,
        data_prior (bool | None): architecture switches; None = from ``ablation``.
        overrides (tuple | None): names of the switches set explicitly (they win over
            ``ablation``'s values); None = the switches given as non-None. Kept so that
            :func:`psyau_graph.train.protocols.resolve_model_config` can tell an explicit
            switch from one filled in by the ablation. (default: ``None``)
        sse_heads (int): SSE attention heads (paper 3, authors' code 5). (default: ``3``)
        sse_ff (int): SSE feed-forward width. (default: ``256``)
        sse_dropout (float): dropout inside the SSE layer. (default: ``0.1``)
        negative_slope (float): DPK-GAT LeakyReLU slope. (default: ``0.2``)
        prior_mode (str): "paper" or "authors", see ``DPKGATConv``. (default: ``"paper"``)
        gat_impl (str): "dense" or "sparse" DPK-GAT execution. (default: ``"dense"``)
        au_hidden (int): hidden width of both AU heads. (default: ``128``)
        au_branch (int): DSI AU-stream branch width. (default: ``16``)
        flow_branches (tuple): DSI flow-stream branch widths. (default: ``(8, 16)``)
    """

    num_classes: int = 3
    heads: int = 3
    hidden: int = 64
    dropout: float = 0.5
    feat_dropout: float = 0.5
    au_dropout: float = 0.5
    beta: float = 0.3
    loss_weights: Tuple[float, float, float] = DEFAULT_LOSS_WEIGHTS
    ablation: str = "VI"
    prior: Optional[str] = "dfme"
    use_lfe: Optional[bool] = None
    use_sse: Optional[bool] = None
    local_gat: Optional[bool] = None
    global_gat: Optional[bool] = None
    dual_stream: Optional[bool] = None
    au_grouping: Optional[bool] = None
    psych_prior: Optional[bool] = None
    data_prior: Optional[bool] = None
    overrides: Optional[Tuple[str, ...]] = None
    sse_heads: int = 3
    sse_ff: int = 256
    sse_dropout: float = 0.1
    negative_slope: float = 0.2
    prior_mode: str = "paper"
    gat_impl: str = "dense"
    au_hidden: int = 128
    au_branch: int = 16
    flow_branches: Tuple[int, int] = (8, 16)

    def __post_init__(self):
        switches = ablation_switches(self.ablation)
        self.ablation = str(self.ablation).strip().upper()
        if self.overrides is None:
            self.overrides = tuple(n for n in SWITCHES if getattr(self, n) is not None)
        else:
            self.overrides = tuple(self.overrides)
            unknown = [n for n in self.overrides if n not in SWITCHES]
            if unknown:
                raise ValueError(f"overrides: unknown switch names {unknown}; expected some of {SWITCHES}")
        for name in SWITCHES:
            if getattr(self, name) is None:
                setattr(self, name, switches[name])
            elif not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool or None, got {getattr(self, name)!r}")
        self.loss_weights = tuple(float(w) for w in self.loss_weights)
        self.flow_branches = tuple(int(w) for w in self.flow_branches)
        if len(self.loss_weights) != 3 or any(w < 0 for w in self.loss_weights):
            raise ValueError(f"loss_weights must be three non-negative numbers, got {self.loss_weights}")
        if int(self.num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= float(self.beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("feat_dropout", "au_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.gat_impl not in IMPLS:
            raise ValueError(f"gat_impl must be one of {IMPLS}, got {self.gat_impl!r}")
        if self.heads < 1 or self.hidden < 1:
            raise ValueError(f"heads and hidden must be positive, got heads={self.heads}, hidden={self.hidden}")
        if (self.local_gat or self.global_gat) and not self.dual_stream:
            raise ValueError("local_gat/global_gat need the AU path (dual_stream=True)")
        if self.use_sse and not self.dual_stream:
            raise ValueError("use_sse needs the AU path (dual_stream=True)")

    @classmethod
    def from_ablation(cls, name: str, **kwargs) -> "FedPsyAUConfig":
        """The configuration of Table 3 setting ``name`` ("I" … "XII"); ``kwargs`` override fields."""
        return cls(ablation=name, **kwargs)

    @property
    def has_gat(self) -> bool:
        return bool(self.local_gat or self.global_gat)

    def to_dict(self) -> dict:
        """Plain dict of every field (``FedPsyAUConfig(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)


class FedPsyAUOutput(NamedTuple):
    """What :class:`FedPsyAU` returns.

    Shapes:
        - ``logits``: ``(B, C)`` emotion logits
        - ``au_afe``: ``(B, 12)`` AU logits of the AFE head, or None (setting I)
        - ``au_gat``: ``(B, 12)`` AU logits of the GAT head, or None (no DPK-GAT)
        - ``attention``: dict layer name → ``(B, H, N, N)`` (see :class:`DPKGAT`), or None
    """

    logits: Tensor
    au_afe: Optional[Tensor] = None
    au_gat: Optional[Tensor] = None
    attention: Optional[Dict[str, Tensor]] = None


class AUModule(nn.Module):
    """Everything before the classifier: LFE, SSE, AFE (+ head), DPK-GAT (+ head).

    Shapes:
        - **input:** ``rois (B, 65, 3, 5, 5)``
        - **output:** ``(h (B, 12, 25), au_afe (B, 12), au_gat (B, 12) | None, attention | None)``;
          ``h`` is h_global (or h_local, or F_AU without DPK-GAT).
    """

    def __init__(self, config: FedPsyAUConfig):
        super().__init__()
        c = config
        self.lfe = LFE() if c.use_lfe else None
        self.sse = SSE(NUM_ROIS, ROI_SHAPE, heads=c.sse_heads, dim_feedforward=c.sse_ff,
                       dropout=c.sse_dropout) if c.use_sse else None
        self.afe = AFE(grouping=c.au_grouping, num_rois=NUM_ROIS)
        self.afe_head = AUHead(NUM_AUS, 25, c.au_hidden, dropout=c.au_dropout)
        self.gat = self.gat_head = None
        if c.has_gat:
            self.gat = DPKGAT(local=c.local_gat, global_=c.global_gat, psych_prior=c.psych_prior,
                              prior=c.prior if c.data_prior else None, in_channels=25, hidden=c.hidden,
                              heads=c.heads, dropout=c.dropout, feat_dropout=c.feat_dropout,
                              negative_slope=c.negative_slope, beta=c.beta,
                              prior_mode=c.prior_mode, impl=c.gat_impl)
            self.gat_head = AUHead(NUM_AUS, 25, c.au_hidden, dropout=c.au_dropout)

    frozen: bool = False

    def freeze(self, frozen: bool = True) -> "AUModule":
        """Freeze (or unfreeze) the module: parameters get ``requires_grad = not frozen``
        and, while frozen, the module stays in eval mode (BatchNorm statistics fixed,
        dropout off) even when the parent model is put in training mode."""
        self.frozen = bool(frozen)
        for p in self.parameters():
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "AUModule":
        super().train(mode and not self.frozen)
        return self

    def forward(self, rois: Tensor, beta=None, return_attention: bool = False):
        z = self.lfe(rois) if self.lfe is not None else rois
        if self.sse is not None:
            z = self.sse(z)
        f_au = self.afe(z)  # (B, 12, 25)
        au_afe = self.afe_head(f_au)
        h, au_gat, att = f_au, None, None
        if self.gat is not None:
            if return_attention:
                h, att = self.gat(f_au, beta=beta, return_attention=True)
            else:
                h = self.gat(f_au, beta=beta)
            au_gat = self.gat_head(h)  # h already carries the residual (+ F_AU)
        return h, au_afe, au_gat, att


class FedPsyAU(nn.Module):
    r"""FED-PsyAU micro-expression recogniser.

    Args:
        config (FedPsyAUConfig, optional): (default: ``FedPsyAUConfig()``, the full model)

    Shapes:
        - **input:** ``rois (B, 65, 3, 5, 5)`` (may be None in setting I), ``flow (B, 3, 28, 28)``
        - **output:** :class:`FedPsyAUOutput` (``logits (B, C)``, ``au_afe (B, 12)``,
          ``au_gat (B, 12)``, ``attention``)
    """

    def __init__(self, config: Optional[FedPsyAUConfig] = None):
        super().__init__()
        self.config = config = config or FedPsyAUConfig()
        self.au_net = AUModule(config) if config.dual_stream else None
        self.dsi = DSI(config.num_classes, au_stream=config.dual_stream, num_aus=NUM_AUS,
                       au_branch=config.au_branch, flow_branches=config.flow_branches, dropout=config.dropout)

    def au_module(self) -> nn.Module:
        """The sub-module before the classifier (LFE, SSE, AFE, DPK-GAT and both AU heads).

        Raises:
            ValueError: the configuration has no AU path (setting I).
        """
        if self.au_net is None:
            raise ValueError(f"ablation {self.config.ablation}: this model has no AU module (flow-only)")
        return self.au_net

    def forward(self, rois: Optional[Tensor], flow: Tensor, beta=None, return_attention: bool = False
                ) -> FedPsyAUOutput:
        if flow.dim() != 4 or tuple(flow.shape[1:]) != FLOW_SHAPE:
            raise ValueError(f"flow: expected (B, {', '.join(map(str, FLOW_SHAPE))}), got {tuple(flow.shape)}")
        au_afe = au_gat = att = maps = None
        if self.au_net is not None:
            if rois is None or rois.dim() != 5 or tuple(rois.shape[1:]) != (NUM_ROIS, *ROI_SHAPE):
                got = None if rois is None else tuple(rois.shape)
                raise ValueError(f"rois: expected (B, {NUM_ROIS}, 3, 5, 5), got {got}")
            if rois.shape[0] != flow.shape[0]:
                raise ValueError(f"rois and flow disagree on the batch size: {rois.shape[0]} vs {flow.shape[0]}")
            h, au_afe, au_gat, att = self.au_net(rois, beta=beta, return_attention=return_attention)
            maps = h.reshape(h.shape[0], NUM_AUS, 5, 5)
        logits = self.dsi(maps, flow)
        return FedPsyAUOutput(logits, au_afe, au_gat, att if return_attention else None)

    def forward_batch(self, batch, beta=None, return_attention: bool = False) -> FedPsyAUOutput:
        """Forward on a PyG ``Batch``: ``batch.x`` (B·65, 3, 5, 5), ``batch.flow`` (B, 3, 28, 28)."""
        b = int(batch.num_graphs)
        x = batch.x
        if x.shape[0] != b * NUM_ROIS:
            raise ValueError(f"batch.x: expected {b}·{NUM_ROIS} ROI rows for {b} graphs, got {x.shape[0]}")
        flow = batch.flow.reshape(b, *FLOW_SHAPE)
        return self(x.reshape(b, NUM_ROIS, *ROI_SHAPE), flow, beta=beta, return_attention=return_attention)


def masked_au_bce(pred: Tensor, au: Tensor, au_mask: Optional[Tensor] = None,
                  pos_weight: Optional[Tensor] = None) -> Tensor:
    """BCE-with-logits of one AU head, the mean over known labels only (0 when none is known).

    Args:
        pred: ``(B, K)`` logits; au: ``(B, K)`` multi-hot targets.
        au_mask: ``(B, K)`` or ``(B,)``, 1 where the label is known (default: all known).
        pos_weight: ``(K,)`` weight of each AU's positive term (default: 1).
    """
    pw = None if pos_weight is None else pos_weight.to(pred)
    if pw is not None and tuple(pw.shape) != (pred.shape[1],):
        raise ValueError(f"pos_weight: expected shape ({pred.shape[1]},), got {tuple(pw.shape)}")
    if au_mask is None:
        return F.binary_cross_entropy_with_logits(pred, au.to(pred.dtype), pos_weight=pw)
    m = au_mask.to(pred.dtype)
    if m.dim() == 1:
        m = m[:, None].expand_as(pred)
    if tuple(m.shape) != tuple(pred.shape):
        raise ValueError(f"au_mask: expected shape {tuple(pred.shape)} or ({pred.shape[0]},), "
                         f"got {tuple(au_mask.shape)}")
    each = F.binary_cross_entropy_with_logits(pred, au.to(pred.dtype), pos_weight=pw, reduction="none")
    return (each * m).sum() / m.sum().clamp_min(1.0)


def fedpsyau_loss(out: FedPsyAUOutput, y: Tensor, au: Optional[Tensor] = None,
                  weights: Sequence[float] = DEFAULT_LOSS_WEIGHTS, *, au_mask: Optional[Tensor] = None,
                  pos_weight: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Optional[Tensor]]]:
    r"""The MER loss, eq. 8: :math:`\alpha_1 \mathrm{CE} + \alpha_2 L_A^{AFE} + \alpha_3 L_A^{GAT}`.

    AU terms are skipped (and reported as None) when the model has no such head.

    Args:
        out (FedPsyAUOutput): model output.
        y (Tensor): ``(B,)`` class indices.
        au (Tensor, optional): ``(B, 12)`` multi-hot AU targets (needed when a head exists).
        weights (tuple, optional): (α1, α2, α3). (default: ``(0.2, 0.8, 0.8)``)
        au_mask (Tensor, optional): ``(B, 12)`` or ``(B,)``, 1 where the AU label is known;
            each AU BCE is the mean over the known entries only (0 with none known), so
            clips without AU coding do not teach the heads "no AU". (default: all known)
        pos_weight (Tensor, optional): ``(12,)`` weight of the positive term of each
            AU's BCE (e.g. negatives/positives of the training fold, see
            :func:`au_pos_weight`). (default: 1)

    Returns:
        ``(loss, parts)``: scalar loss; ``parts`` = ``{"ce", "au_afe", "au_gat"}``
        (unweighted, detached scalars or None).
    """
    if len(weights) != 3:
        raise ValueError(f"weights: expected (α1, α2, α3), got {tuple(weights)}")
    a1, a2, a3 = (float(w) for w in weights)
    logits = out.logits
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(f"y: expected ({logits.shape[0]},) class indices, got {tuple(y.shape)}")
    ce = F.cross_entropy(logits, y.long())
    loss = a1 * ce
    parts: Dict[str, Optional[Tensor]] = {"ce": ce.detach(), "au_afe": None, "au_gat": None}
    for name, pred, w in (("au_afe", out.au_afe, a2), ("au_gat", out.au_gat, a3)):
        if pred is None:
            continue
        if au is None or tuple(au.shape) != tuple(pred.shape):
            raise ValueError(f"au: expected multi-hot targets of shape {tuple(pred.shape)}, "
                             f"got {None if au is None else tuple(au.shape)}")
        bce = masked_au_bce(pred, au, au_mask, pos_weight)
        loss = loss + w * bce
        parts[name] = bce.detach()
    return loss, parts


def au_pos_weight(au: Tensor, au_mask: Optional[Tensor] = None, max_weight: float = 50.0) -> Tensor:
    """Positive weights for the AU BCE from a training fold's prevalence.

    For AU k, ``w_k = n_neg_k / n_pos_k`` over the known labels (so positives and
    negatives weigh the same in the loss), clipped to ``[1, max_weight]``; an AU with
    no known positive in the fold gets 1 (there is nothing to up-weight).

    Shapes:
        au: ``(N, 12)`` multi-hot; au_mask: ``(N, 12)`` or ``(N,)``; return ``(12,)``.
    """
    au = au.float()
    m = torch.ones_like(au) if au_mask is None else au_mask.float()
    if m.dim() == 1:
        m = m[:, None].expand_as(au)
    if m.shape != au.shape:
        raise ValueError(f"au_mask: expected shape {tuple(au.shape)} or ({au.shape[0]},), got {tuple(m.shape)}")
    pos = (au * m).sum(0)
    neg = ((1 - au) * m).sum(0)
    w = torch.where(pos > 0, neg / pos.clamp_min(1.0), torch.ones_like(pos))
    return w.clamp(1.0, float(max_weight))
