"""The SVG format shared by the SVG pipelines (StarVector image->SVG, SVGFusion text->SVG): safe
parsing, normalisation, rasterising and size statistics.

One canonical form for every SVG a model reads or writes:

    <svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256" width="256" height="256">
      <path d="M..."/>...</svg>            (on one line)

Every shape becomes a `<path>` with absolute commands (M L Q C A Z) whose coordinates live in
the 0..size square, rounded to `precision` decimals; transforms, `<use>`, CSS and group opacity
are flattened into the paths; only paint survives as attributes (fill, fill-rule, stroke,
stroke-width, linecap/linejoin, dashes, opacities), and attributes equal to the SVG default
are left out, so the same drawing always gives the same text.

Untrusted input is parsed without entity expansion: a DOCTYPE with an internal subset or any
ENTITY declaration raises `SVGError`, and scripts, event handlers, `<image>`,
`<foreignObject>` and external references never reach the output.
"""
from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
import numpy as np

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
MAX_INPUT_BYTES = 5_000_000
MAX_ELEMENTS = 20_000  # after <use> expansion: stops "use bombs" (a billion laughs made of <use>)
MAX_USE_DEPTH = 16
MAX_ARC_SWEEP = 2.5  # radians (143 degrees): longer arcs are written as several pieces


class SVGError(ValueError):
    """An SVG that cannot be read, is unsafe, or uses a feature the normaliser cannot flatten."""


# ---- Safe XML parsing ----

_DOCTYPE = re.compile(r"<!DOCTYPE\b[^>\[]*(\[)?", re.IGNORECASE)


def _safe_text(text: str | bytes) -> str:
    """Decode, size-check and vet the declarations of an SVG; returns text without a DOCTYPE."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SVGError(f"SVG is not UTF-8 text ({e})") from None
    if not isinstance(text, str):
        raise SVGError(f"expected SVG text (str or bytes), got {type(text).__name__}")
    if len(text) > MAX_INPUT_BYTES:
        raise SVGError(f"SVG is too large ({len(text)} characters; limit {MAX_INPUT_BYTES})")
    if re.search(r"<!ENTITY", text, re.IGNORECASE):
        raise SVGError("SVG rejected: it declares XML entities (<!ENTITY>), which are never expanded")
    m = _DOCTYPE.search(text)
    if m:
        if m.group(1):
            raise SVGError("SVG rejected: its DOCTYPE has an internal subset ([...]), which is never read")
        # A plain `<!DOCTYPE svg PUBLIC ...>` (Illustrator exports) is harmless: drop it, fetch nothing.
        end = text.index(">", m.start())
        text = text[:m.start()] + text[end + 1:]
    return text


def _parse_xml(text: str) -> ET.Element:
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring
    except ImportError:  # the stdlib parser is safe here: _safe_text already refused all DTDs
        DefusedXmlException, fromstring = (), ET.fromstring
    try:
        if DefusedXmlException:
            return fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        return fromstring(text)
    except ET.ParseError as e:
        raise SVGError(f"SVG is not well-formed XML ({e})") from None
    except DefusedXmlException as e:  # type: ignore[misc]
        raise SVGError(f"SVG rejected: {type(e).__name__} (DTD/entity declarations are not allowed)") \
            from None
    except ValueError as e:  # e.g. a str with an encoding declaration on some parsers
        raise SVGError(f"SVG could not be parsed ({e})") from None


def _localise(el: ET.Element) -> ET.Element | None:
    """Strip the SVG namespace from tags and attributes in place; drop foreign elements/attributes
    (inkscape:, sodipodi:, rdf:, xml:...) and every comment or processing instruction."""
    if not isinstance(el.tag, str):
        return None
    ns, _, local = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
    if ns and ns != SVG_NS:
        return None
    el.tag = local
    attrib = {}
    for k, v in el.attrib.items():
        if k.startswith("{"):
            kns, _, kl = k[1:].partition("}")
            if kns == XLINK_NS and kl == "href":
                attrib.setdefault("href", v)
            continue  # inkscape:label, sodipodi:nodetypes, xml:space ...
        if ":" in k:
            continue
        attrib[k] = v
    el.attrib.clear()
    el.attrib.update(attrib)
    kept = [c for c in (_localise(c) for c in list(el)) if c is not None]
    el[:] = kept
    return el


def parse_svg(text: str | bytes) -> ET.Element | None:
    try:
        return _localise(_parse_xml(_safe_text(text)))
    except RecursionError:
        raise SVGError("SVG elements are nested too deeply") from None


# ---- Presentation properties, CSS and paints ----

PAINT_PROPS = ("fill", "fill-opacity", "fill-rule", "stroke", "stroke-width", "stroke-opacity",
               "stroke-linecap", "stroke-linejoin", "stroke-miterlimit", "stroke-dasharray",
               "stroke-dashoffset", "paint-order", "vector-effect", "visibility")
OTHER_PROPS = ("opacity", "display", "clip-path", "mask", "filter", "stop-color", "stop-opacity")
PROPS = frozenset(PAINT_PROPS + OTHER_PROPS)
GEOMETRY = {"path": ("d",), "rect": ("x", "y", "width", "height", "rx", "ry"), "circle": ("cx", "cy", "r"),
            "ellipse": ("cx", "cy", "rx", "ry"), "line": ("x1", "y1", "x2", "y2"),
            "polyline": ("points",), "polygon": ("points",)}
CONTAINERS = {"svg", "g", "a", "switch", "symbol"}
UNSUPPORTED = {"text": "text (convert text to paths first)", "textPath": "text", "tspan": "text"}
_URL = re.compile(r"""^\s*url\(\s*['"]?([^'")]*)['"]?\s*\)\s*(.*)$""")
_NUM = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(px|pt|pc|mm|cm|in|em|ex|%)?\s*$")
_UNIT = {None: 1.0, "px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0,
         "em": 16.0, "ex": 8.0}


def _length(value: str | None, default: float | None = None) -> float | None:
    m = _NUM.match(value) if value else None
    if not m or m.group(2) == "%":
        return default
    return float(m.group(1)) * _UNIT[m.group(2)]


def _numbers(value: str | None) -> list[float]:
    return [float(x) for x in re.findall(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", value or "")]


def _declarations(style: str) -> dict[str, str]:
    out = {}
    for decl in style.split(";"):
        key, sep, value = decl.partition(":")
        if sep:
            out[key.strip().lower()] = value.replace("!important", "").strip()
    return out


def _stylesheet(root: ET.Element) -> list[tuple[tuple[int, int, int], str, str, str, dict]]:
    """Rules of every <style> element with simple selectors (*, tag, .class, #id, tag.class);
    combinators, pseudo-classes and @-rules are ignored. Sorted by specificity, then order."""
    rules = []
    css = " ".join((s.text or "") for s in root.iter("style"))
    css = re.sub(r"/\*.*?\*/", " ", css, flags=re.S)
    css = re.sub(r"@[^{;]*;", " ", css)  # @import / @charset
    for n, (selectors, body) in enumerate(re.findall(r"([^{}]+)\{([^{}]*)\}", css)):
        decls = {k: v for k, v in _declarations(body).items() if k in PROPS}
        for sel in selectors.split(","):
            sel = sel.strip()
            m = re.fullmatch(r"(\*|[A-Za-z][\w-]*)?(?:\.([\w-]+))?(?:#([\w-]+))?", sel)
            if not sel or sel.startswith("@") or not m:
                continue
            tag, cls, idv = m.group(1) or "*", m.group(2) or "", m.group(3) or ""
            spec = (int(bool(idv)), int(bool(cls)), int(tag != "*"))
            rules.append((spec, n, tag, cls, idv, decls))
    rules.sort(key=lambda r: (r[0], r[1]))
    return [(r[0], r[2], r[3], r[4], r[5]) for r in rules]


class _Cleaner:
    """Rebuilds a safe, flat-styled tree: presentation attributes only, `<use>` inlined, paint
    servers resolved, group opacity pushed down to the shapes, unsupported features reported."""

    def __init__(self, root: ET.Element):
        self.ids = {el.get("id"): el for el in root.iter() if el.get("id")}
        self.rules = _stylesheet(root)
        self.count = 0

    def props(self, el: ET.Element) -> dict[str, str]:
        out = {k: v.strip() for k, v in el.attrib.items() if k in PROPS}
        if self.rules:
            classes = set((el.get("class") or "").split())
            for _, tag, cls, idv, decls in self.rules:
                if (tag in ("*", el.tag) and (not cls or cls in classes)
                        and (not idv or idv == el.get("id"))):
                    out.update(decls)
        if el.get("style"):
            out.update({k: v for k, v in _declarations(el.get("style")).items() if k in PROPS})
        return {k: v for k, v in out.items() if v.lower() != "inherit"}  # inheritance is the default

    def paint(self, value: str, depth: int = 0) -> tuple[str, float]:
        """A paint value -> (colour or 'none', opacity factor). Gradients become their mean
        stop colour (a flat approximation); patterns and external paints fall back."""
        m = _URL.match(value)
        if not m:
            return value, 1.0
        ref, fallback = m.group(1), m.group(2).strip() or "none"
        target = self.ids.get(ref[1:]) if ref.startswith("#") else None
        if target is None or target.tag not in ("linearGradient", "radialGradient"):
            if target is not None and target.tag == "pattern":
                raise SVGError("unsupported SVG feature: pattern fill")
            return fallback, 1.0
        from svgelements import Color
        stops = target.findall("stop")
        while not stops and depth < 4 and (target.get("href") or "").startswith("#"):
            target = self.ids.get(target.get("href")[1:])
            if target is None:
                break
            stops, depth = target.findall("stop"), depth + 1
        if not stops:
            return "none", 1.0
        rgb, alpha = np.zeros(3), 0.0
        for stop in stops:
            p = self.props(stop)
            c = Color(p.get("stop-color", "black"))
            rgb += (c.red, c.green, c.blue) if c.value is not None else (0, 0, 0)
            stop_alpha = c.alpha / 255 if c.value is not None else 0.0
            alpha += (_length(p.get("stop-opacity"), 1.0) or 0.0) * stop_alpha
        r, g, b = (int(round(v / len(stops))) for v in rgb)
        return f"#{r:02x}{g:02x}{b:02x}", alpha / len(stops)

    def clean(self, el: ET.Element, opacity: float = 1.0, uses: tuple[str, ...] = (),
              as_container: bool = False) -> ET.Element | None:
        tag = el.tag
        if tag in UNSUPPORTED:
            raise SVGError(f"unsupported SVG feature: <{tag}> {UNSUPPORTED[tag]}")
        if not (tag in GEOMETRY or tag in CONTAINERS or tag == "use"):
            return None  # title, desc, metadata, script, style, defs, image, foreignObject, ...
        if tag == "symbol" and not as_container:
            return None  # rendered only through <use>
        self.count += 1
        if self.count > MAX_ELEMENTS:
            raise SVGError(f"SVG has too many elements after expanding <use> (limit {MAX_ELEMENTS})")
        props = self.props(el)
        if props.pop("display", "").lower() == "none":
            return None
        for key in ("clip-path", "mask", "filter"):
            if props.pop(key, "none").lower() != "none":
                raise SVGError(f"unsupported SVG feature: {key} on <{tag}> (flatten it first)")
        opacity *= min(1.0, max(0.0, _length(props.pop("opacity", None), 1.0)))
        attrs = {k: v for k, v in props.items() if k in PAINT_PROPS}
        for key in ("fill", "stroke"):
            if key in attrs and attrs[key].startswith("url("):
                attrs[key], alpha = self.paint(attrs[key])
                if alpha < 1.0:
                    attrs[f"{key}-opacity"] = repr(alpha * _length(attrs.get(f"{key}-opacity"), 1.0))
        transform = (el.get("transform") or "").strip()

        if tag == "use":
            href = el.get("href") or ""
            target = self.ids.get(href[1:]) if href.startswith("#") else None
            if target is None:
                return None  # external or dangling reference: nothing is fetched
            if href in uses or len(uses) >= MAX_USE_DEPTH:
                raise SVGError(f"<use> references form a cycle or nest too deep at {href!r}")
            x, y = _length(el.get("x"), 0.0), _length(el.get("y"), 0.0)
            transform = f"{transform} translate({x!r},{y!r})".strip()
            if target.tag in ("symbol", "svg"):
                transform = f"{transform} {_viewport(target, el)}".strip()
            child = self.clean(target, opacity, uses + (href,), as_container=True)
            if child is None:
                return None
            out = ET.Element("g", attrs)
            out.append(child)
        elif tag in CONTAINERS:
            if tag == "svg" and as_container is False:  # a nested <svg> is its own viewport
                x, y = _length(el.get("x"), 0.0), _length(el.get("y"), 0.0)
                transform = f"{transform} translate({x!r},{y!r}) {_viewport(el, el)}".strip()
            out = ET.Element("g", attrs)
            children = (self.clean(c, opacity, uses) for c in el)
            children = [c for c in children if c is not None]
            out.extend(children[:1] if tag == "switch" else children)  # <switch> renders one child
            if not len(out):
                return None
        else:
            out = ET.Element(tag, attrs)
            for key in GEOMETRY[tag]:
                if el.get(key) is not None:
                    out.set(key, el.get(key))
            if opacity < 1.0:
                out.set("opacity", repr(opacity))
        if transform:
            out.set("transform", transform)
        return out


def _viewport(target: ET.Element, user: ET.Element) -> str:
    """Transform mapping a <symbol>/<svg> viewBox onto the user's width x height (xMidYMid meet)."""
    vb = _numbers(target.get("viewBox"))
    if len(vb) != 4 or vb[2] <= 0 or vb[3] <= 0:
        return ""
    w = _length(user.get("width") or target.get("width"), vb[2])
    h = _length(user.get("height") or target.get("height"), vb[3])
    if (target.get("preserveAspectRatio") or "").strip() == "none":
        sx, sy = w / vb[2], h / vb[3]
        return f"scale({sx!r},{sy!r}) translate({-vb[0]!r},{-vb[1]!r})"
    s = min(w / vb[2], h / vb[3])
    tx, ty = (w - s * vb[2]) / 2 - s * vb[0], (h - s * vb[3]) / 2 - s * vb[1]
    return f"translate({tx!r},{ty!r}) scale({s!r})"


# ---- Path output ----

def _fmt(v: float, precision: int) -> str:
    s = f"{v:.{precision}f}" if precision > 0 else str(int(round(v)))
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _path_d(path, precision: int) -> str:
    from svgelements import Arc, Close, CubicBezier, Line, Move, QuadraticBezier

    def pts(*points) -> str:
        return " ".join(f"{_fmt(p.x, precision)} {_fmt(p.y, precision)}" for p in points)

    parts, drawn = [], False
    for seg in path:
        if isinstance(seg, Move):
            parts.append("M" + pts(seg.end))
        elif isinstance(seg, Close):
            parts.append("Z")
        elif isinstance(seg, Line):
            parts.append("L" + pts(seg.end))
        elif isinstance(seg, QuadraticBezier):
            parts.append("Q" + pts(seg.control, seg.end))
        elif isinstance(seg, CubicBezier):
            parts.append("C" + pts(seg.control1, seg.control2, seg.end))
        elif isinstance(seg, Arc):
            # An arc's centre moves by (radius rounding) / cos(sweep / 2): near a half turn a
            # 0.05 rounding shifts it by pixels. Pieces of at most MAX_ARC_SWEEP keep it small.
            n = max(1, math.ceil(abs(seg.sweep) / MAX_ARC_SWEEP - 1e-9))
            head = (f"A{_fmt(seg.rx, precision)} {_fmt(seg.ry, precision)} "
                    f"{_fmt(seg.get_rotation().as_degrees % 360, precision)} 0 {int(seg.sweep >= 0)} ")
            for k in range(1, n + 1):
                parts.append(head + pts(seg.end if k == n else seg.point(k / n)))
        else:
            continue
        drawn = drawn or not isinstance(seg, (Move, Close))
    return "".join(parts) if drawn else ""


def _colour(c) -> tuple[str | None, float]:
    """svgelements Color -> ('#rrggbb' or None for no paint, alpha 0..1)."""
    if c is None or c.value is None or c.alpha == 0:
        return None, 0.0
    return f"#{c.red:02x}{c.green:02x}{c.blue:02x}", c.alpha / 255


def _shape_to_path(shape, precision: int) -> str | None:
    from svgelements import Path
    values = shape.values
    if str(values.get("visibility", "visible")).lower() in ("hidden", "collapse"):
        return None
    opacity = _length(values.get("opacity"), 1.0)
    scale = math.sqrt(abs(shape.transform.determinant)) if shape.transform is not None else 1.0
    path = Path(shape)
    path.reify()  # applies transform and viewBox scaling to the points and the stroke width
    fill, fill_a = _colour(shape.fill)
    stroke, stroke_a = _colour(shape.stroke)
    width = float(path.stroke_width or 0.0)
    if stroke is not None and width <= 0:
        stroke = None
    if (fill is None and stroke is None) or opacity <= 0:
        return None  # draws nothing (e.g. Tabler's invisible 24x24 bounding box)
    d = _path_d(path, precision)
    if not d:
        return None
    a = {"d": d}
    if fill is None:
        a["fill"] = "none"
    else:
        if fill != "#000000":
            a["fill"] = fill
        if str(values.get("fill-rule", "")).strip() == "evenodd":
            a["fill-rule"] = "evenodd"
        if round(fill_a, 2) < 1:
            a["fill-opacity"] = _fmt(fill_a, 2)
    if stroke is not None:
        a["stroke"] = stroke
        a["stroke-width"] = _fmt(max(width, 10.0 ** -precision), precision)
        cap = str(values.get("stroke-linecap", "butt")).strip()
        join = str(values.get("stroke-linejoin", "miter")).strip()
        if cap in ("round", "square"):
            a["stroke-linecap"] = cap
        if join in ("round", "bevel"):
            a["stroke-linejoin"] = join
        elif join == "miter":
            limit = _length(values.get("stroke-miterlimit"), 4.0)
            if limit != 4.0 and limit >= 1:
                a["stroke-miterlimit"] = _fmt(limit, 2)
        dashes = [v * scale for v in _numbers(values.get("stroke-dasharray"))]
        if dashes and any(v > 0 for v in dashes) and all(v >= 0 for v in dashes):
            a["stroke-dasharray"] = " ".join(_fmt(v, precision) for v in dashes)
            offset = _length(values.get("stroke-dashoffset"), 0.0) * scale
            if offset:
                a["stroke-dashoffset"] = _fmt(offset, precision)
        if round(stroke_a, 2) < 1:
            a["stroke-opacity"] = _fmt(stroke_a, 2)
        if fill is not None and str(values.get("paint-order", "")).strip().startswith("stroke"):
            a["paint-order"] = "stroke"
    if round(opacity, 2) < 1:
        a["opacity"] = _fmt(opacity, 2)
    return "<path " + " ".join(f'{k}="{v}"' for k, v in a.items()) + "/>"


# ---- Public API ----

def parse_with_viewbox(text: str | bytes):
    """(root element, [x, y, w, h]) of a safe SVG document; SVGError when it is not one or has no
    extent (no viewBox and no absolute width/height, or an empty one)."""
    root = parse_svg(text)
    if root is None or root.tag != "svg":
        raise SVGError(f"not an SVG document (root element is <{getattr(root, 'tag', '?')}>)")
    vb = _numbers(root.get("viewBox"))
    if len(vb) != 4:
        w, h = _length(root.get("width")), _length(root.get("height"))
        if not w or not h:
            raise SVGError("SVG has neither a viewBox nor an absolute width/height: its extent is unknown")
        vb = [0.0, 0.0, w, h]
    if vb[2] <= 0 or vb[3] <= 0:
        raise SVGError(f"SVG viewBox has no area ({root.get('viewBox')!r})")
    return root, vb


def normalize_svg(text: str | bytes, size: int = 256, precision: int = 1) -> str:
    """Canonical single-line SVG: viewBox `0 0 size size`, every shape a flattened absolute path.

    Raises SVGError for malformed or unsafe XML, an unknown drawing extent, features that cannot
    be flattened into paths (text, clip-path, mask, filter, patterns) or a drawing with nothing
    visible. `currentColor` is black; gradients become their mean stop colour.
    """
    from svgelements import SVG, Shape
    if size <= 0 or precision < 0:
        raise SVGError(f"size must be > 0 and precision >= 0 (got size={size}, precision={precision})")
    root, vb = parse_with_viewbox(text)

    try:
        body = _Cleaner(root).clean(root, as_container=None)  # the root <svg>; viewport set below
    except RecursionError:
        raise SVGError("SVG elements are nested too deeply") from None
    if body is None:
        raise SVGError("SVG draws nothing (no visible shapes)")
    top = ET.Element("svg", {"xmlns": SVG_NS, "viewBox": " ".join(repr(v) for v in vb),
                             "width": str(size), "height": str(size)})
    if root.get("preserveAspectRatio"):
        top.set("preserveAspectRatio", root.get("preserveAspectRatio"))
    top.append(body)
    try:
        doc = SVG.parse(io.StringIO(ET.tostring(top, encoding="unicode")), reify=False, color="black",
                        on_error="raise")
        paths = [p for p in (_shape_to_path(e, precision) for e in doc.elements() if isinstance(e, Shape))
                 if p is not None]
    except SVGError:
        raise
    except RecursionError:
        raise SVGError("SVG elements are nested too deeply") from None
    except Exception as e:  # svgelements raises assorted errors on malformed geometry
        raise SVGError(f"SVG geometry could not be read ({type(e).__name__}: {e})") from None
    if not paths:
        raise SVGError("SVG draws nothing (no visible shapes)")
    return (f'<svg xmlns="{SVG_NS}" viewBox="0 0 {size} {size}" width="{size}" height="{size}">'
            + "".join(paths) + "</svg>")


def rasterize_svg(text: str | bytes, size: int = 128, background: str | tuple = "white") -> np.ndarray:
    """Render an SVG to a (size, size, 3) uint8 array, alpha flattened onto `background`."""
    import cairosvg
    from PIL import Image, ImageColor
    safe = _safe_text(text)
    try:
        png = cairosvg.svg2png(bytestring=safe.encode("utf-8"), output_width=size, output_height=size)
        im = Image.open(io.BytesIO(png)).convert("RGBA")
    except Exception as e:  # cairosvg raises anything from ParseError to ZeroDivisionError
        raise SVGError(f"SVG could not be rendered ({type(e).__name__}: {e})") from None
    from genstudio.render import flatten_alpha
    bg = ImageColor.getrgb(background) if isinstance(background, str) else tuple(background)
    out = flatten_alpha(im, bg)
    if out.size != (size, size):  # a non-square viewBox keeps its aspect in cairosvg
        out = out.resize((size, size), Image.BICUBIC)
    return np.asarray(out, dtype=np.uint8)


_COMMANDS = re.compile(r"[MLHVCSQTAZ]", re.IGNORECASE)


def svg_stats(text: str | bytes) -> dict:
    """Size of an SVG: drawable shapes, path commands (a non-path shape counts as one), bytes."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    root = parse_svg(text)
    shapes: list[ET.Element] = [el for el in root.iter() if el.tag in GEOMETRY] if root is not None else []
    commands = sum(len(_COMMANDS.findall(el.get("d") or "")) if el.tag == "path" else 1 for el in shapes)
    return {"paths": len(shapes), "commands": commands, "bytes": len(raw)}
