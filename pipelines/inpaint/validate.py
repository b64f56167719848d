"""Known-pixel validation of the decoder's residual (our addition, not in the PUT paper).

A P-VQVAE with a reference fill (`reference_fill="biharmonic"` or `"harmonic"`) decodes a
residual over a classical fill. On some images that residual helps (texture, edges a smooth fill
cannot continue), on others it only adds error (smooth gradients the fill already gets right, or
tokens the transformer got wrong). Which case an image is can be measured without its hidden
pixels: hide a few more *known* pixels (random stroke/box masks, outside the hole), fill them the
same way, and see how much of the residual to keep there. The weight that does best on those
validation holes is applied to the real hole: `reference + weight * (decoded - reference)`.
"""
from __future__ import annotations

import numpy as np
import torch

from .masks import random_hole_mask

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)   # residual weights tried
VALIDATION_RATIO = (0.05, 0.15)         # area of each validation hole (a share of the image)


def validation_holes(hole: np.ndarray, count: int, rng: np.random.Generator,
                     ratio: tuple[float, float] = VALIDATION_RATIO) -> np.ndarray:
    """(count, H, W) bool: random stroke/box holes drawn over the known pixels only (the real `hole`
    (H, W) is cut out of each), so every validation pixel has a ground truth. Masks left empty by
    that cut are kept as they are (they add nothing to the choice)."""
    h, w = hole.shape
    return np.stack([random_hole_mask(h, w, ratio, rng) & ~hole for _ in range(count)]) if count else \
        np.zeros((0, h, w), bool)


def residual_weight(target: torch.Tensor, decoded: torch.Tensor, reference: torch.Tensor, holes: torch.Tensor,
                    weights=WEIGHTS) -> float | None:
    """The weight in `weights` whose blend `reference + weight * (decoded - reference)` has the least
    squared error against `target` on the `holes`.

    target (3, H, W) the image (its pixels under `holes` are known); decoded, reference (K, 3, H, W)
    the decoder's output and the reference fill with those holes hidden; holes (K, 1, H, W) bool.
    None when the holes are empty (nothing to validate on)."""
    holes = holes.expand_as(decoded)
    if not holes.any():
        return None
    residual, miss = (decoded - reference).float()[holes], (target.float()[None] - reference.float()).expand_as(
        decoded)[holes]
    errors = [float(((w * residual - miss) ** 2).sum()) for w in weights]
    return float(weights[int(np.argmin(errors))])


__all__ = ["WEIGHTS", "VALIDATION_RATIO", "validation_holes", "residual_weight"]
