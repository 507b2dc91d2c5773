"""benchmarks/federated_comparison.py: end to end on a tiny synthetic set, its statistics
by hand, and its option errors."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "federated_comparison.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("federated_comparison_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(strategy, split, client, uf1, uar=None, rnd=2, status="ok"):
    return {"strategy": strategy, "repeat": split, "round": rnd, "client": client, "status": status,
            "uf1": uf1, "uar": uf1 if uar is None else uar}


def test_paired_differences_by_hand(bench):
    # 2 clients, 3 splits; client means: p-fedprox 0.5, 0.6, 0.4; fedavg 0.4, 0.6, 0.5; local 0.1 each
    pf = [(0.4, 0.6), (0.6, 0.6), (0.3, 0.5)]
    fa = [(0.3, 0.5), (0.5, 0.7), (0.5, 0.5)]
    lo = [(0.1, 0.1), (0.2, 0.0), (0.1, 0.1)]
    recs = []
    for name, vals in (("p-fedprox", pf), ("fedavg", fa), ("local", lo)):
        for k, (a, b) in enumerate(vals):
            recs += [_rec(name, k, 0, a), _rec(name, k, 1, b), _rec(name, k, 0, 0.99, rnd=1)]
    # a failed final-round client makes its split incomplete: left out of the split means
    recs.append(_rec("local", 3, 0, 0.9))
    recs.append(_rec("local", 3, 1, 0.9, status="failed"))
    # a split that only one strategy finished is left out of every comparison
    recs += [_rec("fedavg", 4, 0, 1.0), _rec("fedavg", 4, 1, 1.0)]
    out = bench.paired_differences(recs, ["local", "fedavg", "p-fedprox"], clients=2)
    assert out["splits_used"] == [0, 1, 2]
    d = out["vs"]["fedavg"]["uf1"]
    assert d["per_split"] == pytest.approx([0.1, 0.0, -0.1])
    assert d["mean_diff"] == pytest.approx(0.0)
    assert d["sd_diff"] == pytest.approx(0.1)
    assert (d["better"], d["equal"], d["worse"], d["splits"]) == (1, 1, 1, 3)
    assert out["best_other"]["uf1"]["strategy"] == "fedavg"
    loc = out["vs"]["local"]["uf1"]
    assert loc["per_split"] == pytest.approx([0.4, 0.5, 0.3])
    assert (loc["splits"], loc["better"]) == (3, 3)
    summ = bench.summarize_splits(recs, ["local", "fedavg", "p-fedprox"], clients=2)
    c0 = summ["p-fedprox"]["clients"]["0"]
    assert c0["uf1"] == pytest.approx(13 / 30)
    assert c0["uf1_sd"] == pytest.approx(math.sqrt(((0.4 - 13 / 30) ** 2 + (0.6 - 13 / 30) ** 2
                                                    + (0.3 - 13 / 30) ** 2) / 2))
    assert summ["p-fedprox"]["mean"]["uf1"] == pytest.approx(0.5)
    assert summ["local"]["mean"]["splits"] == 3  # split 3 has a failed client
    assert summ["fedavg"]["mean"]["splits"] == 4


def test_au_mode_of_current_generator(bench):
    modes, default = bench.synth_au_modes()
    assert default in (modes or (default,))
    kwargs, used = bench.resolve_au_mode(None)
    assert used == default
    with pytest.raises(bench.BenchError, match="unknown AU mode"):
        bench.resolve_au_mode("no-such-mode")


def test_au_mode_passed_when_the_generator_has_modes(bench, monkeypatch):
    import dataclasses

    from psyau_graph.data import synth

    @dataclasses.dataclass
    class WithModes(synth.SynthConfig):
        au_mode: str = "prototype"

        def validate(self):
            if self.au_mode not in ("prototype", "real"):
                raise ValueError(f"au_mode={self.au_mode!r}: expected 'prototype' or 'real'")

    monkeypatch.setattr(synth, "SynthConfig", WithModes)
    monkeypatch.delattr(synth, "AU_MODES", raising=False)  # a generator that does not list its modes
    assert bench.synth_au_modes() == (None, "prototype")  # no AU_MODES: the generator checks
    assert bench.resolve_au_mode("real") == ({"au_mode": "real"}, "real")
    with pytest.raises(bench.BenchError, match="rejected by the generator: au_mode='x'"):
        bench.resolve_au_mode("x")
    monkeypatch.setattr(synth, "AU_MODES", ("prototype", "real"), raising=False)
    assert bench.synth_au_modes() == (("prototype", "real"), "prototype")
    with pytest.raises(bench.BenchError, match="offers 'prototype', 'real'"):
        bench.resolve_au_mode("x")


def test_au_mode_real_reaches_the_generator(bench, monkeypatch, tmp_path):
    """``--au-mode real`` ends in the SynthConfig handed to the installed generator."""
    from psyau_graph.data import synth

    args = bench.parse_args(["--au-mode", "real"])
    assert (args.au_kwargs, args.au_mode_used) == ({"au_mode": "real"}, "real")
    seen = {}

    class Stop(Exception):
        pass

    def fake_generate(out_dir, *, config, **kw):
        seen["config"] = config
        raise Stop

    monkeypatch.setattr(synth, "generate_synthetic", fake_generate)
    with pytest.raises(Stop):
        bench.build_dataset(tmp_path, subjects=2, clips=1, seed=0, flow="tvl1", workers=1,
                            scheme="synth", au_kwargs=args.au_kwargs)
    assert isinstance(seen["config"], synth.SynthConfig) and seen["config"].au_mode == "real"


@pytest.mark.parametrize("argv, msg", [
    (["--au-mode", "no-such-mode"], "--au-mode 'no-such-mode': unknown AU mode"),
    (["--strategies", "fedavg,bogus"], "--strategies 'fedavg,bogus': unknown ['bogus']"),
    (["--clients", "5", "--subjects", "4"], "--clients 5 exceeds --subjects 4"),
    (["--splits", "0"], "--splits must be >= 1"),
])
def test_bad_options_exit_2(bench, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


@pytest.mark.slow  # synthetic frames + preprocessing + 6 federated runs: ~15 s quiet, minutes on a loaded machine
def test_runs_end_to_end_and_writes_schema_and_plot(bench, tmp_path, capsys):
    out = tmp_path / "res" / "cmp.json"
    argv = ["--clients", "2", "--subjects", "4", "--clips-per-subject", "3", "--rounds", "1",
            "--local-epochs", "1", "--splits", "2", "--strategies", "local,fedavg,p-fedprox",
            "--workers", "1", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["schema"] == bench.SCHEMA and res["complete"] is True
    assert res["config"]["clients"] == 2 and res["config"]["splits"] == 2
    assert res["config"]["federated_config_split0"]["balance"] == "subjects"
    assert res["data"]["n_clips"] == 12 and res["data"]["au_mode"]
    assert sorted(len(s) for s in res["data"]["client_subjects"]) == [2, 2]
    assert {"cpus", "load_average_1min_start", "load_average_1min_end"} <= set(res["machine"])
    assert len(res["runs"]) == 2 * 3
    # one record per (strategy, split, round, client); the split index is the record's repeat
    assert len(res["records"]) == 3 * 2 * 1 * 2
    assert {r["repeat"] for r in res["records"]} == {0, 1}
    for s in ("local", "fedavg", "p-fedprox"):
        for c in ("0", "1"):
            row = res["summary"][s]["clients"][c]
            assert row["splits"] == 2 and 0.0 <= row["uf1"] <= 1.0 and row["uf1_sd"] >= 0.0
    paired = res["paired"]
    assert paired["focus"] == "p-fedprox" and set(paired["vs"]) == {"local", "fedavg"}
    assert paired["splits_used"] == [0, 1]
    assert paired["vs"]["fedavg"]["uf1"]["splits"] == 2
    assert set(res["majority_peer"]) == {"0", "1"}
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Paired differences p-fedprox" in capsys.readouterr().out
    # --resume keeps every finished run and redoes nothing
    assert bench.main(argv + ["--resume"]) == 0
    again = json.loads(out.read_text())
    assert again["runs"] == res["runs"]
    assert again["sessions"][0]["runs"] == 6 and again["sessions"][0]["total_time_s"] == res["total_time_s"]
    assert "6 finished runs kept" in capsys.readouterr().out
