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
from torch_geometric.typing import WITH_TORCH_SPARSE
from torch_geometric.typing import SparseTensor as _PygSparseTensor
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
# torch_sparse.SparseTensor when torch_sparse is installed, else None (that input form is then absent)
SparseTensor = _PygSparseTensor if WITH_TORCH_SPARSE else None


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
    (parameters ``lin`` or ``lin_src`` / ``lin_dst``, ``att_src``,
    ``att_dst``, ``lin_edge``, ``att_edge``, ``res``, ``bias`` carry the same
    names and shapes), for every input form ``GATConv`` takes: bipartite
    ``(x_src, x_dst)``, ``size``, ``edge_attr``, torch sparse and
    ``SparseTensor`` adjacencies. With edge features, :math:`e_{i,j}` gets
    ``GATConv``'s term :math:`\mathbf{a}_e^{\top}\mathbf{\Theta}_e\mathbf{e}_{j,i}`.
    ELU and the paper's residual :math:`+f_i` (eq. 5) are left to the model,
    as PyG layers do.

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
        in_channels (int or tuple): Size of each input sample, ``-1`` to
            infer it on the first call, or a ``(source, target)`` pair for
            bipartite graphs (separate ``lin_src`` / ``lin_dst``, as in
            ``GATConv``; either may be ``-1``).
        out_channels (int): Size of each output sample per head.
        heads (int, optional): Number of attention heads. (default: ``1``)
        concat (bool, optional): Concatenate the heads; if ``False`` they are
            averaged. (default: ``True``)
        negative_slope (float, optional): LeakyReLU negative slope.
            (default: ``0.2``)
        dropout (float, optional): Dropout probability on the mixed
            attention coefficients (training only). (default: ``0.0``)
        add_self_loops (bool, optional): Add a self-loop to every node (on a
            bipartite graph: to the first ``min(N_src, N_dst)`` nodes, as in
            ``GATConv``), as ``GATConv`` does by default. Graphs that carry their
            own loops with prior values (the AU graphs) keep those values; pass
            ``False`` to use the graph exactly as given. (default: ``True``)
        edge_dim (int, optional): Edge feature size; if set, ``edge_attr``
            enters the attention logits through ``lin_edge`` / ``att_edge``
            exactly as in ``GATConv``. (default: ``None``)
        fill_value (float or torch.Tensor or str, optional): Value of added
            self-loops, for the prior and for ``edge_attr`` alike: a float
            (or, for ``edge_attr`` only, a tensor), or ``"mean"`` /
            ``"sum"`` / ``"max"`` / ``"min"`` of the node's other incoming
            values (0 for a node without any). (default: ``"mean"``)
        bias (bool, optional): Learn an additive bias. (default: ``True``)
        residual (bool, optional): Add a learnable linear skip connection
            :math:`\mathbf{\Theta}_r\mathbf{x}_i` (of the target features).
            (default: ``False``)
        beta (float, optional): Prior weight :math:`\beta \in [0, 1]` used
            when ``forward`` gets no ``beta``. (default: ``0.3``)
        prior_mode (str, optional): ``"paper"`` (prior divided by its sum
            over :math:`\mathcal{N}(i)`) or ``"authors"`` (softmax of the
            prior, L1 renormalisation after mixing). (default: ``"paper"``)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing`.

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_s), (|\mathcal{V}_t|, F_t))` (the
          target part may be ``None``), edge indices :math:`(2, |\mathcal{E}|)`
          or a torch sparse / ``SparseTensor`` adjacency
          :math:`(|\mathcal{V}_t|, |\mathcal{V}_s|)`,
          edge prior :math:`(|\mathcal{E}|)` *(optional)*, edge features
          :math:`(|\mathcal{E}|, D)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}_t|, H \cdot F_{out})`
          (or :math:`(|\mathcal{V}_t|, F_{out})` if ``concat=False``); with
          ``return_attention_weights=True`` also
          :math:`((2, |\mathcal{E}'|), (|\mathcal{E}'|, H))`, the edges used
          (self-loops included) and their attention (a ``SparseTensor``
          holding the attention for a ``SparseTensor`` input, as ``GATConv``).
    """

    def __init__(
        self,
        in_channels: Union[int, Tuple[int, int]],
        out_channels: int,
        heads: int = 1,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        edge_dim: Optional[int] = None,
        fill_value: Union[float, Tensor, str] = "mean",
        bias: bool = True,
        residual: bool = False,
        beta: float = 0.3,
        prior_mode: str = "paper",
        **kwargs,
    ):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        bipartite = not isinstance(in_channels, int)
        if bipartite and not (isinstance(in_channels, (tuple, list)) and len(in_channels) == 2
                              and all(isinstance(c, int) for c in in_channels)):
            raise TypeError(f"in_channels must be an int or a (source, target) pair of ints, got {in_channels!r}")
        if prior_mode not in PRIOR_MODES:
            raise ValueError(f"prior_mode must be one of {PRIOR_MODES}, got {prior_mode!r}")
        if isinstance(fill_value, str) and fill_value not in _FILL_REDUCES:
            raise ValueError(f"fill_value must be a float, a tensor or one of {_FILL_REDUCES}, got {fill_value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")

        self.in_channels = tuple(in_channels) if bipartite else in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.concat = concat
        self.negative_slope = negative_slope
        self.dropout = dropout
        self.beta = _check_beta(beta, "beta")
        self.add_self_loops = add_self_loops
        self.edge_dim = edge_dim
        self.residual = residual
        self.prior_mode = prior_mode
        self.fill_value = fill_value

        # the same parameter names and shapes as GATConv, so state dicts load both ways
        self.lin = self.lin_src = self.lin_dst = None
        if bipartite:
            self.lin_src = Linear(in_channels[0], heads * out_channels, bias=False, weight_initializer="glorot")
            self.lin_dst = Linear(in_channels[1], heads * out_channels, bias=False, weight_initializer="glorot")
        else:
            self.lin = Linear(in_channels, heads * out_channels, bias=False, weight_initializer="glorot")
        self.att_src = Parameter(torch.empty(1, heads, out_channels))
        self.att_dst = Parameter(torch.empty(1, heads, out_channels))
        if edge_dim is not None:
            self.lin_edge = Linear(edge_dim, heads * out_channels, bias=False, weight_initializer="glorot")
            self.att_edge = Parameter(torch.empty(1, heads, out_channels))
        else:
            self.lin_edge = None
            self.register_parameter("att_edge", None)

        total_out_channels = out_channels * (heads if concat else 1)
        if residual:
            res_in = in_channels[1] if bipartite else in_channels
            self.res = Linear(res_in, total_out_channels, bias=False, weight_initializer="glorot")
        else:
            self.register_parameter("res", None)
        if bias:
            self.bias = Parameter(torch.empty(total_out_channels))
        else:
            self.register_parameter("bias", None)

        self.reset_parameters()

    def reset_parameters(self):
        super().reset_parameters()
        for lin in (self.lin, self.lin_src, self.lin_dst, self.lin_edge, self.res):
            if lin is not None:
                lin.reset_parameters()
        glorot(self.att_src)
        glorot(self.att_dst)
        glorot(self.att_edge)
        zeros(self.bias)

    # ------------------------------------------------------------------ sparse
    def forward(self, x, edge_index, *args, edge_prior: Optional[Union[Tensor, str]] = None,
                beta: Optional[BetaLike] = None, return_attention_weights: Optional[bool] = None,
                edge_attr: Optional[Tensor] = None, size: Optional[Tuple[int, int]] = None):
        r"""Runs the layer.

        Positional arguments after ``edge_index`` are
        ``(edge_prior, beta, return_attention_weights)`` on a layer without
        ``edge_dim`` and ``(edge_attr, size, return_attention_weights)``, the
        order of ``GATConv.forward``, on a layer with ``edge_dim``; every
        argument can also be given by name.

        Args:
            x (torch.Tensor or tuple): Node features :math:`(N, F_{in})`, or
                ``(x_src, x_dst)`` with :math:`(N_s, F_s)` and
                :math:`(N_t, F_t)` (``x_dst`` may be ``None``: then only the
                sources are transformed and ``size`` or the adjacency gives
                :math:`N_t`).
            edge_index (torch.Tensor or SparseTensor): Edges :math:`(2, E)`
                (row 0 source :math:`j`, row 1 target :math:`i`), or a torch
                sparse (COO/CSR) / ``torch_sparse.SparseTensor`` adjacency
                :math:`(N_t, N_s)` whose entry ``[i, j]`` is the edge
                :math:`j \to i` (PyG's ``adj_t``).
            edge_prior (torch.Tensor or str, optional): Non-negative prior
                :math:`(E,)` aligned with the edges (for a sparse adjacency:
                with its non-zeros in row-major order), or ``"values"`` to use
                the sparse adjacency's values. Normalised over each target's
                incoming edges. ``None`` gives plain GAT attention.
            beta (float or torch.Tensor, optional): Prior weight for this
                call (0-dim tensor allowed); ``None`` uses ``self.beta``.
            return_attention_weights (bool, optional): If ``True``, also
                return ``(edge_index, alpha)`` with ``alpha`` :math:`(E', H)`.
            edge_attr (torch.Tensor, optional): Edge features :math:`(E, D)`
                or :math:`(E,)`, used when the layer has ``edge_dim``.
            size (tuple, optional): ``(N_s, N_t)``, as in ``GATConv``.
        """
        edge_prior, beta, return_attention_weights, edge_attr, size = self._bind_args(
            args, edge_prior, beta, return_attention_weights, edge_attr, size)
        H, C = self.heads, self.out_channels

        if isinstance(x, Tensor):
            x_src_in: Tensor = x
            x_dst_in: Optional[Tensor] = x
        elif isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], Tensor):
            x_src_in, x_dst_in = x
        else:
            raise TypeError("x must be a (N, F) tensor or a pair (x_src, x_dst) of tensors (x_dst may be None)")
        if x_src_in.dim() != 2 or (x_dst_in is not None and x_dst_in.dim() != 2):
            raise ValueError("x must have shape (num_nodes, in_channels) (or be a pair of such), got "
                             f"{tuple(x_src_in.shape)}" + ("" if x_dst_in is None else f" / {tuple(x_dst_in.shape)}"))

        edge_index, sparse_values, sparse_kind, size = self._read_edges(edge_index, x_src_in, x_dst_in, size)
        if sparse_kind == "SparseTensor" and self.add_self_loops and self.edge_dim is not None:
            # as GATConv: the self-loops' edge features cannot be placed in a SparseTensor here
            raise NotImplementedError("edge features (edge_dim) together with add_self_loops=True are not "
                                      "supported for a SparseTensor adjacency (as in GATConv); pass "
                                      "edge_index (2, E) with edge_attr, or add_self_loops=False")
        if isinstance(edge_prior, str):
            if edge_prior != "values" or sparse_values is None:
                raise ValueError("edge_prior as a string must be 'values' and needs a sparse adjacency "
                                 f"with values as edge_index, got {edge_prior!r}")
            edge_prior = sparse_values

        prior: Optional[Tensor] = None
        if edge_prior is not None:
            prior = self._check_prior(edge_prior, edge_index).to(_acc_dtype(x_src_in.dtype))
        if edge_attr is not None and edge_attr.size(0) != edge_index.size(1):
            raise ValueError(f"edge_attr must have {edge_index.size(1)} rows (one per edge), "
                             f"got {tuple(edge_attr.shape)}")
        beta_t = self.beta if beta is None else _check_beta(beta, "beta")

        res: Optional[Tensor] = None
        if self.res is not None and x_dst_in is not None:
            res = self.res(x_dst_in)
        if self.lin is not None:
            x_src = self.lin(x_src_in).view(-1, H, C)
            if x_dst_in is x_src_in:
                x_dst: Optional[Tensor] = x_src
            else:
                x_dst = None if x_dst_in is None else self.lin(x_dst_in).view(-1, H, C)
        else:
            x_src = self.lin_src(x_src_in).view(-1, H, C)
            x_dst = None if x_dst_in is None else self.lin_dst(x_dst_in).view(-1, H, C)
        # attention logits, softmax and mixing in the accumulation dtype (fp32 under autocast)
        acc = _acc_dtype(x_src.dtype)
        alpha_src = (x_src.to(acc) * self.att_src).sum(dim=-1)
        alpha_dst = None if x_dst is None else (x_dst.to(acc) * self.att_dst).sum(dim=-1)

        if self.add_self_loops:
            num_loops = x_src.size(0) if x_dst is None else min(x_src.size(0), x_dst.size(0))
            if size is not None:
                num_loops = min(size)
            num_dst = size[1] if size is not None else (x_src.size(0) if x_dst is None else x_dst.size(0))
            edge_index, prior, edge_attr = self._self_loops(edge_index, prior, edge_attr, num_loops, num_dst)

        alpha = self.edge_updater(edge_index, alpha=(alpha_src, alpha_dst), edge_attr=edge_attr,
                                  prior=prior, beta=beta_t, size=size)
        out = self.propagate(edge_index, x=(x_src, x_dst), alpha=alpha, size=size)

        if self.concat:
            out = out.view(-1, H * C)
        else:
            out = out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None:
            out = out + self.bias

        if return_attention_weights:
            if sparse_kind == "SparseTensor":
                adj = SparseTensor(row=edge_index[1], col=edge_index[0], value=alpha,
                                   sparse_sizes=(size[1], size[0]))
                return out, adj
            return out, (edge_index, alpha)
        return out

    def _bind_args(self, args, edge_prior, beta, return_attention_weights, edge_attr, size):
        """Positional arguments after ``edge_index`` in this layer's order (see :meth:`forward`)."""
        if self.edge_dim is None:
            names = ("edge_prior", "beta", "return_attention_weights")
        else:
            names = ("edge_attr", "size", "return_attention_weights")
        if len(args) > len(names):
            raise TypeError(f"forward takes at most {2 + len(names)} positional arguments "
                            f"(x, edge_index, {', '.join(names)}), got {2 + len(args)}")
        given = dict(edge_prior=edge_prior, beta=beta, return_attention_weights=return_attention_weights,
                     edge_attr=edge_attr, size=size)
        for name, value in zip(names, args):
            if given[name] is not None:
                raise TypeError(f"forward got {name} both by position and by name")
            given[name] = value
        return (given["edge_prior"], given["beta"], given["return_attention_weights"],
                given["edge_attr"], given["size"])

    def _read_edges(self, edge_index, x_src: Tensor, x_dst: Optional[Tensor], size):
        """Any adjacency form -> ``(edge_index (2, E), sparse values or None, kind, size)``."""
        if size is not None:
            if len(size) != 2:
                raise ValueError(f"size must be a pair (num_src, num_dst), got {size!r}")
            size = (int(size[0]), int(size[1]))
        if SparseTensor is not None and isinstance(edge_index, SparseTensor):
            row, col, values = edge_index.coo()  # adj_t: row = target, col = source
            n_dst, n_src = edge_index.sparse_sizes()
            return torch.stack([col, row], dim=0), values, "SparseTensor", self._sparse_size(n_src, n_dst, x_src, x_dst)
        if not isinstance(edge_index, Tensor):
            raise TypeError(f"edge_index must be a (2, E) tensor, a torch sparse adjacency or a SparseTensor, got "
                            f"{type(edge_index).__name__}")
        if is_torch_sparse_tensor(edge_index):
            if edge_index.dim() != 2:
                raise ValueError(f"a sparse adjacency must be 2-D (num_dst, num_src), got {tuple(edge_index.shape)}")
            n_dst, n_src = edge_index.shape
            size = self._sparse_size(n_src, n_dst, x_src, x_dst)
            ei, values = _sparse_to_edges(edge_index)
            return ei, values, "torch", size
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        return edge_index, None, None, size

    @staticmethod
    def _sparse_size(n_src: int, n_dst: int, x_src: Tensor, x_dst: Optional[Tensor]) -> Tuple[int, int]:
        if n_src != x_src.size(0) or (x_dst is not None and n_dst != x_dst.size(0)):
            expect = (x_src.size(0) if x_dst is None else x_dst.size(0), x_src.size(0))
            raise ValueError(f"a sparse adjacency must have shape {expect} (num_dst target rows, "
                             f"num_src source columns), got ({n_dst}, {n_src})")
        return (n_src, n_dst)

    def edge_update(self, alpha_j: Tensor, alpha_i: Optional[Tensor], edge_attr: Optional[Tensor],
                    prior: Optional[Tensor], beta: BetaLike, index: Tensor, ptr: Optional[Tensor],
                    dim_size: Optional[int]) -> Tensor:
        alpha = alpha_j if alpha_i is None else alpha_j + alpha_i
        if index.numel() == 0:
            return alpha
        if edge_attr is not None and self.lin_edge is not None:
            if edge_attr.dim() == 1:
                edge_attr = edge_attr.view(-1, 1)
            edge_attr = self.lin_edge(edge_attr).view(-1, self.heads, self.out_channels)
            alpha = alpha + (edge_attr * self.att_edge).sum(dim=-1)
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

    def _self_loops(self, edge_index: Tensor, prior: Optional[Tensor], edge_attr: Optional[Tensor],
                    num_loops: int, num_dst: int):
        """Remove self-loops and append one for each of nodes ``0 .. num_loops - 1`` (order as PyG's
        ``add_self_loops``); their prior keeps an existing loop's value, else gets ``fill_value``."""
        if prior is not None:
            if isinstance(self.fill_value, Tensor):
                raise ValueError("fill_value as a tensor applies to edge_attr only; use a float or "
                                 f"one of {_FILL_REDUCES} for the self-loops of a prior")
            is_loop = edge_index[0] == edge_index[1]
            target = edge_index[1]
            dim = max(num_dst, num_loops)
            loop_value = scatter(prior * is_loop, target, 0, dim, reduce="sum")[:num_loops]
            had_loop = scatter(is_loop.to(prior.dtype), target, 0, dim, reduce="sum")[:num_loops] > 0
            if isinstance(self.fill_value, str):
                keep = ~is_loop
                fill = scatter(prior[keep], target[keep], 0, dim, reduce=self.fill_value)[:num_loops]
            else:
                fill = prior.new_full((num_loops,), float(self.fill_value))
            prior = torch.cat([prior[~is_loop], torch.where(had_loop, loop_value, fill)])
        edge_index, edge_attr = remove_self_loops(edge_index, edge_attr)
        if edge_attr is not None:
            edge_index, edge_attr = add_self_loops(edge_index, edge_attr, fill_value=self.fill_value,
                                                   num_nodes=num_loops)
        else:
            edge_index, _ = add_self_loops(edge_index, num_nodes=num_loops)
        return edge_index, prior, edge_attr

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
        # attention logits, masked softmax and the leaky-ReLU in one autograd node with a
        # hand-written backward (see _DenseAttention), in place where autograd would copy
        add_mask = _additive_mask(mask, acc)
        alpha = _DenseAttention.apply(a[:, :H].unsqueeze(-2), a[:, H:].unsqueeze(-1), add_mask,
                                      self.negative_slope)  # (B, H, N_i, N_j); rows without edges: 0

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
                weight = ((mass > 0) * beta_t).to(acc)  # (N, 1): 0 where the prior abstains
                # (1 - w) * attn + w * d as one multiply-add over (B, H, N, N); w * d is (N, N)
                alpha = torch.addcmul(weight * d, alpha, 1.0 - weight)
        alpha = F.dropout(alpha, p=self.dropout, training=self.training)

        # aggregation as one batched product per (graph, head); the bias enters as its additive input
        f = f.reshape(B, N, H, C).transpose(1, 2).reshape(B * H, N, C)  # (B·H, N, C)
        alpha_bh = alpha.to(f.dtype).reshape(B * H, N, N)
        bias_in_product = self.bias is not None and (self.concat or H == 1)  # else added after the head mean
        if bias_in_product:
            bias = self.bias.to(f.dtype).view(1, H, 1, C).expand(B, H, 1, C).reshape(B * H, 1, C)
            out = torch.baddbmm(bias, alpha_bh, f)
        else:
            out = torch.bmm(alpha_bh, f)
        out = out.view(B, H, N, C)
        if self.concat or H == 1:
            out = out.transpose(1, 2).reshape(B, N, H * C) if H > 1 else out.view(B, N, C)
        else:
            out = out.mean(dim=1)
        if res is not None:
            out = out + res
        if self.bias is not None and not bias_in_product:
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


def _additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``(N, N)`` bool mask -> ``(N, N)`` additive mask: 0 on the mask, -inf off it (two kernels on
    ``N²`` entries, so it is rebuilt per call rather than cached)."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


class _DenseAttention(torch.autograd.Function):
    r"""Masked softmax of LeakyReLU logits over the last dimension, in one autograd node.

    Forward: :math:`e_{ij} = \mathrm{LeakyReLU}(s_j + t_i) + M_{ij}` (:math:`M` 0 on the graph,
    :math:`-\infty` off it), :math:`p_{ij} = \exp(e_{ij} - \max_k e_{ik}) / \sum_k \exp(\cdot)`
    (0 off the graph and on rows without edges). Saves :math:`p` and the leaky-ReLU derivative.

    Backward, with :math:`g = \partial L / \partial p`:
    :math:`\partial L / \partial e_{ij} = p_{ij} (g_{ij} - \sum_k g_{ik} p_{ik})`, times 1 where the
    logit was positive and the negative slope elsewhere; then
    :math:`\partial L / \partial s_j = \sum_i \cdot`, :math:`\partial L / \partial t_i = \sum_j \cdot`.

    Shapes: ``src`` :math:`(B, H, 1, N)`, ``dst`` :math:`(B, H, N, 1)`, ``add_mask`` :math:`(N, N)`,
    output :math:`(B, H, N, N)` in the dtype of ``src`` (the accumulation dtype).
    """

    @staticmethod
    def forward(ctx, src: Tensor, dst: Tensor, add_mask: Tensor, slope: float) -> Tensor:
        e = src + dst  # (B, H, N, N)
        # leaky-ReLU derivative as a float factor (1 or slope): torch.where on a bool mask is
        # many times slower on CPU than a multiply
        scale = (e > 0).to(e.dtype).mul_(1.0 - slope).add_(slope)
        e = F.leaky_relu_(e, slope)
        e.add_(add_mask)
        m = e.amax(-1, keepdim=True).clamp_min_(torch.finfo(e.dtype).min)  # finite on rows without edges
        p = e.sub_(m).exp_()
        p.div_(p.sum(-1, keepdim=True).clamp_min_(torch.finfo(e.dtype).tiny))
        ctx.save_for_backward(p, scale)
        return p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        p, scale = ctx.saved_tensors
        grad = grad.to(p.dtype)
        ge = (grad - (grad * p).sum(-1, keepdim=True)).mul_(p).mul_(scale)
        g_src = ge.sum(-2, keepdim=True) if ctx.needs_input_grad[0] else None
        g_dst = ge.sum(-1, keepdim=True) if ctx.needs_input_grad[1] else None
        return g_src, g_dst, None, None


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


def _sparse_to_edges(adj: Tensor) -> Tuple[Tensor, Tensor]:
    """Torch sparse ``adj[i, j]`` (edge j -> i) to ``edge_index`` (2, E) and values (E,), row-major order."""
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
