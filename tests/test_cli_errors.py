"""Bad input ends a command with one clear line; PSYAU_TRACEBACK=1 shows the traceback."""
import re

import pytest

from psyau_graph.cli import main


def test_missing_sheet_is_one_clear_line_and_traceback_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    argv = ["preprocess", "--annotations", str(tmp_path / "none.xlsx"), "--dataset", "casme2",
            "--frames", str(tmp_path), "--out", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert re.search(r"^psyau preprocess: error: annotation file not found: .*none\.xlsx",
                     capsys.readouterr().err)
    monkeypatch.setenv("PSYAU_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="none.xlsx"):
        main(argv)
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------- every command, one line, exit 2
import numpy as np  # noqa: E402

from _preprocess_helpers import mouth_pull_frames, write_clip  # noqa: E402
from psyau_graph.errors import PsyauError  # noqa: E402

SHEET = ("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n"
         "01,{clip},10,14,15,6+12,happiness\n")


def _one_line_error(err: str, command: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(rf"psyau {command}: error: .*{pattern}", lines[0]), lines[0]
    assert "Traceback" not in err


@pytest.fixture
def clips(tmp_path):
    """CASME II layout: a face-less clip and a clip whose apex frame is missing; their sheets."""
    root = tmp_path / "frames"
    write_clip(root / "sub01" / "EP90_blank", np.full((6, 96, 96), 90, np.uint8), first=10)
    write_clip(root / "sub01" / "EP91_gap", mouth_pull_frames(n=6), first=10)
    (root / "sub01" / "EP91_gap" / "img14.jpg").unlink()
    sheets = {}
    for clip in ("EP90_blank", "EP91_gap"):
        sheets[clip] = tmp_path / f"{clip}.csv"
        sheets[clip].write_text(SHEET.format(clip=clip))
    return root, sheets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real (untrained) FedPsyAU checkpoint, as `psyau train` writes it."""
    from psyau_graph.nn import FedPsyAU, FedPsyAUConfig
    from psyau_graph.train.checkpoint import save_checkpoint

    cfg = FedPsyAUConfig(num_classes=3)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, FedPsyAU(cfg), model_config=cfg, class_names=["negative", "positive", "surprise"],
                    flow_method="dis")
    return path


def test_user_errors_share_one_base():
    from psyau_graph.data.annotations import AnnotationError
    from psyau_graph.preprocess.frames import FrameError, MissingFrameError
    from psyau_graph.preprocess.landmarks import FaceBoxError, LandmarkBackendError, NoFaceError

    for cls in (FrameError, MissingFrameError, NoFaceError, FaceBoxError, LandmarkBackendError):
        assert issubclass(cls, PsyauError) and issubclass(cls, ValueError), cls
    assert issubclass(AnnotationError, ValueError)  # caught by the same handler


@pytest.mark.parametrize("clip,pattern", [("EP90_blank", "NoFaceError|no face found"),
                                          ("EP91_gap", "apex 14 is missing")])
def test_preprocess_no_face_and_missing_frame(clips, tmp_path, capsys, monkeypatch, clip, pattern):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    root, sheets = clips
    base = ["preprocess", "--annotations", str(sheets[clip]), "--dataset", "casme2", "--frames", str(root),
            "--flow", "dis", "--workers", "1"]
    # default: the clip is skipped and reported, the run itself succeeds
    assert main(base + ["--out", str(tmp_path / "c1")]) == 0
    out = capsys.readouterr()
    assert "1 skipped" in out.out and re.search(pattern, out.out) and "Traceback" not in out.err
    # --on-error raise: one line, exit 2
    assert main(base + ["--out", str(tmp_path / "c2"), "--on-error", "raise"]) == 2
    _one_line_error(capsys.readouterr().err, "preprocess", pattern.split("|")[-1])


@pytest.mark.parametrize("clip,pattern", [("EP90_blank", "no face found"), ("EP91_gap", "apex 14 is missing")])
def test_predict_no_face_and_missing_frame(clips, checkpoint, capsys, monkeypatch, clip, pattern):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    root, _ = clips
    rc = main(["predict", "--checkpoint", str(checkpoint), "--frames", str(root / "sub01" / clip),
               "--onset", "10", "--apex", "14"])
    assert rc == 2
    _one_line_error(capsys.readouterr().err, "predict", f"{clip}.*{pattern}")


def test_predict_bad_face_box_and_missing_video(clips, checkpoint, tmp_path, capsys):
    root, _ = clips
    argv = ["predict", "--checkpoint", str(checkpoint), "--onset", "10", "--apex", "14"]
    assert main(argv + ["--frames", str(root / "sub01" / "EP91_gap"), "--face-box", "1,2,3"]) == 2
    _one_line_error(capsys.readouterr().err, "predict", "--face-box: expected 'largest', 'centre'")
    assert main(argv + ["--frames", str(tmp_path / "none.mp4")]) == 2
    _one_line_error(capsys.readouterr().err, "predict", "none.mp4 does not exist")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_checkpoint(clips, tmp_path, capsys, command):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"this is not a checkpoint")
    root, _ = clips
    argv = {"predict": ["predict", "--checkpoint", str(bad), "--frames", str(root / "sub01" / "EP91_gap"),
                        "--onset", "10", "--apex", "13"],
            "evaluate": ["evaluate", "--checkpoint", str(bad), "--data", str(tmp_path)]}[command]
    assert main(argv) == 2
    _one_line_error(capsys.readouterr().err, command, "checkpoint")


def test_train_bad_data_is_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys.readouterr().err, "train", "is not a folder")


def test_bad_sheet_is_one_line(tmp_path, capsys):
    sheet = tmp_path / "s.csv"
    sheet.write_text("just,some\ncolumns,here\n")
    assert main(["preprocess", "--annotations", str(sheet), "--dataset", "casme2", "--frames", str(tmp_path),
                 "--out", str(tmp_path / "c")]) == 2
    _one_line_error(capsys.readouterr().err, "preprocess", "s.csv")


@pytest.mark.parametrize("argv,pattern", [
    (["federate", "--data", "{tmp}/nope", "--out", "{tmp}/fed", "--rounds", "1", "--local-epochs", "1",
      "--repeats", "1"], "nope"),
    (["synth", "--out", "{tmp}/s", "--subjects", "0"], "subjects"),
    (["demo", "--out", "{tmp}/d", "--subjects", "0"], "subjects"),
])
def test_other_commands_bad_input_one_line(tmp_path, capsys, argv, pattern):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    _one_line_error(capsys.readouterr().err, argv[0], pattern)


@pytest.mark.parametrize("extra", [[], ["--no-seek"]])
def test_predict_on_a_video_reports_the_face(tmp_path, checkpoint, capsys, extra):
    """The good path next to the bad ones: a video clip, frames numbered from --first-frame."""
    import json

    import cv2

    frames = mouth_pull_frames(n=20)
    path = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, frames.shape[:0:-1])
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for f in frames:
        vw.write(np.dstack([f] * 3))
    vw.release()
    argv = ["predict", "--checkpoint", str(checkpoint), "--frames", str(path), "--first-frame", "100",
            "--onset", "101", "--apex", "115", "--json", *extra]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["face_selection"].startswith("largest of 1") and len(out["face_box"]) == 4
    past_end = [a if a != "115" else "125" for a in argv]  # apex after the video's last frame (119)
    assert main(past_end) == 2
    assert "outside the clip (frames 100..119)" in capsys.readouterr().err
