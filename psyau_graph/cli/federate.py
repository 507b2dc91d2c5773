"""``psyau federate``: federated training (local | FedAvg | FedProx | P-FedProx | FedRep |
FedAS | ELLP) on one of three engines: in-process, Flower simulation, Flower deployment
(loopback). FedRep, FedAS and ELLP run in-process only."""
from __future__ import annotations

import argparse
import json
import sys

from ._compute import add_compute_args, check_compute_args

# Copies of federated.config.STRATEGIES and federated.personalized.PERSONAL_STRATEGIES, kept
# here so that building the parser (``psyau --help``) does not import torch; a test checks
# that they stay equal.
STRATEGY_CHOICES = ("local", "fedavg", "fedprox", "p-fedprox", "fedrep", "fedas", "ellp")
#: strategies the Flower engines do not run yet
INPROCESS_ONLY = ("fedrep", "fedas", "ellp")


def _strategies(text: str) -> list[str]:
    items = list(STRATEGY_CHOICES) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in STRATEGY_CHOICES]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"unknown strategy {bad or text!r}; use 'all' or a comma list of {', '.join(STRATEGY_CHOICES)}")
    return items


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("federate", help="federated training across subject-disjoint clients",
                              description=__doc__)
    p.add_argument("--data", required=True,
                   help="preprocessed cache folder (toy task: a toy .pt file)")
    p.add_argument("--clients", type=int, default=5, help="number of clients K (default: 5)")
    p.add_argument("--rounds", type=int, default=15, help="communication rounds R (default: 15)")
    p.add_argument("--local-epochs", type=int, default=50, help="local epochs E (default: 50)")
    p.add_argument("--strategy", type=_strategies, default=list(STRATEGY_CHOICES),
                   help="'all' (default) or a comma list of " + ",".join(STRATEGY_CHOICES)
                        + " (fedrep, fedas, ellp: in-process engine only)")
    p.add_argument("--engine", choices=("inprocess", "simulation", "deployment"), default="inprocess")
    p.add_argument("--out", required=True, help="output folder (JSON, CSV, plots)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default: 1e-5)")
    p.add_argument("--batch-size", type=int, default=32, help="local batch size (default: 32)")
    p.add_argument("--mu", type=float, default=0.001, help="proximal weight alpha4 (default: 0.001)")
    p.add_argument("--theta", type=float, default=0.9, help="P-FedProx own-model weight (default: 0.9)")
    p.add_argument("--repeats", type=int, default=10, help="random 70/30 splits (default: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-clients", default="all",
                   help="quorum: accepted client updates a round needs: 'all' (default), an integer N, "
                        "or a fraction in (0, 1] of the clients; below it the run stops naming the "
                        "failed clients and the round")
    p.add_argument("--aggregation", choices=("mean", "median", "trimmed-mean"), default="mean",
                   help="fedavg/fedprox aggregation: sample-weighted mean (default), coordinate-wise "
                        "median or trimmed mean (in-process engine)")
    p.add_argument("--trim-fraction", type=float, default=0.2,
                   help="fraction cut at each end by --aggregation trimmed-mean (default: 0.2)")
    p.add_argument("--norm-bound", type=float, default=0.0,
                   help="scale down updates whose norm exceeds this multiple of the round's median "
                        "update norm; 0 = off (default; in-process engine)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the per-round server checkpoint in --out "
                        "(same arguments; in-process engine)")
    p.add_argument("--share-bn-stats", action="store_true",
                   help="also share BatchNorm running statistics (default: kept local, FedBN)")
    p.add_argument("--dp-noise-multiplier", type=float, default=0.0,
                   help="client-level differential privacy noise multiplier sigma; 0 = off "
                        "(Flower engines, fedavg/fedprox)")
    p.add_argument("--dp-clipping-norm", type=float, default=1.0,
                   help="L2 clipping norm of each client update (default: 1.0)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="delta for the reported epsilon")
    p.add_argument("--balance", choices=("subjects", "samples"), default="subjects",
                   help="client split: equal subject counts per client (default, the paper) or "
                        "near-equal sample counts")
    p.add_argument("--pfedprox-eval", choices=("local", "mixture"), default="local",
                   help="score P-FedProx clients with their locally trained model (default) or "
                        "with the next round's personalised mixture")
    p.add_argument("--personal", nargs="+", default=None, metavar="PREFIX",
                   help="FedRep/FedAS/ELLP: state-dict prefixes kept on the client "
                        "(default: the classifier head, dsi.fc)")
    p.add_argument("--head-epochs", type=int, default=None,
                   help="FedRep: head epochs per round (default: max(1, E // 5); the body gets the rest)")
    p.add_argument("--align-epochs", type=int, default=1,
                   help="FedAS: head alignment epochs per round (default: 1)")
    p.add_argument("--au-module", default=None,
                   help="pretrained AU module (psyau pretrain output) loaded into every client's model")
    p.add_argument("--freeze-au", action="store_true",
                   help="keep the loaded AU module frozen (not trained, not shared), as the authors")
    p.add_argument("--label-scheme", default=None, help="label scheme of the cache (default: its own)")
    p.add_argument("--ablation", default="VI", help="model ablation setting (default: VI)")
    p.add_argument("--task", choices=("fedpsyau", "toy"), default="fedpsyau",
                   help="'toy': a tiny MLP on a toy tensor file, for trying the engines")
    p.add_argument("--node-data", nargs="+", default=None,
                   help="deployment: one data folder per SuperNode (each node reads only its own)")
    p.add_argument("--tls", action="store_true", help="deployment: TLS with a generated test CA")
    add_compute_args(p)
    p.add_argument("--warm-clientapps", action="store_true",
                   help="deployment: SuperNodes in process isolation with a warm executor each "
                        "(a pre-imported process forked per message, no flwr-clientapp start-up)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from psyau_graph.federated.config import FederatedConfig, parse_min_clients
    from psyau_graph.federated.results import summarize, summary_table, write_csv, write_json

    out = Path(args.out)
    try:  # first: resolves --device auto, which the configs below record
        check_compute_args(args)
    except ValueError as exc:
        print(f"psyau federate: error: {exc}", file=sys.stderr)
        return 2
    if args.task == "toy":
        task_spec = {"name": "toy"}
    else:
        task_spec = {"name": "fedpsyau", "label_scheme": args.label_scheme,
                     "model_config": {"ablation": args.ablation}}
        if args.au_module is not None or args.freeze_au:
            task_spec.update(au_module=args.au_module, freeze_au=args.freeze_au)
    common = dict(clients=args.clients, rounds=args.rounds, local_epochs=args.local_epochs,
                  lr=args.lr, batch_size=args.batch_size, mu=args.mu, theta=args.theta,
                  repeats=args.repeats, seed=args.seed, min_clients=parse_min_clients(args.min_clients),
                  share_bn_stats=args.share_bn_stats, dp_noise_multiplier=args.dp_noise_multiplier,
                  dp_clipping_norm=args.dp_clipping_norm, dp_delta=args.dp_delta,
                  balance=args.balance, pfedprox_eval=args.pfedprox_eval,
                  personal_prefixes=tuple(args.personal or ()), head_epochs=args.head_epochs,
                  align_epochs=args.align_epochs,
                  precision=args.precision, device=args.device,
                  aggregation=args.aggregation, trim_fraction=args.trim_fraction, norm_bound=args.norm_bound)
    if args.task == "toy" and (args.au_module is not None or args.freeze_au):
        print("psyau federate: error: --au-module/--freeze-au need --task fedpsyau", file=sys.stderr)
        return 2
    if args.engine != "inprocess" and any(s in INPROCESS_ONLY for s in args.strategy):
        print(f"psyau federate: warning: {','.join(s for s in args.strategy if s in INPROCESS_ONLY)} "
              f"run(s) on the in-process engine, not {args.engine} (recorded as 'engines' in "
              "summary.json)", file=sys.stderr)
    try:  # validate every configuration before anything starts
        configs = {s: FederatedConfig(strategy=s, **common) for s in args.strategy}
        if args.task == "fedpsyau" and (args.au_module is not None or args.freeze_au):
            from psyau_graph.federated.task import make_task as _check_task
            _check_task(task_spec)  # a missing AU-module file is a usage error
    except (ValueError, FileNotFoundError) as exc:
        print(f"psyau federate: error: {exc}", file=sys.stderr)
        return 2
    if args.engine == "deployment" and not args.node_data:
        raise SystemExit("psyau federate: --engine deployment needs --node-data DIR [DIR ...] "
                         "(one data folder per SuperNode)")
    if args.engine == "deployment" and len(args.node_data) != args.clients:
        raise SystemExit(f"psyau federate: --clients {args.clients} but {len(args.node_data)} "
                         "--node-data folders")

    from psyau_graph.federated.run import RoundFailed
    from psyau_graph.federated.task import make_task

    if args.task == "fedpsyau" and any(s != "local" for s in configs) and args.engine != "inprocess":
        # the server builds the initial model without seeing data: tell it the class count
        probe = make_task(task_spec)
        probe.load_dataset(args.node_data[0] if args.engine == "deployment" else args.data)
        task_spec["model_config"]["num_classes"] = probe.num_classes

    task = make_task(task_spec)
    if args.resume and args.engine != "inprocess":
        raise ValueError(f"--resume continues in-process runs only, not --engine {args.engine}")
    try:
        return _run_strategies(args, configs, task, task_spec, common, out)
    except RoundFailed as exc:  # below the quorum: one line (a programming error keeps its traceback)
        print(f"psyau federate: error: {exc}", file=sys.stderr)
        return 1


def _run_strategies(args, configs, task, task_spec, common, out) -> int:
    from psyau_graph.federated.results import summarize, summary_table, write_csv, write_json
    from psyau_graph.federated.run import FederatedRun, write_outputs

    records, engines = [], {}
    dataset = None
    for s, cfg in configs.items():
        engine = "inprocess" if s == "local" or s in INPROCESS_ONLY else args.engine
        engines[s] = engine
        if engine == "inprocess":
            try:
                run_ = FederatedRun(dataset if dataset is not None else args.data, cfg, task=task)
            except ValueError as exc:  # e.g. more clients than subjects
                print(f"psyau federate: error: {exc}", file=sys.stderr)
                return 2
            dataset = run_.dataset
            res = run_.run(out / s, resume=args.resume)
        elif engine == "simulation":
            from psyau_graph.federated.flower.simulation import run_simulation
            recs = []
            for r in range(cfg.repeats):
                res = run_simulation(args.data, cfg, task_spec, None, repeat=r)
                res.pop("strategy_object", None)
                for rec in res["records"]:
                    rec["repeat"] = r
                recs += res["records"]
            res["records"] = recs
            res["summary"] = summarize(recs)
            write_outputs(res, out / s)
        else:
            from psyau_graph.federated.flower.deployment import LocalDeployment
            recs = []
            with LocalDeployment(out / s / "deployment", args.node_data, tls=args.tls,
                                 warm=args.warm_clientapps) as dep:
                for r in range(cfg.repeats):
                    res = dep.run(cfg, task_spec, out / s / f"repeat{r}", repeat=r)
                    for rec in res["records"]:
                        rec["repeat"] = r
                    recs += res["records"]
            res["records"] = recs
            res["summary"] = summarize(recs)
            write_outputs(res, out / s)
        records += res["records"]
    summary = summarize(records)
    write_json(out / "summary.json", {"engines": engines, "summary": summary,
                                      "config": {k: v for k, v in common.items()}})
    write_csv(out / "metrics.csv", records)
    from psyau_graph.federated.plots import plot_clients, plot_loss
    plot_clients(records, out / "clients_uf1_uar.png")
    plot_loss(records, out / "loss_by_round.png")
    print(summary_table(summary))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers())
    a = ap.parse_args()
    raise SystemExit(json.dumps(a.func(a)))
