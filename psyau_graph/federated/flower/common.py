"""Run configuration shared by the Flower ServerApp and ClientApp.

Flower passes a flat ``run_config`` (``[tool.flwr.app.config]`` of the app's
pyproject, overridable with ``flwr run --run-config``) to both sides. We map the
:class:`~psyau_graph.federated.config.FederatedConfig` fields onto kebab-case keys:

======================  ==============================================
key                     meaning
======================  ==============================================
``strategy``            fedavg | fedprox | p-fedprox | fedrep | fedas | ellp
``clients``             K (expected number of SuperNodes)
``rounds``              R
``local-epochs``        E
``lr``, ``batch-size``  local optimiser
``mu``, ``theta``       α4 and θ
``seed``, ``repeat``    seeds (model init, splits, local training)
``share-bn-stats``      share BatchNorm statistics (default false: FedBN)
``min-clients``         accepted updates needed per round
``task``                JSON of the task spec (``{"name": "fedpsyau", ...}``)
``data``                simulation only: the cache every virtual node partitions
``out``                 server side: folder for metrics.json/csv and plots
``timeout``             seconds the server waits for replies per round
``resume``              server: continue from ``out/federation_state.pt``
``client-state``        simulation: folder where clients keep their local state
                        (deployment: each node's own ``state-dir`` node config)
``grid-poll-interval``  seconds between the server's pulls for replies (0 = the Grid's own)
``pack-arrays``         send each message's tensors as one array per dtype (deployment)
``dp-noise-multiplier`` σ of client-level DP (0 = off); ``dp-clipping-norm``, ``dp-delta``
``aggregation``         mean | median | trimmed-mean; ``trim-fraction``, ``norm-bound``
``personal-prefixes``   FedRep/FedAS/ELLP: comma list kept on the client ("" = task's head)
``head-epochs``         FedRep head epochs (0 = default max(1, E // 5)); ``align-epochs``: FedAS
======================  ==============================================

Node config (per SuperNode): ``data-path`` (the node's own cache, deployment),
``partition-id`` (the lab's stable client index) / ``num-partitions`` (set by the
simulation runtime), ``state-dir`` (deployment: the lab's folder for its local-state
files, needed to resume).
"""
from __future__ import annotations

import json
from dataclasses import fields

from ..config import FederatedConfig, parse_min_clients

_CFG_KEYS = {f.name: f.name.replace("_", "-") for f in fields(FederatedConfig)
             if f.name not in ("exclude_prefixes", "partition_seed", "personal_prefixes",
                               "head_epochs")}


def to_run_config(cfg: FederatedConfig, task_spec: dict, *, data: str = "", out: str = "",
                  repeat: int = 0, timeout: float = 600.0, resume: bool = False,
                  client_state: str = "", grid_poll_interval: float = 0.0,
                  pack_arrays: bool = False) -> dict:
    """Flat Flower run config for ``cfg`` (values are str/int/float/bool only)."""
    rc = {key: getattr(cfg, name) for name, key in _CFG_KEYS.items()}
    rc.update({"task": json.dumps(task_spec), "data": str(data), "out": str(out),
               "repeat": int(repeat), "timeout": float(timeout), "resume": bool(resume),
               "client-state": str(client_state),
               "grid-poll-interval": float(grid_poll_interval), "pack-arrays": bool(pack_arrays),
               "exclude-prefixes": ",".join(cfg.exclude_prefixes),
               "personal-prefixes": ",".join(cfg.personal_prefixes),
               "head-epochs": 0 if cfg.head_epochs is None else int(cfg.head_epochs),
               "min-clients": "all" if cfg.min_clients is None else str(cfg.min_clients)})
    return rc


def _bool(v) -> bool:
    if isinstance(v, str):
        if v.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"run config: expected true/false, got {v!r}")
        return v.lower() in ("true", "1")
    return bool(v)


def from_run_config(rc) -> tuple[FederatedConfig, dict, dict]:
    """``(config, task_spec, extras)`` from a run config; ``extras`` has data/out/repeat/timeout,
    resume, client-state, grid_poll_interval and pack_arrays."""
    kw = {}
    for name, key in _CFG_KEYS.items():
        if key in rc:
            kw[name] = rc[key]
    if "min_clients" in kw:
        kw["min_clients"] = parse_min_clients(kw["min_clients"])
    for name in ("clients", "rounds", "local_epochs", "batch_size", "repeats", "seed", "align_epochs"):
        if name in kw:
            kw[name] = int(kw[name])
    for name in ("mu", "theta", "lr", "weight_decay", "train_frac", "dp_noise_multiplier",
                 "dp_clipping_norm", "dp_delta", "trim_fraction", "norm_bound"):
        if name in kw:
            kw[name] = float(kw[name])
    if "share_bn_stats" in kw:
        kw["share_bn_stats"] = bool(kw["share_bn_stats"])
    prefixes = str(rc.get("exclude-prefixes", "") or "")
    kw["exclude_prefixes"] = tuple(p for p in prefixes.split(",") if p)
    personal = str(rc.get("personal-prefixes", "") or "")
    kw["personal_prefixes"] = tuple(p for p in personal.split(",") if p)
    head = int(rc.get("head-epochs", 0) or 0)
    kw["head_epochs"] = head if head > 0 else None
    cfg = FederatedConfig(**kw)
    task_spec = json.loads(str(rc.get("task", '{"name": "fedpsyau"}')))
    extras = {"data": str(rc.get("data", "")), "out": str(rc.get("out", "")),
              "repeat": int(rc.get("repeat", 0)), "timeout": float(rc.get("timeout", 600.0)),
              "resume": _bool(rc.get("resume", False)),
              "client-state": str(rc.get("client-state", "") or ""),
              "grid_poll_interval": float(rc.get("grid-poll-interval", 0.0)),
              "pack_arrays": _bool(rc.get("pack-arrays", False))}
    return cfg, task_spec, extras
