"""AU graphs as PyG ``Data`` objects, built from the priors.

Edge direction convention (used everywhere in the package)::

    A[i, j] = 1   <=>   node i attends to node j   <=>   message j -> i
                  <=>   edge_index column (j, i)  (row 0 = source j, row 1 = target i)

``edge_prior[e]`` for the edge j -> i is ``D[i, j]`` renormalised over the incoming
edges of i, so the prior values entering each target sum to 1 (the paper's D_ij
for j in N(i)). Like PyG's ``KarateClub``, the graphs are built in memory: no root,
no download.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from .au import AUS, AU_REGION, region_indices
from .priors import extrinsic_prior, mask_prior, psych_adjacency, validate_prior

__all__ = ["au_graph", "au_graph_batch", "adjacency_to_edge_index", "edge_values_to_dense",
           "to_networkx", "from_networkx"]


def adjacency_to_edge_index(adjacency) -> torch.Tensor:
    """``edge_index`` (2, E) of a dense adjacency, column (j, i) for each ``A[i, j] != 0``.

    Edges are ordered by target i, then source j.

    Shapes:
        adjacency: (N, N); output: (2, E) long.
    """
    a = np.asarray(adjacency)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"adjacency: expected a square matrix, got shape {a.shape}")
    tgt, src = np.nonzero(a)
    return torch.as_tensor(np.stack([src, tgt]), dtype=torch.long)


def edge_values_to_dense(edge_index: torch.Tensor, values: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Dense (N, N) matrix ``M[i, j] = value`` of edge j -> i (inverse of the convention above).

    Works for priors and for attention weights (``values`` (E,) or (E, H) → (N, N) or
    (H, N, N)). Missing edges are 0.

    Shapes:
        edge_index: (2, E); values: (E,) or (E, H); output: (N, N) or (H, N, N).
    """
    values = torch.as_tensor(values)
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"edge_index: expected shape (2, E), got {tuple(edge_index.shape)}")
    if values.size(0) != edge_index.size(1):
        raise ValueError(f"values: expected {edge_index.size(1)} rows (one per edge), got {values.size(0)}")
    src, tgt = edge_index
    if values.dim() == 1:
        out = values.new_zeros(num_nodes, num_nodes)
        out[tgt, src] = values
        return out
    out = values.new_zeros(values.size(1), num_nodes, num_nodes)
    out[:, tgt, src] = values.t()
    return out


def _resolve_prior(prior, region: str) -> np.ndarray | None:
    n = len(region_indices(region))
    if prior is None:
        return None
    if isinstance(prior, str) and prior == "uniform":
        return np.ones((n, n))
    if isinstance(prior, torch.Tensor):
        prior = prior.detach().cpu().numpy()
    return extrinsic_prior(prior, region)  # named source, CSV path, or array (12×12 restricted)


def au_graph(region: str = "global", prior="dfme", *, adjacency=None, on_outside: str = "mask") -> Data:
    """The AU graph of one face region as a PyG ``Data``.

    * "upper": AU nodes 0–5 (AU1, 2, 4, 5, 6, 7) with the upper psychological adjacency;
    * "lower": nodes 6–11 (AU9, 10, 12, 14, 15, 17) with the lower adjacency;
    * "global": all 12 nodes; only cross-region edges plus self loops (the
      intra-region off-diagonal entries are 0, SPEC §4).

    Args:
        region: "upper", "lower" or "global" (default: "global").
        prior: the data-driven prior ``D``: "dfme" (default), "casme2", "samm",
            "uniform" (1/|N(i)| on every incoming edge: the psychological prior
            alone), a CSV path, an array (N×N for the region, or 12×12, which is
            restricted), or ``None`` (no ``edge_prior`` attribute: plain GAT).
        adjacency: override the psychological adjacency (N×N 0/1); default
            :func:`~psyau_graph.priors.psych_adjacency` of ``region``.
        on_outside: prior mass on non-edges: "mask" (default: dropped and rows
            renormalised, as the paper defines D_ij over j ∈ N(i)), "warn" or "raise";
            see :func:`~psyau_graph.priors.mask_prior`.

    Returns:
        ``Data`` with ``edge_index`` (2, E) long (row 0 source j, row 1 target i),
        ``edge_prior`` (E,) float32 (sums to 1 over each target's incoming edges),
        ``prior_kept`` (N,) float32 (fraction of each row of D that lay on the
        node's incoming edges), ``au`` (N,) long AU numbers, ``au_idx`` (N,) long
        indices into :data:`~psyau_graph.au.AUS`, ``num_nodes`` and ``region`` (str).

    Shapes:
        edge_index: (2, E); edge_prior: (E,); au, au_idx, prior_kept: (N,).
    """
    idx = list(region_indices(region))
    n = len(idx)
    if adjacency is None:
        a = psych_adjacency(region)
    else:
        if isinstance(adjacency, torch.Tensor):
            adjacency = adjacency.detach().cpu().numpy()
        a = validate_prior(adjacency, aus=range(n), binary=True, name="adjacency")
    data = Data(edge_index=adjacency_to_edge_index(a), num_nodes=n)
    data.au = torch.tensor([AUS[k] for k in idx], dtype=torch.long)
    data.au_idx = torch.tensor(idx, dtype=torch.long)
    data.region = region
    d = _resolve_prior(prior, region)
    if d is not None:
        name = prior if isinstance(prior, str) else "prior"
        masked, kept = mask_prior(d, a, on_outside=on_outside, name=f"{name} ({region} graph)")
        src, tgt = data.edge_index.numpy()
        data.edge_prior = torch.as_tensor(masked[tgt, src], dtype=torch.float32)
        data.prior_kept = torch.as_tensor(kept, dtype=torch.float32)
    return data


def au_graph_batch(region: str = "global", batch_size: int = 1, prior="dfme", **kwargs) -> Batch:
    """``batch_size`` copies of :func:`au_graph` in one PyG ``Batch`` (node indices offset by N per copy).

    Shapes:
        edge_index: (2, B·E); edge_prior: (B·E,); batch: (B·N,).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    g = au_graph(region, prior, **kwargs)
    return Batch.from_data_list([g.clone() for _ in range(int(batch_size))])


def to_networkx(data: Data):
    """A ``networkx.DiGraph`` of an AU graph: nodes 0..N-1 with attributes ``au``,
    ``au_idx``, ``label`` ("AU12"), ``region`` ("upper"/"lower"); an edge j -> i per
    ``edge_index`` column with attribute ``prior`` (when the graph has ``edge_prior``).
    """
    import networkx as nx

    g = nx.DiGraph()
    n = int(data.num_nodes)
    au = data.au.tolist() if "au" in data else [None] * n
    au_idx = data.au_idx.tolist() if "au_idx" in data else [None] * n
    for k in range(n):
        attrs = {"au": au[k], "au_idx": au_idx[k]}
        if au[k] is not None:
            attrs["label"] = f"AU{au[k]}"
            attrs["region"] = AU_REGION.get(au[k], "other")
        g.add_node(k, **attrs)
    prior = data.edge_prior.tolist() if "edge_prior" in data else None
    for e, (j, i) in enumerate(data.edge_index.t().tolist()):
        if prior is None:
            g.add_edge(j, i)
        else:
            g.add_edge(j, i, prior=prior[e])
    return g


def from_networkx(graph, *, nodes: Sequence | None = None) -> Data:
    """Inverse of :func:`to_networkx`: a ``Data`` with ``edge_index``, ``edge_prior``
    (if every edge has a ``prior`` attribute), ``au``, ``au_idx`` and ``num_nodes``.

    Args:
        graph: a ``networkx.DiGraph`` (an undirected graph gives both directions).
        nodes: node order (default: sorted by ``au_idx`` when every node has it,
            else ``sorted(graph.nodes)``).

    Raises:
        ValueError: some but not all edges carry ``prior``.
    """
    if nodes is None:
        if all("au_idx" in attrs and attrs["au_idx"] is not None for _, attrs in graph.nodes(data=True)):
            nodes = sorted(graph.nodes, key=lambda v: graph.nodes[v]["au_idx"])
        else:
            nodes = sorted(graph.nodes)
    pos = {v: k for k, v in enumerate(nodes)}
    directed = graph.is_directed()
    pairs, priors = [], []
    for j, i, attrs in graph.edges(data=True):
        for s, t in ([(j, i)] if directed or j == i else [(j, i), (i, j)]):
            pairs.append((pos[t], pos[s]))
            priors.append(attrs.get("prior"))
    order = sorted(range(len(pairs)), key=lambda e: pairs[e])  # by target, then source
    edge_index = torch.tensor([[pairs[e][1] for e in order], [pairs[e][0] for e in order]],
                              dtype=torch.long).reshape(2, -1)
    data = Data(edge_index=edge_index, num_nodes=len(nodes))
    have = [p is not None for p in priors]
    if any(have) and not all(have):
        raise ValueError("graph: some edges have a 'prior' attribute and some do not")
    if priors and all(have):
        data.edge_prior = torch.tensor([priors[e] for e in order], dtype=torch.float32)
    attrs = [graph.nodes[v] for v in nodes]
    for key in ("au", "au_idx"):
        if attrs and all(a.get(key) is not None for a in attrs):
            data[key] = torch.tensor([a[key] for a in attrs], dtype=torch.long)
    return data
