"""Spatial structure encoder (SSE), paper §4.1.

Each ROI feature map Φ_k (3×5×5) becomes a 75-dimensional token; a learned
positional embedding per keypoint index is added and one post-LayerNorm
Transformer encoder layer attends over the K ROI tokens **of one sample**
(``batch_first=True``; the authors' code omits it, so its attention mixes the
samples of a batch instead).

In training mode the layer's forward is written out here (same submodules, so the same
parameters and state dict): the same computation as ``nn.TransformerEncoderLayer``
(post-norm, ReLU), with its four dropouts (attention weights, feed-forward hidden, both
residual branches) drawn by :func:`psyau_graph.nn.dropout.dropout`, whose masks cost
half of ``bernoulli_`` on CPU. In eval mode (no dropout) ``nn.TransformerEncoderLayer``
itself runs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from psyau_graph.nn.dropout import dropout as fast_dropout


class SSE(nn.Module):
    r"""Transformer encoder over the ROI tokens of each sample.

    :math:`X_k = \mathrm{flat}(\Phi_k) + E_k`,
    :math:`Z = \mathrm{LN}(X' + \mathrm{FFN}(X'))` with
    :math:`X' = \mathrm{LN}(X + \mathrm{MHA}(X))`.

    Args:
        num_tokens (int, optional): number of ROIs K. (default: ``65``)
        token_shape (tuple, optional): shape of one ROI map. (default: ``(3, 5, 5)``)
        heads (int, optional): attention heads; must divide 75 (paper 3, authors' code 5).
            (default: ``3``)
        dim_feedforward (int, optional): feed-forward width (not given in the paper).
            (default: ``256``)
        dropout (float, optional): dropout inside the encoder layer. (default: ``0.1``)

    Shapes:
        - **input:** ``(B, K, 3, 5, 5)``
        - **output:** ``(B, K, 3, 5, 5)``
    """

    def __init__(self, num_tokens: int = 65, token_shape: tuple[int, ...] = (3, 5, 5), heads: int = 3,
                 dim_feedforward: int = 256, dropout: float = 0.1):
        super().__init__()
        d = 1
        for s in token_shape:
            d *= int(s)
        if d % heads != 0:
            raise ValueError(f"heads={heads} must divide the token size {d}")
        self.num_tokens = num_tokens
        self.token_shape = tuple(token_shape)
        self.d_model = d
        self.heads = heads
        self.pos = nn.Parameter(torch.zeros(num_tokens, d))  # learned positional embedding E_k
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.encoder = nn.TransformerEncoderLayer(d_model=d, nhead=heads, dim_feedforward=dim_feedforward,
                                                  dropout=dropout, batch_first=True, norm_first=False)

    def forward(self, phi: Tensor) -> Tensor:
        if phi.dim() != 2 + len(self.token_shape) or tuple(phi.shape[1:]) != (self.num_tokens, *self.token_shape):
            raise ValueError(f"phi: expected (B, {self.num_tokens}, {', '.join(map(str, self.token_shape))}), "
                             f"got {tuple(phi.shape)}")
        b = phi.shape[0]
        tokens = phi.reshape(b, self.num_tokens, self.d_model) + self.pos  # (B, K, 75)
        if self.training:
            z = self._encoder_train(tokens)
        else:
            z = self.encoder(tokens)  # attention over the K tokens of each sample
        return z.reshape(phi.shape)

    def _encoder_train(self, x: Tensor) -> Tensor:
        """``self.encoder(x)`` in training mode, dropout masks from :func:`fast_dropout`.

        ``x (B, K, D)`` → ``(B, K, D)``:
        ``x' = LN1(x + drop(MHA(x)))``, ``z = LN2(x' + drop(W2 drop(relu(W1 x' + b1)) + b2))``,
        with ``MHA`` attention weights ``drop(softmax(q kᵀ / √d_h))`` (softmax in fp32).
        """
        enc = self.encoder
        attn = enc.self_attn
        b, k, d = x.shape
        h = attn.num_heads
        qkv = nn.functional.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # (B, K, 3D)
        q, kk, v = qkv.view(b, k, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, K, D/H)
        scores = torch.matmul(q, kk.transpose(-2, -1)) * (1.0 / math.sqrt(d // h))  # (B, H, K, K)
        w = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        w = fast_dropout(w, attn.dropout, True)
        a = torch.matmul(w, v).transpose(1, 2).reshape(b, k, d)  # (B, K, D)
        a = attn.out_proj(a)
        x = enc.norm1(x + fast_dropout(a, enc.dropout1.p, True))
        f = enc.linear2(fast_dropout(enc.activation(enc.linear1(x)), enc.dropout.p, True))
        return enc.norm2(x + fast_dropout(f, enc.dropout2.p, True))

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, d_model={self.d_model}, heads={self.heads}"
