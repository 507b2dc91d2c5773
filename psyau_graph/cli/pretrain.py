"""``psyau pretrain``: pretrain the AU module (everything before the classifier) on a cache's AU labels."""
from __future__ import annotations

import argparse

from ._compute import add_compute_args, check_compute_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "pretrain", help="pretrain the AU module on AU labels (for federate --au-module)",
        description="Pretrain the AU module of FED-PsyAU (LFE, SSE, AFE, DPK-GAT and both AU heads) on the "
                    "AU labels of a preprocessed cache, as the paper does before MER, and write it to --out "
                    "(load it with `psyau federate --task fedpsyau --au-module FILE [--freeze-au]`). The "
                    "classifier is not trained. Reports AU F1 of both heads on the cache at the end.")
    p.add_argument("--data", required=True, help="preprocessed cache folder (from `psyau preprocess`)")
    p.add_argument("--out", required=True, help="AU-module file to write (written atomically)")
    p.add_argument("--classes", default=None,
                   help="label scheme of the cache (default: its own); only the class count of the model "
                        "depends on it, which the AU module does not")
    p.add_argument("--ablation", default="VI",
                   help="ablation setting I..XII of the model (default: VI); use the one federate gets")
    p.add_argument("--epochs", type=int, default=20, help="pretraining epochs (default: 20)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default: 1e-4)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    p.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay (default: 0.01)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--au-pos-weight", choices=("train", "none"), default="train",
                   help="'train' (default) weights each AU's positive BCE term by n_neg/n_pos of the cache's "
                        "known AU labels, clipped to [1, 50]; 'none': plain BCE. Unknown AU labels (no AU "
                        "coding, '?' cells) are left out of the loss and of AU F1 either way")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)")
    add_compute_args(p)
    p.set_defaults(_run=run)
    return p


def _check_args(args) -> None:
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2 (BatchNorm trains on batches), got {args.batch_size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if args.weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def run(args) -> int:
    from pathlib import Path

    _check_args(args)
    check_compute_args(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        raise SystemExit(f"psyau pretrain: --data {args.data!r} is not a folder (expected a preprocessed cache)")
    if out.is_dir():
        raise SystemExit(f"psyau pretrain: --out {args.out!r} is a folder (expected a file name, e.g. au.pt)")

    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.nn import FedPsyAU
    from psyau_graph.train.fit import dataset_au_labels, make_loader, seed_everything, train_pos_weight
    from psyau_graph.train.pretrain import au_module_f1, pretrain_au_module, save_au_module
    from psyau_graph.train.protocols import resolve_model_config

    dataset = MEDataset(data, label_scheme=args.classes)
    if len(dataset) == 0:
        raise SystemExit(f"psyau pretrain: no clips found in {args.data}")
    if len(dataset) < 2:
        raise SystemExit(f"psyau pretrain: {args.data} holds 1 clip; BatchNorm needs at least 2 to train")
    au, known = dataset_au_labels(dataset)
    n_known = int(known.sum())
    if n_known == 0:
        raise SystemExit(f"psyau pretrain: {args.data}: no clip has known AU labels (no AU coding); "
                         "nothing to pretrain on")
    pos_weight = train_pos_weight(dataset, args.au_pos_weight)

    # the same configuration `psyau train` / `psyau federate --ablation` build, so the file loads there
    config = resolve_model_config(None, int(dataset.num_classes), args.ablation)
    seed_everything(args.seed)
    model = FedPsyAU(config)
    model.au_module()  # an ablation without an AU path: one line, before anything runs
    loader = make_loader(dataset, args.batch_size, shuffle=True, seed=args.seed)
    clips_known = int((known.sum(1) > 0).sum())
    print(f"pretrain AU module: {len(dataset)} clips ({clips_known} with AU labels, {n_known} known AU "
          f"labels), ablation {config.ablation}, {args.epochs} epochs, device {args.device}, "
          f"precision {args.precision}, AU positive weights: {args.au_pos_weight}")
    history = pretrain_au_module(model, loader, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                 weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                                 precision=args.precision, pos_weight=pos_weight)
    scores = au_module_f1(model, make_loader(dataset, max(args.batch_size, 64), shuffle=False),
                          device=args.device, precision=args.precision)

    def _mean(head):
        return None if scores[head] is None else scores[head]["mean"]

    meta = {"data": str(args.data), "classes": args.classes, "ablation": config.ablation, "epochs": args.epochs,
            "lr": args.lr, "batch_size": args.batch_size, "weight_decay": args.weight_decay, "seed": args.seed,
            "au_pos_weight": args.au_pos_weight,
            "pos_weight": None if pos_weight is None else [float(w) for w in pos_weight],
            "device": args.device, "precision": args.precision, "threads": args.threads, "n_clips": len(dataset),
            "au_labels_known": n_known, "loss_history": [float(x) for x in history],
            "au_threshold": scores["threshold"], "au_f1_afe": _mean("afe"), "au_f1_gat": _mean("gat"),
            "au_f1_afe_per_au": scores["afe"]["per_au"],
            "au_f1_gat_per_au": None if scores["gat"] is None else scores["gat"]["per_au"]}
    path = save_au_module(model, out, meta=meta)
    print(f"AU loss (mean per epoch): epoch 1 {history[0]:.4f}, epoch {len(history)} {history[-1]:.4f}")

    def _fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(f"AU F1 on {args.data} (sigmoid >= {scores['threshold']}, {n_known} known labels, training data): "
          f"AFE head {_fmt(_mean('afe'))}  GAT head {_fmt(_mean('gat'))}")
    print(f"AU module: {path}")
    return 0
