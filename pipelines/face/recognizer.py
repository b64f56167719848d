"""The face recogniser that gives Vec2Face its identity vectors, its ArcFace head and the LFW-style
verification protocol.

    rec = FaceRecognizer.from_config(RECOGNIZER_CONFIGS["S"])  # (B, 3, 64, 64) in [-1, 1] -> (B, 128) unit vectors
    acc = verification_accuracy(rec, images, identity_pairs("val", 2000))

ARCHITECTURE. The paper's identity model is ArcFace IResNet-100 (112x112 -> 512-d). This is the same
family at our scale: IResNet blocks (BN-conv-BN-PReLU-conv(stride)-BN + shortcut), four stages that
halve the side (64 -> 4), a flatten + linear "fc" and a BatchNorm1d "features" layer, then the
L2 normalisation. Module names follow insightface's `iresnet` (conv1, bn1, prelu, layer1..4, bn2,
fc, features), so `RECOGNIZER_CONFIGS["R100"]` has the official R100's parameter layout.

ARCFACE HEAD. `ArcFaceHead` holds one weight vector per *training* identity and turns cos(theta)
into s * cos(theta + m) for the target class (additive angular margin). It is a training-only part:
it lives in the model during training (`num_classes > 0`) so that the trainer optimises, checkpoints
and resumes it with the rest, and `without_head` drops it at export and whenever the recogniser is
loaded as a feature extractor (the class centres of our training avatars mean nothing to a user).

VERIFICATION. `verification_accuracy` is the LFW protocol: 10 folds over the pairs; for each fold the
threshold on the cosine similarity is the one with the best accuracy on the other nine folds, and the
accuracy is measured on the held-out fold; the result is the mean over folds (the threshold is never
chosen on the pairs it is scored on).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

RECOGNIZER_CONFIGS = {
    "tiny": dict(channels=(8, 8, 16, 16), layers=(1, 1, 1, 1), embed_dim=32),
    "S": dict(channels=(32, 64, 128, 256), layers=(1, 1, 1, 1), embed_dim=128),
    "M": dict(channels=(32, 64, 128, 256), layers=(1, 2, 3, 1), embed_dim=256),
    # insightface's ArcFace IResNet-100 (the paper's identity model): 112x112 -> 512
    "R100": dict(channels=(64, 128, 256, 512), layers=(3, 13, 30, 3), embed_dim=512, image_size=112),
}


# ---------------------------------------------------------------- blocks

class IBasicBlock(nn.Module):
    """insightface's improved residual block: BN before the first conv, PReLU between, BN after."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class ArcFaceHead(nn.Module):
    """Additive angular margin (ArcFace): logits = s * cos(theta_j), except the target class,
    s * cos(theta_y + m). Where theta_y + m would pass pi (cos(theta + m) stops decreasing), the
    target logit is s * (cos(theta_y) - m * sin(m)) instead, as insightface does, so it stays monotonic."""

    def __init__(self, num_classes: int, embed_dim: int, scale: float = 32.0, margin: float = 0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, embed_dim) * 0.01)
        self.scale, self.margin = scale, margin

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast (CUDA autocast would run F.linear in bf16): the margin is a small angle
        with torch.autocast(embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, margin: float | None = None) -> torch.Tensor:
        m = self.margin if margin is None else margin
        cos = self.cosine(embeddings).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, labels[:, None])
        sin = (1 - target.pow(2)).sqrt()
        with_margin = target * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        with_margin = torch.where(target > math.cos(math.pi - m), with_margin, target - m * math.sin(m))
        return self.scale * cos.scatter(1, labels[:, None], with_margin)


# ---------------------------------------------------------------- model

class FaceRecognizer(ModelMixin, ConfigMixin):
    """IResNet: (B, 3, S, S) in [-1, 1] -> (B, embed_dim) L2-normalised identity vectors.

    `forward_features` also returns the four stages' feature maps: Vec2Face's perceptual loss."""

    @register_to_config
    def __init__(self, image_size: int = 64, channels: Sequence[int] = (32, 64, 128, 256),
                 layers: Sequence[int] = (1, 1, 1, 1), embed_dim: int = 128, dropout: float = 0.0,
                 num_classes: int = 0, arcface_scale: float = 32.0, arcface_margin: float = 0.5):
        super().__init__()
        if len(channels) != 4 or len(layers) != 4 or image_size % 16:
            raise ValueError(f"FaceRecognizer needs 4 stages and an image side divisible by 16, got channels="
                             f"{tuple(channels)}, layers={tuple(layers)}, image_size={image_size}")
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0], eps=1e-5)
        self.prelu = nn.PReLU(channels[0])
        cin = channels[0]
        for k, (cout, n) in enumerate(zip(channels, layers), start=1):
            blocks = [IBasicBlock(cin, cout, stride=2)] + [IBasicBlock(cout, cout) for _ in range(n - 1)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(cin, eps=1e-5)
        self.feature_dropout = nn.Dropout(dropout)  # no weights: the official "dropout" name is free to differ
        self.fc = nn.Linear(cin * (image_size // 16) ** 2, embed_dim)
        self.features = nn.BatchNorm1d(embed_dim, eps=1e-5)
        self.head = ArcFaceHead(num_classes, embed_dim, arcface_scale, arcface_margin) if num_classes > 0 else None

    def _check(self, x: torch.Tensor) -> None:
        size = self.config.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            raise ValueError(f"FaceRecognizer expects faces of shape (B, 3, {size}, {size}) in [-1, 1], "
                             f"got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(unnormalised embedding (B, D), [the four stages' maps]) of faces (B, 3, S, S) in [-1, 1]."""
        self._check(x)
        h = self.prelu(self.bn1(self.conv1(x)))
        maps = []
        for k in range(1, 5):
            h = getattr(self, f"layer{k}")(h)
            maps.append(h)
        h = self.feature_dropout(self.bn2(h).flatten(1))
        return self.features(self.fc(h)), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.forward_features(x)[0], dim=-1)


def without_head(model: FaceRecognizer) -> FaceRecognizer:
    """The recogniser alone (its ArcFace class weights dropped): what export ships and Vec2Face uses."""
    if model.head is None:
        return model
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    bare = FaceRecognizer(**{**config, "num_classes": 0})
    bare.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    bare = bare.to(model.device)
    return bare if model.dtype == bare.dtype else bare.to(model.dtype)


def load_recognizer(path: str | Path, device: str | torch.device = "cpu") -> FaceRecognizer:
    """A frozen recogniser (eval mode, no gradients, no head) from a face-recognizer run, one of its
    checkpoint folders, or an exported folder."""
    from genstudio.export import run_weights
    model = without_head(FaceRecognizer.from_pretrained(run_weights(path)))
    return freeze(model.to(device))


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------- verification (LFW protocol)

def to_input(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) (numpy / memmap / tensor) or float (N, 3, H, W) in [-1, 1] -> float (N, 3, H, W)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.array(images))  # a copy: memmaps are read-only
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return images.float()


@torch.no_grad()
def embed_images(model: Callable, images, batch_size: int = 256) -> torch.Tensor:
    """Unit identity vectors (N, D) on the CPU; `model` is any images -> vectors callable."""
    device = getattr(model, "device", torch.device("cpu"))
    if isinstance(model, nn.Module):
        model.eval()
    out = [F.normalize(model(to_input(images[i:i + batch_size]).to(device)).float(), dim=-1).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def pair_similarities(vectors: torch.Tensor, pairs) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, same identity) per pair (i, j, same) of rows of `vectors`."""
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])
    v = F.normalize(vectors.float(), dim=-1)
    sims = (v[i] * v[j]).sum(-1).numpy()
    return sims, np.array([bool(p[2]) for p in pairs])


def _best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midway between neighbouring scores) with the best accuracy on these pairs."""
    s = np.sort(sims)
    candidates = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    accs = ((sims[None, :] > candidates[:, None]) == same[None, :]).mean(1)
    return float(candidates[int(np.argmax(accs))])


def threshold_accuracy(sims: np.ndarray, same: np.ndarray, folds: int = 10, seed: int = 0) -> tuple[float, float]:
    """(mean held-out accuracy, mean threshold) over `folds` folds: each fold is scored with the
    threshold that is best on the other folds."""
    if len(sims) < folds:
        raise ValueError(f"verification needs at least {folds} pairs (one per fold), got {len(sims)}")
    order = np.random.default_rng(seed).permutation(len(sims))
    accs, thresholds = [], []
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        t = _best_threshold(sims[rest], same[rest])
        accs.append(float(((sims[fold] > t) == same[fold]).mean()))
        thresholds.append(t)
    return float(np.mean(accs)), float(np.mean(thresholds))


def verification_accuracy(model: Callable, images, pairs, folds: int = 10, batch_size: int = 256) -> float:
    """LFW-protocol accuracy (10-fold, threshold chosen on the other folds) of `model` on pairs
    (i, j, same) of `images` (uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1])."""
    used = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    row = {k: r for r, k in enumerate(used)}
    vectors = embed_images(model, images[np.array(used)] if isinstance(images, np.ndarray) else images[used],
                           batch_size)
    sims, same = pair_similarities(vectors, [(row[i], row[j], s) for i, j, s in pairs])
    return threshold_accuracy(sims, same, folds)[0]


# ---------------------------------------------------------------- training helpers (also used by bench face)

@dataclass
class RecognizerOptions:
    preset: str = "S"                  # RECOGNIZER_CONFIGS: tiny / S / M
    embed_dim: int = 128               # the identity vector's size (the paper's ArcFace: 512)
    arcface_scale: float = 32.0
    arcface_margin: float = 0.5
    margin_warmup_steps: int = 500     # the margin grows linearly from 0 to arcface_margin
    dropout: float = 0.0
    augment: bool = True               # pose / scale / light jitter (FaceDataset)
    val_pairs: int = 2000


def new_recognizer(opts, num_classes: int) -> FaceRecognizer:
    """A fresh recogniser of `opts.preset`  with an ArcFace head over `num_classes` identities."""
    return FaceRecognizer(**{**RECOGNIZER_CONFIGS[opts.preset], "embed_dim": opts.embed_dim, "dropout": opts.dropout,
                             "num_classes": num_classes, "arcface_scale": opts.arcface_scale,
                             "arcface_margin": opts.arcface_margin})


def arcface_loss(opts):
    """The recogniser's loss: ArcFace, its margin ramping up over `margin_warmup_steps`."""
    def loss_fn(m, batch, step):
        margin = opts.arcface_margin * min(1.0, step / max(opts.margin_warmup_steps, 1))
        embedding, _ = m.forward_features(batch["image"])
        logits = m.head(embedding, batch["identity"], margin)
        loss = F.cross_entropy(logits, batch["identity"])
        return loss, {"accuracy": float((logits.argmax(1) == batch["identity"]).float().mean()), "margin": margin}
    return loss_fn
