"""Flower deployment engine: warm ClientApps against Flower's default per-message
``flwr-clientapp`` start-up, in one run, TLS on, loopback.

A toy MLP task (so the round holds almost no training and the engine's own cost shows),
2 SuperNodes with 60 samples each, FedAvg, R rounds of 1 local epoch; per-round wall time
measured by the server. First ``LocalDeployment(tls=True, warm=True)`` (SuperNodes in
``--isolation process``, one warm executor each forking a pre-imported process per
message; with its defaults: every poll on the message path at 0.1 s, SuperNodes through
``fast_supernode``, tensors packed per dtype), then ``warm=False`` (the SuperNode's own SuperExec starts ``flwr-clientapp`` per
message). Every process is stopped after each run; the JSON records that none was left.

Usage: python benchmarks/deployment_warm_cold.py [--rounds 4]
Writes benchmarks/results/deployment_warm_cold.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psyau_graph.federated.config import FederatedConfig  # noqa: E402
from psyau_graph.federated.flower.deployment import LocalDeployment  # noqa: E402
from psyau_graph.federated.task import make_toy_data  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deployment_warm_cold.json"))
    args = ap.parse_args()
    result = {"what": "server-measured wall time per round, toy MLP task, 2 SuperNodes, TLS, "
                      "loopback; warm and cold deployment in the same run",
              "rounds": args.rounds, "load_average_1min_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="psyau-depbench-") as d:
        tmp = Path(d)
        a = make_toy_data(tmp / "labA" / "toy.pt", subjects=3, per_subject=20, seed=1)
        b = make_toy_data(tmp / "labB" / "toy.pt", subjects=3, per_subject=20, seed=2)
        cfg = FederatedConfig(clients=2, rounds=args.rounds, local_epochs=1, strategy="fedavg",
                              lr=0.02, batch_size=16, repeats=1)
        for name, warm in (("warm", True), ("cold", False)):
            t0 = time.perf_counter()
            dep = LocalDeployment(tmp / name, [a.parent, b.parent], tls=True, warm=warm,
                                  startup_timeout=120)
            try:
                dep.start()
                res = dep.run(cfg, {"name": "toy"}, tmp / f"{name}_out", timeout=600)
            finally:
                dep.stop()
            times = res["round_times"]
            later = times[1:] or times
            result[name] = {"per_round_s": times, "median_rounds_2_on_s": statistics.median(later),
                            "total_s": time.perf_counter() - t0, "left_running": dep.alive()}
            print(name, times, flush=True)
    result["load_average_1min_end"] = os.getloadavg()[0]
    result["cold_over_warm"] = (result["cold"]["median_rounds_2_on_s"]
                                / result["warm"]["median_rounds_2_on_s"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, out)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
