"""MEGC 2019 composite label lists: both layouts, header or not, blank lines, bad rows."""
from __future__ import annotations

import pytest

from psyau_graph.data.annotations import AnnotationError, read_annotations
from psyau_graph.data.megc import read_megc_list


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_plain_list_without_header_with_blank_lines(tmp_path):
    p = _write(tmp_path, "megc.csv", "casme2,1,EP02_01f,1\n\nsamm,6,006_1_2,0\n,,,\nsmic,s01,s1_sur_01,2\n\n")
    df = read_annotations(p, "megc2019")
    assert df["dataset"].tolist() == ["casme2", "samm", "smic"]
    assert df["subject"].tolist() == ["sub01", "006", "s1"]
    assert df["clip"].tolist() == ["EP02_01f", "006_1_2", "s1_sur_01"]
    assert df["emotion"].tolist() == ["positive", "negative", "surprise"]
    assert df["label"].tolist() == [1, 0, 2]
    assert df["row"].tolist() == [1, 3, 5]  # file line numbers, blank lines counted
    assert df["onset"].isna().all() and df["apex"].isna().all()
    assert all(a == frozenset() for a in df["aus"])
    assert df.attrs["layout"] == "plain" and df.attrs["report"] == []


def test_plain_list_with_header(tmp_path):
    p = _write(tmp_path, "megc.csv", "dataset,subject,clip,label\nCASME II,sub02,EP03_02,2\nSMIC,3,s3_po_05,1\n")
    df = read_megc_list(p)
    assert df[["dataset", "subject", "clip", "label"]].values.tolist() == [
        ["casme2", "sub02", "EP03_02", 2], ["smic", "s3", "s3_po_05", 1]]
    assert df["row"].tolist() == [2, 3]


def test_image_list_variant(tmp_path):
    p = _write(tmp_path, "combined.csv",
               "dataset,sub,filename_o,label,apex,imagename\n"
               "casme2,sub01,EP02_01f,1,46,sub01_EP02_01f.png\n\n"
               "samm,006,006_1_2,0,5,006_1_2.png\n")
    df = read_annotations(p, "megc2019")
    assert df.attrs["layout"] == "image list"
    assert df["apex"].tolist() == [46, 5]
    assert df["image"].tolist() == ["sub01_EP02_01f.png", "006_1_2.png"]
    assert df["clip"].tolist() == ["EP02_01f", "006_1_2"]


def test_bad_rows_are_all_listed_or_reported(tmp_path):
    p = _write(tmp_path, "megc.csv", "casme2,1,EP01,3\nfoo,1,x,1\nsamm,7,007_1,0\nsamm,7,007_1,0\n")
    with pytest.raises(AnnotationError) as err:
        read_megc_list(p)
    msg = str(err.value)
    assert "2 bad row(s)" in msg and "row 1: label '3'" in msg and "row 2: dataset 'foo'" in msg
    df = read_megc_list(p, errors="report")
    assert df["clip"].tolist() == ["007_1"]
    problems = [(r["row"], r["problem"].split(" ")[0]) for r in df.attrs["report"]]
    assert problems == [(1, "label"), (2, "dataset"), (4, "duplicate")]


def test_missing_file_and_empty_list(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_megc_list(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="empty"):
        read_megc_list(_write(tmp_path, "e.csv", "\n\n"))
