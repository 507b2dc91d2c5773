"""``psyau demo``: the whole system end to end on the built-in synthetic data.

synthetic clips → preprocessing (the real pipeline) → FED-PsyAU under subject k-fold
→ a reduced ablation (I, III, VI) → a short federated comparison (local, FedAvg,
FedProx, P-FedProx). Every plot and JSON goes to one output folder.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ._compute import add_compute_args, check_compute_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="end-to-end demo on built-in synthetic data",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--subjects", type=int, default=12, help="synthetic subjects (default: 12)")
    p.add_argument("--clips-per-subject", type=int, default=10, help="clips per subject (default: 10)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs per fold (default: 20)")
    p.add_argument("--folds", type=int, default=5, help="subject folds (default: 5)")
    p.add_argument("--flow", default="tvl1", choices=["tvl1", "dis", "farneback"],
                   help="optical flow method (default: tvl1, the pipeline's default)")
    p.add_argument("--ablations", default="I,III,VI", help="ablation settings (default: I,III,VI)")
    p.add_argument("--rounds", type=int, default=8, help="federated rounds (default: 8; 0 skips)")
    p.add_argument("--local-epochs", type=int, default=3, help="local epochs per round (default: 3)")
    p.add_argument("--fed-repeats", type=int, default=2,
                   help="random 70/30 splits inside each client, for error bars (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    add_compute_args(p)  # training and federated rounds; preprocessing stays on the CPU workers


def _check_args(args, ablations: list[str]) -> None:
    """Fail before any work starts, naming the argument (``psyau`` reports the ValueError)."""
    check_compute_args(args)
    from ..nn.ablations import ABLATIONS

    for name in ("subjects", "clips_per_subject", "epochs", "folds", "local_epochs", "fed_repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.rounds < 0:
        raise ValueError(f"--rounds must be >= 0, got {args.rounds}")
    if args.folds < 2 or args.folds > args.subjects:
        raise ValueError(f"--folds must lie in [2, --subjects={args.subjects}], got {args.folds}")
    if args.rounds > 0 and args.subjects < 3:
        raise ValueError(f"the federated comparison needs --subjects >= 3 (3 clients), "
                         f"got {args.subjects}; or pass --rounds 0")
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown or not ablations:
        raise ValueError(f"--ablations {args.ablations!r}: unknown setting(s) {unknown}; "
                         f"expected a comma-separated subset of {', '.join(ABLATIONS)}")


def run(args) -> int:
    import torch

    torch.set_num_threads(1)  # small models: one thread is faster on a busy 2-core machine
    from ..data.annotations import read_annotations
    from ..data.dataset import MEDataset
    from ..data.synth import generate_synthetic
    from ..nn import FedPsyAUConfig
    from ..preprocess.batch import preprocess_dataset
    from ..progress import LineProgress
    from ..train.fit import TrainConfig
    from ..train.protocols import run_protocol

    ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
    _check_args(args, ablations)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stages = LineProgress(4 if args.rounds > 0 else 3, "demo", "stage", every_pct=0)
    print(f"[1/4] synthetic data: {args.subjects} subjects x {args.clips_per_subject} clips")
    sheet = generate_synthetic(out / "synthetic", subjects=args.subjects,
                               clips_per_subject=args.clips_per_subject, seed=args.seed)
    df = read_annotations(sheet, dataset="synth")
    stages.update(1, "synthetic data written")
    print(f"[2/4] preprocessing {len(df)} clips ({args.flow} flow)")
    cache = out / "cache"
    report = preprocess_dataset(df, Path(sheet).parent, cache, dataset="synth", flow=args.flow, workers=2)
    skipped = report.get("skipped", []) if isinstance(report, dict) else []
    if skipped:
        print(f"      {len(skipped)} clips skipped, see {cache / 'report.json'}")
    dataset = MEDataset(cache, label_scheme="synth")
    print(f"      {len(dataset)} samples, classes: {', '.join(dataset.class_names)}")
    stages.update(1, "preprocessing done")

    rows = []
    tcfg = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=16, seed=args.seed, device=args.device,
                       precision=args.precision)
    print(f"[3/4] training, subject {args.folds}-fold, ablations {args.ablations}")
    for name in ablations:
        mcfg = FedPsyAUConfig.from_ablation(name, num_classes=dataset.num_classes)
        res = run_protocol(dataset, f"kfold:{args.folds}", mcfg, tcfg, out / f"ablation_{name}", ablation=name)
        rows.append((f"ablation {name}", res["headline"]["uf1"], res["headline"]["uar"]))
        print(f"      {name}: UF1 {res['headline']['uf1']:.3f}  UAR {res['headline']['uar']:.3f}")
    stages.update(1, "training done")

    if args.rounds > 0:
        from ..federated.compare import compare_strategies

        print(f"[4/4] federated comparison: 3 clients, {args.rounds} rounds x {args.local_epochs} local epochs, "
              f"{args.fed_repeats} split(s)")
        fed = compare_strategies(dataset, clients=3, rounds=args.rounds, local_epochs=args.local_epochs,
                                 repeats=args.fed_repeats,
                                 out_dir=out / "federated",
                                 model_config=FedPsyAUConfig(num_classes=dataset.num_classes),
                                 lr=1e-3, batch_size=16, seed=args.seed, device=args.device,
                                 precision=args.precision)
        print(fed["table"])
        stages.update(1, "federated comparison done")
    print("\nresults (pooled predictions of all folds)")
    print(f"{'setting':<16}{'UF1':>8}{'UAR':>8}")
    for name, f1, ar in rows:
        print(f"{name:<16}{f1:>8.3f}{ar:>8.3f}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s; every plot and JSON is in: {out.resolve()}")
    return 0
