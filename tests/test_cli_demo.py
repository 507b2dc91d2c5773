"""The demo command runs end to end at a tiny scale and writes its outputs."""
import json

import pytest

from psyau_graph.cli import main


@pytest.mark.slow
def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--subjects", "4", "--clips-per-subject", "3", "--epochs", "1",
               "--folds", "2", "--ablations", "VI", "--rounds", "1", "--local-epochs", "1",
               "--fed-repeats", "1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out.resolve()) in printed.strip().splitlines()[-1]
    res = json.loads((out / "ablation_VI" / "results.json").read_text())
    assert 0.0 <= res["headline"]["uf1"] <= 1.0
    assert (out / "ablation_VI" / "confusion.png").stat().st_size > 0
    assert (out / "federated" / "comparison.json").exists()


@pytest.mark.parametrize("argv, msg", [
    (["--folds", "1"], "--folds must lie in"),
    (["--subjects", "3", "--folds", "4"], "--folds must lie in"),
    (["--subjects", "2", "--folds", "2"], "--subjects >= 3"),
    (["--ablations", "VI,XIII"], "unknown setting"),
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--rounds", "-1"], "--rounds must be >= 0"),
])
def test_demo_bad_arguments_fail_before_any_work(tmp_path, capsys, monkeypatch, argv, msg):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("psyau demo: error: ") and msg in err
    assert not out.exists()
