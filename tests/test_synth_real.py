"""The synthetic set's ``au_mode="real"``: (AU set, emotion) pairs from real coding-sheet rows."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from psyau_graph.au import AUS
from psyau_graph.data import au_stats
from psyau_graph.data.annotations import read_annotations
from psyau_graph.data.au_stats import compute_au_stats, dumps, load_au_stats, pair_counts, stats_cooccurrence
from psyau_graph.data.synth import (EMOTIONS, SynthConfig, generate_synthetic, plan_dataset, real_pair_table,
                                    write_sheet)
from psyau_graph.priors import cooccurrence_counts, cooccurrence_prior


def test_shipped_stats_are_reproduced_from_the_sheets(shared_reference, tmp_path):
    """Regenerating the JSON from the reference sheets gives the shipped file byte for byte."""
    text = dumps(compute_au_stats(shared_reference / "annotations"))
    assert text == au_stats.STATS_FILE.read_text(encoding="utf-8")
    out = au_stats.write_au_stats(shared_reference / "annotations", tmp_path / "s.json")
    assert out.read_bytes() == au_stats.STATS_FILE.read_bytes()
    assert au_stats.main([str(shared_reference / "annotations"), "--out", str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.json").read_bytes() == au_stats.STATS_FILE.read_bytes()


def test_shipped_stats_agree_with_the_sheet_rows(shared_reference):
    """The counts are those of the sheet rows whose emotion the synth scheme has (an independent tally)."""
    from psyau_graph.data.labels import map_emotion

    stats = load_au_stats()
    assert stats["aus"] == list(AUS) and stats["classes"] == list(EMOTIONS)
    for name, (file, layout) in au_stats.SHEETS.items():
        df = read_annotations(shared_reference / "annotations" / file, layout)
        kept = [(tuple(sorted(a for a in aus if a in AUS)), map_emotion(e, "synth"))
                for aus, e in zip(df["aus"], df["emotion"]) if map_emotion(e, "synth")]
        d = stats["datasets"][name]
        assert Counter(kept) == Counter({(tuple(a), e): n for a, e, n in d["pairs"]})
        assert d["rows"] == len(df) and d["rows_counted"] == len(kept)
        assert d["rows_counted"] + sum(d["dropped_emotions"].values()) + d["rows_aus_uncoded"] == len(df)
    assert stats["datasets"]["casme2"]["dropped_emotions"] == {"others": 94, "repression": 27}
    assert stats["datasets"]["samm"]["dropped_emotions"] == {"other": 26}


def test_missing_sheet_is_an_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="CASME2-coding.xlsx"):
        compute_au_stats(tmp_path)
    assert au_stats.main([str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "CASME2-coding.xlsx" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def _joint(sets):
    c, n = cooccurrence_counts(sets)
    return c / n


@pytest.mark.parametrize("source", ["casme2+samm", "casme2", "samm"])
def test_real_mode_cooccurrence_is_that_of_the_rows(source):
    """A large real-mode set has the rows' co-occurrence (within sampling error); prototype mode does not.

    10,000 clips over 500 subjects; the subject-level emotion mix (Dirichlet) makes the
    sampling error larger than for independent clips; observed over seeds 0–2 for every
    source: joint frequencies within 0.02, row-normalised prior within 0.031 (max) and
    0.003 (mean) of the rows'; prototype mode is off by ≥ 0.25 (joint) and ≥ 0.32 (prior).
    """
    rows = [aus for (aus, _), n in pair_counts(source).items() if aus for _ in range(n)]
    want_prior, want_joint = stats_cooccurrence(source), _joint(rows)
    assert np.allclose(want_prior, cooccurrence_prior(rows))
    real = plan_dataset(SynthConfig(subjects=500, clips_per_subject=20, seed=0, au_mode="real", au_source=source))
    proto = plan_dataset(SynthConfig(subjects=500, clips_per_subject=20, seed=0))
    got = cooccurrence_prior([p.aus for p in real])
    assert np.abs(_joint([p.aus for p in real]) - want_joint).max() < 0.04
    assert np.abs(got - want_prior).max() < 0.06 and np.abs(got - want_prior).mean() < 0.006
    off = cooccurrence_prior([p.aus for p in proto])
    assert np.abs(_joint([p.aus for p in proto]) - want_joint).max() > 0.2
    assert np.abs(off - want_prior).max() > 0.25 and np.abs(off - want_prior).mean() > 0.05
    # the emotion frequencies are those of the (renderable) rows too
    emotions, _, counts = real_pair_table(source)
    p = np.array([c.sum() for c in counts], float)
    freq = Counter(pl.emotion for pl in real)
    assert set(freq) == set(emotions)
    assert np.abs(np.array([freq[e] for e in emotions]) / len(real) - p / p.sum()).max() < 0.04


def test_real_plans_are_rows_and_survive_the_sheet(tmp_path):
    plans = plan_dataset(SynthConfig(subjects=8, clips_per_subject=30, seed=1, au_mode="real"))
    pairs = {k for k in pair_counts("casme2+samm") if k[0]}
    for p in plans:
        assert (p.aus, p.emotion) in pairs and p.au_source == "casme2+samm" and p.shown == ""
        assert p.onset < p.apex < p.offset
    mixes = Counter((p.subject, p.emotion) for p in plans)
    shares = np.array([[mixes[(f"sub{s + 1:02d}", e)] / 30 for e in EMOTIONS] for s in range(8)])
    assert np.abs(shares - shares.mean(0)).max() > 0.2  # subjects still differ in their class mix
    df = read_annotations(write_sheet(plans, tmp_path / "a.csv"), "synth")
    assert df.attrs["report"] == []
    assert [tuple(sorted(a)) for a in df["aus"]] == [p.aus for p in plans]
    assert df["emotion"].tolist() == [p.emotion for p in plans]
    # CASME II has no anger or contempt rows, and its fear rows show none of the 12 AUs
    casme2 = {p.emotion for p in plan_dataset(SynthConfig(subjects=30, clips_per_subject=20, au_mode="real",
                                                          au_source="casme2"))}
    assert casme2 == {"disgust", "happiness", "sadness", "surprise"}


def test_real_mode_writes_a_normal_dataset(tmp_path):
    cfg = SynthConfig(subjects=2, clips_per_subject=2, frames_per_clip=8, size=128, seed=2, au_mode="real",
                      au_source="samm")
    sheet = generate_synthetic(tmp_path / "s", config=cfg, progress=False, workers=1)
    df = read_annotations(sheet, "synth")
    assert len(df) == 4 and df.attrs["report"] == []
    for _, row in df.iterrows():
        with np.load(tmp_path / "s" / row["subject"] / row["clip"] / "flow_gt.npz") as z:
            assert set(z["aus"].tolist()) == set(row["aus"]) and str(z["au_source"]) == "samm"
            assert str(z["prototype"]) == "" and np.abs(z["flow"].astype(np.float32)).max() > 0.1
    import json

    info = json.loads((tmp_path / "s" / "synth_info.json").read_text())
    assert info["config"]["au_mode"] == "real" and info["au_statistics"]["source"] == "samm"


@pytest.mark.parametrize("kw, msg", [(dict(au_mode="facs"), "au_mode"), (dict(au_source="dfme"), "au_source")])
def test_bad_au_options(kw, msg):
    with pytest.raises(ValueError, match=msg):
        SynthConfig(**kw).validate()
    with pytest.raises(ValueError, match=msg):
        plan_dataset(SynthConfig(**kw))


def test_cli_au_mode(tmp_path, capsys):
    from psyau_graph.cli import main

    rc = main(["synth", "--out", str(tmp_path / "s"), "--subjects", "1", "--clips-per-subject", "2",
               "--frames-per-clip", "6", "--size", "112", "--au-mode", "real", "--au-source", "casme2"])
    assert rc == 0 and "2 written" in capsys.readouterr().out
    df = read_annotations(tmp_path / "s" / "annotations.csv", "synth")
    assert set(df["emotion"]) <= {"disgust", "happiness", "sadness", "surprise"}
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "t"), "--au-mode", "facs"])
    assert exc.value.code == 2 and "--au-mode" in capsys.readouterr().err


def test_real_mode_honours_the_unknown_au_fraction():
    """au_unknown_frac marks clips uncoded in the real mode too, without changing their pairs."""
    from psyau_graph.data.synth import SynthConfig, plan_dataset

    base = plan_dataset(SynthConfig(subjects=20, clips_per_subject=15, au_mode="real"))
    some = plan_dataset(SynthConfig(subjects=20, clips_per_subject=15, au_mode="real", au_unknown_frac=1 / 3))
    assert all(p.au_coded for p in base)
    frac = sum(not p.au_coded for p in some) / len(some)
    assert 0.25 < frac < 0.42
    assert [(p.aus, p.emotion, p.seed) for p in base] == [(p.aus, p.emotion, p.seed) for p in some]
