"""Priors: shipped files, validation, co-occurrence priors, restriction, masking, builder."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from psyau_graph import priors as P
from psyau_graph.au import AUS, FACSParseError, region_aus
from psyau_graph.priors import (
    REGIONS, SOURCES, build_dataset_priors, cooccurrence_counts, cooccurrence_prior, extrinsic_prior,
    load_prior_csv, mask_prior, priors_dir, psych_adjacency, read_au_sets, restrict_prior, save_prior_csv,
    validate_prior,
)

REFERENCE_FILES = ["intrinsic_upper.csv", "intrinsic_lower.csv", "intrinsic_global_cross.csv",
                   "extrinsic_dfme_global.csv", "extrinsic_dfme_upper.csv", "extrinsic_dfme_lower.csv"]


def test_priors_dir_holds_every_shipped_file():
    d = priors_dir()
    assert d == P.PRIORS_DIR
    for src in SOURCES:
        for region in REGIONS:
            assert (d / f"extrinsic_{src}_{region}.csv").is_file()
    for f in REFERENCE_FILES:
        assert (d / f).is_file()


def test_reference_files_are_shipped_unchanged(shared_reference):
    for f in REFERENCE_FILES:
        assert (priors_dir() / f).read_bytes() == (shared_reference / "priors" / f).read_bytes(), f


@pytest.mark.parametrize("region, n", [("upper", 6), ("lower", 6), ("global", 12)])
def test_psych_adjacency_shapes_binary_diagonal(region, n):
    a = psych_adjacency(region)
    assert a.shape == (n, n)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert np.all(np.diag(a) == 1)
    a[0, 0] = 7  # a copy: the cache is not mutated
    assert psych_adjacency(region)[0, 0] == 1


def test_global_adjacency_is_cross_region_only_and_directed_in_one_pair():
    a = psych_adjacency("global")
    off = a - np.eye(12)
    assert not off[:6, :6].any() and not off[6:, 6:].any()
    asym = np.argwhere(a != a.T)
    assert sorted(map(tuple, asym.tolist())) == [(1, 6), (6, 1)]  # AU2 (idx 1) and AU9 (idx 6)
    assert a[6, 1] == 1 and a[1, 6] == 0  # AU9 attends to AU2, not the reverse


def test_psych_pairs_named_in_the_supplement():
    g, up, low = psych_adjacency("global"), psych_adjacency("upper"), psych_adjacency("lower")
    i = {au: k for k, au in enumerate(AUS)}
    assert g[i[6], i[12]] == 1 and g[i[12], i[6]] == 1      # AU6 + AU12 coordinated
    assert g[i[4], i[12]] == 0 and g[i[12], i[4]] == 0      # AU4 / AU12 exclusive
    assert g[i[6], i[15]] == 0 and g[i[15], i[6]] == 0      # AU6 / AU15 exclusive
    assert up[0, 1] == 1 and low[2, 3] == 1                 # AU1-AU2, AU12-AU14


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("region", REGIONS)
def test_extrinsic_priors_are_row_stochastic(source, region):
    d = extrinsic_prior(source, region)
    assert d.shape == ((12, 12) if region == "global" else (6, 6))
    sums = d.sum(axis=1)
    assert np.all(np.isclose(sums, 1.0) | (sums == 0))
    assert np.all(d >= 0)


def test_dfme_6x6_are_the_12x12_restricted_and_renormalised():
    full = load_prior_csv(priors_dir() / "extrinsic_dfme_global.csv")
    half = 5e-5  # the CSVs hold 4 decimals
    for region in ("upper", "lower"):
        ref = load_prior_csv(priors_dir() / f"extrinsic_dfme_{region}.csv")
        got = restrict_prior(full, region)
        assert np.abs(got - ref).max() < 2e-4
        # rigorous: the published value lies within what the rounded 12×12 entries allow
        idx = [AUS.index(a) for a in region_aus(region)]
        sub = full[np.ix_(idx, idx)]
        lo_in, hi_in = np.clip(sub - half, 0, None), sub + half
        for i in range(6):
            for j in range(6):
                others_lo = lo_in[i].sum() - lo_in[i, j]
                others_hi = hi_in[i].sum() - hi_in[i, j]
                lo = lo_in[i, j] / (lo_in[i, j] + others_hi)
                hi = hi_in[i, j] / (hi_in[i, j] + others_lo)
                assert lo - half <= ref[i, j] <= hi + half, (region, i, j)
        # and the packaged 6×6 equals what extrinsic_prior serves
        assert np.allclose(extrinsic_prior("dfme", region), ref / ref.sum(axis=1, keepdims=True))


def test_cooccurrence_prior_by_hand():
    samples = [{1, 2}, {1}, {2, 12, 25}, set(), {43}, "4+L10"]
    counts, n = cooccurrence_counts(samples)
    assert n == 6
    i = {au: k for k, au in enumerate(AUS)}
    assert counts[i[1], i[1]] == 2 and counts[i[1], i[2]] == 1 and counts[i[2], i[12]] == 1
    assert counts[i[4], i[10]] == 1 and counts.sum() == 4 + 1 + 4 + 4  # {1,2}: 2×2, {1}: 1, {2,12}: 2×2, {4,10}: 2×2
    d = cooccurrence_prior(samples)
    assert np.allclose(d[i[1], [i[1], i[2]]], [2 / 3, 1 / 3])
    assert np.allclose(d[i[2], [i[1], i[2], i[12]]], [1 / 4, 2 / 4, 1 / 4])
    assert np.all(d[i[17]] == 0)  # never observed: a zero row stays zero
    assert np.allclose(d.sum(axis=1)[[i[1], i[2], i[4], i[10], i[12]]], 1)


def test_cooccurrence_prior_region_equals_counts_of_the_region_alone():
    rng = np.random.default_rng(0)
    samples = [set(rng.choice(AUS, size=rng.integers(0, 5), replace=False).tolist()) for _ in range(300)]
    for region in ("upper", "lower"):
        aus = region_aus(region)
        c, _ = cooccurrence_counts(samples, aus)
        direct = c / c.sum(axis=1, keepdims=True)
        assert np.allclose(cooccurrence_prior(samples, region=region), direct)
        assert np.allclose(restrict_prior(cooccurrence_prior(samples), region), direct)


def test_cooccurrence_prior_rejects_non_iterables():
    with pytest.raises(TypeError, match=r"au_sets\[1\]"):
        cooccurrence_counts([{1}, 5])


def test_cooccurrence_prior_from_tables():
    by_sets = pd.DataFrame({"aus": [frozenset({1, 2}), frozenset({12}), frozenset({1})]})
    by_text = pd.DataFrame({"Action Units": ["1+R2", "A12B", "L1"]})
    expected = cooccurrence_prior([{1, 2}, {12}, {1}])
    assert np.allclose(cooccurrence_prior(by_sets), expected)
    assert np.allclose(cooccurrence_prior(by_text), expected)
    bad = pd.DataFrame({"Action Units": ["1+R2", "??", "A12B", "L1"]})
    with pytest.raises(FACSParseError, match="row 2"):
        cooccurrence_prior(bad)
    d, info = cooccurrence_prior(bad, errors="report", return_counts=True)
    assert np.allclose(d, expected) and info["n_samples"] == 3
    assert len(info["problems"]) == 1 and "row 2" in info["problems"][0]
    with pytest.raises(ValueError, match="no AU column"):
        cooccurrence_prior(pd.DataFrame({"x": [1]}))


def _write_sheet(path: Path, rows, junk_rows=0):
    header = ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Action Units", "Estimated Emotion"]
    lines = [["SAMM-like export", None, None, None, None, None, None]] * junk_rows + [header]
    lines += [[f"{k:03d}", f"{k:03d}_1_1", 10, 20, 30, code, "Anger"] for k, code in enumerate(rows, start=1)]
    pd.DataFrame(lines).to_excel(path, header=False, index=False)
    return path


def test_internal_reader_finds_a_header_below_row_one(tmp_path):
    path = _write_sheet(tmp_path / "samm_like.xlsx", ["4+7", "A12B", None, "R14+17+soft focus"], junk_rows=3)
    sets, problems = P._read_sheet_internal(path, "samm", "raise")
    assert [set(s) for s in sets] == [{4, 7}, {12}, set(), {14, 17}] and problems == []
    # a layout name the data module does not know uses this reader too
    assert [set(s) for s in read_au_sets(path, "mylab")[0]] == [{4, 7}, {12}, set(), {14, 17}]
    bad = _write_sheet(tmp_path / "bad.xlsx", ["4+7", "12?"], junk_rows=2)
    with pytest.raises(FACSParseError, match=r"bad.xlsx row 5"):  # 2 junk rows + header + 2nd sample
        P._read_sheet_internal(bad, "samm", "raise")
    sets, problems = P._read_sheet_internal(bad, "samm", "report")
    assert [set(s) for s in sets] == [{4, 7}] and len(problems) == 1 and "row 5" in problems[0]
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no header row"):
        P._read_sheet_internal(nohead, "mylab", "raise")


def test_sheet_path_needs_dataset_and_existing_file(tmp_path):
    with pytest.raises(ValueError, match="dataset= is required"):
        cooccurrence_prior(tmp_path / "x.xlsx")
    with pytest.raises(FileNotFoundError, match="x.xlsx"):
        read_au_sets(tmp_path / "x.xlsx", "casme2")


@pytest.mark.parametrize("name, file, n", [("casme2", "CASME2-coding.xlsx", 250), ("samm", "SAMM-coding.xlsx", 159)])
def test_shipped_dataset_priors_are_reproducible(shared_reference, tmp_path, name, file, n):
    out = build_dataset_priors(shared_reference / "annotations", tmp_path,
                               sheets={name: (file, name)})
    assert out[name]["n_samples"] == n
    for f in out[name]["files"]:
        assert f.read_bytes() == (priors_dir() / f.name).read_bytes(), f.name
    # independent check: counts from the sheet's own comma-separated AU column
    sheet = pd.read_excel(shared_reference / "annotations" / file,
                          sheet_name="MICRO_ONLY" if name == "samm" else 0)
    listed = [{int(x) for x in str(v).split(",")} for v in sheet["au"]]
    counts, m = cooccurrence_counts(listed)
    assert m == n and np.array_equal(counts, out[name]["counts"])
    assert np.array_equal(load_prior_csv(priors_dir() / f"cooccurrence_counts_{name}.csv"), counts)
    assert not list(tmp_path.glob("*.tmp"))


def test_internal_and_data_readers_agree_on_real_sheets(shared_reference):
    for file, ds in (("CASME2-coding.xlsx", "casme2"), ("SAMM-coding.xlsx", "samm")):
        path = shared_reference / "annotations" / file
        internal, problems = P._read_sheet_internal(path, ds, "raise")
        used, _ = read_au_sets(path, ds)
        assert problems == [] and [set(s) for s in internal] == [set(s) for s in used]


# ----------------------------------------------------------------------------- validation

def _csv(tmp_path, text, name="p.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_prior_csv_round_trip_and_atomic_save(tmp_path):
    m = extrinsic_prior("samm")
    path = save_prior_csv(m, tmp_path / "x.csv")
    assert np.allclose(load_prior_csv(path), m, atol=5e-5)
    assert path.read_text().splitlines()[0] == "AU," + ",".join(f"AU{a}" for a in AUS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600
    up = save_prior_csv(restrict_prior(m, "upper"), tmp_path / "u.csv", aus=region_aus("upper"))
    assert load_prior_csv(up).shape == (6, 6)


def test_load_prior_csv_errors(tmp_path):
    good = (priors_dir() / "intrinsic_upper.csv").read_text().splitlines()
    with pytest.raises(FileNotFoundError):
        load_prior_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="fields"):
        load_prior_csv(_csv(tmp_path, "\n".join(good[:2] + [good[2] + ",1"] + good[3:])))
    with pytest.raises(ValueError, match="differ"):  # non-square: 6 columns, 5 rows
        load_prior_csv(_csv(tmp_path, "\n".join(good[:-1])))
    swapped = [good[0].replace("AU1,AU2", "AU2,AU1")] + good[1:]
    with pytest.raises(ValueError, match="differ"):
        load_prior_csv(_csv(tmp_path, "\n".join(swapped)))
    with pytest.raises(ValueError, match="not in the expected order"):
        load_prior_csv(_csv(tmp_path, "\n".join([swapped[0], good[2], good[1]] + good[3:])))
    with pytest.raises(ValueError, match="non-numeric"):
        load_prior_csv(_csv(tmp_path, "\n".join(good[:2] + [good[2].replace(",1,", ",x,", 1)] + good[3:])))
    with pytest.raises(ValueError, match="negative"):
        load_prior_csv(_csv(tmp_path, "\n".join(good[:2] + [good[2].replace(",0,", ",-0.5,", 1)] + good[3:])))
    with pytest.raises(ValueError, match="non-finite"):
        load_prior_csv(_csv(tmp_path, "\n".join(good[:2] + [good[2].replace(",0,", ",nan,", 1)] + good[3:])))
    with pytest.raises(ValueError, match="0 or 1"):
        load_prior_csv(_csv(tmp_path, "\n".join(good[:2] + [good[2].replace(",0,", ",0.5,", 1)] + good[3:])),
                       binary=True)
    with pytest.raises(ValueError, match="not an AU label"):
        load_prior_csv(_csv(tmp_path, "\n".join([good[0].replace("AU4", "brow")] + good[1:])))
    with pytest.raises(ValueError, match="expected order"):  # right labels, wrong expected set
        load_prior_csv(priors_dir() / "intrinsic_upper.csv", aus=region_aus("lower"))


@pytest.mark.parametrize("bad, match", [
    (np.ones(12), "2-D"),
    (np.ones((12, 6)), "square"),
    (np.ones((5, 5)), "12×12"),
    (-np.eye(12), "negative"),
    (np.full((12, 12), np.inf), "non-finite"),
])
def test_validate_prior_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        validate_prior(bad)


def test_extrinsic_prior_from_arrays_and_paths(tmp_path):
    m = extrinsic_prior("casme2")
    assert np.allclose(extrinsic_prior(m * 7.0, "upper"), restrict_prior(m, "upper"))  # counts accepted
    p = save_prior_csv(m, tmp_path / "lab.csv")
    assert np.allclose(extrinsic_prior(p), m, atol=1e-4)
    with pytest.raises(ValueError, match="does not fit region"):
        extrinsic_prior(np.ones((6, 6)), "global")
    with pytest.raises(FileNotFoundError):
        extrinsic_prior(str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="source"):
        P.prior_path("extrinsic", "global", "ck+")
    with pytest.raises(ValueError, match="source='disfa'"):
        extrinsic_prior("disfa")


def test_mask_prior_drops_outside_mass_and_reports_it():
    d = np.array([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0], [0.1, 0.1, 0.8]])
    a = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]])
    masked, kept = mask_prior(d, a)
    assert np.allclose(masked, [[0.625, 0.375, 0], [0, 1, 0], [1 / 9, 0, 8 / 9]])
    assert np.allclose(kept, [0.8, 1.0, 0.9])
    with pytest.warns(RuntimeWarning, match="outside the adjacency"):
        mask_prior(d, a, on_outside="warn")
    with pytest.raises(ValueError, match="outside the adjacency"):
        mask_prior(d, a, on_outside="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask_prior(d * a, a, on_outside="warn")  # nothing outside: no warning
    with pytest.raises(ValueError, match="on_outside"):
        mask_prior(d, a, on_outside="ignore")


def test_mask_prior_uniform_fallback_for_rows_without_mass():
    d = np.array([[0.0, 1.0], [0.5, 0.5]])
    a = np.array([[1, 0], [1, 1]])
    with pytest.warns(RuntimeWarning, match="uniform"):
        masked, kept = mask_prior(d, a)
    assert np.allclose(masked, [[1, 0], [0.5, 0.5]]) and kept[0] == 0


def test_dfme_prior_has_mass_outside_every_graph():
    for region in REGIONS:
        _, kept = mask_prior(extrinsic_prior("dfme", region), psych_adjacency(region))
        assert kept.min() < 1.0 and kept.max() <= 1.0 + 1e-12
