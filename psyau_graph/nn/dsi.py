"""Dual-stream Inception classifier (DSI), paper §4.3.

Stream 1 reads the 12 AU node maps as a 12 × 5 × 5 image, stream 2 the
3 × 28 × 28 whole-face flow (u, v, strain). Each stream has two Inception
blocks (branches 1×1, 1×1→3×3, 1×1→5×5, 3×3 max-pool→1×1; each conv with
BatchNorm + ReLU) and max-pooling; the two flattened outputs are concatenated,
dropped out (p = 0.5) and mapped to the classes by one linear layer.

The paper and its supplement give no channel widths. Ours are small
(each branch ``branch`` channels, so a block outputs ``4·branch``):

==========  ======================  =====================================
stream      input                   layers → flattened size
==========  ======================  =====================================
AU          (12, 5, 5)              Inc(16) → Inc(16) → MaxPool 2 (ceil) → 64·3·3 = 576
flow        (3, 28, 28)             Inc(8) → MaxPool 2 → Inc(16) → MaxPool 2 → 64·7·7 = 3136
==========  ======================  =====================================
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from psyau_graph.nn.dropout import Dropout


def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Inception block: four parallel branches concatenated on channels (spatial size kept).

    Args:
        in_channels (int): input channels.
        branch (int): output channels of each branch.
        reduce (int, optional): channels of the 1×1 reductions before the 3×3 and 5×5
            convs. (default: ``branch``)

    Shapes:
        - **input:** ``(B, in_channels, H, W)``
        - **output:** ``(B, 4·branch, H, W)``
    """

    def __init__(self, in_channels: int, branch: int, reduce: Optional[int] = None):
        super().__init__()
        r = reduce or branch
        self.in_channels, self.out_channels = in_channels, 4 * branch
        self.b1 = _cbr(in_channels, branch, 1)
        self.b3 = nn.Sequential(_cbr(in_channels, r, 1), _cbr(r, branch, 3))
        self.b5 = nn.Sequential(_cbr(in_channels, r, 1), _cbr(r, branch, 5))
        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _cbr(in_channels, branch, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)


class AUStream(nn.Module):
    """Stream 1: Inception ×2 then max-pool, on the AU node maps.

    Shapes:
        - **input:** ``(B, 12, 5, 5)``
        - **output:** ``(B, 4·branch·3·3)`` (576 with the default ``branch=16``)
    """

    def __init__(self, in_channels: int = 12, branch: int = 16, size: int = 5):
        super().__init__()
        self.net = nn.Sequential(Inception(in_channels, branch), Inception(4 * branch, branch),
                                 nn.MaxPool2d(2, ceil_mode=True))
        self.out_features = 4 * branch * (-(-size // 2)) ** 2

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class FlowStream(nn.Module):
    """Stream 2: Inception, max-pool, Inception, max-pool, on the whole-face flow.

    Shapes:
        - **input:** ``(B, 3, 28, 28)``
        - **output:** ``(B, 4·branches[1]·7·7)`` (3136 with the default ``(8, 16)``)
    """

    def __init__(self, in_channels: int = 3, branches: tuple[int, int] = (8, 16), size: int = 28):
        super().__init__()
        self.net = nn.Sequential(Inception(in_channels, branches[0]), nn.MaxPool2d(2),
                                 Inception(4 * branches[0], branches[1]), nn.MaxPool2d(2))
        self.out_features = 4 * branches[1] * (size // 4) ** 2

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


class DSI(nn.Module):
    """Dual-stream (or, with ``au_stream=False``, flow-only single-stream) Inception classifier.

    Args:
        num_classes (int): emotion classes.
        au_stream (bool, optional): include stream 1 (False = ablation I). (default: ``True``)
        num_aus (int, optional): AU maps in stream 1. (default: ``12``)
        au_branch (int, optional): branch width of stream 1. (default: ``16``)
        flow_branches (tuple, optional): branch widths of stream 2. (default: ``(8, 16)``)
        dropout (float, optional): before the final FC. (default: ``0.5``)
        flow_size (int, optional): side of the flow map. (default: ``28``)

    Shapes:
        - **input:** ``au (B, 12, 5, 5)`` (or None without stream 1), ``flow (B, 3, 28, 28)``
        - **output:** ``(B, num_classes)`` logits
    """

    def __init__(self, num_classes: int, *, au_stream: bool = True, num_aus: int = 12, au_branch: int = 16,
                 flow_branches: tuple[int, int] = (8, 16), dropout: float = 0.5, flow_size: int = 28):
        super().__init__()
        self.au = AUStream(num_aus, au_branch) if au_stream else None
        self.flow = FlowStream(3, tuple(flow_branches), flow_size)
        feats = self.flow.out_features + (self.au.out_features if self.au is not None else 0)
        self.dropout = Dropout(dropout)  # nn.Dropout's contract, cheaper masks
        self.fc = nn.Linear(feats, num_classes)

    def forward(self, au: Optional[Tensor], flow: Tensor) -> Tensor:
        parts = [self.flow(flow)]
        if self.au is not None:
            if au is None:
                raise ValueError("au: the dual-stream DSI needs the AU maps (B, 12, 5, 5)")
            parts.insert(0, self.au(au))
        return self.fc(self.dropout(torch.cat(parts, dim=1)))
