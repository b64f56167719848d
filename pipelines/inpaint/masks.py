"""Random inpainting masks: free-form brush strokes and boxes, at a target hole ratio.

Convention everywhere in this package: a *hole* mask is True/255 where pixels are missing
(white = hole, as in mask files users paint); the models take its complement, `known`.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

RATIO_BUCKETS = {"10-20%": (0.1, 0.2), "20-40%": (0.2, 0.4), "40-60%": (0.4, 0.6)}


def _stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, h: int, w: int) -> None:
    side = min(h, w)
    width = int(rng.uniform(0.04, 0.15) * side) + 1
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    points = [(x, y)]
    for _ in range(int(rng.integers(2, 8))):
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.4) * side
        x, y = float(np.clip(x + length * np.cos(angle), 0, w - 1)), float(np.clip(y + length * np.sin(angle), 0, h - 1))
        points.append((x, y))
    draw.line(points, fill=255, width=width, joint="curve")
    r = width / 2
    for px, py in points:  # round caps
        draw.ellipse((px - r, py - r, px + r, py + r), fill=255)


def _box(draw: ImageDraw.ImageDraw, rng: np.random.Generator, h: int, w: int) -> None:
    bh, bw = rng.uniform(0.1, 0.5) * h, rng.uniform(0.1, 0.5) * w
    y, x = rng.uniform(0, h - bh), rng.uniform(0, w - bw)
    draw.rectangle((x, y, x + bw, y + bh), fill=255)


def random_hole_mask(height: int, width: int, ratio=(0.1, 0.6), rng: np.random.Generator | None = None,
                     box_prob: float = 0.3, max_tries: int = 50) -> np.ndarray:
    """A (H, W) bool hole mask whose hole ratio lies in `ratio` (strokes, sometimes boxes).

    Shapes are added until the ratio reaches a target drawn from `ratio`; a mask that then
    overshoots the upper bound is redrawn (the last try is returned whatever its ratio)."""
    rng = rng if rng is not None else np.random.default_rng()
    lo, hi = ratio
    for _ in range(max_tries):
        target = rng.uniform(lo, hi)
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        hole = np.zeros((height, width), bool)
        while hole.mean() < target:
            (_box if rng.random() < box_prob else _stroke)(draw, rng, height, width)
            hole = np.asarray(canvas) > 0
        if hole.mean() <= hi:
            return hole
    return hole


def hole_ratio(hole: np.ndarray) -> float:
    return float(np.asarray(hole, bool).mean())
