"""The 12 action units (AUs) of the AU graph, and a parser for real FACS codes.

Node order (fixed everywhere in the package)::

    idx  0  1  2  3  4  5 | 6   7  8  9 10 11
    AU   1  2  4  5  6  7 | 9  10 12 14 15 17
         upper face        | lower face

FACS codes in real annotation sheets are messy (``4+L10``, ``R12``, ``15A+17``,
``A12B``, ``ref(L10)+A12B``, ``(R6 or R12)+R15``, ``10A/B``, numbers stored as
floats...). :func:`parse_facs` maps each code to the set of AU numbers it names and
never drops anything silently: what it cannot read raises :class:`FACSParseError`
or, with ``errors="report"``, is recorded on the result.
"""
from __future__ import annotations

import math
import numbers
import re
from typing import Iterable

__all__ = [
    "AUS", "NUM_AUS", "UPPER", "LOWER", "AU_NAMES", "AU_REGION", "AU_GROUP", "AU_LABELS",
    "LATERALITY_PREFIXES", "INTENSITY_LETTERS", "IGNORED_DESCRIPTORS",
    "au_index", "au_label", "region_indices", "region_aus",
    "FACSParseError", "FACSCodes", "parse_facs", "aus_to_multihot",
    "AU_CODINGS", "check_au_coding", "au_known_mask",
]

#: AU numbers in node order (SPEC §2).
AUS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17)
NUM_AUS = len(AUS)
#: node indices of the upper-face AUs (1, 2, 4, 5, 6, 7)
UPPER: tuple[int, ...] = tuple(range(0, 6))
#: node indices of the lower-face AUs (9, 10, 12, 14, 15, 17)
LOWER: tuple[int, ...] = tuple(range(6, 12))

#: FACS names.
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
}
#: face region of each AU: "upper" or "lower".
AU_REGION: dict[int, str] = {au: ("upper" if k in UPPER else "lower") for k, au in enumerate(AUS)}
#: ROI group (paper Table 1): 1 brows, 2 eyes, 3 nose/cheeks, 4 mouth.
AU_GROUP: dict[int, int] = {1: 1, 2: 1, 4: 1, 5: 2, 6: 2, 7: 2, 9: 3, 10: 3, 12: 4, 14: 4, 15: 4, 17: 4}
#: labels used on both axes of the prior CSV files: "AU1", "AU2", ...
AU_LABELS: tuple[str, ...] = tuple(f"AU{au}" for au in AUS)

_INDEX = {au: k for k, au in enumerate(AUS)}

#: laterality / symmetry prefixes: Left, Right, Top, Bottom, Unilateral, Asymmetric.
LATERALITY_PREFIXES = "LRTBUA"
#: intensity suffixes (FACS A = trace ... E = maximum); "A/B" (uncertain) is accepted too.
INTENSITY_LETTERS = "ABCDE"
#: non-AU descriptors found in real sheets; they are skipped and listed in ``notes``.
IGNORED_DESCRIPTORS: tuple[str, ...] = ("soft focus",)

_REGIONS = {"upper": UPPER, "lower": LOWER, "global": tuple(range(NUM_AUS))}


def au_index(au: int) -> int:
    """Node index of AU number ``au`` (e.g. ``au_index(12) == 8``).

    Raises:
        ValueError: if ``au`` is not one of the 12 AUs of the graph.
    """
    try:
        return _INDEX[int(au)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"au={au!r} is not one of the graph's AUs {AUS}") from None


def au_label(au: int) -> str:
    """``"AU12"`` for 12 (any AU number, not only the 12 graph AUs)."""
    return f"AU{int(au)}"


def region_indices(region: str) -> tuple[int, ...]:
    """Node indices of ``region``: "upper" (0–5), "lower" (6–11) or "global" (0–11)."""
    if region not in _REGIONS:
        raise ValueError(f"region={region!r}: expected one of {tuple(_REGIONS)}")
    return _REGIONS[region]


def region_aus(region: str) -> tuple[int, ...]:
    """AU numbers of ``region`` in node order."""
    return tuple(AUS[k] for k in region_indices(region))


class FACSParseError(ValueError):
    """A FACS code (or part of it) could not be read.

    Attributes:
        text: the code as given.
        problems: one message per unreadable part.
        partial: the AUs that could be read (a :class:`FACSCodes`).
    """

    def __init__(self, text: str, problems: Iterable[str], partial: "FACSCodes | None" = None,
                 context: str | None = None):
        self.text = text
        self.problems = tuple(problems)
        self.partial = partial
        self.context = context
        where = f" ({context})" if context else ""
        super().__init__(f"cannot parse FACS code {text!r}{where}: " + "; ".join(self.problems))


class FACSCodes(frozenset):
    """The AUs named by one FACS code: a ``frozenset[int]`` with what the parser saw.

    It compares and hashes like the plain frozenset of AU numbers
    (``parse_facs("4+L10") == {4, 10}``). Extra attributes:

    Attributes:
        text: the code as given (``str(code)``; ``""`` for blanks).
        problems: messages for unreadable parts (only non-empty with ``errors="report"``).
        notes: readable but noteworthy parts, e.g. ``"alternatives: R6 or R12"``,
            ``"reference AU: ref(10)"``, ``"ignored descriptor: soft focus"``.
        descriptors: FACS action descriptors and miscellaneous codes found in the
            code (``("AD38",)`` for ``"4+AD38"``, ``"M55"``); not AUs, not in the set.
        uncoded: True when the code holds ``?`` (the coders could not code the
            movement); the ``?`` adds no AU.
    """

    text: str
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    descriptors: tuple[str, ...]
    uncoded: bool

    def __new__(cls, aus: Iterable[int] = (), *, text: str = "", problems: Iterable[str] = (),
                notes: Iterable[str] = (), descriptors: Iterable[str] = (), uncoded: bool = False):
        self = super().__new__(cls, (int(a) for a in aus))
        self.text = text
        self.problems = tuple(problems)
        self.notes = tuple(notes)
        self.descriptors = tuple(descriptors)
        self.uncoded = bool(uncoded)
        return self

    @property
    def ok(self) -> bool:
        """True when every part of the code was read."""
        return not self.problems

    def __reduce__(self):
        return (_rebuild_codes, (tuple(sorted(self)), self.text, self.problems, self.notes,
                                 self.descriptors, self.uncoded))

    def __repr__(self) -> str:
        extra = f", problems={list(self.problems)}" if self.problems else ""
        return f"FACSCodes({sorted(self)}, text={self.text!r}{extra})"


def _rebuild_codes(aus, text, problems, notes, descriptors=(), uncoded=False):
    return FACSCodes(aus, text=text, problems=problems, notes=notes, descriptors=descriptors,
                     uncoded=uncoded)


# One token per match, tried in this order. An AU token: optional laterality prefixes
# (possibly "A/L"), an optional literal "AU", the number, an optional intensity ("B", "A/B").
_AU_TOKEN = (
    rf"(?P<au>(?:[{LATERALITY_PREFIXES}]/?)*(?:AU)?(?P<num>\d+)"
    rf"(?P<intensity>[{INTENSITY_LETTERS}](?:/[{INTENSITY_LETTERS}])?)?)(?![A-Z0-9])"
)
_TOKEN = re.compile(
    r"\s*(?:"
    + _AU_TOKEN
    + r"|(?P<code>(?:AD|M)\d+)(?![A-Z0-9])"
    + r"|(?P<uncoded>\?)"
    + r"|(?P<sep>[+,])"
    + r"|(?P<ref>REF)\s*(?=\()"
    + r"|(?P<open>\()|(?P<close>\))"
    + r"|(?P<or>OR)(?![A-Z0-9])"
    + "|(?P<desc>" + "|".join(re.escape(d).replace(r"\ ", r"\s+") for d in IGNORED_DESCRIPTORS) + ")"
    + r")",
    re.IGNORECASE,
)
_FLOAT_NUMBER = re.compile(r"^\s*(\d+)\.0*\s*$")
_MAX_AU = 99


def _is_blank(code) -> bool:
    """None, empty/whitespace string, NaN (float or numpy), pandas.NA / NaT."""
    if code is None:
        return True
    if isinstance(code, str):
        return not code.strip()
    if isinstance(code, numbers.Real) and not isinstance(code, bool):
        return math.isnan(float(code))
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return code is pd.NA or code is pd.NaT


def _number_code(code) -> tuple[list[int], list[str]]:
    """AU from a number stored as int/float (Excel cells): 12, 12.0, numpy.int64(12)."""
    value = float(code)
    if not math.isfinite(value) or value != int(value):
        return [], [f"number {code!r} is not a whole AU number"]
    return _check_number(int(value), str(code))


def _check_number(n: int, text: str) -> tuple[list[int], list[str]]:
    if not 1 <= n <= _MAX_AU:
        return [], [f"AU number {n} in {text!r} is outside 1..{_MAX_AU}"]
    return [n], []


def _parse_text(text: str, descriptors: list[str] | None = None) -> tuple[list[int], list[str], list[str]]:
    """Scan ``text``; return (AU numbers, problems, notes). Pure function, no raising.

    Action descriptors / miscellaneous codes (``AD38``, ``M55``) and ``?`` are appended
    to ``descriptors`` (``"?"`` for the latter) when a list is given.
    """
    aus: list[int] = []
    problems: list[str] = []
    notes: list[str] = []
    descriptors = [] if descriptors is None else descriptors
    m = _FLOAT_NUMBER.match(text)
    if m:  # "12.0" written by a spreadsheet export
        found, probs = _check_number(int(m.group(1)), text)
        return found, probs, notes

    depth = 0
    expect_operand = True   # grammar: operand ((+ | , | or) operand)*
    ref_depths: list[int] = []  # depths at which a ref( ... ) was opened
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            # unreadable: report the chunk up to the next separator and resume there
            start = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            nxt = re.search(r"[+,()]", text[start:])
            end = start + nxt.start() if nxt and nxt.start() > 0 else (start + 1 if nxt else n)
            problems.append(f"unreadable {text[start:end].strip()!r} at position {start}")
            pos = end
            expect_operand = False
            continue
        pos = m.end()
        kind = "au" if m.group("au") is not None else m.lastgroup
        if kind == "au":
            if not expect_operand:
                problems.append(f"missing '+' before {m.group('au').strip()!r} at position {m.start('au')}")
            found, probs = _check_number(int(m.group("num")), m.group("au"))
            aus.extend(found)
            problems.extend(probs)
            if ref_depths:
                notes.append(f"reference AU: ref({m.group('au')})")
            expect_operand = False
        elif kind in ("code", "uncoded"):
            if not expect_operand:
                problems.append(f"missing '+' before {m.group(kind)!r} at position {m.start(kind)}")
            descriptors.append(m.group(kind).upper())
            expect_operand = False
        elif kind == "desc":
            if not expect_operand:
                problems.append(f"missing '+' before {m.group('desc')!r}")
            notes.append(f"ignored descriptor: {text[m.start('desc'):m.end('desc')]}")
            expect_operand = False
        elif kind in ("sep", "or"):
            if expect_operand:
                problems.append(f"missing AU before {m.group(kind)!r} at position {m.start(kind)}")
            if kind == "or":
                notes.append(f"alternatives (all kept): {text.strip()}")
            expect_operand = True
        elif kind == "ref":
            if not expect_operand:
                problems.append(f"missing '+' before 'ref' at position {m.start('ref')}")
            ref_depths.append(depth)
            expect_operand = True
        elif kind == "open":
            if not expect_operand:
                problems.append(f"missing '+' before '(' at position {m.start('open')}")
            depth += 1
            expect_operand = True
        elif kind == "close":
            if depth == 0:
                problems.append(f"unbalanced ')' at position {m.start('close')}")
            else:
                depth -= 1
                if expect_operand:
                    problems.append(f"empty or incomplete parentheses before position {m.start('close')}")
                if ref_depths and ref_depths[-1] == depth:
                    ref_depths.pop()
            expect_operand = False
    if depth > 0:
        problems.append("unbalanced '(' (missing ')')")
    if expect_operand and (aus or problems or notes or descriptors):
        problems.append("code ends with an operator ('+', ',' or 'or')")
    # de-duplicate notes keeping order
    notes = list(dict.fromkeys(notes))
    return aus, problems, notes


#: FACS codes 50-89: head positions (51-58), eye positions (61-69), visibility (70-75) and
#: gross behaviour (80-85), plus 50 (speech). Some sheets write them in the AU cell.
MOVEMENT_CODES = frozenset(range(50, 90))


def parse_facs(code, *, errors: str = "raise", context: str | None = None) -> FACSCodes:
    """Every AU number named in one FACS code.

    Reads ``+`` / ``,`` separated AU terms. Each term is an AU number with optional
    laterality prefixes (``L R T B U A``, also ``A/L``), an optional literal ``AU``,
    and an optional intensity suffix ``A``–``E`` (also ``A/B``). Also understood:

    * ``ref(X)``: an AU coded as "reference" (present, weak). It IS included; a note
      records it.
    * ``X or Y`` and parentheses, e.g. ``(R6 or R12)+R15``: the coder was unsure which
      AU; ALL alternatives are included (``{6, 12, 15}``); a note records it.
    * descriptors listed in :data:`IGNORED_DESCRIPTORS` (``soft focus``): not AUs,
      skipped, listed in ``notes``.
    * numbers stored as ``int``/``float``/numpy scalars (``12``, ``12.0``) and strings
      such as ``"12.0"``.
    * blanks (``None``, ``""``, NaN, ``pandas.NA``): the empty set.
    * FACS action descriptors and miscellaneous codes ``AD<n>`` / ``M<n>`` (``AD38``,
      ``4+AD38``, ``M55``): not AUs; listed in ``result.descriptors``.
    * ``?`` (the coders could not code the movement, as SAMM's key defines it): no
      AU; ``result.uncoded`` is True.
    * numbers 50–89 (:data:`MOVEMENT_CODES`: head and eye positions such as ``56``,
      ``61``, visibility and gross-behaviour codes such as ``80``): not AUs; listed in
      ``result.descriptors`` as their number.

    AUs outside the 12 graph nodes (e.g. 25, 43) are returned too; callers that need
    only the graph AUs filter with :data:`AUS` (as :func:`aus_to_multihot` does).

    Args:
        code: the cell value.
        errors: ``"raise"`` (default): any unreadable part raises
            :class:`FACSParseError` naming the text, the part and ``context``.
            ``"report"``: never raises for bad text; returns the AUs that could be read,
            with one message per unreadable part in ``result.problems`` (check
            ``result.ok``). Callers reading a table collect those per row.
        context: where the code comes from (e.g. ``"SAMM-coding.xlsx row 17"``), added
            to error messages.

    Returns:
        :class:`FACSCodes`, a ``frozenset[int]`` with ``text``, ``problems``, ``notes``.

    Raises:
        FACSParseError: unreadable code and ``errors="raise"``.
        ValueError: ``errors`` not "raise"/"report".

    Examples:
        >>> sorted(parse_facs("ref(L10)+A12B"))
        [10, 12]
        >>> sorted(parse_facs("A9E+ref(10)"))
        [9, 10]
        >>> sorted(parse_facs(12.0))
        [12]
    """
    if errors not in ("raise", "report"):
        raise ValueError(f"errors={errors!r}: expected 'raise' or 'report'")
    descriptors: list[str] = []
    if _is_blank(code):
        return FACSCodes((), text="" if code is None or not isinstance(code, str) else code)
    if isinstance(code, bool):
        aus, problems, notes, text = [], [f"boolean {code!r} is not a FACS code"], [], str(code)
    elif isinstance(code, numbers.Number):
        text = str(code)
        aus, problems = _number_code(code)
        notes = []
    elif isinstance(code, str):
        text = code
        aus, problems, notes = _parse_text(code, descriptors)
    else:
        text = repr(code)
        aus, problems, notes = [], [f"unsupported type {type(code).__name__} for a FACS code"], []
    # FACS numbers 50-89 are head/eye positions, visibility and gross-behaviour codes, not
    # facial action units: they go with the descriptors (as their number), never to the AUs
    moves = [a for a in aus if a in MOVEMENT_CODES]
    if moves:
        aus = [a for a in aus if a not in MOVEMENT_CODES]
        descriptors.extend(str(a) for a in dict.fromkeys(moves))
    extra = {"descriptors": [d for d in descriptors if d != "?"], "uncoded": "?" in descriptors}
    result = FACSCodes(aus, text=text, problems=problems if errors == "report" else (), notes=notes, **extra)
    if problems and errors == "raise":
        raise FACSParseError(text, problems, partial=FACSCodes(aus, text=text, notes=notes, **extra),
                             context=context)
    if problems and context:
        result.problems = tuple(f"{p} ({context})" for p in problems)
    return result


def aus_to_multihot(aus):
    """12-dim multi-hot vector in node order; AUs outside the 12 are ignored.

    Args:
        aus: an iterable of AU numbers, or a FACS code string (parsed with
            :func:`parse_facs`, ``errors="raise"``).

    Shapes:
        output: ``(12,)`` ``torch.float32``.
    """
    import torch

    if isinstance(aus, str) or not isinstance(aus, Iterable):
        aus = parse_facs(aus)
    out = torch.zeros(NUM_AUS, dtype=torch.float32)
    for au in aus:
        k = _INDEX.get(int(au))
        if k is not None:
            out[k] = 1.0
    return out


#: How completely a clip's AUs were coded (``meta["aus_coding"]`` of a cache file):
#:
#: * ``"coded"``: the listed AUs are present and every other AU is absent;
#: * ``"partial"``: the listed AUs are present, the others are unknown (a ``?`` cell such
#:   as ``12+?``: the coders saw a movement they could not code; or a partly unreadable cell);
#: * ``"none"``: no AU coding at all (SMIC, a blank or ``?`` cell, a clip imported without
#:   an AU sheet); the listed set is empty and means nothing.
AU_CODINGS: tuple[str, ...] = ("coded", "partial", "none")


def check_au_coding(coding, *, what: str = "aus_coding") -> str:
    """``coding`` if it is one of :data:`AU_CODINGS`, else a ValueError naming ``what``."""
    if coding not in AU_CODINGS:
        raise ValueError(f"{what}: expected one of {AU_CODINGS}, got {coding!r}")
    return coding


def au_known_mask(aus, coding: str = "coded"):
    """Which of the 12 AU labels of a clip are known.

    Args:
        aus: AU numbers of the clip (as for :func:`aus_to_multihot`).
        coding: one of :data:`AU_CODINGS` (default: ``"coded"``, every label known).

    Shapes:
        output: ``(12,)`` ``torch.float32``: 1 = known (present or absent), 0 = unknown.
        ``"coded"`` → all ones; ``"none"`` → all zeros; ``"partial"`` → ones at the listed AUs.
    """
    import torch

    check_au_coding(coding)
    if coding == "coded":
        return torch.ones(NUM_AUS, dtype=torch.float32)
    if coding == "none":
        return torch.zeros(NUM_AUS, dtype=torch.float32)
    return aus_to_multihot(aus)
