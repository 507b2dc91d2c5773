"""Training and inference speed of FED-PsyAU on CPU: batched vs the authors' structure.

Measures, at batch sizes 32 and 256 (full model, setting VI, 3 classes):

* training step (forward + loss + backward + AdamW step): samples/s;
* inference (eval mode, no grad): ms per sample;

for the library model and for the same weights run with the authors' structure
(``_authors_structure.py``: per-ROI Python loop in LFE and AFE, dense per-head GAT with
pairwise concatenation). Both variants are timed in the same run, interleaved
repeat by repeat, after warm-up; median and spread (min, max) are reported.
Before timing, the two variants are checked to give the same eval-mode output.

    python benchmarks/model_speed.py [--batch-sizes 32 256] [--repeats 5] [--warmup 2] [--threads N]

Wall-clock and process-CPU-time figures are both recorded: on a loaded machine the
CPU-time ratio is the steadier one.

Writes ``benchmarks/results/model_speed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _authors_structure import authors_structure  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, fedpsyau_loss  # noqa: E402
from psyau_graph.train.memory import keep_freed_memory  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "model_speed.json"


def _inputs(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 65, 3, 5, 5, generator=g), torch.randn(b, 3, 28, 28, generator=g),
            torch.randint(0, 3, (b,), generator=g), (torch.rand(b, 12, generator=g) > 0.5).float())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_step(model, opt, rois, flow, y, au) -> tuple[float, float]:
    model.train()
    t, c = time.perf_counter(), time.process_time()
    out = model(rois, flow)
    loss, _ = fedpsyau_loss(out, y, au)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(str(rois.device))
    return time.perf_counter() - t, time.process_time() - c


@torch.no_grad()
def _infer(model, rois, flow) -> tuple[float, float]:
    model.eval()
    t, c = time.perf_counter(), time.process_time()
    model(rois, flow)
    _sync(str(rois.device))
    return time.perf_counter() - t, time.process_time() - c


def _summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def run(batch_sizes=(32, 256), repeats: int = 5, warmup: int = 2, seed: int = 0, threads: int | None = None,
        device: str = "cpu") -> dict:
    start_load = load_average()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ours = FedPsyAU(FedPsyAUConfig()).to(device)
    theirs = authors_structure(ours)
    rois, flow, _, _ = (t.to(device) for t in _inputs(4, seed))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        diff = float((ours(rois, flow).logits - theirs(rois, flow).logits).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"the authors-structure variant computes something else (max |Δlogits| = {diff})")
    variants = {"batched": ours, "authors_structure": theirs}
    results = {}
    for b in batch_sizes:
        rois, flow, y, au = (t.to(device) for t in _inputs(b, seed))
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in variants.items()}
        meas = {k: {"train": [], "infer": [], "train_cpu": [], "infer_cpu": []} for k in variants}
        for i in range(warmup + repeats):
            line = []
            for k, m in variants.items():  # interleaved: both see the same machine load
                tt, tc = _train_step(m, opts[k], rois, flow, y, au)
                it, ic = _infer(m, rois, flow)
                line.append(f"{k} train {tt:.2f}s (cpu {tc:.2f}s) infer {it:.2f}s")
                if i >= warmup:
                    meas[k]["train"].append(b / tt)
                    meas[k]["train_cpu"].append(b / tc)
                    meas[k]["infer"].append(1000.0 * it / b)
                    meas[k]["infer_cpu"].append(1000.0 * ic / b)
            print(f"threads={torch.get_num_threads()} B={b} repeat {i + 1}/{warmup + repeats}: " + "; ".join(line), file=sys.stderr, flush=True)
        rec = {k: {"train_samples_per_s": _summary(v["train"]), "infer_ms_per_sample": _summary(v["infer"]),
                   "train_samples_per_cpu_s": _summary(v["train_cpu"]),
                   "infer_cpu_ms_per_sample": _summary(v["infer_cpu"])} for k, v in meas.items()}
        rec["speedup_train"] = (rec["batched"]["train_samples_per_s"]["median"]
                                / rec["authors_structure"]["train_samples_per_s"]["median"])
        rec["speedup_infer"] = (rec["authors_structure"]["infer_ms_per_sample"]["median"]
                                / rec["batched"]["infer_ms_per_sample"]["median"])
        rec["speedup_train_cpu_time"] = (rec["batched"]["train_samples_per_cpu_s"]["median"]
                                         / rec["authors_structure"]["train_samples_per_cpu_s"]["median"])
        rec["speedup_infer_cpu_time"] = (rec["authors_structure"]["infer_cpu_ms_per_sample"]["median"]
                                         / rec["batched"]["infer_cpu_ms_per_sample"]["median"])
        results[str(b)] = rec
    return {
        "benchmark": "model_speed",
        "what": "FED-PsyAU (setting VI) training step samples/s and inference ms/sample on CPU; "
                "batched library model vs the same weights run with the authors' structure "
                "(per-ROI Python loops in LFE/AFE, dense per-head GAT)",
        "equivalence_check_max_abs_logit_diff": diff,
        "batch_sizes": list(batch_sizes), "repeats": repeats, "warmup": warmup,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": machine_info(start_load),
        "timing": "wall clock (perf_counter) and process CPU time (process_time, all threads); "
                  "samples/s = B / step time, ms/sample = 1000 * time / B",
        "note": "the machine's load average is recorded under 'machine'; "
                "the two variants were interleaved repeat by repeat so the ratio is the robust figure",
        "results": results,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch intra-op thread counts to measure (default: 1 2)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="keep glibc's malloc thresholds (default: keep_freed_memory(), as the psyau command does)")
    ap.add_argument("--device", default="cpu",
                    help="torch device (default: cpu; e.g. cuda on a machine with a GPU, where the "
                         "authors' per-ROI loops are bound by kernel launches)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    malloc = "glibc defaults" if args.default_malloc else f"keep_freed_memory() -> {keep_freed_memory()}"
    runs = [run(tuple(args.batch_sizes), args.repeats, args.warmup, threads=t, device=args.device)
            for t in args.threads]
    res = {k: v for k, v in runs[0].items() if k not in ("results", "threads")}
    res["results_by_threads"] = {str(r["threads"]): r["results"] for r in runs}
    res["malloc"] = malloc
    res["device"] = args.device
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(res, fh, indent=2)
    os.replace(tmp, args.out)
    for t, results in res["results_by_threads"].items():
        for b, rec in results.items():
            ours, theirs = rec["batched"], rec["authors_structure"]
            print(f"threads={t} B={b}: train {ours['train_samples_per_s']['median']:.1f} vs "
                  f"{theirs['train_samples_per_s']['median']:.1f} samples/s (x{rec['speedup_train']:.2f}); "
                  f"infer {ours['infer_ms_per_sample']['median']:.2f} vs "
                  f"{theirs['infer_ms_per_sample']['median']:.2f} ms/sample (x{rec['speedup_infer']:.2f}); "
                  f"CPU-time ratios: train x{rec['speedup_train_cpu_time']:.2f}, "
                  f"infer x{rec['speedup_infer_cpu_time']:.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
