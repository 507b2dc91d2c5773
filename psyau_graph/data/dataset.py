"""PyG dataset over the preprocessing cache.

``psyau preprocess`` writes one file per clip, ``<cache>/clips/<dataset>/<subject>/<clip>.pt``
(``rois`` (65, 3, 5, 5), ``flow28`` (3, 28, 28), ``keypoints`` (65, 2), ``flow`` (3, H, W)
float16, ``meta`` dict). :class:`MEDataset` reads them once, applies a label scheme to
``meta["emotion"]``, and keeps every sample in one collated in-memory store, saved as
``<cache>/processed/medataset_<scheme>[_<datasets>]_<hash>.pt`` (+ ``.json`` sidecar). The hash covers
the scheme, the data set filter and every clip file's path, size and modification
time, so adding, removing or rewriting a clip builds a new store.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import torch
from torch_geometric.data import Data, InMemoryDataset

from .labels import class_names as scheme_class_names
from .labels import map_emotion

#: version of the in-memory store's layout; 2 added ``au_known``
PROCESSED_VERSION = 2


def _atomic_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class MEDataset(InMemoryDataset):
    r"""Micro-expression clips from a preprocessing cache, one graph per clip.

    Each item is a :class:`~torch_geometric.data.Data` with 65 nodes (keypoints):

    Shapes:
        - **x**: (65, 3, 5, 5) ROI patches of (u, v, strain) around each keypoint
        - **pos**: (65, 2) keypoint (x, y) in the 128×128 crop
        - **flow**: (1, 3, 28, 28) whole-face (u, v, strain) map
        - **au**: (1, 12) float multi-hot over :data:`psyau_graph.au.AUS`
        - **au_known**: (1, 12) float, 1 where the AU label is known, 0 where it is not
          (from ``meta["aus_coding"]``, see :func:`psyau_graph.au.au_known_mask`; a clip
          file without the field counts as fully coded)
        - **y**: (1,) long class index
        - **subject**, **dataset**, **clip**, **emotion**: str

    A PyG ``DataLoader`` batch of B clips has ``x`` (B·65, 3, 5, 5), ``pos`` (B·65, 2),
    ``flow`` (B, 3, 28, 28), ``au`` (B, 12), ``au_known`` (B, 12), ``y`` (B,) and lists of B strings.

    Args:
        cache_dir: the cache root (holds ``clips/``).
        label_scheme: a key of :data:`~psyau_graph.data.labels.LABEL_SCHEMES`; clips whose
            emotion the scheme drops are excluded and counted in :attr:`excluded`.
            None (default): every distinct emotion (lower-cased) is a class, sorted.
        datasets: only clips of these data set names (default None: all).
        transform: PyG transform applied on access (default None).
        rebuild: rebuild the in-memory store even when a matching one exists (default False).
        progress: tqdm bar while reading clips (default None: only on a terminal).
    """

    def __init__(self, cache_dir, label_scheme: str | None = None, *, datasets=None, transform=None,
                 rebuild: bool = False, progress: bool | None = None):
        self.cache_dir = Path(cache_dir)
        self.label_scheme = label_scheme
        if label_scheme is not None:
            scheme_class_names(label_scheme)  # validates the name
        clips_dir = self.cache_dir / "clips"
        if not clips_dir.is_dir():
            raise FileNotFoundError(f"no clip cache at {clips_dir} (run `psyau preprocess` first)")
        wanted = None if datasets is None else {datasets} if isinstance(datasets, str) else set(datasets)
        files = sorted(p for p in clips_dir.glob("*/*/*.pt") if wanted is None or p.parts[-3] in wanted)
        if not files:
            raise ValueError(f"no clip files (*.pt) under {clips_dir}"
                             + (f" for datasets {sorted(wanted)}" if wanted else ""))
        super().__init__(None, transform)
        key = self._fingerprint(files, wanted)
        tag = (label_scheme or "emotions") + ("_" + "-".join(sorted(wanted)) if wanted else "")
        self._tag = tag
        store = self.cache_dir / "processed" / f"medataset_{tag}_{key}.pt"
        side = store.with_suffix(".json")
        if rebuild or not (store.is_file() and side.is_file()):
            self._build(files, store, side, progress)
        info = json.loads(side.read_text())
        self.load(str(store))
        self._class_names: list[str] = info["class_names"]
        self._subjects: list[str] = info["subjects"]
        self.excluded: dict[str, int] = info["excluded"]
        self.store_path = store

    # ------------------------------------------------------------------ building
    def _fingerprint(self, files, wanted) -> str:
        h = hashlib.sha1(f"v{PROCESSED_VERSION}|{self.label_scheme}|{sorted(wanted or [])}".encode())
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(self.cache_dir).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def _build(self, files, store: Path, side: Path, progress) -> None:
        from tqdm.auto import tqdm

        from ..au import au_known_mask, aus_to_multihot, check_au_coding
        from ..preprocess.batch import load_clip_cache

        items, excluded = [], {}
        for p in tqdm(files, desc="reading clip cache", unit="clip", disable=None if progress is None else not progress):
            d = load_clip_cache(p)
            meta = d["meta"]
            for k in ("dataset", "subject", "clip"):
                if not meta.get(k):
                    raise ValueError(f"{p}: meta lacks {k!r}")
            emotion = meta.get("emotion")
            if emotion is None:
                cls = None
            elif self.label_scheme is None:
                cls = str(emotion).strip().lower()
            else:
                cls = map_emotion(emotion, self.label_scheme, meta["dataset"])
            if cls is None:
                excluded[str(emotion)] = excluded.get(str(emotion), 0) + 1
                continue
            items.append((p, d, meta, cls))
        if not items:
            raise ValueError(f"label scheme {self.label_scheme!r} keeps none of the {len(files)} clips "
                             f"under {self.cache_dir / 'clips'} (excluded emotions: {excluded})")
        names = scheme_class_names(self.label_scheme) if self.label_scheme else sorted({c for *_, c in items})
        data_list = []
        for p, d, meta, cls in items:
            aus = meta.get("aus") or []
            coding = check_au_coding(meta.get("aus_coding", "coded"), what=f"{p}: meta aus_coding")
            data_list.append(Data(
                x=torch.as_tensor(d["rois"], dtype=torch.float32),
                pos=torch.as_tensor(d["keypoints"], dtype=torch.float32),
                flow=torch.as_tensor(d["flow28"], dtype=torch.float32).unsqueeze(0),
                au=aus_to_multihot(aus).float().reshape(1, -1),
                au_known=au_known_mask(aus, coding).reshape(1, -1),
                y=torch.tensor([names.index(cls)], dtype=torch.long),
                subject=str(meta["subject"]), dataset=str(meta["dataset"]), clip=str(meta["clip"]),
                emotion=str(meta.get("emotion")), num_nodes=int(d["rois"].shape[0])))
        store.parent.mkdir(parents=True, exist_ok=True)
        stale = re.compile(rf"medataset_{re.escape(self._tag)}_[0-9a-f]{{16}}\.(pt|json)")
        for old in store.parent.iterdir():
            if stale.fullmatch(old.name):
                old.unlink()  # an older store of this scheme and filter (clip set changed)
        tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
        self.save(data_list, str(tmp))
        known = torch.cat([d.au_known for d in data_list])
        _atomic_json(side, {"class_names": names, "subjects": [d.subject for d in data_list],
                            "au_labels_known": int(known.sum()), "au_labels": int(known.numel()),
                            "excluded": excluded, "clips": len(data_list), "label_scheme": self.label_scheme})
        os.replace(tmp, store)

    # ------------------------------------------------------------------ API
    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes of the label scheme (also those absent from the cache)."""
        return len(self._class_names)

    @property
    def subjects(self) -> list[str]:
        """Subject id of every item (respects index selection)."""
        return [self._subjects[i] for i in self.indices()]

    @property
    def au_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(au, au_known)``, both (N, 12) float, of every item (respects index selection)."""
        idx = torch.as_tensor(list(self.indices()), dtype=torch.long)
        return self._data.au[idx], self._data.au_known[idx]

    @property
    def labels(self) -> torch.Tensor:
        """(N,) long class index of every item (respects index selection)."""
        return self._data.y[torch.as_tensor(list(self.indices()), dtype=torch.long)]

    def __repr__(self) -> str:
        return f"MEDataset({len(self)}, classes={self.num_classes}, scheme={self.label_scheme!r})"
