"""SVG as a matrix: one row per drawing command, in painter's order (SVGFusion's representation).

A normalised SVG (`normalize_svg`: viewBox 0 0 256 256, every shape an absolute path of M, L, Q, C,
A and Z with one decimal) becomes a float32 matrix of shape (rows, WIDTH). Each row holds

    ELEM   element type: 0 end/padding, 1 filled path, 2 stroked path, 3 filled and stroked path
    CMD    command: 0 M, 1 L, 2 Q, 3 C, 4 A, 5 Z
    NEW    1 on the first row of an element (a new <path>), else 0
    start  (x, y): the pen position before the command
    c1     Q/C first control point; A: (rx, ry)
    c2     C second control point; A: (x-axis rotation in degrees, 2 * large-arc + sweep)
    end    (x, y): where the command ends (Z: the subpath's start)
    paint  fill r, g, b, fill-opacity (0..1; 0 without fill), stroke r, g, b (0..1), stroke width,
           fill-rule evenodd (0/1), line cap (0 butt, 1 round, 2 square), line join (0 miter,
           1 round, 2 bevel), miter limit, opacity

Coordinates stay in the user units of the 256 canvas, quantised to 0.1 by the normaliser: the
round trip `matrix_to_svg(svg_to_matrix(s)) == s` is exact for normalised SVGs whose paths use only
the attributes above (tested on the icon fixtures). Anything else (stroke-opacity, dashes, paint
order) raises `UnsupportedSVG`, so datasets can skip it. `matrix_to_svg` also accepts a model's
noisy output: it rounds categories, clamps numbers and drops rows that cannot be drawn.
"""
from __future__ import annotations

import re

import numpy as np

from .svg import SVG_NS, SVGError, _fmt

ELEM, CMD, NEW = 0, 1, 2
START, C1, C2, END = slice(3, 5), slice(5, 7), slice(7, 9), slice(9, 11)
COORDS = slice(3, 11)
FILL, FILL_OPACITY, STROKE, STROKE_WIDTH = slice(11, 14), 14, slice(15, 18), 18
EVENODD, CAP, JOIN, MITER, OPACITY = 19, 20, 21, 22, 23
WIDTH = 24
PAINT = slice(11, 24)

COMMANDS = "MLQCAZ"
ELEMENTS = ("end", "fill", "stroke", "fill+stroke")
CAPS = ("butt", "round", "square")
JOINS = ("miter", "round", "bevel")
# Which columns are categories (with their number of classes); every other column is a number.
CATEGORIES = {ELEM: len(ELEMENTS), CMD: len(COMMANDS), NEW: 2, EVENODD: 2, CAP: len(CAPS), JOIN: len(JOINS)}
SIZE = 256.0  # the normaliser's canvas
QUANTUM = 0.1  # the normaliser's coordinate step (precision=1)
LIMIT = 16 * SIZE  # decoded coordinates and radii are clamped to +-LIMIT

_ATTRS = {"d", "fill", "fill-rule", "fill-opacity", "stroke", "stroke-width", "stroke-linecap",
          "stroke-linejoin", "stroke-miterlimit", "opacity"}
_PATH_RE = re.compile(r"<path\s([^>]*?)/>")
_ATTR_RE = re.compile(r'([a-z-]+)="([^"]*)"')
_TOKEN_RE = re.compile(r"[MLQCAZ]|-?\d*\.?\d+(?:e-?\d+)?")
_ARGS = {"M": 2, "L": 2, "Q": 4, "C": 6, "A": 7, "Z": 0}


class UnsupportedSVG(SVGError):
    """The SVG uses something the matrix cannot hold (or is not a normalised SVG)."""


def _rgb(value: str) -> tuple[float, float, float]:
    if not re.fullmatch(r"#[0-9a-f]{6}", value):
        raise UnsupportedSVG(f"colour {value!r} is not #rrggbb (normalise the SVG first)")
    return tuple(int(value[i:i + 2], 16) / 255 for i in (1, 3, 5))


def _paint_row(attrs: dict[str, str]) -> tuple[int, np.ndarray]:
    unknown = set(attrs) - _ATTRS
    if unknown:
        raise UnsupportedSVG(f"path attribute(s) {sorted(unknown)} are not part of the matrix")
    paint = np.zeros(WIDTH, np.float32)
    filled = attrs.get("fill") != "none"
    stroked = "stroke" in attrs
    if filled:
        paint[FILL] = _rgb(attrs.get("fill", "#000000"))
        paint[FILL_OPACITY] = float(attrs.get("fill-opacity", 1))
        paint[EVENODD] = attrs.get("fill-rule") == "evenodd"
    if stroked:
        paint[STROKE] = _rgb(attrs["stroke"])
        paint[STROKE_WIDTH] = float(attrs["stroke-width"])
        paint[CAP] = CAPS.index(attrs.get("stroke-linecap", "butt"))
        paint[JOIN] = JOINS.index(attrs.get("stroke-linejoin", "miter"))
        paint[MITER] = float(attrs.get("stroke-miterlimit", 4))
    paint[OPACITY] = float(attrs.get("opacity", 1))
    if not filled and not stroked:
        raise UnsupportedSVG("a path with neither fill nor stroke")
    return int(filled) + 2 * int(stroked), paint


def svg_to_matrix(svg: str) -> np.ndarray:
    """A normalised SVG -> (rows, WIDTH) float32, one row per command. Raises UnsupportedSVG."""
    if not svg.startswith(f'<svg xmlns="{SVG_NS}" viewBox="0 0 256 256"'):
        raise UnsupportedSVG("not a normalised SVG (run genstudio.formats.svg.normalize_svg first)")
    rows = []
    for match in _PATH_RE.finditer(svg):
        attrs = dict(_ATTR_RE.findall(match.group(1)))
        elem, paint = _paint_row(attrs)
        tokens = _TOKEN_RE.findall(attrs.get("d", ""))
        pen = subpath = (0.0, 0.0)
        first, k = True, 0
        while k < len(tokens):
            cmd = tokens[k]
            n = _ARGS.get(cmd)
            if n is None:
                raise UnsupportedSVG(f"path data {attrs['d'][:40]!r} is not in normalised form")
            args = [float(v) for v in tokens[k + 1:k + 1 + n]]
            if any(abs(v) > LIMIT for v in args):
                raise UnsupportedSVG(f"a number beyond +-{LIMIT:g} (a near-flat arc?) in {cmd}{args}")
            k += 1 + n
            row = paint.copy()
            row[ELEM], row[CMD], row[NEW] = elem, COMMANDS.index(cmd), first
            row[START] = pen
            if cmd == "Z":
                end = subpath
            else:
                end = tuple(args[-2:])
                if cmd == "Q":
                    row[C1] = args[0:2]
                elif cmd == "C":
                    row[C1], row[C2] = args[0:2], args[2:4]
                elif cmd == "A":
                    row[C1] = args[0:2]
                    row[C2] = args[2], 2 * args[3] + args[4]
            if cmd == "M":
                subpath = end
            row[END] = end
            pen, first = end, False
            rows.append(row)
    if not rows:
        raise UnsupportedSVG("the SVG has no path commands")
    return np.stack(rows)


def _hex(rgb) -> str:
    r, g, b = (int(round(float(np.clip(v, 0, 1)) * 255)) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _attributes(row: np.ndarray, elem: int) -> str:
    a = {}
    if elem & 1:
        fill = _hex(row[FILL])
        if fill != "#000000":
            a["fill"] = fill
        if round(float(row[EVENODD])) == 1:
            a["fill-rule"] = "evenodd"
        if round(float(row[FILL_OPACITY]), 2) < 1:
            a["fill-opacity"] = _fmt(max(float(row[FILL_OPACITY]), 0.0), 2)
    else:
        a["fill"] = "none"
    if elem & 2:
        a["stroke"] = _hex(row[STROKE])
        a["stroke-width"] = _fmt(max(float(row[STROKE_WIDTH]), QUANTUM), 1)
        cap = CAPS[int(np.clip(round(float(row[CAP])), 0, 2))]
        join = JOINS[int(np.clip(round(float(row[JOIN])), 0, 2))]
        if cap != "butt":
            a["stroke-linecap"] = cap
        if join != "miter":
            a["stroke-linejoin"] = join
        elif round(float(row[MITER]), 2) != 4 and row[MITER] >= 1:
            a["stroke-miterlimit"] = _fmt(float(row[MITER]), 2)
    if round(float(row[OPACITY]), 2) < 1:
        a["opacity"] = _fmt(max(float(row[OPACITY]), 0.0), 2)
    return " ".join(f'{k}="{v}"' for k, v in a.items())


def _command(row: np.ndarray, cmd: str) -> str:
    def pts(values) -> str:
        return " ".join(_fmt(float(v), 1) for v in values)
    if cmd == "Z":
        return "Z"
    if cmd in "ML":
        return cmd + pts(row[END])
    if cmd == "Q":
        return "Q" + pts(row[C1]) + " " + pts(row[END])
    if cmd == "C":
        return "C" + pts(row[C1]) + " " + pts(row[C2]) + " " + pts(row[END])
    flags = int(np.clip(round(float(row[C2][1])), 0, 3))
    rx, ry = (max(float(v), 0.0) for v in row[C1])  # radius 0 draws a line (SVG spec)
    return f"A{pts([rx, ry, float(row[C2][0]) % 360])} {flags // 2} {flags % 2} " + pts(row[END])


def matrix_to_svg(matrix: np.ndarray, size: int = 256) -> str:
    """(rows, WIDTH) -> a standalone SVG string (viewBox 0 0 256 256, `size` px wide).

    Rows after the first ELEM=0 (end) row are ignored; categories are rounded, coordinates clamped
    to +-LIMIT and rounded to 0.1; an element whose path would draw nothing is dropped."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != WIDTH:
        raise ValueError(f"matrix must have shape (rows, {WIDTH}), got {m.shape}")
    m = m.copy()
    m[:, COORDS] = np.round(np.clip(m[:, COORDS], -LIMIT, LIMIT), 1)
    elements: list[tuple[int, np.ndarray, list[str]]] = []
    for row in m:
        elem = int(np.clip(round(row[ELEM]), 0, 3))
        if elem == 0:
            break
        cmd = COMMANDS[int(np.clip(round(row[CMD]), 0, 5))]
        if not elements or round(row[NEW]) == 1 or elements[-1][0] != elem:
            elements.append((elem, row, []))
        parts = elements[-1][2]
        if not parts and cmd != "M":
            parts.append("M" + " ".join(_fmt(float(v), 1) for v in row[START]))
        parts.append(_command(row, cmd))
    paths = []
    for elem, first, parts in elements:
        if all(p[0] in "MZ" for p in parts):
            continue  # draws nothing
        paths.append(f'<path d="{"".join(parts)}" {_attributes(first, elem)}'.rstrip() + "/>")
    return (f'<svg xmlns="{SVG_NS}" viewBox="0 0 256 256" width="{size}" height="{size}">'
            + "".join(paths) + "</svg>")
