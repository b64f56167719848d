"""Turning raw model output into safe, standalone SVG: repair, validation, sanitising.

A code LM stops wherever its token budget ends, so its text may break off inside a number, an
attribute or an open `<g>`. `repair_svg` keeps everything that was complete (and the complete
commands of a path cut mid-`d`), closes what is open and adds `</svg>`. `validate_svg` lists
what keeps a text from being a valid, safe, standalone SVG. Parsing, safety rules and
rendering are `genstudio.formats.svg`'s: this module only adds the truncation logic.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

# `parse_svg` is the normaliser's safe parser (no DTDs/entities, namespaces stripped, xlink:href ->
# href): validation must judge a text exactly as the normaliser and the dataset builder read it.
from .svg import (GEOMETRY, PAINT_PROPS, SVG_NS, XLINK_NS, SVGError, parse_svg, normalize_svg, rasterize_svg,
                  svg_stats)

_TAG = re.compile(r"<[^<>]*>?")  # a whole tag, or the unfinished last one (no '>')
_NAME = re.compile(r"</?\s*([A-Za-z_][\w:.-]*)")
_ATTR = re.compile(r"""\s*([A-Za-z_:][\w:.-]*)\s*=\s*("[^"<]*"|'[^'<]*')""")
_PARTIAL_ATTR = re.compile(r"""\s*([A-Za-z_:][\w:.-]*)\s*=\s*(["'])([^"'<]*)$""")
_PATH_TOKEN = re.compile(r"[MLHVCSQTAZmlhvcsqtaz]|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_ARITY = {"m": 2, "l": 2, "h": 1, "v": 1, "c": 6, "s": 4, "q": 4, "t": 2, "a": 7, "z": 0}
UNSAFE = ("raster", "script", "external", "handler", "foreign")


# ---- Repair ----

def _complete_path_data(d: str, cut: bool) -> str:
    """The longest prefix of path data made of whole commands ("" if it draws nothing). `cut`:
    the text ended inside this value, so its last number may be missing digits: it is dropped."""
    tokens = list(_PATH_TOKEN.finditer(d))
    if cut and tokens and not tokens[-1].group().isalpha() and tokens[-1].end() == len(d):
        tokens.pop()
    cmd, args, kept, drawn, drawn_kept = None, 0, 0, False, False
    for tok in tokens:
        t = tok.group()
        if t.isalpha():
            if cmd is not None and args:
                break  # a command letter inside another command's numbers
            cmd, args = t.lower(), 0
            if cmd == "z":
                kept, drawn_kept = tok.end(), drawn
            continue
        if cmd is None or cmd == "z":
            break
        args += 1
        if args == _ARITY[cmd]:
            drawn = drawn or cmd != "m"
            args, kept, drawn_kept = 0, tok.end(), drawn
    return d[:kept].strip() if drawn_kept else ""


def _salvage_tag(fragment: str, previous_paint: dict[str, str]) -> tuple[str | None, bool]:
    """An unfinished start tag -> (a closed tag, or None to drop it; whether it is self-closing).

    A shape cut inside its `d` lost the attributes written after it: the canonical form puts
    paint last. It takes the paint of the previous shape, as outline icons share one stroke."""
    m = _NAME.match(fragment)
    if not m or fragment.startswith(("</", "<!", "<?")):
        return None, True
    name, rest = m.group(1), fragment[m.end():]
    attrs, pos = [], 0
    for a in _ATTR.finditer(rest):
        if a.start() != pos and rest[pos:a.start()].strip():
            break
        attrs.append((a.group(1), a.group(2)[1:-1]))
        pos = a.end()
    partial = _PARTIAL_ATTR.match(rest[pos:])
    if partial and partial.group(1) in ("d", "points"):
        data = _complete_path_data(partial.group(3), cut=True)
        if data:
            attrs.append((partial.group(1), data))
            if not any(k in PAINT_PROPS for k, _ in attrs):
                attrs += list(previous_paint.items())
    if name in GEOMETRY:
        if not all(any(k == g for k, _ in attrs) for g in GEOMETRY[name][:1]):
            return None, True  # a shape without its geometry draws nothing
        return f"<{name} " + " ".join(f'{k}="{v}"' for k, v in attrs) + "/>", True
    return f"<{name}" + "".join(f' {k}="{v}"' for k, v in attrs) + ">", False


def _tag_parses(tag: str, namespaces: str) -> bool:
    """Whether one start tag is well-formed on its own (quotes, duplicate attributes, names)."""
    m = _NAME.match(tag)
    body = tag[:-2] if tag.endswith("/>") else tag[:-1]
    try:
        ET.fromstring(f"<svg {namespaces}>{body}/></svg>" if m.group(1) != "svg" else body + "/>")
        return True
    except ET.ParseError:
        return False


def repair_svg(text: str, default_viewbox: str | None = None) -> tuple[str, bool]:
    """Close a truncated or slightly malformed model output into a standalone, parseable SVG.

    Returns (svg, repaired). Drops text before `<svg` and after `</svg>`, an unfinished trailing
    tag (keeping a path's complete commands when `d` was cut), start tags that are not
    well-formed and stray end tags; closes open elements; adds xmlns (and xmlns:xlink when used)
    and `default_viewbox` when the root has no viewBox or size. Raises SVGError when nothing
    drawable survives: an empty `<svg/>` is never returned.
    """
    if not isinstance(text, str):
        raise SVGError(f"expected SVG text, got {type(text).__name__}")
    start = text.find("<svg")
    if start < 0:
        raise SVGError("the output has no <svg> element")
    end = text.find("</svg>", start)
    body = text[start:end + 6] if end >= 0 else text[start:]
    repaired = bool(text[:start].strip()) or end < 0 or bool(text[end + 6:].strip())

    # 1. The root tag: namespaces and an extent.
    root = _TAG.match(body)
    if not root or not root.group().endswith(">"):
        raise SVGError("the output breaks off inside its <svg> tag: nothing was drawn")
    root_tag = root.group()
    extra = []
    if "xmlns=" not in root_tag:
        extra.append(f'xmlns="{SVG_NS}"')
    if "xlink:" in body and "xmlns:xlink" not in root_tag:
        extra.append(f'xmlns:xlink="{XLINK_NS}"')
    if default_viewbox and "viewBox" not in root_tag and not re.search(r"\swidth=", root_tag):
        extra.append(f'viewBox="{default_viewbox}"')
    if extra:
        repaired = True
    inner = root_tag[:-2] if root_tag.endswith("/>") else root_tag[:-1]
    root_tag = " ".join([inner.rstrip()] + extra) + ">"
    namespaces = f'xmlns="{SVG_NS}" xmlns:xlink="{XLINK_NS}"'

    # 2. Every later token: keep well-formed tags, track open elements, salvage the last one.
    out, stack, pos, paint = [root_tag], ["svg"], root.end(), {}
    for m in _TAG.finditer(body, pos):
        between = body[pos:m.start()]
        if between.strip():
            out.append(re.sub(r"&(?![a-zA-Z]+;|#\d+;|#x[0-9a-fA-F]+;)", "&amp;", between))
        pos, tag = m.end(), m.group()
        if not tag.endswith(">"):  # the text broke off inside this tag
            repaired = True
            salvaged, closed = _salvage_tag(tag, paint)
            if salvaged and _tag_parses(salvaged, namespaces):
                out.append(salvaged)
                if not closed:
                    stack.append(_NAME.match(salvaged).group(1))
            break
        if tag.startswith(("<!--", "<?", "<!")):
            continue  # comments, processing instructions, declarations: never needed
        name = _NAME.match(tag)
        if not name:
            repaired = True
            continue
        name = name.group(1)
        if tag.startswith("</"):
            if name in stack:
                while stack[-1] != name:
                    out.append(f"</{stack.pop()}>")
                    repaired = True
                out.append(f"</{stack.pop()}>")
                if not stack:
                    break
            else:
                repaired = True  # a stray end tag
            continue
        if not _tag_parses(tag, namespaces):
            repaired = True
            continue
        out.append(tag)
        if name in GEOMETRY:
            paint = {k: v[1:-1] for k, v in _ATTR.findall(tag[len(name) + 1:]) if k in PAINT_PROPS}
        if not tag.endswith("/>"):
            stack.append(name)
    else:
        if body[pos:].strip():
            repaired = True  # trailing text that is not a tag (e.g. a cut entity)
    while stack:
        out.append(f"</{stack.pop()}>")
        repaired = True
    svg = "".join(out)
    try:
        stats = svg_stats(svg)
    except SVGError as e:
        raise SVGError(f"the repaired output is still not valid SVG ({e})") from None
    if stats["paths"] == 0:
        raise SVGError("the output draws nothing (no shape survived repair)")
    return svg, bool(repaired)


# ---- Validation ----

def validate_svg(text: str) -> list[str]:
    """Problems that keep `text` from being a valid, safe, standalone SVG ([] when none).

    Each message starts with a keyword: "parse", "root", "standalone", "empty", or one of
    UNSAFE ("raster", "script", "external", "handler", "foreign")."""
    try:
        root = parse_svg(text)
    except SVGError as e:
        return [f"parse: {e}"]
    if root is None or root.tag != "svg":
        return [f"root: the root element is <{getattr(root, 'tag', '?')}>, not <svg>"]
    problems = []
    head = text[text.find("<svg"):].split(">", 1)[0]
    if f'xmlns="{SVG_NS}"' not in head and f"xmlns='{SVG_NS}'" not in head:
        problems.append("standalone: the <svg> root has no xmlns (browsers will not show it as a file)")
    if not root.get("viewBox") and not (root.get("width") and root.get("height")):
        problems.append("standalone: no viewBox and no width/height: the drawing has no extent")
    if not any(el.tag in GEOMETRY for el in root.iter()):
        problems.append("empty: no drawable element (path, rect, circle, ...)")
    for el in root.iter():
        if el.tag == "image":
            problems.append("raster: an embedded or linked raster <image>")
        elif el.tag == "script":
            problems.append("script: a <script> element")
        elif el.tag == "foreignObject":
            problems.append("foreign: a <foreignObject> (HTML inside SVG)")
        for key, value in el.attrib.items():
            v = value.strip().lower()
            if key.lower().startswith("on"):
                problems.append(f"handler: event handler attribute {key}= on <{el.tag}>")
            elif v.startswith("data:") or "url(data:" in v.replace(" ", ""):
                problems.append(f"raster: a data: URI in {key}= on <{el.tag}>")
            elif (key == "href" and not v.startswith("#")) or re.search(r"url\(\s*['\"]?(?!#)", v):
                problems.append(f"external: a reference to {value[:60]!r} in {key}= on <{el.tag}>")
    if re.search(r"@import|javascript:", text, re.IGNORECASE):
        problems.append("external: CSS @import or a javascript: URL")
    return list(dict.fromkeys(problems))


def is_unsafe(problems: list[str]) -> bool:
    """Whether validate_svg's problems include content that must be removed (not just fixed)."""
    return any(p.split(":", 1)[0] in UNSAFE for p in problems)


def sanitize_svg(text: str, size: int, precision: int = 1) -> str:
    """Rebuild through `normalize_svg`, which drops scripts, rasters, handlers and external
    references (and flattens shapes into paths in a `0 0 size size` viewBox)."""
    return normalize_svg(text, size=size, precision=precision)


def is_empty(svg: str, size: int = 64) -> bool:
    """True when `svg` draws nothing visible: unreadable, no shapes, or a blank white rendering."""
    try:
        if svg_stats(svg)["paths"] == 0:
            return True
        return bool((rasterize_svg(svg, size) >= 250).all())
    except SVGError:
        return True


def viewbox_of(svg: str) -> tuple[float, float, float, float] | None:
    m = re.search(r"""<svg\b[^>]*?\sviewBox\s*=\s*["']([^"']*)["']""", svg)
    nums = [float(x) for x in re.findall(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", m.group(1))] if m else []
    return tuple(nums) if len(nums) == 4 else None  # type: ignore[return-value]


def set_root_attributes(svg: str, **attrs: str | None) -> str:
    """Set (or replace; None removes) attributes of the root <svg> tag."""
    m = re.search(r"<svg\b[^>]*>", svg)
    tag = m.group()
    closing = "/>" if tag.endswith("/>") else ">"
    inner = tag[:-len(closing)]
    for key, value in attrs.items():
        pattern = re.compile(rf"""\s{re.escape(key)}\s*=\s*("[^"]*"|'[^']*')""")
        inner = pattern.sub("", inner)
        if value is not None:
            inner += f' {key}="{value}"'
    return svg[:m.start()] + inner + closing + svg[m.end():]
