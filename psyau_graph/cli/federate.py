"""``psyau federate``: federated training (local | FedAvg | FedProx | P-FedProx) on one of
three engines: in-process, Flower simulation, Flower deployment (loopback)."""
from __future__ import annotations

import argparse
import json
import sys

STRATEGY_CHOICES = ("local", "fedavg", "fedprox", "p-fedprox")


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
                   help="'all' (default) or a comma list of local,fedavg,fedprox,p-fedprox")
    p.add_argument("--engine", choices=("inprocess", "simulation", "deployment"), default="inprocess")
    p.add_argument("--out", required=True, help="output folder (JSON, CSV, plots)")
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default: 1e-5)")
    p.add_argument("--batch-size", type=int, default=32, help="local batch size (default: 32)")
    p.add_argument("--mu", type=float, default=0.001, help="proximal weight alpha4 (default: 0.001)")
    p.add_argument("--theta", type=float, default=0.9, help="P-FedProx own-model weight (default: 0.9)")
    p.add_argument("--repeats", type=int, default=10, help="random 70/30 splits (default: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-clients", type=int, default=1,
                   help="accepted client updates a round needs (default: 1)")
    p.add_argument("--share-bn-stats", action="store_true",
                   help="also share BatchNorm running statistics (default: kept local, FedBN)")
    p.add_argument("--dp-noise-multiplier", type=float, default=0.0,
                   help="client-level differential privacy noise multiplier sigma; 0 = off "
                        "(Flower engines, fedavg/fedprox)")
    p.add_argument("--dp-clipping-norm", type=float, default=1.0,
                   help="L2 clipping norm of each client update (default: 1.0)")
    p.add_argument("--dp-delta", type=float, default=1e-5, help="delta for the reported epsilon")
    p.add_argument("--label-scheme", default=None, help="label scheme of the cache (default: its own)")
    p.add_argument("--ablation", default="VI", help="model ablation setting (default: VI)")
    p.add_argument("--task", choices=("fedpsyau", "toy"), default="fedpsyau",
                   help="'toy': a tiny MLP on a toy tensor file, for trying the engines")
    p.add_argument("--node-data", nargs="+", default=None,
                   help="deployment: one data folder per SuperNode (each node reads only its own)")
    p.add_argument("--tls", action="store_true", help="deployment: TLS with a generated test CA")
    p.add_argument("--warm-clientapps", action="store_true",
                   help="deployment: SuperNodes in process isolation with a warm executor each "
                        "(a pre-imported process forked per message, no flwr-clientapp start-up)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from psyau_graph.federated.config import FederatedConfig
    from psyau_graph.federated.results import summarize, summary_table, write_csv, write_json

    out = Path(args.out)
    if args.task == "toy":
        task_spec = {"name": "toy"}
    else:
        task_spec = {"name": "fedpsyau", "label_scheme": args.label_scheme,
                     "model_config": {"ablation": args.ablation}}
    common = dict(clients=args.clients, rounds=args.rounds, local_epochs=args.local_epochs,
                  lr=args.lr, batch_size=args.batch_size, mu=args.mu, theta=args.theta,
                  repeats=args.repeats, seed=args.seed, min_clients=args.min_clients,
                  share_bn_stats=args.share_bn_stats, dp_noise_multiplier=args.dp_noise_multiplier,
                  dp_clipping_norm=args.dp_clipping_norm, dp_delta=args.dp_delta)
    try:  # validate every configuration before anything starts
        configs = {s: FederatedConfig(strategy=s, **common) for s in args.strategy}
    except ValueError as exc:
        print(f"psyau federate: error: {exc}", file=sys.stderr)
        return 2
    if args.engine == "deployment" and not args.node_data:
        raise SystemExit("psyau federate: --engine deployment needs --node-data DIR [DIR ...] "
                         "(one data folder per SuperNode)")
    if args.engine == "deployment" and len(args.node_data) != args.clients:
        raise SystemExit(f"psyau federate: --clients {args.clients} but {len(args.node_data)} "
                         "--node-data folders")

    from psyau_graph.federated.run import FederatedRun, write_outputs
    from psyau_graph.federated.task import make_task

    if args.task == "fedpsyau" and any(s != "local" for s in configs) and args.engine != "inprocess":
        # the server builds the initial model without seeing data: tell it the class count
        probe = make_task(task_spec)
        probe.load_dataset(args.node_data[0] if args.engine == "deployment" else args.data)
        task_spec["model_config"]["num_classes"] = probe.num_classes

    task = make_task(task_spec)
    records, engines = [], {}
    dataset = None
    for s, cfg in configs.items():
        engine = "inprocess" if s == "local" else args.engine
        engines[s] = engine
        if engine == "inprocess":
            try:
                run_ = FederatedRun(dataset if dataset is not None else args.data, cfg, task=task)
            except ValueError as exc:  # e.g. more clients than subjects
                print(f"psyau federate: error: {exc}", file=sys.stderr)
                return 2
            dataset = run_.dataset
            res = run_.run(out / s)
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
