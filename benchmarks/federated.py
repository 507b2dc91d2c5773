"""Federated engines: wall time per round, in-process vs Flower simulation vs Flower
deployment (loopback), same work, same run; and cost as the number of clients grows.

Part 1 — 3 clients, the paper's network (FedPsyAU) on a small random clip cache, FedAvg,
R rounds of E local epochs. Per-round wall time measured by the server (train + evaluate
of all clients, server aggregation). In-process runs the clients one after the other
(torch with 2 threads, and with 1); simulation runs 2 ClientApp actors (1 CPU, 1 thread
each) in parallel; deployment runs one SuperNode per client over TLS, with warm
ClientApps (``deployment_warm_tls``: process isolation, a forked pre-imported process per
message, every poll on the message path at 0.1 s, the SuperNodes through
``fast_supernode``), with warm ClientApps but Flower's own polling waits
(``deployment_warm_tls_flower_waits``; ``--no-warm-flower-waits`` skips it) and in
Flower's default mode (``deployment``: a fresh flwr-clientapp per message, Flower's
waits; ``--no-cold-deployment`` skips it). The warm runs also record each forked
ClientApp task's wall and CPU seconds and dataset cache hits/misses (from the warm
executors' logs), the CPU seconds of each deployment process over the run (with the
children it reaped: ``process_cpu_s``) and, for the simulation and every deployment, the
whole machine's busy share (``machine_cpu_busy_fraction``); ``--extra-poll-intervals``
repeats the warm deployment with every poll at other intervals. Round 1 is the warm-up (actor/process start, imports);
the median and spread are over rounds 2..R. Start-up (Ray / SuperLink + SuperNodes) is
reported separately. Run twice: a small workload (8 clips per subject, E = 1: a round
takes a fraction of a second, so fixed per-round costs show) with every engine, and a
larger one (16 clips per subject, E = 5) in-process and on the simulation engine.

Part 2 — simulation with 2, 4, 8, 16 small clients (toy MLP task): per-round time and the
peak resident memory of this process plus every process it spawned (Ray workers),
sampled every 0.2 s with psutil.

Usage: python benchmarks/federated.py [--rounds 4] [--large-epochs 5] [--sizes 2,4,8,16]
       [--no-cold-deployment] [--no-warm-flower-waits] [--extra-poll-intervals S ...] [--out PATH]
Writes benchmarks/results/federated.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from psyau_graph.federated.config import FederatedConfig  # noqa: E402
from psyau_graph.federated.flower.deployment import LocalDeployment  # noqa: E402
from psyau_graph.federated.flower.simulation import run_simulation  # noqa: E402
from psyau_graph.federated.run import FederatedRun  # noqa: E402
from psyau_graph.train.memory import keep_freed_memory  # noqa: E402
from psyau_graph.federated.task import FedPsyAUTask, make_toy_data  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402


class PeakRSS:
    """Peak summed RSS (MiB) of this process and all its descendants."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0.0, threading.Event()

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


class MachineCPU:
    """Busy share of the whole machine's CPUs (all processes, psutil's system-wide times)
    between enter and exit: 1.0 means every core was busy the whole time."""

    def __enter__(self):
        self._t0, self.busy_fraction, self.busy_cpu_s = psutil.cpu_times(), None, None
        return self

    def __exit__(self, *exc):
        t1 = psutil.cpu_times()
        total = sum(t1) - sum(self._t0)
        idle = (t1.idle - self._t0.idle) + (getattr(t1, "iowait", 0.0) - getattr(self._t0, "iowait", 0.0))
        self.busy_cpu_s = total - idle
        self.busy_fraction = self.busy_cpu_s / total if total > 0 else None


def _process_cpu(dep: LocalDeployment) -> dict:
    """CPU seconds (user + system) so far of each process the deployment started (key: its
    name) and of each of its descendants (key: ``name/process name``), each with the
    children it has reaped (a warm executor's forked tasks, the
    ServerApp the SuperLink's executor runs); a descendant that exited without being reaped
    is not counted, so this is a lower bound."""
    out = {}
    for name, popen in dep.procs:
        try:
            root = psutil.Process(popen.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for q in procs:
            try:
                t = q.cpu_times()
                key = name if q is root else f"{name}/{q.name()}"
            except psutil.Error:
                continue
            # a process's own time, plus that of the children it has reaped (a live child is
            # in ``procs`` itself; a reaped one only in its parent's children_* times)
            out[key] = out.get(key, 0.0) + t.user + t.system + t.children_user + t.children_system
    return out


def _stats(times):
    steady = [t for t in times[1:] if t is not None] or [t for t in times if t is not None]
    return {"per_round_s": times, "median_s": statistics.median(steady),
            "min_s": min(steady), "max_s": max(steady), "n": len(steady)}


def make_cache(root: Path, clients: int, subjects_per_client: int, clips: int) -> Path:
    from _fed_helpers import make_clip_cache
    subs = [f"s{i:02d}" for i in range(clients * subjects_per_client)]
    return make_clip_cache(root, subjects=subs, clips_per_subject=clips, seed=0)


def split_cache(cache: Path, cfg: FederatedConfig, out: Path) -> list[Path]:
    """One folder per lab holding only its subjects (same partition as the other engines)."""
    import shutil
    from psyau_graph.federated.client import partition
    from psyau_graph.data.dataset import MEDataset
    ds = MEDataset(cache)
    subjects = [str(s) for s in ds.subjects]
    folders = []
    for i, idx in enumerate(partition(subjects, cfg.clients, cfg.part_seed)):
        keep = {subjects[j] for j in idx}
        lab = out / f"lab{i}"
        for s in keep:
            for src in (cache / "clips").glob(f"*/{s}"):
                dst = lab / "clips" / src.parent.name / s
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(src, dst, dirs_exist_ok=True)
        folders.append(lab)
    return folders


def _warm_tasks(dep: LocalDeployment) -> dict:
    """Per-task wall and CPU seconds of the forked ClientApp processes (warm executor logs)."""
    from psyau_graph.federated.flower.warm_exec import TASK_LINE as pat
    wall, cpu, threads, hits, misses, preloads = [], [], set(), 0, 0, 0
    for i in range(len(dep.node_data)):
        log = dep.log(f"warm-exec{i}")
        preloads += log.count("preloaded dataset")
        for m in pat.finditer(log):
            wall.append(float(m.group(2)))
            cpu.append(float(m.group(3)))
            threads.add(int(m.group(4)))
            hits += int(m.group(5))
            misses += int(m.group(6))
    if not wall:
        return {"n": 0}
    return {"n": len(wall), "wall_s": wall, "cpu_s": cpu, "wall_sum_s": sum(wall),
            "cpu_sum_s": sum(cpu), "torch_threads": sorted(threads),
            "dataset_cache": {"hits": hits, "misses": misses, "parent_preloads": preloads}}


def engines(tmp: Path, rounds: int, epochs: int, clips: int = 8, deployment: bool = True,
            cold_deployment: bool = True, warm_flower_waits: bool = True,
            extra_poll_intervals: tuple = ()) -> dict:
    cache = make_cache(tmp / "cache", clients=3, subjects_per_client=2, clips=clips)
    cfg = FederatedConfig(clients=3, rounds=rounds, local_epochs=epochs, strategy="fedavg",
                          lr=1e-3, batch_size=8, repeats=1)
    task_spec = {"name": "fedpsyau", "model_config": {"num_classes": 3}}
    out = {}
    # in-process: clients one after the other, torch with 2 threads (default here) and with
    # 1 thread (what each Flower client process gets)
    threads = torch.get_num_threads()
    for name, n in (("inprocess", threads), ("inprocess_1thread", 1)):
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            res = FederatedRun(cache, cfg, task=FedPsyAUTask({"num_classes": 3}),
                               progress=False).run()
        out[name] = {**_stats(res["round_times"]), "total_s": time.perf_counter() - t0,
                     "peak_rss_mib": mem.peak, "torch_threads": n}
        print(name, out[name]["median_s"], flush=True)
    torch.set_num_threads(threads)
    # Flower simulation
    t0 = time.perf_counter()
    with PeakRSS() as mem, MachineCPU() as cpu:
        res = run_simulation(cache, cfg, task_spec, num_cpus=2, work_dir=tmp / "sim")
    total = time.perf_counter() - t0
    out["simulation"] = {**_stats(res["round_times"]), "total_s": total,
                         "startup_s": total - res["wall_time"], "peak_rss_mib": mem.peak,
                         "machine_cpu_busy_fraction": cpu.busy_fraction,  # Ray start-up included
                         "machine_cpu_busy_s": cpu.busy_cpu_s}
    print("simulation", out["simulation"]["median_s"], flush=True)
    # Flower deployment: SuperLink + 3 SuperNodes on loopback, each with its own folder
    if not deployment:
        return _ratios(out)
    labs = split_cache(cache, cfg, tmp / "labs")
    modes = [("deployment_warm_tls", True, True, 0.1,
              "TLS SuperLink<->SuperNode; --isolation process with one warm_exec per SuperNode "
              "(a pre-imported process forked per message); every poll on the message path at "
              "0.1 s (ServerApp grid, SuperExec, SuperNode via fast_supernode)")]
    for poll in extra_poll_intervals:
        modes.append((f"deployment_warm_tls_poll{poll:g}", True, True, poll,
                      f"as deployment_warm_tls with every poll on the message path at {poll:g} s"))
    if warm_flower_waits:
        modes.append(("deployment_warm_tls_flower_waits", True, True, None,
                      "as deployment_warm_tls but with Flower's own polling waits (SuperNode 3 s "
                      "idle / 0.5 s reply, SuperExec 1 s, ServerApp grid 3 s)"))
    if cold_deployment:
        modes.append(("deployment", False, True, None,
                      "TLS; each message runs in a fresh flwr-clientapp process "
                      "(SuperNode subprocess isolation): imports every time; Flower's waits"))
    for name, warm, tls, poll, note in modes:
        load0 = load_average()
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            with LocalDeployment(tmp / name, labs, tls=tls, warm=warm, poll_interval=poll,
                                 startup_timeout=180) as dep:
                started = time.perf_counter() - t0
                cpu0 = _process_cpu(dep)
                with MachineCPU() as cpu:  # the run only: start-up excluded, round 1 included
                    res = dep.run(cfg, task_spec, tmp / f"{name}_out", timeout=1800)
                cpu1 = _process_cpu(dep)
                # descendants that exited unreaped by their parent are not counted: a lower bound
                proc_cpu = {k: round(cpu1[k] - cpu0.get(k, 0.0), 2) for k in cpu1}
                tasks = _warm_tasks(dep) if warm else None
        out[name] = {**_stats(res["round_times"]), "total_s": time.perf_counter() - t0,
                     "startup_s": started, "peak_rss_mib": mem.peak, "tls": tls, "warm": warm,
                     "deployment": res.get("deployment"), "note": note,
                     "machine_cpu_busy_fraction": cpu.busy_fraction, "machine_cpu_busy_s": cpu.busy_cpu_s,
                     "process_cpu_s": proc_cpu,
                     "load_average_1min": [load0, load_average()]}
        if tasks is not None:
            out[name]["clientapp_tasks"] = tasks
        print(name, out[name]["median_s"], flush=True)
    for k in [k for k in out if k.startswith("deployment")]:
        if "simulation" in out:
            out[k]["ratio_to_simulation"] = out[k]["median_s"] / out["simulation"]["median_s"]
    return _ratios(out)


def _ratios(out: dict) -> dict:
    # baseline: the faster in-process variant (on a loaded machine torch's 2 OpenMP threads
    # can be much slower than 1)
    base = min(out["inprocess"]["median_s"], out["inprocess_1thread"]["median_s"])
    out["inprocess_baseline_s"] = base
    for k, v in out.items():
        if isinstance(v, dict) and "median_s" in v:
            v["ratio_to_inprocess"] = v["median_s"] / base
    return out


def scaling(tmp: Path, rounds: int, sizes) -> dict:
    out = {}
    for k in sizes:
        data = make_toy_data(tmp / f"toy{k}.pt", subjects=k, per_subject=40, seed=k)
        cfg = FederatedConfig(clients=k, rounds=rounds, local_epochs=2, strategy="fedavg",
                              lr=0.02, batch_size=16, repeats=1)
        t0 = time.perf_counter()
        with PeakRSS() as mem:
            res = run_simulation(data, cfg, {"name": "toy"}, num_cpus=2, work_dir=tmp / f"s{k}")
        total = time.perf_counter() - t0
        out[str(k)] = {**_stats(res["round_times"]), "total_s": total,
                       "startup_s": total - res["wall_time"], "peak_rss_mib": mem.peak}
        print("scaling", k, out[str(k)]["median_s"], mem.peak, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=1, help="local epochs of the small workload")
    ap.add_argument("--large-epochs", type=int, default=5,
                    help="local epochs of the larger workload (0 skips it; no deployment run)")
    ap.add_argument("--large-clips", type=int, default=16, help="clips per subject of the larger workload")
    ap.add_argument("--sizes", default="2,4,8,16", help="client counts of part 2 ('' skips it)")
    ap.add_argument("--no-cold-deployment", action="store_true",
                    help="skip the deployment run with per-message flwr-clientapp processes")
    ap.add_argument("--no-warm-flower-waits", action="store_true",
                    help="skip the warm deployment run with Flower's own polling waits")
    ap.add_argument("--extra-poll-intervals", type=float, nargs="*", default=[],
                    help="also run the warm deployment with every poll at each of these intervals (s)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "federated.json"))
    args = ap.parse_args()
    if any(p <= 0 for p in args.extra_poll_intervals):
        ap.error(f"--extra-poll-intervals must be > 0, got {args.extra_poll_intervals}")
    start_load = load_average()
    keep_freed_memory()  # as the psyau command does (the Flower ClientApp calls it too)
    with tempfile.TemporaryDirectory(prefix="psyau-fedbench-") as d:
        tmp = Path(d)
        result = {
            "what": "wall time per federated round (server-measured: train + evaluate of every "
                    "client + aggregation); round 1 = warm-up, median/min/max over rounds 2..R",
            "machine": None,  # filled in below, after the runs (load average at start and end)
            "config": {"rounds": args.rounds, "local_epochs": args.epochs, "clients": 3,
                       "model": "FedPsyAU (paper network), 48 random clips (16 per client)"},
            "engines": engines(tmp / "small", args.rounds, args.epochs,
                               cold_deployment=not args.no_cold_deployment,
                               warm_flower_waits=not args.no_warm_flower_waits,
                               extra_poll_intervals=tuple(args.extra_poll_intervals)),
            "config_large": {"rounds": args.rounds, "local_epochs": args.large_epochs, "clients": 3,
                             "model": f"FedPsyAU, {6 * args.large_clips} random clips "
                                      f"({2 * args.large_clips} per client); no deployment run"},
            "engines_large": (engines(tmp / "large", args.rounds, args.large_epochs, args.large_clips,
                                      deployment=False) if args.large_epochs > 0 else None),
            "scaling_simulation_toy": scaling(tmp, 3, [int(s) for s in args.sizes.split(",") if s]),
        }
        result["machine"] = machine_info(start_load, flwr=__import__("flwr").__version__)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(json.dumps(result["engines"], indent=1)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
