"""Evaluation protocols: LOSO, subject k-fold, repeated random splits, MEGC composite, LODO.

Protocol strings:

* ``"loso"`` — leave-one-subject-out.
* ``"kfold:K"`` — subject-wise K-fold (DFME: ``kfold:10``).
* ``"split:F xR"`` e.g. ``"split:0.7x10"`` — R repeated random train/test splits with a
  training fraction F (sample level, as within a federated client).
* ``"megc"`` — MEGC composite: several datasets pooled, LOSO over (dataset, subject)
  pairs; pooled scores plus scores per dataset.
* ``"lodo"`` — leave-one-dataset-out (needs at least two datasets).

Scoring (SPEC §7): under LOSO, k-fold, MEGC and LODO the predictions of all folds are
pooled and UF1/UAR computed once (``pooled``, the headline); per-fold metrics and their
mean ± sd are reported too. Under repeated random splits the headline is the mean over
repeats (each repeat is a complete test of the data). With several datasets,
``per_dataset`` scores are computed from the pooled predictions of each dataset.

Model selection: the test fold's labels never choose an epoch or a model. With
``TrainConfig.select == "last"`` (default) the last epoch is reported; with ``"val"`` a
validation split of ``val_frac`` of the *training subjects* is carved out of each
fold's training set and the epoch with the best validation UF1 is restored.

Outputs in ``out_dir`` (atomic writes): ``results.json``, ``predictions.csv``,
``confusion.png``, ``curves.png``, ``folds.png``, ``attention.png`` (when the model
returns attention), ``folds/fold_XX/{last.pt,result.json}`` (per-fold checkpoint and
result; ``resume=True`` skips finished folds and resumes an interrupted one) and,
with ``final_model=True``, ``model.pt``: a model trained on all samples with the same
settings (the one ``psyau evaluate``/``psyau predict`` use).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..progress import LineProgress
from .checkpoint import save_checkpoint
from .fit import AU_THRESHOLD, TrainConfig, evaluate, fit, make_loader, model_forward, seed_everything
from .metrics import au_f1, classification_report

__all__ = ["parse_protocol", "make_folds", "run_protocol", "atomic_write_text", "to_jsonable"]


def parse_protocol(protocol: str) -> tuple:
    """``"loso"`` → ``("loso",)``, ``"kfold:10"`` → ``("kfold", 10)``, ``"split:0.7x10"`` →
    ``("split", 0.7, 10)``, ``"megc"`` → ``("megc",)``, ``"lodo"`` → ``("lodo",)``."""
    p = str(protocol).strip().lower()
    if p in ("loso", "megc", "lodo"):
        return (p,)
    m = re.fullmatch(r"kfold:(\d+)", p)
    if m and int(m.group(1)) >= 2:
        return ("kfold", int(m.group(1)))
    m = re.fullmatch(r"split:(0?\.\d+|1\.0*)x(\d+)", p)
    if m and 0 < float(m.group(1)) < 1 and int(m.group(2)) >= 1:
        return ("split", float(m.group(1)), int(m.group(2)))
    raise ValueError(f"unknown protocol {protocol!r}; expected 'loso', 'kfold:K' (K>=2), "
                     "'split:FxR' (0<F<1, e.g. split:0.7x10), 'megc' or 'lodo'")


def _item_attr(dataset, name: str) -> list[str]:
    plural = getattr(dataset, name + "s", None)
    if plural is not None and not callable(plural) and len(plural) == len(dataset):
        return [str(v) for v in plural]
    return [str(getattr(dataset[i], name, "")) for i in range(len(dataset))]


def make_folds(dataset, protocol: str, seed: int = 0) -> list[dict]:
    """Folds as ``[{"name", "train": idx array, "test": idx array}]`` for ``protocol``."""
    from psyau_graph.data import splits

    kind = parse_protocol(protocol)
    subjects = _item_attr(dataset, "subject")
    out = []
    if kind[0] in ("loso", "megc"):
        keys = subjects
        if kind[0] == "megc":
            keys = [f"{d}/{s}" for d, s in zip(_item_attr(dataset, "dataset"), subjects)]
        for tr, te in splits.loso_splits(keys):
            out.append({"name": keys[int(te[0])], "train": np.asarray(tr), "test": np.asarray(te)})
    elif kind[0] == "kfold":
        for k, (tr, te) in enumerate(splits.subject_kfold(subjects, kind[1], seed)):
            out.append({"name": f"fold{k + 1}", "train": np.asarray(tr), "test": np.asarray(te)})
    elif kind[0] == "split":
        for k, (tr, te) in enumerate(splits.repeated_random_splits(len(dataset), train_frac=kind[1],
                                                                    repeats=kind[2], seed=seed)):
            out.append({"name": f"repeat{k + 1}", "train": np.asarray(tr), "test": np.asarray(te)})
    else:  # lodo
        names = _item_attr(dataset, "dataset")
        uniq = sorted(set(names))
        if len(uniq) < 2:
            raise ValueError(f"protocol 'lodo' needs at least two datasets, found {uniq}")
        arr = np.asarray(names)
        for d in uniq:
            out.append({"name": d, "train": np.flatnonzero(arr != d), "test": np.flatnonzero(arr == d)})
    for f in out:
        if len(f["train"]) == 0 or len(f["test"]) == 0:
            raise ValueError(f"fold {f['name']} of protocol {protocol!r} has an empty train or test set")
    return out


def _subset(dataset, idx):
    idx = np.asarray(idx, dtype=np.int64)
    if hasattr(dataset, "index_select"):
        return dataset.index_select(torch.as_tensor(idx))
    return torch.utils.data.Subset(dataset, idx.tolist())


def _carve_val(dataset, train_idx, frac: float, seed: int):
    subjects = np.asarray(_item_attr(dataset, "subject"))[train_idx]
    uniq = sorted(set(subjects.tolist()))
    if len(uniq) < 2:
        raise ValueError("select='val' needs at least two training subjects to carve a validation split")
    n_val = min(len(uniq) - 1, max(1, int(round(frac * len(uniq)))))
    rng = np.random.default_rng(seed)
    val_subj = set(rng.choice(uniq, size=n_val, replace=False).tolist())
    mask = np.array([s in val_subj for s in subjects])
    return train_idx[~mask], train_idx[mask], sorted(val_subj)


def to_jsonable(obj: Any) -> Any:
    """numpy/torch → python; NaN/inf → None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _default_model_factory(config):
    from psyau_graph.nn import FedPsyAU

    return FedPsyAU(config)


def resolve_model_config(model_config, num_classes: int, ablation: str | None):
    """``FedPsyAUConfig`` for this run: the ablation's named config (other fields of
    ``model_config`` kept) and ``num_classes`` from the data.

    With both ``ablation`` and a ``model_config``, the config's explicitly set switches
    (``model_config.overrides``) are kept when they agree with the ablation's table; an
    explicit switch that contradicts it (e.g. ``psych_prior=True`` with ``ablation="IX"``)
    raises ``ValueError`` rather than being dropped or silently winning. Switches the
    config only inherited from its own ablation are replaced by ``ablation``'s.
    """
    if model_config is None or ablation is not None:
        from psyau_graph.nn import FedPsyAUConfig
        from psyau_graph.nn.ablations import SWITCHES, ablation_switches

        if ablation is not None:
            base = {}
            if model_config is not None:
                table = ablation_switches(ablation)
                explicit = tuple(getattr(model_config, "overrides", None) or ())
                clash = [k for k in explicit if getattr(model_config, k) != table[k]]
                if clash:
                    raise ValueError(f"ablation={ablation!r} sets {', '.join(f'{k}={table[k]}' for k in clash)}, "
                                     "but the model config explicitly sets "
                                     f"{', '.join(f'{k}={getattr(model_config, k)}' for k in clash)}; "
                                     "drop the switch or choose the ablation that has it")
                # carry over only the non-switch fields the caller changed from the plain defaults
                plain = dataclasses.asdict(FedPsyAUConfig())
                skip = ("ablation", "num_classes", "overrides") + tuple(SWITCHES)
                base = {k: v for k, v in dataclasses.asdict(model_config).items()
                        if k not in skip and v != plain.get(k)}
            return FedPsyAUConfig.from_ablation(ablation, num_classes=num_classes, **base)
        return FedPsyAUConfig(num_classes=num_classes)
    if getattr(model_config, "num_classes", num_classes) != num_classes:
        model_config = dataclasses.replace(model_config, num_classes=num_classes)
    return model_config


def _attention_matrices(model, dataset, beta, batch_size: int, max_batches: int = 4) -> dict:
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    model.eval()
    loader = make_loader(dataset, batch_size, shuffle=False)
    with torch.no_grad():
        for b, batch in enumerate(loader):
            if b >= max_batches:
                break
            out = model_forward(model, batch, beta=beta, return_attention=True)
            att = getattr(out, "attention", None)
            if not att:
                return {}
            for name, value in att.items():
                mat = _dense_attention(value)
                if mat is None:
                    continue
                sums[name] = sums.get(name, 0) + mat
                counts[name] = counts.get(name, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def _dense_attention(value) -> np.ndarray | None:
    """Accepts a dense (N, N) / (B, N, N) / (B, H, N, N) tensor or an ``(edge_index (2, E),
    alpha (E, H))`` pair (targets in row 1) and returns the mean dense (N, N) matrix."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and torch.is_tensor(value[0]):
        ei, alpha = value
        alpha = alpha.float().reshape(alpha.shape[0], -1).mean(1)
        n = int(ei.max()) + 1 if ei.numel() else 0
        mat = torch.zeros(n, n)
        cnt = torch.zeros(n, n)
        mat.index_put_((ei[1], ei[0]), alpha, accumulate=True)
        cnt.index_put_((ei[1], ei[0]), torch.ones_like(alpha), accumulate=True)
        return (mat / cnt.clamp(min=1)).numpy()
    if torch.is_tensor(value):
        v = value.detach().float()
        while v.dim() > 2:
            v = v.mean(0)
        return v.numpy() if v.dim() == 2 and v.shape[0] == v.shape[1] else None
    return None


def _region_of(name: str) -> str | None:
    low = name.lower()
    for region in ("upper", "lower", "global"):
        if region in low:
            return region
    return None


def _prior_for(region: str | None, n: int, model_config) -> np.ndarray | None:
    """The prior D the model was given for ``region`` (dense, rows over N(i)), or None."""
    if region is None:
        return None
    try:
        from psyau_graph.graphs import au_graph, edge_values_to_dense
    except ImportError:
        return None
    if model_config is not None and getattr(model_config, "data_prior", True) is False:
        return None
    source = getattr(model_config, "prior", "dfme") if model_config is not None else "dfme"
    g = au_graph(region, prior=source)
    if getattr(g, "edge_prior", None) is None or int(g.num_nodes) != n:
        return None
    return edge_values_to_dense(g.edge_index, g.edge_prior, n).numpy()


def _node_labels(region: str | None, n: int) -> list[str]:
    try:
        from psyau_graph.au import AUS
    except ImportError:
        return [str(i) for i in range(n)]
    aus = {"upper": AUS[:6], "lower": AUS[6:], "global": AUS}.get(region or "", ())
    return [f"AU{a}" for a in aus] if len(aus) == n else [str(i) for i in range(n)]


def _plot_attention(model, dataset, beta, batch_size, path) -> Path | None:
    """First DPK-GAT layer of every graph (heads and test samples averaged) next to its prior."""
    from psyau_graph.viz.training import plot_attention_matrices

    learned = _attention_matrices(model, dataset, beta, batch_size)
    if not learned:
        return None
    first = {k: v for k, v in learned.items() if k.endswith(".0")}
    learned = first or learned
    cfg = getattr(model, "config", None)
    priors, labels = {}, {}
    for name, mat in learned.items():
        region = _region_of(name)
        priors[name] = _prior_for(region, mat.shape[0], cfg)
        labels[name] = _node_labels(region, mat.shape[0])
    title = "DPK-GAT attention, first layer (mean over heads and test samples) vs the prior D"
    return plot_attention_matrices(learned, path, priors=priors if any(p is not None for p in priors.values()) else None,
                                   labels=labels, title=title)


def _fold_metrics(ev: dict) -> dict:
    return {k: ev[k] for k in ("uf1", "uar", "acc", "loss", "au_f1")}


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _pooled(preds: list[dict], num_classes: int, class_names) -> dict:
    yt = np.concatenate([p["y_true"] for p in preds])
    yp = np.concatenate([p["y_pred"] for p in preds])
    rep = classification_report(yt, yp, num_classes, class_names)
    if all(p.get("au_prob") is not None for p in preds):
        # a fold saved before AU masks were recorded has no au_known: all its labels count as known
        known = np.concatenate([np.ones_like(p["au_true"]) if p.get("au_known") is None else p["au_known"]
                                for p in preds])
        au = au_f1(np.concatenate([p["au_true"] for p in preds]), np.concatenate([p["au_prob"] for p in preds]),
                   threshold=AU_THRESHOLD, mask=known)
        rep["au_f1"], rep["au_f1_per_au"] = au["mean"], au["per_au"]
        rep["au_labels_known"], rep["au_labels"] = int(known.sum()), int(known.size)
    else:
        rep["au_f1"], rep["au_f1_per_au"] = None, None
    rep["au_f1_rule"] = (f"an AU is present when sigmoid(logit) >= {AU_THRESHOLD} (GAT head, else AFE head); "
                         "F1 per AU over the known labels of the pooled test predictions, mean over the AUs "
                         "present in truth or prediction")
    return rep


def run_protocol(dataset, protocol: str, model_config, train_config: TrainConfig, out_dir, *,
                 ablation: str | None = None, model_factory: Callable | None = None, loss_fn=None,
                 final_model: bool = False, resume: bool = False, plots: bool = True,
                 extra: dict | None = None, checkpoint_extra: dict | None = None) -> dict:
    """Train and test ``dataset`` under ``protocol``; write results and plots to ``out_dir``.

    Args:
        dataset: ``MEDataset`` (or any sequence of contract ``Data`` items with
            ``num_classes``, ``class_names`` and ``subjects``).
        protocol: see the module doc.
        model_config: ``FedPsyAUConfig`` (``None`` = defaults); ``num_classes`` is set
            from the data.
        train_config: :class:`~psyau_graph.train.fit.TrainConfig`.
        out_dir: output folder.
        ablation: named ablation setting (``"I"`` … ``"XII"``) (default: None = config's).
        model_factory: ``config -> model`` (default: ``FedPsyAU``).
        loss_fn: loss override (default: ``fedpsyau_loss``).
        final_model: also train on all samples and save ``model.pt`` (default: False).
        resume: skip finished folds and resume an interrupted one (default: False).
        plots: write the PNGs (default: True).
        extra: extra JSON entries stored in ``results.json`` (e.g. the CLI arguments).
        checkpoint_extra: extra entries stored in ``model.pt`` (e.g. ``flow_method``).

    Returns:
        the ``results.json`` content as a dict (``pooled``, ``folds``, ``fold_mean``,
        ``fold_sd``, ``headline``, ``per_dataset``, ...).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = parse_protocol(protocol)
    num_classes = int(dataset.num_classes)
    class_names = list(getattr(dataset, "class_names", None) or [str(i) for i in range(num_classes)])
    if model_factory is None or ablation is not None:
        mcfg = resolve_model_config(model_config, num_classes, ablation)
    elif dataclasses.is_dataclass(model_config) and getattr(model_config, "num_classes", num_classes) != num_classes:
        mcfg = dataclasses.replace(model_config, num_classes=num_classes)
    else:
        mcfg = model_config
    factory = model_factory or _default_model_factory
    folds = make_folds(dataset, protocol, seed=train_config.seed)
    all_subjects = _item_attr(dataset, "subject")
    all_datasets = _item_attr(dataset, "dataset")
    fold_records, preds, histories = [], [], []
    last_model = last_beta = last_test = None
    lines = LineProgress(len(folds), f"{protocol}", "fold", every_pct=0, enabled=train_config.progress)
    for k, fold in enumerate(tqdm(folds, desc=f"{protocol} folds", disable=None if train_config.progress else True)):
        fdir = out / "folds" / f"fold_{k + 1:02d}"
        done = fdir / "result.json"
        if resume and done.is_file():
            rec = json.loads(done.read_text())
            fold_records.append(rec["summary"])
            histories.append(rec["history"])
            preds.append({key: (None if rec["pred"][key] is None else np.asarray(rec["pred"][key]))
                          for key in rec["pred"]})
            lines.update(1, f"{fold['name']} resumed", resumed=True)
            continue
        tr, va, val_subj = fold["train"], None, []
        if train_config.select == "val":
            tr, va, val_subj = _carve_val(dataset, fold["train"], train_config.val_frac, train_config.seed + k)
        seed_everything(train_config.seed)
        model = factory(mcfg)
        res = fit(model, _subset(dataset, tr), train_config, val_set=None if va is None else _subset(dataset, va),
                  checkpoint_dir=fdir, resume=resume, loss_fn=loss_fn, num_classes=num_classes,
                  class_names=class_names)
        test_set = _subset(dataset, fold["test"])
        ev = evaluate(model, make_loader(test_set, train_config.batch_size, shuffle=False), num_classes=num_classes,
                      loss_weights=train_config.loss_weights or getattr(mcfg, "loss_weights", (0.2, 0.8, 0.8)),
                      beta=res.beta, loss_fn=loss_fn, class_names=class_names, device=train_config.device,
                      precision=train_config.precision,
                      pos_weight=None if res.au_pos_weight is None else torch.tensor(res.au_pos_weight))
        test_idx = np.asarray(fold["test"])
        pred = {"index": test_idx, "y_true": ev["y_true"], "y_pred": ev["y_pred"], "probabilities": ev["probabilities"],
                "au_true": ev["au_true"], "au_known": ev["au_known"], "au_prob": ev["au_prob"]}
        summary = {"name": fold["name"], "fold": k + 1, "n_train": int(len(tr)), "n_val": 0 if va is None else int(len(va)),
                   "n_test": int(len(test_idx)), "val_subjects": val_subj,
                   "test_subjects": sorted(set(all_subjects[i] for i in test_idx)),
                   "best_epoch": res.best_epoch, "train_time_s": res.train_time_s, **_fold_metrics(ev),
                   "au_pos_weight": res.au_pos_weight,
                   "f1_classes": ev["report"]["f1_classes"]}
        atomic_write_text(done, json.dumps(to_jsonable({"summary": summary, "history": res.history, "pred": pred})))
        fold_records.append(to_jsonable(summary))
        histories.append(to_jsonable(res.history))
        preds.append(pred)
        last_model, last_beta, last_test = model, res.beta, test_set
        lines.update(1, f"{fold['name']}: test UF1 {_fmt(summary.get('uf1'))} UAR {_fmt(summary.get('uar'))}")
    pooled = _pooled(preds, num_classes, class_names)
    fold_uf1 = np.array([np.nan if f["uf1"] is None else f["uf1"] for f in fold_records], dtype=float)
    fold_uar = np.array([np.nan if f["uar"] is None else f["uar"] for f in fold_records], dtype=float)
    fold_mean = {"uf1": float(np.nanmean(fold_uf1)), "uar": float(np.nanmean(fold_uar))}
    fold_sd = {"uf1": float(np.nanstd(fold_uf1, ddof=1)) if len(fold_uf1) > 1 else 0.0,
               "uar": float(np.nanstd(fold_uar, ddof=1)) if len(fold_uar) > 1 else 0.0}
    headline = dict(fold_mean) if kind[0] == "split" else {"uf1": pooled["uf1"], "uar": pooled["uar"]}
    headline["source"] = "mean over repeats" if kind[0] == "split" else "pooled predictions of all folds"
    per_dataset = {}
    order = np.concatenate([p["index"] for p in preds])
    ds_of = np.asarray(all_datasets)[order]
    if len(set(ds_of.tolist())) > 1:
        yt = np.concatenate([p["y_true"] for p in preds])
        yp = np.concatenate([p["y_pred"] for p in preds])
        for d in sorted(set(ds_of.tolist())):
            m = ds_of == d
            r = classification_report(yt[m], yp[m], num_classes, class_names)
            per_dataset[d] = {k2: r[k2] for k2 in ("uf1", "uar", "acc", "n", "f1", "recall", "confusion")}
    _write_predictions(out / "predictions.csv", preds, all_subjects, all_datasets, _item_attr(dataset, "clip"),
                       class_names)
    result = {
        "protocol": protocol, "ablation": ablation or getattr(mcfg, "ablation", None),
        "class_names": class_names, "num_classes": num_classes, "n_samples": len(dataset),
        "n_subjects": len(set(all_subjects)), "datasets": sorted(set(all_datasets)),
        "headline": headline, "pooled": pooled, "fold_mean": fold_mean, "fold_sd": fold_sd,
        "per_dataset": per_dataset, "folds": fold_records,
        "model_selection": ("last epoch" if train_config.select == "last" else
                            f"best validation UF1 on {train_config.val_frac:.0%} of the training subjects"),
        "train_config": dataclasses.asdict(train_config),
        "model_config": dataclasses.asdict(mcfg) if dataclasses.is_dataclass(mcfg) else None,
        "extra": extra or {},
    }
    if final_model:
        result["final_model"] = _train_final(dataset, mcfg, factory, train_config, out, loss_fn, class_names,
                                             protocol, resume, checkpoint_extra or {})
        last_model, last_beta = result["final_model"].pop("_model"), result["final_model"]["beta"]
    result["timing"] = {"total_s": time.perf_counter() - t0,
                        "fold_train_s": [f.get("train_time_s") for f in fold_records]}
    if plots:
        result["plots"] = _plots(out, pooled, class_names, histories, fold_records, protocol,
                                 last_model, last_beta, last_test if last_test is not None else dataset,
                                 train_config.batch_size)
    atomic_write_text(out / "results.json", json.dumps(to_jsonable(result), indent=1))
    return to_jsonable(result)


def _train_final(dataset, mcfg, factory, train_config, out, loss_fn, class_names, protocol, resume,
                 checkpoint_extra: dict) -> dict:
    idx = np.arange(len(dataset))
    va, val_subj = None, []
    if train_config.select == "val":
        idx, va, val_subj = _carve_val(dataset, idx, train_config.val_frac, train_config.seed)
    seed_everything(train_config.seed)
    model = factory(mcfg)
    res = fit(model, _subset(dataset, idx), train_config, val_set=None if va is None else _subset(dataset, va),
              checkpoint_dir=out / "final", resume=resume, loss_fn=loss_fn, num_classes=len(class_names),
              class_names=class_names)
    path = save_checkpoint(out / "model.pt", model, model_config=mcfg if dataclasses.is_dataclass(mcfg) else None,
                           class_names=class_names, label_scheme=getattr(dataset, "label_scheme", None),
                           beta=res.beta, train_config=dataclasses.asdict(train_config), protocol=protocol,
                           history=res.history, trained_on=f"all {len(idx)} samples" +
                           (f" minus validation subjects {val_subj}" if val_subj else ""), **checkpoint_extra)
    return {"path": str(path.name), "beta": res.beta, "n_train": int(len(idx)), "best_epoch": res.best_epoch,
            "_model": model}


def _write_predictions(path, preds, subjects, datasets, clips, class_names):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["fold", "index", "dataset", "subject", "clip", "y_true", "y_pred", "true_name", "pred_name"]
               + [f"p_{c}" for c in class_names])
    for k, p in enumerate(preds):
        for i, yt, yp, pr in zip(p["index"], p["y_true"], p["y_pred"], p["probabilities"]):
            i = int(i)
            w.writerow([k + 1, i, datasets[i], subjects[i], clips[i], int(yt), int(yp), class_names[int(yt)],
                        class_names[int(yp)]] + [f"{float(x):.5f}" for x in pr])
    atomic_write_text(path, buf.getvalue())


def _plots(out, pooled, class_names, histories, fold_records, protocol, model, beta, attn_set, batch_size) -> dict:
    from psyau_graph.viz.training import plot_confusion, plot_curves, plot_fold_bars

    paths = {
        "confusion": plot_confusion(pooled["confusion"], class_names, out / "confusion.png",
                                    title=f"{protocol}: pooled predictions  UF1 {pooled['uf1']:.3f}  UAR {pooled['uar']:.3f}"),
        "curves": plot_curves(histories, out / "curves.png", title=f"{protocol}: training curves"),
        "folds": plot_fold_bars(fold_records, out / "folds.png", pooled=pooled, title=f"{protocol}: per-fold scores"),
    }
    if model is not None:
        p = _plot_attention(model, attn_set, beta, batch_size, out / "attention.png")
        if p is not None:
            paths["attention"] = p
    return {k: Path(v).name for k, v in paths.items()}
