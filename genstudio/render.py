"""Image I/O with clear errors, and atomic writes (an output is whole or absent). Video I/O is
`genstudio.formats.video`."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class InputError(ValueError):
    """Bad user input: the message names the input and what was expected."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_image(path, image) -> Path:
    """Save an HxWxC uint8/float[0,1] array or a PIL image as PNG/JPEG/..., atomically."""
    if not isinstance(image, Image.Image):
        a = np.asarray(image)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
        image = Image.fromarray(a.squeeze(-1) if a.ndim == 3 and a.shape[-1] == 1 else a)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {path}: unknown image extension (use .png or .jpg)")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)
    return Path(path)


def flatten_alpha(image: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """RGB image with any transparency composited onto `background` (an RGB tuple)."""
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, tuple(background[:3]) + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def pad_square(image: Image.Image, fill=(255, 255, 255)) -> Image.Image:
    """Centre `image` on a square canvas of its longer side (no-op for square images)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


MAX_PIXELS = 16_000_000  # the input budget of every image loader; GENSTUDIO_MAX_PIXELS changes it


def max_pixels() -> int:
    value = os.environ.get("GENSTUDIO_MAX_PIXELS", "")
    return int(value) if value.strip().isdigit() else MAX_PIXELS


def load_image(path, mode: str = "RGB", background=(255, 255, 255)) -> Image.Image:
    """Open an image; alpha is flattened onto `background`; 16-bit and float images are scaled to
    8 bits by their range (not clipped). Raises InputError on bad, degenerate (1 pixel wide, fully
    transparent) or over-budget files (more than `max_pixels()`), before decoding the pixels."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"image {p} does not exist")
    limit = max_pixels()
    over = f"the limit is {limit / 1e6:g} megapixels (set GENSTUDIO_MAX_PIXELS to raise it)"
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > limit:
                raise InputError(f"{p} is {w}x{h} ({w * h / 1e6:.1f} megapixels); {over}")
            if min(w, h) < 2:
                raise InputError(f"{p} is {w}x{h} pixels: too small to work on")
            im.load()
            im = ImageOps.exif_transpose(im)  # a phone photo the right way up, as viewers show it
            if _fully_transparent(im):
                raise InputError(f"{p} is fully transparent: there is nothing in it to work on")
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                im = _to_8bit(im)
            return flatten_alpha(im, background) if mode == "RGB" else im.convert(mode)
    except InputError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses before our check can see the size
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f" ({int(found.group(1)) / 1e6:.0f} megapixels)" if found else ""
        raise InputError(f"{p} is too large{size}; {over}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{p} is not a readable image ({type(e).__name__}: {e})") from None


def _fully_transparent(image: Image.Image) -> bool:
    if image.mode not in ("RGBA", "LA", "La", "RGBa", "PA", "P") or (image.mode == "P" and
                                                                  "transparency" not in image.info):
        return False
    return image.convert("RGBA").getchannel("A").getextrema()[1] == 0


def _to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit / float single-channel image scaled to 0-255 by its nominal range."""
    a = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else (1.0 if image.mode == "F" and a.max() <= 1.0
                                                          else max(float(a.max()), 1.0))
    return Image.fromarray((np.clip(a / top, 0, 1) * 255 + 0.5).astype(np.uint8), "L")


def to_tensor(image: Image.Image, size: int | None = None):
    """PIL -> float tensor (C,H,W) in [-1, 1], optionally resized to size x size."""
    import torch
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    a = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def to_uint8(x) -> np.ndarray:
    """Tensor (C,H,W) or (B,C,H,W) in [-1, 1] -> uint8 HWC (or BHWC)."""
    a = x.detach().float().clamp(-1, 1).cpu().numpy()
    a = np.moveaxis(a, -3, -1)
    return ((a + 1) * 127.5 + 0.5).astype(np.uint8)
