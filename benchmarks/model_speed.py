"""Training and inference speed of FED-PsyAU: precisions, before/after, and the authors' structure.

Measures, at batch sizes 32 and 256 (full model, setting VI, 3 classes):

* training step (forward + loss + backward + AdamW step): samples/s, achieved GFLOP/s
  (FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode``) and the
  fraction of a GEMM peak (a 2048² ``torch.mm`` in the same dtype, measured in the same run);
* inference (eval mode, no grad): ms per sample;

for these variants, all timed in the same run, interleaved repeat by repeat, after warm-up:

* ``before_fp32``: the library model with the dense DPK-GAT computation as it was before the
  speed work (``_previous_dense.py``), fp32 — the "today" peer of the targets;
* ``fp32``: the library model, fp32;
* ``bf16``: the library model under ``torch.autocast(dtype=torch.bfloat16)``;
* ``bf16_conv_lfe``: as ``bf16`` with ``LFE(impl="conv")`` (every LFE layer a convolution;
  the default ``impl="auto"`` runs the thin first and last layers as matrix products when
  training under bf16, see ``psyau_graph.nn.lfe``);
* ``bf16_gemm_lfe``: as ``bf16`` with ``LFE(impl="gemm")`` (the convolutions as matrices);
* ``authors_structure``: the same weights run with the authors' structure
  (``_authors_structure.py``: per-ROI Python loop in LFE and AFE, dense per-head GAT with
  pairwise concatenation), fp32;
* with ``--compile lfe|model``: ``fp32_compile`` and ``bf16_compile``, the library model
  with its LFE (or the whole model) wrapped in ``torch.compile`` (inductor); compile times
  (first calls) and any compile error are recorded under ``compile`` in the JSON (a failed
  variant is left out, not replaced).

Before timing, the fp32 variants are checked to give the same eval-mode output and the bf16
ones to stay within bf16 rounding of it. Median and spread (min, max) are reported.

    python benchmarks/model_speed.py [--batch-sizes 32 256] [--repeats 5] [--warmup 2] [--threads N]
        [--compile lfe|model]

Wall-clock and process-CPU-time figures are both recorded: on a loaded machine the
CPU-time ratio is the steadier one.

Writes ``benchmarks/results/model_speed.json``.
"""
from __future__ import annotations

import argparse
import copy
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
from _previous_dense import use_previous_dense  # noqa: E402

from psyau_graph.nn import FedPsyAU, FedPsyAUConfig, fedpsyau_loss  # noqa: E402
from psyau_graph.train.memory import keep_freed_memory  # noqa: E402
from psyau_graph.train.precision import autocast, outputs_to_float  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "model_speed.json"
PEER = "before_fp32"


def _inputs(b: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 65, 3, 5, 5, generator=g), torch.randn(b, 3, 28, 28, generator=g),
            torch.randint(0, 3, (b,), generator=g), (torch.rand(b, 12, generator=g) > 0.5).float())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _train_step(model, opt, rois, flow, y, au, precision="fp32") -> tuple[float, float]:
    model.train()
    t, c = time.perf_counter(), time.process_time()
    with autocast(precision, rois.device):
        out = model(rois, flow)
    loss, _ = fedpsyau_loss(outputs_to_float(out), y, au)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    _sync(str(rois.device))
    return time.perf_counter() - t, time.process_time() - c


@torch.no_grad()
def _infer(model, rois, flow, precision="fp32") -> tuple[float, float]:
    model.eval()
    t, c = time.perf_counter(), time.process_time()
    with autocast(precision, rois.device):
        model(rois, flow)
    _sync(str(rois.device))
    return time.perf_counter() - t, time.process_time() - c


def _summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def gemm_peak(device: str, repeats: int = 5, n: int = 2048) -> dict:
    """GFLOP/s of an n×n ``torch.mm`` in fp32 and bf16 (best of ``repeats`` after a warm-up)."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * n ** 3 / best / 1e9
    return out


def train_flops_per_sample(model, b: int, device: str, seed: int = 0) -> float:
    """FLOPs of one training step's forward + backward per sample (FlopCounterMode; the
    optimizer step is not counted). Counted on a copy so the timed model is untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(model).train()
    rois, flow, y, au = (t.to(device) for t in _inputs(b, seed))
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = fedpsyau_loss(m(rois, flow), y, au)
        loss.backward()
    return counter.get_total_flops() / b


def _variants(ours, compile_: str | None = None) -> dict:
    gemm, conv = copy.deepcopy(ours), copy.deepcopy(ours)
    gemm.au_net.lfe.impl, conv.au_net.lfe.impl = "gemm", "conv"
    out = {PEER: (use_previous_dense(ours), "fp32"), "fp32": (ours, "fp32"), "bf16": (copy.deepcopy(ours), "bf16"),
           "bf16_conv_lfe": (conv, "bf16"), "bf16_gemm_lfe": (gemm, "bf16"),
           "authors_structure": (authors_structure(ours), "fp32")}
    if compile_:
        # torch.compile (inductor; on the CPU it generates C++/OpenMP kernels with the system
        # compiler): the same weights, compiled once per variant; forward and backward graphs
        # are compiled on the first training call, the eval graph on the first eval call.
        # "model": the whole network; "lfe": only the LFE (its convolutions, BatchNorm and ReLU
        # are most of the step, see the profile), so inductor can fuse BatchNorm + ReLU there
        for prec in ("fp32", "bf16"):
            m = copy.deepcopy(ours)
            if compile_ == "model":
                m = torch.compile(m)
            else:
                m.au_net.lfe = torch.compile(m.au_net.lfe)
            out[f"{prec}_compile"] = (m, prec)
    return out


def _compiler_info() -> dict:
    import shutil
    import subprocess

    cc = shutil.which("gcc") or shutil.which("cc")
    version = None
    if cc:
        try:
            version = subprocess.run([cc, "--version"], capture_output=True, text=True,
                                     timeout=10).stdout.splitlines()[0]
        except (OSError, subprocess.SubprocessError) as exc:
            version = f"{cc} --version failed: {exc}"
    return {"c_compiler": cc, "c_compiler_version": version}


def run(batch_sizes=(32, 256), repeats: int = 5, warmup: int = 2, seed: int = 0, threads: int | None = None,
        device: str = "cpu", compile_: str | None = None) -> dict:
    start_load = load_average()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    ours = FedPsyAU(FedPsyAUConfig()).to(device)
    variants = _variants(ours, compile_)
    rois, flow, _, _ = (t.to(device) for t in _inputs(4, seed))
    checks, failed, first_call = {}, {}, {}
    with torch.no_grad():
        ours.eval()
        ref = ours(rois, flow).logits
        for k, (m, prec) in list(variants.items()):
            m.eval()
            t0 = time.perf_counter()
            try:
                with autocast(prec, device):
                    diff = float((m(rois, flow).logits.float() - ref).abs().max())
            except Exception as exc:  # a compile failure is recorded in the JSON, the variant dropped
                if not k.endswith("_compile"):
                    raise
                failed[k] = f"{type(exc).__name__}: {exc}"[:2000]
                print(f"variant {k} failed: {failed[k].splitlines()[0]}", file=sys.stderr, flush=True)
                del variants[k]
                continue
            first_call[k] = {"eval_first_call_s_at_B4": time.perf_counter() - t0}
            checks[k] = diff
            if diff > (1e-4 if prec == "fp32" else 5e-2):
                raise RuntimeError(f"variant {k} computes something else (max |Δlogits| = {diff})")
    peak = gemm_peak(device)
    flops = train_flops_per_sample(ours, min(batch_sizes), device, seed)
    results = {}
    for b in batch_sizes:
        rois, flow, y, au = (t.to(device) for t in _inputs(b, seed))
        opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, (m, _) in variants.items()}
        meas = {k: {"train": [], "infer": [], "train_cpu": [], "infer_cpu": []} for k in variants}
        for i in range(warmup + repeats):
            line = []
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            for k in order:  # interleaved: every variant sees the same machine load
                if k in failed:
                    continue
                m, prec = variants[k]
                try:
                    tt, tc = _train_step(m, opts[k], rois, flow, y, au, prec)
                    it, ic = _infer(m, rois, flow, prec)
                except Exception as exc:  # compiled variants only: recorded, dropped from the run
                    if not k.endswith("_compile"):
                        raise
                    failed[k] = f"B={b}: {type(exc).__name__}: {exc}"[:2000]
                    print(f"variant {k} failed: {failed[k].splitlines()[0]}", file=sys.stderr, flush=True)
                    continue
                if i == 0:
                    first_call.setdefault(k, {})[f"B{b}"] = {"train_first_call_s": tt, "infer_first_call_s": it}
                line.append(f"{k} train {tt:.2f}s infer {it:.2f}s")
                if i >= warmup:
                    meas[k]["train"].append(b / tt)
                    meas[k]["train_cpu"].append(b / tc)
                    meas[k]["infer"].append(1000.0 * it / b)
                    meas[k]["infer_cpu"].append(1000.0 * ic / b)
            print(f"threads={torch.get_num_threads()} B={b} repeat {i + 1}/{warmup + repeats}: " + "; ".join(line),
                  file=sys.stderr, flush=True)
        rec = {}
        for k, v in meas.items():
            if k in failed or not v["train"]:
                continue
            prec = variants[k][1]
            sps = _summary(v["train"])
            gflops = sps["median"] * flops / 1e9
            rec[k] = {"precision": prec, "train_samples_per_s": sps, "infer_ms_per_sample": _summary(v["infer"]),
                      "train_samples_per_cpu_s": _summary(v["train_cpu"]),
                      "infer_cpu_ms_per_sample": _summary(v["infer_cpu"]),
                      "train_gflop_per_s": gflops, "train_fraction_of_gemm_peak": gflops / peak[prec]}
        for k in rec:
            if k == PEER:
                continue
            for peer in (PEER, "authors_structure", "fp32", "bf16"):
                if k == peer or peer not in rec or (peer in ("fp32", "bf16") and not k.endswith("_compile")):
                    continue
                rec[k][f"train_x_{peer}"] = (rec[k]["train_samples_per_s"]["median"]
                                             / rec[peer]["train_samples_per_s"]["median"])
                rec[k][f"infer_x_{peer}"] = (rec[peer]["infer_ms_per_sample"]["median"]
                                             / rec[k]["infer_ms_per_sample"]["median"])
                rec[k][f"train_cpu_time_x_{peer}"] = (rec[k]["train_samples_per_cpu_s"]["median"]
                                                      / rec[peer]["train_samples_per_cpu_s"]["median"])
        results[str(b)] = rec
    return {
        "benchmark": "model_speed",
        "what": "FED-PsyAU (setting VI) training step samples/s and inference ms/sample; the library model "
                "in fp32 and bf16 autocast, against the model as it was before the speed work (fp32, "
                "'before_fp32', the peer of the targets) and the same weights run with the authors' "
                "structure, all in the same run",
        "equivalence_check_max_abs_logit_diff": checks,
        "compile": ({"enabled": True, "what": compile_,
                     "how": ("torch.compile(model)" if compile_ == "model" else "model.au_net.lfe = torch.compile(lfe)")
                     + " with the default inductor backend and mode; first-call times include compilation",
                     "first_call_s": first_call,
                     "failed": failed, **_compiler_info()} if compile_ else {"enabled": False}),
        "gemm_peak_gflop_per_s": peak, "gemm_peak_how": "best of 5 torch.mm of 2048x2048, same threads",
        "train_flop_per_sample": flops,
        "train_flop_how": "torch.utils.flop_counter.FlopCounterMode over forward + loss + backward "
                          f"at B = {min(batch_sizes)}, divided by B (optimizer step not counted)",
        "batch_sizes": list(batch_sizes), "repeats": repeats, "warmup": warmup,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": machine_info(start_load),
        "timing": "wall clock (perf_counter) and process CPU time (process_time, all threads); "
                  "samples/s = B / step time, ms/sample = 1000 * time / B",
        "note": "the machine's load average is recorded under 'machine'; the variants were interleaved "
                "repeat by repeat (order reversed every other repeat) so the ratios are the robust figures",
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
    ap.add_argument("--compile", choices=("lfe", "model"), default=None,
                    help="also time fp32 and bf16 with torch.compile (inductor; needs a C compiler on the CPU) "
                         "of the LFE only or of the whole model; a compile failure is recorded in the JSON "
                         "under 'compile.failed'")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    malloc = "glibc defaults" if args.default_malloc else f"keep_freed_memory() -> {keep_freed_memory()}"
    runs = [run(tuple(args.batch_sizes), args.repeats, args.warmup, threads=t, device=args.device,
                compile_=args.compile) for t in args.threads]
    res = {k: v for k, v in runs[0].items() if k not in ("results", "threads")}
    res["results_by_threads"] = {str(r["threads"]): r["results"] for r in runs}
    res["compile_by_threads"] = {str(r["threads"]): r["compile"] for r in runs}
    res["malloc"] = malloc
    res["device"] = args.device
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(res, fh, indent=2)
    os.replace(tmp, args.out)
    for t, results in res["results_by_threads"].items():
        for b, rec in results.items():
            for k, r in rec.items():
                extra = "".join(f" x{r[f'train_x_{p}']:.2f} vs {p}" for p in (PEER, "authors_structure", "fp32", "bf16")
                                if f"train_x_{p}" in r)
                print(f"threads={t} B={b} {k:<18} train {r['train_samples_per_s']['median']:7.1f} samples/s "
                      f"({r['train_gflop_per_s']:.0f} GFLOP/s, {100 * r['train_fraction_of_gemm_peak']:.0f}% of "
                      f"GEMM peak){extra}; infer {r['infer_ms_per_sample']['median']:.2f} ms/sample")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
