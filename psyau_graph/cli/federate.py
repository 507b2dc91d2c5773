"""``psyau federate``: federated training (local | FedAvg | FedProx | P-FedProx | FedRep |
FedAS | ELLP) on one of three engines: in-process, Flower simulation, Flower deployment
(loopback). Every strategy but local runs on every engine (local: in-process)."""
from __future__ import annotations

import argparse
import json
import sys

from ._compute import add_compute_args, check_compute_args

# Copies of federated.config.STRATEGIES and federated.personalized.PERSONAL_STRATEGIES, kept
# here so that building the parser (``psyau --help``) does not import torch; a test checks
# that they stay equal.
STRATEGY_CHOICES = ("local", "fedavg", "fedprox", "p-fedprox", "fedrep", "fedas", "ellp")
#: strategies that run in-process whatever --engine says (no federation: nothing to send)
INPROCESS_ONLY = ("local",)


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
                        + " (every engine; local always runs in-process)")
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
                        "median or trimmed mean (every engine; on Flower: Flower's FedMedian / "
                        "FedTrimmedAvg)")
    p.add_argument("--trim-fraction", type=float, default=0.2,
                   help="fraction cut at each end by --aggregation trimmed-mean (default: 0.2)")
    p.add_argument("--norm-bound", type=float, default=0.0,
                   help="scale down updates whose norm exceeds this multiple of the round's median "
                        "update norm; 0 = off (default; every engine, every strategy but local; "
                        "not with DP)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from the per-round server checkpoint in --out "
                        "(same arguments; every engine: OUT/STRATEGY/federation_state.pt in-process, "
                        "OUT/STRATEGY/repeatR/federation_state.pt on simulation and deployment, where "
                        "the clients restore their local state from their own state folders); "
                        "finished splits are read back, not run again")
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
    p.add_argument("--au-pos-weight", choices=("train", "none"), default="train",
                   help="AU losses: 'train' (default) weights each AU's positive term by n_neg/n_pos of the "
                        "known AU labels of the client's own training split (rare AUs are not drowned by "
                        "their absences); 'none': plain BCE. Unknown AU labels (no AU coding, '?' cells) "
                        "are left out of the AU losses either way")
    p.add_argument("--label-scheme", default=None, help="label scheme of the cache (default: its own)")
    p.add_argument("--ablation", default="VI", help="model ablation setting (default: VI)")
    p.add_argument("--prior", default="dfme",
                   help="data-driven prior D of the settings that use one: dfme (default: the authors' matrix), "
                        "casme2, samm (shipped) or a prior CSV path (every party must see the same file); "
                        "no 'auto' here (a prior of all clients' AU labels would pool their data). "
                        "Written to --out/prior.csv and recorded in summary.json")
    p.add_argument("--task", choices=("fedpsyau", "toy"), default="fedpsyau",
                   help="'toy': a tiny MLP on a toy tensor file, for trying the engines")
    p.add_argument("--node-data", nargs="+", default=None,
                   help="deployment: one data folder per SuperNode (each node reads only its own)")
    p.add_argument("--tls", action="store_true",
                   help="deployment: TLS with a freshly generated self-signed test CA")
    p.add_argument("--tls-certs", default=None, metavar="DIR",
                   help="deployment: TLS with DIR/ca.pem (CA certificate), DIR/server.pem and "
                        "DIR/server.key (the SuperLink's certificate and key)")
    p.add_argument("--insecure", action="store_true",
                   help="deployment: no TLS (plain text; for trials on one machine). Without it a "
                        "deployment needs --tls or --tls-certs and refuses to start otherwise")
    p.add_argument("--no-node-auth", action="store_true",
                   help="deployment: do not require SuperNode authentication. By default (with TLS) "
                        "the SuperLink accepts only SuperNodes whose public keys were registered "
                        "with it, each SuperNode signs in with its private key")
    p.add_argument("--node-keys", default=None, metavar="DIR",
                   help="deployment: DIR/node<i> (OpenSSH EC private key) and DIR/node<i>.pub per "
                        "SuperNode i; the .pub keys are registered (default: a fresh P-384 pair per "
                        "lab in OUT/<strategy>/deployment/node_keys, private keys mode 0600)")
    add_compute_args(p)
    p.add_argument("--warm-clientapps", action="store_true",
                   help="deployment: SuperNodes in process isolation with a warm executor each "
                        "(a pre-imported process forked per message, no flwr-clientapp start-up)")
    p.add_argument("--poll-interval", type=float, default=0.1,
                   help="deployment with --warm-clientapps: seconds between polls on the message "
                        "path (ServerApp, SuperExec, and the SuperNodes through the checked "
                        "fast_supernode launcher); 0 = Flower's own waits (default: 0.1)")
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
    prior_record = None
    if args.task == "toy":
        if args.prior != "dfme":
            print("psyau federate: error: --prior needs --task fedpsyau (the toy task has no AU graphs)",
                  file=sys.stderr)
            return 2
        task_spec = {"name": "toy"}
    else:
        from psyau_graph.errors import PsyauError

        from ._prior import resolve_prior

        if args.prior == "auto":
            raise PsyauError("--prior auto: not available for psyau federate (the prior of all clients' AU "
                             "labels would pool their data); give dfme, casme2, samm or a CSV path")
        prior_source, prior_record = resolve_prior(args.prior, None, out)  # writes --out/prior.csv
        task_spec = {"name": "fedpsyau", "label_scheme": args.label_scheme,
                     "model_config": {"ablation": args.ablation, "prior": prior_source},
                     "au_pos_weight": args.au_pos_weight}
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
    if args.task == "toy" and args.au_pos_weight != "train":
        print("psyau federate: error: --au-pos-weight needs --task fedpsyau (the toy task has no AU heads)",
              file=sys.stderr)
        return 2
    if args.engine != "inprocess" and any(s in INPROCESS_ONLY for s in args.strategy):
        print(f"psyau federate: note: {','.join(s for s in args.strategy if s in INPROCESS_ONLY)} "
              f"(no federation) runs on the in-process engine, not {args.engine} (recorded as "
              "'engines' in summary.json)", file=sys.stderr)
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
    deploy_security = _deployment_security(args)

    from psyau_graph.federated.run import RoundFailed
    from psyau_graph.federated.task import make_task

    if args.task == "fedpsyau" and any(s != "local" for s in configs) and args.engine != "inprocess":
        # the server builds the initial model without seeing data: tell it the class count
        probe = make_task(task_spec)
        probe.load_dataset(args.node_data[0] if args.engine == "deployment" else args.data)
        task_spec["model_config"]["num_classes"] = probe.num_classes

    task = make_task(task_spec)
    if args.resume:
        flower = [s for s in configs if s != "local" and s not in INPROCESS_ONLY and args.engine != "inprocess"]
        nothing = [s for s in flower if _split_status(out / s / "repeat0") == "fresh"]
        if nothing:
            print(f"psyau federate: error: --resume: nothing to resume in {out / nothing[0] / 'repeat0'} "
                  "(no federation_state.pt or metrics.json)", file=sys.stderr)
            return 2
    try:
        return _run_strategies(args, configs, task, task_spec, common, out, deploy_security,
                               prior_record)
    except RoundFailed as exc:  # below the quorum: one line (a programming error keeps its traceback)
        print(f"psyau federate: error: {exc}", file=sys.stderr)
        return 1


def _deployment_security(args) -> dict:
    """``LocalDeployment`` keyword arguments for TLS and node authentication, checked before
    anything starts. Raises ``PsyauError`` (one line, exit 2) on a bad combination or file."""
    from pathlib import Path

    from psyau_graph.errors import PsyauError

    given = [f for f, on in (("--tls", args.tls), ("--tls-certs", args.tls_certs is not None),
                             ("--insecure", args.insecure), ("--no-node-auth", args.no_node_auth),
                             ("--node-keys", args.node_keys is not None)) if on]
    if args.engine != "deployment":
        if given:
            raise PsyauError(f"{', '.join(given)}: deployment engine only (got --engine {args.engine})")
        return {}
    if args.tls and args.tls_certs is not None:
        raise PsyauError("--tls (generated test CA) and --tls-certs DIR exclude each other")
    tls = args.tls or args.tls_certs is not None
    if args.insecure and tls:
        raise PsyauError("--insecure and --tls/--tls-certs exclude each other")
    if not args.insecure and not tls:
        raise PsyauError("--engine deployment refuses to start without TLS: give --tls (a generated "
                         "test CA) or --tls-certs DIR, or --insecure for plain text on one machine")
    if args.node_keys is not None and (args.no_node_auth or args.insecure):
        raise PsyauError("--node-keys needs node authentication, which needs TLS "
                         "(drop --no-node-auth/--insecure)")
    kw = {"tls": tls, "node_auth": tls and not args.no_node_auth}
    if args.tls_certs is not None:
        root = Path(args.tls_certs)
        kw["certs"] = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key"}
        for path in kw["certs"].values():
            if not path.is_file():
                raise PsyauError(f"--tls-certs: {path} is missing (expected ca.pem, server.pem, server.key)")
    if args.node_keys is not None:
        from psyau_graph.federated.flower.node_auth import load_node_keys
        load_node_keys(args.node_keys, len(args.node_data))  # a bad or missing key file: one line
        kw["node_keys"] = args.node_keys
    return kw


def _split_status(folder) -> str:
    """``"done"`` (metrics.json written), ``"resume"`` (a server checkpoint) or ``"fresh"``."""
    if (folder / "metrics.json").is_file():
        return "done"
    if (folder / "federation_state.pt").is_file():
        return "resume"
    return "fresh"


def _flower_split(args, cfg, folder, r: int, start) -> dict:
    """One split on a Flower engine; with --resume a finished split is read back from its
    metrics.json (same configuration required) and an interrupted one continues."""
    status = _split_status(folder) if args.resume else "fresh"
    if status == "done":
        res = json.loads((folder / "metrics.json").read_text())
        if res.get("config") != cfg.to_dict():
            raise ValueError(f"cannot resume: {folder / 'metrics.json'} was written with another "
                             "configuration")
        return res
    return start(resume=status == "resume")


def _run_strategies(args, configs, task, task_spec, common, out, deploy_security=None,
                    prior_record=None) -> int:
    from psyau_graph.federated.results import summarize, summary_table, write_csv, write_json
    from psyau_graph.federated.run import FederatedRun, write_outputs

    if not (args.poll_interval == 0 or 0.01 <= args.poll_interval <= 3.0):
        print(f"psyau federate: error: --poll-interval must be 0 or between 0.01 and 3 seconds, "
              f"got {args.poll_interval}", file=sys.stderr)
        return 2
    records, engines, security, deployments = [], {}, {}, {}
    dataset = None
    for s, cfg in configs.items():
        engine = "inprocess" if s in INPROCESS_ONLY else args.engine
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
                folder = out / s / f"repeat{r}"

                def start(resume, folder=folder, r=r, cfg=cfg):
                    res = run_simulation(args.data, cfg, task_spec, folder, repeat=r, resume=resume)
                    res.pop("strategy_object", None)
                    return res
                res = _flower_split(args, cfg, folder, r, start)
                for rec in res["records"]:
                    rec["repeat"] = r
                recs += res["records"]
            res["records"] = recs
            res["summary"] = summarize(recs)
            write_outputs(res, out / s)
        else:
            from psyau_graph.federated.flower.deployment import LocalDeployment
            recs = []
            with LocalDeployment(out / s / "deployment", args.node_data,
                                 warm=args.warm_clientapps, poll_interval=args.poll_interval or None,
                                 **(deploy_security or {})) as dep:
                security[s] = dep.security()
                deployments[s] = dep.launch
                for r in range(cfg.repeats):
                    folder = out / s / f"repeat{r}"
                    res = _flower_split(args, cfg, folder, r, lambda resume, folder=folder, r=r, cfg=cfg:
                                        dep.run(cfg, task_spec, folder, repeat=r, resume=resume))
                    for rec in res["records"]:
                        rec["repeat"] = r
                    recs += res["records"]
            res["records"] = recs
            res["summary"] = summarize(recs)
            write_outputs(res, out / s)
        records += res["records"]
    summary = summarize(records)
    doc = {"engines": engines, "summary": summary, "config": {k: v for k, v in common.items()}}
    if prior_record is not None:
        doc["prior"] = prior_record
    if security:  # deployment: TLS, node authentication, registered key fingerprints per strategy
        doc["security"] = security
    if deployments:  # deployment: how the SuperNodes and ClientApps were started
        doc["deployment"] = deployments
    write_json(out / "summary.json", doc)
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
