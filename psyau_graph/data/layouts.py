"""Where a clip's frames live relative to a data set root.

A layout is a pattern string relative to the root, with ``{field}`` placeholders
filled from the annotation row (``subject``, ``clip``, ``emotion``, ``subset``, any
column) and exactly one ``{frame}`` placeholder in the file name, which matches the
frame number with or without zero padding::

    "{subject}/{clip}/img{frame}.jpg"          # CASME II: sub01/EP02_01f/img46.jpg
    "{subject}/{clip}/{subject}_{frame}.jpg"   # SAMM:     006/006_1_2/006_05562.jpg

Extensions match case-insensitively. Each data set has a list of layouts tried in
order (:data:`LAYOUTS`); a user pattern replaces the list.
"""
from __future__ import annotations

import re
from pathlib import Path

LAYOUTS: dict[str, tuple[str, ...]] = {
    "casme2": ("{subject}/{clip}/img{frame}.jpg", "{subject}/{clip}/reg_img{frame}.jpg",
               "{subject}/{clip}/{frame}.jpg", "{subject}/{clip}/img{frame}.png"),
    "samm": ("{subject}/{clip}/{subject}_{frame}.jpg", "{subject}/{clip}/{subject}_{frame}.bmp",
             "{subject}/{clip}/{frame}.jpg"),
    "casme3": ("{subject}/{clip}/color/{frame}.jpg", "{subject}/{clip}/{frame}.jpg",
               "{subject}/{clip}/color/{frame}.png"),
    "dfme": ("{subset}/{subject}/{clip}/{frame}.jpg", "{subject}/{clip}/{frame}.jpg",
             "{clip}/{frame}.jpg", "{subject}/{clip}/img{frame}.jpg"),
    "smic": ("{subject}/micro/{emotion}/{clip}/reg_image{frame}.bmp",
             "{subject}/micro/{emotion}/{clip}/image{frame}.bmp",
             "{subject}/micro/{emotion}/{clip}/image{frame}.jpg", "{subject}/{clip}/{frame}.jpg"),
}
LAYOUTS["synth"] = LAYOUTS["casme2"]  # the synthetic set is written in the CASME II layout

_FIELD = re.compile(r"\{(\w+)\}")


def _get(row, name: str):
    if isinstance(row, dict):
        return row.get(name)
    if hasattr(row, "get"):  # pandas Series
        return row.get(name)
    return getattr(row, name, None)


def _fill(part: str, row, pattern: str) -> str:
    def sub(m):
        v = _get(row, m.group(1))
        if v is None or (isinstance(v, float) and v != v):
            raise KeyError(f"layout {pattern!r} needs field {m.group(1)!r}, which the row lacks")
        return str(v)
    return _FIELD.sub(sub, part)


def _frame_regex(name_pattern: str, row, pattern: str) -> re.Pattern:
    if name_pattern.count("{frame}") != 1:
        raise ValueError(f"layout {pattern!r}: the file name must hold exactly one {{frame}}")
    head, tail = name_pattern.split("{frame}")
    return re.compile(re.escape(_fill(head, row, pattern)) + r"(\d+)" + re.escape(_fill(tail, row, pattern)) + "$",
                      re.IGNORECASE)


def match_layout(root, row, pattern: str) -> list[tuple[int, Path]]:
    """Frames of one row under one pattern: sorted (frame number, path); [] if none.

    Raises:
        ValueError: ``{frame}`` outside the file name, or not exactly once.
        KeyError: the row lacks a field the pattern needs.
    """
    parts = pattern.split("/")
    if any("{frame}" in p for p in parts[:-1]):
        raise ValueError(f"layout {pattern!r}: {{frame}} may only appear in the file name")
    folder = Path(root).joinpath(*[_fill(p, row, pattern) for p in parts[:-1]])
    rx = _frame_regex(parts[-1], row, pattern)
    if not folder.is_dir():
        return []
    found = {}
    for p in folder.iterdir():
        m = rx.match(p.name)
        if m and p.is_file():
            n = int(m.group(1))
            if n in found:
                raise ValueError(f"{folder}: frame {n} matches two files ({found[n].name}, {p.name})")
            found[n] = p
    return sorted(found.items())


def find_clip_frames(root, row, layout: str | None = None, *, dataset: str | None = None) -> list[tuple[int, Path]]:
    """All frames of one clip, sorted by frame number.

    Args:
        root: the data set's frame root folder.
        row: an annotation row (pandas Series, dict or namedtuple) with at least
            ``subject`` and ``clip`` (and whatever fields the pattern uses).
        layout: a pattern string (see module docstring) or a data set name; default
            None: the layouts of ``dataset`` (or of ``row["dataset"]``).
        dataset: data set whose layouts to try when ``layout`` is None.

    Returns:
        ``[(frame_number, path), ...]`` sorted by frame number (first layout that
        matches at least one file).

    Raises:
        FileNotFoundError: nothing matched; the message lists every folder and file
            pattern looked for.
    """
    root = Path(root)
    if layout is not None and layout in LAYOUTS:
        patterns = LAYOUTS[layout]
    elif layout is not None:
        patterns = (layout,)
    else:
        ds = dataset or _get(row, "dataset")
        if ds not in LAYOUTS:
            raise ValueError(f"find_clip_frames: no layout given and dataset {ds!r} has none; "
                             f"known: {sorted(LAYOUTS)}")
        patterns = LAYOUTS[ds]
    if not root.is_dir():
        raise FileNotFoundError(f"frame root {root} is not a folder")
    tried = []
    for pattern in patterns:
        try:
            frames = match_layout(root, row, pattern)
        except KeyError as exc:
            tried.append(f"{pattern} (skipped: {exc.args[0]})")
            continue
        if frames:
            return frames
        parts = pattern.split("/")
        tried.append(str(root.joinpath(*[_fill(p, row, pattern) for p in parts[:-1]])) + "/" + parts[-1])
    clip = f"subject {_get(row, 'subject')!r}, clip {_get(row, 'clip')!r}"
    raise FileNotFoundError(f"no frames found for {clip}; looked for:\n  " + "\n  ".join(tried))
