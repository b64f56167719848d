"""Fit an SVG's numbers to an image with the differentiable rasteriser: `refine_svg`.

    result = refine_svg(candidate_svg, target_image, steps=100, max_paths=32)
    result.svg, result.score            # {"ssim", "mse"} of the ROUNDED text, rendered by cairosvg

A generator (StarVector, SVGFusion) gets the structure of a drawing right (which primitives, in
which order, which colours) and its numbers roughly; this module keeps the structure and moves
the numbers. `svg_text=None` starts from an empty canvas (a LIVE-like vectoriser).

1. Read the SVG into a `Scene` (primitives stay primitives; see svg_scene).
2. Adam on every coordinate, radius, stroke width, colour and opacity against the target:
   pixel MSE + (1 - SSIM) at the working resolution plus MSE at 1/4 resolution (a long-range
   pull), coarse to fine: the first 30% of steps render at half resolution with a wide
   anti-aliasing filter (long gradients), then full resolution with the filter narrowing.
3. Where the residual stays large, add shapes LIVE-style (Ma et al. 2022, "Towards
   Layer-wise Image Vectorization"): a polygon traced around each of the largest connected
   error components (an even-odd path of polygons when it has holes), filled with the target's
   median colour there, on top; then keep refining. Components are of ONE colour: the wrong
   pixels are split by the target's dominant colours (modes where it is flat), so touching
   regions of different colours get a shape each, not one of their mean colour; thin lines,
   whose fragments would be too small, fall back to the mixed components.
4. Prune shapes whose removal does not raise the loss (invisible, covered or redundant).
5. Simplify (near-straight curves become lines, vertices on a line go), write the scene with
   rounded numbers (two precisions) and score THAT text (cairosvg render, skimage SSIM). Of all
   texts scored (each phase's end and the input), the shortest within SSIM_TOLERANCE of the best
   SSIM is returned, so refining never makes it (noticeably) worse.

Bounds: `steps` optimiser steps and `time_limit` seconds per call, whichever comes first.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..device import cpu_threads
from ..limits import check_time
from .svg import SVGError, rasterize_svg
from .svg_diff import DEFAULT_TAU, render
from .svg_geometry import Scene, Shape
from .svg_scene import scene_from_svg, scene_to_svg

COARSE_SHARE = 0.3      # share of the steps rendered at half resolution
SSIM_WEIGHT = 0.5       # loss = MSE + SSIM_WEIGHT * (1 - SSIM) + MSE at 1/4 resolution
ERROR_THRESHOLD = 0.15  # mean |rgb error| above which a pixel counts towards a new shape
MIN_COMPONENT = 0.002   # the smallest error component (share of the canvas) that gets a shape
MAX_RINGS, MAX_VERTICES = 16, 48  # per added shape: outlines (outer and holes) and vertices per outline


@dataclass
class RefineResult:
    svg: str                      # the chosen text: rounded, viewBox 0 0 width height (or the input)
    score: dict                   # {"ssim", "mse"} of `svg` at `size` px against the target
    initial_score: dict | None    # the input's score (None when starting from an empty canvas)
    steps: int = 0                # optimiser steps run
    seconds: float = 0.0
    added: int = 0                # shapes added on error components
    pruned: int = 0               # shapes removed
    history: list = field(default_factory=list)  # (step, ssim, bytes) of each scored text


# ---- Images and losses ----

def _as_target(image, size: int) -> np.ndarray:
    """The target as (size, size, 3) uint8, flattened on white."""
    from PIL import Image
    if isinstance(image, Image.Image):
        pil = image
    else:
        a = np.asarray(image)
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
        pil = Image.fromarray(a)
    if pil.mode != "RGB":
        from genstudio.render import flatten_alpha
        pil = flatten_alpha(pil.convert("RGBA"))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.BICUBIC)
    return np.asarray(pil, dtype=np.uint8)


def _box_mean(t: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over each `window` x `window` square of (C, H, W), valid region only: as
    F.avg_pool2d(t, window, stride=1) but from cumulative sums (about 4x faster with its backward)."""
    c = F.pad(t.cumsum(-2), (0, 0, 1, 0))
    t = c[..., window:, :] - c[..., :-window, :]
    c = F.pad(t.cumsum(-1), (1, 0))
    return (c[..., window:] - c[..., :-window]) / (window * window)


def differentiable_ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Differentiable SSIM of (H, W, 3) images in [0, 1], as skimage computes it (uniform 7x7
    window, valid region, sample covariance, K1 0.01, K2 0.03): returns the mean SSIM."""
    x, y = x.permute(2, 0, 1), y.permute(2, 0, 1)
    n = window * window
    cov_norm = n / (n - 1)
    pooled = _box_mean(torch.cat([x, y, x * x, y * y, x * y]), window)
    mx, my, xx, yy, xy = pooled.split(x.shape[0])  # one pooling pass for the five local means
    vx = cov_norm * (xx - mx * mx)
    vy = cov_norm * (yy - my * my)
    vxy = cov_norm * (xy - mx * my)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def _loss(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mse = ((image - target) ** 2).mean()
    coarse = lambda t: F.avg_pool2d(t.permute(2, 0, 1)[None], 4)  # noqa: E731
    return mse + SSIM_WEIGHT * (1 - differentiable_ssim(image, target)) + ((coarse(image) - coarse(target)) ** 2).mean()


def score_images(rendered: np.ndarray, target: np.ndarray) -> dict:
    """{"ssim", "mse"} of a rendering against the target (uint8 HxWx3)."""
    from genstudio.metrics import mse, ssim
    return {"ssim": round(ssim(rendered, target), 4), "mse": round(mse(rendered, target), 5)}


def score_svg(svg_text: str, target: np.ndarray) -> dict:
    """{"ssim", "mse"} of an SVG text rendered by cairosvg at the target's size."""
    return score_images(rasterize_svg(svg_text, target.shape[0]), target)


# ---- Structure edits ----

def _canvas_transform(scene: Scene, size: int) -> tuple[float, np.ndarray]:
    scale = size / max(scene.width, scene.height)
    return scale, np.array([(size - scale * scene.width) / 2, (size - scale * scene.height) / 2])


def _new_region(mask: np.ndarray, colour: np.ndarray, scene: Scene, size: int, dtype) -> Shape | None:
    """A filled shape around one connected component of the error (pixel mask): a polygon, or
    an even-odd path of polygons when the component has holes (rings, outlines)."""
    from skimage.measure import approximate_polygon, find_contours
    contours = [c for c in find_contours(np.pad(mask, 1).astype(np.float32), 0.5) if len(c) >= 8]
    if not contours:
        return None
    contours.sort(key=len, reverse=True)
    scale, offset = _canvas_transform(scene, size)
    rings = []
    for contour in contours[:MAX_RINGS]:
        contour = contour[:, ::-1] - 1 + 0.5  # (row, col) -> pixel-centre (x, y)
        for tolerance in (1.0, 1.5, 2.0, 3.0, 4.0):  # pixels; the optimiser fixes the rest
            poly = approximate_polygon(contour, tolerance)[:-1]
            if len(poly) <= MAX_VERTICES:
                break
        if len(poly) >= 3:
            rings.append((poly - offset) / scale)
    if not rings:
        return None
    paint = dict(fill=torch.tensor(colour, dtype=dtype, requires_grad=True),
                 fill_opacity=torch.tensor(1.0, dtype=dtype, requires_grad=True))
    if len(rings) == 1:
        return Shape("polygon", torch.tensor(rings[0].reshape(-1), dtype=dtype, requires_grad=True), **paint)
    commands, n = [], 0
    for ring in rings:
        commands += [("M", n)] + [("L", n + k) for k in range(1, len(ring))] + [("Z",)]
        n += len(ring)
    points = torch.tensor(np.concatenate(rings).reshape(-1), dtype=dtype, requires_grad=True)
    return Shape("path", points, commands, fill_rule="evenodd", **paint)


COLOUR_DISTANCE = 0.15  # mean |rgb| difference: closer target colours share an error component


def _dominant_colours(colours: np.ndarray, min_count: int) -> np.ndarray:
    """The main colours among `colours` (N, 3) in [0, 1], most frequent first: modes of a coarse
    histogram, each suppressing its neighbours within COLOUR_DISTANCE, while a mode holds at
    least `min_count` pixels (anti-aliased blends between two colours are no mode of their own)."""
    bins = np.clip((colours * 15).round(), 0, 15).astype(np.int64)
    keys, counts = np.unique(bins @ np.array([256, 16, 1]), return_counts=True)
    centres = np.stack([keys // 256, keys // 16 % 16, keys % 16], -1) / 15
    modes = []
    for i in np.argsort(-counts, kind="stable"):
        if counts[i] < min_count:
            break
        if all(np.abs(centres[i] - m).mean() > COLOUR_DISTANCE for m in modes):
            modes.append(centres[i])
    return np.array(modes).reshape(-1, 3)


def _error_components(error: np.ndarray, target: np.ndarray, min_area: int) -> list[np.ndarray]:
    """Masks of the connected error components, largest error first, each of ONE target colour (a
    mailbox's dark door and light body become two shapes, not one of their mean colour). The
    colours are the modes of the wrong pixels where the target is flat (anti-aliased blends are no
    colour of their own); a wrong pixel joins the nearest colour that would lower its error, or
    none (a light fringe of a thin dark line: the outline then runs where the line covers half)."""
    from scipy import ndimage
    wrong = error > ERROR_THRESHOLD
    if not wrong.any():
        return []
    spread = (ndimage.maximum_filter(target, (3, 3, 1)) - ndimage.minimum_filter(target, (3, 3, 1))).max(-1)
    flat = wrong & (spread < 0.1)
    modes = _dominant_colours(target[flat if flat.sum() >= min_area else wrong], min_area)
    if len(modes) == 0:
        modes = np.median(target[wrong], 0, keepdims=True)
    distance = np.abs(target[:, :, None, :] - modes).mean(-1)  # (H, W, modes)
    distance[distance >= error[..., None]] = np.inf  # painting that colour would not help there
    nearest = np.where(np.isfinite(distance.min(-1)), distance.argmin(-1), -1)

    def components(mask: np.ndarray) -> list[tuple[float, np.ndarray]]:
        labels, n = ndimage.label(mask)
        index = np.arange(1, n + 1)
        area = ndimage.sum(np.ones_like(error), labels, index)
        weight = ndimage.sum(error, labels, index)
        return [(w, labels == i) for i, a, w in zip(index, area, weight) if a >= min_area]

    one_colour = sorted((c for m in range(len(modes)) for c in components(wrong & (nearest == m))),
                        key=lambda c: -c[0])
    if one_colour:
        return [mask for _, mask in one_colour]
    # none big enough (thin lines split into fragments): the mixed components, as LIVE does
    return [mask for _, mask in sorted(components(wrong), key=lambda c: -c[0])]


def _add_shapes(scene: Scene, image: np.ndarray, target: np.ndarray, budget: int, dtype) -> list[Shape]:
    """Up to `budget` polygons on the largest one-colour error components, appended on top of the
    scene, each filled with the target's median colour there."""
    if budget <= 0:
        return []
    error = np.abs(image - target).mean(-1)
    added = []
    for mask in _error_components(error, target, max(4, int(MIN_COMPONENT * error.size)))[:budget]:
        shape = _new_region(mask, np.median(target[mask], 0), scene, target.shape[0], dtype)
        if shape is not None:
            scene.shapes.append(shape)
            added.append(shape)
    return added


def _prune(scene: Scene, target: torch.Tensor, tau: float) -> int:
    """Drop shapes whose removal does not raise the loss (top first: covered shapes go too)."""
    size = target.shape[0]
    removed = 0
    with torch.no_grad():
        base = float(_loss(render(scene, size, tau=tau), target))
        for i in reversed(range(len(scene.shapes))):
            shape = scene.shapes.pop(i)
            loss = float(_loss(render(scene, size, tau=tau), target)) if scene.shapes else math.inf
            if loss <= base + 1e-5:
                base, removed = min(base, loss), removed + 1
            else:
                scene.shapes.insert(i, shape)
    return removed


# ---- The loop ----



def _optimizer(scene: Scene, lr_geometry: float, lr_paint: float) -> torch.optim.Adam | None:
    groups = [{"params": scene.geometry_parameters(), "lr": lr_geometry, "base": lr_geometry},
              {"params": scene.paint_parameters(), "lr": lr_paint, "base": lr_paint}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.Adam(groups, betas=(0.9, 0.9)) if groups else None


SSIM_TOLERANCE = 0.002  # among texts within this SSIM of the best, the shortest is returned


def _variants(scene: Scene, precision: int | None, size: int, target: np.ndarray) -> list[tuple[str, dict]]:
    """The scene as rounded text(s) with their scores: at `precision`, or (None) at a tenth of a
    pixel and a decimal coarser (about 30% fewer bytes)."""
    unit = max(scene.width, scene.height) / size
    fine = max(0, min(3, math.ceil(-math.log10(unit / 10)))) if precision is None else precision
    levels = [fine] + ([fine - 1] if precision is None and fine > 0 else [])
    texts = [scene_to_svg(scene, p) for p in levels]
    return [(t, score_svg(t, target)) for t in texts if "/>" in t]  # never an empty drawing


def _choose(considered: list[tuple[str, dict]]) -> tuple[str, dict]:
    best = max(score["ssim"] for _, score in considered)
    close = [c for c in considered if c[1]["ssim"] >= best - SSIM_TOLERANCE]
    return min(close, key=lambda c: (len(c[0]), -c[1]["ssim"]))


def _simplify(scene: Scene, size: int, tolerance: float = 0.25) -> int:
    """Drop what the eye cannot see, in place (pixels of `size`): path cubics and quadratics
    whose control points lie within `tolerance` of their chord become lines, and polygon or
    path vertices within `tolerance` of the line through their neighbours go. Returns the count."""
    scale, _ = _canvas_transform(scene, size)
    tol = tolerance / scale
    removed = 0

    def off_line(p, a, b) -> float:
        d = b - a
        n = float(np.hypot(*d))
        if n < 1e-12:
            return float(np.hypot(*(p - a)))
        t = float(np.dot(p - a, d)) / (n * n)
        if t < 0 or t > 1:
            return math.inf
        return abs(float(d[0] * (p - a)[1] - d[1] * (p - a)[0])) / n

    for shape in scene.shapes:
        pts = shape.params.detach().double().view(-1, 2).numpy() if shape.kind in ("path", "polygon", "polyline") \
            else None
        if shape.kind == "path":
            out, current, start = [], None, None
            for cmd in shape.commands:
                op = cmd[0]
                if op in ("C", "Q") and current is not None and \
                        all(off_line(pts[i], pts[current], pts[cmd[-1]]) <= tol for i in cmd[1:-1]):
                    cmd, op = ("L", cmd[-1]), "L"
                    removed += 1
                if op == "L" and out and out[-1][0] == "L" and len(out) >= 2 and out[-2][0] in ("M", "L") \
                        and off_line(pts[out[-1][1]], pts[out[-2][-1]], pts[cmd[1]]) <= tol:
                    out.pop()  # the previous vertex lies on the line from its predecessor to this one
                    removed += 1
                out.append(cmd)
                if op == "M":
                    start = cmd[1]
                current = start if op == "Z" else cmd[-1]
            shape.commands = out
        elif shape.kind in ("polygon", "polyline") and len(pts) > 3:
            keep = list(range(len(pts)))
            changed = True
            while changed and len(keep) > 3:
                changed = False
                for k in range(len(keep)):
                    if shape.kind == "polyline" and k in (0, len(keep) - 1):
                        continue
                    prev, nxt = keep[k - 1], keep[(k + 1) % len(keep)]
                    if off_line(pts[keep[k]], pts[prev], pts[nxt]) <= tol:
                        del keep[k]
                        removed += 1
                        changed = True
                        break
            if len(keep) < len(pts):
                shape.params = shape.params.detach()[torch.tensor([[2 * i, 2 * i + 1] for i in keep]).view(-1)] \
                    .clone().requires_grad_(True)
        shape.invalidate()
    return removed


def refine_svg(svg_text: str | None, target_image, steps: int = 100, max_paths: int = 32, size: int = 128,
               time_limit: float = 30.0, add_paths: bool = True, precision: int | None = None,
               lr: float = 0.6, callback: Callable[[int], None] | None = None,
               threads: int | None = 1) -> RefineResult:
    """Fit `svg_text` (None or "": an empty canvas of `size` units) to `target_image` (HxWx3
    array, uint8 or float in [0, 1], or a PIL image; resized to size x size). `lr` is the
    geometry step in pixels. `callback(step)` is called after each optimiser step."""
    started = time.perf_counter()
    target_np = _as_target(target_image, size)
    with cpu_threads(threads):  # small tensor ops: one thread beats two contending ones
        scene, initial = None, None
        considered: list[tuple[str, dict]] = []  # (text, score): the input and each phase's end
        if svg_text:
            try:
                initial = score_svg(svg_text, target_np)
                considered.append((svg_text, initial))
                scene = scene_from_svg(svg_text)
            except SVGError:  # unreadable here: start from an empty canvas (the input still competes)
                scene = None
        if scene is None:
            scene = Scene(float(size), float(size))
        scene.shapes = scene.shapes[:max_paths]
        dtype = torch.float32
        target = torch.from_numpy(target_np.copy()).to(dtype) / 255
        half = F.avg_pool2d(target.permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
        unit = max(scene.width, scene.height) / size  # canvas units per pixel
        result = RefineResult("", {}, initial)

        def consider(step: int):
            if scene.shapes:
                variants = _variants(scene, precision, size, target_np)
                considered.extend(variants)
                result.history += [(step, score["ssim"], len(text)) for text, score in variants]

        rounds = 4 if add_paths else 1  # shapes are added at the start of rounds 1.. (and 0 when empty)
        add_at = {int(steps * r / rounds) for r in range(1, rounds)}
        if add_paths and not scene.shapes:
            add_at.add(0)
        prune_at = int(steps * 0.6)
        optimizer = _optimizer(scene, lr * unit, 0.02)
        for step in range(steps):
            check_time()  # --max-seconds (the whole command's); time_limit bounds refinement alone
            if time.perf_counter() - started > time_limit:
                break
            frac = step / max(1, steps)
            if step in add_at and len(scene.shapes) < max_paths:
                with torch.no_grad():
                    image = render(scene, size).numpy()
                budget = max(1, (max_paths - len(scene.shapes)) // max(1, rounds - 1)) if scene.shapes else 4
                budget = min(budget, max_paths - len(scene.shapes))  # never past max_paths (an empty canvas too)
                new = _add_shapes(scene, image, target_np.astype(np.float32) / 255, budget, dtype) if budget > 0 else []
                if new:
                    result.added += len(new)
                    optimizer = _optimizer(scene, lr * unit, 0.02)
            if step == prune_at and scene.shapes:
                result.pruned += _prune(scene, target, DEFAULT_TAU)
                optimizer = _optimizer(scene, lr * unit, 0.02)
            if not scene.shapes:
                break
            coarse = frac < COARSE_SHARE
            res, tgt = (size // 2, half) if coarse else (size, target)
            # filter width in pixels of the working resolution: wide early, cairo-like at the end
            tau = 1.0 - 0.5 * frac / COARSE_SHARE if coarse else \
                0.6 + (DEFAULT_TAU + 0.1 - 0.6) * (frac - COARSE_SHARE) / (1 - COARSE_SHARE)
            decay = 0.5 * (1 + math.cos(math.pi * frac)) * 0.9 + 0.1
            for group in optimizer.param_groups:
                group["lr"] = group["base"] * decay
            optimizer.zero_grad(set_to_none=True)
            loss = _loss(render(scene, res, tau=tau), tgt)
            loss.backward()
            optimizer.step()
            scene.clamp_()
            result.steps += 1
            if callback is not None:
                callback(step)
            if step + 1 in add_at or step + 1 == prune_at:
                consider(step + 1)  # score each phase's end: the best text may be mid-way
        if scene.shapes:
            result.pruned += _prune(scene, target, DEFAULT_TAU)
            consider(result.steps)
            for tolerance in (0.25, 0.5, 1.0):  # coarser and coarser: the chooser weighs SSIM against bytes
                if _simplify(scene, size, tolerance):
                    consider(result.steps)
        if not considered:
            raise SVGError("refinement produced no drawing (the target may be blank)")
        result.svg, result.score = _choose(considered)
        result.seconds = round(time.perf_counter() - started, 3)
        return result
