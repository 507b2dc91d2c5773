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

Reading never runs code from the file: :func:`safe_torch_load` (used by every loader
of the package) calls ``torch.load(..., weights_only=True)``, which accepts tensors,
containers and plain values only, plus the few NumPy types the RNG state of a
training checkpoint needs (:data:`SAFE_NUMPY_GLOBALS`). Anything else in the pickle
is refused with a one-line :class:`UnsafeFileError` naming the file. The classes a
checkpoint names for rebuilding its model (``model_config["class"]``,
``model_class``) must live inside the ``psyau_graph`` package.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FORMAT", "UnsafeFileError", "safe_torch_load", "atomic_torch_save", "save_checkpoint",
           "load_checkpoint", "config_to_dict", "config_from_dict", "build_model"]

FORMAT = "psyau_graph.checkpoint/1"
_PACKAGE = "psyau_graph"


def _numpy_globals() -> list:
    """NumPy callables/types a pickled ``np.random.get_state()`` or NumPy scalar needs."""
    core = getattr(np, "_core", None) or np.core
    multiarray = core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.uint32, np.int64, np.float64, np.float32, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


#: the only non-torch globals a file may reference (array/scalar reconstruction, dtypes)
SAFE_NUMPY_GLOBALS = _numpy_globals()


class UnsafeFileError(ValueError):
    """A file whose pickle references code outside the allowed data types."""


def safe_torch_load(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load(path, weights_only=True)`` with a one-line error naming ``path``.

    Args:
        path: file written by ``torch.save``.
        what: what the file is meant to be, for the messages (``"checkpoint"`` ...).

    Raises:
        FileNotFoundError: ``path`` is missing.
        UnsafeFileError: the pickle names a global outside tensors, containers, plain
            values and :data:`SAFE_NUMPY_GLOBALS` (such a file could run code; it is
            not unpickled).
        ValueError: the file is not a readable torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(SAFE_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        m = re.search(r"Unsupported global: GLOBAL (\S+)", msg) or re.search(r"Unsupported operand (\S+)", msg)
        detail = f"it references {m.group(1)}" if m else msg.strip().splitlines()[0] if msg.strip() else "unpickling refused"
        raise UnsafeFileError(f"refusing to load {what} {path}: {detail}, which is not a plain tensor/value type "
                              f"(a file like this could run code when loaded)") from None
    except Exception as exc:  # corrupt / not a torch file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not read {what} {path}: {first}") from exc


def _package_attr(ref: str, kind: str) -> Any:
    """Resolve ``"module:QualName"`` to an attribute, only inside the ``psyau_graph`` package."""
    try:
        module_name, qualname = ref.split(":")
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"malformed {kind} reference in checkpoint: {ref!r} (expected 'module:QualName')") from exc
    if module_name != _PACKAGE and not module_name.startswith(_PACKAGE + "."):
        raise ValueError(f"checkpoint names {kind} {ref!r} outside the {_PACKAGE} package; refusing to import it")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        if part.startswith("_"):
            raise ValueError(f"checkpoint names private {kind} {ref!r}; refusing it")
        obj = getattr(obj, part)
    return obj


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
        ref = d["class"]
        fields = dict(d["fields"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed model_config in checkpoint: {d!r}") from exc
    obj = _package_attr(ref, "config class")
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"checkpoint config class {ref!r} is not a dataclass")
    qualname = obj.__qualname__
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
    obj = safe_torch_load(path, "checkpoint")
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
        cls = _package_attr(model_class, "model class")
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"checkpoint model class {model_class!r} is not a torch.nn.Module")
    build_config = _config_for_rebuild(config, ckpt["model"])
    model = cls(build_config)
    model.load_state_dict(ckpt["model"])
    if build_config is not config:
        model.config = config
    model.eval()
    return model, ckpt


def _config_for_rebuild(config: Any, state: dict) -> Any:
    """The config to construct a checkpoint's model with before its weights are loaded.

    A ``FedPsyAUConfig`` whose data prior is a CSV path (``psyau train --prior PATH|auto``)
    names a file on the training machine. The prior's values travel in the state dict
    (``*.gat.{upper,lower,whole}.prior`` buffers), and the AU graphs' structure does not
    depend on the data prior, so when that file is absent here the model is constructed
    with a shipped prior of the same shape and the checkpoint's buffers then replace it
    (``load_state_dict`` is strict). A checkpoint without prior buffers (a setting that
    uses no data prior) is built from its config unchanged.
    The returned model keeps the original config.
    """
    from psyau_graph.priors import SOURCES

    prior = getattr(config, "prior", None)
    if (not isinstance(prior, str) or prior in SOURCES or prior == "uniform"
            or Path(prior).is_file() or not any(k.endswith(".prior") for k in state)):
        return config  # nothing to substitute: the model reads (or fails on) the file itself
    return dataclasses.replace(config, prior=SOURCES[0])
