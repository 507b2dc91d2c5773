"""Data sets: annotation readers, label schemes, frame layouts, the synthetic set,
the PyG dataset over the preprocessing cache, and subject-aware splits.

Modules:
    annotations  ``read_annotations(path, dataset)`` → standard table
    labels       ``LABEL_SCHEMES``, ``class_names``, ``apply_label_scheme``
    layouts      ``LAYOUTS``, ``find_clip_frames(root, row, layout=None)``
    synth        ``generate_synthetic(out_dir, ...)`` (``psyau synth``)
    dataset      ``MEDataset(cache_dir, label_scheme=None)``
    splits       ``loso_splits``, ``subject_kfold``, ``repeated_random_splits``, ``client_partition``

Names are imported lazily (``from psyau_graph.data import MEDataset`` works without
importing PyG until it is used).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "read_annotations": "annotations", "AnnotationError": "annotations", "DATASETS": "annotations",
    "LABEL_SCHEMES": "labels", "CLASS_NAMES": "labels", "class_names": "labels", "apply_label_scheme": "labels",
    "LAYOUTS": "layouts", "find_clip_frames": "layouts",
    "generate_synthetic": "synth", "SynthConfig": "synth",
    "MEDataset": "dataset",
    "loso_splits": "splits", "subject_kfold": "splits", "repeated_random_splits": "splits",
    "client_partition": "splits", "client_subjects": "splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
