"""preprocess_dataset: cache format, skip-with-report, resume, and a kill in the middle."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _preprocess_helpers import mouth_pull_frames, write_clip
from psyau_graph.preprocess.batch import (KILL_AFTER_ENV, TEMP_SUFFIX, clip_cache_path, load_clip_cache,
                                          preprocess_dataset)

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, n_good: int = 4) -> pd.DataFrame:
    """CASME II layout root/<subject>/<clip>/img<N>.jpg: n_good clips + one faceless + one missing apex."""
    frames = mouth_pull_frames(n=6, amp=1.5)
    rows = []
    for k in range(n_good):
        subj, clip = f"sub0{k % 2 + 1}", f"EP0{k}_01"
        write_clip(root / subj / clip, np.roll(frames, k, axis=2), first=10)
        rows.append(dict(subject=subj, clip=clip, onset=10, apex=14, offset=15,
                         aus=frozenset({12, 6}), emotion="happiness"))
    write_clip(root / "sub01" / "EP90_blank", np.full((6, 128, 128), 90, np.uint8), first=10)
    rows.append(dict(subject="sub01", clip="EP90_blank", onset=10, apex=14, offset=pd.NA,
                     aus=frozenset({4}), emotion="others"))
    write_clip(root / "sub02" / "EP91_short", frames[:3], first=10)
    rows.append(dict(subject="sub02", clip="EP91_short", onset=10, apex=14, offset=15,
                     aus=frozenset(), emotion="surprise"))
    df = pd.DataFrame(rows)
    df.insert(0, "dataset", "casme2")
    df["row"] = np.arange(2, len(df) + 2)
    return df


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "frames"), tmp_path / "frames", tmp_path / "cache"


def test_cache_report_resume(dataset):
    df, root, cache = dataset
    rep = preprocess_dataset(df, root, cache, dataset="casme2", flow="dis", workers=2, progress=False)
    assert (rep["total"], rep["processed"], rep["cached"]) == (6, 4, 0)
    reasons = {s["clip"]: s["reason"] for s in rep["skipped"]}
    assert set(reasons) == {"EP90_blank", "EP91_short"}
    assert reasons["EP90_blank"].startswith("NoFaceError") and "EP90_blank" in reasons["EP90_blank"]
    assert reasons["EP91_short"].startswith("FrameError") and "apex 14 is outside" in reasons["EP91_short"]
    assert json.loads((cache / "report.json").read_text())["processed"] == 4
    p = clip_cache_path(cache, "casme2", "sub01", "EP00_01")
    assert p == cache / "clips" / "casme2" / "sub01" / "EP00_01.pt"
    d = load_clip_cache(p)
    assert d["flow"].dtype.is_floating_point and str(d["flow"].dtype) == "torch.float16"
    assert tuple(d["flow"].shape) == (3, 128, 128) and str(d["rois"].dtype) == "torch.float32"
    m = d["meta"]
    assert (m["dataset"], m["subject"], m["clip"], m["onset"], m["apex"], m["offset"]) == \
        ("casme2", "sub01", "EP00_01", 10, 14, 15)
    assert m["aus"] == [6, 12] and m["emotion"] == "happiness" and m["flow_method"] == "dis"
    assert m["apex_numbers"] == [13, 14, 15]
    # the mouth motion reached the cache
    assert float(d["rois"][38:58, 0].mean()) > 0.5
    # second run: nothing redone, the two bad clips reported again
    rep2 = preprocess_dataset(df, root, cache, dataset="casme2", flow="dis", workers=2, progress=False)
    assert (rep2["processed"], rep2["cached"], len(rep2["skipped"])) == (0, 4, 2)
    assert len(list(cache.rglob("*.pt"))) == 4


def test_errors_raise_and_duplicates(dataset):
    df, root, cache = dataset
    with pytest.raises(Exception, match="EP90_blank"):
        preprocess_dataset(df.iloc[4:5], root, cache, dataset="casme2", flow="dis", workers=1,
                           errors="raise", progress=False)
    dup = pd.concat([df.iloc[:1], df.iloc[:1]])
    rep = preprocess_dataset(dup, root, cache, dataset="casme2", flow="dis", workers=1, progress=False)
    assert rep["processed"] == 1 and rep["duplicates"][0]["reason"] == "duplicate subject/clip"
    with pytest.raises(ValueError, match="errors"):
        preprocess_dataset(df, root, cache, dataset="casme2", errors="ignore")


@pytest.mark.slow
def test_killed_midway_then_resumed(tmp_path):
    root, cache = tmp_path / "frames", tmp_path / "cache"
    df = make_dataset(root, n_good=8)
    df.to_pickle(tmp_path / "ann.pkl")
    script = textwrap.dedent(f"""
        import pandas as pd
        from psyau_graph.preprocess.batch import preprocess_dataset
        df = pd.read_pickle({str(tmp_path / 'ann.pkl')!r})
        preprocess_dataset(df, {str(root)!r}, {str(cache)!r}, dataset="casme2", flow="dis",
                           workers=2, progress=False)
    """)
    env = dict(os.environ, **{KILL_AFTER_ENV: "3"})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert not (cache / "report.json").exists()  # the run really died before finishing
    done = sorted(cache.rglob("*.pt"))
    assert 3 <= len(done) < 8
    for p in done:  # every result file is complete
        load_clip_cache(p)
    # what a kill during a write leaves behind: a temp file that is never read as a result
    stale = done[0].parent / f".EP99.abc{TEMP_SUFFIX}"
    stale.write_bytes(b"half a file")
    assert stale.suffix != ".pt"
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    rep = preprocess_dataset(df, root, cache, dataset="casme2", flow="dis", workers=2, progress=False)
    assert rep["cached"] == len(done) and rep["processed"] == 8 - len(done)
    assert len(rep["skipped"]) == 2 and rep["stale_temp_files_removed"] >= 1
    assert not list(cache.rglob(f"*{TEMP_SUFFIX}"))
    assert len(list(cache.rglob("*.pt"))) == 8
    assert {p: p.stat().st_mtime_ns for p in done} == mtimes  # first-run files not rewritten


def test_flow_batched_across_clips_matches(dataset, tmp_path):
    import torch

    df, root, cache = dataset
    threads = torch.get_num_threads()
    a = preprocess_dataset(df, root, tmp_path / "a", dataset="casme2", flow="dis", workers=2, progress=False)
    b = preprocess_dataset(df, root, tmp_path / "b", dataset="casme2", flow="dis", workers=2,
                           flow_batch_clips=3, progress=False)
    assert torch.get_num_threads() == threads  # the caller's settings are restored
    assert (a["processed"], b["processed"]) == (4, 4) and b["flow_batch_clips"] == 3
    assert {s["clip"] for s in b["skipped"]} == {"EP90_blank", "EP91_short"}
    for p in sorted((tmp_path / "a").rglob("*.pt")):
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        da, db = load_clip_cache(p), load_clip_cache(q)
        for k in ("rois", "flow28", "keypoints", "flow"):
            assert (da[k] - db[k]).abs().max() < 1e-4, (p, k)
    c = preprocess_dataset(df.iloc[:2], root, tmp_path / "c", dataset="casme2", flow="dis", workers=1,
                           flow_batch_clips=5, progress=False)
    assert c["processed"] == 2 and torch.get_num_threads() == threads


def test_cli_on_synthetic_set(tmp_path, capsys):
    from psyau_graph.data import synth
    from psyau_graph.cli import main

    # au_unknown_frac 0.5: with seed 1 the second clip's AU cell is '?' (AU labels unknown)
    cfg = synth.SynthConfig(subjects=1, clips_per_subject=2, seed=1, au_unknown_frac=0.5)
    sheet = synth.generate_synthetic(tmp_path / "frames", config=cfg, progress=False)
    argv = ["preprocess", "--annotations", str(sheet), "--dataset", "synth", "--frames",
            str(tmp_path / "frames"), "--out", str(tmp_path / "cache"), "--flow", "dis", "--workers", "1"]
    assert main(argv) == 0
    assert "2 processed, 0 already cached, 0 skipped" in capsys.readouterr().out
    files = sorted((tmp_path / "cache" / "clips" / "synth").rglob("*.pt"))
    assert len(files) == 2
    meta = load_clip_cache(files[0])["meta"]
    assert meta["dataset"] == "synth" and meta["aus"] and meta["emotion"] and meta["aus_coding"] == "coded"
    unknown = load_clip_cache(files[1])["meta"]
    assert unknown["aus_coding"] == "none" and unknown["aus"] == []
    from psyau_graph.data.dataset import MEDataset

    known = {d.clip: d.au_known.sum().item() for d in MEDataset(tmp_path / "cache", progress=False)}
    assert known == {files[0].stem: 12.0, files[1].stem: 0.0}
    assert main(argv) == 0
    assert "0 processed, 2 already cached" in capsys.readouterr().out
