"""The dense DPK-GAT computation as it was before the speed work (for ``model_speed.py``).

The previous ``DPKGATConv.forward_dense`` for the configurations the model uses (paper
prior mode, no added self loops, no residual): attention logits as a product and a sum over
``(B, H, N, C)``, ``torch.softmax`` over the last dimension of 12, ``torch.lerp`` mixing.
:func:`use_previous_dense` swaps it into every ``DPKGATConv`` of a model copy, so the
benchmark measures "before" and "after" in the same process, interleaved. It also puts
back the dropout of that time (``F.dropout``, masks by ``bernoulli_``; the SSE through
``nn.TransformerEncoderLayer`` itself) in place of :mod:`psyau_graph.nn.dropout`.
"""
from __future__ import annotations

import copy
import types

import torch
import torch.nn.functional as F

from psyau_graph.nn.dpk_gat_conv import DPKGATConv


def _previous_forward_dense(self, x, adj, prior=None, beta=None, return_attention_weights=None):
    if self.add_self_loops or self.res is not None or self.prior_mode != "paper":
        raise NotImplementedError("the previous-dense stand-in covers the model's configuration only")
    b, n, _ = x.shape
    h, c = self.heads, self.out_channels
    mask = adj != 0
    beta = self.beta if beta is None else beta
    f = self.lin(x).view(b, n, h, c).transpose(1, 2)
    a_src = (f * self.att_src.view(1, h, 1, c)).sum(-1)
    a_dst = (f * self.att_dst.view(1, h, 1, c)).sum(-1)
    e = F.leaky_relu(a_src.unsqueeze(-2) + a_dst.unsqueeze(-1), self.negative_slope).masked_fill(~mask, float("-inf"))
    alpha = torch.softmax(e, dim=-1).masked_fill(~mask, 0.0)
    if prior is not None and not (isinstance(beta, float) and beta == 0.0):
        prior = prior.to(x.dtype).masked_fill(~mask, 0.0)
        mass = prior.sum(-1, keepdim=True)
        d = prior / mass.clamp_min(torch.finfo(prior.dtype).tiny)
        weight = ((mass > 0) * beta).to(alpha.dtype).expand_as(alpha)
        alpha = torch.lerp(alpha, d.expand_as(alpha), weight)
    alpha = F.dropout(alpha, p=self.dropout, training=self.training)
    out = (alpha @ f).transpose(1, 2)
    out = out.reshape(b, n, h * c) if self.concat else out.mean(dim=2)
    if self.bias is not None:
        out = out + self.bias
    return (out, alpha) if return_attention_weights else out


_DROPOUT_USERS = ("psyau_graph.nn.afe", "psyau_graph.nn.dpk_gat", "psyau_graph.nn.sse")


def _with_bernoulli_dropout(forward):
    """``forward`` with the library's ``fast_dropout`` swapped for ``F.dropout`` during the call
    (masks are drawn in the forward pass; the benchmark is single-process and sequential)."""
    import importlib

    mods = [importlib.import_module(n) for n in _DROPOUT_USERS]

    def wrapped(*args, **kwargs):
        saved = [m.fast_dropout for m in mods]
        for m in mods:
            m.fast_dropout = F.dropout
        try:
            return forward(*args, **kwargs)
        finally:
            for m, f in zip(mods, saved):
                m.fast_dropout = f
    return wrapped


def use_previous_dense(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose DPK-GAT layers run the previous dense computation and
    whose dropouts are those of that time (``F.dropout`` / ``nn.Dropout``, bernoulli_ masks;
    the SSE layer run by ``nn.TransformerEncoderLayer`` in training mode too); its LFE runs
    every layer as a convolution (``impl="conv"``, as then)."""
    from psyau_graph.nn.dsi import DSI
    from psyau_graph.nn.lfe import LFE
    from psyau_graph.nn.sse import SSE

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, DPKGATConv):
            m.forward_dense = types.MethodType(_previous_forward_dense, m)
        elif isinstance(m, SSE):
            m._encoder_train = types.MethodType(lambda self, x: self.encoder(x), m)
        elif isinstance(m, DSI):
            m.dropout = torch.nn.Dropout(m.dropout.p)
        elif isinstance(m, LFE):
            m.impl = "conv"
    model.forward = _with_bernoulli_dropout(model.forward)
    return model


def _no_bn_fold(self) -> bool:
    return False


def use_before_speed_work(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` that computes as the library did before the speed work:
    the previous dense DPK-GAT (:func:`use_previous_dense`) and, in eval mode, the LFE's
    BatchNorm run as its own pass after each convolution instead of folded into it (the
    chunked conv → BatchNorm → ReLU schedule of that time). Same outputs up to rounding."""
    from psyau_graph.nn.lfe import LFE

    model = use_previous_dense(model)
    for m in model.modules():
        if isinstance(m, LFE):
            m._bn_eval = types.MethodType(_no_bn_fold, m)
    return model
