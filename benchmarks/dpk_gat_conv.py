"""Forward+backward time of DPKGATConv against PyG's GATConv, measured in the same run.

Cases (same heads/channels for both layers):

* ``au_batch``: B = 256 copies of the 12-node whole-face AU graph (cross-region
  edges + self loops, DFME prior), two layers 25 -> 64x3 (concat) -> ELU -> 25
  (1 head), as in the network. DPKGATConv also runs its dense batched path
  (``forward_dense``) on the same weights, in fp32 and under CPU bf16 autocast, and with
  ``--compile`` under ``torch.compile``; ``linear_elu_floor`` times only the two linear
  maps and the ELU (no attention): what any implementation of the pair computes, so
  ``floor / GATConv`` bounds the ratio a dense path can reach.
* ``random_large``: a random graph, 20,000 nodes and 200,000 edges, one layer
  64 -> 64x4 (concat), random prior.
* ``bipartite``: a random bipartite graph, 10,000 source nodes (32 features),
  5,000 target nodes (48 features), 100,000 edges, one layer (32, 48) -> 64x4
  (concat) with separate source/target weights, ``x = (x_src, x_dst)``, random prior.

Each timed step is forward + ``sum(out**2).backward()``. Warm-up, then repeats
with the layers interleaved (round-robin, so both see the same machine load);
wall-clock and process CPU time per step (on a shared machine the CPU time is the
steadier of the two); median and inter-quartile range in milliseconds; ratio =
median(layer) / median(GATConv). Results go to ``benchmarks/results/dpk_gat_conv.json`` under
``without_torch_scatter`` or ``with_torch_scatter``, whichever applies to the
interpreter that runs it (the other section is kept).

    python benchmarks/dpk_gat_conv.py [--repeats 30] [--repeats-large 20] [--repeats-bipartite 20] [--warmup 5] [--threads 1]
        [--compile]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_geometric
import torch_geometric.typing
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv

from psyau_graph.nn import DPKGATConv
from psyau_graph.train.memory import keep_freed_memory

from _machine import load_average, machine_info  # noqa: E402  (benchmarks/ is on sys.path)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "dpk_gat_conv.json"


def global_au_graph() -> tuple[Data, str]:
    """The 12-node whole-face AU graph with the DFME prior on its edges."""
    try:
        from psyau_graph.graphs import au_graph

        return au_graph("global", prior="dfme"), "psyau_graph.graphs.au_graph('global', prior='dfme')"
    except ImportError:
        pass
    for folder in (REPO / "priors", REPO.parent / "shared" / "reference" / "priors"):
        adj_csv, prior_csv = folder / "intrinsic_global_cross.csv", folder / "extrinsic_dfme_global.csv"
        if adj_csv.is_file() and prior_csv.is_file():
            A = np.loadtxt(adj_csv, delimiter=",", skiprows=1, usecols=range(1, 13))
            D = np.loadtxt(prior_csv, delimiter=",", skiprows=1, usecols=range(1, 13))
            tgt, src = np.nonzero(A)  # A[i, j] = 1: edge j -> i
            edge_index = torch.as_tensor(np.stack([src, tgt]), dtype=torch.long)
            return Data(edge_index=edge_index, edge_prior=torch.as_tensor(D[tgt, src], dtype=torch.float),
                        num_nodes=12), f"{adj_csv.name} + {prior_csv.name}"
    raise FileNotFoundError("no AU graph: psyau_graph.graphs is missing and no prior CSVs were found in "
                            f"{REPO / 'priors'} or the shared reference folder")


def _stats(ts: list) -> dict:
    q1, med, q3 = np.percentile(ts, [25, 50, 75])
    return {"median_ms": round(float(med), 3), "iqr_ms": [round(float(q1), 3), round(float(q3), 3)],
            "min_ms": round(min(ts), 3)}


def run_case(steps: dict, repeats: int, warmup: int) -> dict:
    """Interleaved timing of several zero-argument steps; wall-clock and process CPU time per step."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            c0, t0 = time.process_time(), time.perf_counter()
            steps[name]()
            wall[name].append((time.perf_counter() - t0) * 1e3)
            cpu[name].append((time.process_time() - c0) * 1e3)
    out = {}
    for name in names:
        out[name] = {"wall": _stats(wall[name]), "cpu": _stats(cpu[name]), "repeats": repeats}
    ref = names[0]
    for name in names[1:]:
        for clock, times in (("wall", wall), ("cpu", cpu)):
            entry = out[name][clock]
            entry["ratio_vs_" + ref] = round(entry["median_ms"] / out[ref][clock]["median_ms"], 3)
            paired = [a / b for a, b in zip(times[name], times[ref])]
            entry["median_paired_ratio"] = round(statistics.median(paired), 3)
    return out


def fwd_bwd(forward, params):
    def step():
        for p in params:
            p.grad = None
        out = forward()
        out.square().sum().backward()
    return step


def _bf16(forward):
    """``forward()`` under CPU bf16 autocast, returned in fp32 (as the training loss sees it)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forward()
    return out.float()


def au_batch_case(batch_size: int, repeats: int, warmup: int, compile_: bool = False) -> dict:
    graph, source = global_au_graph()
    n = int(graph.num_nodes)
    batch = Batch.from_data_list([Data(edge_index=graph.edge_index, edge_prior=graph.edge_prior, num_nodes=n)
                                  for _ in range(batch_size)])
    torch.manual_seed(0)
    x = torch.randn(batch_size * n, 25)
    edge_index, prior = batch.edge_index, batch.edge_prior.float()
    adj = torch.zeros(n, n, dtype=torch.bool)
    adj[graph.edge_index[1], graph.edge_index[0]] = True
    dense_prior = torch.zeros(n, n)
    dense_prior[graph.edge_index[1], graph.edge_index[0]] = graph.edge_prior.float()

    gat1, gat2 = GATConv(25, 64, heads=3, add_self_loops=False), GATConv(192, 25, heads=1, add_self_loops=False)
    dpk1, dpk2 = DPKGATConv(25, 64, heads=3, add_self_loops=False), DPKGATConv(192, 25, heads=1, add_self_loops=False)
    dpk1.load_state_dict(gat1.state_dict())
    dpk2.load_state_dict(gat2.state_dict())
    xb = x.view(batch_size, n, 25)
    beta = 0.3

    steps = {
        "GATConv": fwd_bwd(lambda: gat2(F.elu(gat1(x, edge_index)), edge_index),
                           list(gat1.parameters()) + list(gat2.parameters())),
        "DPKGATConv": fwd_bwd(lambda: dpk2(F.elu(dpk1(x, edge_index, prior, beta)), edge_index, prior, beta),
                              list(dpk1.parameters()) + list(dpk2.parameters())),
        "DPKGATConv_dense": fwd_bwd(lambda: dpk2.forward_dense(F.elu(dpk1.forward_dense(xb, adj, dense_prior, beta)),
                                                               adj, dense_prior, beta),
                                    list(dpk1.parameters()) + list(dpk2.parameters())),
        "DPKGATConv_dense_bf16": fwd_bwd(lambda: _bf16(lambda: dpk2.forward_dense(
                                             F.elu(dpk1.forward_dense(xb, adj, dense_prior, beta)),
                                             adj, dense_prior, beta)),
                                         list(dpk1.parameters()) + list(dpk2.parameters())),
    }
    # a bound, not a layer: the two linear maps and the ELU between them, which every GAT
    # layer pair of these widths computes (same weights); no attention, no aggregation
    lin1, lin2 = torch.nn.Linear(25, 192, bias=False), torch.nn.Linear(192, 25, bias=False)
    with torch.no_grad():
        lin1.weight.copy_(gat1.lin.weight), lin2.weight.copy_(gat2.lin.weight)
    steps["linear_elu_floor"] = fwd_bwd(lambda: lin2(F.elu(lin1(xb))), list(lin1.parameters()) + list(lin2.parameters()))
    compiled = None
    if compile_:
        # torch.compile (inductor) of the two-layer dense forward: its elementwise passes fused
        # into generated kernels; fixed shapes; the first call compiles forward and backward
        def dense_pair(inp):
            return dpk2.forward_dense(F.elu(dpk1.forward_dense(inp, adj, dense_prior, beta)), adj, dense_prior, beta)
        cf = torch.compile(dense_pair, dynamic=False)
        # an empty inductor cache, so the first call is a cold compile (removed after timing)
        inductor_cache = tempfile.mkdtemp(prefix="psyau-inductor-")
        previous_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache
        t0 = time.perf_counter()
        cf(xb).square().sum().backward()
        compiled = {"first_call_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
        # with grad on, as timed (no_grad would compile another graph)
        compiled["max_abs_diff_vs_eager"] = float((cf(xb) - dense_pair(xb)).detach().abs().max())
        steps["DPKGATConv_dense_compiled"] = fwd_bwd(lambda: cf(xb), list(dpk1.parameters()) + list(dpk2.parameters()))
    # the three agree before timing (same weights)
    with torch.no_grad():
        ref = dpk2(F.elu(dpk1(x, edge_index, prior, beta)), edge_index, prior, beta)
        dense = dpk2.forward_dense(F.elu(dpk1.forward_dense(xb, adj, dense_prior, beta)), adj, dense_prior, beta)
        gat_out = gat2(F.elu(gat1(x, edge_index)), edge_index)
        plain = dpk2(F.elu(dpk1(x, edge_index, prior, 0.0)), edge_index, prior, 0.0)
    assert torch.allclose(dense.reshape(ref.shape), ref, atol=1e-4), "dense path disagrees with sparse path"
    assert torch.equal(plain, gat_out), "beta = 0 does not reproduce GATConv"
    timings = run_case(steps, repeats, warmup)
    if compiled is not None:
        shutil.rmtree(inductor_cache, ignore_errors=True)
        if previous_cache is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous_cache
    return {"graph": source, "batch_size": batch_size, "num_nodes": batch_size * n,
            "num_edges": int(edge_index.size(1)), "layers": "25 -> 64x3 (concat) -> ELU -> 25 (1 head)",
            "beta": beta, "timings": timings, **({"compile": compiled} if compiled is not None else {})}


def random_large_case(num_nodes: int, num_edges: int, repeats: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(0)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    prior = torch.rand(num_edges, generator=g)
    x = torch.randn(num_nodes, 64, generator=g)
    gat = GATConv(64, 64, heads=4, add_self_loops=False)
    dpk = DPKGATConv(64, 64, heads=4, add_self_loops=False)
    dpk.load_state_dict(gat.state_dict())
    steps = {
        "GATConv": fwd_bwd(lambda: gat(x, edge_index), list(gat.parameters())),
        "DPKGATConv": fwd_bwd(lambda: dpk(x, edge_index, prior, 0.3), list(dpk.parameters())),
    }
    return {"num_nodes": num_nodes, "num_edges": num_edges, "layers": "64 -> 64x4 (concat)", "beta": 0.3,
            "timings": run_case(steps, repeats, warmup)}


def bipartite_case(num_src: int, num_dst: int, num_edges: int, repeats: int, warmup: int) -> dict:
    g = torch.Generator().manual_seed(1)
    edge_index = torch.stack([torch.randint(0, num_src, (num_edges,), generator=g),
                              torch.randint(0, num_dst, (num_edges,), generator=g)])
    prior = torch.rand(num_edges, generator=g)
    x = (torch.randn(num_src, 32, generator=g), torch.randn(num_dst, 48, generator=g))
    gat = GATConv((32, 48), 64, heads=4, add_self_loops=False)
    dpk = DPKGATConv((32, 48), 64, heads=4, add_self_loops=False)
    dpk.load_state_dict(gat.state_dict())
    steps = {
        "GATConv": fwd_bwd(lambda: gat(x, edge_index), list(gat.parameters())),
        "DPKGATConv": fwd_bwd(lambda: dpk(x, edge_index, prior, 0.3), list(dpk.parameters())),
    }
    return {"num_src": num_src, "num_dst": num_dst, "num_edges": num_edges,
            "layers": "(32, 48) -> 64x4 (concat)", "beta": 0.3, "timings": run_case(steps, repeats, warmup)}


def write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="repeats of the AU-batch case")
    parser.add_argument("--repeats-large", type=int, default=20, help="repeats of the 20k-node case")
    parser.add_argument("--repeats-bipartite", type=int, default=20, help="repeats of the bipartite case")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--compile", action="store_true",
                        help="also time the dense pair under torch.compile (AU-batch case; compiles for ~0.5-1 min)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    start_load = load_average()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the psyau command does; both layers run in this process alike

    with_scatter = bool(torch_geometric.typing.WITH_TORCH_SCATTER)
    section = "with_torch_scatter" if with_scatter else "without_torch_scatter"
    result = {
        "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
        "torch_scatter": None, "threads": args.threads, "repeats": {"au_batch": args.repeats, "random_large": args.repeats_large,
                                                                       "bipartite": args.repeats_bipartite},
        "warmup": args.warmup, "malloc": "keep_freed_memory() (glibc mmap/trim thresholds 1 GiB)",
        "cases": {},
    }
    if with_scatter:
        import torch_scatter

        result["torch_scatter"] = torch_scatter.__version__
    print(f"[{section}] au_batch ...", flush=True)
    result["cases"]["au_batch"] = au_batch_case(args.batch_size, args.repeats, args.warmup, args.compile)
    print(json.dumps(result["cases"]["au_batch"]["timings"], indent=1), flush=True)
    print(f"[{section}] random_large ...", flush=True)
    result["cases"]["random_large"] = random_large_case(20_000, 200_000, args.repeats_large, min(args.warmup, 3))
    print(json.dumps(result["cases"]["random_large"]["timings"], indent=1), flush=True)

    print(f"[{section}] bipartite ...", flush=True)
    result["cases"]["bipartite"] = bipartite_case(10_000, 5_000, 100_000, args.repeats_bipartite,
                                                  min(args.warmup, 3))
    print(json.dumps(result["cases"]["bipartite"]["timings"], indent=1), flush=True)

    payload = json.loads(args.out.read_text()) if args.out.is_file() else {}
    payload.update({
        "benchmark": "DPKGATConv vs torch_geometric.nn.GATConv, forward + backward, CPU",
        "machine": machine_info(start_load),
        "method": "warm-up, then interleaved round-robin repeats of forward + backward; per step the "
                  "wall-clock time (perf_counter) and the process CPU time (process_time, less sensitive to "
                  "other jobs on the machine); median and IQR (25th, 75th percentile) in ms; "
                  "ratio = median / median(GATConv); median_paired_ratio = median over repeats of the "
                  "per-repeat ratio",
    })
    payload[section] = result
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out} [{section}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
