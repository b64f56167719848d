"""VQ image tokenizer: conv encoder -> quantiser (VQ, EMA-VQ or SimVQ) -> conv decoder.

A diffusers `ModelMixin, ConfigMixin`, so `save_pretrained` / `from_pretrained` work; its layer
names follow diffusers' VQModel where the roles match (`quant_conv`, `post_quant_conv`,
`quantize`). The quantiser comes from `genstudio.vq` by name, which is how the SimVQ vs. VQ
benchmark swaps one for the other with everything else fixed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from .vq import build_quantizer, quantize_feature_map


# ---------------------------------------------------------------- building blocks
def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch // 4) or 1, ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """Pixel-unshuffle stem (patch_size x patch_size pixels -> channels), then residual convs.

    Working at the token resolution from the first layer keeps every conv small: on a 2-core
    CPU this is ~10x faster to train than a VQGAN-style encoder at full resolution.
    """

    def __init__(self, in_channels: int, channels: int, patch_size: int, num_res_blocks: int, out_channels: int):
        super().__init__()
        self.stem = nn.PixelUnshuffle(patch_size)
        self.conv_in = nn.Conv2d(in_channels * patch_size**2, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels, channels) for _ in range(num_res_blocks)])
        self.norm_out, self.conv_out = _norm(channels), nn.Conv2d(channels, out_channels, 1)

    def forward(self, x):
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(self.stem(x))))))


class Decoder(nn.Module):
    def __init__(self, out_channels: int, channels: int, patch_size: int, num_res_blocks: int, in_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels, channels) for _ in range(num_res_blocks)])
        self.norm_out = _norm(channels)
        self.conv_out = nn.Conv2d(channels, out_channels * patch_size**2, 3, padding=1)
        self.unstem = nn.PixelShuffle(patch_size)

    def forward(self, z):
        return self.unstem(self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z))))))


# ---------------------------------------------------------------- the tokenizer
@dataclass
class TokenizerOutput:
    sample: torch.Tensor        # reconstruction (B, C, H, W) in [-1, 1]
    indices: torch.Tensor       # (B, h, w) code indices
    vq_loss: torch.Tensor       # commitment / codebook loss
    perplexity: torch.Tensor    # batch codebook perplexity


class VQTokenizer(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_channels: int = 3, channels: int = 128, patch_size: int = 4,
                 num_res_blocks: int = 4, latent_channels: int = 64, codebook_dim: int = 32,
                 codebook_size: int = 1024, quantizer: str = "simvq", beta: float = 0.25, sample_size: int = 64):
        super().__init__()
        self.encoder = Encoder(in_channels, channels, patch_size, num_res_blocks, latent_channels)
        self.quant_conv = nn.Conv2d(latent_channels, codebook_dim, 1)
        self.quantize = build_quantizer(quantizer, codebook_size, codebook_dim, beta=beta)
        self.post_quant_conv = nn.Conv2d(codebook_dim, latent_channels, 1)
        self.decoder = Decoder(in_channels, channels, patch_size, num_res_blocks, latent_channels)

    @property
    def downsample_factor(self) -> int:
        return self.config.patch_size

    def encode(self, x: torch.Tensor):
        """Image (B,C,H,W) in [-1,1] -> quantiser output (quantized BCHW, indices BHW, loss, perplexity)."""
        return quantize_feature_map(self.quantize, self.quant_conv(self.encoder(x)))

    def decode(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quantized))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices (B,h,w) -> image (B,C,H,W); applies the quantiser's codebook (W(C) for SimVQ)."""
        z = self.quantize.decode_indices(indices).permute(0, 3, 1, 2)
        return self.decode(z)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self.encode(x)
        return TokenizerOutput(self.decode(q.quantized), q.indices, q.loss, q.perplexity)


TOKENIZER_CONFIGS = {
    "tiny": dict(channels=16, patch_size=4, num_res_blocks=1, latent_channels=16, codebook_dim=8, codebook_size=64),
    "S": dict(channels=128, patch_size=4, num_res_blocks=4, latent_channels=64, codebook_dim=32),
    "B": dict(channels=256, patch_size=8, num_res_blocks=8, latent_channels=128, codebook_dim=64),
}


# ---------------------------------------------------------------- training recipe
def tokenizer_loss(model: VQTokenizer, batch: dict):
    x = batch["image"]
    out = model(x)
    rec = F.l1_loss(out.sample.float(), x) + F.mse_loss(out.sample.float(), x)
    loss = rec + out.vq_loss.float()
    return loss, {"rec": rec.detach(), "vq": out.vq_loss.detach(), "perplexity": out.perplexity.detach()}


@torch.no_grad()
def evaluate_tokenizer(model: VQTokenizer, dataset, batch_size: int = 32, max_items: int | None = None) -> dict:
    """PSNR/SSIM of reconstructions and codebook utilisation/perplexity over a dataset."""
    import numpy as np
    from .metrics import psnr, ssim
    from .render import to_uint8
    from .vq import CodebookUsageMeter
    n = len(dataset) if max_items is None else min(max_items, len(dataset))
    meter = CodebookUsageMeter(model.config.codebook_size)
    psnrs, ssims = [], []
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        x = torch.stack([dataset[i]["image"] for i in range(start, min(n, start + batch_size))]).to(device)
        out = model(x)
        meter.update(out.indices)
        for a, b in zip(to_uint8(out.sample), to_uint8(x)):
            psnrs.append(psnr(a, b)); ssims.append(ssim(a, b))
    usage = meter.compute()
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "utilization": float(usage["utilization"]), "perplexity": float(usage["perplexity"])}


@dataclass
class TokenizerOptions:
    """`genstudio train tokenizer` options (besides TrainConfig's). Model fields left at None take
    the preset's value, else VQTokenizer's default."""
    preset: str = "S"                     # a TOKENIZER_CONFIGS name: tiny / S / B
    sample_size: int = 64                 # crop size in pixels
    eval_items: int = 256                 # fixed validation crops scored at each save
    quantizer: Optional[str] = None       # vq / vq_ema / simvq / rvq ... (genstudio.vq.build_quantizer)
    codebook_size: Optional[int] = None
    codebook_dim: Optional[int] = None
    channels: Optional[int] = None        # encoder/decoder width
    patch_size: Optional[int] = None      # pixels per token side
    num_res_blocks: Optional[int] = None
    latent_channels: Optional[int] = None
    beta: Optional[float] = None          # commitment weight
    in_channels: Optional[int] = None

    def model_kwargs(self) -> dict:
        if self.preset not in TOKENIZER_CONFIGS:
            raise ValueError(f"unknown preset {self.preset!r}: expected one of {', '.join(TOKENIZER_CONFIGS)}")
        fields = ("quantizer", "codebook_size", "codebook_dim", "channels", "patch_size", "num_res_blocks",
                  "latent_channels", "beta", "in_channels")
        return {**TOKENIZER_CONFIGS[self.preset], **{k: getattr(self, k) for k in fields if getattr(self, k) is not None}}


def recipe(cfg: dict):
    """`genstudio train tokenizer --set quantizer=simvq --set codebook_size=1024 ...`"""
    from .data import load_manifest, prepare
    from .data.photos import PhotoCropDataset
    from .train import Recipe, parse_config
    train_cfg, opts = parse_config(cfg, TokenizerOptions, recipe="tokenizer", output_dir="runs/tokenizer",
                                   steps=3000, batch_size=32, lr=2e-4, ema_decay=None)
    model_kw = opts.model_kwargs()
    prepare("photos", quiet=True)
    train_set = PhotoCropDataset(load_manifest("photos", "train"), size=opts.sample_size, length=100_000)
    val_set = PhotoCropDataset(load_manifest("photos", "val"), size=opts.sample_size, length=opts.eval_items,
                               deterministic=True, seed=1234)
    model = VQTokenizer(sample_size=opts.sample_size, **model_kw)
    return Recipe(model, train_set, tokenizer_loss, train_cfg, eval_fn=lambda m: evaluate_tokenizer(m, val_set),
                  name="tokenizer", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) weights in `dtype`."""
    from .export import export_model
    export_model(VQTokenizer, run_dir, to, dtype)
