"""Plain progress lines off a terminal: LineProgress itself and its use in the long commands."""
from __future__ import annotations

import io
import re

import pytest

from psyau_graph.progress import PREFIX, LineProgress, format_seconds

LINE = re.compile(r"^psyau progress \| (?P<desc>.+?): (?P<n>\d+)/(?P<total>\d+) \w+ \((?P<pct>\d+)%\) \| "
                  r"elapsed (?P<el>\d+:\d\d:\d\d) \| ETA (?P<eta>\d+:\d\d:\d\d|\?)(?: \| (?P<note>.*))?$")


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def _lines(text: str) -> list[re.Match]:
    out = [LINE.match(t) for t in text.splitlines() if t.startswith(PREFIX)]
    assert all(out), text
    return out


def test_format_seconds():
    assert format_seconds(0) == "0:00:00"
    assert format_seconds(3723.4) == "1:02:03"
    assert format_seconds(float("nan")) == "?"
    assert format_seconds(-1) == "?"


def test_every_ten_percent_and_last():
    s = io.StringIO()
    p = LineProgress(25, "preprocess x", "clip", every_pct=10, stream=s)
    for _ in range(25):
        p.update(1)
    got = _lines(s.getvalue())
    # thresholds 10, 20, ... 100 % of 25 clips: crossed at clips 3, 5, 8, 10, 13, 15, 18, 20, 23, 25
    assert [int(m["n"]) for m in got] == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert all(m["total"] == "25" and m["eta"] != "?" for m in got)
    assert got[-1]["pct"] == "100" and got[-1]["eta"] == "0:00:00"


def test_every_step_with_note_and_resumed_steps_out_of_eta():
    s = io.StringIO()
    p = LineProgress(3, "loso", "fold", every_pct=0, stream=s)
    p.update(1, "sub01 resumed", resumed=True)
    assert p.initial == 1
    p.update(1, "sub02: test UF1 0.500")
    p.update(1, "sub03: test UF1 0.250")
    got = _lines(s.getvalue())
    assert [m["n"] for m in got] == ["1", "2", "3"]
    assert got[0]["eta"] == "?"  # nothing run in this process yet: no estimate
    assert got[1]["note"] == "sub02: test UF1 0.500"


def test_silent_on_a_terminal_or_disabled():
    tty = FakeTTY()
    p = LineProgress(4, "x", stream=tty)
    q = LineProgress(4, "x", stream=io.StringIO(), enabled=False)
    for _ in range(4):
        p.update()
        q.update()
    assert tty.getvalue() == "" and not p.active and not q.active
    assert q.stream.getvalue() == ""


@pytest.mark.parametrize("kw", [dict(total=-1), dict(total=3, every_pct=-5), dict(total=3, initial=-1)])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        LineProgress(desc="x", **kw)


# ---------------------------------------------------------------- the long commands, stderr captured
# (pytest's captured stderr is not a terminal, as under nohup or a scheduler)


def test_train_protocol_prints_a_line_per_fold_and_epochs(tmp_path, capsys):
    from psyau_graph.train.fit import TrainConfig
    from psyau_graph.train.protocols import run_protocol

    from _fakes_train import TinyConfig, TinyModel, make_items, tiny_loss

    data = make_items(n_subjects=3, per_subject=4)
    tc = TrainConfig(epochs=5, lr=1e-2, batch_size=8, warmup_epochs=0, beta_schedule=None, seed=0, progress=True)
    run_protocol(data, "loso", TinyConfig(), tc, tmp_path, model_factory=TinyModel, loss_fn=tiny_loss)
    got = _lines(capsys.readouterr().err)
    folds = [m for m in got if m["desc"] == "loso"]
    epochs = [m for m in got if m["desc"] == "train"]
    assert [m["n"] for m in folds] == ["1", "2", "3"]
    assert all(m["total"] == "3" and "test UF1" in m["note"] for m in folds)
    assert len(epochs) == 3 * 5  # every 20 % of 5 epochs, per fold
    # resumed: the folds are loaded, lines still say where the run stands
    run_protocol(data, "loso", TinyConfig(), tc, tmp_path, model_factory=TinyModel, loss_fn=tiny_loss,
                 resume=True)
    again = [m for m in _lines(capsys.readouterr().err) if m["desc"] == "loso"]
    assert [m["note"].endswith("resumed") for m in again] == [True] * 3


def test_federated_run_prints_a_line_per_round(tmp_path, capsys):
    from psyau_graph.federated.config import FederatedConfig
    from psyau_graph.federated.run import FederatedRun
    from psyau_graph.federated.task import ToyTask, make_toy_data

    toy = make_toy_data(tmp_path / "toy.pt", subjects=3, per_subject=12, seed=3, shift=1.5)
    cfg = FederatedConfig(clients=3, rounds=3, local_epochs=1, lr=0.02, batch_size=16, repeats=1,
                          strategy="fedavg")
    FederatedRun(toy, cfg, task=ToyTask(), progress=True).run()
    got = [m for m in _lines(capsys.readouterr().err) if m["desc"].startswith("federate")]
    assert [(m["desc"], m["n"]) for m in got] == [("federate fedavg split 0", str(r)) for r in (1, 2, 3)]
    assert all(m["note"].startswith("mean client UF1 ") for m in got)
    FederatedRun(toy, cfg, task=ToyTask(), progress=False).run()
    assert PREFIX not in capsys.readouterr().err


def test_preprocess_prints_per_ten_percent(tmp_path, capsys):
    from psyau_graph.preprocess.batch import preprocess_dataset

    from test_preprocess_batch import make_dataset

    df = make_dataset(tmp_path / "frames", n_good=2)
    preprocess_dataset(df, tmp_path / "frames", tmp_path / "cache", dataset="casme2", flow="dis", workers=1)
    got = _lines(capsys.readouterr().err)
    # 4 clips (2 good, 1 faceless, 1 too short): 25 % per clip, each crosses a 10 % threshold
    assert [(m["desc"], m["n"], m["total"]) for m in got] == [("preprocess casme2", str(k), "4")
                                                              for k in range(1, 5)]


@pytest.mark.slow
def test_demo_prints_a_line_per_stage_and_the_stages_lines(tmp_path, capsys):
    from psyau_graph.cli import main

    rc = main(["demo", "--out", str(tmp_path / "demo"), "--subjects", "4", "--clips-per-subject", "3",
               "--epochs", "1", "--folds", "2", "--ablations", "VI", "--rounds", "1", "--local-epochs", "1",
               "--fed-repeats", "1"])
    assert rc == 0
    got = _lines(capsys.readouterr().err)
    stages = [m for m in got if m["desc"] == "demo"]
    assert [(m["n"], m["total"]) for m in stages] == [(str(k), "4") for k in range(1, 5)]
    assert stages[-1]["note"] == "federated comparison done"
    descs = {m["desc"] for m in got}
    assert {"preprocess synth", "kfold:2", "train"} <= descs
    assert any(d.startswith("federate ") for d in descs)
