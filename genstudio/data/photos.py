"""Photo sources: scikit-image / scikit-learn sample photos and Debian wallpapers.

Photos are stored whole (PNG); `PhotoCropDataset` cuts random crops on the fly, so one photo
yields many training patches. Debian wallpapers come from `apt-get download` + `dpkg -x`
(no root needed) and are optional: `prepare("photos", debian=True)`.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .registry import BuildLog, DataError, register_source

# skimage.data loaders that are colour or grey photographs/textures (bundled, offline).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
                  "brick", "grass", "gravel", "camera", "moon", "page", "text", "clock",
                  "hubble_deep_field", "colorwheel", "retina", "motorcycle_left", "coins")
DEBIAN_WALLPAPERS = {"desktop-base": "GPL-2+", "mate-backgrounds": "GPL-2+", "gnome-backgrounds": "CC-BY-SA-3.0"}


def _skimage_photos(log: BuildLog) -> Iterator[tuple[str, np.ndarray, str]]:
    import skimage.data as sd
    for name in SKIMAGE_PHOTOS:
        loader = getattr(sd, name, None)
        if loader is None:
            continue
        try:
            img = loader()
        except Exception as e:  # a loader whose file needs a download (pooch) is skipped
            log(f"skimage.{name}: skipped ({type(e).__name__})")
            continue
        if isinstance(img, tuple):
            img = img[0]
        yield f"skimage/{name}", np.asarray(img), "BSD-3-Clause (scikit-image data)"


def _sklearn_photos(log: BuildLog) -> Iterator[tuple[str, np.ndarray, str]]:
    from sklearn.datasets import load_sample_images
    data = load_sample_images()
    for fname, img in zip(data.filenames, data.images):
        yield f"sklearn/{Path(fname).stem}", img, "CC-BY-2.0 (scikit-learn sample images)"


def _debian_wallpapers(log: BuildLog, packages: dict[str, str]) -> Iterator[tuple[str, np.ndarray, str]]:
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DataError(f"Debian wallpapers need {tool!r}, which is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        for pkg, licence in packages.items():
            r = subprocess.run(["apt-get", "download", pkg], cwd=tmp, capture_output=True, text=True)
            debs = list(Path(tmp).glob(f"{pkg}_*.deb"))
            if r.returncode != 0 or not debs:
                log(f"debian {pkg}: not downloadable ({r.stderr.strip()[:120]}); try `apt-get update`")
                continue
            root = Path(tmp) / pkg
            subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True)
            files = [p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")]
            log(f"debian {pkg}: {debs[0].stat().st_size / 1e6:.1f} MB, {len(files)} images")
            for p in sorted(files):
                try:
                    with Image.open(p) as im:
                        im = im.convert("RGB")
                        if min(im.size) < 256:
                            continue
                        im.thumbnail((1024, 1024))
                        yield f"debian/{pkg}/{p.stem}", np.asarray(im), licence
                except Exception:
                    continue


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) / max(1e-8, float(img.max() - img.min()))).astype(np.uint8)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


@register_source("photos", "photos/textures: skimage + sklearn samples (+ Debian wallpapers with debian=True)",
                 licence="per item")
def build_photos(out: Path, log: BuildLog, debian: bool = False) -> Iterator[dict]:
    (out / "img").mkdir(exist_ok=True)
    gens = [_skimage_photos(log), _sklearn_photos(log)]
    if debian:
        gens.append(_debian_wallpapers(log, DEBIAN_WALLPAPERS))
    for gen in gens:
        for item_id, img, licence in gen:
            img = _to_rgb(img)
            if min(img.shape[:2]) < 64:
                continue
            digest = hashlib.sha1(img.tobytes()).hexdigest()[:12]
            rel = f"img/{item_id.replace('/', '__')}.png"
            Image.fromarray(img).save(out / rel)
            yield {"id": item_id, "path": rel, "licence": licence, "height": img.shape[0],
                   "width": img.shape[1], "sha1": digest}


class PhotoCropDataset:
    """Random (or, for evaluation, fixed-seed) square crops of photos, as tensors in [-1, 1].

    `length` sets how many crops one epoch has; crop k of an evaluation set is always the same.
    """

    def __init__(self, items: list[dict], size: int = 64, length: int = 10_000, scale=(0.15, 1.0),
                 deterministic: bool = False, seed: int = 0):
        if not items:
            raise DataError("PhotoCropDataset got no photos; run `genstudio data prepare photos`")
        self.images = []
        for it in items:  # cap the side at 8x the crop size: crops stay sharp, resizing stays cheap
            im = Image.open(it["path"]).convert("RGB")
            im.thumbnail((8 * size, 8 * size), Image.BICUBIC)
            self.images.append(im)
        self.size, self.length, self.scale = size, length, scale
        self.deterministic, self.seed = deterministic, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int):
        import torch
        rng = np.random.default_rng((self.seed, k)) if self.deterministic else np.random.default_rng()
        img = self.images[rng.integers(len(self.images))]
        w, h = img.size
        side = int(min(h, w) * np.sqrt(rng.uniform(*self.scale)))
        side = max(side, min(self.size, h, w))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = img.resize((self.size, self.size), Image.BICUBIC, box=(x, y, x + side, y + side), reducing_gap=2.0)
        arr = np.asarray(crop, dtype=np.float32) / 127.5 - 1.0
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return {"image": torch.from_numpy(arr.transpose(2, 0, 1).copy())}
