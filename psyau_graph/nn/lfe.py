"""Local ROI feature extractor (LFE), paper §4.1.

One small CNN shared by every ROI patch. All ROIs of the batch go through it in a
single call: ``(B, K, 3, 5, 5)`` is reshaped to ``(B·K, 3, 5, 5)`` (the authors loop
over the 65 ROIs in Python, which is what makes their model slow on CPU).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LFE(nn.Module):
    r"""Three 3×3 convolutions (3 → 32 → 64 → 3), each with BatchNorm and ReLU, padding 1.

    :math:`\Phi_k = \mathrm{LFE}(\Theta_k)` for every ROI :math:`k`, with shared weights.

    Args:
        in_channels (int, optional): channels of a ROI patch (u, v, strain). (default: ``3``)
        widths (tuple[int, int], optional): the two hidden widths. (default: ``(32, 64)``)
        out_channels (int, optional): output channels. (default: ``3``)
        channels_last (bool, optional): run the convolutions in channels-last memory
            format; on CPU this is markedly faster for the many tiny 5×5 maps (about 1.8× for
            a training step of the LFE at B = 256, single thread). Same result. (default: ``True``)
        eval_chunk (int, optional): in eval mode, run the patches in chunks of this many
            (BatchNorm then uses its running statistics, so the result is the same as one
            call); chunks that fit the CPU cache made eval-mode LFE about 2× faster at
            B = 256 (65 · 256 patches; ``benchmarks/README.md``). In training mode BatchNorm
            needs the statistics of all patches of the batch, so it is always one call.
            ``0`` disables chunking. (default: ``512``)

    Shapes:
        - **input:** ``(B, K, C_in, P, P)`` (K ROIs of P×P, here 65 × 3 × 5 × 5) or ``(N, C_in, P, P)``
        - **output:** ``(B, K, C_out, P, P)`` or ``(N, C_out, P, P)`` (same layout as the input)
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, int] = (32, 64), out_channels: int = 3,
                 channels_last: bool = True, eval_chunk: int = 512):
        super().__init__()
        if not isinstance(eval_chunk, int) or eval_chunk < 0:
            raise ValueError(f"eval_chunk must be an int >= 0, got {eval_chunk!r}")
        self.channels_last = channels_last
        self.eval_chunk = eval_chunk
        self.in_channels = in_channels
        self.widths = tuple(widths)
        self.out_channels = out_channels
        self.net = nn.Sequential(
            _conv_bn_relu(in_channels, widths[0]),
            _conv_bn_relu(widths[0], widths[1]),
            _conv_bn_relu(widths[1], out_channels),
        )

    def _run(self, x: Tensor) -> Tensor:
        if not self.training and 0 < self.eval_chunk < x.shape[0]:
            return torch.cat([self._run_one(c) for c in x.split(self.eval_chunk)])
        return self._run_one(x)

    def _run_one(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).contiguous()

    def forward(self, rois: Tensor) -> Tensor:
        if rois.dim() == 4:
            return self._run(rois)
        if rois.dim() != 5 or rois.shape[2] != self.in_channels:
            raise ValueError(f"rois: expected (B, K, {self.in_channels}, P, P) or (N, {self.in_channels}, P, P), "
                             f"got {tuple(rois.shape)}")
        b, k = rois.shape[:2]
        out = self._run(rois.reshape(b * k, *rois.shape[2:]))  # one call over all ROIs of the batch
        return out.reshape(b, k, *out.shape[1:])

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.widths[0]} -> {self.widths[1]} -> {self.out_channels}"
