"""AU feature extractor (AFE) and the AU heads, paper §4.2.1.

For each ROI group g (Table 1) the N_g encoded ROI maps Z_k (3×5×5) are
re-weighted by a Group Squeeze-and-Excitation (one weight per ROI, eq. 1) and
reduced by two convolutions to N_gAU channels; each channel is one AU node with
a 5×5 map = 25 features, L2-normalised. The nodes of all groups are assembled
in the fixed AU order of :data:`psyau_graph.au.AUS` → F_AU (12 × 25).
ROIs are selected with precomputed index tensors (``index_select``), never with
a Python loop over ROIs.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from psyau_graph.au import AU_GROUP, AUS, NUM_AUS
from psyau_graph.nn.dropout import dropout as fast_dropout


class GroupSE(nn.Module):
    r"""Group Squeeze-and-Excitation over the :math:`N_g` ROIs of one group (eq. 1).

    :math:`s_k = \mathrm{GAP}(Z_k)`, :math:`W = \sigma(\mathrm{FC}(s))`,
    output :math:`W_k \odot Z_k + Z_k`.

    Args:
        num_rois (int): :math:`N_g`.

    Shapes:
        - **input:** ``(B, N_g, C, P, P)``
        - **output:** ``(B, N_g, C, P, P)``; with ``return_weights=True`` also ``(B, N_g)``
    """

    def __init__(self, num_rois: int):
        super().__init__()
        self.num_rois = num_rois
        self.fc = nn.Linear(num_rois, num_rois)

    def forward(self, z: Tensor, return_weights: bool = False):
        s = z.mean(dim=(2, 3, 4))  # (B, N_g): global average pool per ROI
        w = torch.sigmoid(self.fc(s))
        out = z * w[:, :, None, None, None] + z
        return (out, w) if return_weights else out


class AUGroupExtractor(nn.Module):
    r"""One AFE branch: GroupSE, 3×3 conv (3·N_g → 2·N_gAU) + BN + ReLU, 1×1 conv (→ N_gAU) + BN + ReLU,
    then each channel flattened and L2-normalised.

    Args:
        num_rois (int): :math:`N_g`.
        num_aus (int): :math:`N_{gAU}`.
        channels (int, optional): channels per ROI map. (default: ``3``)

    Shapes:
        - **input:** ``(B, N_g, C, P, P)``
        - **output:** ``(B, N_gAU, P·P)``
    """

    def __init__(self, num_rois: int, num_aus: int, channels: int = 3):
        super().__init__()
        self.num_rois, self.num_aus, self.channels = num_rois, num_aus, channels
        self.gse = GroupSE(num_rois)
        self.conv = nn.Sequential(
            nn.Conv2d(channels * num_rois, 2 * num_aus, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * num_aus),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * num_aus, num_aus, 1, bias=False),
            nn.BatchNorm2d(num_aus),
            nn.ReLU(inplace=True),
        )

    def forward(self, z: Tensor) -> Tensor:
        b, n, c, p, q = z.shape
        x = self.gse(z).reshape(b, n * c, p, q)
        x = self.conv(x)  # (B, N_gAU, P, P)
        return F.normalize(x.flatten(2), p=2, dim=-1)


def default_groups(grouping: bool = True) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """ROI groups and the AU indices each group produces.

    Args:
        grouping (bool, optional): ``True``: the four groups of
            :func:`psyau_graph.preprocess.keypoints.roi_groups` with the AUs of
            :data:`psyau_graph.au.AU_GROUP`; ``False`` (ablation VII): one group of
            all 65 ROIs producing all 12 AUs. (default: ``True``)

    Returns:
        ``(rois, aus)``: group → keypoint indices, group → AU indices (into ``AUS``).
    """
    if not grouping:
        return {0: list(range(65))}, {0: list(range(NUM_AUS))}
    from psyau_graph.preprocess.keypoints import roi_groups

    rois = roi_groups()
    aus = {g: [k for k, au in enumerate(AUS) if AU_GROUP[au] == g] for g in rois}
    return rois, aus


class AFE(nn.Module):
    r"""All AFE branches; assembles :math:`F_{AU}` in AU order.

    Args:
        groups (Mapping[int, Sequence[int]], optional): group → ROI (keypoint) indices.
            (default: :func:`default_groups` ``(grouping)``)
        group_aus (Mapping[int, Sequence[int]], optional): group → AU node indices it
            outputs; together they must cover 0..num_aus-1 exactly once.
        grouping (bool, optional): used only when ``groups`` is None. (default: ``True``)
        num_rois (int, optional): K. (default: ``65``)
        num_aus (int, optional): (default: ``12``)
        channels (int, optional): channels per ROI map. (default: ``3``)

    Shapes:
        - **input:** ``(B, K, C, 5, 5)``
        - **output:** ``(B, num_aus, 25)``
    """

    def __init__(self, groups: Mapping[int, Sequence[int]] | None = None,
                 group_aus: Mapping[int, Sequence[int]] | None = None, *, grouping: bool = True,
                 num_rois: int = 65, num_aus: int = NUM_AUS, channels: int = 3):
        super().__init__()
        if groups is None:
            groups, default_aus = default_groups(grouping)
            group_aus = group_aus or default_aus
        if group_aus is None:
            raise ValueError("group_aus is required when groups is given")
        if sorted(groups) != sorted(group_aus):
            raise ValueError(f"groups {sorted(groups)} and group_aus {sorted(group_aus)} must have the same keys")
        self.num_rois, self.num_aus = num_rois, num_aus
        self.group_keys = [int(g) for g in sorted(groups)]
        order: list[int] = []
        self.branches = nn.ModuleList()
        for i, g in enumerate(self.group_keys):
            idx = [int(k) for k in groups[g]]
            bad = [k for k in idx if not 0 <= k < num_rois]
            if not idx or bad:
                raise ValueError(f"groups[{g}]: ROI indices must be in 0..{num_rois - 1} (bad: {bad or 'empty'})")
            self.register_buffer(f"roi_index_{i}", torch.tensor(idx, dtype=torch.long), persistent=False)
            self.branches.append(AUGroupExtractor(len(idx), len(group_aus[g]), channels))
            order.extend(int(a) for a in group_aus[g])
        if sorted(order) != list(range(num_aus)):
            raise ValueError(f"group_aus must cover AU indices 0..{num_aus - 1} exactly once, got {order}")
        # position of AU node a in the concatenation of the group outputs
        perm = torch.empty(num_aus, dtype=torch.long)
        perm[torch.tensor(order)] = torch.arange(num_aus)
        self.register_buffer("au_order", perm, persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 5 or z.shape[1] != self.num_rois:
            raise ValueError(f"z: expected (B, {self.num_rois}, C, P, P), got {tuple(z.shape)}")
        feats = [branch(z.index_select(1, getattr(self, f"roi_index_{i}")))
                 for i, branch in enumerate(self.branches)]  # loop over the (≤ 4) groups only
        return torch.cat(feats, dim=1).index_select(1, self.au_order)


class AUHead(nn.Module):
    """MLP on the flattened AU node features → 12 AU logits (300 → 128 → 12).

    Args:
        num_aus (int, optional): (default: ``12``)
        features (int, optional): features per node. (default: ``25``)
        hidden (int, optional): (default: ``128``)
        dropout (float, optional): dropout on the hidden layer in training mode;
            parameter names are those of the head without it, so older checkpoints
            load unchanged. (default: ``0.5``)

    Shapes:
        - **input:** ``(B, num_aus, features)``
        - **output:** ``(B, num_aus)`` logits
    """

    def __init__(self, num_aus: int = NUM_AUS, features: int = 25, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"AUHead dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.mlp = nn.Sequential(nn.Linear(num_aus * features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_aus))

    def forward(self, h: Tensor) -> Tensor:
        hidden = self.mlp[1](self.mlp[0](h.flatten(1)))
        return self.mlp[2](fast_dropout(hidden, self.dropout, self.training))
