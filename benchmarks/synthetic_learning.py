"""Synthetic-data learning benchmark: UF1/UAR of ablation settings under subject 5-fold.

Question: on the built-in synthetic micro-expression set (known AU-driven motion),
how well does each ablation setting of FED-PsyAU (SPEC §4: I, II, III, IV, V, VI, IX,
X, XI, XII) learn to recognise the emotion, under subject-wise 5-fold cross-validation
with pooled predictions, over several seeds?

Pipeline (all real code, no shortcuts): ``generate_synthetic`` (frames) →
``read_annotations(..., "synth")`` → ``preprocess_dataset`` (face, landmarks, alignment,
optical flow, ROIs) → ``MEDataset`` → ``run_protocol(..., "kfold:5", ablation=...)``.
The seed changes the weight initialisation, the shuffling and the subject folds; every
setting sees the same folds for a given seed. The peer measured in the same run is a
majority-class predictor on the same folds (chance level for UF1/UAR).

The epoch budget is fixed in advance to bound the run time (see ``--epochs``); the
numbers are what comes out, not tuned toward the paper's ordering.

``--au-mode real`` uses the real-statistics set (each clip's (AU set, emotion) pair
drawn from CASME II / SAMM coding-sheet rows, ``--au-source``); the data prior of the
settings that use one is then, by default (``--prior auto``), the co-occurrence prior of
exactly those rows (``psyau_graph.data.au_stats.stats_cooccurrence``), written as a CSV
into the work folder; in prototype mode ``auto`` is the package default (DFME).
Results go to ``results/synthetic_learning_real.json`` in real mode. After every
finished (setting, seed) cell the JSON is rewritten (``"partial": true`` with the run's
configuration), so an interrupted run keeps its cells; ``--resume`` continues it.

Run:  python benchmarks/synthetic_learning.py [--epochs 20] [--seeds 0 1 2]   (~37 min on a quiet 2-core machine)
Writes ``benchmarks/results/synthetic_learning.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _machine import load_average, machine_info

HERE = Path(__file__).resolve().parent
ABLATIONS = ("I", "II", "III", "IV", "V", "VI", "IX", "X", "XI", "XII")


def build_dataset(work: Path, *, subjects: int, clips: int, flow: str, workers: int, scheme: str,
                  au_mode: str = "prototype", au_source: str = "casme2+samm"):
    """Generate (cached) the synthetic set, preprocess it (cached) and open it."""
    from psyau_graph.data.annotations import read_annotations
    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.data.synth import SynthConfig, generate_synthetic
    from psyau_graph.preprocess.batch import preprocess_dataset

    tag = "" if au_mode == "prototype" else f"_{au_mode}_{au_source.replace('+', '_')}"
    frames, cache = work / f"frames{tag}", work / f"cache{tag}"
    t0 = time.perf_counter()
    cfg = SynthConfig(subjects=subjects, clips_per_subject=clips, seed=0, au_mode=au_mode, au_source=au_source)
    sheet = generate_synthetic(frames, config=cfg)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = read_annotations(sheet, "synth")
    report = preprocess_dataset(df, frames, cache, dataset="synth", flow=flow, workers=workers)
    t_pre = time.perf_counter() - t0
    ds = MEDataset(cache, label_scheme=scheme)
    return ds, {"generate_s": t_gen, "preprocess_s": t_pre, "skipped": len(report.get("skipped", []))}


def majority_baseline(ds, seed: int) -> dict:
    """UF1/UAR of predicting the training folds' most frequent class (same folds as the models)."""
    import numpy as np

    from psyau_graph.train.metrics import uar, uf1
    from psyau_graph.train.protocols import make_folds

    y = np.array([int(ds[i].y.reshape(-1)[0]) for i in range(len(ds))])
    yt, yp = [], []
    for f in make_folds(ds, "kfold:5", seed=seed):
        maj = np.bincount(y[f["train"]], minlength=ds.num_classes).argmax()
        yt.append(y[f["test"]])
        yp.append(np.full(len(f["test"]), maj))
    yt, yp = np.concatenate(yt), np.concatenate(yp)
    return {"uf1": uf1(yt, yp, ds.num_classes), "uar": uar(yt, yp, ds.num_classes)}


def _ms(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def markdown_table(result: dict) -> str:
    lines = ["| setting | UF1 (mean ± sd) | UAR (mean ± sd) | AU F1 (mean ± sd) | train time / run (s) |",
             "|---|---|---|---|---|"]
    for name, r in result["settings"].items():
        au = "–" if r.get("au_f1_mean") is None else f"{r['au_f1_mean']:.3f} ± {r.get('au_f1_sd') or 0.0:.3f}"
        lines.append(f"| {name} | {r['uf1_mean']:.3f} ± {r['uf1_sd']:.3f} | {r['uar_mean']:.3f} ± {r['uar_sd']:.3f} "
                     f"| {au} | {r['time_s_median']:.0f} |")
    b = result["baseline_majority"]
    lines.append(f"| majority class (peer) | {b['uf1_mean']:.3f} ± {b['uf1_sd']:.3f} | "
                 f"{b['uar_mean']:.3f} ± {b['uar_sd']:.3f} | – | – |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=None, help="folder for frames/cache/runs (default: a temporary folder)")
    p.add_argument("--subjects", type=int, default=12)
    p.add_argument("--clips", type=int, default=10, help="clips per subject")
    p.add_argument("--scheme", default="synth", help="label scheme (default: synth, 7 classes)")
    p.add_argument("--flow", default="tvl1")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ablations", nargs="+", default=list(ABLATIONS))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default: 1; on a shared 2-core machine more threads were much slower)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="training/evaluation precision (default: fp32; bf16 = CPU/CUDA autocast)")
    p.add_argument("--au-mode", default="prototype", choices=["prototype", "real"],
                   help="AU sets of the synthetic set: FACS prototypes (default) or real CASME II / SAMM rows")
    p.add_argument("--au-source", default="casme2+samm", choices=["casme2", "samm", "casme2+samm"],
                   help="with --au-mode real: the sheets whose rows are drawn (default: casme2+samm)")
    p.add_argument("--prior", default="auto",
                   help="data prior of the settings that use one: auto (real mode: the co-occurrence prior of "
                        "the drawn rows; prototype mode: dfme), dfme, casme2, samm or a CSV path")
    p.add_argument("--note", default=None, help="free text stored in the JSON (e.g. how the budget was chosen)")
    p.add_argument("--merge", nargs="*", default=[],
                   help="result JSONs (partial or final) of the same configuration whose finished runs are kept, "
                        "e.g. seeds run in a second process")
    p.add_argument("--resume", action="store_true", help="keep finished runs found in --out (same settings)")
    p.add_argument("--out", default=None, help="result JSON (default: results/synthetic_learning.json, "
                                               "results/synthetic_learning_real.json with --au-mode real)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / "results" / ("synthetic_learning.json" if args.au_mode == "prototype"
                                           else "synthetic_learning_real.json"))
    start_load = load_average()

    import torch

    torch.set_num_threads(args.threads)
    from psyau_graph.nn import FedPsyAUConfig
    from psyau_graph.train.fit import AU_THRESHOLD, TrainConfig
    from psyau_graph.train.memory import keep_freed_memory

    keep_freed_memory()  # as the psyau command does
    from psyau_graph.train.protocols import atomic_write_text, run_protocol

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="psyau_synth_bench_")
        work = Path(tmp.name)
    else:
        work = Path(args.work)
    t_all = time.perf_counter()
    ds, prep = build_dataset(work, subjects=args.subjects, clips=args.clips, flow=args.flow,
                             workers=args.workers, scheme=args.scheme, au_mode=args.au_mode, au_source=args.au_source)
    print(f"dataset: {len(ds)} clips, {len(set(ds.subjects))} subjects, classes {list(ds.class_names)}", flush=True)
    prior, prior_info = args.prior, args.prior
    if args.prior == "auto" and args.au_mode == "real":
        from psyau_graph.data.au_stats import stats_cooccurrence
        from psyau_graph.priors import save_prior_csv

        prior = str(save_prior_csv(stats_cooccurrence(args.au_source), work / "prior_of_drawn_rows.csv",
                                   decimals=None))
        prior_info = f"co-occurrence prior of the drawn {args.au_source} rows (au_stats.stats_cooccurrence)"
    elif args.prior == "auto":
        prior, prior_info = "dfme", "dfme"
    mcfg = FedPsyAUConfig(prior=prior)
    import warnings

    from psyau_graph.nn import FedPsyAU

    with warnings.catch_warnings(record=True) as caught:  # what the prior does to the graphs, for the record
        warnings.simplefilter("always")
        FedPsyAU(FedPsyAUConfig.from_ablation("VI", num_classes=ds.num_classes, prior=prior))
    prior_warnings = sorted({str(w.message).replace(str(work), "<work>") for w in caught})
    data_cfg = {"subjects": args.subjects, "clips_per_subject": args.clips, "n_clips": len(ds),
                "au_mode": args.au_mode, "au_source": args.au_source if args.au_mode == "real" else None,
                "classes": list(ds.class_names), "flow": args.flow}
    train_cfg = {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seeds": args.seeds,
                 "precision": args.precision, "prior": prior_info, "prior_warnings": prior_warnings,
                 "threads": args.threads,
                 # AU loss and AU F1 rule (files written before these fields: plain BCE, "none")
                 "au_pos_weight": TrainConfig.au_pos_weight, "au_f1_rule": f"sigmoid >= {AU_THRESHOLD}, "
                 "known labels only, F1 per AU averaged over the AUs present in truth or prediction, "
                 "all folds pooled"}
    out = Path(args.out)
    runs, settings = [], {}
    done = {}

    def same_config(old: dict) -> bool:
        return (old.get("train", {}).get("epochs") == args.epochs and old.get("data", {}).get("n_clips") == len(ds)
                and old.get("train", {}).get("precision", "fp32") == args.precision
                and old.get("data", {}).get("au_mode", "prototype") == args.au_mode
                and old.get("data", {}).get("au_source") == data_cfg["au_source"]
                and old.get("train", {}).get("prior", "dfme") == prior_info
                and old.get("train", {}).get("au_pos_weight", "none") == TrainConfig.au_pos_weight)

    if args.resume and out.is_file():  # keep finished runs of an interrupted benchmark with the same settings
        old = json.loads(out.read_text())
        if same_config(old):
            done = {(r["ablation"], r["seed"]): r for r in old.get("runs", [])}
        else:
            print(f"--resume: {out} holds runs of other settings; starting afresh", flush=True)
    for other in args.merge:  # runs finished by another process (e.g. other seeds), same configuration required
        old = json.loads(Path(other).read_text())
        if not same_config(old):
            raise SystemExit(f"--merge {other}: its epochs/clips/precision/AU mode/prior/AU pos weight differ "
                             "from this run's")
        for r in old.get("runs", []):
            done.setdefault((r["ablation"], r["seed"]), r)
    # seed-major order: an interrupted run still holds every setting for the seeds it finished
    for seed in args.seeds:
        for ab in args.ablations:
            if (ab, seed) in done:
                runs.append(done[(ab, seed)])
                continue
            tc = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed, progress=False,
                             precision=args.precision)
            t0 = time.perf_counter()
            res = run_protocol(ds, "kfold:5", mcfg, tc, work / f"runs_{args.au_mode}" / f"{ab}_seed{seed}",
                               ablation=ab, plots=False)
            dt = time.perf_counter() - t0
            rec = {"ablation": ab, "seed": seed, "uf1": res["pooled"]["uf1"], "uar": res["pooled"]["uar"],
                   "acc": res["pooled"]["acc"], "au_f1": res["pooled"].get("au_f1"),
                   "fold_uf1": [f["uf1"] for f in res["folds"]], "time_s": dt}
            runs.append(rec)
            atomic_write_text(out, json.dumps({"partial": True, "note": args.note, "train": train_cfg,
                                               "data": data_cfg, "runs": runs, "machine": machine_info(start_load)},
                                              indent=1))
            print(f"{ab:>4} seed {seed}: UF1 {rec['uf1']:.3f}  UAR {rec['uar']:.3f}  ({dt:.0f} s)", flush=True)
    for ab in args.ablations:
        per = [r for r in runs if r["ablation"] == ab]
        uf, ufs = _ms([r["uf1"] for r in per])
        ua, uas = _ms([r["uar"] for r in per])
        au, aus = _ms([r["au_f1"] for r in per])
        settings[ab] = {"uf1_mean": uf, "uf1_sd": ufs, "uar_mean": ua, "uar_sd": uas, "au_f1_mean": au,
                        "au_f1_sd": aus, "time_s_median": statistics.median(r["time_s"] for r in per)}
    base = [majority_baseline(ds, s) for s in args.seeds]
    bu, bus = _ms([b["uf1"] for b in base])
    ba, bas = _ms([b["uar"] for b in base])
    result = {
        "benchmark": "synthetic_learning",
        "question": "UF1/UAR of FED-PsyAU ablation settings on the synthetic set, subject 5-fold, pooled predictions",
        "protocol": "kfold:5 (subject-wise), predictions of all folds pooled, last epoch reported",
        "data": {**data_cfg, **prep},
        "train": {**train_cfg, "warmup_epochs": "min(10, epochs // 5)", "beta_schedule": "constant 0.3",
                  "optimizer": "AdamW"},
        "note": args.note,
        "settings": settings, "baseline_majority": {"uf1_mean": bu, "uf1_sd": bus, "uar_mean": ba, "uar_sd": bas},
        "runs": runs,
        "machine": machine_info(start_load),
        "total_time_s": time.perf_counter() - t_all,
        "train_time_s_sum": sum(r["time_s"] for r in runs),  # includes runs kept by --resume / --merge
        "runs_kept_from_earlier": len(done),
    }
    atomic_write_text(out, json.dumps(result, indent=1))
    print(markdown_table(result))
    print(f"written: {out}  (total {result['total_time_s'] / 60:.1f} min)")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
