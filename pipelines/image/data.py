"""Class-conditional glyph images: 62 characters (0-9, A-Z, a-z) as classes, every installed
Latin font as a source of examples, whole font families held out for evaluation.

    genstudio data prepare glyph-classes          # ~20 s; 85+ fonts with the Debian font packages
    train, labels = load_glyph_classes("train")   # uint8 (N, 32, 32) ink in [0, 255], int64 (N,)

Each glyph is drawn at a fixed em size on a fixed baseline (so case survives: 'c' is smaller
than 'C'), 4x supersampled and reduced with a box filter. Training fonts also get a few jittered
variants (shift, scale, rotation of a few pixels / percent / degrees). The split is by font
family (hash of the family name), so a held-out family's bold or italic never leaks into training.
"""
from __future__ import annotations

import glob
import hashlib
import string
from pathlib import Path
from typing import Iterator

import numpy as np

from genstudio.data.registry import BuildLog, DataError, dataset_dir, load_manifest, register_source, split_of

CLASSES = tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase)  # 62 labels
SIZE = 32
FONT_DIRS = ("/usr/share/fonts",)
# Families whose cmap covers Latin letters with something else (dingbats, Greek symbols, scripts).
NOT_LATIN = ("D050000L", "Standard Symbols PS", "Noto Sans Symbols", "Noto Traditional Nushu", "Noto Sans Math",
             "DejaVu Math TeX Gyre")
FONT_LICENCES = {"DejaVu": "Bitstream-Vera AND LicenseRef-DejaVu-public-domain", "Liberation": "OFL-1.1",
                 "Noto": "OFL-1.1"}  # everything else installed here (URW base35) is AGPL-3.0 with font exception
URW_LICENCE = "AGPL-3.0-only WITH PS-or-PDF-font-exception-20170817"


def class_index(name: str) -> int:
    """'A' -> 10; also accepts a label number as text ('10')."""
    if name in CLASSES:
        return CLASSES.index(name)
    if name.isdigit() and len(name) > 1 and int(name) < len(CLASSES):
        return int(name)
    raise ValueError(f"unknown class {name!r}: one of the characters 0-9, A-Z, a-z")


def latin_fonts(dirs=FONT_DIRS, fonts=None) -> list[tuple[Path, str, str]]:
    """(path, family, style) of every TrueType/OpenType font that has all 62 characters; `fonts`
    keeps those whose family starts with one of the given names (comma-separated)."""
    import logging

    from fontTools.ttLib import TTFont
    from PIL import ImageFont
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    wanted = [f.strip().lower() for f in (fonts.split(",") if isinstance(fonts, str) else fonts or []) if f.strip()]
    out = []
    for d in dirs:
        for path in sorted(glob.glob(f"{d}/**/*.[ot]tf", recursive=True)):
            try:
                cmap = TTFont(path, lazy=True, fontNumber=0).getBestCmap() or {}
                family, style = ImageFont.truetype(path, 12).getname()
            except Exception:  # a broken or exotic font file: not a source of examples
                continue
            if family.startswith(NOT_LATIN) or not all(ord(c) in cmap for c in CLASSES):
                continue
            if wanted and not any(family.lower().startswith(w) for w in wanted):
                continue
            out.append((Path(path), family, style))
    return out


def render_glyph(font, char: str, size: int = SIZE, shift=(0.0, 0.0), scale: float = 1.0,
                 angle: float = 0.0, supersample: int = 4) -> np.ndarray:
    """One character, ink = 255 on 0, (size, size) uint8; em = 3/4 of the side, baseline at 3/4 height,
    horizontally centred on its ink. `font` is a PIL FreeType font of size `size * supersample * 3/4`."""
    from PIL import Image, ImageDraw
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    left, _, right, _ = font.getbbox(char, anchor="ls")
    ImageDraw.Draw(canvas).text((big / 2 - (left + right) / 2, big * 0.75), char, fill=255, font=font, anchor="ls")
    if scale != 1.0 or angle or shift != (0.0, 0.0):
        canvas = canvas.rotate(angle, resample=Image.BILINEAR, center=(big / 2, big * 0.6),
                               translate=(shift[0] * supersample, shift[1] * supersample))
        if scale != 1.0:
            scaled = canvas.resize((round(big * scale),) * 2, Image.BILINEAR)
            canvas = Image.new("L", (big, big), 0)
            off = (big - scaled.size[0]) // 2
            canvas.paste(scaled, (off, off)) if off >= 0 else canvas.paste(scaled.crop((-off, -off, -off + big, -off + big)))
    return np.asarray(canvas.reduce(supersample), dtype=np.uint8)


def render_font(path: Path, variants: int, seed: int, size: int = SIZE) -> np.ndarray:
    """(variants, 62, size, size) uint8: variant 0 is the plain rendering, the others jittered."""
    from PIL import ImageFont
    font = ImageFont.truetype(str(path), int(size * 4 * 0.75))
    rng = np.random.default_rng(seed)
    out = np.zeros((variants, len(CLASSES), size, size), np.uint8)
    for v in range(variants):
        for k, char in enumerate(CLASSES):
            if v == 0:
                out[v, k] = render_glyph(font, char, size)
            else:
                out[v, k] = render_glyph(font, char, size, shift=tuple(rng.uniform(-1.5, 1.5, 2)),
                                         scale=float(rng.uniform(0.94, 1.06)), angle=float(rng.uniform(-4, 4)))
    return out


def _licence(family: str) -> str:
    return next((lic for prefix, lic in FONT_LICENCES.items() if family.startswith(prefix)), URW_LICENCE)


@register_source("glyph-classes", "62 characters (0-9, A-Z, a-z) rendered 32x32 from every installed Latin font; "
                 "split by font family", licence="per item (Bitstream-Vera/DejaVu, OFL-1.1, AGPL-3.0 + font exception)")
def build_glyph_classes(out: Path, log: BuildLog, fonts=None, font_dirs=FONT_DIRS, variants: int = 6,
                        size: int = SIZE) -> Iterator[dict]:
    try:
        files = latin_fonts(font_dirs, fonts)
    except ImportError:
        raise DataError("building glyph-classes needs fontTools and Pillow: pip install fonttools pillow") from None
    if not files:
        raise DataError(f"no font with all of 0-9, A-Z, a-z under {', '.join(map(str, font_dirs))} "
                        "(apt-get install -y fonts-dejavu-core)")
    log(f"{len(files)} fonts in {len({f for _, f, _ in files})} families")
    (out / "fonts").mkdir()
    for path, family, style in files:
        split = split_of(family, val=0.1, test=0.2)
        item_id = f"{family}/{style}/{path.name}"
        seed = int.from_bytes(hashlib.sha1(item_id.encode()).digest()[:4], "big")
        images = render_font(path, variants if split == "train" else 1, seed, size)
        name = f"fonts/{hashlib.sha1(item_id.encode()).hexdigest()[:12]}.npy"
        np.save(out / name, images)
        yield {"id": item_id, "path": name, "split": split, "licence": _licence(family), "family": family,
               "style": style, "variants": int(images.shape[0])}


def load_glyph_classes(split: str = "train", root: Path | None = None, plain_only: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32) uint8 (ink 255 on 0) and labels (N,) int64 of one split of the build;
    `plain_only` drops the jittered variants."""
    items = [it for it in load_manifest("glyph-classes", root=root) if it["split"] == split]
    if not items:
        raise DataError(f"glyph-classes has no {split!r} fonts: run `genstudio data prepare glyph-classes`")
    folder = dataset_dir("glyph-classes", root)
    images = [np.load(folder / it["path"], allow_pickle=False) for it in items]
    if plain_only:
        images = [im[:1] for im in images]
    stack = np.concatenate([im.reshape(-1, *im.shape[-2:]) for im in images])
    labels = np.tile(np.arange(len(CLASSES)), len(stack) // len(CLASSES))
    return stack, labels.astype(np.int64)
