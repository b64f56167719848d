"""Video data: procedural physics clips generated on the fly, and real clips from Debian opencv-doc.

Procedural clips are what VDT trains on here: the paper's physics results (Physion) need a
world where the future follows from the past, and simulated balls give exactly that at any
scale, for free, with no licence question. Two kinds, 16 frames at 32 px by default:

* `balls`: 1-3 coloured balls under gravity with elastic collisions against the walls and each
  other (equal density: mass ~ r^2), integrated with 8 sub-steps per frame.
* `digits`: 1-2 handwritten digits (`sklearn.datasets.load_digits`) drifting and bouncing off
  the walls, Moving-MNIST style, with sub-pixel motion.

Clip k of a dataset with seed s is a pure function of (s, k): evaluation sets are fixed by
their seed, and held-out sets just use other seeds than training.

The `clips` data source (`genstudio data prepare clips`) cuts the real videos that Debian's
`opencv-doc` ships (examples/data/*.avi: vtest, tree, Megamind) into 16-frame clips resized to
the model size, stored as uint8 .npy (T, H, W, 3). They are used for evaluation only.
"""
from __future__ import annotations

import colorsys
import functools
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from genstudio.data.registry import BuildLog, DataError, register_source

KINDS = ("balls", "digits")
EVAL_SEED = 10_007    # the recipe's evaluation clips
BENCH_SEED = 20_011   # the benchmark's held-out clips (neither trains on them)
OPENCV_DOC_LICENCE = "BSD-3-Clause (OpenCV)"


# ---- Colours ----

def _bright(rng) -> np.ndarray:
    """A saturated, light colour in [0, 1]^3 (stands out on the dark backgrounds)."""
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.0)))


def _background(rng) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)))


# ---- Bouncing balls ----

def simulate_balls(rng, frames: int = 16, size: int = 32, num_balls: int | None = None,
                   substeps: int = 8) -> dict:
    """Positions (T, n, 2) as (y, x) pixels, radii (n,), velocities (T, n, 2), gravity (px/frame^2).

    Symplectic Euler with `substeps` sub-steps per frame; a ball that crosses a wall is reflected
    back in (position and velocity), and overlapping balls that approach each other exchange the
    elastic impulse along their centre line and are pushed apart.
    """
    s = size / 32
    n = int(num_balls if num_balls is not None else rng.integers(1, 4))
    radii = rng.uniform(2.5, 5.0, n) * s
    pos = np.zeros((n, 2))
    for i in range(n):  # rejection sampling of non-overlapping starts
        for _ in range(200):
            pos[i] = rng.uniform(radii[i], size - radii[i], 2)
            if all(np.linalg.norm(pos[i] - pos[j]) > radii[i] + radii[j] + 0.5 for j in range(i)):
                break
    angle = rng.uniform(0, 2 * np.pi, n)
    speed = rng.uniform(0.8, 2.5, n) * s
    vel = np.stack([np.sin(angle), np.cos(angle)], 1) * speed[:, None]
    gravity = rng.uniform(0.08, 0.35) * s
    mass = radii ** 2
    dt = 1.0 / substeps
    positions, velocities = [pos.copy()], [vel.copy()]
    for _ in range(frames - 1):
        for _ in range(substeps):
            vel[:, 0] += gravity * dt
            pos += vel * dt
            for axis in (0, 1):  # walls: reflect the overshoot back into the box
                low, high = radii, size - radii
                under, over = pos[:, axis] < low, pos[:, axis] > high
                pos[under, axis] = 2 * low[under] - pos[under, axis]
                vel[under, axis] = np.abs(vel[under, axis])
                pos[over, axis] = 2 * high[over] - pos[over, axis]
                vel[over, axis] = -np.abs(vel[over, axis])
            for i in range(n):
                for j in range(i + 1, n):
                    delta = pos[j] - pos[i]
                    dist = float(np.linalg.norm(delta))
                    overlap = radii[i] + radii[j] - dist
                    if overlap <= 0 or dist == 0:
                        continue
                    normal = delta / dist
                    approach = float((vel[i] - vel[j]) @ normal)
                    if approach > 0:
                        impulse = 2 * approach / (1 / mass[i] + 1 / mass[j])
                        vel[i] -= impulse / mass[i] * normal
                        vel[j] += impulse / mass[j] * normal
                    share = mass[j] / (mass[i] + mass[j])
                    pos[i] -= overlap * share * normal
                    pos[j] += overlap * (1 - share) * normal
            for axis in (0, 1):  # a push-apart may not leave the box
                pos[:, axis] = np.clip(pos[:, axis], radii, size - radii)
        positions.append(pos.copy())
        velocities.append(vel.copy())
    return {"positions": np.stack(positions), "velocities": np.stack(velocities), "radii": radii,
            "gravity": gravity, "size": size}


def render_balls(sim: dict, colours: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Anti-aliased discs (1 px soft edge) over a flat background: float (T, H, W, 3) in [0, 1]."""
    size = sim["size"]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = np.empty((len(sim["positions"]), size, size, 3))
    for t, pos in enumerate(sim["positions"]):
        frame = np.broadcast_to(background, (size, size, 3)).copy()
        for (y, x), r, colour in zip(pos, sim["radii"], colours):
            alpha = np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0, 1)[..., None]
            frame = frame * (1 - alpha) + colour * alpha
        out[t] = frame
    return out


def balls_clip(rng, frames: int = 16, size: int = 32) -> np.ndarray:
    sim = simulate_balls(rng, frames, size)
    colours = np.stack([_bright(rng) for _ in sim["radii"]])
    return render_balls(sim, colours, _background(rng))


# ---- Moving digits ----

@functools.lru_cache(maxsize=1)
def _digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits
    return load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]


@functools.lru_cache(maxsize=8)
def _digit_sprites(side: int) -> np.ndarray:
    """Every digit upscaled (bilinear) to side x side, as alpha in [0, 1]."""
    return np.stack([np.asarray(Image.fromarray(d, mode="F").resize((side, side), Image.BILINEAR))
                     for d in _digit_images()]).clip(0, 1)


def _paste(alpha: np.ndarray, sprite: np.ndarray, y: float, x: float) -> None:
    """Max-composite `sprite` at sub-pixel (y, x) (top-left) into `alpha`, bilinearly split over
    the four neighbouring integer offsets, so slow motion stays smooth."""
    iy, ix = int(np.floor(y)), int(np.floor(x))
    fy, fx = y - iy, x - ix
    h, w = sprite.shape
    shifted = np.zeros((h + 1, w + 1), np.float32)
    shifted[:h, :w] += sprite * (1 - fy) * (1 - fx)
    shifted[1:, :w] += sprite * fy * (1 - fx)
    shifted[:h, 1:] += sprite * (1 - fy) * fx
    shifted[1:, 1:] += sprite * fy * fx
    H, W = alpha.shape
    y0, x0, y1, x1 = max(iy, 0), max(ix, 0), min(iy + h + 1, H), min(ix + w + 1, W)
    if y1 > y0 and x1 > x0:
        region = shifted[y0 - iy:y1 - iy, x0 - ix:x1 - ix]
        np.maximum(alpha[y0:y1, x0:x1], region, out=alpha[y0:y1, x0:x1])


def digits_clip(rng, frames: int = 16, size: int = 32) -> np.ndarray:
    """1-2 digits (side 3/8 of the frame) moving at constant speed, reflected by the walls."""
    side = max(6, round(size * 12 / 32))
    sprites = _digit_sprites(side)
    background = _background(rng)
    frame = np.broadcast_to(background, (frames, size, size, 3)).copy()
    room = size - side
    for _ in range(int(rng.integers(1, 3))):
        sprite = sprites[rng.integers(len(sprites))]
        colour = _bright(rng)
        pos = rng.uniform(0, room, 2)
        angle = rng.uniform(0, 2 * np.pi)
        vel = np.array([np.sin(angle), np.cos(angle)]) * rng.uniform(0.7, 2.0) * size / 32
        for t in range(frames):
            alpha = np.zeros((size, size), np.float32)
            _paste(alpha, sprite, *pos)
            a = alpha[..., None]
            frame[t] = frame[t] * (1 - a) + colour * a
            pos = pos + vel
            for axis in (0, 1):
                if pos[axis] < 0:
                    pos[axis], vel[axis] = -pos[axis], abs(vel[axis])
                elif pos[axis] > room:
                    pos[axis], vel[axis] = 2 * room - pos[axis], -abs(vel[axis])
    return frame


# ---- Procedural dataset ----

def make_clip(seed: int, index: int, frames: int = 16, size: int = 32, kinds=KINDS) -> tuple[str, np.ndarray]:
    """(kind, uint8 (T, H, W, 3)): clip `index` of the stream `seed`, a pure function of both."""
    rng = np.random.default_rng([int(seed), int(index)])
    kind = kinds[int(rng.integers(len(kinds)))]
    clip = balls_clip(rng, frames, size) if kind == "balls" else digits_clip(rng, frames, size)
    return kind, (np.clip(clip, 0, 1) * 255 + 0.5).astype(np.uint8)


def uint8_to_video(frames: np.ndarray):
    """uint8 (T, H, W, 3) -> float tensor (T, 3, H, W) in [-1, 1]."""
    import torch
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8_video(x) -> np.ndarray:
    """(T, C, H, W) tensor in [-1, 1] -> (T, H, W, 3) uint8; exact inverse of `uint8_to_video`."""
    import torch
    a = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8)
    return a.permute(0, 2, 3, 1).numpy()


class PhysicsClips:
    """`length` procedural clips, generated on the fly: item k = make_clip(seed, k).

    Returns {"video": float (T, 3, H, W) in [-1, 1]}. `kinds` picks balls and/or digits.
    """

    def __init__(self, length: int = 100_000, frames: int = 16, size: int = 32, seed: int = 0, kinds=KINDS):
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown clip kind(s) {sorted(unknown) or kinds}; choose from {KINDS}")
        self.length, self.frames, self.size, self.seed, self.kinds = length, frames, size, seed, tuple(kinds)

    def __len__(self) -> int:
        return self.length

    def clip(self, k: int) -> np.ndarray:
        if not 0 <= k < self.length:
            raise IndexError(k)
        return make_clip(self.seed, k, self.frames, self.size, self.kinds)[1]

    def __getitem__(self, k: int) -> dict:
        return {"video": uint8_to_video(self.clip(k))}


def clip_batch(seed: int, count: int, frames: int = 16, size: int = 32, kinds=KINDS) -> np.ndarray:
    """uint8 (count, T, H, W, 3): clips 0..count-1 of stream `seed` (evaluation / benchmark sets)."""
    ds = PhysicsClips(length=count, frames=frames, size=size, seed=seed, kinds=kinds)
    return np.stack([ds.clip(i) for i in range(count)])


# ---- Real clips: Debian opencv-doc ----

def _download_opencv_doc(tmp: Path, log: BuildLog) -> Path:
    """apt-get download + dpkg -x (no root needed); returns the folder holding the .avi files."""
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise DataError(f"the clips source needs {tool!r} (Debian/Ubuntu) to fetch opencv-doc, and it is not "
                            "installed; pass source_dir=FOLDER of .avi files instead")
    r = subprocess.run(["apt-get", "download", "opencv-doc"], cwd=tmp, capture_output=True, text=True)
    debs = sorted(tmp.glob("opencv-doc_*.deb"))
    if r.returncode != 0 or not debs:
        raise DataError(f"`apt-get download opencv-doc` failed ({r.stderr.strip()[:200] or r.returncode}); "
                        "try `apt-get update` first")
    log(f"opencv-doc: {debs[0].name}, {debs[0].stat().st_size / 1e6:.1f} MB")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(tmp / "root")], check=True)
    found = sorted((tmp / "root").rglob("examples/data"))
    if not found:
        raise DataError("opencv-doc has no examples/data folder in this version")
    return found[0]


def square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize (Pillow's antialiased bicubic) to size x size."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    im = Image.fromarray(frame[top:top + side, left:left + side])
    return np.asarray(im.resize((size, size), Image.BICUBIC) if side != size else im)


def cut_clips(path: Path, frames: int = 16, size: int = 32, stride: int = 2) -> Iterator[tuple[int, np.ndarray]]:
    """Non-overlapping clips of `frames` frames, every `stride`-th source frame, resized square:
    yields (first source frame, uint8 (T, size, size, 3))."""
    from genstudio.formats.video import iter_video_frames
    buffer, start = [], 0
    for i, frame in enumerate(iter_video_frames(path)):
        if i % stride:
            continue
        if not buffer:
            start = i
        buffer.append(square_resize(frame, size))
        if len(buffer) == frames:
            yield start, np.stack(buffer)
            buffer = []


@register_source("clips", "real video clips: Debian opencv-doc examples/data/*.avi cut into 16-frame clips",
                 licence=OPENCV_DOC_LICENCE)
def build_clips(out: Path, log: BuildLog, size: int = 32, frames: int = 16, stride: int = 2,
                source_dir: str | None = None) -> Iterator[dict]:
    """Options: size (32), frames (16), stride (2: every other source frame, so 16 frames span
    enough motion), source_dir (a folder of .avi files instead of downloading opencv-doc).
    `*_bugy.avi` (a deliberately damaged copy of Megamind.avi kept for OpenCV's tests) is skipped."""
    from genstudio.render import InputError
    (out / "clips").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(source_dir) if source_dir else _download_opencv_doc(Path(tmp), log)
        videos = sorted(p for p in folder.glob("*.avi") if "_bugy" not in p.stem)
        if not videos:
            raise DataError(f"no .avi videos in {folder}")
        for video in videos:
            count = 0
            try:
                for start, clip in cut_clips(video, frames, size, stride):
                    item_id = f"opencv-doc/{video.stem}/{start:05d}"
                    rel = f"clips/{video.stem}_{start:05d}.npy"
                    np.save(out / rel, clip)
                    count += 1
                    yield {"id": item_id, "path": rel, "video": video.name, "start_frame": start, "stride": stride,
                           "frames": frames, "size": size, "licence": OPENCV_DOC_LICENCE}
            except InputError as e:
                log(f"{video.name}: skipped ({e})")
                continue
            log(f"{video.name}: {count} clips of {frames} frames (stride {stride}) at {size} px")


def load_real_clips(split: str | None = None, max_clips: int | None = None) -> list[tuple[str, np.ndarray]]:
    """[(id, uint8 (T, H, W, 3))] of the built `clips` source, evenly spread over the items."""
    from genstudio.data import load_manifest
    items = sorted(load_manifest("clips", split), key=lambda it: it["id"])
    if max_clips is not None and len(items) > max_clips:
        items = [items[i] for i in np.linspace(0, len(items) - 1, max_clips).round().astype(int)]
    return [(it["id"], np.load(it["path"])) for it in items]
