"""The dynamic-prior-knowledge graph attention layer (DPK-GAT) as a PyG layer."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from torch_geometric import is_compiling
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import glorot, zeros
from torch_geometric.utils import (
    add_self_loops,
    is_torch_sparse_tensor,
    remove_self_loops,
    scatter,
    softmax,
)
from torch_geometric.utils.sparse import to_edge_index

PRIOR_MODES = ("paper", "authors")
_FILL_REDUCES = ("mean", "sum", "max", "min")

BetaLike = Union[float, Tensor]


class DPKGATConv(MessagePassing):
    r"""Graph attention mixed with a data-driven prior, from the FED-PsyAU
    paper (`"FED-PsyAU: Privacy-Preserving Micro-Expression Recognition via
    Psychological AU Coordination and Dynamic Facial Motion Modeling"
    <https://github.com/MELABIPCAS/FED-PsyAU>`_, Li, Qian, Zhao and Wang,
    ICCV 2025; the link is the authors' code repository given in the paper).

    For a target node :math:`i` with in-neighbours :math:`\mathcal{N}(i)`
    (edges :math:`j \to i`) and per head:

    .. math::
        \mathbf{f}_i = \mathbf{\Theta}\mathbf{x}_i, \qquad
        e_{i,j} = \mathrm{LeakyReLU}\left(\mathbf{a}_s^{\top}\mathbf{f}_j
        + \mathbf{a}_t^{\top}\mathbf{f}_i\right),

        \alpha_{i,j} = (1 - \beta)\,
        \frac{\exp(e_{i,j})}{\sum_{k \in \mathcal{N}(i)} \exp(e_{i,k})}
        + \beta\, \tilde{D}_{i,j}, \qquad
        \tilde{D}_{i,j} = \frac{D_{i,j}}{\sum_{k \in \mathcal{N}(i)} D_{i,k}},

        \mathbf{x}^{\prime}_i = \sum_{j \in \mathcal{N}(i)}
        \alpha_{i,j}\,\mathbf{f}_j .

    :math:`D_{i,j}` is the prior on edge :math:`j \to i` (``edge_prior``).
    Heads are concatenated or averaged, then the optional residual
    :math:`\mathbf{\Theta}_r\mathbf{x}_i` and the bias are added, exactly as
    in :class:`torch_geometric.nn.conv.GATConv`. With :math:`\beta = 0` (or no
    prior) the layer computes what ``GATConv`` computes for the same weights
    (parameters ``lin``, ``att_src``, ``att_dst``, ``res``, ``bias`` carry
    the same names and shapes). ELU and the paper's residual :math:`+f_i`
    (eq. 5) are left to the model, as PyG layers do.

    Direction convention: ``A[i, j] = 1`` means node :math:`i` attends to
    :math:`j`; the message flows :math:`j \to i` and ``edge_index[:, e] =
    (j, i)`` (row 0 source, row 1 target). A torch sparse adjacency is read
    the PyG way (as ``adj_t``): entry ``[i, j]`` is the edge :math:`j \to i`,
    i.e. the matrix ``A`` itself.

    Prior details:

    * A target whose incoming prior mass is 0 (all its ``D_ij`` are 0) gets no
      prior: its attention is the plain softmax, whatever :math:`\beta`
      (the prior abstains). Each target's weights therefore always sum to 1.
    * ``prior_mode="authors"`` follows the authors' code: the prior is passed
      through a softmax over :math:`\mathcal{N}(i)` instead of being divided
      by its sum, and :math:`\alpha` is L1-renormalised over :math:`\mathcal{N}(i)`
      after mixing (the authors' softmax over non-neighbours is not
      reproduced: attention stays restricted to :math:`\mathcal{N}(i)`).
    * With ``add_self_loops=True`` existing self-loops are removed and one
      per node is appended (as in ``GATConv``). A node that had a self-loop
      keeps its prior value; a new one gets ``fill_value`` (a float, or
      ``"mean"``/``"sum"``/``"max"``/``"min"`` of the node's other incoming
      prior values; 0 for a node without any).

    Args:
        in_channels (int): Size of each input sample, or ``-1`` to infer it
            on the first call.
        out_channels (int): Size of each output sample per head.
        heads (int, optional): Number of attention heads. (default: ``1``)
        concat (bool, optional): Concatenate the heads; if ``False`` they are
            averaged. (default: ``True``)
        negative_slope (float, optional): LeakyReLU negative slope.
            (default: ``0.2``)
        dropout (float, optional): Dropout probability on the mixed
            attention coefficients (training only). (default: ``0.0``)
        beta (float, optional): Prior weight :math:`\beta \in [0, 1]` used
            when ``forward`` gets no ``beta``. (default: ``0.3``)
        add_self_loops (bool, optional): Add a self-loop to every node.
            (default: ``False``)
        bias (bool, optional): Learn an additive bias. (default: ``True``)
        residual (bool, optional): Add a learnable linear skip connection
            :math:`\mathbf{\Theta}_r\mathbf{x}_i`. (default: ``False``)
        prior_mode (str, optional): ``"paper"`` (prior divided by its sum
            over :math:`\mathcal{N}(i)`) or ``"authors"`` (softmax of the
            prior, L1 renormalisation after mixing). (default: ``"paper"``)
        fill_value (float or str, optional): Prior value of added
            self-loops, see above. (default: ``"mean"``)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`,
          edge indices :math:`(2, |\mathcal{E}|)` or a torch sparse
          adjacency :math:`(|\mathcal{V}|, |\mathcal{V}|)`,
          edge prior :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, H \cdot F_{out})`
          (or :math:`(|\mathcal{V}|, F_{out})` if ``concat=False``); with
          ``return_attention_weights=True`` also
          :math:`((2, |\mathcal{E}'|), (|\mathcal{E}'|, H))`, the edges used
          (self-loops included) and their attention.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        beta: float = 0.3,
        add_self_loops: bool = False,
        bias: bool = True,
        residual: bool = False,
        prior_mode: str = "paper",
        fill_value: Union[float, str] = "mean",
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        if not isinstance(in_channels, int):
            raise TypeError(f"in_channels must be an int (bipartite inputs are not supported), got {in_channels!r}")
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"prior_mode must be one of {PRIOR_MODES}, got {prior_mode!r}")
        if isinstance(fill_value, str) and fill_value not in _FILL_REDUCES:
            raise ValueError(f"fill_value must be a float or one of {_FILL_REDUCES}, got {fill_value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.beta = _check_beta(beta, "beta")
        self.add_self_loops = add_self_loops
        self.residual = residual
        self.prior_mode = prior_mode
        self.fill_value = fill_value

        self.lin = Linear(in_channels, heads * out_channels, bias=False, weight_initializer="glorot")
        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))

        total_out_channels = out_channels * (heads if concat else 1)
        if residual:
            self.res = Linear(in_channels, total_out_channels, bias=False, weight_initializer="glorot")
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter("bias", None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        self.lin.reset_parameters()
        if self.res is not None:
            self.res.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        zeros(self.bias)

    # ------------------------------------------------------------------ sparse
    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_prior: Optional[Union[Tensor, str]] = None,
        beta: Optional[BetaLike] = None,
        return_attention_weights: Optional[bool] = None,
    ):
        r"""Runs the layer.

        Args:
            x (torch.Tensor): Node features :math:`(N, F_{in})`.
            edge_index (torch.Tensor): Edges :math:`(2, E)` (row 0 source
                :math:`j`, row 1 target :math:`i`), or a torch sparse
                (COO/CSR) adjacency :math:`(N, N)` whose entry ``[i, j]`` is
                the edge :math:`j \to i`.
            edge_prior (torch.Tensor or str, optional): Non-negative prior
                :math:`(E,)` aligned with the edges (for a sparse adjacency:
                with its coalesced non-zeros in row-major order), or the
                string ``"values"`` to use the sparse adjacency's values as
                the prior. ``None`` gives plain GAT attention.
                (default: ``None``)
            beta (float or torch.Tensor, optional): Prior weight for this
                call (0-dim tensor allowed, e.g. from a schedule or a
                learnable parameter); ``None`` uses ``self.beta``.
                (default: ``None``)
            return_attention_weights (bool, optional): If ``True``, also
                return ``(edge_index, alpha)`` with ``alpha`` of shape
                :math:`(E', H)`. (default: ``None``)
        """
        if x.dim() != 2:
            raise ValueError(f"x must have shape (num_nodes, in_channels), got {tuple(x.shape)}")
        H, C = self.heads, self.out_channels
        num_nodes = x.size(0)

        if not isinstance(edge_index, Tensor):
            raise TypeError(f"edge_index must be a (2, E) tensor or a torch sparse adjacency, got "
                            f"{type(edge_index).__name__} (convert a torch_sparse.SparseTensor with "
                            f".to_torch_sparse_coo_tensor())")
        if is_torch_sparse_tensor(edge_index):
            edge_index, sparse_values = _sparse_to_edges(edge_index, num_nodes)
            if isinstance(edge_prior, str):
                if edge_prior != "values":
                    raise ValueError(f"edge_prior as a string must be 'values', got {edge_prior!r}")
                edge_prior = sparse_values
        else:
            if edge_index.dim() != 2 or edge_index.size(0) != 2:
                raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
            if isinstance(edge_prior, str):
                raise ValueError("edge_prior='values' needs a torch sparse adjacency as edge_index")

        prior: Optional[Tensor] = None
        if edge_prior is not None:
            prior = self._check_prior(edge_prior, edge_index).to(_acc_dtype(x.dtype))
        beta_t = self.beta if beta is None else _check_beta(beta, "beta")

        res: Optional[Tensor] = None
        if self.res is not None:
            res = self.res(x)
        x_proj = self.lin(x).view(-1, H, C)
        # attention logits, softmax and mixing in the accumulation dtype (fp32 under autocast)
        x_att = x_proj.to(_acc_dtype(x_proj.dtype))
        alpha_src = (x_att * self.att_src).sum(dim=-1)
        alpha_dst = (x_att * self.att_dst).sum(dim=-1)

        if self.add_self_loops:
            edge_index, prior = self._self_loops(edge_index, prior, num_nodes)

        alpha = self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst), prior=prior, beta=beta_t)
        out = self.propagate(edge_index, x=(x_proj, x_proj), alpha=alpha)

        if self.concat:
            out = out.view(-1, H * C)
        else:
            out = out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias

        if return_attention_weights:
            return out, (edge_index, alpha)
        return out

    def edge_update(self, alpha_j: Tensor, alpha_i: Tensor, prior: Optional[Tensor], beta: BetaLike,
                    index: Tensor, ptr: Optional[Tensor], dim_size: Optional[int]) -> Tensor:
        alpha = alpha_j + alpha_i
        if index.numel() == 0:
            return alpha
        alpha = F.leaky_relu(alpha, self.negative_slope)
        alpha = softmax(alpha, index, ptr, dim_size)
        if prior is not None and not (isinstance(beta, float) and beta == 0.0):
            alpha = self._mix(alpha, prior, beta, index, dim_size)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)
        return alpha

    def message(self, x_j: Tensor, alpha: Tensor) -> Tensor:
        return alpha.unsqueeze(-1) * x_j

    def _mix(self, attn: Tensor, prior: Tensor, beta: BetaLike, index: Tensor, dim_size: Optional[int]) -> Tensor:
        """(E, H) softmax attention, (E,) raw prior -> (E, H) mixed attention."""
        if isinstance(beta, Tensor):
            beta = beta.to(attn.dtype)
        if self.prior_mode == "authors":
            d = softmax(prior, index, None, dim_size).unsqueeze(-1)
            mixed = torch.lerp(attn, d.expand_as(attn), beta)
            total = scatter(mixed, index, 0, dim_size, reduce="sum")
            return mixed / total.index_select(0, index).clamp_min(1e-16)
        mass = scatter(prior, index, 0, dim_size, reduce="sum").index_select(0, index)
        d = (prior / mass.clamp_min(torch.finfo(prior.dtype).tiny)).unsqueeze(-1)
        # (1 - w) * attn + w * d in one kernel (exact at w = 0 and w = 1); w = 0 where the
        # target's prior mass is 0, so the prior abstains there
        weight = (mass > 0).unsqueeze(-1) * beta
        return torch.lerp(attn, d.expand_as(attn), weight.to(attn.dtype).expand_as(attn))

    def _check_prior(self, edge_prior: Tensor, edge_index: Tensor) -> Tensor:
        if not isinstance(edge_prior, Tensor):
            raise TypeError(f"edge_prior must be a tensor of shape (E,), got {type(edge_prior).__name__}")
        num_edges = edge_index.size(1)
        if edge_prior.dim() != 1 or edge_prior.size(0) != num_edges:
            raise ValueError(f"edge_prior must have shape ({num_edges},) (one value per edge), "
                             f"got {tuple(edge_prior.shape)}")
        if not edge_prior.is_floating_point():
            edge_prior = edge_prior.float()
        if not is_compiling() and num_edges > 0:
            _check_finite_non_negative(edge_prior, "edge_prior", "edge")
        return edge_prior

    def _self_loops(self, edge_index: Tensor, prior: Optional[Tensor], num_nodes: int):
        if prior is None:
            edge_index, _ = remove_self_loops(edge_index)
            edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
            return edge_index, None
        is_loop = edge_index[0] == edge_index[1]
        target = edge_index[1]
        loop_value = scatter(prior * is_loop, target, 0, num_nodes, reduce="sum")
        had_loop = scatter(is_loop.to(prior.dtype), target, 0, num_nodes, reduce="sum") > 0
        if isinstance(self.fill_value, str):
            keep = ~is_loop
            fill = scatter(prior[keep], target[keep], 0, num_nodes, reduce=self.fill_value)
        else:
            fill = prior.new_full((num_nodes,), float(self.fill_value))
        edge_index, _ = remove_self_loops(edge_index)
        edge_index, _ = add_self_loops(edge_index, num_nodes=num_nodes)
        prior = torch.cat([prior[~is_loop], torch.where(had_loop, loop_value, fill)])
        return edge_index, prior

    # ------------------------------------------------------------------- dense
    def forward_dense(
        self,
        x: Tensor,
        adj: Tensor,
        prior: Optional[Tensor] = None,
        beta: Optional[BetaLike] = None,
        return_attention_weights: Optional[bool] = None,
    ):
        r"""The same layer on many copies of one small graph, with dense
        batched matrix products instead of scatter operations.

        Gives the result of :meth:`forward` on a :class:`~torch_geometric.data.Batch`
        of the ``B`` graphs (up to float rounding).

        Args:
            x (torch.Tensor): Node features :math:`(B, N, F_{in})` or
                :math:`(N, F_{in})`.
            adj (torch.Tensor): Shared adjacency :math:`(N, N)`; non-zero
                ``adj[i, j]`` is the edge :math:`j \to i` (``A[i, j]``).
            prior (torch.Tensor, optional): Shared non-negative prior
                :math:`(N, N)`, ``prior[i, j]`` on edge :math:`j \to i`;
                entries outside ``adj`` are ignored. (default: ``None``)
            beta (float or torch.Tensor, optional): As in :meth:`forward`.
            return_attention_weights (bool, optional): Also return the
                attention :math:`(B, H, N, N)`, ``[b, h, i, j]`` for
                :math:`j \to i` (0 off the graph).

        Shapes:
            - **output:** :math:`(B, N, H \cdot F_{out})` (or
              :math:`(B, N, F_{out})` if ``concat=False``); no batch
              dimension if ``x`` had none.
        """
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(0)
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, N, in_channels) or (N, in_channels), got {tuple(x.shape)}")
        B, N, _ = x.shape
        if adj.shape != (N, N):
            raise ValueError(f"adj must have shape ({N}, {N}), got {tuple(adj.shape)}")
        H, C = self.heads, self.out_channels
        mask = adj != 0
        beta_t = self.beta if beta is None else _check_beta(beta, "beta")

        d = None
        if prior is not None:
            if prior.shape != (N, N):
                raise ValueError(f"prior must have shape ({N}, {N}), got {tuple(prior.shape)}")
            prior = prior.to(_acc_dtype(x.dtype))
            if not is_compiling():
                _check_finite_non_negative(prior.flatten(), "prior", "flat entry")
            prior = prior.masked_fill(~mask, 0.0)
        if self.add_self_loops:
            eye = torch.eye(N, dtype=torch.bool, device=x.device)
            if prior is not None:
                off = mask & ~eye
                if isinstance(self.fill_value, str):
                    fill = _dense_row_reduce(prior, off, self.fill_value)
                else:
                    fill = prior.new_full((N,), float(self.fill_value))
                diag = torch.where(mask.diagonal(), prior.diagonal(), fill)
                prior = prior.masked_fill(eye, 0.0) + torch.diag(diag)
            mask = mask | eye

        res = self.res(x) if self.res is not None else None
        acc = _acc_dtype(x.dtype)
        # attention logits a_s = att_src · (W x), a_t = att_dst · (W x): the attention vectors are
        # folded into the weight, (2H, F_in), so they cost one thin matrix product instead of a
        # product and a sum over (B, H, N, C); computed in the accumulation dtype (fp32 under
        # autocast). Without autocast the two products are one: x @ [W; W_att]^T.
        autocast = torch.is_autocast_enabled(x.device.type)
        with torch.autocast(x.device.type, enabled=False):
            w = self.lin.weight if not isinstance(self.lin.weight, nn.parameter.UninitializedParameter) else None
            if w is None:  # lazy in_channels=-1: the first call materialises the weight
                self.lin(x.to(acc))
                w = self.lin.weight
            wh = w.view(H, C, -1).to(acc)
            w_att = torch.cat([torch.einsum("hc,hcf->hf", self.att_src.view(H, C).to(acc), wh),
                               torch.einsum("hc,hcf->hf", self.att_dst.view(H, C).to(acc), wh)])
            if not autocast and x.dtype == acc and self.lin.bias is None:
                y = F.linear(x, torch.cat([w, w_att]))  # (B, N, H·C + 2H)
                f, a = y.split([H * C, 2 * H], dim=-1)  # split: its backward is a cat, not zero-fill + copy
                a = a.transpose(1, 2)
            else:
                f, a = None, F.linear(x.to(acc), w_att).transpose(1, 2)  # (B, 2H, N)
        if f is None:
            f = self.lin(x)  # bf16/fp16 under autocast
        f = f.reshape(B, N, H, C).transpose(1, 2)  # (B, H, N, C)
        e = a[:, :H].unsqueeze(-2) + a[:, H:].unsqueeze(-1)  # (B, H, N_i, N_j)
        alpha = _masked_softmax(F.leaky_relu(e, self.negative_slope), mask)  # rows without edges: 0

        if prior is not None and not (isinstance(beta_t, float) and beta_t == 0.0):
            prior = prior.to(acc)
            if isinstance(beta_t, Tensor):
                beta_t = beta_t.to(acc)
            if self.prior_mode == "authors":
                d = torch.softmax(prior.masked_fill(~mask, float("-inf")), dim=-1).masked_fill(~mask, 0.0)
                alpha = torch.lerp(alpha, d.expand_as(alpha), beta_t)
                alpha = alpha / alpha.sum(-1, keepdim=True).clamp_min(1e-16)
            else:
                mass = prior.sum(-1, keepdim=True)
                d = prior / mass.clamp_min(torch.finfo(prior.dtype).tiny)
                weight = ((mass > 0) * beta_t).to(acc).expand_as(alpha)
                alpha = torch.lerp(alpha, d.expand_as(alpha), weight)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)

        out = torch.matmul(alpha.to(f.dtype), f).transpose(1, 2)  # (B, N, H, C)
        out = out.reshape(B, N, H * C) if self.concat else out.mean(dim=2)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias
        if squeeze:
            out = out.squeeze(0)
            alpha = alpha.squeeze(0)
        if return_attention_weights:
            return out, alpha
        return out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype for attention logits, softmax and prior mixing: at least fp32 (fp64 stays fp64)."""
    return torch.promote_types(dtype, torch.float32)


def _masked_softmax(e: Tensor, mask: Tensor) -> Tensor:
    """Softmax of ``e (..., N, N)`` over the last dim restricted to ``mask (N, N)``; 0 off the
    mask and on rows without entries. Written out (max-shift, exp, normalise) because
    ``torch.softmax`` over a last dimension of 12 is several times slower on CPU; the max is
    detached (the result does not depend on it, so the gradient is unchanged)."""
    e = e.masked_fill(~mask, float("-inf"))
    m = e.detach().amax(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).min)  # finite on empty rows
    p = torch.exp(e - m)
    return p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def _check_beta(beta: BetaLike, name: str) -> BetaLike:
    if isinstance(beta, Tensor):
        if beta.dim() != 0:
            raise ValueError(f"{name} must be a float or a 0-dim tensor, got shape {tuple(beta.shape)}")
        if not is_compiling() and not bool((beta >= 0) & (beta <= 1)):
            raise ValueError(f"{name} must be in [0, 1], got {beta.item()}")
        return beta
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"{name} must be a float or a 0-dim tensor, got {type(beta).__name__}")
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {beta}")
    return beta


def _check_finite_non_negative(values: Tensor, name: str, what: str) -> None:
    """Raise naming the first bad entry; two cheap reductions on the common (valid) path."""
    if bool(torch.isfinite(values.sum())) and bool(values.min() >= 0):
        return
    ok = (values >= 0) & torch.isfinite(values)
    if not bool(ok.all()):
        bad = int((~ok).nonzero()[0, 0])
        raise ValueError(f"{name} must be finite and non-negative; {what} {bad} has {values[bad].item()}")


def _sparse_to_edges(adj: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    """Torch sparse ``adj[i, j]`` (edge j -> i) to ``edge_index`` (2, E) and values (E,)."""
    if adj.dim() != 2 or adj.size(0) != adj.size(1) or adj.size(0) != num_nodes:
        raise ValueError(f"a sparse adjacency must have shape ({num_nodes}, {num_nodes}), got {tuple(adj.shape)}")
    if adj.layout == torch.sparse_coo and not adj.is_coalesced():
        adj = adj.coalesce()
    (row, col), values = to_edge_index(adj)
    return torch.stack([col, row], dim=0), values


def _dense_row_reduce(values: Tensor, mask: Tensor, reduce: str) -> Tensor:
    """Per-row reduction of ``values`` over ``mask`` (N, N) -> (N,); rows without entries give 0."""
    count = mask.sum(-1)
    if reduce in ("sum", "mean"):
        total = (values * mask).sum(-1)
        return total / count.clamp_min(1) if reduce == "mean" else total
    fill = float("-inf") if reduce == "max" else float("inf")
    red = values.masked_fill(~mask, fill)
    red = red.amax(-1) if reduce == "max" else red.amin(-1)
    return torch.where(count > 0, red, torch.zeros_like(red))
