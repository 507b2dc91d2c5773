"""``psyau train``: train and test FED-PsyAU on a preprocessed cache under a protocol."""
from __future__ import annotations

import argparse

from ._compute import add_compute_args, check_compute_args
from ._prior import add_prior_arg, resolve_prior


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train and evaluate under LOSO / k-fold / repeated splits",
        description="Train FED-PsyAU on a preprocessed cache (psyau preprocess) under an evaluation protocol; "
                    "writes results.json, predictions.csv, plots and a final model.pt to --out.")
    p.add_argument("--data", required=True, help="preprocessed cache folder (from `psyau preprocess`)")
    p.add_argument("--protocol", default="loso",
                   help="loso | kfold:K | split:0.7x10 | megc | lodo (default: loso)")
    p.add_argument("--classes", default=None, help="label scheme, e.g. megc3, casme3_3, dfme7, synth "
                                                   "(default: the dataset's own labels)")
    p.add_argument("--megc-list", default=None,
                   help="MEGC 2019 composite label list (CSV): train and test only on the clips it names "
                        "(e.g. the 442 composite clips of a CASME II + SAMM + SMIC cache); see docs/flow_images.md")
    p.add_argument("--ablation", default="VI", help="ablation setting I..XII (default: VI, the full model)")
    add_prior_arg(p)
    p.add_argument("--epochs", type=int, default=50, help="training epochs per fold (default: 50)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default: 0.01)")
    p.add_argument("--warmup-epochs", type=int, default=10,
                   help="linear warm-up epochs, capped at epochs//5 (default: 10)")
    p.add_argument("--beta-schedule", default="constant", choices=["constant", "linear", "cosine", "authors"],
                   help="schedule of the prior weight beta (default: constant)")
    p.add_argument("--beta0", type=float, default=0.3, help="initial beta (default: 0.3)")
    p.add_argument("--select", default="last", choices=["last", "val"],
                   help="report the last epoch, or the best epoch on a validation split carved from the "
                        "training subjects (default: last)")
    p.add_argument("--val-frac", type=float, default=0.15, help="validation subject fraction for --select val")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--grad-clip", type=float, default=None, help="max gradient norm (default: none)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (default: 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)")
    p.add_argument("--au-pos-weight", choices=("train", "none"), default="train",
                   help="AU losses: 'train' (default) weights each AU's positive term by n_neg/n_pos of the "
                        "training fold's known AU labels, clipped to [1, 50], so rare AUs are not drowned "
                        "by their absences; 'none': plain BCE. Unknown AU labels (no AU coding, '?' cells) "
                        "are left out of the AU losses and of AU-F1 either way; AU-F1 counts an AU as "
                        "present when its sigmoid probability is >= 0.5")
    p.add_argument("--no-final-model", action="store_true",
                   help="skip training the final model on all samples (model.pt)")
    add_compute_args(p)
    p.set_defaults(_run=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.train.fit import TrainConfig
    from psyau_graph.train.protocols import parse_protocol, run_protocol

    parse_protocol(args.protocol)  # fail fast on a bad protocol string
    check_compute_args(args)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise SystemExit(f"psyau train: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        raise SystemExit(f"psyau train: --data {args.data!r} is not a folder (expected a preprocessed cache)")
    dataset = MEDataset(args.data, label_scheme=args.classes)
    if len(dataset) == 0:
        raise SystemExit(f"psyau train: no clips found in {args.data}")
    composite = None
    if args.megc_list:
        dataset, composite = _restrict_to_composite(dataset, args.megc_list)
    from psyau_graph.nn import FedPsyAUConfig
    from psyau_graph.nn.ablations import ablation_switches

    uses_prior = bool(ablation_switches(args.ablation)["data_prior"])
    prior_source, prior_record = resolve_prior(args.prior, dataset, args.out)
    prior_record["used_by_ablation"] = uses_prior
    if not uses_prior:
        print(f"note: ablation {args.ablation} has no data prior; --prior {args.prior} is recorded but not used")
    tc = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                     warmup_epochs=args.warmup_epochs, beta_schedule=args.beta_schedule, beta0=args.beta0,
                     seed=args.seed, grad_clip=args.grad_clip, num_workers=args.workers, select=args.select,
                     val_frac=args.val_frac, device=args.device, precision=args.precision,
                     au_pos_weight=args.au_pos_weight)
    res = run_protocol(dataset, args.protocol, FedPsyAUConfig(prior=prior_source), tc, args.out, ablation=args.ablation,
                       final_model=not args.no_final_model, resume=args.resume,
                       checkpoint_extra={"flow_method": _cache_flow_method(args.data)},
                       extra={"data": str(args.data), "classes": args.classes, "threads": args.threads,
                              "device": args.device, "precision": args.precision,
                              "prior": prior_record,
                              **({"megc_list": str(args.megc_list), "composite": composite} if composite else {})})
    print(format_summary(res))
    print(f"results: {Path(args.out) / 'results.json'}")
    if "final_model" in res:
        print(f"model:   {Path(args.out) / res['final_model']['path']}")
    return 0


def _restrict_to_composite(dataset, path):
    """The items of ``dataset`` a MEGC composite list names, and what did not match (printed)."""
    import torch

    from psyau_graph.data.megc import read_megc_list, select_composite

    names = dataset.class_names
    items = [(d.dataset, d.subject, d.clip, names[int(d.y)]) for d in dataset]
    pos, rep = select_composite(items, read_megc_list(path))
    if not pos:
        raise ValueError(f"--megc-list {path}: none of its {rep['listed']} clips is in the cache")
    print(f"composite list: {rep['selected']} of {rep['listed']} listed clips in the cache; "
          f"{len(rep['not_in_cache'])} not in the cache; {len(rep['label_disagreements'])} with another class "
          "in the cache than in the list (the cache's class is used)")
    for m in rep["not_in_cache"][:10]:
        print(f"  not in the cache: {m['dataset']}/{m['subject']}/{m['clip']} (list row {m['row']})")
    for m in rep["label_disagreements"][:10]:
        print(f"  class differs: {m['dataset']}/{m['subject']}/{m['clip']}: cache {m['cache']}, list {m['list']}")
    return dataset.index_select(torch.as_tensor(pos)), rep


def _cache_flow_method(cache) -> str | None:
    """Flow method recorded in the cache's clip files (None if they disagree or lack it)."""
    from pathlib import Path

    import torch

    methods = set()
    for p in sorted(Path(cache).glob("clips/*/*/*.pt"))[:50]:
        meta = torch.load(p, map_location="cpu", weights_only=True).get("meta", {})
        methods.add(meta.get("flow_method"))
    return methods.pop() if len(methods) == 1 else None


def format_summary(res: dict) -> str:
    """Short text table of a ``run_protocol`` result."""
    def f(v):
        return "  n/a " if v is None else f"{v:.4f}"

    h, p = res["headline"], res["pooled"]
    lines = [f"protocol {res['protocol']}  ablation {res['ablation']}  samples {res['n_samples']}  "
             f"subjects {res['n_subjects']}  folds {len(res['folds'])}",
             f"UF1 {f(h['uf1'])}  UAR {f(h['uar'])}  ({h['source']})",
             f"accuracy {f(p['acc'])}  AU-F1 {f(p.get('au_f1'))} (sigmoid >= 0.5, known labels)  "
             f"fold mean UF1 {f(res['fold_mean']['uf1'])} ± {f(res['fold_sd']['uf1'])}"]
    names = res["class_names"]
    lines.append("class        F1     recall  support")
    for i, n in enumerate(names):
        lines.append(f"{n[:11]:<11} {f(p['f1'][i])} {f(p['recall'][i])}  {p['support'][i]}")
    for d, m in res.get("per_dataset", {}).items():
        lines.append(f"[{d}] UF1 {f(m['uf1'])}  UAR {f(m['uar'])}  n {m['n']}")
    return "\n".join(lines)
