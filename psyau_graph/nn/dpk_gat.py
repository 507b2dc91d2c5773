"""The DPK-GAT hierarchy of FED-PsyAU (paper §4.2.2, Fig. 4).

Stage 1 (local): the upper-face graph (AU idx 0–5) and the lower-face graph
(6–11) each run a two-layer :class:`~psyau_graph.nn.DPKGATConv` block with a
residual, in parallel → ``h_local`` (12 × 25). Stage 2 (global): a block of
the same form on the whole face, whose adjacency keeps only the cross-region
edges plus self loops, with the 12 × 12 data prior → ``h_global`` (+ residual).

The B samples of a batch are B disjoint copies of one small graph. Two
equivalent execution paths are offered:

* ``impl="dense"`` (default): :meth:`DPKGATConv.forward_dense`, batched matrix
  products over ``(B, heads, N, N)``;
* ``impl="sparse"``: the PyG message-passing path on a disjoint union of the B
  copies (edge indices with per-copy offsets, built once and cached per batch
  size and device).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from psyau_graph.au import NUM_AUS, UPPER
from psyau_graph.nn.dpk_gat_conv import DPKGATConv
from psyau_graph.nn.dropout import dropout as fast_dropout

IMPLS = ("dense", "sparse")


def region_graph(region: str, *, psych_prior: bool = True, prior="dfme") -> Tuple[Tensor, Optional[Tensor]]:
    """Dense adjacency and prior of one AU graph.

    Args:
        region (str): "upper", "lower" or "global".
        psych_prior (bool, optional): use the psychological adjacency; ``False`` uses the
            complete graph of the region (for "global": every cross-region pair plus self
            loops — the whole-face stage keeps its "cross-region only" structure).
            (default: ``True``)
        prior (optional): data prior passed to :func:`psyau_graph.graphs.au_graph`
            ("dfme", "casme2", "samm", "uniform", an array or path), or ``None``
            for no data prior. (default: ``"dfme"``)

    Returns:
        ``(adj, prior)``: ``adj`` (N, N) float 0/1 with ``adj[i, j] = 1`` for the edge
        j → i; ``prior`` (N, N) float (rows sum to 1 over the edges of each node) or None.
    """
    from psyau_graph.graphs import au_graph, edge_values_to_dense

    adjacency = None
    if not psych_prior:
        n = NUM_AUS if region == "global" else len(UPPER)
        if region == "global":
            up = np.zeros(n, dtype=bool)
            up[list(UPPER)] = True
            adjacency = (up[:, None] != up[None, :]).astype(np.float64)
            np.fill_diagonal(adjacency, 1.0)
        else:
            adjacency = np.ones((n, n))
    g = au_graph(region, prior, adjacency=adjacency)
    n = int(g.num_nodes)
    adj = edge_values_to_dense(g.edge_index, torch.ones(g.edge_index.size(1)), n)
    d = getattr(g, "edge_prior", None)
    d = edge_values_to_dense(g.edge_index, d, n) if d is not None else None
    return adj, d


class DPKGATBlock(nn.Module):
    r"""Two :class:`DPKGATConv` layers on one fixed graph, with feature dropout before
    each layer, ELU between, ELU on the output and a residual (paper eq. 5,
    h = ELU(Σ α f) + f; the authors drop features with p = 0.5 before each layer):

    :math:`h = \mathrm{ELU}(\mathrm{conv}_2(\mathrm{drop}(\mathrm{ELU}(\mathrm{conv}_1(\mathrm{drop}(x)))))) + x`.

    ``conv_1``: ``heads`` heads of ``hidden`` channels, concatenated; ``conv_2``: one head
    back to ``in_channels`` (so the residual needs no projection).

    Args:
        adj (Tensor): ``(N, N)`` adjacency, non-zero ``adj[i, j]`` = edge j → i.
        prior (Tensor, optional): ``(N, N)`` data prior or None (plain GAT attention).
        in_channels (int, optional): node features. (default: ``25``)
        hidden (int, optional): channels per head of layer 1. (default: ``64``)
        heads (int, optional): heads of layer 1. (default: ``3``)
        dropout (float, optional): attention dropout. (default: ``0.5``)
        feat_dropout (float, optional): dropout on the node features entering each
            layer (the residual uses the undropped input). (default: ``0.5``)
        negative_slope (float, optional): LeakyReLU slope. (default: ``0.2``)
        beta (float, optional): default prior weight. (default: ``0.3``)
        prior_mode (str, optional): see :class:`DPKGATConv`. (default: ``"paper"``)
        impl (str, optional): "dense" or "sparse". (default: ``"dense"``)

    Shapes:
        - **input:** ``(B, N, in_channels)``
        - **output:** ``(B, N, in_channels)``; with ``return_attention=True`` also a pair
          of attention tensors ``(B, heads, N, N)`` and ``(B, 1, N, N)``, ``[b, h, i, j]``
          the weight of the message j → i (0 off the graph).
    """

    def __init__(self, adj: Tensor, prior: Optional[Tensor] = None, *, in_channels: int = 25, hidden: int = 64,
                 heads: int = 3, dropout: float = 0.5, feat_dropout: float = 0.5, negative_slope: float = 0.2,
                 beta: float = 0.3, prior_mode: str = "paper", impl: str = "dense"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if not 0.0 <= float(feat_dropout) < 1.0:
            raise ValueError(f"feat_dropout must be in [0, 1), got {feat_dropout!r}")
        self.feat_dropout = float(feat_dropout)
        adj = torch.as_tensor(adj, dtype=torch.float32)
        if adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adj: expected a square (N, N) matrix, got {tuple(adj.shape)}")
        self.num_nodes = adj.shape[0]
        self.impl = impl
        self.heads = heads
        self.register_buffer("adj", (adj != 0).float())
        if prior is not None:
            prior = torch.as_tensor(prior, dtype=torch.float32)
            if prior.shape != adj.shape:
                raise ValueError(f"prior: expected shape {tuple(adj.shape)}, got {tuple(prior.shape)}")
            self.register_buffer("prior", prior * (adj != 0))
        else:
            self.prior = None
        tgt, src = torch.nonzero(adj != 0, as_tuple=True)
        self.register_buffer("edge_index", torch.stack([src, tgt]), persistent=False)
        self._cache: Dict[Tuple[int, str], Tuple[Tensor, Optional[Tensor]]] = {}
        # the AU graphs carry their own self-loops (with their prior values): add none
        kw = dict(negative_slope=negative_slope, dropout=dropout, beta=beta, prior_mode=prior_mode,
                  add_self_loops=False)
        self.conv1 = DPKGATConv(in_channels, hidden, heads=heads, concat=True, **kw)
        self.conv2 = DPKGATConv(heads * hidden, in_channels, heads=1, concat=False, **kw)

    def _union(self, batch_size: int, device: torch.device) -> Tuple[Tensor, Optional[Tensor]]:
        """Edge indices and priors of ``batch_size`` disjoint copies, cached per (B, device)."""
        key = (batch_size, str(device))
        hit = self._cache.get(key)
        if hit is None:
            ei = self.edge_index.to(device)
            offsets = torch.arange(batch_size, device=device).repeat_interleave(ei.size(1)) * self.num_nodes
            union = ei.repeat(1, batch_size) + offsets
            p = None
            if self.prior is not None:
                p = self.prior.to(device)[ei[1], ei[0]].repeat(batch_size)
            hit = (union, p)
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _dense_attention(self, alpha: Tensor, edge_index: Tensor, b: int) -> Tensor:
        n = self.num_nodes
        out = alpha.new_zeros(b * n, n, alpha.size(1))
        out[edge_index[1], edge_index[0] % n] = alpha
        return out.view(b, n, n, -1).permute(0, 3, 1, 2)

    def forward(self, x: Tensor, beta=None, return_attention: bool = False):
        if x.dim() != 3 or x.shape[1] != self.num_nodes:
            raise ValueError(f"x: expected (B, {self.num_nodes}, F), got {tuple(x.shape)}")
        b, n, f = x.shape
        p_drop, train = self.feat_dropout, self.training
        x_in = fast_dropout(x, p_drop, train)
        if self.impl == "dense":
            h, a1 = self.conv1.forward_dense(x_in, self.adj, self.prior, beta=beta, return_attention_weights=True)
            h = fast_dropout(F.elu(h), p_drop, train)
            h, a2 = self.conv2.forward_dense(h, self.adj, self.prior, beta=beta, return_attention_weights=True)
        else:
            ei, p = self._union(b, x.device)
            flat = x_in.reshape(b * n, f)
            h, (e1, a1) = self.conv1(flat, ei, p, beta=beta, return_attention_weights=True)
            h = fast_dropout(F.elu(h), p_drop, train)
            h, (e2, a2) = self.conv2(h, ei, p, beta=beta, return_attention_weights=True)
            h = h.view(b, n, f)
            if return_attention:
                a1, a2 = self._dense_attention(a1, e1, b), self._dense_attention(a2, e2, b)
        out = F.elu(h) + x  # paper eq. 5: ELU on the aggregation, then the residual
        return (out, (a1, a2)) if return_attention else out


class DPKGAT(nn.Module):
    r"""Local (upper ‖ lower) then global DPK-GAT over the 12 AU nodes.

    Args:
        local (bool, optional): run the upper/lower stage. (default: ``True``)
        global_ (bool, optional): run the whole-face stage. (default: ``True``)
        psych_prior (bool, optional): psychological adjacencies (else complete
            graphs, see :func:`region_graph`). (default: ``True``)
        prior (optional): data prior source or None. (default: ``"dfme"``)
        **block_kwargs: passed to every :class:`DPKGATBlock` (hidden, heads, dropout,
            feat_dropout, negative_slope, beta, prior_mode, impl, in_channels).

    Shapes:
        - **input:** ``F_AU (B, 12, 25)``
        - **output:** ``h (B, 12, 25)`` (``h_global``, or ``h_local`` without the global
          stage); with ``return_attention=True`` also a dict ``"upper.0"``, ``"upper.1"``,
          ``"lower.0"``, ``"lower.1"``, ``"global.0"``, ``"global.1"`` → ``(B, H, N, N)``
          (the stages that exist).
    """

    def __init__(self, *, local: bool = True, global_: bool = True, psych_prior: bool = True, prior="dfme",
                 **block_kwargs):
        super().__init__()
        if not (local or global_):
            raise ValueError("DPKGAT needs at least one of local/global_")
        self.local, self.global_ = local, global_
        self.upper = self.lower = self.whole = None
        self.split = len(UPPER)
        if local:
            self.upper = DPKGATBlock(*region_graph("upper", psych_prior=psych_prior, prior=prior), **block_kwargs)
            self.lower = DPKGATBlock(*region_graph("lower", psych_prior=psych_prior, prior=prior), **block_kwargs)
        if global_:
            self.whole = DPKGATBlock(*region_graph("global", psych_prior=psych_prior, prior=prior), **block_kwargs)

    def forward(self, f_au: Tensor, beta=None, return_attention: bool = False):
        if f_au.dim() != 3 or f_au.shape[1] != NUM_AUS:
            raise ValueError(f"f_au: expected (B, {NUM_AUS}, F), got {tuple(f_au.shape)}")
        att: Dict[str, Tensor] = {}
        h = f_au
        if self.local:
            up = self.upper(h[:, : self.split], beta=beta, return_attention=return_attention)
            lo = self.lower(h[:, self.split:], beta=beta, return_attention=return_attention)
            if return_attention:
                (up, (att["upper.0"], att["upper.1"])), (lo, (att["lower.0"], att["lower.1"])) = up, lo
            h = torch.cat([up, lo], dim=1)  # h_local
        if self.global_:
            h = self.whole(h, beta=beta, return_attention=return_attention)
            if return_attention:
                h, (att["global.0"], att["global.1"]) = h
        return (h, att) if return_attention else h
