"""IconCLIP: a small contrastive image-text model, the text->SVG benchmark's feature space.

An image tower (a small CNN on renders of icons, (B, 3, 64, 64) in [-1, 1], white background) and
a text tower (an MLP on the frozen MiniLM sentence embedding, genstudio.text) are trained with the
symmetric InfoNCE loss of CLIP, on the *training split* of the captioned icons only
(`genstudio train text2svg-clip --output-dir runs/text2svg-clip`). The benchmark uses it for
text-image alignment (cosine similarity of an icon's render with its prompt) and for Fréchet
distances / precision / recall in its image-feature space.

It is not OpenAI's CLIP and has no Inception network: scores computed with it are *not* CLIP
scores and *not* FID, and are only comparable with scores from the same IconCLIP checkpoint. The
benchmark must say so wherever it reports them. Val/test labels are never trained on (the split
is by label, pipelines/text2svg/data.py), so alignment on test prompts is measured on unseen words.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from genstudio.train import Recipe, parse_config

from .data import TextSVGDataset, collate, label_of, load_items, render


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


def clip_loss(model: IconCLIP, batch: dict):
    """Symmetric InfoNCE over the batch; returns (loss, {"accuracy": image->text top-1}).

    Captions are drawn at random (label; label + kind; + tags), so two icons of one batch can carry
    the same text ("rocket" for the phosphor and the tabler rocket). Calling one of them a negative
    of the other's image would push apart pairs that are in fact matches, so every pair whose texts
    are identical counts as a positive: each row's (and column's) loss is -log of the softmax mass
    on all its positives (multi-positive InfoNCE: plain InfoNCE when captions are distinct, 0 at
    best), and top-1 is right when it lands on any of them.
    """
    from genstudio.text import get_text_encoder
    p = _param(model)
    texts = list(batch["text"])
    text_emb = get_text_encoder().encode(texts).to(p.device, p.dtype)
    logits = model(batch["image"].to(p.device), text_emb).float()          # (B, B): image i vs text j
    ids = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    tid = torch.tensor([ids[t] for t in texts], device=logits.device)
    positive = (tid[:, None] == tid[None, :]).float()                      # symmetric, diagonal = 1
    negative_inf = torch.finfo(logits.dtype).min

    def multi_positive(lg):  # -log sum_{j positive} softmax(lg)_ij, averaged over the rows
        return (lg.logsumexp(1) - lg.masked_fill(positive == 0, negative_inf).logsumexp(1)).mean()

    loss_i, loss_t = multi_positive(logits), multi_positive(logits.t())
    accuracy = positive.gather(1, logits.argmax(1, keepdim=True)).mean()
    return (loss_i + loss_t) / 2, {"accuracy": float(accuracy)}


# ---------------------------------------------------------------- recipe

@dataclass
class CLIPOptions:
    embed_dim: int = 128
    channels: int = 32
    image_size: int = 64
    max_rows: int = 64


EVAL_ICONS = 1000


def clip_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, CLIPOptions, recipe="text2svg-clip", output_dir="runs/text2svg-clip",
                                   steps=3000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=None,
                                   save_every=500, weight_decay=0.01)
    from genstudio.text import get_text_encoder
    dataset = TextSVGDataset(load_items("train", opts.max_rows), opts.max_rows, image_size=opts.image_size)
    val = load_items("val", opts.max_rows)
    if len(val) > EVAL_ICONS:  # an even, deterministic spread over the split
        val = [val[int(k)] for k in np.linspace(0, len(val) - 1, EVAL_ICONS).round()]
    labels = sorted({label_of(item) for item in val})
    label_index = {label: k for k, label in enumerate(labels)}
    truth = torch.tensor([label_index[label_of(item)] for item in val])
    model = IconCLIP(text_dim=get_text_encoder().dim, embed_dim=opts.embed_dim, channels=opts.channels,
                     image_size=opts.image_size)
    cache: dict = {}

    @torch.no_grad()
    def evaluate(m):
        """Image -> label retrieval on (up to EVAL_ICONS) val icons: rank their distinct labels for each icon."""
        if "images" not in cache:  # rendered once, at the first evaluation
            cache["images"] = torch.stack([render(item["matrix"], opts.image_size) for item in val])
        image_f = torch.from_numpy(embed_images(m, cache["images"]))
        label_f = torch.from_numpy(embed_texts(m, labels))
        ranks = (image_f @ label_f.t()).argsort(1, descending=True)
        hit = ranks == truth[:, None]
        return {"val_top1": float(hit[:, :1].any(1).float().mean()), "val_top5": float(hit[:, :5].any(1).float().mean()),
                "val_icons": len(val), "val_labels": len(labels)}

    return Recipe(model, dataset, clip_loss, train_cfg, collate_fn=collate, eval_fn=evaluate,
                  name="text2svg-clip", options=opts)


def export_clip(run_dir, to, dtype: torch.dtype) -> None:
    from genstudio.export import export_model
    export_model(IconCLIP, run_dir, to, dtype)


clip_recipe.export = export_clip


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
