"""Checkpoint files: atomic save/load, and rebuilding a model from its stored config.

A checkpoint is a ``torch.save`` dict. Keys written by :func:`save_checkpoint`:

* ``format`` — ``"psyau_graph.checkpoint/1"``
* ``model`` — the model's ``state_dict``
* ``model_config`` — ``{"class": "<module>:<qualname>", "fields": {...}}`` of the
  model's config dataclass (so :func:`build_model` can rebuild it), or ``None``
* any extra keys passed by the caller (optimizer, scheduler, β schedule and RNG
  states, epoch, history, class names, label scheme, β used at evaluation ...)

Writes go to a temporary file in the target folder followed by ``os.replace`` so a
killed process never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT", "atomic_torch_save", "save_checkpoint", "load_checkpoint", "config_to_dict",
           "config_from_dict", "build_model"]

FORMAT = "psyau_graph.checkpoint/1"


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def config_to_dict(config: Any) -> dict | None:
    """Serialise a config dataclass as ``{"class": "module:QualName", "fields": {...}}``."""
    if config is None:
        return None
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"model config must be a dataclass instance, got {type(config).__name__}")
    cls = type(config)
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "fields": dataclasses.asdict(config)}


def config_from_dict(d: dict) -> Any:
    """Inverse of :func:`config_to_dict` (lists become tuples where the field default is a tuple)."""
    try:
        module_name, qualname = d["class"].split(":")
        fields = dict(d["fields"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed model_config in checkpoint: {d!r}") from exc
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    known = {f.name: f for f in dataclasses.fields(obj)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"checkpoint config has fields unknown to {qualname}: {unknown}")
    for name, f in known.items():
        if name in fields and isinstance(fields[name], list):
            default = f.default if f.default is not dataclasses.MISSING else None
            if isinstance(default, tuple):
                fields[name] = tuple(fields[name])
    return obj(**fields)


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, model_config: Any = None,
                    **extra: Any) -> Path:
    """Atomically write ``model`` (state dict), its config and ``extra`` entries to ``path``.

    Args:
        path: file to write (parent folders are created).
        model: the network; its ``state_dict()`` is stored.
        model_config: the config dataclass (default: ``model.config`` if present).
        **extra: further JSON/torch-serialisable entries (optimizer state, epoch, ...).
    """
    if model_config is None:
        model_config = getattr(model, "config", None)
        if model_config is not None and not dataclasses.is_dataclass(model_config):
            model_config = None
    reserved = {"format", "model", "model_config"} & set(extra)
    if reserved:
        raise ValueError(f"reserved checkpoint keys passed as extra: {sorted(reserved)}")
    obj = {"format": FORMAT, "model": model.state_dict(), "model_config": config_to_dict(model_config), **extra}
    return atomic_torch_save(obj, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (clear errors for bad files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # corrupt / not a torch file
        raise ValueError(f"could not read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "model" not in obj:
        raise ValueError(f"{path} is not a psyau_graph checkpoint (expected format {FORMAT!r})")
    return obj


def build_model(ckpt: dict | str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model stored in a checkpoint and load its weights (eval mode).

    The model class is looked up as ``FedPsyAU`` for a ``FedPsyAUConfig``; other config
    classes must name their model with a ``model_class`` entry (``"module:QualName"``)
    in the checkpoint.

    Returns:
        ``(model, checkpoint_dict)``.
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if ckpt.get("model_config") is None:
        raise ValueError("checkpoint holds no model_config; cannot rebuild the model")
    config = config_from_dict(ckpt["model_config"])
    model_class = ckpt.get("model_class")
    if model_class is None:
        from psyau_graph.nn import FedPsyAU  # heavy import only here

        cls = FedPsyAU
    else:
        module_name, qualname = model_class.split(":")
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    model = cls(config)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
