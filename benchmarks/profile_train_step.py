"""Where the time of one FED-PsyAU training step goes: torch.profiler, top ops by self CPU time.

One training step (forward + loss + backward + AdamW step, setting VI, 3 classes, random
inputs) at batch size B in each precision asked for, after warm-up steps, profiled with
``torch.profiler`` (``with_flops=True``: the profiler's FLOP estimate for matrix products
and convolutions). For every op among the top ``--top`` by self CPU time: calls, self CPU
ms, share of the step's total self CPU time, FLOPs where the profiler knows them, and
achieved GFLOP/s against a GEMM peak (best of 5 ``torch.mm`` 2048² in the same dtype)
measured in the same run. Same process settings as the ``psyau`` command
(``keep_freed_memory()``).

    python benchmarks/profile_train_step.py [--batch-size 256] [--precisions bf16 fp32] [--threads N]

Writes ``benchmarks/results/profile_train_step.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import load_average, machine_info  # noqa: E402
from model_speed import _inputs, _train_step, gemm_peak  # noqa: E402

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig  # noqa: E402
from psyau_graph.train.memory import keep_freed_memory  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "profile_train_step.json"


def profile_step(precision: str, b: int, warmup: int, steps: int, top: int, peak: float, seed: int = 0) -> dict:
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(seed)
    model = FedPsyAU(FedPsyAUConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    rois, flow, y, au = _inputs(b, seed)
    for _ in range(warmup):
        _train_step(model, opt, rois, flow, y, au, precision)
    wall = []
    with profile(activities=[ProfilerActivity.CPU], with_flops=True, record_shapes=False) as prof:
        for _ in range(steps):
            t = time.perf_counter()
            _train_step(model, opt, rois, flow, y, au, precision)
            wall.append(time.perf_counter() - t)
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events)  # µs, all steps
    rows = []
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        self_ms = e.self_cpu_time_total / 1000 / steps
        flops = (e.flops or 0) / steps
        # the profiler attributes FLOPs to the op that has them (e.g. aten::mm, aten::convolution);
        # GFLOP/s over the op's total (self + children) time, the time its arithmetic took
        total_ms = e.cpu_time_total / 1000 / steps
        rows.append({"op": e.key, "calls_per_step": e.count / steps, "self_cpu_ms_per_step": self_ms,
                     "share_of_self_cpu": e.self_cpu_time_total / total_self,
                     "total_cpu_ms_per_step": total_ms, "flop_per_step": flops or None,
                     "gflop_per_s": (flops / (total_ms / 1000) / 1e9) if flops and total_ms > 0 else None,
                     "fraction_of_gemm_peak": ((flops / (total_ms / 1000) / 1e9) / peak)
                     if flops and total_ms > 0 else None})
    flop_ops = [{"op": e.key, "flop_per_step": e.flops / steps,
                 "total_cpu_ms_per_step": e.cpu_time_total / 1000 / steps,
                 "gflop_per_s": e.flops / steps / (e.cpu_time_total / 1e6 / steps) / 1e9}
                for e in events if e.flops and e.cpu_time_total > 0]
    flop_ops.sort(key=lambda r: r["total_cpu_ms_per_step"], reverse=True)
    return {"precision": precision, "batch_size": b, "steps_profiled": steps, "warmup_steps": warmup,
            "step_wall_s": wall, "self_cpu_ms_per_step": total_self / 1000 / steps,
            "gemm_peak_gflop_per_s": peak, "top_ops_by_self_cpu": rows, "ops_with_flops": flop_ops}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["fp32", "bf16"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    start = load_average()
    malloc = keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = gemm_peak("cpu")
    runs = {p: profile_step(p, args.batch_size, args.warmup, args.steps, args.top, peak[p]) for p in args.precisions}
    res = {"benchmark": "profile_train_step", "gemm_peak_gflop_per_s": peak,
           "gemm_peak_how": "best of 5 torch.mm of 2048x2048, same threads, same run",
           "threads": torch.get_num_threads(), "malloc": f"keep_freed_memory() -> {malloc}",
           "machine": machine_info(start), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(res, fh, indent=2)
    os.replace(tmp, args.out)
    for p, r in runs.items():
        print(f"{p} B={r['batch_size']}: step {min(r['step_wall_s']):.2f} s (best of {r['steps_profiled']}), "
              f"self CPU {r['self_cpu_ms_per_step']:.0f} ms/step; GEMM peak {r['gemm_peak_gflop_per_s']:.0f} GFLOP/s")
        for row in r["top_ops_by_self_cpu"][:12]:
            g = f"{row['gflop_per_s']:.0f} GFLOP/s" if row["gflop_per_s"] else ""
            print(f"  {row['op']:<42} {row['self_cpu_ms_per_step']:8.1f} ms {100 * row['share_of_self_cpu']:5.1f}% {g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
