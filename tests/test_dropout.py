"""Dropout with integer-threshold masks (psyau_graph.nn.dropout) and the SSE training forward."""
import math

import pytest
import torch
import torch.nn.functional as F

from psyau_graph.nn import SSE
from psyau_graph.nn.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_matches_one_minus_p(p):
    torch.manual_seed(0)
    n = 2_000_000
    m = keep_mask((n,), p)
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(m.float().mean().item() - (1 - p)) < 6 * sd
    # neighbours independent: P(both kept) = (1 - p)^2
    both = (m[:-1] & m[1:]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 6 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_gradient_are_those_of_dropout(dtype):
    torch.manual_seed(1)
    x = torch.randn(64, 300, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.3, True)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    assert 0.6 < kept.float().mean().item() < 0.8
    scale = torch.tensor(1 / 0.7, dtype=dtype)
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, g * kept.to(dtype) * scale)


def test_identity_in_eval_and_at_zero_and_bad_p():
    x = torch.randn(5, 7)
    assert dropout(x, 0.5, False) is x
    assert dropout(x, 0.0, True) is x
    d = Dropout(0.5).eval()
    assert d(x) is x
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            dropout(x, bad, True)
        with pytest.raises(ValueError, match="dropout probability"):
            Dropout(bad)


def test_seeded_masks_repeat_and_differ_between_calls():
    x = torch.ones(1000)
    torch.manual_seed(3)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(a, b)


def _zero_dropouts(sse):
    enc = sse.encoder
    enc.self_attn.dropout = 0.0
    enc.dropout.p = enc.dropout1.p = enc.dropout2.p = 0.0


def test_sse_training_forward_equals_transformer_layer_without_dropout():
    torch.manual_seed(0)
    sse = SSE().train()
    _zero_dropouts(sse)
    phi = torch.randn(4, 65, 3, 5, 5, requires_grad=True)
    tokens = phi.reshape(4, 65, 75) + sse.pos
    ours = sse._encoder_train(tokens)
    ref = sse.encoder(tokens)  # nn.TransformerEncoderLayer in training mode (dropouts 0)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ours)
    ga = torch.autograd.grad(ours, [phi, *sse.parameters()], g)
    gb = torch.autograd.grad(ref, [phi, *sse.parameters()], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sse_training_dropout_has_the_expectation_of_no_dropout():
    # E[drop(x)] = x for each of the four dropouts; averaged over many draws the output of
    # the feed-forward residual path moves towards the dropout-free one
    torch.manual_seed(0)
    sse = SSE(dropout=0.1).train()
    x = torch.randn(1, 65, 75)
    with torch.no_grad():
        z = sse._encoder_train(x)
        assert z.shape == x.shape and torch.isfinite(z).all()
        enc = sse.encoder
        h = enc.activation(enc.linear1(x))
        mean = torch.stack([F.linear(dropout(h, 0.1), enc.linear2.weight) for _ in range(400)]).mean(0)
        torch.testing.assert_close(mean, F.linear(h, enc.linear2.weight), rtol=0, atol=0.05)
