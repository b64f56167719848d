"""AttrOP: attribute-guided optimisation of a Vec2Face input vector, bounded in iterations and time.

    result = attrop(model, v, [AttrTarget(pose_proxy, 0.2, name="pose")], max_iters=50, max_seconds=10)
    result.vector, result.image          # the best vector found and its face (deterministic path)
    result.met, result.iterations        # whether every target was reached, how many model calls ran

The paper (and the reference's `gen_image`) changes the identity vector until a pose / quality
scorer says the face looks right while the recogniser still says it is the same person, and it
repeats until the thresholds are met, with no cap: a target the model cannot reach loops forever
(HaiyuWu/Vec2Face #18). Here the loop is gradient descent on the vector (Adam) with:

- a HARD cap of `max_iters` model evaluations and an optional `max_seconds` budget (perf_counter);
  at least one evaluation always runs, so there is always an answer;
- the identity kept by construction, not by a penalty: after every step the vector is projected
  back onto the cap {u : |u| = 1, cos(u, v0) >= min_similarity} around the original vector v0;
- the BEST result so far returned whatever stopped the loop (target met, iteration cap, time),
  with the reason, the scores and how many iterations ran.

SCORERS are differentiable callables (B, 3, H, W) images in [-1, 1] -> (B,) scores (`TargetScorer`).
Until heads trained on the data's options (pose augmentation, the `mouth` option) exist, two
hand-made proxies stand in; they measure something visible, not a learned attribute:
- `pose_proxy`: the horizontal offset of the face's centre of mass (pixels that differ from the
  background colour, estimated on the image border), in [-1, 1] of the half-width (+ = right).
- `expression_proxy`: the luminance contrast in the mouth region (rows 60-85 %, columns 30-70 %),
  2 x std, in [0, 1]: ~0 for a flat closed mouth, higher for an open mouth, teeth or a broad smile.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F

from genstudio.limits import check_time

MAX_ITERS = 500  # what the pipeline and the CLI accept; `attrop` itself takes any cap >= 1


class TargetScorer(Protocol):
    """A differentiable attribute: images (B, 3, H, W) in [-1, 1] -> scores (B,)."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------- proxy scorers

def _background(images: torch.Tensor, border: int = 2) -> torch.Tensor:
    """(B, 3, 1, 1): the mean colour of the image frame (avatars sit on a flat background)."""
    frame = torch.cat([images[..., :border, :].flatten(2), images[..., -border:, :].flatten(2),
                       images[..., :, :border].flatten(2), images[..., :, -border:].flatten(2)], 2)
    return frame.mean(2)[..., None, None].detach()


def foreground_weight(images: torch.Tensor, softness: float = 0.2) -> torch.Tensor:
    """(B, H, W) in [0, 1): how far each pixel's colour is from the background (soft, differentiable)."""
    distance = (images.float() - _background(images.float())).pow(2).sum(1).add(1e-8).sqrt()
    return torch.tanh(distance / softness)


def pose_proxy(images: torch.Tensor) -> torch.Tensor:
    """Horizontal offset of the foreground's centre of mass, in [-1, 1] of the half-width (+ = right)."""
    w = foreground_weight(images)
    x = torch.linspace(-1.0, 1.0, images.shape[-1], device=images.device)
    return (w * x).sum((1, 2)) / w.sum((1, 2)).clamp_min(1e-6)


def expression_proxy(images: torch.Tensor, rows=(0.60, 0.85), cols=(0.30, 0.70)) -> torch.Tensor:
    """A stand-in for an expression head: 2 x std of the luminance in the mouth region, in [0, 1]."""
    H, W = images.shape[-2:]
    region = images.float()[..., int(rows[0] * H):math.ceil(rows[1] * H), int(cols[0] * W):math.ceil(cols[1] * W)]
    luminance = (0.299 * region[:, 0] + 0.587 * region[:, 1] + 0.114 * region[:, 2] + 1) / 2
    return (2 * luminance.flatten(1).std(1)).clamp(0, 1)


SCORERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"pose": pose_proxy, "expression": expression_proxy}


# ---------------------------------------------------------------- the optimisation

@dataclass
class AttrTarget:
    """Reach `target` (within `tolerance`) on `scorer`'s score."""
    scorer: TargetScorer
    target: float
    tolerance: float = 0.05
    name: str = "attribute"
    weight: float = 1.0


@dataclass
class AttrOPResult:
    vector: torch.Tensor            # (D,) the best vector found (unit norm, cos to v0 >= min_similarity)
    image: torch.Tensor             # (3, H, W) in [-1, 1]: the model's face of `vector` (mask_ratio 0)
    scores: dict[str, float]        # each target's score at the best vector
    start_scores: dict[str, float]  # ... and at the original vector
    similarity: float               # cos(vector, original)
    iterations: int                 # model evaluations that ran (<= max_iters)
    met: bool                       # every target within its tolerance
    stopped: str                    # "target met" | "max_iters" | "max_seconds"
    seconds: float = 0.0
    errors: list[float] = field(default_factory=list)  # the worst normalised error per iteration

    def summary(self) -> dict:
        return {"iterations": self.iterations, "met": self.met, "stopped": self.stopped,
                "scores": {k: round(v, 4) for k, v in self.scores.items()},
                "start_scores": {k: round(v, 4) for k, v in self.start_scores.items()},
                "similarity": round(self.similarity, 4), "seconds": round(self.seconds, 3)}


def project_to_cap(vector: torch.Tensor, center: torch.Tensor, min_similarity: float) -> torch.Tensor:
    """The unit vector nearest `vector` whose cosine to the unit vector `center` is >= min_similarity."""
    u = F.normalize(vector, dim=-1)
    cos = float((u * center).sum())
    if cos >= min_similarity:
        return u
    orthogonal = u - cos * center
    if float(orthogonal.norm()) < 1e-4:  # (anti)parallel: rounding noise has no direction; take any on the rim
        orthogonal = torch.roll(center, 1)
    orthogonal = F.normalize(orthogonal - float((orthogonal * center).sum()) * center, dim=-1)
    return min_similarity * center + math.sqrt(max(0.0, 1 - min_similarity ** 2)) * orthogonal


def attrop(model: Callable[..., torch.Tensor], vector: torch.Tensor, targets: Sequence[AttrTarget],
           max_iters: int = 50, max_seconds: float | None = None, min_similarity: float = 0.8,
           lr: float = 0.01) -> AttrOPResult:
    """Optimise `vector` (D,) so that `model(vector[None], mask_ratio=0.0)`'s face meets every
    target, its cosine to the original never below `min_similarity`. Stops at the first of: every
    target met, `max_iters` evaluations, `max_seconds`; returns the best vector seen either way.
    The command's --max-seconds deadline (genstudio.limits) still raises between iterations."""
    if not targets:
        raise ValueError("attrop needs at least one target")
    if int(max_iters) < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if not -1.0 <= min_similarity <= 1.0:
        raise ValueError(f"min_similarity must be in [-1, 1], got {min_similarity}")
    started = time.perf_counter()
    original = F.normalize(vector.detach().float().reshape(-1), dim=-1)
    v = original.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=lr)
    best: tuple[float, torch.Tensor, torch.Tensor, dict] | None = None
    start_scores: dict[str, float] = {}
    errors: list[float] = []
    stopped, iterations = "max_iters", 0
    for iterations in range(1, int(max_iters) + 1):
        image = model(v[None], mask_ratio=0.0)
        scores = [t.scorer(image.float())[0] for t in targets]
        values = {t.name: float(s.detach()) for t, s in zip(targets, scores)}
        error = max(abs(values[t.name] - t.target) / t.tolerance for t in targets)
        errors.append(error)
        if iterations == 1:
            start_scores = values
        if best is None or error < best[0]:
            best = (error, v.detach().clone(), image[0].detach().clone(), values)
        if error <= 1.0:
            stopped = "target met"
            break
        if max_seconds is not None and time.perf_counter() - started >= max_seconds:
            stopped = "max_seconds"
            break
        check_time()
        if iterations == int(max_iters):
            break  # no step whose result would never be evaluated
        loss = sum(t.weight * (s - t.target).pow(2) for t, s in zip(targets, scores))
        (grad,) = torch.autograd.grad(loss, v)  # gradients for the vector only, never the model's weights
        v.grad = grad
        optimizer.step()
        with torch.no_grad():
            v.copy_(project_to_cap(v, original, min_similarity))
    error, best_vector, best_image, best_scores = best
    return AttrOPResult(vector=best_vector, image=best_image, scores=best_scores, start_scores=start_scores,
                        similarity=float((best_vector * original).sum()), iterations=iterations,
                        met=error <= 1.0, stopped=stopped, seconds=time.perf_counter() - started, errors=errors)
