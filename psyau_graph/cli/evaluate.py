"""``psyau evaluate``: score a saved model on a preprocessed cache."""
from __future__ import annotations

import argparse

from ._compute import add_compute_args, check_compute_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("evaluate", help="evaluate a trained model on a preprocessed cache",
                              description="Load a model.pt written by `psyau train` and report UF1/UAR, "
                                          "accuracy, per-class and AU F1 on every clip of --data.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (model.pt from `psyau train`)")
    p.add_argument("--data", required=True, help="preprocessed cache folder")
    p.add_argument("--classes", default=None,
                   help="label scheme (default: the one stored in the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--out", default=None, help="folder for evaluation.json and confusion.png (optional)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_compute_args(p)
    p.set_defaults(_run=run)
    return p


def run(args) -> int:
    import json
    from pathlib import Path

    from psyau_graph.data.dataset import MEDataset
    from psyau_graph.train.checkpoint import build_model
    from psyau_graph.train.fit import evaluate, make_loader
    from psyau_graph.train.protocols import atomic_write_text, to_jsonable

    check_compute_args(args)
    model, ck = build_model(args.checkpoint)
    model.to(args.device)
    scheme = args.classes or ck.get("label_scheme")
    dataset = MEDataset(args.data, label_scheme=scheme)
    names = list(ck.get("class_names") or [])
    if names and list(getattr(dataset, "class_names", names)) != names:
        raise SystemExit(f"psyau evaluate: the cache's classes {list(dataset.class_names)} differ from the "
                         f"checkpoint's {names}; pass --classes with the scheme the model was trained on")
    num_classes = len(names) or int(dataset.num_classes)
    ev = evaluate(model, make_loader(dataset, args.batch_size, shuffle=False), num_classes=num_classes,
                  loss_weights=tuple(getattr(model.config, "loss_weights", (0.2, 0.8, 0.8))),
                  beta=ck.get("beta"), class_names=names or None, progress=True, device=args.device,
                  precision=args.precision)
    summary = {k: ev[k] for k in ("uf1", "uar", "acc", "loss", "au_f1", "au_threshold", "au_labels_known")}
    summary.update({"n": int(len(ev["y_true"])), "class_names": ev["report"]["class_names"],
                    "f1": ev["report"]["f1"], "recall": ev["report"]["recall"],
                    "confusion": ev["report"]["confusion"], "au_f1_per_au": ev["au_f1_per_au"],
                    "checkpoint": str(args.checkpoint), "data": str(args.data), "label_scheme": scheme,
                    "device": args.device, "precision": args.precision})
    if args.out:
        from psyau_graph.viz.training import plot_confusion

        out = Path(args.out)
        atomic_write_text(out / "evaluation.json", json.dumps(to_jsonable(summary), indent=1))
        plot_confusion(summary["confusion"], summary["class_names"], out / "confusion.png",
                       title=f"evaluation  UF1 {summary['uf1']:.3f}  UAR {summary['uar']:.3f}")
    if args.json:
        print(json.dumps(to_jsonable(summary), indent=1))
    else:
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"
        print(f"samples {summary['n']}  UF1 {f(summary['uf1'])}  UAR {f(summary['uar'])}  "
              f"accuracy {f(summary['acc'])}  AU-F1 {f(summary['au_f1'])} (sigmoid >= {summary['au_threshold']}, "
              f"{summary['au_labels_known']} known AU labels)")
        for i, n in enumerate(summary["class_names"]):
            print(f"  {n[:11]:<11} F1 {f(summary['f1'][i])}  recall {f(summary['recall'][i])}")
        if args.out:
            print(f"written: {Path(args.out) / 'evaluation.json'}, {Path(args.out) / 'confusion.png'}")
    return 0
