"""Import data sets that ship as flow images (STSTNet-style MEGC 2019 composite) into the cache.

Input, per clip (see ``docs/flow_images.md``):

* a small RGB image (28×28 in the STSTNet release) holding the onset→apex (u, v, optical
  strain), each channel min–max normalised to 0..255;
* an apex face crop (224×224 JPEG in that release);
* a row of the composite label list (:func:`psyau_graph.data.megc.read_megc_list`).

Output: the normal preprocessing cache (``<cache>/clips/<dataset>/<subject>/<clip>.pt``,
format in :mod:`psyau_graph.preprocess.batch`) so that ``psyau train`` runs on it:

* ``flow28`` (3, 28, 28): the image's channels / 255 (values in [0, 1]; the min–max
  normalisation of the release removed the pixel scale and the zero of u and v);
* ``flow`` (3, 128, 128) float16: the image resized bilinearly to 128×128;
* ``keypoints`` (65, 2): dlib's 68 landmarks found on the apex crop, scaled to the 128×128
  frame, mapped to the 65 keypoints;
* ``rois`` (65, 3, 5, 5): 5×5 patches of the 128×128 map at those keypoints. The map
  holds only 28×28 distinct samples, so a patch covers ~1.1 source pixels: these ROIs
  are much coarser than those of the raw-frame path (flow computed at 128×128).

File names of the same clip differ between releases and folders (``s01_s01_ne_01`` vs
``s01_s1_ne_01``, ``sub01_EP02_01f .png`` with a space): files are matched to list rows
through the list's columns (``imagename``, ``subject_clip``, ``clip``) first exactly,
then after :func:`name_key` normalisation; whatever does not match is reported.

A clip with no face found on its crop (or no crop) gets the mean keypoints of the clips
that had one, and is listed in the report (``fallback_keypoints``).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

__all__ = ["name_key", "index_folder", "match_files", "read_flow_image", "crop_landmarks",
           "join_aus", "import_flow_images", "summary_line", "CHANNEL_ORDERS", "ROI_FRAME"]

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: channel order of the flow image: "opencv" = as ``cv2.imread`` returns them (B, G, R
#: planes = u, v, strain; how the STSTNet Python code reads them), "rgb" = R, G, B = u, v, strain
CHANNEL_ORDERS = ("opencv", "rgb")
#: side of the crop frame the keypoints and the resized map live in (as the raw-frame path)
ROI_FRAME = 128
FLOW_METHOD = "flow-image"


def name_key(name: str) -> str:
    """Loose key of a file or clip name: extension and spaces dropped, lower case, every run
    of digits without leading zeros (``'s01_s01_ne_01 .png'`` → ``'s1_s1_ne_1'``)."""
    s = str(name).strip()
    s = re.sub(r"(?i)\s*\.(png|jpe?g|bmp|tiff?)$", "", s).strip().lower()
    s = re.sub(r"\s+", "", s)
    return re.sub(r"\d+", lambda m: str(int(m.group(0))), s)


@dataclass
class FolderIndex:
    """Image files of one folder (searched recursively) by exact stem and by :func:`name_key`."""

    folder: Path
    exact: dict[str, list[Path]]
    loose: dict[str, list[Path]]
    files: list[Path]
    loso_layout: bool = False


def index_folder(folder) -> FolderIndex:
    """Index the image files under ``folder`` (recursively)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().strip() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)})")
    loso = [p for p in files if "u_test" in p.relative_to(folder).parts[:-1]]
    if loso:
        # STSTNet's release is arranged per LOSO fold (<subject>/u_train|u_test/<label>/<image>):
        # every clip is in exactly one fold's u_test, the u_train copies repeat it
        files = loso
    exact: dict[str, list[Path]] = {}
    loose: dict[str, list[Path]] = {}
    for p in files:
        exact.setdefault(p.stem.strip(), []).append(p)
        loose.setdefault(name_key(p.name), []).append(p)
    return FolderIndex(folder, exact, loose, files, bool(loso))


def _candidates(row) -> list[str]:
    out = []
    img = row.get("image")
    if isinstance(img, str) and img.strip():
        out.append(Path(img.strip()).name)
    out += [f"{row['subject']}_{row['clip']}", str(row["clip"])]
    return out


def _find(index: FolderIndex, row) -> tuple[Path | None, str]:
    """(file, how) for one list row; how = "exact", "loose", "ambiguous: ..." or "missing"."""
    cands = _candidates(row)
    for c in cands:
        hit = index.exact.get(re.sub(r"(?i)\s*\.(png|jpe?g|bmp|tiff?)$", "", c).strip())
        if hit and len(hit) == 1:
            return hit[0], "exact"
    for c in cands:
        hit = index.loose.get(name_key(c))
        if hit and len(hit) == 1:
            return hit[0], "loose"
        if hit:
            return None, "ambiguous: " + ", ".join(p.name for p in hit)
    return None, "missing"


def match_files(df, flow_index: FolderIndex, crop_index: FolderIndex | None) -> tuple[list[dict], dict]:
    """Pair each list row with its flow image and apex crop.

    Returns:
        ``(matches, report)``: matches = one dict per row (``row`` (the record), ``flow``,
        ``crop`` (Path or None), ``how``); report = ``no_flow_image``, ``no_apex_crop``,
        ``loose_matches`` (rows matched only after normalisation), ``label_disagreements``
        (STSTNet LOSO layout: list label ≠ the image's label folder) and ``unclaimed_flow_images``
        / ``unclaimed_apex_crops`` (files no row took).
    """
    matches, rep = [], {"no_flow_image": [], "no_apex_crop": [], "loose_matches": [],
                        "unclaimed_flow_images": [], "unclaimed_apex_crops": [],
                        "label_disagreements": []}
    used_f, used_c = set(), set()
    for rec in df.to_dict("records"):
        ident = {"dataset": rec["dataset"], "subject": rec["subject"], "clip": rec["clip"], "row": rec.get("row")}
        f, how_f = _find(flow_index, rec)
        c, how_c = _find(crop_index, rec) if crop_index is not None else (None, "no crop folder")
        if f is None:
            rep["no_flow_image"].append({**ident, "reason": how_f})
            continue
        if c is None:
            rep["no_apex_crop"].append({**ident, "reason": how_c})
        if "loose" in (how_f, how_c):
            rep["loose_matches"].append({**ident, "flow_image": f.name, "apex_crop": c.name if c else None})
        if flow_index.loso_layout and f.parent.name.isdigit() and int(f.parent.name) != int(rec["label"]):
            rep["label_disagreements"].append({**ident, "flow_image": str(f.relative_to(flow_index.folder)),
                                               "list_label": int(rec["label"]), "folder_label": int(f.parent.name)})
        used_f.add(f)
        if c is not None:
            used_c.add(c)
        matches.append({"row": rec, "flow": f, "crop": c})
    rep["unclaimed_flow_images"] = [p.name for p in flow_index.files if p not in used_f]
    if crop_index is not None:
        rep["unclaimed_apex_crops"] = [p.name for p in crop_index.files if p not in used_c]
    return matches, rep


def read_flow_image(path, channels: str = "opencv", size: int = 28) -> tuple[np.ndarray, list[str]]:
    """Decode one flow image to (u, v, strain) in [0, 1].

    Args:
        path: image file (8-bit, 3 channels).
        channels: one of :data:`CHANNEL_ORDERS` (default "opencv").
        size: expected side (default 28); another size is area-resized and noted.

    Shapes:
        return[0]: (3, size, size) float32.
    """
    if channels not in CHANNEL_ORDERS:
        raise ValueError(f"channels: expected one of {CHANNEL_ORDERS}, got {channels!r}")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit 3-channel (u, v, strain) image, got shape {img.shape} "
                         f"dtype {img.dtype}")
    notes = []
    if img.shape[:2] != (size, size):
        notes.append(f"flow image is {img.shape[1]}×{img.shape[0]}, resized to {size}×{size}")
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if channels == "rgb":
        img = img[..., ::-1]
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / 255.0, notes


def crop_landmarks(path, *, backend: str = "dlib", frame: int = ROI_FRAME) -> tuple[np.ndarray, str]:
    """68 landmarks found on an apex crop, scaled to a ``frame``×``frame`` frame.

    The crop is tried as it is, then padded by a quarter of its side on each side (a face
    that fills the whole crop is often missed by the HOG detector).

    Shapes:
        return[0]: (68, 2) float32 (x, y) in the ``frame`` frame.

    Raises:
        NoFaceError: no face in either attempt; ValueError: unreadable crop.
    """
    from .landmarks import NoFaceError, detect_landmarks

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a readable image")
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    H, W = rgb.shape[:2]
    name = Path(path).name
    try:
        det = detect_landmarks(rgb, backend=backend, clip=name)
        lm, how = det.landmarks, "crop"
    except NoFaceError:
        p = max(H, W) // 4
        padded = cv2.copyMakeBorder(rgb, p, p, p, p, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        det = detect_landmarks(padded, backend=backend, clip=name)  # NoFaceError propagates
        lm, how = det.landmarks - np.float32(p), "padded crop"
    scale = np.array([frame / W, frame / H], dtype=np.float32)
    return (np.asarray(lm, np.float32) + 0.5) * scale - 0.5, how


def join_aus(df, sheets: dict) -> tuple[dict, list[dict]]:
    """AU sets (and frame numbers) of composite rows from the data sets' own sheets.

    Args:
        df: the composite table (:func:`~psyau_graph.data.megc.read_megc_list`).
        sheets: source data set (``"casme2"``, ``"samm"``) → annotation sheet path, read
            with :func:`~psyau_graph.data.annotations.read_annotations` (``errors="report"``).

    Returns:
        ``(found, missing)``: found = (dataset, subject, clip) → {aus, aus_coding, onset, apex,
        offset, sheet_row}; missing = composite rows of those data sets the sheet lacks.
    """
    from psyau_graph.data.annotations import read_annotations

    found, missing = {}, []
    for ds, path in sheets.items():
        sheet = read_annotations(path, ds, errors="report")
        by_key: dict[tuple, list[dict]] = {}
        for r in sheet.to_dict("records"):
            by_key.setdefault((name_key(r["subject"]), name_key(r["clip"])), []).append(r)
        for r in df[df["dataset"] == ds].to_dict("records"):
            hits = by_key.get((name_key(r["subject"]), name_key(r["clip"])), [])
            if not hits:
                missing.append({"dataset": ds, "subject": r["subject"], "clip": r["clip"], "row": r["row"],
                                "reason": f"not in {Path(path).name}"})
                continue
            h = hits[0]
            off = h.get("offset")
            found[(ds, r["subject"], r["clip"])] = {
                "aus": sorted(int(a) for a in h["aus"]), "aus_coding": h["aus_coding"],
                "onset": int(h["onset"]), "apex": int(h["apex"]),
                "offset": None if _na(off) else int(off),
                "sheet_row": int(h["row"])}
    return found, missing


def import_flow_images(labels, flow_dir, out_dir, *, crop_dir=None, au_sheets: dict | None = None,
                       channels: str = "opencv", landmarks_backend: str = "dlib", errors: str = "raise") -> dict:
    """Build the preprocessing cache from flow images + apex crops + the composite list.

    Args:
        labels: composite list path (or a table from ``read_megc_list``).
        flow_dir: folder of the flow images.
        out_dir: cache folder (clip files + ``report.json``).
        crop_dir: folder of the apex crops. Needed in practice: without it no clip has
            landmarks, so there is nothing to fall back on and a ValueError is raised.
        au_sheets: source data set → annotation sheet, for AU labels (default: none). Clips
            without a sheet row get ``aus_coding="none"`` (AU labels unknown, not "no AU").
        channels: flow image channel order, see :data:`CHANNEL_ORDERS`.
        landmarks_backend: "dlib" (default) or "face_alignment".
        errors: bad list rows: "raise" (default) or "report".

    Returns:
        the report dict written to ``<out>/report.json``.
    """
    from psyau_graph.data.megc import read_megc_list

    from .batch import atomic_write_json, clip_cache_path, save_clip
    from .keypoints import landmarks_to_keypoints
    from .landmarks import NoFaceError
    from .rois import extract_rois

    t0 = time.perf_counter()
    df = labels if hasattr(labels, "to_dict") else read_megc_list(labels, errors=errors)
    if not len(df):
        raise ValueError("the composite list has no usable rows")
    flow_index = index_folder(flow_dir)
    crop_index = index_folder(crop_dir) if crop_dir is not None else None
    matches, rep = match_files(df, flow_index, crop_index)
    if not matches:
        raise ValueError(f"no row of the composite list matched a flow image in {flow_dir} "
                         f"(first names tried: {_candidates(df.to_dict('records')[0])})")
    aus, aus_missing = join_aus(df, au_sheets or {})

    kps: list[np.ndarray | None] = []
    how: list[str] = []
    for m in matches:
        if m["crop"] is None:
            kps.append(None)
            how.append("no apex crop")
            continue
        try:
            lm, h = crop_landmarks(m["crop"], backend=landmarks_backend)
            kps.append(landmarks_to_keypoints(lm))
            how.append(h)
        except NoFaceError as exc:
            kps.append(None)
            how.append(f"no face: {exc}")
    good = [k for k in kps if k is not None]
    if not good:
        raise ValueError("no face was found on any apex crop, so there are no keypoints to fall back on "
                         f"({len(matches)} clips; crops in {crop_dir})")
    mean_kp = np.mean(good, axis=0).astype(np.float32)
    fallback = []
    written: dict[str, int] = {}
    medians = []
    for m, kp, h in zip(matches, kps, how):
        r = m["row"]
        notes = []
        flow28, n2 = read_flow_image(m["flow"], channels)
        medians.append(np.median(flow28.reshape(3, -1), axis=1))
        notes += n2
        if kp is None:
            kp = mean_kp
            notes.append(f"keypoints: mean of the {len(good)} clips with a face ({h})")
            fallback.append({"dataset": r["dataset"], "subject": r["subject"], "clip": r["clip"],
                             "row": r.get("row"), "reason": h})
        elif h != "crop":
            notes.append(f"face found on the {h}")
        flow = cv2.resize(flow28.transpose(1, 2, 0), (ROI_FRAME, ROI_FRAME), interpolation=cv2.INTER_LINEAR)
        flow = np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)
        feats = SimpleNamespace(rois=extract_rois(flow, kp, 5).astype(np.float32), flow28=flow28,
                                keypoints=kp.astype(np.float32), flow=flow)
        j = aus.get((r["dataset"], r["subject"], r["clip"]), {})
        apex = j.get("apex", None if _na(r.get("apex")) else int(r["apex"]))
        meta = {"dataset": r["dataset"], "subject": str(r["subject"]), "clip": str(r["clip"]),
                "onset": j.get("onset"), "apex": apex, "offset": j.get("offset"), "aus": j.get("aus", []),
                # a clip without a sheet row (SMIC, no --*-sheet given, not in the sheet) has no AU coding
                "aus_coding": j.get("aus_coding", "none"),
                "emotion": r["emotion"], "label": int(r["label"]), "flow_method": FLOW_METHOD,
                "flow_image": m["flow"].name, "apex_crop": m["crop"].name if m["crop"] else None,
                "flow_channels": channels, "row": int(r["row"]), "notes": notes}
        save_clip(clip_cache_path(out_dir, r["dataset"], r["subject"], r["clip"]), feats, meta)
        written[r["dataset"]] = written.get(r["dataset"], 0) + 1
    channel_medians = np.mean(medians, axis=0)
    warnings = []
    if int(np.argmin(channel_medians)) != 2:
        # strain is >= 0 and small on most of the face, so after min-max it is the darkest plane;
        # u and v sit around their (mid-grey) zero. Another darkest plane means another order.
        warnings.append(f"the third plane (strain under --channels {channels}) is not the darkest: median "
                        f"per plane {np.round(channel_medians, 3).tolist()}; check the channel order")
        log.warning(warnings[-1])
    report = {
        "source": "flow images", "warnings": warnings,
        "channel_medians": [float(v) for v in channel_medians], "flow_method": FLOW_METHOD, "labels": str(df.attrs.get("source", "")),
        "flow_dir": str(flow_dir), "crop_dir": None if crop_dir is None else str(crop_dir),
        "channels": channels, "flow_layout": "STSTNet LOSO folders (u_test copies)" if flow_index.loso_layout
        else "flat", "list_rows": int(len(df)), "list_problems": list(df.attrs.get("report", [])),
        "processed": sum(written.values()), "per_dataset": written,
        "fallback_keypoints": fallback, "au_sheets": {k: str(v) for k, v in (au_sheets or {}).items()},
        "au_joined": len(aus), "au_missing": aus_missing, **rep,
        "seconds": time.perf_counter() - t0,
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(out_dir) / "report.json", report)
    return report


def _na(v) -> bool:
    try:
        import pandas as pd

        return v is None or bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def summary_line(report: dict) -> str:
    """One line of what an import did (counts of every kind of mismatch)."""
    per = ", ".join(f"{k} {v}" for k, v in sorted(report["per_dataset"].items()))
    parts = [f"{report['processed']} clips written ({per})"] + [f"WARNING {w}" for w in report.get("warnings", [])]
    for key, text in (("list_problems", "list rows left out"), ("no_flow_image", "rows without a flow image"),
                      ("no_apex_crop", "rows without an apex crop"),
                      ("fallback_keypoints", "clips with fallback (mean) keypoints"),
                      ("loose_matches", "files matched after name normalisation"),
                      ("unclaimed_flow_images", "flow images no row took"),
                      ("unclaimed_apex_crops", "apex crops no row took"),
                      ("label_disagreements", "list labels that disagree with the image's label folder"),
                      ("au_missing", "rows not found in the AU sheets")):
        if report.get(key):
            parts.append(f"{len(report[key])} {text}")
    return "; ".join(parts)
