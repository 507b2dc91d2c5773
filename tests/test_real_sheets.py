"""Annotation sheets in the layouts the data sets release them, read with default options.

Each test writes a small sheet in one release layout (openpyxl / pandas, in tmp_path)
and checks the rows kept, the flags and the report lines.
"""
from __future__ import annotations

import json
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from psyau_graph.data import annotations
from psyau_graph.data.annotations import AnnotationError, read_annotations, report_summary
from psyau_graph.data.labels import apply_label_scheme


def _xlsx(path: Path, sheets: dict[str, list[list]]) -> Path:
    """Write rows cell by cell with openpyxl (formulas stay formulas, no cached values)."""
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
    wb.save(path)
    return path


def _kinds(df) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in df.attrs["report"]:
        out.setdefault(r["kind"], []).append(r["row"])
    return out


def test_import_gives_the_module():
    import types

    assert isinstance(annotations, types.ModuleType)
    assert annotations.read_annotations is read_annotations


C2_HDR = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]


def test_casme2_release_with_odd_rows(tmp_path):
    rows = [C2_HDR,
            ["01", "EP02_01f", 46, 59, 86, "12", "happiness"],
            [1, "EP03_02", 131.0, "139", "0", "4+AD38", "disgust"],          # offset 0, descriptor
            ["02", "EP04_01", 10, 20, "/", "AD31", "others"],                # descriptor only
            ["02", "EP04_02", 10, 30, 25, "R14", "repression"],              # offset before apex
            ["03", "EP05_01", 40, 30, 60, "4", "disgust"],                   # onset after apex
            ["03", "EP05_02", 40, "/", 60, "4", "disgust"],                  # apex not annotated
            ["03", "EP06_01", 5, 9, "=C8+10", "1+2", "surprise"],            # formula offset
            ["03", "EP06_02", 5, 9, 15, "M55+L10", "disgust"]]
    _xlsx(tmp_path / "CASME2-coding-20140508.xlsx", {"Sheet1": rows, "Sheet2": [["key"]]})
    df = read_annotations(tmp_path / "CASME2-coding-20140508.xlsx", "casme2")
    assert df["clip"].tolist() == ["EP02_01f", "EP03_02", "EP04_01", "EP04_02", "EP06_01", "EP06_02"]
    assert df["subject"].tolist() == ["sub01", "sub01", "sub02", "sub02", "sub03", "sub03"]
    assert df["onset"].tolist() == [46, 131, 10, 10, 5, 5] and df["apex"].tolist() == [59, 139, 20, 30, 9, 9]
    assert df["offset"].isna().tolist() == [False, True, True, True, False, False]
    assert df["offset"].iloc[4] == 15  # =C8+10 with C8 = 5
    assert df["aus"].tolist() == [{12}, {4}, set(), {14}, {1, 2}, {10}]
    assert df["descriptors"].tolist() == [(), ("AD38",), ("AD31",), (), (), ("M55",)]
    assert df["offset_missing"].tolist() == [False, True, True, True, False, False]
    k = _kinds(df)
    assert k["onset_after_apex"] == [6] and k["apex_missing"] == [7]
    assert k["offset_missing"] == [3, 4] and k["offset_before_apex"] == [5]
    assert k["descriptors"] == [3, 4, 9] and k["frame_from_formula"] == [8]
    lines = report_summary(df)
    assert "3 rows: FACS descriptors / misc codes in the AU cell (kept, in 'descriptors'): rows 3, 4, 9" in lines
    assert "1 row: onset after apex: left out: row 6" in lines
    with pytest.raises(AnnotationError) as ei:  # strict: every bad row at once
        read_annotations(tmp_path / "CASME2-coding-20140508.xlsx", "casme2", errors="raise")
    assert "2 annotation row(s)" in str(ei.value) and "row 6" in str(ei.value) and "row 7" in str(ei.value)


def test_apex_estimate_is_opt_in(tmp_path):
    rows = [C2_HDR, ["01", "EP1", 10, "/", 30, "4", "disgust"], ["01", "EP2", 10, None, None, "4", "disgust"]]
    _xlsx(tmp_path / "c.xlsx", {"Sheet1": rows})
    assert len(read_annotations(tmp_path / "c.xlsx", "casme2")) == 0
    df = read_annotations(tmp_path / "c.xlsx", "casme2", apex_estimate="middle")
    assert df["apex"].tolist() == [20] and df["apex_estimated"].tolist() == [True]
    k = _kinds(df)
    assert k["apex_estimated"] == [2] and k["apex_missing"] == [3]  # no offset: cannot estimate
    with pytest.raises(ValueError, match="apex_estimate"):
        read_annotations(tmp_path / "c.xlsx", "casme2", apex_estimate="mean")


def test_samm_release_with_many_title_rows_and_question_marks(tmp_path):
    title = [[f"SAMM key line {i}"] for i in range(12)] + [[None], ["? = the movement could not be coded"]]
    hdr = [None, "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame",
           "Duration", None, "Action Units", "Estimated Emotion", "Objective Classes"]
    rows = title + [hdr,
                    [None, 6, "006_1_2", 1, 5562, 5588, 5632, "=G16-E16", None, "4+7", "Anger", "II"],
                    [None, 7, "007_6_1", 6, 1296, 1326, "-", None, None, "?", "Other", "VII"],
                    [None, 11, "011_3_4", 3, 100, 120, 150, None, None, "12+61", "Happiness", "I"],
                    [None, 14, "014_1_1", 1, 30, 40, 50, None, None, "R12+?", "Happiness", "I"]]
    _xlsx(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", {"MICRO_ONLY": rows})
    df = read_annotations(tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx", "samm")
    assert df["subject"].tolist() == ["006", "007", "011", "014"]
    assert df["row"].tolist() == [16, 17, 18, 19]
    assert df["aus"].tolist() == [{4, 7}, set(), {12}, {12}]  # 61 (eyes turn left) is no AU
    assert df["aus_uncoded"].tolist() == [False, True, False, True]
    assert df["descriptors"].tolist() == [(), (), ("61",), ()]
    assert df["objective_class"].tolist() == ["II", "VII", "I", "I"]
    assert "2 rows: AU cell '?' (kept; AUs it does not list are unknown): rows 17, 19" in report_summary(df)


def test_casme3_part_a_au_split_and_offset_zero(tmp_path):
    hdr = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "AU_Split", "Objective class", "emotion"]
    body = [["spNO.1", "a", 100, 110, 0, "R12", "R12", 1, "happy"],
            ["spNO.1", "a", 300, 305, 320, "4+L10", "4;L10", 3, "disgust"],
            ["spNO.2", "b", 50, 50, 0, "1+2", "1;2", 2, "surprise"],
            ["spNO.2", "c", 10, 20, 0, "?", "?", 7, "others"]]
    _xlsx(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", {"label": [hdr] + body})
    df = read_annotations(tmp_path / "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", "casme3")
    assert len(df) == 4  # every row kept
    assert df["offset"].isna().tolist() == [True, False, True, True]
    assert df["aus"].tolist() == [{12}, {4, 10}, {1, 2}, set()]
    assert df["sample"].tolist() == ["a_100", "a_300", "b", "c"]
    assert _kinds(df)["offset_missing"] == [2, 4, 5]
    assert apply_label_scheme(df, "casme3_7")["class_name"].tolist() == ["happy", "disgust", "surprise", "others"]


def test_dfme_three_sheet1_files_with_fps(tmp_path):
    hdr = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Emotion", "EmotionId", "Fps"]
    files = []
    for name, rows in [("DFME_train", [["1", "train_0001", 1, 5, 9, "12", "happiness", 4, 200]]),
                       ("DFME_testA", [["2", "testA_0001", 1, 8, 20, "4+9", "disgust", 2, 300]]),
                       ("DFME_testB", [["3", "testB_0001", 2, 15, 30, "L12+14", "contempt", 1, 500],
                                       ["3", "testB_0002", 2, 15, 0, "4", "anger", 0, "500"]])]:
        files.append(_xlsx(tmp_path / f"{name}.xlsx", {"Sheet1": [hdr] + rows}))
    df = read_annotations(files, "dfme")
    assert df["subset"].tolist() == ["DFME_train", "DFME_testA", "DFME_testB", "DFME_testB"]
    assert df["fps"].tolist() == [200, 300, 500, 500] and str(df["fps"].dtype) == "Int64"
    assert df["emotion_id"].tolist() == ["4", "2", "1", "0"]
    assert df["file"].tolist() == ["DFME_train.xlsx", "DFME_testA.xlsx", "DFME_testB.xlsx", "DFME_testB.xlsx"]
    assert df["offset"].isna().tolist() == [False, False, False, True]


def test_smic_label_codes_and_clip_classes(tmp_path):
    rows = [["Subject", "Filename", "Onset", "Offset", "label"],
            [1, "s1_po_01", 10, 30, 1], [2, "s2_ne_03", 5, 16, 0],
            [3, "s3_sur_02", 1, 9, "2"], [3, "s3_ne_04", 1, 9, 1]]  # last: sheet vs clip disagree
    pd.DataFrame(rows).to_csv(tmp_path / "SMIC-HS.csv", header=False, index=False)
    df = read_annotations(tmp_path / "SMIC-HS.csv", "smic")
    assert df["emotion"].tolist() == ["positive", "negative", "surprise", "positive"]
    assert df["apex"].tolist() == [20, 10, 5, 5] and df["apex_estimated"].all()
    k = _kinds(df)
    assert k["label_disagrees"] == [5]
    rows2 = [["Subject", "Filename", "Onset", "Offset"], [1, "s1_po_01", 10, 30], [1, "s1_x_02", 1, 5]]
    pd.DataFrame(rows2).to_csv(tmp_path / "smic2.csv", header=False, index=False)
    df2 = read_annotations(tmp_path / "smic2.csv", "smic")
    assert df2["emotion"].tolist() == ["positive"]
    assert _kinds(df2) == {"apex_estimated": [2], "emotion_from_clip": [2], "missing_field": [3]}


def test_headerless_sheet_with_named_columns(tmp_path):
    rows = [["CASME II coding (no header)"],
            ["01", "EP02_01f", 46, 59, 86, "12", "happiness"],
            ["02", "EP03_02", 131, 139, 161, "4", "disgust"]]
    _xlsx(tmp_path / "nohdr.xlsx", {"Sheet1": rows})
    with pytest.raises(AnnotationError, match="--columns"):
        read_annotations(tmp_path / "nohdr.xlsx", "casme2")
    spec = "subject=A,clip=B,onset=C,apex=D,offset=E,aus=F,emotion=G"
    df = read_annotations(tmp_path / "nohdr.xlsx", "casme2", columns=spec)
    assert df["clip"].tolist() == ["EP02_01f", "EP03_02"] and df["row"].tolist() == [2, 3]
    with pytest.raises(ValueError, match="column letter"):
        read_annotations(tmp_path / "nohdr.xlsx", "casme2", columns="subject=A,clip=?")
    with pytest.raises(AnnotationError, match="lacks"):
        read_annotations(tmp_path / "nohdr.xlsx", "casme2", columns="subject=A,clip=B")


def test_cli_preprocess_prints_summary_and_writes_report(tmp_path, capsys):
    from psyau_graph.cli import main

    rows = [C2_HDR, ["01", "EP1", 1, 5, 0, "?", "happiness"], ["01", "EP2", 9, 5, 20, "4", "disgust"]]
    _xlsx(tmp_path / "c.xlsx", {"Sheet1": rows})
    rc = main(["preprocess", "--annotations", str(tmp_path / "c.xlsx"), "--dataset", "casme2",
               "--frames", str(tmp_path / "frames"), "--out", str(tmp_path / "out"), "--workers", "1",
               "--check-annotations"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 row: AU cell '?' (kept; AUs it does not list are unknown): row 2" in out and "1 row: onset after apex: left out: row 3" in out
    rep = json.loads((tmp_path / "out" / "annotation_report.json").read_text())
    assert rep["rows_kept"] == 1 and {e["kind"] for e in rep["entries"]} >= {"aus_uncoded", "onset_after_apex"}
    rc = main(["preprocess", "--annotations", str(tmp_path / "c.xlsx"), "--dataset", "casme2",
               "--frames", str(tmp_path / "frames"), "--out", str(tmp_path / "out2"), "--columns", "subject=?"])
    assert rc == 2


def test_apex_window_scaled_by_frame_rate(tmp_path):
    from psyau_graph.preprocess.batch import _job
    from psyau_graph.preprocess.pipeline import apex_window_frames

    assert [apex_window_frames(1, f) for f in (None, 100, 200, 300, 500)] == [1, 1, 1, 2, 3]
    assert apex_window_frames(0, 500) == 0 and apex_window_frames(2, 500) == 5
    with pytest.raises(ValueError, match="fps"):
        apex_window_frames(1, 0)
    row = {"subject": "3", "clip": "testB_0001", "onset": 2, "apex": 15, "offset": pd.NA,
           "aus": frozenset({4}), "emotion": "anger", "row": 2, "subset": "DFME_testB", "fps": 500}
    assert _job(row, "dfme", tmp_path)["row"]["fps"] == 500
    assert "fps" not in _job(dict(row, fps=pd.NA), "dfme", tmp_path)["row"]


@pytest.mark.parametrize("code, aus, descriptors, uncoded", [
    ("?", set(), (), True), ("R12+?", {12}, (), True), ("AD31", set(), ("AD31",), False),
    ("4+AD38", {4}, ("AD38",), False), ("ad38+AD39", set(), ("AD38", "AD39"), False),
    ("L10+M55+4", {4, 10}, ("M55",), False)])
def test_parse_facs_descriptors_and_question_mark(code, aus, descriptors, uncoded):
    import pickle

    from psyau_graph.au import parse_facs

    got = parse_facs(code)
    assert (set(got), got.descriptors, got.uncoded) == (aus, descriptors, uncoded)
    back = pickle.loads(pickle.dumps(got))
    assert (back.descriptors, back.uncoded) == (descriptors, uncoded)
    assert not parse_facs("4+AD38x", errors="report").ok


def test_cli_preprocess_processes_every_usable_row_of_an_odd_sheet(tmp_path, capsys):
    from psyau_graph.data import synth
    from psyau_graph.cli import main

    sheet = synth.generate_synthetic(tmp_path / "frames", subjects=1, clips_per_subject=2, seed=1,
                                     progress=False)
    clean = read_annotations(sheet, "synth")
    a, b = clean.iloc[0], clean.iloc[1]
    rows = [[f"title line {i}"] for i in range(11)] + [C2_HDR,
            [a["subject"], a["clip"], float(a["onset"]), str(a["apex"]), "/", "?", a["emotion"]],
            [b["subject"], b["clip"], int(b["onset"]), int(b["apex"]), 0, "4+AD38", b["emotion"]],
            [b["subject"], "never_there", 50, 40, 60, "4", "disgust"]]
    _xlsx(tmp_path / "odd.xlsx", {"Sheet1": rows})
    argv = ["preprocess", "--annotations", str(tmp_path / "odd.xlsx"), "--dataset", "synth", "--frames",
            str(tmp_path / "frames"), "--out", str(tmp_path / "cache"), "--flow", "dis", "--workers", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "synth annotations: 2 usable row(s)" in out
    assert "1 row: AU cell '?' (kept; AUs it does not list are unknown): row 13" in out and "1 row: onset after apex: left out: row 15" in out
    assert "2 processed, 0 already cached, 0 skipped" in out
    assert len(list((tmp_path / "cache" / "clips" / "synth").rglob("*.pt"))) == 2


def test_several_sheets_with_headers(tmp_path):
    rows = [C2_HDR, ["01", "EP1", 1, 5, 9, "12", "happiness"]]
    _xlsx(tmp_path / "two.xlsx", {"coding": rows, "coding_old": rows + [["02", "EP2", 1, 5, 9, "4", "disgust"]]})
    df = read_annotations(tmp_path / "two.xlsx", "casme2")
    assert df["sheet"].tolist() == ["coding"]
    assert "1 sheet(s): further sheet with an annotation header: not read (choose with sheet=...): " \
           "two.xlsx:coding_old" in report_summary(df)
    assert len(read_annotations(tmp_path / "two.xlsx", "casme2", sheet="coding_old")) == 2


def test_formula_cells(tmp_path):
    from psyau_graph.data.formulas import col_index, eval_formula

    grid = pd.DataFrame([[1, 2, "=A1+B1"], [10, None, "=SUM(A1:B2)"]])
    assert [col_index(c) for c in ("A", "Z", "AA")] == [0, 25, 26]
    assert eval_formula("=C1*2-A2/5", grid) == 4.0 and eval_formula("=SUM(A1:B2)", grid) == 13.0
    with pytest.raises(ValueError, match="outside the sheet"):
        eval_formula("=D9", grid)
    with pytest.raises(ValueError, match="simple"):
        eval_formula("=VLOOKUP(A1,B1:C2,2)", grid)
    rows = [C2_HDR, ["01", "EP1", 10, "=C2+5", "=VLOOKUP(C2,C2:D2,2)", "4", "disgust"],
            ["01", "EP2", 10, "=IF(C3>0,C3,0)", 30, "4", "disgust"]]
    _xlsx(tmp_path / "f.xlsx", {"Sheet1": rows})
    df = read_annotations(tmp_path / "f.xlsx", "casme2")
    assert df["apex"].tolist() == [15] and df["offset"].isna().tolist() == [True]  # offset unusable: NA
    assert _kinds(df)["bad_value"] == [3] and _kinds(df)["offset_missing"] == [2]
