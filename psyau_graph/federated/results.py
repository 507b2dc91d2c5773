"""Per-client, per-round records: summary tables and atomic JSON/CSV output.

A *record* is one client in one round of one repeat of one strategy::

    {"strategy", "repeat", "round", "client", "status" ("ok"|"failed"|"rejected"),
     "n_train", "n_test", "train_loss", "loss", "uf1", "uar", "acc", "error" (not ok only)}

``loss``/``uf1``/``uar``/``acc`` are measured on the client's 30 % test split with the
model the client holds after the round (FedAvg/FedProx: the new global model with the
client's own BatchNorm statistics; P-FedProx: its personalised model; local: its own).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

FIELDS = ("strategy", "repeat", "round", "client", "status", "n_train", "n_test",
          "train_loss", "loss", "uf1", "uar", "acc", "error")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return _clean(v.item())
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(_clean(obj), indent=2))


def write_csv(path, records: Iterable[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: r.get(k, "") for k in FIELDS})
    return atomic_write_text(path, buf.getvalue())


def summarize(records: list[dict]) -> dict:
    """Final-round metrics per strategy and client, mean ± std over repeats.

    Only records with ``status == "ok"`` (the client trained and its update was
    accepted in that round) enter a client's metrics and the headline mean: a client
    that failed or was rejected in the final round of a repeat holds a stale model, and
    its score there is reported in the records but never averaged.

    Returns:
        ``{strategy: {"clients": {client: {"uf1", "uf1_std", "uar", "uar_std", "loss",
        "trained", "failed", "why"}}, "rounds", "mean": {"uf1", "uar", "clients"}}}`` —
        ``trained``/``failed``: rounds (over all repeats) the client trained / failed or was
        rejected; ``why``: the distinct reasons; ``mean``: unweighted mean over the clients
        with at least one usable final-round record (listed in ``mean["clients"]``).
    """
    out: dict = {}
    strategies = sorted({r["strategy"] for r in records})
    for s in strategies:
        rs = [r for r in records if r["strategy"] == s]
        last = max(r["round"] for r in rs)
        final = [r for r in rs if r["round"] == last and r.get("status", "ok") == "ok"]
        clients = {}
        for c in sorted({r["client"] for r in rs}):
            cr = [r for r in final if r["client"] == c]
            allc = [r for r in rs if r["client"] == c]
            vals = {k: np.array([r[k] for r in cr if r.get(k) is not None], dtype=float)
                    for k in ("uf1", "uar", "loss")}

            def stat(k, f):
                return float(f(vals[k])) if vals[k].size and not np.isnan(vals[k]).all() else math.nan
            clients[c] = {"uf1": stat("uf1", np.nanmean), "uf1_std": stat("uf1", np.nanstd),
                          "uar": stat("uar", np.nanmean), "uar_std": stat("uar", np.nanstd),
                          "loss": stat("loss", np.nanmean),
                          "trained": sum(r.get("status", "ok") == "ok" for r in allc),
                          "failed": sum(r.get("status", "ok") != "ok" for r in allc),
                          "why": sorted({str(r["error"]) for r in allc if r.get("error")})}
        usable = [c for c, v in clients.items() if not math.isnan(v["uf1"])]
        mean = {k: float(np.mean([clients[c][k] for c in usable])) if usable else math.nan
                for k in ("uf1", "uar")}
        mean["clients"] = usable
        out[s] = {"clients": clients, "rounds": last, "mean": mean}
    return out


def summary_table(summary: dict) -> str:
    """Plain-text table: one row per strategy, mean UF1/UAR and per-client UF1."""
    clients = sorted({c for s in summary.values() for c in s["clients"]})
    head = f"{'strategy':<10} {'UF1':>6} {'UAR':>6} " + " ".join(f"{'c' + str(c):>6}" for c in clients)
    lines = [head, "-" * len(head)]
    for s, v in summary.items():
        cells = " ".join(f"{v['clients'].get(c, {}).get('uf1', math.nan):6.3f}" for c in clients)
        lines.append(f"{s:<10} {v['mean']['uf1']:6.3f} {v['mean']['uar']:6.3f} {cells}")
    return "\n".join(lines)
