"""The image pipeline's model pieces, shared by training, inference and the benchmark: the DiT
presets, the glyph AutoencoderKL, the latent diffusion objective and the checkpoint index."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from genstudio.diffusion import diffusion_loss
from genstudio.dit import DiT

from .data import CLASSES

DIT_PRESETS = {
    "tiny": dict(hidden_size=64, depth=2, num_heads=2),  # = the core's DiT-tiny (official-layout shapes infer it)
    "S": dict(hidden_size=192, depth=6, num_heads=3),
    "B": dict(hidden_size=384, depth=12, num_heads=6),
}
LATENT_STATS = "latent_stats.json"  # written into an image-dit run: the VAE it used and its scaling factor


def make_vae(channels=(16, 32, 32), latent_channels: int = 4, image_size: int = 32):
    from diffusers import AutoencoderKL
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * len(channels),
                         up_block_types=("UpDecoderBlock2D",) * len(channels), block_out_channels=tuple(channels),
                         layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8,
                         sample_size=image_size)


def load_vae(path: str | Path):
    """An AutoencoderKL from an image-vae run (its final/), a VAE folder, or a pipeline folder's vae/."""
    from diffusers import AutoencoderKL

    from genstudio.export import run_weights
    path = Path(path)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    return AutoencoderKL.from_pretrained(run_weights(path), torch_dtype=torch.float32).eval()


def make_dit(preset: str, num_classes: int, latent_size: int, latent_channels: int, patch_size: int = 2,
             class_dropout_prob: float = 0.1) -> DiT:
    if preset not in DIT_PRESETS:
        raise ValueError(f"unknown preset {preset!r}: one of {', '.join(DIT_PRESETS)}")
    return DiT(input_size=latent_size, patch_size=patch_size, in_channels=latent_channels, num_classes=num_classes,
               class_dropout_prob=class_dropout_prob, learn_sigma=False, **DIT_PRESETS[preset])


def latent_loss(scheduler):
    """The DiT objective on {"latent", "label"} batches (also SIMS's fine-tuning loss)."""
    def loss_fn(m, batch):
        return diffusion_loss(m, batch["latent"], scheduler, "epsilon", y=batch["label"])
    return loss_fn


def write_model_index(folder: Path, **extra) -> None:
    index = {"_class_name": "DiTImagePipeline", "id2label": dict(enumerate(CLASSES)), **extra}
    (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2))
