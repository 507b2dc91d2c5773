"""AU supervision with unknown labels and rare AUs: masked BCE, positive weights, masked AU F1."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from psyau_graph.nn import FedPsyAUOutput, fedpsyau_loss
from psyau_graph.nn.model import au_pos_weight
from psyau_graph.train.metrics import au_f1


def _out(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return FedPsyAUOutput(logits=torch.randn(b, 3, generator=g), au_afe=torch.randn(b, 12, generator=g),
                          au_gat=torch.randn(b, 12, generator=g))


def test_masked_bce_ignores_unknown_clips_entirely():
    out, y = _out(), torch.tensor([0, 1, 2, 0, 1, 2])
    au = torch.zeros(6, 12)
    au[0, 3] = au[1, 7] = 1
    known = torch.tensor([1, 1, 1, 1, 0, 0.])  # the last two clips have no AU coding
    _, parts = fedpsyau_loss(out, y, au, au_mask=known)
    ref = F.binary_cross_entropy_with_logits(out.au_afe[:4], au[:4])
    assert parts["au_afe"] == pytest.approx(ref.item(), rel=1e-6)
    # whatever the unknown clips' targets say, the loss does not move
    au2 = au.clone()
    au2[4:] = 1.0
    _, parts2 = fedpsyau_loss(out, y, au2, au_mask=known)
    assert parts2["au_gat"] == pytest.approx(parts["au_gat"].item(), rel=1e-6)
    # per-entry mask (a '?' cell): equals the mean over the known entries
    m = torch.ones(6, 12)
    m[2, 5] = 0
    _, p3 = fedpsyau_loss(out, y, au, au_mask=m)
    each = F.binary_cross_entropy_with_logits(out.au_afe, au, reduction="none")
    assert p3["au_afe"] == pytest.approx((each * m).sum().item() / 71, rel=1e-6)
    with pytest.raises(ValueError, match="au_mask"):
        fedpsyau_loss(out, y, au, au_mask=torch.ones(6, 5))


def test_pos_weight_from_training_prevalence():
    au = torch.zeros(10, 12)
    au[:2, 0] = 1  # AU 0 in 2 of 10 clips
    au[:5, 1] = 1  # AU 1 in 5 of 10
    mask = torch.ones(10)
    mask[9] = 0  # one clip unknown: 2 pos / 7 neg for AU 0, 5 / 4 for AU 1
    w = au_pos_weight(au, mask)
    assert w[0] == pytest.approx(7 / 2) and w[1] == pytest.approx(1.0)  # 4/5 < 1 is clipped to 1
    assert (w[2:] == 1).all()  # no positive: nothing to up-weight
    rare = torch.zeros(10, 12)
    rare[0, 0] = 1  # 1 positive, 9 negatives
    assert au_pos_weight(rare)[0] == pytest.approx(9.0) and au_pos_weight(rare, max_weight=4.0)[0] == 4.0
    out, y = _out(10), torch.zeros(10, dtype=torch.long)
    _, parts = fedpsyau_loss(out, y, au, pos_weight=w)
    ref = F.binary_cross_entropy_with_logits(out.au_afe, au, pos_weight=w)
    assert parts["au_afe"] == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="pos_weight"):
        fedpsyau_loss(out, y, au, pos_weight=torch.ones(5))


def test_au_f1_counts_known_labels_only():
    t = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0.]])
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.1], [0.9, 0.9]])
    full = au_f1(t, p)
    # AU 0: tp 1, fn 1, fp 1 -> 0.5; AU 1: tp 1, fn 1, fp 1 -> 0.5
    assert full["per_au"] == pytest.approx([0.5, 0.5])
    known = au_f1(t, p, mask=torch.tensor([1, 1, 0, 0]))  # rows 3-4 unknown
    assert known["per_au"] == pytest.approx([1.0, 1.0]) and known["mean"] == pytest.approx(1.0)
    entry = torch.ones(4, 2)
    entry[3, 0] = 0  # only the false positive of AU 0 on row 4 is unknown
    assert au_f1(t, p, mask=entry)["per_au"] == pytest.approx([2 / 3, 0.5])
    with pytest.raises(ValueError, match="mask"):
        au_f1(t, p, mask=torch.ones(3))
