"""What a client trains: model factory, data loading, one epoch, evaluation.

Every engine (in-process, Flower simulation, Flower deployment) talks to a
:class:`Task`, so the local work is the same code everywhere:

* :class:`FedPsyAUTask` — the paper's network (``FedPsyAU``) on a preprocessed cache
  (``MEDataset``), trained with ``train_one_epoch`` / ``evaluate`` of
  :mod:`psyau_graph.train.fit`.
* :class:`ToyTask` — a tiny MLP (with a BatchNorm layer, so FedBN is exercised) on
  a small tensor file; used for plumbing tests and for the scaling benchmark where
  the network itself is not what is measured.

A task is rebuilt from a plain dict (``task_spec``) in each Flower process, see
:func:`make_task`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch import nn

from ..train.metrics import uar, uf1, accuracy


class ClientFailure(RuntimeError):
    """A declared data/resource failure of one client's round (its data cannot be read,
    it ran out of memory ...): the client is recorded as failed and the round continues
    if the quorum is met. Any other exception in local training stops the run."""


class Task(Protocol):
    """Interface the federated engines use."""

    num_classes: int

    def make_model(self) -> nn.Module: ...

    def load_dataset(self, data_path: str | Path) -> Any: ...

    def subjects(self, dataset) -> list[str]: ...

    def loader(self, dataset, indices: np.ndarray, batch_size: int, shuffle: bool,
               seed: int) -> Iterable: ...

    def train_epoch(self, model: nn.Module, loader, optimizer,
                    extra_loss: Callable[[nn.Module], torch.Tensor] | None, *, precision: str = "fp32",
                    device: str = "cpu") -> dict: ...

    def evaluate(self, model: nn.Module, loader, *, precision: str = "fp32", device: str = "cpu") -> dict: ...


# --------------------------------------------------------------------------- FED-PsyAU
class FedPsyAUTask:
    """The paper's network on a preprocessed cache.

    Args:
        model_config: ``dict`` of :class:`psyau_graph.nn.FedPsyAUConfig` fields (default: paper).
        label_scheme: label scheme of ``MEDataset`` (default: ``None`` = the dataset's own).
        au_module: a pretrained AU module (``psyau pretrain`` output) loaded into every
            model this task builds (default: ``None`` = random initialisation).
        freeze_au: keep that AU module frozen (not trained and, having no trainable
            parameter, not shared), as the authors run it (default: ``False``).
        au_pos_weight: ``"train"`` (default): each client weights the positive term of its AU
            BCE by ``n_neg / n_pos`` of the known AU labels of its own training split (what the
            training loader holds; nothing about AU prevalence leaves the client); ``"none"``:
            plain BCE. Unknown AU labels (``au_known`` = 0) are left out of the AU losses either
            way (see :func:`psyau_graph.train.fit.train_pos_weight`).
    """

    #: the classifier head: what FedRep/FedAS/ELLP keep personal by default
    head_prefixes = ("dsi.fc",)

    def __init__(self, model_config: dict | None = None, label_scheme: str | None = None,
                 au_module: str | None = None, freeze_au: bool = False, au_pos_weight: str = "train"):
        from ..train.fit import AU_POS_WEIGHTS

        if au_pos_weight not in AU_POS_WEIGHTS:
            raise ValueError(f"au_pos_weight must be one of {AU_POS_WEIGHTS}, got {au_pos_weight!r}")
        self.au_pos_weight = au_pos_weight
        self.model_config = dict(model_config or {})
        self.label_scheme = label_scheme
        self.num_classes = int(self.model_config.get("num_classes", 3))
        if freeze_au and au_module is None:
            raise ValueError("freeze_au needs au_module (a pretrained AU-module file)")
        self.au_module = None if au_module is None else str(au_module)
        self.freeze_au = bool(freeze_au)
        if self.au_module is not None and not Path(self.au_module).is_file():
            raise FileNotFoundError(f"AU module file not found: {self.au_module}")

    def _config(self):
        from ..nn import FedPsyAUConfig
        return FedPsyAUConfig(**self.model_config)

    def make_model(self) -> nn.Module:
        from ..nn import FedPsyAU
        model = FedPsyAU(self._config())
        if self.au_module is not None:
            from ..train.pretrain import load_au_module
            load_au_module(model, self.au_module, freeze=self.freeze_au)
        return model

    def load_dataset(self, data_path):
        from ..data.dataset import MEDataset
        ds = MEDataset(data_path, label_scheme=self.label_scheme, progress=False)
        self.adopt(ds)
        return ds

    def adopt(self, dataset) -> None:
        """Take the number of classes from a dataset loaded elsewhere."""
        n = int(getattr(dataset, "num_classes", self.num_classes))
        if n != self.num_classes:
            self.model_config["num_classes"] = n
            self.num_classes = n
            self.__dict__.pop("_fed_model", None)  # a cached model has the old head

    def subjects(self, dataset) -> list[str]:
        return [str(s) for s in dataset.subjects]

    def loader(self, dataset, indices, batch_size, shuffle, seed):
        from ..train.fit import make_loader
        subset = dataset[torch.as_tensor(np.asarray(indices), dtype=torch.long)]
        return make_loader(subset, batch_size, shuffle=shuffle, seed=int(seed))

    def train_epoch(self, model, loader, optimizer, extra_loss, *, precision="fp32", device="cpu"):
        from ..train.fit import train_one_epoch, train_pos_weight

        # the loader holds exactly this client's training split: its known AU labels give the weights
        pw = train_pos_weight(loader.dataset, self.au_pos_weight)
        return dict(train_one_epoch(model, loader, optimizer,
                                    loss_weights=tuple(self._config().loss_weights),
                                    extra_loss=extra_loss, progress=False, precision=precision, device=device,
                                    pos_weight=pw))

    def evaluate(self, model, loader, *, precision="fp32", device="cpu"):
        from ..train.fit import evaluate
        out = evaluate(model, loader, num_classes=self.num_classes,
                       loss_weights=tuple(self._config().loss_weights), progress=False,
                       precision=precision, device=device)
        return {k: float(out[k]) for k in ("uf1", "uar", "acc", "loss") if k in out}


# --------------------------------------------------------------------------- toy task
class _ToyNet(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.head(self.body(x))


class ToyTask:
    """A small MLP classifier on a tensor file ``{"x": (N, F), "y": (N,), "subjects": [...]}``.

    Args:
        features: input features F (default: ``8``).
        hidden: hidden units (default: ``16``).
        num_classes: classes (default: ``3``).
        fail: ``(client, round)`` pairs at which local training raises a declared
            :class:`ClientFailure` (fault injection for tests) (default: none).
        bug: ``(client, round)`` pairs at which local training raises a ``TypeError``
            (an injected programming error) (default: none).
    """

    #: the classifier head: what FedRep/FedAS/ELLP keep personal by default
    head_prefixes = ("head",)

    def __init__(self, features: int = 8, hidden: int = 16, num_classes: int = 3,
                 fail: Iterable[tuple[int, int]] = (), bug: Iterable[tuple[int, int]] = ()):
        self.features, self.hidden, self.num_classes = int(features), int(hidden), int(num_classes)
        self.fail = {(int(c), int(r)) for c, r in fail}
        self.bug = {(int(c), int(r)) for c, r in bug}

    def make_model(self) -> nn.Module:
        return _ToyNet(self.features, self.hidden, self.num_classes)

    def load_dataset(self, data_path):
        path = Path(data_path)
        if path.is_dir():
            path = path / "toy.pt"
        from ..train.checkpoint import safe_torch_load

        d = safe_torch_load(path, "toy data file")
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a dict with keys x, y, subjects")
        for k in ("x", "y", "subjects"):
            if k not in d:
                raise ValueError(f"{path}: missing key {k!r} (expected x, y, subjects)")
        if d["x"].shape[1] != self.features:
            raise ValueError(f"{path}: x has {d['x'].shape[1]} features, task expects {self.features}")
        return d

    def subjects(self, dataset) -> list[str]:
        return [str(s) for s in dataset["subjects"]]

    def loader(self, dataset, indices, batch_size, shuffle, seed):
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        x, y = dataset["x"][idx], dataset["y"][idx]
        g = torch.Generator().manual_seed(int(seed))
        order = torch.randperm(len(idx), generator=g) if shuffle else torch.arange(len(idx))
        return [(x[order[i:i + batch_size]], y[order[i:i + batch_size]])
                for i in range(0, len(idx), batch_size)]

    def check_fault(self, client: int, rnd: int) -> None:
        if (int(client), int(rnd)) in self.fail:
            raise ClientFailure(f"injected failure of client {client} in round {rnd}")
        if (int(client), int(rnd)) in self.bug:
            raise TypeError(f"injected programming error of client {client} in round {rnd}")

    def train_epoch(self, model, loader, optimizer, extra_loss, *, precision="fp32", device="cpu"):
        from ..train.precision import autocast

        model.train()
        total, n = 0.0, 0
        for x, y in loader:
            if len(y) < 2:  # BatchNorm needs 2 samples in training mode
                continue
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            with autocast(precision, device):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        return {"loss": total / max(n, 1)}

    @torch.no_grad()
    def evaluate(self, model, loader, *, precision="fp32", device="cpu"):
        from ..train.precision import autocast

        model.eval()
        ys, ps, total, n = [], [], 0.0, 0
        for x, y in loader:
            with autocast(precision, device):
                logits = model(x.to(device))
            logits = logits.float().cpu()
            total += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += len(y)
            ys.append(y)
            ps.append(logits.argmax(1))
        if n == 0:
            return {"uf1": math.nan, "uar": math.nan, "acc": math.nan, "loss": math.nan}
        yt, yp = torch.cat(ys).numpy(), torch.cat(ps).numpy()
        return {"uf1": float(uf1(yt, yp, self.num_classes)), "uar": float(uar(yt, yp, self.num_classes)),
                "acc": float(accuracy(yt, yp)), "loss": total / n}


def make_toy_data(path: str | Path, subjects: int = 6, per_subject: int = 20, features: int = 8,
                  num_classes: int = 3, seed: int = 0, shift: float = 1.0) -> Path:
    """Write a heterogeneous toy set: class means shared, a per-subject offset of size ``shift``.

    Returns the written path (atomic write).
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, features, generator=g) * 2.0
    xs, ys, subs = [], [], []
    for s in range(subjects):
        offset = torch.randn(features, generator=g) * shift
        # label skew per subject: heterogeneous clients
        probs = torch.softmax(torch.randn(num_classes, generator=g) * 1.5, 0)
        y = torch.multinomial(probs, per_subject, replacement=True, generator=g)
        x = means[y] + offset + torch.randn(per_subject, features, generator=g)
        xs.append(x)
        ys.append(y)
        subs += [f"s{s:02d}"] * per_subject
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"x": torch.cat(xs), "y": torch.cat(ys), "subjects": subs}, tmp)
    tmp.replace(path)
    return path


def make_task(spec: dict) -> Task:
    """Build a task from a plain dict ``{"name": "fedpsyau"|"toy", ...options}``."""
    spec = dict(spec)
    name = spec.pop("name", "fedpsyau")
    if name == "fedpsyau":
        return FedPsyAUTask(**spec)
    if name == "toy":
        return ToyTask(**spec)
    raise ValueError(f"unknown task {name!r}; expected 'fedpsyau' or 'toy'")
