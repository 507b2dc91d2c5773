"""Spatial structure encoder (SSE), paper §4.1.

Each ROI feature map Φ_k (3×5×5) becomes a 75-dimensional token; a learned
positional embedding per keypoint index is added and one post-LayerNorm
Transformer encoder layer attends over the K ROI tokens **of one sample**
(``batch_first=True``; the authors' code omits it, so its attention mixes the
samples of a batch instead).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


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
        z = self.encoder(tokens)  # attention over the K tokens of each sample
        return z.reshape(phi.shape)

    def extra_repr(self) -> str:
        return f"tokens={self.num_tokens}, d_model={self.d_model}, heads={self.heads}"
