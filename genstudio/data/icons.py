"""SVG icons from npm packages (~50k): normalised, rendered once to vet them, deduplicated.

`prepare("icons")` runs `npm install --ignore-scripts` into a scratch folder inside the build,
reads each package's SVGs and its per-icon metadata (names, tags, categories) into a short
text description for text conditioning, normalises every SVG with `formats.svg.normalize_svg`
(viewBox 0 0 256 256, flat absolute paths), drops those that fail to normalise or render
blank, and keeps one copy of each distinct drawing. Options: `sets="tabler,lucide"`,
`limit_per_set=50` for quick builds, `packages_dir=` to read an existing node_modules tree.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import unicodedata
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .npm import npm_install
from .registry import BuildLog, DataError, register_source
from genstudio.formats.svg import SVGError, normalize_svg, rasterize_svg, svg_stats

# One icon of a package: (file-safe name, svg text, tags, extra metadata). Two optional extra
# keys shape the text description and are not stored: "label" (the human name, default: the
# name's words) and "kind" (default: the set's kind, e.g. "outline icon").
Icon = tuple[str, str, list[str], dict]


@dataclass(frozen=True)
class IconSet:
    package: str
    licence: str  # SPDX id of the artwork
    kind: str     # what the drawings are, for the text description
    read: Callable[[Path], Iterator[Icon]]


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _svgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.svg")) if folder.is_dir() else []


# ---- Package readers (layouts as published on npm, checked against the installed trees) ----

def _read_tabler(root: Path) -> Iterator[Icon]:
    meta = _json(root / "icons.json") or {}
    for style in ("outline", "filled"):
        for f in _svgs(root / "icons" / style):
            m = meta.get(f.stem, {})
            tags = ([m["category"]] if m.get("category") else []) + list(m.get("tags", []))
            name = f.stem if style == "outline" else f"{f.stem}-filled"
            yield name, f.read_text(encoding="utf-8"), tags, {"style": style, "label": f.stem,
                                                              "kind": f"{style} icon"}


def _read_lucide(root: Path) -> Iterator[Icon]:
    tags = _json(root / "tags.json") or {}
    for f in _svgs(root / "icons"):
        yield f.stem, f.read_text(encoding="utf-8"), list(tags.get(f.stem, [])), {}


def _read_mdi(root: Path) -> Iterator[Icon]:
    meta = {m["name"]: m for m in (_json(root / "meta.json") or [])}
    for f in _svgs(root / "svg"):
        m = meta.get(f.stem, {})
        yield f.stem, f.read_text(encoding="utf-8"), list(m.get("tags", [])) + list(m.get("aliases", [])), {}


def _read_bootstrap(root: Path) -> Iterator[Icon]:
    for f in _svgs(root / "icons"):
        yield f.stem, f.read_text(encoding="utf-8"), [], {}


def _read_simple(root: Path) -> Iterator[Icon]:
    data = _json(root / "data" / "simple-icons.json") or []
    if isinstance(data, dict):  # older releases wrapped the list: {"icons": [...]}
        data = data.get("icons", [])
    by_slug = {d.get("slug") or re.sub(r"[^a-z0-9]", "", d.get("title", "").lower()): d for d in data}
    for f in _svgs(root / "icons"):
        d = by_slug.get(f.stem, {})
        aliases = d.get("aliases", {}) if isinstance(d.get("aliases"), dict) else {}
        tags = list(aliases.get("aka", []))
        extra = {"title": d["title"], "label": d["title"]} if d.get("title") else {}
        if d.get("hex"):
            extra["hex"] = "#" + d["hex"].lower()
        yield f.stem, f.read_text(encoding="utf-8"), tags, extra


def _read_heroicons(root: Path) -> Iterator[Icon]:
    for px, style in (("24", "outline"), ("24", "solid"), ("20", "solid"), ("16", "solid")):
        for f in _svgs(root / px / style):
            yield (f"{f.stem}-{style}-{px}", f.read_text(encoding="utf-8"), [],
                   {"style": style, "label": f.stem, "kind": f"{style} icon"})


def _phosphor_meta(root: Path) -> dict[str, list[str]]:
    """name -> categories + tags, read from the ES module that ships the icon list (no node needed)."""
    js_path = root / "dist" / "index.mjs"
    if not js_path.exists():
        return {}
    js = js_path.read_text(encoding="utf-8")
    enums: dict[str, dict[str, str]] = {}
    for var, body in re.findall(r"(\w+) = /\* @__PURE__ \*/ \(\(\w\) => \((.*?), \w\)\)", js):
        enums[var] = dict(re.findall(r"\w\.(\w+) = \"([^\"]*)\"", body))
    meta = {}
    for block in re.split(r"\n\s*\{\s*\n", js)[1:]:
        name = re.search(r'name: "([^"]+)"', block)
        if not name:
            continue
        cats = re.search(r"categories: \[([^\]]*)\]", block)
        tags = re.search(r"tags: \[([^\]]*)\]", block)
        words = []
        for var, member in re.findall(r"(\w+)\.(\w+)", cats.group(1) if cats else ""):
            words.append(enums.get(var, {}).get(member, member.lower()))
        words += [t for t in re.findall(r'"([^"]*)"', tags.group(1) if tags else "") if not t.startswith("*")]
        meta[name.group(1)] = words
    return meta


def _read_phosphor(root: Path) -> Iterator[Icon]:
    meta = _phosphor_meta(root)
    for weight in ("regular", "thin", "light", "bold", "fill", "duotone"):
        for f in _svgs(root / "assets" / weight):
            base = f.stem if weight == "regular" else f.stem.removesuffix(f"-{weight}")
            yield (f.stem, f.read_text(encoding="utf-8"), meta.get(base, []),
                   {"style": weight, "label": base, "kind": f"{weight} icon"})


def emoji_label(codepoints: str) -> str:
    """'1f1e6-1f1e8' -> 'flag ac'; '1f600' -> 'grinning face' (Unicode names; '' if unknown)."""
    try:
        cps = [int(c, 16) for c in codepoints.split("-")]
    except ValueError:
        return ""
    regional = [chr(c - 0x1F1E6 + ord("a")) for c in cps if 0x1F1E6 <= c <= 0x1F1FF]
    if regional:
        return "flag " + "".join(regional)
    names = [unicodedata.name(chr(c), "").lower() for c in cps if c not in (0x200D, 0xFE0F, 0x20E3)]
    return " ".join(n for n in names if n)


def _read_twemoji(root: Path) -> Iterator[Icon]:
    for f in _svgs(root):
        label = emoji_label(f.stem)
        yield f.stem, f.read_text(encoding="utf-8"), [], {"label": label} if label else {}


def _read_openmoji(root: Path) -> Iterator[Icon]:
    meta = {m["hexcode"]: m for m in (_json(root / "data" / "openmoji.json") or [])}
    for f in _svgs(root / "color" / "svg"):
        m = meta.get(f.stem, {})
        tags = [t.strip() for key in ("tags", "openmoji_tags") for t in str(m.get(key) or "").split(",")]
        extra = {"group": m["group"]} if m.get("group") else {}
        label = m.get("annotation") or emoji_label(f.stem)
        if label:
            extra["label"] = label
        yield f.stem.lower(), f.read_text(encoding="utf-8"), tags, extra


def iconify_svg(data: dict, name: str) -> str:
    """One icon of an Iconify JSON set as a standalone SVG (its body in the icon's or the set's viewBox)."""
    icon, w, h = data["icons"][name], data.get("width", 16), data.get("height", 16)
    vb = f'{icon.get("left", 0)} {icon.get("top", 0)} {icon.get("width", w)} {icon.get("height", h)}'
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{vb}">{icon["body"]}</svg>'


def _read_iconify(root: Path) -> Iterator[Icon]:
    data = _json(root / "icons.json") or {}
    for name in sorted(data.get("icons", {})):
        yield name, iconify_svg(data, name), [], {}


ICON_SETS: dict[str, IconSet] = {
    "tabler": IconSet("@tabler/icons", "MIT", "icon", _read_tabler),
    "lucide": IconSet("lucide-static", "ISC", "outline icon", _read_lucide),
    "mdi": IconSet("@mdi/svg", "Apache-2.0", "filled icon", _read_mdi),
    "bootstrap": IconSet("bootstrap-icons", "MIT", "icon", _read_bootstrap),
    "simple-icons": IconSet("simple-icons", "CC0-1.0", "brand logo", _read_simple),
    "heroicons": IconSet("heroicons", "MIT", "icon", _read_heroicons),
    "phosphor": IconSet("@phosphor-icons/core", "MIT", "icon", _read_phosphor),
    # The npm wrapper is MIT; the Twemoji artwork itself is CC-BY-4.0 (Twitter / jdecked).
    "twemoji": IconSet("@twemoji/svg", "CC-BY-4.0", "colour emoji", _read_twemoji),
    "openmoji": IconSet("openmoji", "CC-BY-SA-4.0", "colour emoji", _read_openmoji),
    "game-icons": IconSet("@iconify-json/game-icons", "CC-BY-3.0", "game icon", _read_iconify),
}


def describe(label: str, kind: str, tags: list[str], max_tags: int = 8) -> str:
    """Short text for conditioning: 'arrow left, outline icon: arrows, direction, back'."""
    words = re.sub(r"[-_\s]+", " ", label).strip()
    seen, extra = {words.lower(), kind.lower()}, []
    for t in tags:
        t = re.sub(r"\s+", " ", str(t).replace("_", " ")).strip().lower()
        if t and t not in seen:
            seen.add(t)
            extra.append(t)
    text = f"{words}, {kind}"
    return text + (": " + ", ".join(extra[:max_tags]) if extra else "")


def select_sets(sets, table: dict[str, IconSet] | None = None, refusal: str = "unknown icon set(s) {}") -> list[str]:
    """The `sets` option ("a,b", a list, or None = every set of `table`) -> set names; names not in the
    table raise a DataError whose message starts with `refusal` (formatted with those names)."""
    table = ICON_SETS if table is None else table
    if sets is None:
        return list(table)
    names = [s.strip() for s in (sets.split(",") if isinstance(sets, str) else sets) if s.strip()]
    unknown = [s for s in names if s not in table]
    if unknown:
        raise DataError(f"{refusal.format(unknown)}; available: {', '.join(table)}")
    return names


def _npm_install(scratch: Path, packages: list[str], log: BuildLog) -> Path:
    nm = npm_install(scratch, packages, log, name="genstudio-icons-scratch")
    for pkg in packages:
        d = nm / pkg
        mb = sum(p.stat().st_size for p in d.rglob("*") if p.is_file()) / 1e6 if d.exists() else 0
        log(f"  {pkg}: {_version(d)}, {mb:.1f} MB")
    return nm


def _version(pkg_dir: Path) -> str:
    return (_json(pkg_dir / "package.json") or {}).get("version", "unknown")


@register_source("icons", "SVG icons from npm (tabler, lucide, mdi, bootstrap, simple-icons, heroicons, "
                 "phosphor, twemoji, openmoji, game-icons), normalised to 256x256 paths",
                 licence="per item (MIT, ISC, Apache-2.0, CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, CC-BY-3.0)",
                 requires=("npm",))
def build_icons(out: Path, log: BuildLog, sets=None, limit_per_set: int | None = None,
                packages_dir: str | Path | None = None, size: int = 256, precision: int = 1,
                check_size: int = 32) -> Iterator[dict]:
    chosen = select_sets(sets)
    try:
        import cairosvg  # noqa: F401
        import svgelements  # noqa: F401
    except ImportError as e:
        raise DataError(f"building icons needs the svg extra ({e.name} is missing): "
                        "pip install 'genstudio[svg]'") from None
    yield from build_from_packages(out, log, {s: ICON_SETS[s] for s in chosen}, packages_dir, size, precision,
                                   check_size, limit_per_set)


def build_from_packages(out: Path, log: BuildLog, specs: dict[str, IconSet], packages_dir: str | Path | None,
                        size: int = 256, precision: int = 1, check_size: int = 32,
                        limit_per_set: int | None = None) -> Iterator[dict]:
    """`build_sets` on an existing node_modules tree (`packages_dir`), else on the sets' packages npm-installed
    into a scratch folder of the build, removed afterwards (the packages are not part of the dataset)."""
    scratch = None
    if packages_dir is not None:
        nm = Path(packages_dir)
        nm = nm / "node_modules" if (nm / "node_modules").is_dir() else nm
        if not nm.is_dir():
            raise DataError(f"packages_dir {packages_dir} is not a node_modules folder")
        log(f"reading icon packages from {nm}")
    else:
        scratch = out / "_npm"
        nm = _npm_install(scratch, sorted({spec.package for spec in specs.values()}), log)
    try:
        yield from build_sets(out, log, specs, nm, size, precision, check_size, limit_per_set)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def build_sets(out: Path, log: BuildLog, specs: dict[str, IconSet], nm: Path, size: int = 256, precision: int = 1,
               check_size: int = 32, limit_per_set: int | None = None) -> Iterator[dict]:
    """Read each set's icons from the node_modules tree `nm`, normalise, vet (renders, not blank), dedupe
    (by the normalised drawing, across all sets of this build) and yield one manifest item per kept icon."""
    seen: dict[str, str] = {}  # sha1 of the normalised SVG -> first id with that drawing
    ids: set[str] = set()
    totals = Counter()
    for set_name in specs:
        spec = specs[set_name]
        root = nm / spec.package
        if not root.is_dir():
            log(f"{set_name}: package {spec.package} not found under {nm}; skipped")
            continue
        package = f"{spec.package}@{_version(root)}"
        (out / "svg" / set_name).mkdir(parents=True, exist_ok=True)
        stats, reasons = Counter(), Counter()
        for name, svg, tags, extra in spec.read(root):
            if limit_per_set is not None and stats["kept"] >= limit_per_set:
                break
            stats["read"] += 1
            name = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.") or "icon"
            item_id = f"{set_name}/{name}"
            if item_id in ids:  # two files whose names sanitise alike: keep the first
                stats["duplicate"] += 1
                continue
            try:
                norm = normalize_svg(svg, size=size, precision=precision)
                if rasterize_svg(norm, check_size).min() == 255:  # nothing on the white canvas
                    raise SVGError("renders blank")
            except Exception as e:  # one odd file must not stop a 50k-icon build
                stats["failed"] += 1
                reason = str(e) if isinstance(e, SVGError) else f"{type(e).__name__}: {e}"
                reasons[reason[:80]] += 1
                if stats["failed"] <= 3:
                    log(f"  {item_id}: dropped ({reason[:160]})")
                continue
            digest = hashlib.sha1(norm.encode("utf-8")).hexdigest()
            if digest in seen:
                stats["duplicate"] += 1
                continue
            label, kind = extra.pop("label", name), extra.pop("kind", spec.kind)
            seen[digest] = item_id
            ids.add(item_id)
            rel = f"svg/{set_name}/{name}.svg"
            (out / rel).write_text(norm, encoding="utf-8")
            stats["kept"] += 1
            st = svg_stats(norm)
            yield {"id": item_id, "path": rel, "set": set_name, "name": name,
                   "text": describe(label, kind, tags), "tags": [t for t in tags if t][:16],
                   "licence": spec.licence, "package": package, "bytes": st["bytes"],
                   "paths": st["paths"], "commands": st["commands"], "sha1": digest[:16], **extra}
        totals.update(stats)
        top = "; ".join(f"{n}x {r}" for r, n in reasons.most_common(3))
        log(f"{set_name} ({package}, {spec.licence}): read {stats['read']}, kept {stats['kept']}, "
            f"failed {stats['failed']}, duplicates {stats['duplicate']}" + (f" [{top}]" if top else ""))
    log(f"icons: kept {totals['kept']} of {totals['read']} "
        f"(failed {totals['failed']}, duplicates {totals['duplicate']})")


# ---- Training view ----

class IconRasterDataset:
    """Icons rasterised on demand (LRU-cached) as float tensors (3, size, size) in [-1, 1].

    Items come from `load_manifest("icons", split)`. `augment=True` shrinks (80-100 %) and shifts
    the drawing on its white canvas; it never flips, since icons such as arrows would change meaning.
    """

    def __init__(self, items: list[dict], size: int = 64, augment: bool = False, cache_size: int = 8192,
                 root: str | Path | None = None):
        if not items:
            raise DataError("IconRasterDataset got no items; run `genstudio data prepare icons`")
        self.items, self.size, self.augment = list(items), size, augment
        self.root = Path(root) if root is not None else None
        self.cache_size = cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def _path(self, item: dict) -> Path:
        p = Path(item["path"])
        return self.root / p if self.root is not None and not p.is_absolute() else p

    def _render(self, k: int) -> tuple[np.ndarray, str]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        svg = self._path(self.items[k]).read_text(encoding="utf-8")
        value = (rasterize_svg(svg, self.size), svg)
        self._cache[k] = value
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def _jitter(self, img: np.ndarray) -> np.ndarray:
        from PIL import Image
        rng = np.random.default_rng()
        side = max(8, int(round(self.size * rng.uniform(0.8, 1.0))))
        x, y = rng.integers(0, self.size - side + 1, size=2)
        canvas = Image.new("RGB", (self.size, self.size), (255, 255, 255))
        canvas.paste(Image.fromarray(img).resize((side, side), Image.BICUBIC), (int(x), int(y)))
        return np.asarray(canvas)

    def __getitem__(self, k: int) -> dict:
        import torch
        img, svg = self._render(k)
        if self.augment:
            img = self._jitter(img)
        image = torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()
        return {"image": image, "text": self.items[k]["text"], "svg": svg}
