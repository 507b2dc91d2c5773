"""Training and evaluation: metrics, the fit loop, checkpoints and evaluation protocols.

Framework-free (no CLI, no federation code)::

    from psyau_graph.train import TrainConfig, fit, evaluate, run_protocol, uf1, uar
"""
from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .fit import FitResult, TrainConfig, evaluate, fit, train_one_epoch
from .memory import keep_freed_memory
from .metrics import accuracy, au_f1, classification_report, confusion_matrix, uar, uf1
from .protocols import parse_protocol, run_protocol

__all__ = [
    "TrainConfig", "FitResult", "fit", "train_one_epoch", "evaluate",
    "run_protocol", "parse_protocol",
    "save_checkpoint", "load_checkpoint", "build_model",
    "keep_freed_memory",
    "uf1", "uar", "accuracy", "confusion_matrix", "classification_report", "au_f1",
]
