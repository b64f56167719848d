"""IconCLIP: a small contrastive image-text model, the text->SVG benchmark's feature space.

An image tower (a small CNN on renders of icons, (B, 3, 64, 64) in [-1, 1], white background) and
a text tower (an MLP on the frozen MiniLM sentence embedding, genstudio.text) are trained with the
symmetric InfoNCE loss of CLIP, on the *training split* of the captioned icons only
(`genstudio train text2svg-clip --output-dir runs/text2svg-clip`; the loss and recipe are in train.py). The benchmark uses it for
text-image alignment (cosine similarity of an icon's render with its prompt) and for Fréchet
distances / precision / recall in its image-feature space.

It is not OpenAI's CLIP and has no Inception network: scores computed with it are *not* CLIP
scores and *not* FID, and are only comparable with scores from the same IconCLIP checkpoint. The
benchmark must say so wherever it reports them. Val/test labels are never trained on (the split
is by label, pipelines/text2svg/data.py), so alignment on test prompts is measured on unseen words.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .data import render


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class IconCLIP(ModelMixin, ConfigMixin):
    """Image tower (CNN) + text tower (MLP on MiniLM pooled embeddings) -> a shared, L2-normalised
    embed_dim space; `forward(images, text_emb)` gives CLIP's logits_per_image (B_img, B_txt)."""

    @register_to_config
    def __init__(self, text_dim: int = 384, embed_dim: int = 128, channels: int = 32, image_size: int = 64):
        super().__init__()
        c = channels
        self.image_tower = nn.Sequential(
            _conv(3, c), nn.AvgPool2d(2),                                   # 64 -> 32
            _conv(c, 2 * c), _conv(2 * c, 2 * c), nn.AvgPool2d(2),          # 32 -> 16
            _conv(2 * c, 4 * c), _conv(4 * c, 4 * c), nn.AvgPool2d(2),      # 16 -> 8
            _conv(4 * c, 4 * c), nn.AdaptiveAvgPool2d(2), nn.Flatten(),     # -> 16c
            nn.Linear(16 * c, 2 * embed_dim), nn.SiLU(), nn.Linear(2 * embed_dim, embed_dim))
        self.text_tower = nn.Sequential(nn.Linear(text_dim, text_dim), nn.SiLU(), nn.Linear(text_dim, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] (resized to image_size if needed) -> (B, embed_dim), unit norm."""
        return F.normalize(self.image_tower(self._resize(images)), dim=-1)

    def text_features(self, text_emb: torch.Tensor) -> torch.Tensor:
        """(B, text_dim) MiniLM pooled embeddings -> (B, embed_dim), unit norm."""
        return F.normalize(self.text_tower(text_emb), dim=-1)

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        scale = self.logit_scale.exp().clamp(max=100)
        return scale * self.image_features(images) @ self.text_features(text_emb).t()


def _param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


# ---------------------------------------------------------------- what the benchmark calls

def load_clip(path) -> IconCLIP:
    """An IconCLIP checkpoint folder (export or a run's final/) -> the model, eval, float32."""
    return IconCLIP.from_pretrained(str(path), torch_dtype=torch.float32).float().eval()


@torch.no_grad()
def embed_images(model: IconCLIP, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1], any H, W (resized to the model's image_size, bilinear with
    antialiasing) -> (N, embed_dim) float32 unit-norm image features."""
    p = _param(model)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.as_tensor(images[i:i + batch]).to(p.device, torch.float32)
        out.append(model.image_features(model._resize(x).to(p.dtype)).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros((0, model.config.embed_dim), np.float32)
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_texts(model: IconCLIP, texts: list[str]) -> np.ndarray:
    """Texts -> (N, embed_dim) float32 unit-norm text features (through the frozen MiniLM)."""
    from genstudio.text import get_text_encoder
    if not texts:
        return np.zeros((0, model.config.embed_dim), np.float32)
    p = _param(model)
    emb = get_text_encoder().encode(list(texts)).to(p.device, p.dtype)
    return model.text_features(emb).float().cpu().numpy()


def alignment(model: IconCLIP, images: torch.Tensor, texts: list[str]) -> np.ndarray:
    """Cosine similarity of each image with its own text in IconCLIP space: (N,) in [-1, 1]."""
    if len(images) != len(texts):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    return (embed_images(model, images) * embed_texts(model, texts)).sum(1)
