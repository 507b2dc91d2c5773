"""A per-process cache of a node's loaded dataset, keyed so that it is never served stale.

A ClientApp loads its node's data (``data-path``) for every message it handles. In one
long-lived process (Flower's simulation actors) that is done once; in the warm executor
(:mod:`~psyau_graph.federated.flower.warm_exec`) every message runs in a process forked
from one parent, so a dataset loaded by a child is lost when the child exits. The parent
therefore loads the dataset once it knows what to load (a child reports its miss, see
:attr:`DatasetCache.on_miss`) and every later child inherits the loaded dataset
copy-on-write.

Key: ``(resolved data path, task spec, file signature)``. The task spec is part of the
key because the task decides how the files are read (label scheme, toy vs clip cache).
The signature is ``(relative path, size, mtime_ns)`` of every file under the data path
(or of the file itself), taken on every :meth:`DatasetCache.get`: a changed, added or
removed file gives a new key and the dataset is loaded again (the stale entry for that
path and spec is dropped). What is cached is only the node's own data as read from its
files; no run state (``Context.state``, models, optimiser state) is ever cached here, and
the model is built in each task as before, so results do not depend on the cache.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable


def file_signature(path: str | Path) -> tuple[tuple[str, int, int], ...]:
    """``((relative path, size, mtime_ns), ...)`` of every file under ``path`` (sorted), or
    of ``path`` itself when it is a file. Raises ``FileNotFoundError`` naming ``path``."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return (("", st.st_size, st.st_mtime_ns),)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: data path does not exist")
    out = []
    for root, dirs, files in os.walk(p):
        dirs.sort()
        for name in files:
            f = Path(root) / name
            st = f.stat()
            out.append((str(f.relative_to(p)), st.st_size, st.st_mtime_ns))
    return tuple(sorted(out))


def spec_key(task_spec: dict) -> str:
    """A canonical string of a task spec (JSON, sorted keys)."""
    return json.dumps(task_spec, sort_keys=True, default=str)


class DatasetCache:
    """Loaded datasets by ``(path, task spec, file signature)``; at most ``capacity``
    entries (least recently used dropped first).

    Attributes:
        hits, misses: counts of :meth:`get` calls served from the cache / loaded.
        on_miss: called as ``on_miss(path, task_spec)`` after a load (default ``None``);
            the warm executor's children use it to ask their parent to preload.
    """

    def __init__(self, capacity: int = 4):
        self.capacity = int(capacity)
        self.entries: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.on_miss: Callable[[str, dict], None] | None = None

    @staticmethod
    def key(path: str | Path, task_spec: dict) -> tuple:
        real = str(Path(path).resolve())
        return (real, spec_key(task_spec), file_signature(real))

    def get(self, task, task_spec: dict, path: str | Path):
        """The dataset ``task.load_dataset(path)`` for this spec and the files as they are now.

        On a hit the task adopts the dataset (its number of classes), as a fresh load does."""
        key = self.key(path, task_spec)
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            dataset = self.entries[key]
            if hasattr(task, "adopt"):
                task.adopt(dataset)
            return dataset
        dataset = self.load(task, key, path)
        self.misses += 1
        if self.on_miss is not None:
            self.on_miss(str(path), task_spec)
        return dataset

    def load(self, task, key: tuple, path: str | Path):
        """Load ``path`` with ``task`` and store it under ``key`` (dropping entries of the
        same path and spec with an older signature)."""
        dataset = task.load_dataset(path)
        for k in [k for k in self.entries if k[:2] == key[:2]]:
            del self.entries[k]
        self.entries[key] = dataset
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return dataset

    def preload(self, task_spec: dict, path: str | Path) -> bool:
        """Load ``path`` for ``task_spec`` unless the current files are cached already;
        ``True`` when it loaded. Does not count as a hit or miss."""
        from ..task import make_task
        key = self.key(path, task_spec)
        if key in self.entries:
            return False
        self.load(make_task(task_spec), key, path)
        return True


#: this process's cache (the ClientApp's, inherited by the warm executor's children)
CACHE = DatasetCache()
