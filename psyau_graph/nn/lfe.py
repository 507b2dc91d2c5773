"""Local ROI feature extractor (LFE), paper §4.1.

One small CNN shared by every ROI patch. All ROIs of the batch go through it in a
single call: ``(B, K, 3, 5, 5)`` is reshaped to ``(B·K, 3, 5, 5)`` (the authors loop
over the 65 ROIs in Python, which is what makes their model slow on CPU).

Equal ways to run the three convolutions (``impl``):

* ``"conv"``: ``nn.Conv2d`` (optionally channels-last). In eval mode each
  BatchNorm (then a fixed affine map) is folded into its convolution's weight and bias,
  so a layer is one convolution + ReLU (same result up to rounding; LFE inference at
  B = 256, 2 threads: 0.26 → 0.16 s).
* ``"gemm"``: on a P×P patch a 3×3 convolution with padding 1 is a linear
  map from ``C_in·P²`` to ``C_out·P²`` numbers. :func:`conv_as_matrix` writes that map
  as one ``(C_in·P², C_out·P²)`` matrix built from the convolution weight (a fixed 0/1
  placement tensor times the weight, so gradients reach the weight), and the layer
  becomes one matrix product over all patches. It does about 2.8× the multiply-adds of
  the convolution (the matrix keeps the zeros of the 3×3 stencil) but runs at the GEMM
  rate, which small-spatial convolutions do not reach on CPU, and it uses bf16 matrix
  units under autocast. BatchNorm and ReLU are the same modules on the same values.
  Measured on a 2-core AVX-512/AMX CPU (training step of the LFE alone, B·65 = 16,640
  patches, 2 threads) it is *slower* than the convolutions: 1.26 s vs 0.52 s in fp32
  and 0.44 s vs 0.35 s under bf16 autocast (the 2.8× extra multiply-adds outweigh the
  higher GEMM rate; BatchNorm and ReLU, memory-bound, cost the same in both). It is
  kept as an exact alternative for hardware where dense GEMMs win (``benchmarks/README.md``).
* ``"mixed"``: the thin layers (first and last: ``min(C_in, C_out) <= THIN_CHANNELS``) as
  matrix products, the wide middle one as a convolution. A 3×3 convolution with 3 input or
  3 output channels is a poor fit for the convolution kernels (measured on a 2-core AMD
  EPYC, Zen 4, training step of one layer over 16,640 patches, bf16 autocast, 2 threads:
  64 → 3 takes 95 ms as a
  convolution and 52 ms as a matrix product, 3 → 32 42 ms and 27 ms; 32 → 64 167 ms and
  368 ms), while its matrix is small (``(1600, 75)`` and ``(75, 800)``). The layer between
  a matrix product and a channels-last convolution is handed over in channels-last order,
  so no layout copy is made. In fp32 the convolutions win for every layer (64 → 3: 90 vs
  116 ms), so this is what ``"auto"`` picks only under low-precision autocast. Whole
  training step of the network, bf16, same machine: 1.10× at B = 256, 1.04× at B = 32.
* ``"auto"`` (default): ``"mixed"`` in training mode under CPU bf16/fp16 autocast,
  ``"conv"`` otherwise (eval mode keeps the folded convolutions).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("auto", "conv", "mixed", "gemm")
#: a layer with at most this many input or output channels is thin: ``impl="mixed"`` runs it
#: as one matrix product
THIN_CHANNELS = 4
_LOW_PRECISION = (torch.bfloat16, torch.float16)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


_PLACEMENT: Dict[Tuple[int, int, str], Tensor] = {}


def _placement(p: int, k: int, device: torch.device) -> Tensor:
    """0/1 tensor ``S (k·k, p·p, p·p)``: ``S[t, q_in, q_out] = 1`` when input pixel ``q_in`` sits
    under tap ``t`` of the k×k kernel centred on output pixel ``q_out`` (zero padding k // 2)."""
    key = (p, k, str(device))
    s = _PLACEMENT.get(key)
    if s is None:
        s = torch.zeros(k * k, p * p, p * p)
        r = k // 2
        for oy in range(p):
            for ox in range(p):
                for dy in range(k):
                    for dx in range(k):
                        iy, ix = oy + dy - r, ox + dx - r
                        if 0 <= iy < p and 0 <= ix < p:
                            s[dy * k + dx, iy * p + ix, oy * p + ox] = 1.0
        s = s.to(device)
        _PLACEMENT[key] = s
    return s


def conv_as_matrix(weight: Tensor, p: int) -> Tensor:
    r"""The matrix of a stride-1, zero-padded ("same") convolution on P×P maps.

    ``x.flatten(1) @ conv_as_matrix(w, P)`` equals ``conv2d(x, w, padding=k // 2).flatten(1)``
    for ``x`` of shape ``(N, C_in, P, P)`` (channel-major flattening on both sides).

    Args:
        weight (Tensor): ``(C_out, C_in, k, k)`` convolution weight, k odd.
        p (int): side of the square maps.

    Returns:
        Tensor ``(C_in·P², C_out·P²)``, differentiable in ``weight``.
    """
    cout, cin, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"conv_as_matrix needs an odd square kernel, got {tuple(weight.shape)}")
    s = _placement(p, k, weight.device).to(weight.dtype)
    m = torch.einsum("oit,tab->iaob", weight.reshape(cout, cin, k * k), s)  # (C_in, P², C_out, P²)
    return m.reshape(cin * p * p, cout * p * p)


def _square_side(x: Tensor, impl: str) -> int:
    """Side P of the square patches ``x (n, C, P, P)``; a clear error for non-square ones."""
    p, p2 = x.shape[-2:]
    if p != p2:
        raise ValueError(f"LFE(impl={impl!r}) needs square patches, got {p}×{p2}")
    return p


def _thin_conv(x: Tensor, weight: Tensor, p: int, out_channels_last: bool) -> Tensor:
    """A stride-1 "same" convolution of ``x (n, C_in, P, P)`` as one matrix product.

    Reads ``x`` without a copy if it is NCHW- or channels-last-contiguous (the matrix's rows
    are ordered to match) and returns ``(n, C_out, P, P)``, channels-last in memory if
    ``out_channels_last`` (then the product's output is that layout already), else NCHW.
    """
    n, cin = x.shape[:2]
    cout = weight.shape[0]
    m = conv_as_matrix(weight, p).view(cin, p * p, cout, p * p)  # (C_in, P², C_out, P²)
    if x.is_contiguous():
        flat = x.reshape(n, cin * p * p)
    else:
        xl = x.contiguous(memory_format=torch.channels_last)
        flat = xl.permute(0, 2, 3, 1).reshape(n, p * p * cin)  # a view: (n, P², C_in)
        m = m.transpose(0, 1)  # rows (P², C_in), as flat's columns
    if out_channels_last:
        m = m.transpose(-1, -2)  # columns (P², C_out)
    y = flat @ m.reshape(cin * p * p, cout * p * p)
    if out_channels_last:
        return y.view(n, p, p, cout).permute(0, 3, 1, 2)  # channels-last (n, C_out, P, P)
    return y.view(n, cout, p, p)


class LFE(nn.Module):
    r"""Three 3×3 convolutions (3 → 32 → 64 → 3), each with BatchNorm and ReLU, padding 1.

    :math:`\Phi_k = \mathrm{LFE}(\Theta_k)` for every ROI :math:`k`, with shared weights.

    Args:
        in_channels (int, optional): channels of a ROI patch (u, v, strain). (default: ``3``)
        widths (tuple[int, int], optional): the two hidden widths. (default: ``(32, 64)``)
        out_channels (int, optional): output channels. (default: ``3``)
        impl (str, optional): ``"conv"`` (``nn.Conv2d``), ``"gemm"`` (each convolution as
            one matrix product over all patches), ``"mixed"`` (the thin first and last
            layers as matrix products, the middle one as a convolution) or ``"auto"``
            (``"mixed"`` when training under CPU bf16/fp16 autocast, else ``"conv"``); see
            the module doc. Same parameters, same state dict, same result up to float
            rounding. (default: ``"auto"``)
        channels_last (bool, optional): ``impl="conv"`` / ``"mixed"``: run the convolutions in
            channels-last memory format (on CPU markedly faster for tiny 5×5 maps).
            (default: ``True``)
        eval_chunk (int, optional): in eval mode (where ``impl="conv"`` also folds each
            BatchNorm, then an affine map, into its convolution), run the patches in chunks of this many
            (BatchNorm then uses its running statistics, so the result is the same as one
            call); chunks that fit the CPU cache are faster. In training mode BatchNorm
            needs the statistics of all patches of the batch, so it is always one call.
            ``0`` disables chunking. (default: ``512``)

    Shapes:
        - **input:** ``(B, K, C_in, P, P)`` (K ROIs of P×P, here 65 × 3 × 5 × 5) or ``(N, C_in, P, P)``
        - **output:** ``(B, K, C_out, P, P)`` or ``(N, C_out, P, P)`` (same layout as the input)
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, int] = (32, 64), out_channels: int = 3,
                 channels_last: bool = True, eval_chunk: int = 512, impl: str = "auto"):
        super().__init__()
        if not isinstance(eval_chunk, int) or eval_chunk < 0:
            raise ValueError(f"eval_chunk must be an int >= 0, got {eval_chunk!r}")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.impl = impl
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

    def _resolved_impl(self, x: Tensor) -> str:
        """The implementation this call uses (``"auto"`` resolved for this input and mode)."""
        if self.impl != "auto":
            return self.impl
        if (self.training and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") in _LOW_PRECISION):
            return "mixed"
        return "conv"

    def _run(self, x: Tensor) -> Tensor:
        impl = self._resolved_impl(x)
        if impl == "conv" and not self.training and self._bn_eval():
            folded = self._folded()
            return self._chunked(lambda c: self._run_conv_folded(c, folded), x)
        if impl == "gemm":
            mats = self._matrices(_square_side(x, impl))
            return self._chunked(lambda c: self._run_gemm(c, mats), x)
        return self._chunked(self._run_mixed if impl == "mixed" else self._run_conv, x)

    def _chunked(self, run, x: Tensor) -> Tensor:
        """``run(x)``; in eval mode over chunks of ``eval_chunk`` patches, concatenated."""
        if self.training or not 0 < self.eval_chunk < x.shape[0]:
            return run(x)
        return torch.cat([run(c) for c in x.split(self.eval_chunk)])

    def _bn_eval(self) -> bool:
        """Every BatchNorm is in eval mode with running statistics (so it is an affine map)."""
        return all(not b[1].training and b[1].track_running_stats and b[1].running_mean is not None
                   for b in self.net)

    def _folded(self):
        """Eval-mode BatchNorm folded into the preceding convolution: ``(weight, bias)`` per layer,
        ``w' = w·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)`` (the same affine map, one pass less)."""
        out = []
        for conv, bn, _ in self.net:
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.weight is not None:
                scale = scale * bn.weight
            bias = -bn.running_mean * scale
            if bn.bias is not None:
                bias = bias + bn.bias
            out.append((conv.weight * scale.view(-1, 1, 1, 1), bias))
        return out

    def _run_conv_folded(self, x: Tensor, folded) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for w, b in folded:
            x = F.relu(F.conv2d(x, w, b, padding=w.shape[-1] // 2), inplace=True)
        return x.contiguous()

    def _run_conv(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x).contiguous()

    def _matrices(self, p: int):
        return [conv_as_matrix(block[0].weight, p) for block in self.net]

    def _run_gemm(self, x: Tensor, mats=None) -> Tensor:
        n, p = x.shape[0], _square_side(x, "gemm")
        mats = mats if mats is not None else self._matrices(p)
        h = x.reshape(n, -1)
        for block, m in zip(self.net, mats):
            h = h @ m  # (n, C·P²)
            h = block[1](h.view(n, -1, p, p))  # the layer's BatchNorm2d, same statistics as after the conv
            h = F.relu(h, inplace=True).reshape(n, -1)
        return h.view(n, -1, p, p)

    def _run_mixed(self, x: Tensor) -> Tensor:
        p = _square_side(x, "mixed")
        last = len(self.net) - 1
        for i, (conv, bn, relu) in enumerate(self.net):
            if min(conv.in_channels, conv.out_channels) <= THIN_CHANNELS:
                # channels-last hand-over into the next layer's convolution; the LFE's output is NCHW
                x = _thin_conv(x, conv.weight, p, out_channels_last=self.channels_last and i < last)
                if conv.bias is not None:
                    x = x + conv.bias.view(1, -1, 1, 1)
            else:
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x = conv(x)
            x = relu(bn(x))
        return x.contiguous()

    def forward(self, rois: Tensor) -> Tensor:
        if rois.dim() == 4:
            if rois.shape[1] != self.in_channels:
                raise ValueError(f"rois: expected (N, {self.in_channels}, P, P), got {tuple(rois.shape)}")
            return self._run(rois)
        if rois.dim() != 5 or rois.shape[2] != self.in_channels:
            raise ValueError(f"rois: expected (B, K, {self.in_channels}, P, P) or (N, {self.in_channels}, P, P), "
                             f"got {tuple(rois.shape)}")
        b, k = rois.shape[:2]
        out = self._run(rois.reshape(b * k, *rois.shape[2:]))  # one call over all ROIs of the batch
        return out.reshape(b, k, *out.shape[1:])

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.widths[0]} -> {self.widths[1]} -> {self.out_channels}, impl={self.impl!r}"
