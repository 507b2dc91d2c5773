"""Annotation readers, label schemes and frame-folder layouts."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from psyau_graph.data.annotations import AnnotationError, read_annotations
from psyau_graph.data.labels import LABEL_SCHEMES, apply_label_scheme, class_names, map_emotion
from psyau_graph.data.layouts import find_clip_frames, match_layout

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "annotations"


def _real(name: str) -> Path:
    p = SHARED / name
    if not p.is_file():
        pytest.skip(f"real annotation sheet {name} not found at {p} (shared/ beside the repository)")
    return p


# ---------------------------------------------------------------- real sheets
def test_casme2_every_row():
    df = read_annotations(_real("CASME2-coding.xlsx"), "casme2")
    raw = pd.read_excel(_real("CASME2-coding.xlsx"), sheet_name=0, dtype=object)
    assert len(df) == len(raw) == 250
    assert df["subject"].nunique() == 26
    assert df["subject"].iloc[0] == "sub01" and df["clip"].iloc[0] == "EP02_01f"
    assert (df["onset"].tolist(), df["apex"].tolist()) == (raw["Onset Frame"].tolist(), raw["Apex Frame"].tolist())
    assert df["offset"].tolist() == raw["OffsetFrame"].tolist()
    assert df["row"].tolist() == list(range(2, 252))
    r = df[df["clip"] == "EP19_05f"].iloc[0]
    assert r["aus"] == frozenset({4, 10}) and r["emotion"] == "disgust"
    assert (df["onset"] < df["apex"]).all()
    # apex == offset rows exist in this sheet: kept, flagged, reported
    flagged = df[df["apex_eq_offset"]]
    assert len(flagged) == 4 and set(flagged["clip"]) >= {"EP16_04f", "EP09_06"}
    kept = [r for r in df.attrs["report"] if "apex == offset" in r["problem"]]
    assert len(kept) == 4 and all(r["action"] == "kept" for r in kept)


def test_samm_every_row_and_megc3_counts():
    df = read_annotations(_real("SAMM-coding.xlsx"), "samm")
    assert len(df) == 159 and df["subject"].nunique() == 29
    assert df["subject"].iloc[0] == "006" and df["clip"].iloc[0] == "006_1_2"
    assert df["aus"].iloc[0] == frozenset({4, 7})
    assert df.loc[df["clip"] == "007_6_1", "aus"].iloc[0] == frozenset({6, 12, 15})
    assert "objective_class" in df.columns
    lab = apply_label_scheme(df, "megc3")
    counts = lab["class_name"].value_counts().to_dict()
    assert len(lab) == 133
    assert counts == {"negative": 92, "positive": 26, "surprise": 15}
    assert lab.attrs["dropped_emotions"] == {"Other": 26}
    assert lab["label"].tolist() == [class_names("megc3").index(c) for c in lab["class_name"]]


def test_casme2_megc3_and_5class():
    df = read_annotations(_real("CASME2-coding.xlsx"), "casme2")
    m = apply_label_scheme(df, "megc3")
    assert m["class_name"].value_counts().to_dict() == {"negative": 90, "positive": 32, "surprise": 25}
    assert {"fear", "sadness", "others"} <= set(m.attrs["dropped_emotions"])
    five = apply_label_scheme(df, "casme2_5")
    assert len(five) == 250 - 7 - 2  # sadness and fear dropped


# ---------------------------------------------------------------- written sheets
def _grid(rows: list[list]) -> pd.DataFrame:
    width = max(len(r) for r in rows)
    return pd.DataFrame([list(r) + [None] * (width - len(r)) for r in rows])


def _write(path: Path, sheets: dict[str, list[list]]):
    with pd.ExcelWriter(path) as w:
        for name, rows in sheets.items():
            _grid(rows).to_excel(w, sheet_name=name, header=False, index=False)


def test_header_not_first_row_and_csv(tmp_path):
    rows = [["SAMM coding, version x"], [None],
            ["Subject", "Filename", "Onset Frame", "Apex Frame", "Offset Frame", "Action Units", "Estimated Emotion"],
            [6, "006_1_2", 5562, 5588, 5632, "4+7", "Anger"],
            [7, "007_6_2", 1296.0, "1326", None, "R12", "Happiness"]]
    _write(tmp_path / "s.xlsx", {"MICRO_ONLY": rows})
    df = read_annotations(tmp_path / "s.xlsx", "samm")
    assert df["subject"].tolist() == ["006", "007"]
    assert df["row"].tolist() == [4, 5]
    assert df["apex"].tolist() == [5588, 1326] and df["offset"].isna().tolist() == [False, True]
    _grid(rows).to_csv(tmp_path / "s.csv", header=False, index=False)
    df2 = read_annotations(tmp_path / "s.csv", "samm")
    assert df2[["subject", "clip", "onset", "apex", "emotion"]].equals(df[["subject", "clip", "onset", "apex", "emotion"]])


def test_casme3_layout(tmp_path):
    rows = [["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"],
            ["spNO.1", "a", 100, 110, 130, "R12", 1, "happy"],
            ["spNO.1", "a", 300, 305, 320, "4+L10", 3, "disgust"],
            ["spNO.2", "b", 50, 50, 60, "1+2", 2, "surprise"],
            ["spNO.2", "c", 10, 20, 30, "4", 7, "others"]]
    _write(tmp_path / "c3.xlsx", {"other": [["x"]], "label": rows})
    df = read_annotations(tmp_path / "c3.xlsx", "casme3")
    assert df["subject"].tolist() == ["spNO.1", "spNO.1", "spNO.2", "spNO.2"]
    assert df["sample"].tolist() == ["a_100", "a_300", "b", "c"]
    assert df["onset_eq_apex"].tolist() == [False, False, True, False]
    assert any("onset == apex" in r["problem"] and r["row"] == 4 for r in df.attrs["report"])
    three = apply_label_scheme(df, "casme3_3")
    assert three["class_name"].tolist() == ["positive", "negative", "surprise"]
    seven = apply_label_scheme(df, "casme3_7")
    assert seven["label"].tolist() == [class_names("casme3_7").index(c) for c in ["happy", "disgust", "surprise", "others"]]


def test_dfme_subset_sheets(tmp_path):
    hdr = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Emotion"]
    _write(tmp_path / "dfme.xlsx", {
        "A": [hdr, ["1", "A_0001", 1, 5, 9, "12", "happiness"], ["2", "A_0002", 1, 4, 9, "4+9", "disgust"]],
        "B": [hdr, ["3", "B_0001", 2, 6, 10, "L12+14", "contempt"]],
        "notes": [["free text only"]]})
    with pytest.raises(AnnotationError, match="notes"):
        read_annotations(tmp_path / "dfme.xlsx", "dfme", sheet=["A", "notes"], errors="raise")
    df = read_annotations(tmp_path / "dfme.xlsx", "dfme")
    assert [r["sheet"] for r in df.attrs["report"] if r["action"] == "sheet skipped"] == ["notes"]
    assert df["subset"].tolist() == ["A", "A", "B"]
    lab = apply_label_scheme(df, "dfme7")
    assert lab["class_name"].tolist() == ["happiness", "disgust", "contempt"]


def test_smic_layout_without_apex_or_aus(tmp_path):
    rows = [["Subject", "Filename", "Onset", "Offset", "Emotion"],
            [1, "s1_po_01", 10, 30, "positive"], [2, "s2_ne_03", 5, 16, "negative"]]
    pd.DataFrame(rows).to_csv(tmp_path / "smic.csv", header=False, index=False)
    df = read_annotations(tmp_path / "smic.csv", "smic")
    assert df["subject"].tolist() == ["s1", "s2"]
    assert df["apex"].tolist() == [20, 10] and df["aus"].tolist() == [frozenset(), frozenset()]
    assert sum("estimated" in r["problem"] for r in df.attrs["report"]) == 2
    assert apply_label_scheme(df, "smic3")["label"].tolist() == [1, 0]


@pytest.mark.parametrize("cells, problem, kind", [
    (["01", "EP1", 50, 40, 60, "4", "disgust"], "onset 50 after apex 40", "onset_after_apex"),
    ([None, "EP1", 10, 40, 60, "4", "disgust"], "missing subject", "missing_field"),
    (["01", "EP1", 10, 40, 60, "xyz", "disgust"], "unparseable action units", "bad_value"),
    (["01", "EP1", 10.5, 40, 60, "4", "disgust"], "not an integer", "bad_value"),
    (["01", "EP1", 10, "/", 60, "4", "disgust"], "apex '/'", "apex_missing"),
])
def test_bad_rows(tmp_path, cells, problem, kind):
    hdr = ["Subject", "Filename", "Onset Frame", "Apex Frame", "OffsetFrame", "Action Units", "Estimated Emotion"]
    good = ["02", "EP2", 1, 5, 9, "12", "happiness"]
    _write(tmp_path / "c2.xlsx", {"Sheet1": [hdr, good, cells]})
    with pytest.raises(AnnotationError) as ei:
        read_annotations(tmp_path / "c2.xlsx", "casme2", errors="raise")
    msg = str(ei.value)
    assert "c2.xlsx" in msg and "'Sheet1'" in msg and "row 3" in msg and problem in msg
    df = read_annotations(tmp_path / "c2.xlsx", "casme2")  # default: left out, reported
    assert df["clip"].tolist() == ["EP2"]
    skipped = [r for r in df.attrs["report"] if r["action"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["row"] == 3 and problem in skipped[0]["problem"]
    assert skipped[0]["kind"] == kind


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        read_annotations(tmp_path / "x.xlsx", "nope")
    with pytest.raises(FileNotFoundError):
        read_annotations(tmp_path / "x.xlsx", "casme2")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(ValueError, match=r"\.xlsx or \.csv"):
        read_annotations(tmp_path / "x.txt", "casme2")
    pd.DataFrame([["Subject", "Filename", "Onset"], [1, "a", 2]]).to_csv(tmp_path / "m.csv", header=False, index=False)
    with pytest.raises(AnnotationError, match="lacks column"):
        read_annotations(tmp_path / "m.csv", "casme2")


def test_duplicate_rows(tmp_path):
    hdr = ["Subject", "Filename", "Onset Frame", "Apex Frame", "OffsetFrame", "Action Units", "emotion"]
    r = ["1", "EP1", 1, 5, 9, "12", "happiness"]
    _write(tmp_path / "d.xlsx", {"Sheet1": [hdr, r, r]})
    with pytest.raises(AnnotationError, match="duplicate"):
        read_annotations(tmp_path / "d.xlsx", "casme2", errors="raise")
    assert len(read_annotations(tmp_path / "d.xlsx", "casme2")) == 1


# ---------------------------------------------------------------- label schemes
def test_label_schemes_data():
    for name, mapping in LABEL_SCHEMES.items():
        assert set(mapping.values()) <= set(class_names(name)), name
    assert map_emotion(" Fear ", "megc3", "samm") == "negative"
    assert map_emotion("fear", "megc3", "casme2") is None
    with pytest.raises(ValueError, match="unknown"):
        class_names("nope")


# ---------------------------------------------------------------- layouts
def _touch(p: Path):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")


def test_find_clip_frames_casme2_and_samm(tmp_path):
    for n in (100, 46, 9):
        _touch(tmp_path / "c2" / "sub01" / "EP02_01f" / f"img{n}.jpg")
    _touch(tmp_path / "c2" / "sub01" / "EP02_01f" / "notes.txt")
    row = {"dataset": "casme2", "subject": "sub01", "clip": "EP02_01f"}
    frames = find_clip_frames(tmp_path / "c2", row)
    assert [n for n, _ in frames] == [9, 46, 100] and frames[1][1].name == "img46.jpg"
    for n in (5562, 5563):
        _touch(tmp_path / "samm" / "006" / "006_1_2" / f"006_{n:05d}.JPG")
    got = find_clip_frames(tmp_path / "samm", pd.Series({"subject": "006", "clip": "006_1_2"}), dataset="samm")
    assert [n for n, _ in got] == [5562, 5563]
    user = find_clip_frames(tmp_path / "samm", {"subject": "006", "clip": "006_1_2"}, "{subject}/{clip}/{subject}_{frame}.jpg")
    assert len(user) == 2


def test_find_clip_frames_errors(tmp_path):
    row = {"dataset": "casme2", "subject": "sub09", "clip": "EP01"}
    with pytest.raises(FileNotFoundError) as ei:
        find_clip_frames(tmp_path, row)
    msg = str(ei.value)
    assert "sub09" in msg and "img{frame}.jpg" in msg and "reg_img{frame}.jpg" in msg
    with pytest.raises(ValueError, match="file name"):
        match_layout(tmp_path, row, "{frame}/{clip}/x.jpg")
    with pytest.raises(FileNotFoundError, match="needs field 'subset'"):
        find_clip_frames(tmp_path, row, "{subset}/{clip}/{frame}.jpg")
