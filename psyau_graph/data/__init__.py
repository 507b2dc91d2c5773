"""Data sets: annotation readers, label schemes, frame layouts, the synthetic set,
the PyG dataset over the preprocessing cache, and subject-aware splits.

Modules:
    annotations  ``read_annotations(path, dataset)`` → standard table, ``report_summary``
    formulas     formula cells of sheets (``eval_formula``, ``with_formulas``)
    labels       ``LABEL_SCHEMES``, ``class_names``, ``apply_label_scheme``
    layouts      ``LAYOUTS``, ``find_clip_frames(root, row, layout=None)``
    synth        ``generate_synthetic(out_dir, ...)`` (``psyau synth``)
    dataset      ``MEDataset(cache_dir, label_scheme=None)``
    splits       ``loso_splits``, ``subject_kfold``, ``repeated_random_splits``, ``client_partition``

Submodules and names are imported eagerly (``from psyau_graph.data import annotations``
gives the module), except :class:`MEDataset`: its module imports torch and PyG
(about 3.4 s against 0.4 s for the annotation reader, measured on CPU), which sheet
reading and ``psyau synth`` do not need, so ``MEDataset`` and the ``dataset`` module
are loaded on first use.
"""
import importlib

from . import annotations, formulas, labels, layouts, splits, synth
from .annotations import DATASETS, AnnotationError, read_annotations
from .labels import CLASS_NAMES, LABEL_SCHEMES, apply_label_scheme, class_names
from .layouts import LAYOUTS, find_clip_frames
from .splits import client_partition, client_subjects, loso_splits, repeated_random_splits, subject_kfold
from .synth import SynthConfig, generate_synthetic

__all__ = [
    "annotations", "formulas", "labels", "layouts", "splits", "synth", "dataset",
    "DATASETS", "AnnotationError", "read_annotations",
    "CLASS_NAMES", "LABEL_SCHEMES", "apply_label_scheme", "class_names",
    "LAYOUTS", "find_clip_frames",
    "client_partition", "client_subjects", "loso_splits", "repeated_random_splits", "subject_kfold",
    "SynthConfig", "generate_synthetic", "MEDataset",
]


def __getattr__(name: str):
    """``MEDataset`` / ``dataset`` on first use (torch + PyG import, see the module docstring)."""
    if name == "dataset":
        return importlib.import_module(f"{__name__}.dataset")
    if name == "MEDataset":
        return importlib.import_module(f"{__name__}.dataset").MEDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
