"""A whole data set through :func:`preprocess_clip`, cached one file per clip, resumable.

Cache layout (see the contract in the docs)::

    <cache>/clips/<dataset>/<subject>/<clip>.pt   torch.save(dict) per clip
    <cache>/report.json                            what the last run did

Each clip file holds ``rois`` (65, 3, 5, 5) float32, ``flow28`` (3, 28, 28) float32,
``keypoints`` (65, 2) float32, ``flow`` (3, 128, 128) float16 and ``meta`` (dataset,
subject, clip, onset, apex, offset, aus, aus_coding, emotion, flow_method, plus apex_numbers,
face_box, notes, row). ``aus_coding`` says how far ``aus`` can be trusted
(:data:`psyau_graph.au.AU_CODINGS`: ``"coded"``, ``"partial"``, ``"none"``); a file
without it (written before the field existed) reads as ``"coded"``. Files are written to a temporary name in the same folder
(``.<clip>.<random>.pt.tmp``, never matching ``*.pt``) and moved into place with
:func:`os.replace`, so a killed run leaves either a complete file or a stray temp
file, which the next run deletes. A clip whose ``.pt`` exists is not redone.

Clips run in a :mod:`multiprocessing` pool (``workers`` processes, one torch
thread each). On Linux the pool is forked after the dlib models are loaded in the
parent, so workers share them instead of loading ~100 MB each.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from ..progress import LineProgress

__all__ = ["clip_cache_path", "save_clip", "load_clip_cache", "preprocess_dataset", "atomic_write_json"]

log = logging.getLogger(__name__)
TEMP_SUFFIX = ".pt.tmp"
#: test hook: the parent SIGKILLs its own process group after this many clips were written
KILL_AFTER_ENV = "PSYAU_PREPROCESS_KILL_AFTER"
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _safe(part) -> str:
    s = _SAFE.sub("_", str(part)).strip(".")
    if not s:
        raise ValueError(f"cannot build a cache file name from {part!r}")
    return s


def clip_cache_path(cache_dir, dataset: str, subject, clip) -> Path:
    """``<cache>/clips/<dataset>/<subject>/<clip>.pt`` (names sanitised to ``[A-Za-z0-9._+-]``)."""
    return Path(cache_dir) / "clips" / _safe(dataset) / _safe(subject) / f"{_safe(clip)}.pt"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path, obj) -> None:
    """Write JSON via a temp file in the same folder + :func:`os.replace`."""
    _atomic_write(Path(path), lambda fh: fh.write((json.dumps(obj, indent=1, default=str) + "\n").encode()))


def save_clip(path, features, meta: dict) -> None:
    """Write one clip's cache file atomically (contract format, ``flow`` as float16)."""
    import torch

    obj = {
        "rois": torch.from_numpy(np.ascontiguousarray(features.rois, dtype=np.float32)),
        "flow28": torch.from_numpy(np.ascontiguousarray(features.flow28, dtype=np.float32)),
        "keypoints": torch.from_numpy(np.ascontiguousarray(features.keypoints, dtype=np.float32)),
        "flow": torch.from_numpy(np.ascontiguousarray(features.flow)).to(torch.float16),
        "meta": meta,
    }
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def load_clip_cache(path) -> dict:
    """Load a clip file and check its keys and shapes (raises ValueError naming the file)."""
    import torch

    d = torch.load(path, map_location="cpu", weights_only=True)
    want = {"rois": (65, 3, 5, 5), "flow28": (3, 28, 28), "keypoints": (65, 2)}
    for k, shape in want.items():
        if k not in d or tuple(d[k].shape) != shape:
            raise ValueError(f"{path}: {k} missing or not of shape {shape}")
    if "flow" not in d or d["flow"].ndim != 3 or "meta" not in d:
        raise ValueError(f"{path}: flow (3, H, W) or meta missing")
    return d


def _jsonable(v):
    if v is None:
        return None
    try:
        import pandas as pd

        if v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            return None
    except ImportError:
        pass
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _row_aus(get) -> tuple[list[int], str]:
    """(sorted AU numbers, ``aus_coding``) of an annotation row.

    ``aus_coding`` (:data:`psyau_graph.au.AU_CODINGS`) is the row's own column when it has
    one; without it: ``"none"`` when the row has no AU set (None / NA; a string would be an
    unparsed FACS code, not guessed here), ``"partial"`` when ``aus_uncoded`` is set and AUs
    are listed, ``"none"`` when it is set and none are, else ``"coded"``.
    """
    from ..au import check_au_coding

    aus = get("aus", None)
    if aus is None or _jsonable(aus) is None or isinstance(aus, (float, str)):
        aus, coding = [], "none"
    else:
        aus = sorted(int(a) for a in aus)
        coding = ("partial" if aus else "none") if bool(_jsonable(get("aus_uncoded", None))) else "coded"
    given = _jsonable(get("aus_coding", None))
    if given is not None:
        coding = check_au_coding(given, what=f"aus_coding of {get('subject')}/{get('clip')}")
        if coding == "none" and aus:
            raise ValueError(f"aus_coding of {get('subject')}/{get('clip')}: 'none' but AUs {aus} are listed")
    return aus, coding


def _job(row, dataset: str, cache_dir: Path) -> dict:
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    aus, coding = _row_aus(get)
    subject, clip = str(get("subject")), str(get("clip"))
    offset = _jsonable(get("offset", None))
    emotion = get("emotion", None)
    meta = {"dataset": dataset, "subject": subject, "clip": clip, "onset": int(get("onset")),
            "apex": int(get("apex")), "offset": None if offset is None else int(offset),
            "aus": aus, "aus_coding": coding, "emotion": None if _jsonable(emotion) is None else str(emotion)}
    extra = {k: _jsonable(get(k, None)) for k in ("row", "subset", "fps") if _jsonable(get(k, None)) is not None}
    face = _jsonable(get("face_box", None))  # optional per-clip column: "L,T,R,B" | "centre" | "largest"
    if face is not None and not (isinstance(face, str) and not face.strip()):
        meta["face"] = face if isinstance(face, str) else list(face)
    return {"meta": meta, "row": {**meta, **extra}, "path": str(clip_cache_path(cache_dir, dataset, subject, clip))}


_OPTS: dict = {}


def _init_worker(opts: dict) -> None:
    import torch

    torch.set_num_threads(1)
    _OPTS.clear()
    _OPTS.update(opts)


def _face_choice(meta: dict, opts: dict):
    """The clip's face choice: its ``face_box`` column if set, else the run's ``face`` option."""
    from .landmarks import parse_face_box

    if "face" in meta:
        return parse_face_box(meta["face"], what=f"face_box of {meta['subject']}/{meta['clip']}")
    return opts.get("face", "largest")


def _run_job(job: dict) -> dict:
    """Process one clip in a worker; returns a status record (never raises in 'skip' mode)."""
    from .pipeline import preprocess_clip

    o = _OPTS
    meta = job["meta"]
    t0 = time.perf_counter()
    try:
        from psyau_graph.data.layouts import find_clip_frames

        frames = find_clip_frames(o["frames_root"], job["row"], o["layout"], dataset=o["dataset"])
        name = f"{meta['dataset']}/{meta['subject']}/{meta['clip']}"
        feats = preprocess_clip(frames, meta["onset"], meta["apex"], flow=o["flow"],
                                apex_window=o["apex_window"], fps=job["row"].get("fps"),
                                landmarks_backend=o["landmarks_backend"],
                                name=name, flow_params=o.get("flow_params"), face=_face_choice(meta, o))
        full = dict(meta, flow_method=o["flow"], apex_used=feats.apex, onset_used=feats.onset,
                    apex_numbers=feats.apex_numbers, face_box=list(feats.face_box), notes=feats.notes,
                    face_selection=feats.face_selection, row=job["row"].get("row"))
        save_clip(job["path"], feats, full)
        return {"status": "processed", "subject": meta["subject"], "clip": meta["clip"],
                "seconds": time.perf_counter() - t0, "timings": feats.timings, "notes": feats.notes}
    except Exception as exc:  # recorded in the report with its type; re-raised unless errors="skip"
        if o["errors"] != "skip":
            raise
        return {"status": "skipped", "subject": meta["subject"], "clip": meta["clip"],
                "row": job["row"].get("row"), "reason": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}


def _prepare_job(job: dict) -> dict:
    """Stages 1–3 in a worker (flow batched later in the parent); a status record."""
    from .pipeline import prepare_clip

    o = _OPTS
    meta = job["meta"]
    t0 = time.perf_counter()
    try:
        from psyau_graph.data.layouts import find_clip_frames

        frames = find_clip_frames(o["frames_root"], job["row"], o["layout"], dataset=o["dataset"])
        name = f"{meta['dataset']}/{meta['subject']}/{meta['clip']}"
        prep = prepare_clip(frames, meta["onset"], meta["apex"], apex_window=o["apex_window"],
                            fps=job["row"].get("fps"),
                            landmarks_backend=o["landmarks_backend"], name=name, face=_face_choice(meta, o))
        return {"status": "prepared", "job": job, "prep": prep, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # recorded in the report; re-raised unless errors="skip"
        if o["errors"] != "skip":
            raise
        return {"status": "skipped", "subject": meta["subject"], "clip": meta["clip"],
                "row": job["row"].get("row"), "reason": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}


def _finish_batch(prepared: list[dict], opts: dict) -> list[dict]:
    """Flow for all apex-window pairs of several prepared clips in one call, then ROIs + save."""
    from .pipeline import finish_clip, flow_batch

    onsets = np.concatenate([np.repeat(r["prep"].onset_crop[None], len(r["prep"].apex_crops), 0) for r in prepared])
    apexes = np.concatenate([r["prep"].apex_crops for r in prepared])
    params = dict(opts.get("flow_params", {}))
    if opts.get("flow_device"):
        params["device"] = opts["flow_device"]  # TV-L1 on the GPU, in this (the parent) process
    t0 = time.perf_counter()
    flows = flow_batch(onsets, apexes, opts["flow"], **params)
    per_clip = (time.perf_counter() - t0) / len(prepared)
    out, i = [], 0
    for r in prepared:
        prep, job = r["prep"], r["job"]
        meta = job["meta"]
        n = len(prep.apex_crops)
        f2, i = flows[i:i + n], i + n
        t1 = time.perf_counter()
        try:
            prep.timings["flow"] = per_clip
            feats = finish_clip(prep, f2, flow_method=opts["flow"])
            full = dict(meta, flow_method=opts["flow"], apex_used=feats.apex, onset_used=feats.onset,
                        apex_numbers=feats.apex_numbers, face_box=list(feats.face_box), notes=feats.notes,
                        face_selection=feats.face_selection, row=job["row"].get("row"))
            save_clip(job["path"], feats, full)
            out.append({"status": "processed", "subject": meta["subject"], "clip": meta["clip"],
                        "seconds": r["seconds"] + per_clip + time.perf_counter() - t1,
                        "timings": feats.timings, "notes": feats.notes})
        except Exception as exc:  # recorded in the report; re-raised unless errors="skip"
            if opts["errors"] != "skip":
                raise
            out.append({"status": "skipped", "subject": meta["subject"], "clip": meta["clip"],
                        "row": job["row"].get("row"), "reason": f"{type(exc).__name__}: {exc}",
                        "seconds": r["seconds"]})
    return out


def _flow_device(device, flow: str, flow_batch_clips: int) -> str | None:
    """The GPU the batched TV-L1 flow runs on, or ``None`` for the CPU; raises ``ValueError``
    on an unavailable device or one the settings cannot use."""
    if device is None:
        return None
    from ..train.device import check_device

    dev = check_device(device)
    if dev.type == "cpu":
        return None
    if flow != "tvl1":
        raise ValueError(f"device {str(device)!r}: only the TV-L1 flow (torch) runs on a GPU; "
                         f"flow {flow!r} runs on the CPU (use device 'cpu')")
    if flow_batch_clips < 1:
        raise ValueError(f"device {str(device)!r}: the flow runs on the GPU batched over clips in the main "
                         f"process, so flow_batch_clips must be ≥ 1, got {flow_batch_clips}")
    return str(dev)


def _remove_stale_temps(cache_dir: Path) -> int:
    root = cache_dir / "clips"
    n = 0
    if root.is_dir():
        for f in root.rglob(f"*{TEMP_SUFFIX}"):
            f.unlink()
            n += 1
    return n


def _maybe_kill(written: int) -> None:
    limit = os.environ.get(KILL_AFTER_ENV)
    if limit and written >= int(limit):
        if os.getpgrp() != os.getpid():
            raise RuntimeError(f"{KILL_AFTER_ENV} is a test hook; it needs the run to lead its own "
                               "process group (start it with start_new_session=True)")
        os.killpg(os.getpgrp(), signal.SIGKILL)


def preprocess_dataset(annotations_df, frames_root, cache_dir, *, dataset: str, layout: str | None = None,
                       flow: str = "tvl1", workers: int = 2, apex_window: int = 1, errors: str = "skip",
                       landmarks_backend: str = "dlib", progress: bool = True,
                       flow_params: dict | None = None, flow_batch_clips: int = 0,
                       face="largest", device: str | None = None) -> dict:
    """Preprocess every annotated clip into the cache; resumable; writes ``report.json``.

    Args:
        annotations_df: table from :func:`psyau_graph.data.annotations.read_annotations`
            (columns subject, clip, onset, apex, offset, aus, emotion[, row]).
        frames_root: the data set's frame root (see :mod:`psyau_graph.data.layouts`).
        cache_dir: output folder.
        dataset: data set name (cache sub-folder, default layouts).
        layout: frame layout pattern or data set name (default None: the dataset's layouts).
        flow: "tvl1" (default), "dis" or "farneback".
        workers: processes (default: 2; 1 = in-process, no pool).
        apex_window: ± frames averaged around the apex (default: 1).
        errors: "skip" (default: a failing clip is reported and skipped) or "raise".
        landmarks_backend: "dlib" (default) or "face_alignment".
        progress: show a tqdm bar on a terminal; off a terminal, a plain line on stderr
            per 10 % of the clips with elapsed time and ETA (:mod:`psyau_graph.progress`).
            (default: True)
        flow_params: extra keyword arguments for the flow method (default None: its defaults),
            e.g. ``{"finest_scale": 1}`` for a faster DIS.
        flow_batch_clips: 0 (default): each worker runs whole clips. K > 0: workers run
            frames/landmarks/alignment only and the parent computes the flow of K clips'
            apex-window pairs in one batched call (pays off for the batched torch TV-L1).
        face: face choice for every clip: "largest" (default), "centre" or a box
            (left, top, right, bottom); a ``face_box`` column in ``annotations_df``
            (same values, per clip; empty = this default) overrides it. The choice made is
            stored in each cache file's ``meta["face_selection"]``.
        device: torch device of the TV-L1 flow: ``None`` / ``"cpu"`` (default: the CPU, in
            the workers or in the parent), or a CUDA device (``"cuda"``, ``"cuda:N"``): then
            the flow of ``flow_batch_clips`` clips at a time (≥ 1 required) runs batched on
            that GPU in the parent process while the workers, which never touch CUDA, read
            frames, find landmarks and align. Only ``flow="tvl1"`` (torch) can run there;
            another method with a GPU device is a ``ValueError``, as is a device that is
            not available (nothing falls back to the CPU). Recorded as ``report["device"]``.

    Returns:
        the report dict also written to ``<cache>/report.json``: counts ``total``,
        ``processed``, ``cached`` (already present, not redone), ``skipped`` (list with
        reasons), ``duplicates``, ``notes`` (per clip), ``timings``.
    """
    from tqdm.auto import tqdm

    from .landmarks import parse_face_box

    face = parse_face_box(face, what="face")
    if errors not in ("skip", "raise"):
        raise ValueError(f"errors: expected 'skip' or 'raise', got {errors!r}")
    if workers < 1:
        raise ValueError(f"workers: expected ≥ 1, got {workers}")
    if flow_batch_clips < 0:
        raise ValueError(f"flow_batch_clips: expected ≥ 0, got {flow_batch_clips}")
    flow_device = _flow_device(device, flow, flow_batch_clips)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    stale = _remove_stale_temps(cache_dir)
    records = annotations_df.to_dict("records") if hasattr(annotations_df, "to_dict") else list(annotations_df)
    jobs, cached, duplicates, seen = [], 0, [], set()
    for rec in records:
        job = _job(rec, dataset, cache_dir)
        if job["path"] in seen:
            duplicates.append({"subject": job["meta"]["subject"], "clip": job["meta"]["clip"],
                               "row": job["row"].get("row"), "reason": "duplicate subject/clip"})
            continue
        seen.add(job["path"])
        if os.path.exists(job["path"]):
            cached += 1
        else:
            jobs.append(job)
    opts = {"frames_root": str(frames_root), "layout": layout, "dataset": dataset, "flow": flow,
            "apex_window": apex_window, "errors": errors, "landmarks_backend": landmarks_backend,
            "flow_params": dict(flow_params or {}), "face": face, "flow_device": flow_device}
    results = []
    bar = tqdm(total=len(jobs), desc=f"preprocess {dataset}", unit="clip", disable=None if progress else True)
    lines = LineProgress(len(jobs), f"preprocess {dataset}", "clip", every_pct=10, enabled=progress)
    written = 0

    def _collect(res):
        nonlocal written
        results.append(res)
        bar.update(1)
        lines.update(1)
        if res["status"] == "processed":
            written += 1
            _maybe_kill(written)

    pending: list[dict] = []

    def _take(res):
        if res["status"] != "prepared":
            _collect(res)
            return
        pending.append(res)
        if len(pending) >= flow_batch_clips:
            for r in _finish_batch(pending, opts):
                _collect(r)
            pending.clear()

    fn = _prepare_job if flow_batch_clips else _run_job
    handle = _take if flow_batch_clips else _collect
    import cv2
    import torch

    threads = (torch.get_num_threads(), cv2.getNumThreads())
    try:
        if workers == 1 or len(jobs) <= 1:
            _init_worker(opts)
            for job in jobs:
                handle(fn(job))
        else:
            # one OpenCV thread per worker, set BEFORE forking (changing it inside a forked
            # child can deadlock on the inherited thread pool); restored below
            cv2.setNumThreads(1)
            if landmarks_backend == "dlib":
                from .landmarks import _dlib

                _dlib()  # load once here; forked workers share it
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else None)
            with ctx.Pool(workers, initializer=_init_worker, initargs=(opts,)) as pool:
                for res in pool.imap_unordered(fn, jobs, chunksize=1):
                    handle(res)
        if pending:
            for r in _finish_batch(pending, opts):
                _collect(r)
            pending.clear()
    finally:
        bar.close()
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    wall = time.perf_counter() - t_start
    done = [r for r in results if r["status"] == "processed"]
    skipped = [r for r in results if r["status"] == "skipped"]
    stages: dict[str, list[float]] = {}
    for r in done:
        for k, v in r["timings"].items():
            stages.setdefault(k, []).append(v)
    report = {
        "dataset": dataset, "flow_method": flow, "flow_params": dict(flow_params or {}), "flow_batch_clips": flow_batch_clips,
        "device": flow_device or "cpu", "workers": workers, "apex_window": apex_window,
        "total": len(records), "processed": len(done), "cached": cached,
        "skipped": [{k: r.get(k) for k in ("subject", "clip", "row", "reason")} for r in skipped],
        "duplicates": duplicates, "stale_temp_files_removed": stale,
        "notes": [{"subject": r["subject"], "clip": r["clip"], "notes": r["notes"]} for r in done if r["notes"]],
        "timings": {"wall_s": wall, "clips_per_s": (len(done) / wall) if wall > 0 and done else None,
                    "clip_s_median": float(np.median([r["seconds"] for r in done])) if done else None,
                    "stage_s_mean": {k: float(np.mean(v)) for k, v in stages.items()}},
    }
    atomic_write_json(cache_dir / "report.json", report)
    if skipped:
        log.warning("%d clip(s) skipped; see %s", len(skipped), cache_dir / "report.json")
    return report
