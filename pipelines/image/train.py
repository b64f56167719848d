"""Recipes of the class-conditional image pipeline, in the order they run:

    genstudio train glyph-classifier --output-dir runs/glyph-classifier   # the benchmark's feature space
    genstudio train image-vae --output-dir runs/glyphs-vae                # AutoencoderKL, 32x32x1 -> 8x8x4
    genstudio train image-dit --set vae='"runs/glyphs-vae"' --output-dir runs/dit-glyphs-S

`image-dit` encodes every training glyph once with the frozen VAE (posterior mean and std), then
trains the DiT on z = scaling_factor * (mean + std * noise) with the epsilon loss and class-label
dropout (classifier-free guidance). Its export writes a whole pipeline folder: transformer/ (DiT),
vae/ (with the measured scaling_factor), scheduler/, model_index.json (class names).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from genstudio.diffusion import make_scheduler
from genstudio.dit import DiT
from genstudio.train import Recipe, TensorDictDataset, parse_config

from .classifier import GlyphClassifier, classifier_loss, uint8_to_input
from .data import CLASSES, load_glyph_classes
from .models import LATENT_STATS, latent_loss, load_vae, make_dit, make_vae, write_model_index

def held_out(plain_only: bool = False):
    """The val fonts, or the test fonts where the build has no val family (DejaVu alone: 3 families)."""
    from genstudio.data.registry import DataError
    try:
        return load_glyph_classes("val", plain_only=plain_only)
    except DataError:
        print("[image] no val fonts in this build: evaluating on the test fonts (install more fonts, see DATA.md)")
        return load_glyph_classes("test", plain_only=plain_only)


def glyph_images(images: np.ndarray, labels: np.ndarray) -> TensorDictDataset:
    """uint8 glyphs (N, 32, 32) + labels -> items {"image": (1, 32, 32) in [-1, 1], "label"}."""
    return TensorDictDataset(image=uint8_to_input(images), label=torch.from_numpy(labels))


# ---------------------------------------------------------------- classifier

@dataclass
class ClassifierOptions:
    channels: int = 32
    feature_dim: int = 128


def classifier_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, ClassifierOptions, recipe="glyph-classifier", output_dir="runs/glyph-classifier",
                                   steps=1500, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=None,
                                   save_every=500, weight_decay=0.01)
    images, labels = load_glyph_classes("train")
    val_images, val_labels = held_out()
    model = GlyphClassifier(num_classes=len(CLASSES), channels=opts.channels, feature_dim=opts.feature_dim)

    @torch.no_grad()
    def evaluate(m):
        logits = m(uint8_to_input(val_images).to(m.device))
        return {"val_accuracy": float((logits.argmax(1).cpu().numpy() == val_labels).mean())}

    return Recipe(model, glyph_images(images, labels), classifier_loss, train_cfg, eval_fn=evaluate,
                  name="glyph-classifier", options=opts)


def export_classifier(run_dir, to, dtype: torch.dtype) -> None:
    from genstudio.export import export_model
    export_model(GlyphClassifier, run_dir, to, dtype)


# ---------------------------------------------------------------- VAE

@dataclass
class VAEOptions:
    channels: tuple[int, ...] = (16, 32, 32)   # one entry per resolution: 3 -> 4x down (32x32 -> 8x8)
    latent_channels: int = 4
    kl_weight: float = 1e-5


def vae_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, VAEOptions, recipe="image-vae", output_dir="runs/glyphs-vae", steps=1500,
                                   batch_size=32, lr=1e-3, warmup_steps=100, save_every=500)
    images, labels = load_glyph_classes("train")
    val = uint8_to_input(held_out(plain_only=True)[0][::4])
    model = make_vae(opts.channels, opts.latent_channels)

    def loss_fn(m, batch):
        x = batch["image"]
        posterior = m.encode(x).latent_dist
        recon = m.decode(posterior.sample()).sample
        rec = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        kl = posterior.kl().mean() / x[0].numel()
        return rec + opts.kl_weight * kl, {"kl": float(kl.detach())}

    @torch.no_grad()
    def evaluate(m):
        recon = m.decode(m.encode(val.to(m.device)).latent_dist.mode()).sample.clamp(-1, 1).cpu()
        mse = float(((recon - val) / 2).pow(2).mean())
        return {"val_psnr": 10 * float(np.log10(1 / max(mse, 1e-12)))}

    return Recipe(model, glyph_images(images, labels), loss_fn, train_cfg, eval_fn=evaluate, name="image-vae",
                  options=opts)


def export_vae(run_dir, to, dtype: torch.dtype) -> None:
    from diffusers import AutoencoderKL

    from genstudio.export import export_model
    export_model(AutoencoderKL, run_dir, to, dtype)


# ---------------------------------------------------------------- DiT

@dataclass
class DiTOptions:
    vae: str = "runs/glyphs-vae"      # an image-vae run, or a folder with an AutoencoderKL (or its vae/)
    preset: str = "S"                 # tiny / S / B (DIT_PRESETS)
    patch_size: int = 2               # on the 8x8 latent grid: 16 tokens
    class_dropout_prob: float = 0.1   # label dropout for classifier-free guidance
    label_lr_multiplier: float = 10.0  # the class-embedding table's LR factor (see dit_recipe)
    init_from: Optional[str] = None   # start from these DiT weights (a run's checkpoint-N or final/)


@torch.no_grad()
def encode_latents(vae, images: np.ndarray, batch: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior (mean, std) of uint8 glyphs (N, 32, 32), each (N, C, h, w) float32."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(uint8_to_input(images[i:i + batch])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


class LatentGlyphs(Dataset):
    """Precomputed posteriors; each access draws a fresh latent sample (as encoding on the fly would)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, labels, scaling_factor: float):
        self.mean, self.std, self.labels, self.scale = mean, std, torch.as_tensor(labels), scaling_factor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        z = self.mean[i] + self.std[i] * torch.randn_like(self.std[i])
        return {"latent": z * self.scale, "label": self.labels[i]}


def dit_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, DiTOptions, recipe="image-dit", output_dir="runs/dit-glyphs-S", steps=6000,
                                   batch_size=64, lr=3e-4, warmup_steps=200, save_every=1000, weight_decay=0.0)
    vae = load_vae(opts.vae)
    images, labels = load_glyph_classes("train")
    mean, std = encode_latents(vae, images)
    scaling_factor = float(1.0 / mean.std())  # as Stable Diffusion's 0.18215: unit-variance latents
    _, C, h, _ = mean.shape
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / LATENT_STATS).write_text(json.dumps({"vae": str(Path(opts.vae).resolve()), "scaling_factor": scaling_factor}))
    model = make_dit(opts.preset, len(CLASSES), h, C, opts.patch_size, opts.class_dropout_prob)
    if opts.init_from:
        from genstudio.export import run_weights
        model.load_state_dict(DiT.from_pretrained(run_weights(opts.init_from)).state_dict())
    print(f"[image-dit] preset {opts.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on "
          f"{C}x{h}x{h} latents, {len(labels)} training glyphs, scaling factor {scaling_factor:.3f}")
    scheduler = make_scheduler("ddpm")

    # Held-out fonts (val split), fixed timesteps and noise: a denoising loss that only the model changes.
    val_images, val_labels = held_out(plain_only=True)
    val_mean, _ = encode_latents(vae, val_images)
    val_labels = torch.from_numpy(val_labels)
    g = torch.Generator().manual_seed(0)
    val_t = torch.randint(0, 1000, (len(val_labels),), generator=g)
    val_noise = torch.randn(val_mean.shape, generator=g)

    @torch.no_grad()
    def evaluate(m):
        from genstudio.diffusion import diffusion_loss
        x0 = (val_mean * scaling_factor).to(m.device)
        loss = diffusion_loss(m, x0, scheduler, "epsilon", timesteps=val_t.to(m.device), noise=val_noise.to(m.device),
                              y=val_labels.to(m.device))
        return {"val_loss": float(loss)}

    # DiT initialises the class table at std 0.02 while the timestep embedding grows to norms of
    # 10-45: in a short CPU run the label stays drowned (at 2,000 steps conditional and unconditional
    # predictions differed by < 1 %). A larger LR on the table alone lets the class speak early.
    return Recipe(model, LatentGlyphs(mean, std, labels, scaling_factor), latent_loss(scheduler), train_cfg,
                  eval_fn=evaluate, name="image-dit", options=opts,
                  lr_multipliers={"y_embedder": opts.label_lr_multiplier})


def export_dit(run_dir, to, dtype: torch.dtype) -> None:
    """A whole pipeline folder: the run's DiT + the VAE it was trained on (with its scaling factor)."""
    from genstudio.export import run_weights, save_safetensors
    stats = json.loads((Path(run_dir) / LATENT_STATS).read_text())
    to = Path(to)
    save_safetensors(DiT.from_pretrained(run_weights(run_dir)).to(dtype), to / "transformer")
    vae = load_vae(stats["vae"])
    vae.register_to_config(scaling_factor=stats["scaling_factor"])
    save_safetensors(vae.to(dtype), to / "vae")
    make_scheduler("ddim").save_pretrained(to / "scheduler")
    write_model_index(to)




classifier_recipe.export = export_classifier  # genstudio export finds each recipe's exporter here
vae_recipe.export = export_vae
dit_recipe.export = export_dit
