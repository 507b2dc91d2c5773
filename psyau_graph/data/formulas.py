"""Formula cells of annotation sheets: read the formula text, compute simple ones.

Sheets saved by a spreadsheet program store each formula's value, which pandas
reads. Sheets written by scripts store only the formula (``=F2-D2``,
``=SUM(D2:E2)``); :func:`with_formulas` puts that text into the cell grid and
:func:`eval_formula` computes it from the grid's cells without ``eval``: cell
references, numbers, ``+ - * /``, parentheses and ``SUM`` of a range only.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd


def _blank(v) -> bool:
    try:
        if bool(pd.isna(v)):
            return True
    except (TypeError, ValueError):
        pass
    return isinstance(v, str) and not v.strip()


_REF = r"\$?([A-Z]{1,3})\$?(\d+)"


def col_index(letters: str) -> int:
    """0-based column of a spreadsheet column name (``A`` → 0, ``AA`` → 26)."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + ord(ch) - 64
    return n - 1


def eval_formula(text: str, grid: pd.DataFrame, depth: int = 0) -> float:
    """Value of a simple formula: cell references, numbers, ``+ - * /``, ``SUM(A1:B2)``.

    Raises:
        ValueError: anything else (functions other than SUM, references outside the grid).
    """
    if depth > 10:
        raise ValueError(f"formula {text!r} refers to itself")
    expr = text.strip().lstrip("=").upper().replace(" ", "")

    def cell(col: str, row: str) -> float:
        r, c = int(row) - 1, col_index(col)
        if not (0 <= r < len(grid) and 0 <= c < grid.shape[1]):
            raise ValueError(f"formula {text!r}: cell {col}{row} is outside the sheet")
        v = grid.iat[r, c]
        if isinstance(v, str) and v.strip().startswith("="):
            return eval_formula(v, grid, depth + 1)
        if _blank(v):
            return 0.0
        return float(v)

    def sum_range(m: re.Match) -> str:
        c0, r0, c1, r1 = col_index(m.group(1)), int(m.group(2)), col_index(m.group(3)), int(m.group(4))
        total = 0.0
        for r in range(min(r0, r1), max(r0, r1) + 1):
            for c in range(min(c0, c1), max(c0, c1) + 1):
                col = "".join(chr(65 + d) for d in _letters(c))
                total += cell(col, str(r))
        return repr(total)

    expr = re.sub(rf"SUM\({_REF}:{_REF}\)", sum_range, expr)
    expr = re.sub(_REF, lambda m: repr(cell(m.group(1), m.group(2))), expr)
    if re.fullmatch(r"[0-9.+\-*/()e]+", expr) is None:
        raise ValueError(f"formula {text!r} is not a simple sum/difference of cells")
    return _arith(expr, text)


def _letters(c: int) -> list[int]:
    out = []
    c += 1
    while c:
        c, r = divmod(c - 1, 26)
        out.insert(0, r)
    return out


def _arith(expr: str, text: str) -> float:
    """Evaluate ``+ - * /`` and parentheses over numbers (no ``eval``)."""
    tokens = re.findall(r"\d+(?:\.\d*)?(?:e[+-]?\d+)?|[-+*/()]", expr)
    if "".join(tokens) != expr:
        raise ValueError(f"formula {text!r} is not simple arithmetic")
    pos = 0

    def atom() -> float:
        nonlocal pos
        t = tokens[pos] if pos < len(tokens) else None
        if t == "(":
            pos += 1
            v = add()
            pos += 1
            return v
        if t in ("-", "+"):
            pos += 1
            return -atom() if t == "-" else atom()
        if t is None:
            raise ValueError(f"formula {text!r} is incomplete")
        pos += 1
        return float(t)

    def mul() -> float:
        nonlocal pos
        v = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            v = v * atom() if op == "*" else v / atom()
        return v

    def add() -> float:
        nonlocal pos
        v = mul()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            v = v + mul() if op == "+" else v - mul()
        return v

    return add()


def with_formulas(path: Path, sheet: str, grid: pd.DataFrame) -> pd.DataFrame:
    """Put the formula text into cells whose computed value the file does not store.

    Files written by scripts (not saved by a spreadsheet program) hold formulas
    without cached values; pandas reads those cells as empty. The formula text lets
    :func:`eval_formula` compute simple ones.
    """
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        return grid
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    try:
        ws = wb[sheet]
        grid = grid.copy()
        for r, row in enumerate(ws.iter_rows(values_only=True)):
            for c, v in enumerate(row):
                if isinstance(v, str) and v.startswith("=") and r < len(grid) and c < grid.shape[1] \
                        and _blank(grid.iat[r, c]):
                    grid.iat[r, c] = v
    finally:
        wb.close()
    return grid
