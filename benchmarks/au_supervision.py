"""AU F1 of the FED-PsyAU network with the old and the new AU supervision, same data, same run.

The data set is the one of ``tests/test_au_supervision.py``: 600 training and 300 test
clips, every AU node in ~5 % of the clips (its mean ROI feature raised by 1.5, noise
std 1), a third of the clips without AU coding (their AU motion present all the same).
Two arms, trained from the same initial weights with the default ``fedpsyau_loss``:

* ``old``: the items carry no ``au_known`` (unknown AUs read as "no AU"), plain BCE;
* ``new``: ``au_known`` masks the unknown clips, positive weights from the training set
  (``au_pos_weight="train"``).

Both are scored on the same known test labels (AU F1 of the GAT head, sigmoid ≥ 0.5).
Writes ``results/au_supervision.json`` atomically with machine info::

    python benchmarks/au_supervision.py [--epochs 8] [--threads 1] [--out ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from _machine import load_average, machine_info  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "au_supervision.json"))
    args = p.parse_args(argv)
    start_load = load_average()

    import torch
    from torch_geometric.data import Data

    torch.set_num_threads(args.threads)
    from _fakes_train import FakeSet
    from test_au_supervision import _rare_au_items

    from psyau_graph.nn import FedPsyAU, FedPsyAUConfig
    from psyau_graph.train.fit import AU_THRESHOLD, TrainConfig, dataset_au_labels, evaluate, fit, make_loader
    from psyau_graph.train.protocols import atomic_write_text

    train, test = _rare_au_items(600, 0), _rare_au_items(300, 1, first_subject=50)
    au, known = dataset_au_labels(train)
    old_train = FakeSet([Data(**{k: v for k, v in d.items() if k != "au_known"}) for d in train], 3)
    arms = []
    for name, data, mode in (("old: unknown = no AU, plain BCE", old_train, "none"),
                             ("new: AU mask + positive weights from the training set", train, "train")):
        torch.manual_seed(args.seed)
        model = FedPsyAU(FedPsyAUConfig(num_classes=3))
        cfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup_epochs=0,
                          seed=args.seed, progress=False, au_pos_weight=mode)
        t0 = time.perf_counter()
        res = fit(model, data, cfg)
        ev = evaluate(model, make_loader(test, 64, shuffle=False), num_classes=3, beta=res.beta)
        arm = {"arm": name, "au_pos_weight": mode, "au_f1": ev["au_f1"], "au_f1_per_au": ev["au_f1_per_au"],
               "test_probabilities_at_or_above_threshold": float((ev["au_prob"] >= AU_THRESHOLD).mean()),
               "uf1": ev["uf1"], "uar": ev["uar"], "train_s": time.perf_counter() - t0,
               "weights": res.au_pos_weight}
        arms.append(arm)
        print(f"{name}: AU-F1 {arm['au_f1']:.3f}  probabilities >= {AU_THRESHOLD}: "
              f"{arm['test_probabilities_at_or_above_threshold']:.2%}  UF1 {arm['uf1']:.3f}  "
              f"({arm['train_s']:.0f} s)", flush=True)
    result = {
        "what": "AU F1 of FedPsyAU (ablation VI) trained with the old vs the new AU supervision",
        "data": {"train": len(train), "test": len(test),
                 "au_prevalence_known_min_max": [float(v) for v in ((au * known).sum(0) / known.sum(0))
                                                 .aminmax()],
                 "unknown_fraction": float(1 - known[:, 0].mean()), "generator": "tests/test_au_supervision.py"},
        "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed},
        "metric": f"AU F1 of the GAT head, sigmoid >= {AU_THRESHOLD}, known test labels only",
        "arms": arms,
        "machine": machine_info(start_load),
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
