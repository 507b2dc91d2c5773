"""What a lab waits for: wall time of a CAS(ME)³-sized LOSO run, before and after the speed work.

A CAS(ME)³-sized set (100 subjects, 860 clips, 3 classes) is generated at the model's
input level (random ROI patches ``(65, 3, 5, 5)``, 28² flow maps, multi-hot AUs, labels;
preprocessing is not timed: its cost is in the ``preprocess`` benchmark). The training
protocol is the one ``psyau train --protocol loso`` runs (setting VI, 50 epochs, batch 32,
AdamW, a ``last.pt`` checkpoint per epoch, evaluation of the held-out subject), with the
default settings of the command (torch's thread count, ``keep_freed_memory()``), for:

* ``before_fp32``: the library model computing as it did before the speed work
  (``_previous_dense.use_before_speed_work``: the previous dense DPK-GAT, no eval-mode
  BatchNorm fold in the LFE), fp32: the peer;
* ``fp32``: today's model, fp32 (the default precision);
* ``bf16``: today's model under bf16 autocast (``--precision bf16``).

All 100 folds × 50 epochs would take hours on a small CPU, so a documented subset is
measured: the first ``--folds`` LOSO folds, each trained for ``--epochs`` epochs, the
variants interleaved fold by fold (order reversed on every other fold) so that they see
the same machine load. The full run is then **extrapolated** per variant:

    fold(E)   = t_fold_measured + (E − k) · t_epoch
    LOSO(E)   = F · mean_over_measured_folds fold(E)
    + final   = LOSO(E) + fold_all(E)   (``psyau train`` also trains a final model on all
                                         clips unless --no-final-model; estimated as one
                                         more fold with 860/851 of its epoch time)

with k the measured epochs, E = 50, F = 100 folds, ``t_fold_measured`` the wall time of
one measured fold (model build + k epochs incl. checkpoints + evaluation), and ``t_epoch``
the median time of epochs 2..k (each with its checkpoint write). The same formula is
applied to process CPU time (``extrapolated_cpu_time``): with one thread that is the
wall time on an otherwise idle core, the steadier figure on a shared machine. Both the
formula and the inputs are written in the JSON.

    python benchmarks/loso_walltime.py [--folds 2] [--epochs 8] [--threads N]

Writes ``benchmarks/results/loso_walltime.json``.
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
from _machine import load_average, machine_info  # noqa: E402
from _previous_dense import use_before_speed_work  # noqa: E402

from psyau_graph.train.fit import TrainConfig, evaluate, fit, make_loader, seed_everything  # noqa: E402
from psyau_graph.train.memory import keep_freed_memory  # noqa: E402
from psyau_graph.train.protocols import (_default_model_factory, _subset, make_folds,  # noqa: E402
                                         resolve_model_config)

OUT = Path(__file__).resolve().parent / "results" / "loso_walltime.json"
PEER = "before_fp32"
SUBJECTS, CLIPS, CLASSES = 100, 860, 3


class SyntheticSet(list):
    """A list of contract ``Data`` items with the attributes ``run_protocol`` reads."""

    num_classes = CLASSES
    class_names = ["negative", "positive", "surprise"]

    @property
    def subjects(self):
        return [d.subject for d in self]


def synthetic_set(subjects: int = SUBJECTS, clips: int = CLIPS, seed: int = 0) -> SyntheticSet:
    """``clips`` items spread over ``subjects`` subjects (8 or 9 each for 860 / 100).

    Item shapes: ``x (65, 3, 5, 5)``, ``pos (65, 2)``, ``flow (1, 3, 28, 28)``,
    ``au (1, 12)``, ``y (1,)``."""
    from torch_geometric.data import Data

    g = torch.Generator().manual_seed(seed)
    per = [clips // subjects + (1 if s < clips % subjects else 0) for s in range(subjects)]
    out = SyntheticSet()
    for s, n in enumerate(per):
        for c in range(n):
            out.append(Data(x=torch.randn(65, 3, 5, 5, generator=g), pos=torch.rand(65, 2, generator=g) * 128,
                            flow=torch.randn(1, 3, 28, 28, generator=g),
                            au=(torch.rand(1, 12, generator=g) > 0.7).float(),
                            y=torch.randint(0, CLASSES, (1,), generator=g),
                            subject=f"spNO.{s + 1}", dataset="casme3", clip=f"c{c}", emotion="x", num_nodes=65))
    return out


def _factory(variant: str):
    def build(cfg):
        m = _default_model_factory(cfg)
        return use_before_speed_work(m) if variant == PEER else m
    return build


def run_fold(dataset, fold: dict, variant: str, precision: str, epochs: int, workdir: Path) -> dict:
    """One LOSO fold as ``run_protocol`` runs it (build, fit with a checkpoint per epoch, evaluate)."""
    mcfg = resolve_model_config(None, dataset.num_classes, "VI")
    tc = TrainConfig(epochs=epochs, precision=precision, progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    seed_everything(tc.seed)
    model = _factory(variant)(mcfg)
    t_build = time.perf_counter() - t0
    marks = [(time.perf_counter(), time.process_time())]  # one more after every epoch (checkpoint written)
    res = fit(model, _subset(dataset, fold["train"]), tc, checkpoint_dir=workdir, num_classes=dataset.num_classes,
              callbacks=[lambda *_: marks.append((time.perf_counter(), time.process_time()))])
    t1 = time.perf_counter()
    ev = evaluate(model, make_loader(_subset(dataset, fold["test"]), tc.batch_size, shuffle=False),
                  num_classes=dataset.num_classes, beta=res.beta, precision=precision)
    t_eval = time.perf_counter() - t1
    return {"fold": fold["name"], "n_train": int(len(fold["train"])), "n_test": int(len(fold["test"])),
            "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "build_s": t_build,
            "fit_s": res.train_time_s, "eval_s": t_eval,
            "epoch_s": [b[0] - a[0] for a, b in zip(marks, marks[1:])],
            "epoch_cpu_s": [b[1] - a[1] for a, b in zip(marks, marks[1:])],
            "test_uf1": ev["uf1"]}


def extrapolate(folds: list[dict], measured_epochs: int, epochs: int, n_folds: int, n_clips: int,
                clock: str = "") -> dict:
    """The formula of the module doc, on wall-clock (``clock=""``) or process CPU time (``"cpu_"``)."""
    steady = [e for f in folds for e in f[f"epoch_{clock}s"][1:]]
    t_epoch = statistics.median(steady)
    measured = statistics.mean(f[f"{clock}s" if clock else "wall_s"] for f in folds)
    fold_e = measured + (epochs - measured_epochs) * t_epoch
    loso = n_folds * fold_e
    n_train = statistics.mean(f["n_train"] for f in folds)
    final = fold_e + epochs * t_epoch * (n_clips / n_train - 1.0)
    return {"t_epoch_s": t_epoch, "fold_s": fold_e, "loso_s": loso, "loso_h": loso / 3600,
            "loso_plus_final_model_s": loso + final, "loso_plus_final_model_h": (loso + final) / 3600}


def run(n_folds_measured: int = 2, epochs_measured: int = 8, epochs: int = 50, threads: int | None = None,
        seed: int = 0) -> dict:
    start_load = load_average()
    if threads:
        torch.set_num_threads(threads)
    dataset = synthetic_set(seed=seed)
    folds = make_folds(dataset, "loso")
    variants = {PEER: "fp32", "fp32": "fp32", "bf16": "bf16"}
    meas = {k: [] for k in variants}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="loso_walltime_") as tmp:
        for i, fold in enumerate(folds[:n_folds_measured]):
            order = list(variants) if i % 2 == 0 else list(variants)[::-1]
            for k in order:
                rec = run_fold(dataset, fold, k, variants[k], epochs_measured, Path(tmp) / f"{k}_{i}")
                meas[k].append(rec)
                print(f"fold {i + 1}/{n_folds_measured} {k:<12} {rec['wall_s']:6.1f} s (CPU {rec['cpu_s']:.1f} s) "
                      f"(epochs {', '.join(f'{e:.1f}' for e in rec['epoch_s'])}; CPU "
                      f"{', '.join(f'{e:.1f}' for e in rec['epoch_cpu_s'])}; eval {rec['eval_s']:.2f} s)",
                      file=sys.stderr, flush=True)
    measured_s = time.perf_counter() - t_all
    results = {}
    for k, recs in meas.items():
        results[k] = {"precision": variants[k], "measured_folds": recs,
                      "extrapolated": extrapolate(recs, epochs_measured, epochs, len(folds), len(dataset)),
                      "extrapolated_cpu_time": extrapolate(recs, epochs_measured, epochs, len(folds), len(dataset),
                                                           "cpu_")}
    for k in variants:
        if k != PEER:
            for x in ("extrapolated", "extrapolated_cpu_time"):
                results[k][f"speedup_x_before_{x}"] = results[PEER][x]["loso_s"] / results[k][x]["loso_s"]
    return {
        "benchmark": "loso_walltime",
        "what": "wall time of a CAS(ME)3-sized LOSO run (100 subjects, 860 clips, 3 classes, setting VI, "
                f"{epochs} epochs, batch 32, psyau train defaults) on a synthetic set at the model's input level; "
                "before (the model computing as before the speed work, fp32) and after (today, fp32 and bf16)",
        "extrapolation": {
            "is_extrapolation": True,
            "measured": f"the first {n_folds_measured} LOSO folds x {epochs_measured} epochs per variant, "
                        "variants interleaved fold by fold",
            "formula": "fold(E) = t_fold_measured + (E - k) * t_epoch; LOSO(E) = F * mean fold(E); "
                       "with final model: + fold(E) + E * t_epoch * (N / n_train - 1); "
                       "t_epoch = median time of epochs 2..k (each epoch incl. its checkpoint write)",
            "clocks": "'extrapolated': wall clock; 'extrapolated_cpu_time': the same formula on process CPU "
                      "time (with 1 thread, the wall time the run would take on an otherwise idle core; the "
                      "steadier figure on a shared machine)",
            "k": epochs_measured, "E": epochs, "F": len(folds), "N": len(dataset),
        },
        "dataset": {"subjects": SUBJECTS, "clips": len(dataset), "classes": CLASSES,
                    "item": "x (65,3,5,5), pos (65,2), flow (1,3,28,28), au (1,12), y (1,); random"},
        "measured_wall_s": measured_s,
        "malloc": "keep_freed_memory() (as the psyau command)",
        "threads": torch.get_num_threads(),
        "machine": machine_info(start_load),
        "results": results,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=2, help="LOSO folds measured per variant (default: 2)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs measured per fold (default: 8)")
    ap.add_argument("--full-epochs", type=int, default=50, help="epochs of the run extrapolated to (default: 50)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.folds < 1 or args.epochs < 2:
        raise SystemExit("loso_walltime: --folds must be >= 1 and --epochs >= 2 (epoch 1 is not steady state)")
    keep_freed_memory()
    res = run(args.folds, args.epochs, args.full_epochs, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(res, fh, indent=2)
    os.replace(tmp, args.out)
    for k, r in res["results"].items():
        x = r["extrapolated"]
        c = r["extrapolated_cpu_time"]
        extra = (f" ({r['speedup_x_before_extrapolated']:.2f}x before wall, "
                 f"{r['speedup_x_before_extrapolated_cpu_time']:.2f}x CPU)" if k != PEER else "")
        print(f"{k:<12} epoch {x['t_epoch_s']:.2f} s (CPU {c['t_epoch_s']:.2f} s), LOSO {x['loso_h']:.2f} h "
              f"(CPU {c['loso_h']:.2f} h), + final model {x['loso_plus_final_model_h']:.2f} h{extra}")
    print(f"wrote {args.out} (measured {res['measured_wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
