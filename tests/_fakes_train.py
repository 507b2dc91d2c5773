"""Stand-ins shared by the training tests: a tiny dataset of contract-shaped ``Data``
items and a tiny model with the FedPsyAU forward signature (fast, deterministic)."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch_geometric.data import Data


class FakeSet(list):
    """A list of ``Data`` with the attributes protocols read from ``MEDataset``."""

    def __init__(self, items, num_classes, class_names=None):
        super().__init__(items)
        self.num_classes = num_classes
        self.class_names = class_names or [f"c{i}" for i in range(num_classes)]

    @property
    def subjects(self):
        return [d.subject for d in self]

    def index_select(self, idx):
        return FakeSet([self[int(i)] for i in idx], self.num_classes, self.class_names)


def make_items(n_subjects=6, per_subject=6, num_classes=3, seed=0, datasets=("synth",)):
    """Learnable toy data: the class shifts the mean of flow channel ``y`` and the AUs."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for s in range(n_subjects):
        ds = datasets[s % len(datasets)]
        for k in range(per_subject):
            y = (s + k) % num_classes
            x = torch.randn(65, 3, 5, 5, generator=g) * 0.5
            x[:, y % 3] += 1.0
            flow = torch.randn(1, 3, 28, 28, generator=g) * 0.5
            flow[0, y % 3] += 1.0
            au = torch.zeros(1, 12)
            au[0, (y * 2) % 12] = 1.0
            items.append(Data(x=x, pos=torch.rand(65, 2, generator=g) * 128, flow=flow, au=au,
                              y=torch.tensor([y]), subject=f"s{s:02d}", dataset=ds, clip=f"s{s:02d}_{k}"))
    return FakeSet(items, num_classes)


@dataclass
class TinyConfig:
    num_classes: int = 3
    loss_weights: tuple = (0.2, 0.8, 0.8)
    beta: float = 0.3


class TinyModel(torch.nn.Module):
    """Same forward signature/outputs as FedPsyAU; β enters the logits so tests can see it."""

    def __init__(self, config: TinyConfig | None = None):
        super().__init__()
        self.config = config or TinyConfig()
        self.roi = torch.nn.Linear(75, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.flow = torch.nn.Linear(3, 8)
        self.drop = torch.nn.Dropout(0.3)
        self.cls = torch.nn.Linear(16, self.config.num_classes)
        self.au = torch.nn.Linear(8, 12)
        self.au2 = torch.nn.Linear(8, 12)
        self.betas_seen = []

    def forward(self, rois, flow, beta=None, return_attention=False):
        b = rois.shape[0]
        assert rois.shape[1:] == (65, 3, 5, 5) and flow.shape[1:] == (3, 28, 28)
        self.betas_seen.append(beta)
        h = self.bn(self.roi(rois.reshape(b, 65, 75)).mean(1))
        f = self.flow(flow.mean((2, 3)))
        beta_v = self.config.beta if beta is None else float(beta)
        logits = self.cls(self.drop(torch.cat([h, f], 1))) * (1 + beta_v)
        att = None
        if return_attention:
            att = {"global": torch.softmax(self.au.weight @ self.au2.weight.T, -1).detach()}
        return SimpleNamespace(logits=logits, au_afe=self.au(h), au_gat=self.au2(f), attention=att)


def _masked_bce(pred, au, mask, pos_weight):
    each = F.binary_cross_entropy_with_logits(pred, au, pos_weight=pos_weight, reduction="none")
    if mask is None:
        return each.mean()
    return (each * mask).sum() / mask.sum().clamp_min(1.0)


def tiny_loss(out, y, au, weights=(0.2, 0.8, 0.8), au_mask=None, pos_weight=None):
    ce = F.cross_entropy(out.logits, y)
    a1 = _masked_bce(out.au_afe, au, au_mask, pos_weight)
    a2 = _masked_bce(out.au_gat, au, au_mask, pos_weight)
    loss = weights[0] * ce + weights[1] * a1 + weights[2] * a2
    return loss, {"ce": ce.detach(), "au_afe": a1.detach(), "au_gat": a2.detach()}


class LinearBeta:
    """Stand-in β schedule (contract: .value, .step(), state_dict/load_state_dict)."""

    def __init__(self, beta0=0.3, total_epochs=10):
        self.beta0, self.total, self.t = beta0, total_epochs, 0

    @property
    def value(self):
        return self.beta0 * (1 - self.t / self.total)

    def step(self):
        self.t += 1

    def state_dict(self):
        return {"t": self.t}

    def load_state_dict(self, s):
        self.t = s["t"]


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Run each training test on one torch thread: on a shared 2-core machine the default
    (2 threads) is many times slower under load, and results stay deterministic."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
