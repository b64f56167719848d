"""SVG normalisation (genstudio.formats.svg) and the npm icon source, on a tiny hand-made package tree."""
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cairosvg")
pytest.importorskip("svgelements")

from genstudio.data import DataError, load_manifest, prepare  # noqa: E402
from genstudio.data.icons import (ICON_SETS, IconRasterDataset, _phosphor_meta, describe,  # noqa: E402
                                  emoji_label)
from genstudio.formats.svg import SVGError, normalize_svg, rasterize_svg, svg_stats  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "npm_icons"
NS = "{http://www.w3.org/2000/svg}"
PREFIX = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256" width="256" height="256">'


def paths_of(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    assert {el.tag for el in root.iter()} <= {NS + "svg", NS + "path"}
    return root.findall(NS + "path")


def numbers(d: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", d)]


# ---- normalize_svg ----

def test_viewbox_convention_single_line():
    out = normalize_svg('<svg xmlns="http://www.w3.org/2000/svg" width="10mm" height="5mm">'
                        '<rect width="10" height="5"/></svg>')
    assert out.startswith(PREFIX) and out.endswith("</svg>") and "\n" not in out
    small = normalize_svg('<svg viewBox="0 0 24 24"><rect width="24" height="24"/></svg>', size=64)
    root = ET.fromstring(small)
    assert (root.get("viewBox"), root.get("width"), root.get("height")) == ("0 0 64 64", "64", "64")
    assert numbers(root.find(NS + "path").get("d")) == [0, 0, 64, 0, 64, 64, 0, 64]


def test_strips_metadata_ids_classes_and_foreign_attributes():
    src = """<?xml version="1.0"?>
    <svg xmlns="http://www.w3.org/2000/svg" xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape"
         xmlns:sodipodi="http://sodipodi.sourceforge.net/DTD/sodipodi-0.dtd" viewBox="0 0 24 24" id="root"
         class="icon" data-name="x" inkscape:version="1.2">
      <!-- a comment --><title>Title</title><desc>Description</desc>
      <metadata><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></metadata>
      <sodipodi:namedview pagecolor="#fff"/>
      <style>.red { fill: #ff0000 }</style>
      <g id="layer1" inkscape:label="Layer 1" aria-label="g">
        <path id="p1" class="red" data-foo="bar" sodipodi:nodetypes="cc" d="M2 2H22V22Z"/>
      </g>
    </svg>"""
    out = normalize_svg(src)
    for banned in ("comment", "Title", "Description", "metadata", "rdf", "id=", "class=", "data-",
                   "inkscape", "sodipodi", "aria", "style", "namedview"):
        assert banned not in out, banned
    (path,) = paths_of(out)
    assert path.get("fill") == "#ff0000"  # the class rule was applied before the class went


@pytest.mark.parametrize("payload", [
    '<script>alert(1)</script><path d="M0 0H24V24Z"/>',
    '<path d="M0 0H24V24Z" onclick="steal()" onmouseover="x()"/>',
    '<image href="data:image/png;base64,iVBORw0KGgo=" width="24" height="24"/><path d="M0 0H24V24Z"/>',
    '<image xlink:href="https://example.com/x.png" width="9" height="9"/><path d="M0 0H24V24Z"/>',
    '<foreignObject width="24" height="24"><div xmlns="http://www.w3.org/1999/xhtml">hi</div>'
    '</foreignObject><path d="M0 0H24V24Z"/>',
    '<a href="javascript:alert(1)"><path d="M0 0H24V24Z"/></a>',
    '<use href="https://example.com/sprite.svg#icon"/><path d="M0 0H24V24Z"/>',
])
def test_active_content_and_external_references_are_removed(payload):
    src = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           f'viewBox="0 0 24 24" onload="alert(2)">{payload}</svg>')
    out = normalize_svg(src)
    for banned in ("script", "alert", "onload", "onclick", "image", "data:", "http", "foreignObject",
                   "javascript", "href", "div"):
        assert banned not in out.replace("http://www.w3.org/2000/svg", ""), banned
    assert len(paths_of(out)) == 1


@pytest.mark.parametrize("src", [
    # billion laughs
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><svg xmlns="http://www.w3.org/2000/svg"><text>&c;</text></svg>',
    # external entity (XXE)
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 1"><desc>&x;</desc></svg>',
    # parameter entity / internal subset without ENTITY keyword in the body
    '<!DOCTYPE svg [<!ELEMENT svg ANY>]><svg xmlns="http://www.w3.org/2000/svg"/>',
    # a <use> cycle and a <use> bomb (exponential expansion)
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><g id="a"><use href="#a"/></g></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><defs><path id="p0" d="M0 0H1V1Z"/>'
    + "".join(f'<g id="p{i}">' + f'<use href="#p{i - 1}"/>' * 10 + "</g>" for i in range(1, 7))
    + '</defs><use href="#p6"/></svg>',
    # not XML, not SVG, nothing drawn, no extent, unflattenable features
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><path d="M0 0',
    '<html><body/></html>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><path d="M0 0H9V9Z" fill="none"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0H9V9Z"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><text x="1" y="5">hi</text></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9"><clipPath id="c"><rect width="4" height="4"/>'
    '</clipPath><path clip-path="url(#c)" d="M0 0H9V9Z"/></svg>',
    # nesting deep enough to exhaust recursion
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 9 9">' + "<g>" * 5000 + '<path d="M0 0H9V9Z"/>'
    + "</g>" * 5000 + "</svg>",
])
def test_malicious_or_unsupported_input_raises(src):
    with pytest.raises(SVGError):
        normalize_svg(src)


def test_rasterize_refuses_entities_and_plain_doctype_is_accepted():
    with pytest.raises(SVGError):
        rasterize_svg('<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]><svg>&x;</svg>')
    illustrator = ('<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
                   '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
                   '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 2"><rect width="1" height="1"/></svg>')
    assert numbers(paths_of(normalize_svg(illustrator))[0].get("d")) == [0, 0, 128, 0, 128, 128, 0, 128]


def test_every_shape_becomes_an_absolute_path():
    src = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100" stroke="#123456">
      <rect x="10" y="10" width="20" height="10" rx="2"/><circle cx="50" cy="50" r="10"/>
      <ellipse cx="50" cy="80" rx="10" ry="5"/><line x1="0" y1="0" x2="100" y2="100"/>
      <polyline points="0,100 50,90 100,100" fill="none"/><polygon points="60,10 90,10 75,30"/>
      <path d="m10 60 l5 5 h10 v-10 q5 5 10 0 t10 0 c1 1 2 2 3 3 s4 4 5 5 a5 5 0 0 1 -5 5 z"/></svg>"""
    paths = paths_of(normalize_svg(src))
    assert len(paths) == 7
    for p in paths:
        assert set(re.findall(r"[A-Za-z]", p.get("d"))) <= set("MLQCAZ")
        assert p.get("stroke") == "#123456"


def test_coordinates_are_rounded_to_precision():
    src = '<svg viewBox="0 0 3 7"><path d="M0.123456 1.98765 C 0.3 0.1 2.71828 3.14159 2.9 6.9Z"/></svg>'
    for precision in (0, 1, 2):
        d = paths_of(normalize_svg(src, precision=precision))[0].get("d")
        decimals = [len(x.split(".")[1]) for x in re.findall(r"\d+\.\d+", d)]
        assert all(n <= precision for n in decimals)
        if precision == 2:
            assert max(decimals) == 2


def test_transforms_viewbox_and_stroke_width_are_applied():
    src = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><g transform="translate(5 5)">'
           '<rect width="5" height="5" fill="none" stroke="red" stroke-width="0.5" '
           'stroke-linecap="round" stroke-linejoin="bevel" stroke-dasharray="1 1"/></g></svg>')
    (p,) = paths_of(normalize_svg(src))
    assert numbers(p.get("d")) == [128, 128, 256, 128, 256, 256, 128, 256]
    assert (p.get("fill"), p.get("stroke"), p.get("stroke-width")) == ("none", "#ff0000", "12.8")
    assert (p.get("stroke-linecap"), p.get("stroke-linejoin"), p.get("stroke-dasharray")) == \
        ("round", "bevel", "25.6 25.6")


def test_paint_properties_colours_and_opacity():
    src = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8" color="red">
      <path d="M0 0H4V4Z" fill="currentColor"/>
      <g opacity="0.5"><path d="M4 4H8V8Z" opacity="0.5" fill="#0f0" fill-rule="evenodd"/></g>
      <path d="M0 4H4V8Z" style="fill:rgb(0,0,255);fill-opacity:0.25"/>
      <path d="M4 0H8V4Z" fill="none" stroke="currentColor"/></svg>"""
    a, b, c, d = paths_of(normalize_svg(src))
    assert a.get("fill") is None  # currentColor -> black, the default: left out
    assert (b.get("fill"), b.get("fill-rule"), b.get("opacity")) == ("#00ff00", "evenodd", "0.25")
    assert (c.get("fill"), c.get("fill-opacity")) == ("#0000ff", "0.25")
    assert (d.get("fill"), d.get("stroke")) == ("none", "#000000")


def test_gradients_become_their_mean_colour_and_inherit_is_ignored():
    src = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4" fill="#00f"><defs>'
           '<linearGradient id="g"><stop offset="0" stop-color="#000"/><stop offset="1" stop-color="#fff"'
           ' stop-opacity="0"/></linearGradient></defs><rect width="4" height="4" fill="url(#g)"/>'
           '<g><path d="M0 0H1V1Z" fill="inherit"/></g>'
           '<switch><path d="M0 0H2V2Z"/><path d="M0 0H3V3Z"/></switch></svg>')
    a, b, c = paths_of(normalize_svg(src))
    assert (a.get("fill"), a.get("fill-opacity")) == ("#808080", "0.5")
    assert b.get("fill") == "#0000ff" and len(paths_of(normalize_svg(src))) == 3


def test_use_is_inlined_with_its_offset():
    src = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           'viewBox="0 0 16 16">'
           '<defs><rect id="r" width="4" height="4"/></defs>'
           '<use xlink:href="#r"/><use href="#r" x="8" y="8" fill="#abcdef"/></svg>')
    a, b = paths_of(normalize_svg(src, size=16))
    assert numbers(a.get("d")) == [0, 0, 4, 0, 4, 4, 0, 4]
    assert numbers(b.get("d")) == [8, 8, 12, 8, 12, 12, 8, 12] and b.get("fill") == "#abcdef"


def test_normalisation_is_idempotent_and_deterministic():
    src = (FIXTURE / "openmoji" / "color" / "svg" / "1F642.svg").read_text()
    once = normalize_svg(src)
    assert normalize_svg(src) == once
    assert normalize_svg(once) == once


def test_svg_stats():
    out = normalize_svg('<svg viewBox="0 0 2 2"><rect width="1" height="1"/><path d="M0 0L2 2"'
                        ' stroke="black"/></svg>')
    assert svg_stats(out) == {"paths": 2, "commands": 7, "bytes": len(out.encode())}


def fixture_svgs() -> list[Path]:
    # broken.svg does not parse; shield.svg carries an <image> that normalisation removes
    return sorted(p for p in FIXTURE.rglob("*.svg") if p.name not in ("broken.svg", "shield.svg"))


@pytest.mark.parametrize("path", fixture_svgs(), ids=lambda p: p.name)
def test_rasterised_normalised_svg_matches_the_original(path):
    src = path.read_text()
    a = rasterize_svg(src, 64).astype(np.float32)
    b = rasterize_svg(normalize_svg(src), 64).astype(np.float32)
    assert a.shape == b.shape == (64, 64, 3)
    assert np.ptp(a) > 0  # the comparison means something only on a visible drawing
    assert np.abs(a - b).mean() < 2.0  # out of 255


def test_rasterize_flattens_alpha_and_reports_failure():
    img = rasterize_svg('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 2 2"><rect width="1" height="2"'
                        ' fill="#f00"/></svg>', 8, background="white")
    assert img.dtype == np.uint8 and img.shape == (8, 8, 3)
    assert tuple(img[4, 1]) == (255, 0, 0) and tuple(img[4, 6]) == (255, 255, 255)
    with pytest.raises(SVGError):
        rasterize_svg("<svg", 8)


# ---- icon source ----

def test_text_helpers():
    assert describe("arrow-left", "outline icon", ["Arrows", "direction", "arrows"]) == \
        "arrow left, outline icon: arrows, direction"
    assert emoji_label("1f600") == "grinning face"
    assert emoji_label("1f1e6-1f1e8") == "flag ac"
    assert _phosphor_meta(FIXTURE / "@phosphor-icons" / "core") == {"leaf": ["nature", "plant", "tree"]}


def build(root: Path, **options) -> list[dict]:
    prepare("icons", root=root, packages_dir=FIXTURE, quiet=True, force=True, **options)
    return load_manifest("icons", root=root)


def test_build_from_fixture_tree(tmp_path, no_npm_check):
    items = build(tmp_path / "a")
    ids = {it["id"] for it in items}
    assert "tabler/broken" not in ids  # fails to normalise: dropped
    assert "lucide/circle-outline" not in ids and "tabler/circle" in ids  # same drawing: kept once
    assert {"tabler/square", "tabler/square-filled", "lucide/shield", "mdi/plus-box",
            "simple-icons/fixtureco", "heroicons/arrow-right-outline-24", "phosphor/leaf",
            "phosphor/leaf-bold", "twemoji/1f7e2", "openmoji/1f642", "game-icons/shield-tri", "game-icons/gem-dot"} <= ids
    by_id = {it["id"]: it for it in items}
    for it in items:
        assert {"id", "path", "split", "licence", "set", "name", "text", "bytes", "package"} <= set(it)
        assert it["licence"] == ICON_SETS[it["set"]].licence
        assert it["split"] in ("train", "val", "test")
        text = Path(it["path"]).read_text()
        assert text.startswith(PREFIX) and it["bytes"] == len(text.encode())
    assert by_id["openmoji/1f642"]["text"].startswith("slightly smiling face, colour emoji: face, smile")
    assert by_id["simple-icons/fixtureco"]["hex"] == "#ff6600"
    assert by_id["tabler/square"]["text"] == "square, outline icon: shapes, box, rectangle"
    assert "script" not in Path(by_id["lucide/shield"]["path"]).read_text()
    info = json.loads((tmp_path / "a" / "icons" / "info.json").read_text())
    assert info["items"] == len(items) and info["licences"]["CC-BY-SA-4.0"] == 1
    assert not (tmp_path / "a" / "icons" / "_npm").exists()


def test_splits_and_manifest_are_deterministic_across_builds(tmp_path, no_npm_check):
    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    strip = lambda items: [{k: v for k, v in it.items() if k != "path"} for it in items]  # noqa: E731
    assert strip(a) == strip(b)
    assert [Path(x["path"]).read_text() for x in a] == [Path(x["path"]).read_text() for x in b]


def test_build_options_restrict_sets_and_counts(tmp_path, no_npm_check):
    items = build(tmp_path, sets="tabler,game-icons", limit_per_set=1)
    assert sorted(it["set"] for it in items) == ["game-icons", "tabler"]
    with pytest.raises(DataError, match="unknown icon set"):
        build(tmp_path, sets="nope")


def test_icon_raster_dataset(tmp_path, no_npm_check):
    items = build(tmp_path, sets="tabler")
    ds = IconRasterDataset(items, size=32)
    x = ds[0]
    assert x["image"].shape == (3, 32, 32) and x["image"].dtype.is_floating_point
    assert -1.0 <= float(x["image"].min()) < float(x["image"].max()) <= 1.0
    assert x["text"] == items[0]["text"] and x["svg"].startswith("<svg")
    assert ds[0]["image"].equal(x["image"])  # served from the cache, unchanged
    aug = IconRasterDataset(items, size=32, augment=True)[0]["image"]
    assert aug.shape == (3, 32, 32) and float(aug.max()) <= 1.0
    with pytest.raises(DataError):
        IconRasterDataset([])


# ---- the iconify source (@iconify/json, only the sets DATA.md allows for training) ----

def test_iconify_names_split_into_label_style_and_size():
    from genstudio.data.iconify import split_name
    assert split_name("rocket-24-filled", "fluent") == ("rocket", "filled", "24")
    assert split_name("outline-local-airport", "ic") == ("local airport", "outline", "")
    assert split_name("auto-delete-outline-rounded", "material-symbols") == ("auto delete", "outline", "")
    assert split_name("bxs-tree", "bx") == ("tree", "filled", "")
    assert split_name("traffic-light", "carbon") == ("traffic light", "", "")  # no style words in carbon names
    assert split_name("line", "mingcute") == ("line", "", "")                   # a label is never emptied


def test_iconify_build_keeps_one_size_and_tone_and_refuses_reserved_sets(tmp_path, no_npm_check):
    prepare("iconify", root=tmp_path, packages_dir=FIXTURE, quiet=True, sets="fluent,noto")
    by_id = {it["id"]: it for it in load_manifest("iconify", root=tmp_path)}
    assert set(by_id) == {"fluent/anchor-24-filled", "fluent/rocket-24-filled", "fluent/rocket-launch-24-regular",
                          "fluent/bar-24-regular", "noto/kite"}  # 20 px and the dark-skin-tone variant dropped
    assert by_id["fluent/anchor-24-filled"]["text"] == "anchor, filled icon"
    assert by_id["noto/kite"]["text"] == "kite, colour emoji: travel"
    assert by_id["noto/kite"]["licence"] == "Apache-2.0"
    assert Path(by_id["noto/kite"]["path"]).read_text().startswith(PREFIX)
    with pytest.raises(DataError, match="not allowed for training"):
        prepare("iconify", root=tmp_path, packages_dir=FIXTURE, quiet=True, force=True, sets="fluent,mdi")
