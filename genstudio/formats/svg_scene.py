"""SVG text <-> differentiable `Scene` (genstudio.formats.svg_diff), keeping primitives primitive.

    scene = scene_from_svg(text)          # parameters are tensors with requires_grad
    text = scene_to_svg(scene, precision=1)

Reading goes through the normaliser's safe parser and style flattening (no DTDs, scripts,
external references; CSS, `<use>` and gradients (their mean colour) resolved), then svgelements
for geometry: transforms are applied to the parameters. A rect, circle or ellipse stays one while
its transform is a translation plus an axis-aligned scale (a circle scaled unevenly becomes an
ellipse); under rotation or skew it becomes a path. Arcs become cubic Béziers. The viewBox origin
moves to (0, 0). Element opacity multiplies the fill and stroke opacities.

Writing rounds every coordinate to `precision` decimals and colours to 8-bit hex, leaves out
attributes equal to their default and shapes that draw nothing. Rounding changes the drawing a
little: score the written text, not the scene it came from.
"""
from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET

import numpy as np
import torch

from .svg import SVG_NS, SVGError, _Cleaner, _fmt, _length, parse_with_viewbox
from .svg_geometry import Scene, Shape

_CAPS, _JOINS = ("butt", "round", "square"), ("miter", "round", "bevel")


# ---- Reading ----

def _tensor(values, dtype, requires_grad) -> torch.Tensor:
    return torch.tensor(np.asarray(values, np.float64), dtype=dtype).requires_grad_(requires_grad)


def _paint(colour, opacity: float, dtype, requires_grad):
    if colour is None or colour.value is None or colour.alpha == 0:
        return None, None
    rgb = _tensor([colour.red / 255, colour.green / 255, colour.blue / 255], dtype, requires_grad)
    return rgb, _tensor(colour.alpha / 255 * opacity, dtype, requires_grad)


def _path_geometry(element, matrix) -> tuple[list[float], list[tuple]]:
    from svgelements import Arc, Close, CubicBezier, Line, Move, Path, QuadraticBezier
    path = Path(element)
    path.transform = matrix
    path.reify()
    points: list[float] = []
    commands: list[tuple] = []

    def add(p) -> int:
        points.extend((float(p.x), float(p.y)))
        return len(points) // 2 - 1

    for seg in path:
        if isinstance(seg, Move):
            commands.append(("M", add(seg.end)))
        elif not commands:
            continue  # svgelements always starts with a Move; be safe anyway
        elif isinstance(seg, Close):
            commands.append(("Z",))
        elif isinstance(seg, Line):
            commands.append(("L", add(seg.end)))
        elif isinstance(seg, QuadraticBezier):
            commands.append(("Q", add(seg.control), add(seg.end)))
        elif isinstance(seg, CubicBezier):
            commands.append(("C", add(seg.control1), add(seg.control2), add(seg.end)))
        elif isinstance(seg, Arc):
            for cubic in seg.as_cubic_curves():
                commands.append(("C", add(cubic.control1), add(cubic.control2), add(cubic.end)))
    return points, commands


def _geometry(element) -> tuple[str, list[float], list[tuple]] | None:
    """(kind, params, commands) of one svgelements shape in canvas coordinates."""
    from svgelements import Circle, Ellipse, Polygon, Polyline, Rect, SimpleLine
    m = element.transform
    axis_aligned = abs(m.b) < 1e-9 and abs(m.c) < 1e-9 and m.a > 0 and m.d > 0
    if isinstance(element, Rect) and axis_aligned:
        x, y = m.a * element.x + m.e, m.d * element.y + m.f
        w, h = m.a * element.width, m.d * element.height
        rx, ry = m.a * (element.rx or 0.0), m.d * (element.ry or 0.0)
        if w <= 0 or h <= 0:
            return None
        return "rect", ([x, y, w, h, min(rx, w / 2), min(ry, h / 2)] if rx > 0 and ry > 0 else [x, y, w, h]), []
    if isinstance(element, (Circle, Ellipse)) and axis_aligned:
        cx, cy = m.a * element.cx + m.e, m.d * element.cy + m.f
        rx, ry = m.a * element.rx, m.d * element.ry
        if rx <= 0 or ry <= 0:
            return None
        if abs(rx - ry) < 1e-9:
            return "circle", [cx, cy, rx], []
        return "ellipse", [cx, cy, rx, ry], []
    if isinstance(element, (Polygon, Polyline)):
        pts = [m.point_in_matrix_space(p) for p in element.points]
        kind = "polygon" if isinstance(element, Polygon) else "polyline"
        return (kind, [c for p in pts for c in (float(p.x), float(p.y))], []) if len(pts) >= 2 else None
    if isinstance(element, SimpleLine):
        a = m.point_in_matrix_space((element.x1, element.y1))
        b = m.point_in_matrix_space((element.x2, element.y2))
        return "line", [float(a.x), float(a.y), float(b.x), float(b.y)], []
    points, commands = _path_geometry(element, m)
    if not any(c[0] not in ("M", "Z") for c in commands):
        return None
    return "path", points, commands


def scene_from_svg(text: str | bytes, dtype=torch.float32, requires_grad: bool = True) -> Scene:
    """Parse an SVG into a Scene whose numbers are tensors (`requires_grad`). Raises SVGError for
    unsafe or unreadable input and for features the normaliser refuses (text, clip-path, ...)."""
    from svgelements import SVG, Shape as SvgShape
    root, vb = parse_with_viewbox(text)
    scene = Scene(float(vb[2]), float(vb[3]))
    try:
        body = _Cleaner(root).clean(root, as_container=None)
    except RecursionError:
        raise SVGError("SVG elements are nested too deeply") from None
    if body is None:
        return scene
    top = ET.Element("svg", {"xmlns": SVG_NS, "viewBox": " ".join(repr(v) for v in vb),
                             "width": repr(vb[2]), "height": repr(vb[3])})
    top.append(body)
    try:
        doc = SVG.parse(io.StringIO(ET.tostring(top, encoding="unicode")), reify=False, color="black",
                        on_error="raise")
        elements = [e for e in doc.elements() if isinstance(e, SvgShape)]
    except RecursionError:
        raise SVGError("SVG elements are nested too deeply") from None
    except Exception as e:  # svgelements raises assorted errors on malformed geometry
        raise SVGError(f"SVG geometry could not be read ({type(e).__name__}: {e})") from None
    for element in elements:
        shape = _shape(element, dtype, requires_grad)
        if shape is not None:
            scene.shapes.append(shape)
    return scene


def _shape(element, dtype, requires_grad) -> Shape | None:
    values = element.values
    if str(values.get("visibility", "visible")).lower() in ("hidden", "collapse"):
        return None
    opacity = min(1.0, max(0.0, _length(values.get("opacity"), 1.0)))
    try:
        geometry = _geometry(element)
    except (ValueError, ZeroDivisionError, TypeError) as e:
        raise SVGError(f"SVG geometry could not be read ({type(e).__name__}: {e})") from None
    if geometry is None or opacity <= 0:
        return None
    kind, params, commands = geometry
    fill, fill_opacity = _paint(element.fill, opacity, dtype, requires_grad)
    if kind == "line":
        fill = fill_opacity = None
    stroke, stroke_opacity = _paint(element.stroke, opacity, dtype, requires_grad)
    scale = math.sqrt(abs(element.transform.determinant))
    width = float(element.stroke_width or 0.0) * scale
    if stroke is not None and width <= 0:
        stroke = stroke_opacity = None
    if fill is None and stroke is None:
        return None
    cap = str(values.get("stroke-linecap", "butt")).strip()
    join = str(values.get("stroke-linejoin", "miter")).strip()
    return Shape(kind, _tensor(params, dtype, requires_grad), commands, fill=fill, fill_opacity=fill_opacity,
                 fill_rule="evenodd" if str(values.get("fill-rule", "")).strip() == "evenodd" else "nonzero",
                 stroke=stroke, stroke_opacity=stroke_opacity,
                 stroke_width=_tensor(width, dtype, requires_grad) if stroke is not None else None,
                 linecap=cap if cap in _CAPS else "butt", linejoin=join if join in _JOINS else "miter")


# ---- Writing ----

def _numbers_text(values, precision: int) -> str:
    """Numbers joined compactly: a minus sign separates as well as a space does."""
    out = ""
    for v in values:
        s = _fmt(float(v), precision)
        if s.startswith("0."):
            s = s[1:]
        elif s.startswith("-0."):
            s = "-" + s[2:]
        out += s if (not out or s.startswith("-")) else " " + s
    return out


def _hex(rgb: torch.Tensor) -> str:
    r, g, b = (int(round(min(1.0, max(0.0, float(v))) * 255)) for v in rgb.detach())
    if all(c % 17 == 0 for c in (r, g, b)):  # #rrggbb with doubled digits -> #rgb
        return f"#{r // 17:x}{g // 17:x}{b // 17:x}"
    return f"#{r:02x}{g:02x}{b:02x}"


def _path_data(shape: Shape, precision: int) -> str:
    """Path data on the rounding grid, each command absolute or relative, whichever is shorter;
    H/V for axis-parallel lines; segments that round to nothing are left out (not a subpath's
    only one: a zero-length segment with round caps draws a dot)."""
    q = 10 ** precision
    pts = [(round(x * q), round(y * q)) for x, y in shape.params.detach().double().view(-1, 2).tolist()]
    text = lambda values: _numbers_text([v / q for v in values], precision)  # noqa: E731
    parts: list[str] = []
    current = start = None
    drawn = False
    for cmd in shape.commands:
        op = cmd[0]
        if op == "Z":
            if current is not None:
                parts.append("z")
                current = start
            continue
        ends = [pts[i] for i in cmd[1:]]
        if op != "M" and drawn and all(p == current for p in ends):
            continue
        if op == "L" and current is not None and ends[0] != current and ends[0][1] == current[1]:
            absolute, relative = "H" + text([ends[0][0]]), "h" + text([ends[0][0] - current[0]])
        elif op == "L" and current is not None and ends[0] != current and ends[0][0] == current[0]:
            absolute, relative = "V" + text([ends[0][1]]), "v" + text([ends[0][1] - current[1]])
        else:
            absolute = op + text([c for p in ends for c in p])
            relative = (op.lower() + text([c - o for p in ends for c, o in zip(p, current)])
                        if current is not None else absolute)
        parts.append(relative if len(relative) < len(absolute) else absolute)
        drawn = op != "M"
        if op == "M":
            start = ends[0]
        current = ends[-1]
    return "".join(parts)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _visible(opacity: torch.Tensor | None) -> bool:
    return opacity is None or _f(opacity) >= 0.005


def shape_to_element(shape: Shape, precision: int = 1) -> str | None:
    """One shape as SVG markup, or None when it draws nothing after rounding."""
    p = shape.params.detach().double().tolist()
    num = lambda v: _fmt(v, precision)  # noqa: E731
    has_fill = shape.fill is not None and _visible(shape.fill_opacity) and shape.kind != "line"
    has_stroke = (shape.stroke is not None and _visible(shape.stroke_opacity) and shape.stroke_width is not None
                  and _f(shape.stroke_width) >= 10.0 ** -precision / 2)
    if not (has_fill or has_stroke):
        return None
    if shape.kind == "path":
        d = _path_data(shape, precision)
        if not d:
            return None
        attrs = {"d": d}
    elif shape.kind == "rect":
        if min(p[2], p[3]) <= 0:
            return None
        attrs = dict(zip(("x", "y", "width", "height"), map(num, p[:4])))
        if len(p) == 6 and min(p[4], p[5]) > 0:
            attrs["rx"] = num(p[4])
            if num(p[5]) != attrs["rx"]:
                attrs["ry"] = num(p[5])
    elif shape.kind == "circle":
        if p[2] <= 0:
            return None
        attrs = dict(zip(("cx", "cy", "r"), map(num, p)))
    elif shape.kind == "ellipse":
        if min(p[2], p[3]) <= 0:
            return None
        attrs = dict(zip(("cx", "cy", "rx", "ry"), map(num, p)))
    elif shape.kind == "line":
        attrs = dict(zip(("x1", "y1", "x2", "y2"), map(num, p)))
    else:
        attrs = {"points": _numbers_text(p, precision)}
    if has_fill:
        colour = _hex(shape.fill)
        if colour != "#000":
            attrs["fill"] = colour
        if shape.fill_rule == "evenodd":
            attrs["fill-rule"] = "evenodd"
        if shape.fill_opacity is not None and round(_f(shape.fill_opacity), 2) < 1:
            attrs["fill-opacity"] = _numbers_text([_f(shape.fill_opacity)], 2)
    elif shape.kind != "line":
        attrs["fill"] = "none"
    if has_stroke:
        attrs["stroke"] = _hex(shape.stroke)
        attrs["stroke-width"] = _fmt(max(_f(shape.stroke_width), 10.0 ** -precision), precision)
        if shape.stroke_opacity is not None and round(_f(shape.stroke_opacity), 2) < 1:
            attrs["stroke-opacity"] = _numbers_text([_f(shape.stroke_opacity)], 2)
        if shape.linecap != "butt":
            attrs["stroke-linecap"] = shape.linecap
        if shape.linejoin != "miter":
            attrs["stroke-linejoin"] = shape.linejoin
    return f"<{shape.kind} " + " ".join(f'{k}="{v}"' for k, v in attrs.items()) + "/>"


def scene_to_svg(scene: Scene, precision: int = 1) -> str:
    """Compact single-line SVG of the scene: viewBox `0 0 width height`, primitives kept."""
    w, h = _fmt(scene.width, 3), _fmt(scene.height, 3)
    body = "".join(e for e in (shape_to_element(s, precision) for s in scene.shapes) if e)
    return f'<svg xmlns="{SVG_NS}" viewBox="0 0 {w} {h}" width="{w}" height="{h}">{body}</svg>'
