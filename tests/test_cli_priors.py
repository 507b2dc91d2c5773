"""``psyau priors show`` and ``psyau priors compute``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from psyau_graph.cli import main
from psyau_graph.priors import cooccurrence_prior, load_prior_csv


def test_show_psych_writes_and_prints_pngs(tmp_path, capsys):
    assert main(["priors", "show", "--name", "psych", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    expected = {f"{kind}_{r}.png" for kind in ("psych", "graph_psych") for r in ("upper", "lower", "global")}
    assert {p.rsplit("/", 1)[-1] for p in printed} == expected
    for name in expected:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_show_one_data_prior(tmp_path, capsys):
    assert main(["priors", "show", "--name", "samm", "--out", str(tmp_path / "o")]) == 0
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted([f"{k}_samm_{r}.png" for k in ("prior", "graph") for r in ("global", "upper", "lower")])


def _sheet(path, codes):
    rows = [{"Subject": f"{k:02d}", "Filename": f"EP0{k}", "Onset Frame": 1, "Apex Frame": 5, "OffsetFrame": 9,
             "Action Units": c, "emotion": "happiness"} for k, c in enumerate(codes, start=1)]
    pd.DataFrame(rows).to_excel(path, index=False)
    return path


def test_compute_reports_unreadable_rows_and_writes_csv(tmp_path, capsys):
    sheet = _sheet(tmp_path / "lab.xlsx", ["1+2", "4+L10", "??", "6+12", "A12B"])
    out = tmp_path / "lab_prior.csv"
    plot = tmp_path / "lab_prior.png"
    code = main(["priors", "compute", "--annotations", str(sheet), "--dataset", "casme2", "--out", str(out),
                 "--plot", str(plot)])
    assert code == 0
    cap = capsys.readouterr()
    assert "row 4" in cap.err and "??" in cap.err  # header is row 1, '??' is on sheet row 4
    assert "4 samples read" in cap.out and str(out) in cap.out
    expected = cooccurrence_prior([{1, 2}, {4, 10}, {6, 12}, {12}])
    assert np.allclose(load_prior_csv(out), expected, atol=5e-5)
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.xlsx", "lab_prior.csv", "lab_prior.png"]


def test_compute_strict_fails_and_writes_nothing(tmp_path, capsys):
    sheet = _sheet(tmp_path / "lab.xlsx", ["1+2", "??"])
    out = tmp_path / "p.csv"
    code = main(["priors", "compute", "--annotations", str(sheet), "--dataset", "casme2", "--out", str(out),
                 "--strict"])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "??" in err and "row 3" in err


def test_compute_region_and_missing_file(tmp_path, capsys):
    sheet = _sheet(tmp_path / "lab.xlsx", ["1+2", "4+5"])
    out = tmp_path / "up.csv"
    assert main(["priors", "compute", "--annotations", str(sheet), "--dataset", "casme2", "--out", str(out),
                 "--region", "upper"]) == 0
    assert load_prior_csv(out).shape == (6, 6)
    assert main(["priors", "compute", "--annotations", str(tmp_path / "nope.xlsx"), "--dataset", "samm",
                 "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_compute_matches_shipped_prior_on_real_sheet(shared_reference, tmp_path):
    out = tmp_path / "casme2.csv"
    assert main(["priors", "compute", "--annotations", str(shared_reference / "annotations" / "CASME2-coding.xlsx"),
                 "--dataset", "casme2", "--out", str(out)]) == 0
    from psyau_graph.priors import priors_dir

    assert out.read_bytes() == (priors_dir() / "extrinsic_casme2_global.csv").read_bytes()


def test_parser_requires_an_action():
    with pytest.raises(SystemExit):
        main(["priors"])



def test_unknown_layout_name_says_it_uses_the_generic_reader(shared_reference, tmp_path, capsys):
    sheet = shared_reference / "annotations" / "CASME2-coding.xlsx"
    assert main(["priors", "compute", "--annotations", str(sheet), "--dataset", "mylab",
                 "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert "'mylab' is not one of the known layouts" in err and "generic reader" in err
