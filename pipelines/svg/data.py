"""StarVector's data side: image preprocessing, SVG training text, font glyphs, the training dataset.

- `preprocess_image` is the paper's: alpha flattened onto white, padded to a centred white
  square, resized (bicubic), normalised with the CLIP mean/std of the image encoder.
- `svg_to_training_text` re-normalises a dataset SVG to a small integer viewBox (128, no
  decimals), which roughly halves the sequence length of the 256 / 0.1 storage form.
- The SVG tokenizer (byte-level BPE with the reference's special tokens) is the core's:
  `genstudio.formats.svg_tokenizer`.
- The `glyphs` source outlines letters, digits and punctuation of the fonts installed here.
- `SVGImageDataset` pairs each rendering with its token ids: `<svg-start> <svg ...</svg> <svg-end>`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from genstudio.data.registry import BuildLog, DataError, register_source
from genstudio.formats.svg import SVGError, normalize_svg, rasterize_svg, svg_stats
from genstudio.formats.svg_tokenizer import special_token_ids
from genstudio.render import flatten_alpha, pad_square


# ---- Image preprocessing ----

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the reference's ImageTrainProcessor (OpenAI CLIP)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_image(image, size: int, mean: Sequence[float] = CLIP_MEAN,
                     std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """PIL image -> (3, size, size) float tensor: alpha on white, centred white square, bicubic, normalised."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        raise TypeError(f"preprocess_image expects a PIL image, got {type(image).__name__}")
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    w, h = image.size
    if w == 0 or h == 0:
        raise ValueError(f"image has no pixels ({w}x{h}): expected a non-empty image")
    image = pad_square(flatten_alpha(image))
    if max(w, h) != size:
        image = image.resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


# ---- SVG text ----

def svg_to_training_text(svg: str | bytes, size: int = 128, precision: int = 0) -> str:
    """The text the model learns: one line, viewBox `0 0 size size`, `precision` decimals.

    Raises SVGError when the SVG cannot be normalised."""
    return normalize_svg(svg, size=size, precision=precision)


def training_texts(svgs: Sequence[str], size: int = 128, precision: int = 0,
                   max_chars: int | None = None) -> list[str | None]:
    """`svg_to_training_text` over many SVGs; None for those that fail or whose source is longer
    than `max_chars` (a cheap bound that skips normalising drawings far over the token budget)."""
    out: list[str | None] = []
    for svg in svgs:
        if max_chars is not None and len(svg) > max_chars:
            out.append(None)
            continue
        try:
            out.append(svg_to_training_text(svg, size, precision))
        except SVGError:
            out.append(None)
    return out


# ---- Glyph source (fontTools) ----

DEJAVU_LICENCE = "Bitstream-Vera AND LicenseRef-DejaVu-public-domain"  # Debian's fonts-dejavu copyright
FONT_LICENCES = (("DejaVu", DEJAVU_LICENCE), ("STIX", "OFL-1.1"), ("cm", "LicenseRef-BaKoMa"))
EXCLUDED_FONTS = ("DejaVuMathTeXGyre",)  # a TeX Gyre (GUST licence) maths font
DEBIAN_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def glyph_codepoints() -> list[int]:
    """Printable ASCII (no space) and the Latin-1 letters."""
    return list(range(0x21, 0x7F)) + [c for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]


def font_dirs() -> list[Path]:
    dirs = [DEBIAN_FONT_DIR]
    spec = importlib.util.find_spec("matplotlib")  # found without importing it (slow)
    if spec is not None and spec.origin:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    return [d for d in dirs if d.is_dir()]


def font_files(fonts=None, dirs: Sequence[str | Path] | None = None) -> list[tuple[Path, str]]:
    """(font file, SPDX licence) for every known-licence TTF; `fonts` keeps the file stems that
    start with one of the given names (case-insensitive), e.g. "DejaVuSans,STIXGeneral"."""
    wanted = [f.strip().lower() for f in (fonts.split(",") if isinstance(fonts, str) else fonts or []) if f.strip()]
    out = []
    for d in (font_dirs() if dirs is None else [Path(x) for x in dirs]):
        for path in sorted(Path(d).glob("*.ttf")):
            licence = next((lic for prefix, lic in FONT_LICENCES if path.stem.startswith(prefix)), None)
            if licence is None or path.stem.startswith(EXCLUDED_FONTS):
                continue
            if wanted and not any(path.stem.lower().startswith(w) for w in wanted):
                continue
            out.append((path, licence))
    return out


def glyph_svg(font, glyph_name: str) -> str | None:
    """One glyph as an SVG path (y flipped) in a square around the em box; None if it has no outline."""
    from fontTools.pens.boundsPen import BoundsPen
    from fontTools.pens.svgPathPen import SVGPathPen
    from fontTools.pens.transformPen import TransformPen
    glyphs = font.getGlyphSet()
    glyph = glyphs[glyph_name]
    bounds = BoundsPen(glyphs)
    glyph.draw(bounds)
    if bounds.bounds is None:
        return None
    pen = SVGPathPen(glyphs)
    glyph.draw(TransformPen(pen, (1, 0, 0, -1, 0, 0)))
    x_min, y_min, x_max, y_max = bounds.bounds
    hhea = font["hhea"]
    # The em box (advance x ascent..descent) keeps relative sizes: a '.' stays small.
    left, right = min(0, x_min), max(glyph.width, x_max)
    top, bottom = -max(hhea.ascent, y_max), -min(hhea.descent, y_min)
    side = max(right - left, bottom - top)
    x0, y0 = (left + right - side) / 2, (top + bottom - side) / 2
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="{x0:g} {y0:g} {side:g} {side:g}">'
            f'<path d="{pen.getCommands()}"/></svg>')


@register_source("glyphs", "Font glyph outlines (printable ASCII + Latin-1 letters) from Debian's DejaVu "
                 "and matplotlib's bundled fonts, normalised to 256x256 paths",
                 licence=f"per item ({DEJAVU_LICENCE}; OFL-1.1; LicenseRef-BaKoMa)")
def build_glyphs(out: Path, log: BuildLog, fonts=None, limit: int | None = None, font_dirs=None,
                 size: int = 256, precision: int = 1, check_size: int = 32) -> Iterator[dict]:
    try:
        from fontTools import agl
        from fontTools.ttLib import TTFont
    except ImportError:
        raise DataError("building glyphs needs fontTools: pip install fonttools") from None
    logging.getLogger("fontTools").setLevel(logging.ERROR)  # old TeX fonts warn about their timestamps
    files = font_files(fonts, font_dirs)
    if not files:
        raise DataError(f"no fonts found for glyphs (fonts={fonts!r}); install Debian's fonts-dejavu-core "
                        "or matplotlib")
    seen: set[str] = set()
    kept = 0
    for path, licence in files:
        font = TTFont(str(path), lazy=True)
        name = font["name"].getDebugName(4) or path.stem
        cmap = font.getBestCmap() or {}
        stats = Counter()
        (out / "svg" / path.stem).mkdir(parents=True, exist_ok=True)
        for cp in glyph_codepoints():
            if limit is not None and kept >= limit:
                break
            glyph_name = cmap.get(cp)
            # TeX fonts map ASCII codes to other glyphs ('<' -> exclamdown): trust the glyph name.
            if glyph_name is None or agl.toUnicode(glyph_name) != chr(cp):
                stats["unmapped"] += 1
                continue
            try:
                raw = glyph_svg(font, glyph_name)
                if raw is None:
                    continue
                norm = normalize_svg(raw, size=size, precision=precision)
                if rasterize_svg(norm, check_size).min() == 255:
                    raise SVGError("renders blank")
            except Exception:  # one odd outline must not stop the build
                stats["failed"] += 1
                continue
            digest = hashlib.sha1(norm.encode("utf-8")).hexdigest()
            if digest in seen:  # DejaVu ships both in Debian and in matplotlib
                stats["duplicate"] += 1
                continue
            seen.add(digest)
            rel = f"svg/{path.stem}/u{cp:04x}.svg"
            (out / rel).write_text(norm, encoding="utf-8")
            st = svg_stats(norm)
            stats["kept"] += 1
            kept += 1
            yield {"id": f"glyphs/{path.stem}/u{cp:04x}", "path": rel, "set": "glyphs", "font": name,
                   "file": path.name, "char": chr(cp), "codepoint": cp,
                   "text": f"glyph {chr(cp)!r} (U+{cp:04X}) from {name}", "licence": licence,
                   "bytes": st["bytes"], "paths": st["paths"], "commands": st["commands"], "sha1": digest[:16]}
        log(f"{path.name} ({name}, {licence}): kept {stats['kept']}, duplicates {stats['duplicate']}, "
            f"failed {stats['failed']}, unmapped {stats['unmapped']}")
        if limit is not None and kept >= limit:
            break


# ---- Training view ----

class SVGImageDataset(torch.utils.data.Dataset):
    """(rendering, token ids) pairs; items longer than `max_tokens` are dropped up front.

    `items` are manifest rows (with "path", or the SVG itself under "svg"). Pass `texts` (from
    `training_texts`, aligned with items) to reuse training texts already computed. The image is
    the rendering of the training text itself, so the target reproduces exactly what is seen.
    """

    def __init__(self, items: Sequence[dict], tokenizer, image_size: int, max_tokens: int,
                 text_size: int = 128, precision: int = 0, texts: Sequence[str | None] | None = None,
                 cache_size: int = 8192):
        ids = special_token_ids(tokenizer)
        self.tokenizer, self.image_size, self.max_tokens = tokenizer, image_size, max_tokens
        self.pad_token_id, self.cache_size = ids["pad_token_id"], cache_size
        if texts is None:
            svgs = [it["svg"] if "svg" in it else Path(it["path"]).read_text(encoding="utf-8") for it in items]
            # The source has at least as many characters as its 128/integer text, and no BPE token
            # of this vocabulary spans 16 characters on average: longer sources cannot fit.
            texts = training_texts(svgs, text_size, precision, max_chars=16 * max_tokens)
        if len(texts) != len(items):
            raise ValueError(f"got {len(texts)} texts for {len(items)} items")
        self.dropped = Counter(invalid_or_long=sum(t is None for t in texts))
        candidates = [(it, t) for it, t in zip(items, texts) if t is not None]
        encoded = tokenizer([t for _, t in candidates], add_special_tokens=False)["input_ids"] if candidates else []
        self.items, self.texts, self.token_ids = [], [], []
        for (item, text), tok in zip(candidates, encoded):
            if len(tok) + 2 > max_tokens:
                self.dropped["too_long"] += 1
                continue
            self.items.append(item)
            self.texts.append(text)
            self.token_ids.append(np.array([ids["svg_start_token_id"], *tok, ids["svg_end_token_id"]], dtype=np.int32))
        if not self.items:
            raise DataError(f"SVGImageDataset: none of {len(items)} items fits in {max_tokens} tokens "
                            f"(dropped: {dict(self.dropped)})")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def image_text(self, k: int) -> str:
        """The SVG whose rendering is item k's input image: its training text."""
        return self.texts[k]

    def render(self, k: int) -> np.ndarray:
        """(image_size, image_size, 3) uint8 rendering of item k's `image_text` (LRU-cached)."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        img = rasterize_svg(self.image_text(k), self.image_size)
        self._cache[k] = img
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return img

    def __getitem__(self, k: int) -> dict:
        from PIL import Image
        return {"pixel_values": preprocess_image(Image.fromarray(self.render(k)), self.image_size),
                "input_ids": torch.from_numpy(self.token_ids[k].astype(np.int64))}

    def collate(self, batch: list[dict]) -> dict:
        return collate_svg(batch, self.pad_token_id)


def collate_svg(batch: list[dict], pad_token_id: int) -> dict:
    """Stack images, right-pad token ids; labels are the ids with -100 on the pads."""
    from genstudio.lm import pad_token_rows  # not at import: registering the data source stays light
    return {"pixel_values": torch.stack([b["pixel_values"] for b in batch]),
            **pad_token_rows([b["input_ids"] for b in batch], pad_token_id)}


# ---- Synthetic primitives (a curriculum that cannot be solved without looking at the image) ----

SHAPE_KINDS = ("circle", "ellipse", "rect", "polygon", "polyline")
SHAPE_COLOURS = ("#000000",) * 6 + ("#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#fb8c00")


def _shape_element(rng: np.random.Generator, size: int) -> str:
    """One random primitive inside the `size` square, filled or outlined."""
    kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
    colour = SHAPE_COLOURS[rng.integers(len(SHAPE_COLOURS))]
    lo, hi = size // 8, size - size // 8
    cx, cy = (int(v) for v in rng.integers(lo, hi, 2))
    extent = int(rng.integers(size // 16, size // 3))
    outline = kind == "polyline" or rng.random() < 0.3
    width = int(rng.integers(size // 32, size // 10 + 1))
    paint = (f'fill="none" stroke="{colour}" stroke-width="{width}" stroke-linecap="round" stroke-linejoin="round"'
             if outline else f'fill="{colour}"')
    if kind == "circle":
        return f'<circle cx="{cx}" cy="{cy}" r="{extent}" {paint}/>'
    if kind == "ellipse":
        ry = int(rng.integers(size // 16, size // 3))
        angle = int(rng.choice([0, 0, 30, 45, 60, 90, 135]))
        return f'<ellipse cx="{cx}" cy="{cy}" rx="{extent}" ry="{ry}" transform="rotate({angle} {cx} {cy})" {paint}/>'
    if kind == "rect":
        w, h = (int(v) for v in rng.integers(size // 8, size // 2, 2))
        x, y = min(cx, size - w), min(cy, size - h)
        radius = int(rng.integers(0, min(w, h) // 3 + 1)) if rng.random() < 0.4 else 0
        return f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="{radius}" {paint}/>'
    n = int(rng.integers(3, 7 if kind == "polygon" else 5))
    if kind == "polygon":  # star-shaped around the centre: simple, never self-intersecting
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.5, 1.0, n) * extent
        pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    else:
        pts = rng.integers(lo, hi, (n, 2))
    pts = np.clip(np.round(pts), 0, size)
    coords = " ".join(f"{int(x)},{int(y)}" for x, y in pts)
    return f'<{kind} points="{coords}" {paint}/>'


def synthetic_shape_svgs(n: int, seed: int = 0, size: int = 128, max_shapes: int = 4) -> list[str]:
    """`n` SVGs of 1..max_shapes random circles, ellipses, (rounded) rectangles, polygons and strokes.

    Short code whose every coordinate must be read off the image: mixed into StarVector's training
    it forces the model to use its visual tokens (icons alone let a small LM get far on syntax)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        body = "".join(_shape_element(rng, size) for _ in range(int(rng.integers(1, max_shapes + 1))))
        out.append(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}">{body}</svg>')
    return out


def synthetic_shape_items(n: int, seed: int = 0, max_shapes: int = 4) -> list[dict]:
    """`synthetic_shape_svgs` as manifest-like items (set "shapes", ids unique per seed and max_shapes)."""
    return [{"id": f"shapes/s{seed}m{max_shapes}/{i}", "svg": svg, "set": "shapes"}
            for i, svg in enumerate(synthetic_shape_svgs(n, seed, max_shapes=max_shapes))]
