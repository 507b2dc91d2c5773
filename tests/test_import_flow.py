"""``psyau import-flow`` on synthetic clips written in the STSTNet flow-image format.

Each clip: a synthetic face (``make_identity``) as a 224×224 apex crop (JPEG) and the
displacement field of its emotion's AUs (``au_field``) with its optical strain, min–max
normalised per channel to a 28×28 PNG, as the MEGC 2019 flow-image releases hold them.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from psyau_graph.cli import main
from psyau_graph.data.synth import PROTOTYPES, au_field, make_identity
from psyau_graph.preprocess.batch import load_clip_cache
from psyau_graph.preprocess.flow_images import name_key, read_flow_image
from psyau_graph.preprocess.keypoints import landmarks_to_keypoints

EMOTION = {0: "disgust", 1: "happiness", 2: "surprise"}
# (dataset cell, subject cell, clip, label, flow file stem, crop file stem)
CLIPS = [
    ("casme2", "sub01", "EP01_1", 0, "sub01_EP01_1", "sub01_EP01_1"),
    ("casme2", "sub01", "EP02_1", 1, "sub01_EP02_1 ", "sub01_EP02_1"),  # space before .png
    ("casme2", "sub02", "EP01_2", 2, "sub02_EP01_2", "sub02_EP01_2"),
    ("casme2", "sub02", "EP03_1", 0, "sub02_EP03_1", "sub02_EP03_1"),
    ("samm", "006", "006_1_1", 1, "006_1_1", "006_1_1"),
    ("samm", "006", "006_1_2", 2, "006_1_2", "006_1_2"),
    ("smic", "s1", "s1_ne_01", 0, "s01_s01_ne_01", "s01_s1_ne_01"),  # names differ between folders
    ("smic", "s1", "s1_po_01", 1, "s01_s01_po_01", "s01_s1_po_01"),
]


def _flow_png(field: np.ndarray) -> np.ndarray:
    """(224, 224, 2) displacement → 28×28×3 uint8 of min–max normalised (u, v, strain)."""
    u, v = field[..., 0], field[..., 1]
    uy, ux = np.gradient(u)
    vy, vx = np.gradient(v)
    eps = np.sqrt(ux ** 2 + vy ** 2 + 0.5 * (uy + vx) ** 2)
    out = []
    for ch in (u, v, eps):
        ch = cv2.resize(ch.astype(np.float32), (28, 28), interpolation=cv2.INTER_AREA)
        out.append(np.round(255 * (ch - ch.min()) / max(float(np.ptp(ch)), 1e-6)))
    return np.stack(out, -1).astype(np.uint8)  # planes u, v, strain in OpenCV's order


@pytest.fixture(scope="module")
def flow_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("flowset")
    (root / "flow").mkdir()
    (root / "crops").mkdir()
    rng = np.random.default_rng(0)
    lines = ["dataset,sub,filename_o,label,apex,imagename"]
    truth = {}
    for ds, sub, clip, label, fstem, cstem in CLIPS:
        face, lm = make_identity(rng, 224)
        aus = PROTOTYPES[EMOTION[label]][0]
        truth[clip] = lm
        field = au_field(aus, lm, 224, {a: 3.0 for a in aus})
        assert cv2.imwrite(str(root / "flow" / f"{fstem}.png"), _flow_png(field))
        crop = (255 * face[..., ::-1]).astype(np.uint8)
        if clip == "EP03_1":
            crop = np.full_like(crop, 128)  # no face on this crop: fallback keypoints
        assert cv2.imwrite(str(root / "crops" / f"{cstem}.jpg"), crop)
        lines.append(f"{ds},{sub},{clip},{label},10,")
    lines.append("casme2,sub03,EP09_9,1,12,")  # listed, but no flow image
    assert cv2.imwrite(str(root / "flow" / "sub09_EP01_1.png"), np.zeros((28, 28, 3), np.uint8))  # unclaimed
    (root / "megc.csv").write_text("\n".join(lines) + "\n\n")
    (root / "casme2.csv").write_text(
        "Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n"
        "1,EP01_1,5,10,20,9+10,disgust\n1,EP02_1,3,10,15,6+12,happiness\n2,EP01_2,1,10,11,1+2+5,surprise\n")
    np.save(root / "truth_EP01_1.npy", truth["EP01_1"])
    return root


def test_name_key_joins_release_spellings():
    assert name_key("s01_s01_ne_01.png") == name_key("s01_s1_ne_01.jpg") == "s1_s1_ne_1"
    assert name_key("sub01_EP02_01f .png") == name_key("sub01_EP02_01f") == "sub1_ep2_1f"


def test_read_flow_image_channels(tmp_path):
    img = np.zeros((28, 28, 3), np.uint8)
    img[..., 0], img[..., 2] = 255, 51
    cv2.imwrite(str(tmp_path / "f.png"), img)
    ocv, notes = read_flow_image(tmp_path / "f.png")
    assert ocv.shape == (3, 28, 28) and notes == []
    assert np.allclose(ocv[0], 1.0) and np.allclose(ocv[2], 0.2)
    rgb, _ = read_flow_image(tmp_path / "f.png", channels="rgb")
    assert np.allclose(rgb[0], 0.2) and np.allclose(rgb[2], 1.0)
    cv2.imwrite(str(tmp_path / "g.png"), np.zeros((28, 28), np.uint8))
    with pytest.raises(ValueError, match="3-channel"):
        read_flow_image(tmp_path / "g.png")


def test_import_flow_then_train_loso(flow_set, tmp_path, capsys):
    cache = tmp_path / "cache"
    rc = main(["import-flow", "--flow-images", str(flow_set / "flow"), "--apex-crops", str(flow_set / "crops"),
               "--labels", str(flow_set / "megc.csv"), "--out", str(cache),
               "--casme2-sheet", str(flow_set / "casme2.csv")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "8 clips written (casme2 4, samm 2, smic 2)" in out
    assert "1 rows without a flow image" in out and "1 clips with fallback (mean) keypoints" in out
    assert "1 flow images no row took" in out and "2 rows not found in the AU sheets" in out
    assert "WARNING" not in out
    rep = json.loads((cache / "report.json").read_text())
    assert rep["warnings"] == [] and int(np.argmin(rep["channel_medians"])) == 2
    assert [r["clip"] for r in rep["no_flow_image"]] == ["EP09_9"]
    assert [r["clip"] for r in rep["fallback_keypoints"]] == ["EP03_1"]
    assert rep["unclaimed_flow_images"] == ["sub09_EP01_1.png"]
    assert sorted(r["clip"] for r in rep["loose_matches"]) == ["s1_ne_01", "s1_po_01"]
    assert [r["clip"] for r in rep["au_missing"]] == ["EP03_1", "EP09_9"]

    d = load_clip_cache(cache / "clips" / "casme2" / "sub01" / "EP01_1.pt")
    meta = d["meta"]
    assert meta["aus"] == [9, 10] and (meta["onset"], meta["apex"], meta["offset"]) == (5, 10, 20)
    assert meta["emotion"] == "negative" and meta["flow_method"] == "flow-image"
    assert tuple(d["flow"].shape) == (3, 128, 128)
    assert float(d["flow28"].min()) >= 0 and float(d["flow28"].max()) <= 1
    kp = d["keypoints"].numpy()
    # the face fills the middle of the crop: keypoints inside the 128 frame, spread over the face
    assert kp.min() > 0 and kp.max() < 128 and np.ptp(kp[:, 0]) > 30
    # and they sit where the synthetic face's landmarks are (scaled 224 -> 128)
    true_kp = landmarks_to_keypoints((np.load(flow_set / "truth_EP01_1.npy") + 0.5) * 128 / 224 - 0.5)
    assert np.linalg.norm(kp - true_kp, axis=1).mean() < 4.0
    fb = load_clip_cache(cache / "clips" / "casme2" / "sub02" / "EP03_1.pt")
    assert any("mean of the 7 clips" in n for n in fb["meta"]["notes"])
    # AU labels: coded where the sheet has the clip; unknown (not "no AU") for SMIC, SAMM without
    # a sheet and a CASME II clip missing from the sheet
    assert meta["aus_coding"] == "coded" and fb["meta"]["aus_coding"] == "none" and fb["meta"]["aus"] == []
    codings = {p.parts[-3]: set() for p in (cache / "clips").glob("*/*/*.pt")}
    for p in (cache / "clips").glob("*/*/*.pt"):
        codings[p.parts[-3]].add(load_clip_cache(p)["meta"]["aus_coding"])
    assert codings == {"casme2": {"coded", "none"}, "samm": {"none"}, "smic": {"none"}}

    run = tmp_path / "run"
    rc = main(["train", "--data", str(cache), "--protocol", "loso", "--classes", "megc3", "--epochs", "1",
               "--batch-size", "4", "--out", str(run), "--threads", "1", "--no-final-model"])
    assert rc == 0
    res = json.loads((run / "results.json").read_text())
    assert res["n_samples"] == 8 and sorted(f["name"] for f in res["folds"]) == ["006", "s1", "sub01", "sub02"]
    assert sorted(res["per_dataset"]) == ["casme2", "samm", "smic"]
    assert res["class_names"] == ["negative", "positive", "surprise"]
    assert sum(m["n"] for m in res["per_dataset"].values()) == 8

    # the composite protocol: folds over (dataset, subject), per-dataset scores beside the pooled one
    rc = main(["train", "--data", str(cache), "--protocol", "megc", "--classes", "megc3", "--epochs", "1",
               "--batch-size", "4", "--out", str(tmp_path / "megc"), "--threads", "1", "--no-final-model"])
    assert rc == 0
    res = json.loads((tmp_path / "megc" / "results.json").read_text())
    assert sorted(f["name"] for f in res["folds"]) == ["casme2/sub01", "casme2/sub02", "samm/006", "smic/s1"]
    assert {d: m["n"] for d, m in res["per_dataset"].items()} == {"casme2": 4, "samm": 2, "smic": 2}

    # --megc-list restricts a cache to the clips a composite list names, reporting what differs
    sub = tmp_path / "sub.csv"
    sub.write_text("casme2,1,EP01_1,1\nsamm,6,006_1_1,1\nsamm,006,006_1_2,2\n\nsmic,s01,s1_ne_01,0\ncasme2,5,EP99,0\n")
    capsys.readouterr()
    rc = main(["train", "--data", str(cache), "--protocol", "megc", "--classes", "megc3", "--epochs", "1",
               "--batch-size", "4", "--out", str(tmp_path / "sub"), "--threads", "1", "--no-final-model",
               "--megc-list", str(sub)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "4 of 5 listed clips in the cache; 1 not in the cache; 1 with another class" in out
    assert "not in the cache: casme2/sub05/EP99 (list row 6)" in out
    assert "class differs: casme2/sub01/EP01_1: cache negative, list positive" in out
    res = json.loads((tmp_path / "sub" / "results.json").read_text())
    assert res["n_samples"] == 4 and sorted(f["name"] for f in res["folds"]) == ["casme2/sub01", "samm/006", "smic/s1"]
    assert res["extra"]["composite"]["selected"] == 4


def test_import_flow_bad_input_is_one_line(flow_set, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("casme2,1,EP01_1,7\n")
    rc = main(["import-flow", "--flow-images", str(flow_set / "flow"), "--apex-crops", str(flow_set / "crops"),
               "--labels", str(bad), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "bad.csv, row 1: label '7'" in err
    rc = main(["import-flow", "--flow-images", str(tmp_path / "nope"), "--apex-crops", str(flow_set / "crops"),
               "--labels", str(flow_set / "megc.csv"), "--out", str(tmp_path / "c")])
    assert rc == 2 and "image folder not found" in capsys.readouterr().err


def test_import_flow_warns_on_a_wrong_channel_order(flow_set, tmp_path):
    from psyau_graph.preprocess.flow_images import import_flow_images, summary_line

    rep = import_flow_images(flow_set / "megc.csv", flow_set / "flow", tmp_path / "c",
                             crop_dir=flow_set / "crops", channels="rgb")
    assert len(rep["warnings"]) == 1 and "check the channel order" in rep["warnings"][0]
    assert "WARNING" in summary_line(rep)


def test_ststnet_loso_folder_layout(tmp_path):
    """STSTNet's release repeats each image in every other fold's u_train: only u_test counts."""
    from psyau_graph.data.megc import read_megc_list
    from psyau_graph.preprocess.flow_images import index_folder, match_files

    clips = [("sub01", "EP01_1", 0), ("sub02", "EP02_1", 1), ("006", "006_1_2", 2)]
    root = tmp_path / "norm_u_v_os"
    img = np.zeros((28, 28, 3), np.uint8)
    for fold, _, _ in clips:
        for sub, clip, label in clips:
            part = "u_test" if sub == fold else "u_train"
            folder_label = 0 if clip == "006_1_2" and part == "u_test" else label  # one wrong folder
            d = root / fold / part / str(folder_label)
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / f"{sub}_{clip}.png"), img)  # SAMM: 006_006_1_2, as in the release
    (tmp_path / "l.csv").write_text("".join(f"{'samm' if s == '006' else 'casme2'},{s},{c},{lab}\n"
                                            for s, c, lab in clips))
    idx = index_folder(root)
    assert idx.loso_layout and len(idx.files) == 3
    matches, rep = match_files(read_megc_list(tmp_path / "l.csv"), idx, None)
    assert [m["flow"].parent.parent.name for m in matches] == ["u_test"] * 3
    assert rep["no_flow_image"] == [] and rep["unclaimed_flow_images"] == []
    assert [(d["clip"], d["list_label"], d["folder_label"]) for d in rep["label_disagreements"]] == [("006_1_2", 2, 0)]
    assert len(rep["no_apex_crop"]) == 3


def test_crop_landmarks_retries_on_a_padded_crop(flow_set, monkeypatch):
    """A face the detector misses on the bare crop is looked for on the padded crop; the
    landmarks come back in the crop's own frame (scaled to 128)."""
    from psyau_graph.preprocess import landmarks as lmk
    from psyau_graph.preprocess.flow_images import crop_landmarks

    crop = flow_set / "crops" / "sub01_EP01_1.jpg"
    direct, how = crop_landmarks(crop)
    assert how == "crop"
    real = lmk.detect_landmarks

    def miss_unpadded(image, **kw):
        if image.shape[:2] == (224, 224):
            raise lmk.NoFaceError("missed")
        return real(image, **kw)

    monkeypatch.setattr(lmk, "detect_landmarks", miss_unpadded)
    padded, how = crop_landmarks(crop)
    assert how == "padded crop"
    assert np.abs(padded - direct).mean() < 2.0


def test_no_face_on_any_crop_stops_with_one_line(flow_set, tmp_path, capsys):
    crops = tmp_path / "grey"
    crops.mkdir()
    for f in (flow_set / "crops").iterdir():
        cv2.imwrite(str(crops / f.name), np.full((224, 224, 3), 128, np.uint8))
    rc = main(["import-flow", "--flow-images", str(flow_set / "flow"), "--apex-crops", str(crops),
               "--labels", str(flow_set / "megc.csv"), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "no face was found on any apex crop" in err
    assert not (tmp_path / "c" / "clips").exists()
