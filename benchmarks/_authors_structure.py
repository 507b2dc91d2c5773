"""FED-PsyAU restructured the way the authors' code runs it (for the speed benchmark only).

Same parameters, same function (in eval mode), different execution structure:

* ``LoopLFE``: the shared LFE applied ROI by ROI in a Python loop (65 calls of a batch
  of B patches) instead of one call on B·65 patches;
* ``LoopAFE``: each AFE group assembles its ROIs one by one (``torch.stack`` of
  per-ROI slices) instead of one ``index_select``;
* ``PerHeadGATBlock``: a dense pyGAT-style layer with one Python-level layer per
  head; the attention logits come from the explicit pairwise concatenation
  ``[f_i ‖ f_j]`` of every node pair, ``(B, N, N, 2C) @ a``, as in the paper's
  eq. 3, masked to −∞ off the adjacency, softmax, mixed with the prior (eq. 4).

In training mode the per-ROI LFE computes BatchNorm statistics over B patches per
call instead of B·65, as the authors' loop does; in eval mode the outputs equal the
library model's (checked by the benchmark before timing).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LoopLFE(nn.Module):
    def __init__(self, lfe: nn.Module):
        super().__init__()
        self.net = lfe.net

    def forward(self, rois: Tensor) -> Tensor:
        return torch.stack([self.net(rois[:, k]) for k in range(rois.shape[1])], dim=1)


class LoopAFE(nn.Module):
    def __init__(self, afe: nn.Module):
        super().__init__()
        self.branches = afe.branches
        self.groups = [getattr(afe, f"roi_index_{i}").tolist() for i in range(len(afe.branches))]
        self.register_buffer("au_order", afe.au_order.clone(), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        feats = []
        for idx, branch in zip(self.groups, self.branches):
            feats.append(branch(torch.stack([z[:, k] for k in idx], dim=1)))
        return torch.cat(feats, dim=1).index_select(1, self.au_order)


def _dense_head(conv, x: Tensor, h: int, adj: Tensor, prior, beta: float) -> Tensor:
    C = conv.out_channels
    w = conv.lin.weight[h * C:(h + 1) * C]  # (C, F_in)
    f = x @ w.t()  # (B, N, C)
    b, n, _ = f.shape
    pairs = torch.cat([f.unsqueeze(2).expand(b, n, n, C), f.unsqueeze(1).expand(b, n, n, C)], dim=-1)
    a = torch.cat([conv.att_dst[0, h], conv.att_src[0, h]])  # [a_i ; a_j]
    e = F.leaky_relu(pairs @ a, conv.negative_slope)  # (B, N, N)
    e = e.masked_fill(adj == 0, float("-inf"))
    alpha = torch.softmax(e, dim=-1)
    if prior is not None and beta > 0:
        mass = prior.sum(-1, keepdim=True)
        d = torch.where(mass > 0, prior / mass.clamp_min(1e-30), alpha)
        alpha = (1 - beta) * alpha + beta * d
    alpha = F.dropout(alpha, conv.dropout, conv.training)
    return alpha @ f  # (B, N, C)


def _dense_layer(conv, x: Tensor, adj: Tensor, prior, beta: float) -> Tensor:
    heads = [_dense_head(conv, x, h, adj, prior, beta) for h in range(conv.heads)]  # one layer per head
    out = torch.cat(heads, dim=-1) if conv.concat else torch.stack(heads, 0).mean(0)
    return out + conv.bias if conv.bias is not None else out


class PerHeadGATBlock(nn.Module):
    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv1, self.conv2 = block.conv1, block.conv2
        self.feat_dropout = float(getattr(block, "feat_dropout", 0.0))
        self.register_buffer("adj", block.adj.clone())
        self.prior = None if block.prior is None else block.prior.clone()

    def forward(self, x: Tensor, beta=None, return_attention: bool = False) -> Tensor:
        if return_attention:
            raise NotImplementedError("the benchmark variant does not return attention")
        beta = float(self.conv1.beta if beta is None else beta)
        p, train = self.feat_dropout, self.training
        h = _dense_layer(self.conv1, F.dropout(x, p, train), self.adj, self.prior, beta)
        h = _dense_layer(self.conv2, F.dropout(F.elu(h), p, train), self.adj, self.prior, beta)
        return F.elu(h) + x  # as the library block (paper eq. 5): ELU on the aggregation, then the residual


def authors_structure(model: nn.Module) -> nn.Module:
    """A deep copy of a :class:`FedPsyAU` with the authors' execution structure (shared weights values)."""
    m = copy.deepcopy(model)
    au = m.au_net
    if au.lfe is not None:
        au.lfe = LoopLFE(au.lfe)
    au.afe = LoopAFE(au.afe)
    if au.gat is not None:
        for name in ("upper", "lower", "whole"):
            block = getattr(au.gat, name)
            if block is not None:
                setattr(au.gat, name, PerHeadGATBlock(block))
    return m
