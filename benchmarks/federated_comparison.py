"""Federated comparison (the paper's Fig. 5): per-client UF1/UAR of seven strategies.

Question: on the built-in synthetic set, split over K clients with equal subject counts,
how do local-only training, FedAvg, FedProx, P-FedProx, FedRep, FedAS and ELLP score on
each client's own test split, and does P-FedProx beat the others by more than the spread
over random 70/30 splits?

Pipeline (all real code): ``generate_synthetic`` (frames; ``--au-mode`` passed on when
the generator has AU modes) → ``preprocess_dataset`` (TV-L1 flow, ROIs) → ``MEDataset`` →
one :class:`~psyau_graph.federated.run.FederatedRun` (in-process engine) per split and
strategy. The subject → client partition is fixed (``partition_seed = --seed``,
``balance="subjects"``); split *k* uses ``seed = --seed + k``, which draws every client's
70/30 split, the common initial model and the local shuffling, so within a split every
strategy sees the same clients, the same splits and the same initial weights (paired
comparison). Scores are those of the final round on each client's test split.

Peers measured in the same run: ``local`` (no federation) and a per-client majority-class
predictor (the training split's most frequent class, on the same test split).

Output (written atomically after every finished (split, strategy), so an interrupted run
leaves every finished run; ``--resume`` continues it): the JSON (``--out``) with the
configuration, the data, the machine, every final-round record, per-client mean ± sd
over splits, and the paired differences P-FedProx − each other strategy; the per-client
bar plot (``--plot``, via :func:`psyau_graph.federated.plots.plot_clients`, redrawn after
every split).

Budget: the defaults (4 clients × 4 subjects × 6 clips, 3 rounds × 2 local epochs, batch 4,
10 splits) were fixed in advance to finish within 35 min on a shared 2-core machine; the
numbers are what comes out, not tuned toward an ordering.

Run:  python benchmarks/federated_comparison.py [--rounds 3] [--local-epochs 2] [--splits 10]
Writes ``benchmarks/results/federated_comparison.json`` and ``federated_comparison.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _machine import load_average, machine_info  # noqa: E402

BENCHMARK = "federated_comparison"
SCHEMA = "psyau_graph.bench.federated_comparison/1"
#: the strategy the question is about
FOCUS = "p-fedprox"


class BenchError(ValueError):
    """Bad option or input of this benchmark (one line; exit status 2)."""


# ----------------------------------------------------------------------------- data
def synth_au_modes():
    """AU modes the installed generator offers: ``(modes or None, default)``.

    The generator has AU modes when :class:`~psyau_graph.data.synth.SynthConfig` has an
    ``au_mode`` field; the accepted values are then ``synth.AU_MODES`` when the module
    exports it (``None`` = not listed, the generator validates). A generator without the
    field has one mode only, drawing AU sets from the FACS prototypes per emotion
    (``"prototype"``).
    """
    from psyau_graph.data import synth

    fields = {f.name: f for f in dataclasses.fields(synth.SynthConfig)}
    if "au_mode" not in fields:
        return ("prototype",), "prototype"
    modes = getattr(synth, "AU_MODES", None)
    return (tuple(modes) if modes is not None else None), fields["au_mode"].default


def resolve_au_mode(mode: str | None) -> tuple[dict, str]:
    """``(SynthConfig keyword arguments, the mode recorded)`` for ``--au-mode``.

    Raises:
        BenchError: ``mode`` is not one the generator offers.
    """
    from psyau_graph.data import synth

    modes, default = synth_au_modes()
    has_field = "au_mode" in {f.name for f in dataclasses.fields(synth.SynthConfig)}
    if mode is None:
        return {}, str(default)
    if modes is not None and mode not in modes:
        raise BenchError(f"--au-mode {mode!r}: unknown AU mode; this generator offers "
                         f"{', '.join(map(repr, modes))}")
    if not has_field:
        return {}, mode
    try:  # modes not listed by the module: let the generator's own check speak, before any work
        synth.SynthConfig(au_mode=mode).validate()
    except (TypeError, ValueError) as exc:
        raise BenchError(f"--au-mode {mode!r}: rejected by the generator: {exc}") from None
    return {"au_mode": mode}, mode


def build_dataset(work: Path, *, subjects: int, clips: int, seed: int, flow: str, workers: int,
                  scheme: str, au_kwargs: dict):
    """Generate (cached in ``work``) the synthetic set, preprocess it (cached) and open it."""
    from psyau_graph.data.annotations import read_annotations
    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.data.synth import SynthConfig, generate_synthetic
    from psyau_graph.preprocess.batch import preprocess_dataset

    cfg = SynthConfig(subjects=subjects, clips_per_subject=clips, seed=seed, **au_kwargs)
    t0 = time.perf_counter()
    frames = work / "frames"
    info = frames / "synth_info.json"
    if info.is_file():  # a cached set made with other parameters would be silently reused
        old = json.loads(info.read_text()).get("config", {})
        now = json.loads(json.dumps(dataclasses.asdict(cfg)))
        if old != now:
            raise BenchError(f"--work {work}: holds a synthetic set made with other parameters "
                             f"({ {k: old.get(k) for k in now if old.get(k) != now[k]} }); "
                             "use another folder")
    sheet = generate_synthetic(frames, config=cfg, progress=False, workers=workers)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    df = read_annotations(sheet, "synth")
    report = preprocess_dataset(df, frames, work / "cache", dataset="synth", flow=flow, workers=workers)
    t_pre = time.perf_counter() - t0
    ds = MEDataset(work / "cache", label_scheme=scheme, progress=False)
    skipped = report.get("skipped", []) if isinstance(report, dict) else []
    return ds, {"generate_s": t_gen, "preprocess_s": t_pre, "skipped": len(skipped),
                "synth_config": dataclasses.asdict(cfg)}


# ----------------------------------------------------------------------------- statistics
def _ms(values) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (ddof = 1; 0 for one value) and count of the non-missing values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def final_records(records: list[dict]) -> list[dict]:
    """The final-round records with ``status == "ok"`` of each (strategy, split)."""
    last: dict = {}
    for r in records:
        key = (r["strategy"], r["repeat"])
        last[key] = max(last.get(key, 0), r["round"])
    return [r for r in records if r["round"] == last[(r["strategy"], r["repeat"])]
            and r.get("status", "ok") == "ok"]


def summarize_splits(records: list[dict], strategies: list[str], clients: int) -> dict:
    """Per strategy: per-client UF1/UAR mean ± sd over splits, and the client mean.

    ``mean``: per split the unweighted mean over the clients, then mean ± sd over splits
    (only splits where every client has a final-round score).
    """
    fin = final_records(records)
    out = {}
    for s in strategies:
        rs = [r for r in fin if r["strategy"] == s]
        per_client = {}
        for c in range(clients):
            cr = [r for r in rs if r["client"] == c]
            row = {}
            for m in ("uf1", "uar"):
                mean, sd, n = _ms(r.get(m) for r in cr)
                row.update({m: mean, f"{m}_sd": sd})
            row["splits"] = len(cr)
            per_client[str(c)] = row
        split_means = {}
        for m in ("uf1", "uar"):
            vals = []
            for k in sorted({r["repeat"] for r in rs}):
                got = [r[m] for r in rs if r["repeat"] == k and r.get(m) is not None]
                if len(got) == clients:
                    vals.append(statistics.fmean(got))
            split_means[m] = vals
        mean = {}
        for m in ("uf1", "uar"):
            mu, sd, n = _ms(split_means[m])
            mean.update({m: mu, f"{m}_sd": sd, "splits": n})
        out[s] = {"clients": per_client, "mean": mean}
    return out


def split_client_means(records: list[dict], strategy: str, clients: int, metric: str) -> dict[int, float]:
    """``{split: mean over clients of the final-round metric}`` (complete splits only)."""
    fin = [r for r in final_records(records) if r["strategy"] == strategy and r.get(metric) is not None]
    out = {}
    for k in sorted({r["repeat"] for r in fin}):
        got = [r[metric] for r in fin if r["repeat"] == k]
        if len(got) == clients:
            out[k] = statistics.fmean(got)
    return out


def paired_differences(records: list[dict], strategies: list[str], clients: int, focus: str = FOCUS,
                       tol: float = 1e-9) -> dict:
    """P-FedProx − every other strategy, paired by split (client-mean UF1 and UAR).

    Only the splits where every strategy has a complete final round enter (``splits_used``),
    so every comparison and the choice of the best other strategy use the same splits.
    For each other strategy and metric: the mean and sd (ddof = 1) over those splits of
    ``d_k = m_focus(k) − m_other(k)``, the number of splits, and a sign count (focus
    better / equal (|d| ≤ ``tol``) / worse). ``best_other`` is the other strategy with the
    highest mean client-mean score over those splits (per metric), chosen after the runs
    (a choice that favours the other strategy).
    """
    if focus not in strategies:
        return {}
    means_by = {m: {s: split_client_means(records, s, clients, m) for s in strategies} for m in ("uf1", "uar")}
    common = None
    for m in means_by:
        for v in means_by[m].values():
            common = set(v) if common is None else common & set(v)
    ks = sorted(common or ())
    out: dict = {"focus": focus, "splits_used": ks, "vs": {}, "best_other": {}}
    for m in ("uf1", "uar"):
        f = means_by[m][focus]
        means = {}
        for s in strategies:
            if s == focus:
                continue
            o = means_by[m][s]
            d = [f[k] - o[k] for k in ks]
            mean, sd, n = _ms(d)
            out["vs"].setdefault(s, {})[m] = {
                "mean_diff": mean, "sd_diff": sd, "splits": n,
                "better": sum(x > tol for x in d), "equal": sum(abs(x) <= tol for x in d),
                "worse": sum(x < -tol for x in d), "per_split": d}
            if ks:
                means[s] = statistics.fmean(o[k] for k in ks)
        if means:
            best = max(means, key=means.get)
            out["best_other"][m] = {"strategy": best, **out["vs"][best][m]}
    return out


def majority_peer(dataset, parts, cfg_for_split, splits: list[int], clients: int) -> dict:
    """Per client: UF1/UAR of predicting the training split's most frequent class."""
    import numpy as np

    from psyau_graph.federated.client import client_data
    from psyau_graph.train.metrics import uar, uf1

    y = np.array([int(dataset[i].y.reshape(-1)[0]) for i in range(len(dataset))])
    per = {str(c): {"uf1": [], "uar": []} for c in range(clients)}
    for k in splits:
        cfg = cfg_for_split(k)
        for c in range(clients):
            d = client_data(dataset, parts[c], cfg, 0, c)
            maj = np.bincount(y[d.train_idx], minlength=dataset.num_classes).argmax()
            yt = y[d.test_idx]
            yp = np.full(len(yt), maj)
            per[str(c)]["uf1"].append(uf1(yt, yp, dataset.num_classes))
            per[str(c)]["uar"].append(uar(yt, yp, dataset.num_classes))
    out = {}
    for c, v in per.items():
        row = {}
        for m in ("uf1", "uar"):
            mean, sd, n = _ms(v[m])
            row.update({m: mean, f"{m}_sd": sd})
        out[c] = row
    return out


def _f(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def markdown_tables(result: dict) -> str:
    """Per-client UF1 and UAR (mean ± sd over splits) and the paired differences."""
    clients = result["config"]["clients"]
    summ = result["summary"]
    lines = []
    for m in ("uf1", "uar"):
        head = "| strategy | " + " | ".join(f"client {c + 1}" for c in range(clients)) + " | client mean |"
        lines += [f"{m.upper()} (mean ± sd over splits)", "", head, "|---" * (clients + 2) + "|"]
        for s, v in summ.items():
            cells = [f"{_f(v['clients'][str(c)][m])} ± {_f(v['clients'][str(c)][m + '_sd'])}"
                     for c in range(clients)]
            lines.append(f"| {s} | " + " | ".join(cells) +
                         f" | {_f(v['mean'][m])} ± {_f(v['mean'][m + '_sd'])} |")
        peer = result.get("majority_peer")
        if peer:
            cells = [f"{_f(peer[str(c)][m])} ± {_f(peer[str(c)][m + '_sd'])}" for c in range(clients)]
            lines.append("| majority class (peer) | " + " | ".join(cells) + " | |")
        lines.append("")
    pd_ = result.get("paired", {})
    if pd_:
        lines += [f"Paired differences {pd_['focus']} − other (client-mean score, per split; "
                  f"{len(pd_['splits_used'])} splits)", "",
                  "| other | ΔUF1 mean ± sd | better/equal/worse | ΔUAR mean ± sd | better/equal/worse |",
                  "|---|---|---|---|---|"]
        for s, v in pd_["vs"].items():
            u, a = v["uf1"], v["uar"]
            lines.append(f"| {s} | {_f(u['mean_diff'])} ± {_f(u['sd_diff'])} | "
                         f"{u['better']}/{u['equal']}/{u['worse']} | {_f(a['mean_diff'])} ± "
                         f"{_f(a['sd_diff'])} | {a['better']}/{a['equal']}/{a['worse']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    from psyau_graph.federated.config import STRATEGIES

    p = argparse.ArgumentParser(prog="federated_comparison.py", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=4, help="clients K (default: 4)")
    p.add_argument("--subjects", type=int, default=16, help="synthetic subjects (default: 16, 4 per client)")
    p.add_argument("--clips-per-subject", type=int, default=6, help="clips per subject (default: 6)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic set (default: 0)")
    p.add_argument("--au-mode", default=None,
                   help="AU mode of the synthetic generator (default: the generator's default)")
    p.add_argument("--scheme", default="synth", help="label scheme (default: synth, 7 classes)")
    p.add_argument("--flow", default="tvl1", choices=["tvl1", "dis", "farneback"])
    p.add_argument("--workers", type=int, default=2, help="generation/preprocessing processes (default: 2)")
    p.add_argument("--strategies", default="all",
                   help=f"'all' or a comma list of {','.join(STRATEGIES)} (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="communication rounds R (default: 3)")
    p.add_argument("--local-epochs", type=int, default=2, help="local epochs E per round (default: 2)")
    p.add_argument("--splits", type=int, default=10, help="random 70/30 splits (default: 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="partition seed; split k uses seed + k (default: 0)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3, as the demo)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="local batch size (default: 4: 4 steps per epoch on a client's 17 training clips)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--work", default=None, help="folder for frames and cache (default: a temporary folder)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished (split, strategy) runs found in --out (same configuration)")
    p.add_argument("--out", default=str(HERE / "results" / f"{BENCHMARK}.json"))
    p.add_argument("--plot", default=None, help="bar plot PNG (default: --out with .png)")
    args = p.parse_args(argv)
    for name in ("clients", "subjects", "clips_per_subject", "rounds", "local_epochs", "splits",
                 "batch_size", "threads", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.clients > args.subjects:
        p.error(f"--clients {args.clients} exceeds --subjects {args.subjects} (clients are disjoint subject groups)")
    if not args.lr > 0:
        p.error(f"--lr must be > 0, got {args.lr}")
    if args.strategies.strip() == "all":
        args.strategy_list = list(STRATEGIES)
    else:
        args.strategy_list = [s.strip() for s in args.strategies.split(",") if s.strip()]
        bad = [s for s in args.strategy_list if s not in STRATEGIES]
        if bad or not args.strategy_list:
            p.error(f"--strategies {args.strategies!r}: unknown {bad}; expected 'all' or a comma list of "
                    f"{', '.join(STRATEGIES)}")
    try:
        args.au_kwargs, args.au_mode_used = resolve_au_mode(args.au_mode)
    except BenchError as exc:
        p.error(str(exc))
    args.plot = args.plot or str(Path(args.out).with_suffix(".png"))
    return args


def run(args) -> dict:
    start_load = load_average()
    import torch

    torch.set_num_threads(args.threads)
    from psyau_graph.federated.client import partition
    from psyau_graph.federated.config import FederatedConfig
    from psyau_graph.federated.plots import plot_clients
    from psyau_graph.federated.results import write_json
    from psyau_graph.federated.run import FederatedRun
    from psyau_graph.federated.task import FedPsyAUTask
    from psyau_graph.train.memory import keep_freed_memory

    keep_freed_memory()  # as the psyau command does
    t_all = time.perf_counter()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="psyau_fedcmp_")
        work = Path(tmp.name)
    else:
        work = Path(args.work)
    ds, data = build_dataset(work, subjects=args.subjects, clips=args.clips_per_subject,
                             seed=args.data_seed, flow=args.flow, workers=args.workers,
                             scheme=args.scheme, au_kwargs=args.au_kwargs)
    if len(ds) == 0:
        raise BenchError(f"the synthetic set in {work} gave no clips after preprocessing")
    print(f"dataset: {len(ds)} clips, {len(set(ds.subjects))} subjects, classes {list(ds.class_names)} "
          f"(generate {data['generate_s']:.0f} s, preprocess {data['preprocess_s']:.0f} s)", flush=True)
    task = FedPsyAUTask({"num_classes": ds.num_classes})

    def cfg_for(strategy: str, k: int) -> FederatedConfig:
        return FederatedConfig(clients=args.clients, rounds=args.rounds, local_epochs=args.local_epochs,
                               strategy=strategy, lr=args.lr, batch_size=args.batch_size, repeats=1,
                               seed=args.seed + k, partition_seed=args.seed, balance="subjects")

    subjects = [str(s) for s in ds.subjects]
    parts = partition(subjects, args.clients, args.seed, "subjects")
    client_subjects = [sorted({subjects[i] for i in p}) for p in parts]
    config = {"clients": args.clients, "rounds": args.rounds, "local_epochs": args.local_epochs,
              "splits": args.splits, "strategies": args.strategy_list, "seed": args.seed,
              "lr": args.lr, "batch_size": args.batch_size, "threads": args.threads,
              "engine": "inprocess", "balance": "subjects", "train_frac": 0.7,
              "split_seeds": [args.seed + k for k in range(args.splits)],
              "federated_config_split0": cfg_for(FOCUS, 0).to_dict()}
    data.update({"subjects": args.subjects, "clips_per_subject": args.clips_per_subject,
                 "data_seed": args.data_seed, "au_mode": args.au_mode_used,
                 "au_mode_passed_to_generator": bool(args.au_kwargs), "scheme": args.scheme,
                 "flow": args.flow, "n_clips": len(ds), "classes": list(ds.class_names),
                 "client_subjects": client_subjects, "client_samples": [int(len(p)) for p in parts]})
    out = Path(args.out)
    records: list[dict] = []
    runs: list[dict] = []
    sessions: list[dict] = []  # earlier (interrupted) processes of a resumed run
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        if old.get("schema") != SCHEMA or old.get("config", {}).get("federated_config_split0") != \
                json.loads(json.dumps(config["federated_config_split0"])) or \
                old.get("data", {}).get("n_clips") != len(ds):
            raise BenchError(f"--resume: {out} was written with another configuration; "
                             "remove it or drop --resume")
        runs = [r for r in old.get("runs", []) if r["split"] < args.splits and r["strategy"] in args.strategy_list]
        keep = {(r["split"], r["strategy"]) for r in runs}
        records = [r for r in old.get("records", []) if (r["repeat"], r["strategy"]) in keep]
        sessions = old.get("sessions", []) + [{"total_time_s": old.get("total_time_s"),
                                               "runs": len(old.get("runs", [])),
                                               "complete": old.get("complete"), "machine": old.get("machine")}]
        print(f"resume: {len(runs)} finished runs kept from {out}", flush=True)
    done = {(r["split"], r["strategy"]) for r in runs}

    def result(complete: bool) -> dict:
        finished = sorted(k for k in {r["split"] for r in runs}
                          if {r["strategy"] for r in runs if r["split"] == k} >= set(args.strategy_list))
        return {"schema": SCHEMA, "benchmark": BENCHMARK,
                "question": "per-client UF1/UAR of local / FedAvg / FedProx / P-FedProx / FedRep / FedAS / "
                            "ELLP on K clients with equal subject counts, over random 70/30 splits",
                "complete": complete, "config": config, "data": data,
                "scores": "final round, each client's own 30 % test split (model the client holds after "
                          "the round; P-FedProx: its locally trained model); sd = sample sd over splits",
                "summary": summarize_splits(records, args.strategy_list, args.clients),
                "paired": paired_differences(records, args.strategy_list, args.clients),
                "majority_peer": majority_peer(ds, parts, lambda k: cfg_for(FOCUS, k), finished,
                                               args.clients) if finished else {},
                "runs": runs, "records": records,
                "machine": machine_info(start_load),
                "total_time_s": time.perf_counter() - t_all, "sessions": sessions}

    for k in range(args.splits):
        for s in args.strategy_list:
            if (k, s) in done:
                continue
            t0 = time.perf_counter()
            res = FederatedRun(ds, cfg_for(s, k), task=task, progress=False).run(None)
            dt = time.perf_counter() - t0
            recs = [{**r, "repeat": k} for r in res["records"]]  # repeat = split index here
            records += recs
            fin = [r for r in recs if r["round"] == args.rounds]
            runs.append({"split": k, "strategy": s, "time_s": dt, "failures": len(res["failures"]),
                         "rejected": len(res["rejected"]),
                         "uf1": [r["uf1"] for r in sorted(fin, key=lambda r: r["client"])],
                         "uar": [r["uar"] for r in sorted(fin, key=lambda r: r["client"])]})
            write_json(out, result(False))
            mean_uf1 = statistics.fmean(r["uf1"] for r in fin)
            print(f"split {k} {s:<10} client-mean UF1 {mean_uf1:.3f} ({dt:.0f} s, "
                  f"elapsed {(time.perf_counter() - t_all) / 60:.1f} min)", flush=True)
        if records:
            plot_clients(final_records(records), args.plot)
    final = result(True)
    write_json(out, final)
    plot_clients(final_records(records), args.plot)
    if tmp is not None:
        tmp.cleanup()
    return final


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        final = run(args)
    except BenchError as exc:
        print(f"federated_comparison.py: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_tables(final))
    print(f"written: {args.out} and {args.plot} (total {final['total_time_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
