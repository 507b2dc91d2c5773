"""The node dataset cache (key, invalidation) and the warm executor's preloading of it."""
from __future__ import annotations

import json
import os

import pytest
import torch

from psyau_graph.federated.flower import node_cache
from psyau_graph.federated.flower.node_cache import DatasetCache, file_signature
from psyau_graph.federated.task import make_task, make_toy_data

TOY = {"name": "toy"}


def _bump_mtime(path, seconds=10):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_second_get_is_a_hit_and_returns_the_same_object(tmp_path):
    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5)
    cache = DatasetCache()
    a = cache.get(make_task(TOY), TOY, f.parent)
    b = cache.get(make_task(TOY), TOY, f.parent)
    assert b is a
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(a["x"], torch.load(f, weights_only=True)["x"])


def test_changed_file_is_loaded_again_and_the_stale_entry_dropped(tmp_path):
    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5, seed=0)
    cache = DatasetCache()
    old = cache.get(make_task(TOY), TOY, f.parent)
    make_toy_data(f, subjects=2, per_subject=5, seed=1)  # same size, new content
    _bump_mtime(f)  # a rewrite within the file system's mtime granularity still differs
    new = cache.get(make_task(TOY), TOY, f.parent)
    assert new is not old and not torch.equal(new["x"], old["x"])
    assert (cache.hits, cache.misses) == (0, 2)
    assert len(cache.entries) == 1  # the stale entry is gone


def test_touching_a_file_or_adding_one_changes_the_key(tmp_path):
    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5)
    k0 = DatasetCache.key(f.parent, TOY)
    assert DatasetCache.key(f.parent, TOY) == k0
    _bump_mtime(f)
    k1 = DatasetCache.key(f.parent, TOY)
    assert k1 != k0
    (f.parent / "sub").mkdir()
    (f.parent / "sub" / "extra.npy").write_bytes(b"x")
    k2 = DatasetCache.key(f.parent, TOY)
    assert k2 != k1 and ("sub/extra.npy", 1) in [s[:2] for s in k2[2]]


def test_key_includes_the_task_spec_and_resolved_path(tmp_path):
    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5)
    cache = DatasetCache()
    cache.get(make_task(TOY), TOY, f.parent)
    other = {"name": "toy", "hidden": 4}
    cache.get(make_task(other), other, f.parent)
    assert cache.misses == 2 and len(cache.entries) == 2
    # the same folder spelled differently is the same entry; the file itself is another path
    cache.get(make_task(TOY), TOY, str(f.parent) + "/../lab")
    assert cache.hits == 1
    assert DatasetCache.key(f, TOY)[0] != DatasetCache.key(f.parent, TOY)[0]


def test_capacity_drops_the_least_recently_used(tmp_path):
    paths = [make_toy_data(tmp_path / f"lab{i}" / "toy.pt", subjects=2, per_subject=5).parent
             for i in range(3)]
    cache = DatasetCache(capacity=2)
    for p in paths[:2]:
        cache.get(make_task(TOY), TOY, p)
    cache.get(make_task(TOY), TOY, paths[0])  # lab0 now the most recent
    cache.get(make_task(TOY), TOY, paths[2])  # drops lab1
    assert sorted(k[0] for k in cache.entries) == sorted(str(p.resolve()) for p in (paths[0], paths[2]))


def test_on_miss_reports_path_and_spec_only_on_a_load(tmp_path):
    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5)
    cache, seen = DatasetCache(), []
    cache.on_miss = lambda path, spec: seen.append((path, spec))
    cache.get(make_task(TOY), TOY, f.parent)
    cache.get(make_task(TOY), TOY, f.parent)
    assert seen == [(str(f.parent), TOY)]


def test_a_hit_adopts_the_dataset_classes():
    class Task:
        def __init__(self):
            self.adopted = None

        def load_dataset(self, path):
            return {"n": 1}

        def adopt(self, ds):
            self.adopted = ds

    cache = DatasetCache()
    cache.entries[("p", "s", ())] = {"n": 5}
    cache.key = lambda path, spec: ("p", "s", ())
    t = Task()
    assert cache.get(t, {}, "p") == {"n": 5} and t.adopted == {"n": 5}


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        file_signature(tmp_path / "nope")


def test_executor_preloads_what_a_child_reported_and_a_fork_inherits_it(tmp_path, monkeypatch):
    from psyau_graph.federated.flower.warm_exec import ForkClientAppExecutor

    f = make_toy_data(tmp_path / "lab" / "toy.pt", subjects=2, per_subject=5)
    monkeypatch.setattr(node_cache, "CACHE", DatasetCache())
    ex = ForkClientAppExecutor()
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    os.write(ex._wfd, (json.dumps({"path": str(f.parent), "task_spec": TOY}) + "\n").encode())
    ex.reconcile()
    assert ex.preloaded == [(str(f.parent), node_cache.spec_key(TOY))]
    assert ex.warmed == [node_cache.spec_key(TOY)]  # the network was built once, here
    assert torch.equal(torch.get_rng_state(), rng)  # without touching the random state
    assert torch.get_num_threads() == threads  # restored after loading at 1 thread
    assert (node_cache.CACHE.hits, node_cache.CACHE.misses) == (0, 0)  # a preload counts as neither
    # reported again (another child's miss) while the files are unchanged: nothing reloaded
    os.write(ex._wfd, (json.dumps({"path": str(f.parent), "task_spec": TOY}) + "\n").encode())
    ex.reconcile()
    assert len(ex.preloaded) == 1 and len(ex.warmed) == 1
    pid = os.fork()
    if pid == 0:  # a forked task finds the dataset in its inherited cache
        ok = False
        try:
            node_cache.CACHE.get(make_task(TOY), TOY, f.parent)
            ok = (node_cache.CACHE.hits, node_cache.CACHE.misses) == (1, 0)
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # a changed file: the next report loads it again
    _bump_mtime(f)
    os.write(ex._wfd, (json.dumps({"path": str(f.parent), "task_spec": TOY}) + "\n").encode())
    ex.reconcile()
    assert len(ex.preloaded) == 2 and len(node_cache.CACHE.entries) == 1


def test_executor_reports_a_failed_preload_once(tmp_path, monkeypatch, capsys):
    from psyau_graph.federated.flower.warm_exec import ForkClientAppExecutor

    monkeypatch.setattr(node_cache, "CACHE", DatasetCache())
    ex = ForkClientAppExecutor()
    line = (json.dumps({"path": str(tmp_path / "missing"), "task_spec": TOY}) + "\n").encode()
    os.write(ex._wfd, line + line)
    ex.reconcile()
    err = capsys.readouterr().err
    assert err.count("could not preload") == 1 and "missing" in err
    assert ex.preloaded == [] and not node_cache.CACHE.entries


def test_executor_builds_a_reported_network_once_in_its_own_process(tmp_path):
    """In a fresh process with the executor's imports, the first FedPsyAU build generates
    PyG's propagate code; after the executor's warm-up a forked child finds it done."""
    import subprocess
    import sys

    code = r'''
import json, os, sys
from psyau_graph.federated.flower import warm_exec, node_cache
warm_exec._preload()
gen = "psyau_graph.nn.dpk_gat_conv_DPKGATConv_propagate"
before = gen in sys.modules
ex = warm_exec.ForkClientAppExecutor()
spec = {"name": "fedpsyau", "model_config": {"num_classes": 3}}
os.write(ex._wfd, (json.dumps({"path": sys.argv[1], "task_spec": spec}) + "\n").encode())
ex.reconcile()
pid = os.fork()
if pid == 0:
    os._exit(0 if gen in sys.modules else 1)
_, st = os.waitpid(pid, 0)
print(json.dumps({"before": before, "child": os.waitstatus_to_exitcode(st) == 0,
                  "warmed": ex.warmed, "preloaded": len(ex.preloaded)}))
'''
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "no-such-cache")],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # the data path does not exist (preload fails, said once) but the network is still warmed
    assert out == {"before": False, "child": True, "warmed": [node_cache.spec_key(
        {"name": "fedpsyau", "model_config": {"num_classes": 3}})], "preloaded": 0}
    assert "could not preload" in r.stderr
