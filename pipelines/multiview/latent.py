"""The small autoencoder that puts MV-Adapter's base in a latent space, as SD's VAE does for the reference.

WHY: the pixel-space `mv-base` preset "S" (64 px, self-attention over 64 x 64 = 4096 tokens in its
first level) took 79 s per training step at batch 32 on a 2-core CPU with 1 thread (bf16 autocast;
130 s in fp32). The same UNet on 16 x 16 x 4 latents takes 1.4 s (+ 0.2 s to encode the batch), and
MV-Adapter then attaches exactly as on SD: branches on the base's self-attentions, the T2IAdapter
camera encoder with downscale_factor = the VAE's factor (8 for SD's VAE, 4 here), the base frozen;
the adapter step (8 objects x 4 views + reference) takes 2.8 s.
(Pixel space on a 2x pixel-unshuffled input, attention from 32 x 32 down, measured 7.5 s: too slow.)

The model is diffusers' `AutoencoderKL` (what the pipeline loads from the base's `vae/`), trained by
the `mv-vae` recipe on the multiview renders: L1 reconstruction + a small KL weight (SD's 1e-6 KL,
without its LPIPS / GAN terms, which need weights or a discriminator this offline recipe does not
have; the renders are flat-shaded primitives, where L1 alone is sharp enough).

SCALING (SD's `scaling_factor`, 0.18215 for its VAE): the `mv-base` recipe measures 1 / std of the
VAE's latents on its training views once, writes it into the VAE config and keeps that VAE in the
base run's `vae/` folder, so training (`to_latents`) and the pipeline (`vae.config.scaling_factor`)
use the same number, and a resumed run keeps it.
"""
from __future__ import annotations

from pathlib import Path

import torch

# name -> AutoencoderKL widths (one level per entry: factor 2^(n-1)) and layers per block.
# S: 2.7M parameters (5.4 MB fp16), 64 px RGB -> 16 x 16 x 4; 2.1 s per step at batch 32 (1 thread, bf16).
VAE_CONFIGS = {
    "tiny": dict(block_out_channels=(8, 8), layers_per_block=1),
    "S": dict(block_out_channels=(32, 64, 128), layers_per_block=1),
}
LATENT_CHANNELS = 4
SCALING_SAMPLES = 512   # training views whose latent std sets the scaling factor


def make_vae(preset: str = "S", image_size: int = 64):
    from diffusers import AutoencoderKL
    if preset not in VAE_CONFIGS:
        raise ValueError(f"mv-vae: unknown preset {preset!r}; choose from {', '.join(VAE_CONFIGS)}")
    cfg = VAE_CONFIGS[preset]
    n = len(cfg["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=image_size,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=min(32, cfg["block_out_channels"][0] // 2), **cfg)


def vae_factor(vae) -> int:
    """Pixels per latent along a side (what the pipeline's image_size and the T2IAdapter assume)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def load_vae(path):
    """A VAE folder, an mv-vae run (its final/ weights) or a base folder holding vae/."""
    from diffusers import AutoencoderKL
    from genstudio.export import run_weights
    path = Path(path)
    folder = path / "vae" if (path / "vae" / "config.json").exists() else run_weights(path)
    return AutoencoderKL.from_pretrained(folder).float().eval().requires_grad_(False)


def base_vae(base) -> "torch.nn.Module | None":
    """The vae/ of an mv-base run or base folder (the pipeline's rule), or None for a pixel-space base."""
    return load_vae(base) if (Path(base) / "vae" / "config.json").exists() else None


@torch.no_grad()
def to_latents(vae, pixels: torch.Tensor, sample: bool = True) -> torch.Tensor:
    """[-1, 1] pixels -> scaled latents. Targets sample the posterior (SD's training); the reference
    image uses its mode, as the pipeline encodes it."""
    vae.to(pixels.device)
    dist = vae.encode(pixels.to(vae.dtype)).latent_dist
    z = dist.sample() if sample else dist.mode()
    return (z * vae.config.scaling_factor).to(pixels.dtype)


@torch.no_grad()
def measure_scaling_factor(vae, dataset, samples: int = SCALING_SAMPLES, batch: int = 64) -> float:
    """1 / std of the unscaled posterior means on evenly spaced training views (deterministic)."""
    index = torch.linspace(0, len(dataset) - 1, min(samples, len(dataset))).long().unique().tolist()
    latents = []
    for k in range(0, len(index), batch):
        pixels = torch.stack([dataset[i]["image"] for i in index[k:k + batch]])
        latents.append(vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float())
    std = float(torch.cat(latents).std())
    if not std > 0:
        raise ValueError("mv-base: the VAE's latents have zero spread (an untrained or broken VAE?)")
    return 1.0 / std


def prepare_base_vae(source, run_dir, dataset):
    """The base run's VAE: run_dir/vae when it is there (a resumed run keeps its scaling), else the
    `source` VAE with its measured scaling factor, saved to run_dir/vae for the pipeline."""
    import shutil
    from genstudio.export import save_safetensors
    kept = Path(run_dir) / "vae"
    if (kept / "config.json").exists():
        return load_vae(kept)
    vae = load_vae(source)
    vae.register_to_config(scaling_factor=measure_scaling_factor(vae, dataset))
    partial = kept.with_name("vae.partial")   # never a half-written vae/ that a resume would trust
    shutil.rmtree(partial, ignore_errors=True)
    save_safetensors(vae, partial)
    partial.rename(kept)
    return vae
