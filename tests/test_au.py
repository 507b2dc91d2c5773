"""AU registry and FACS code parsing (incl. every row of the real CASME II / SAMM sheets)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

from psyau_graph.au import (
    AU_GROUP, AU_LABELS, AU_NAMES, AU_REGION, AUS, LOWER, MOVEMENT_CODES, NUM_AUS, UPPER, FACSCodes, FACSParseError,
    au_index, aus_to_multihot, parse_facs, region_aus, region_indices,
)


def test_registry_matches_spec_table():
    assert AUS == (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17)
    assert NUM_AUS == 12 and UPPER == (0, 1, 2, 3, 4, 5) and LOWER == (6, 7, 8, 9, 10, 11)
    assert [AU_REGION[a] for a in AUS] == ["upper"] * 6 + ["lower"] * 6
    assert [AU_GROUP[a] for a in AUS] == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4]
    assert AU_NAMES[6] == "cheek raiser" and AU_NAMES[17] == "chin raiser" and AU_NAMES[9] == "nose wrinkler"
    assert set(AU_NAMES) == set(AUS)
    assert AU_LABELS[0] == "AU1" and AU_LABELS[-1] == "AU17"
    assert [au_index(a) for a in AUS] == list(range(12))
    assert region_aus("lower") == (9, 10, 12, 14, 15, 17) and region_indices("global") == tuple(range(12))


@pytest.mark.parametrize("bad", [3, 25, "x", None])
def test_au_index_rejects_non_graph_aus(bad):
    with pytest.raises(ValueError, match="not one of the graph's AUs"):
        au_index(bad)


def test_region_rejects_unknown():
    with pytest.raises(ValueError, match="region='face'"):
        region_indices("face")


@pytest.mark.parametrize("code, expected", [
    ("4+L10", {4, 10}),
    ("R12", {12}),
    ("15A+17", {15, 17}),
    ("A12B", {12}),
    ("ref(L10)+A12B", {10, 12}),
    ("A9E+ref(10)", {9, 10}),
    ("25+26", {25, 26}),
    ("4+7+43", {4, 7, 43}),
    ("B18+25", {18, 25}),
    ("T18+39", {18, 39}),
    ("U14", {14}),
    ("10A/B", {10}),
    ("A/L12", {12}),
    ("(R6 or R12)+R15", {6, 12, 15}),
    ("(R6 or R12) + R15", {6, 12, 15}),
    ("R14A or 17A or 24A", {14, 17, 24}),
    ("R14+17+soft focus", {14, 17}),
    ("7B+ ref(43)", {7, 43}),
    ("12+15 ", {12, 15}),
    ("4,7", {4, 7}),
    ("AU12+au4", {4, 12}),
    ("r12", {12}),
    ("12.0", {12}),
    (12, {12}),
    (12.0, {12}),
    (np.int64(4), {4}),
    (np.float64(7.0), {7}),
])
def test_parse_facs_real_forms(code, expected):
    out = parse_facs(code)
    assert out == frozenset(expected)
    assert isinstance(out, frozenset) and isinstance(out, FACSCodes)
    assert out.ok and out.problems == ()


@pytest.mark.parametrize("blank", [None, "", "   ", float("nan"), np.nan, pd.NA])
def test_blanks_are_empty(blank):
    assert parse_facs(blank) == frozenset()


def test_notes_record_ref_alternatives_and_descriptors():
    assert any("ref(10)" in n for n in parse_facs("A9E+ref(10)").notes)
    assert any("alternatives" in n for n in parse_facs("(R6 or R12)+R15").notes)
    assert any("soft focus" in n for n in parse_facs("R14+17+soft focus").notes)
    assert parse_facs("4+7").notes == ()


@pytest.mark.parametrize("code, part", [
    ("4++7", "missing AU"),
    ("12x", "12x"),
    ("(4+7", "unbalanced"),
    ("4+7)", "unbalanced"),
    ("4+", "ends with an operator"),
    ("smile", "smile"),
    ("12.5", ".5"),
    (4.5, "not a whole AU number"),
    (0, "outside 1..99"),
    ("4 7", "missing '+'"),
    ("ref()", "empty"),
    (True, "boolean"),
    ([4], "unsupported type"),
    (float("inf"), "not a whole AU number"),
])
def test_unreadable_raises_with_text(code, part):
    with pytest.raises(FACSParseError) as info:
        parse_facs(code, context="sheet.xlsx row 7")
    msg = str(info.value)
    assert part in msg and "sheet.xlsx row 7" in msg
    assert isinstance(info.value, ValueError) and info.value.problems


def test_report_mode_returns_what_was_read_and_the_problem():
    out = parse_facs("4+12x+L10", errors="report", context="row 3")
    assert out == {4, 10}
    assert not out.ok and len(out.problems) == 1
    assert "12x" in out.problems[0] and "row 3" in out.problems[0]
    assert out.text == "4+12x+L10"
    # raise mode carries the same partial read on the exception
    with pytest.raises(FACSParseError) as info:
        parse_facs("4+12x+L10")
    assert info.value.partial == {4, 10}


def test_errors_argument_is_checked():
    with pytest.raises(ValueError, match="errors='ignore'"):
        parse_facs("4", errors="ignore")


def test_facs_codes_pickle_and_hash_like_frozenset():
    out = parse_facs("ref(L10)+A12B")
    back = pickle.loads(pickle.dumps(out))
    assert back == out and back.text == out.text and back.notes == out.notes
    assert hash(out) == hash(frozenset({10, 12}))
    assert {out: 1}[frozenset({10, 12})] == 1


def test_aus_to_multihot():
    v = aus_to_multihot({4, 10, 25, 43})
    assert v.dtype == torch.float32 and v.shape == (12,)
    assert torch.nonzero(v).flatten().tolist() == [2, 7]
    assert torch.equal(aus_to_multihot("ref(L10)+A12B"), aus_to_multihot([10, 12]))
    assert aus_to_multihot([]).sum() == 0
    assert torch.equal(aus_to_multihot(12.0), aus_to_multihot([12]))
    with pytest.raises(FACSParseError):
        aus_to_multihot("4+x")


def _sheet_rows(path, sheet):
    df = pd.read_excel(path, sheet_name=sheet)
    assert "Action Units" in df.columns, f"{path.name}: header not on the first row any more"
    return df


@pytest.mark.parametrize("name, sheet, n_rows", [
    ("CASME2-coding.xlsx", 0, 250),
    ("SAMM-coding.xlsx", "MICRO_ONLY", 159),
])
def test_every_row_of_the_real_sheets_parses(shared_reference, name, sheet, n_rows):
    path = shared_reference / "annotations" / name
    df = _sheet_rows(path, sheet)
    assert len(df) == n_rows
    checked = 0
    for k, (code, listed) in enumerate(zip(df["Action Units"], df["au"])):
        out = parse_facs(code, context=f"{name} row {k + 2}")  # raises on anything unreadable
        assert out.ok
        # the sheets carry a comma-separated AU list column: our parse must agree with it
        expected = {int(x) for x in str(listed).split(",")} if not (isinstance(listed, float)
                                                                  and math.isnan(listed)) else set()
        # head/eye codes (50-89) the sheet lists among its AUs are descriptors for us
        moves = {a for a in expected if a in MOVEMENT_CODES}
        assert out == expected - moves, f"{name} row {k + 2}: {code!r} -> {sorted(out)}, sheet lists {listed!r}"
        assert set(out.descriptors) >= {str(a) for a in moves}
        checked += 1
    assert checked == n_rows


@pytest.mark.parametrize("code, aus, descriptors", [
    ("12+R61", {12}, ("61",)),        # an eye-position code beside an AU
    (56, set(), ("56",)),             # a head-position code alone, stored as a number
    ("4+AD38+M55+80", {4}, ("AD38", "M55", "80")),
])
def test_head_eye_and_behaviour_codes_are_descriptors(code, aus, descriptors):
    out = parse_facs(code)
    assert out == aus and tuple(out.descriptors) == descriptors
