"""The glyph classifier that scores generated images: its accuracy on samples of a class, and
its penultimate features for Fréchet distance / precision / recall.

It is trained here on real glyphs of the training fonts (`genstudio train glyph-classifier`), so
the Fréchet distance it gives is *not* FID (no Inception network): benchmarks say so.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class GlyphClassifier(ModelMixin, ConfigMixin):
    """A small CNN: (B, 1, 32, 32) in [-1, 1] (ink = 1) -> logits over the classes."""

    @register_to_config
    def __init__(self, num_classes: int = 62, channels: int = 32, feature_dim: int = 128, image_size: int = 32):
        super().__init__()
        c = channels
        self.body = nn.Sequential(_conv(1, c), _conv(c, c), nn.AvgPool2d(2),
                                  _conv(c, 2 * c), _conv(2 * c, 2 * c), nn.AvgPool2d(2),
                                  _conv(2 * c, 4 * c), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.features_head = nn.Sequential(nn.Linear(16 * c, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_head(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def uint8_to_input(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) uint8 ink images -> (N, 1, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1)[:, None]


@torch.no_grad()
def classify(model: GlyphClassifier, images: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float32, predicted labels (N,)) of uint8 images (N, 32, 32)."""
    model.eval()
    feats, preds = [], []
    for i in range(0, len(images), batch):
        f = model.features(uint8_to_input(images[i:i + batch]).to(model.device, model.dtype))
        feats.append(f.float().cpu())
        preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats).numpy(), torch.cat(preds).numpy()


def classifier_loss(model: GlyphClassifier, batch: dict):
    logits = model(batch["image"])
    loss = F.cross_entropy(logits, batch["label"])
    return loss, {"accuracy": float((logits.argmax(1) == batch["label"]).float().mean())}
