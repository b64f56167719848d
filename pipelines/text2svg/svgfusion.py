"""SVGFusion's models: the Vector-Pixel fusion VAE (VP-VAE) and the Vector-Space DiT (VS-DiT).

Xing et al., "SVGFusion: Scalable Text-to-SVG Generation via Vector Space Diffusion" (2024). The
authors released no code or weights; this follows the paper's method on our shared core:

- An SVG is a matrix, one row per drawing command (`genstudio.formats.svg_matrix`). `RowCodec`
  turns each row into a feature vector: one-hot element type, command and flags (each scaled to
  [-1, 1]) next to the numbers (coordinates, colours, stroke width) scaled to about [-1, 1].
- VP-VAE: a transformer encoder over the row features whose blocks also cross-attend to pixel
  features of the rendered SVG (a small CNN trained here), giving a Gaussian latent per row
  (mu, log-variance, KL). A transformer decoder maps the latent sequence back to row logits
  (categories) and numbers. Rendering Sequence Modeling: training pairs random prefixes of the
  drawing (in painter's order) with the render of that prefix (see data.TextSVGDataset).
- VS-DiT: the core DiT (adaLN-Zero timestep, cross-attention to the MiniLM text tokens in every
  block, text dropout for classifier-free guidance) on the latent sequence laid out as a
  (latent_dim, rows, 1) "image" with 1x1 patches.
The ablation without the VP-VAE ("raw") runs the same DiT directly on the RowCodec features.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from genstudio.dit import DiT, sincos_1d
from genstudio.formats import svg_matrix as sm

# ---------------------------------------------------------------- rows <-> features

CATEGORY_COLUMNS = sorted(sm.CATEGORIES)
NUMBER_COLUMNS = [c for c in range(sm.WIDTH) if c not in sm.CATEGORIES]
_CENTRE = np.zeros(sm.WIDTH, np.float32)
_SCALE = np.ones(sm.WIDTH, np.float32)
_CENTRE[sm.COORDS], _SCALE[sm.COORDS] = 128.0, 128.0   # canvas 0..256 -> -1..1
for _cols in (sm.FILL, sm.STROKE):
    _CENTRE[_cols], _SCALE[_cols] = 0.5, 0.5           # colours 0..1 -> -1..1
_CENTRE[sm.FILL_OPACITY], _SCALE[sm.FILL_OPACITY] = 0.5, 0.5
_CENTRE[sm.OPACITY], _SCALE[sm.OPACITY] = 0.5, 0.5
_SCALE[sm.STROKE_WIDTH] = 16.0
_CENTRE[sm.MITER], _SCALE[sm.MITER] = 4.0, 4.0


class RowCodec:
    """Matrix rows (..., WIDTH) <-> features (..., FEATURES): one-hot categories, scaled numbers.

    For arcs the c2 slot holds (rotation in degrees, flags 0..3): the decoder sees the command
    and learns that meaning; the scale is the coordinates' (rotation 0..360 -> -1..1.8)."""

    classes = [sm.CATEGORIES[c] for c in CATEGORY_COLUMNS]
    features = sum(classes) + len(NUMBER_COLUMNS)

    @staticmethod
    def encode(matrix: torch.Tensor) -> torch.Tensor:
        parts = [F.one_hot(matrix[..., c].round().long().clamp(0, n - 1), n).to(matrix.dtype) * 2 - 1
                 for c, n in zip(CATEGORY_COLUMNS, RowCodec.classes)]
        centre, scale = (torch.as_tensor(a[NUMBER_COLUMNS], dtype=matrix.dtype, device=matrix.device)
                         for a in (_CENTRE, _SCALE))
        parts.append((matrix[..., NUMBER_COLUMNS] - centre) / scale)
        return torch.cat(parts, -1)

    @staticmethod
    def split(features: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """features -> ([logits per category column], scaled numbers)."""
        sizes = RowCodec.classes + [len(NUMBER_COLUMNS)]
        *logits, numbers = features.split(sizes, -1)
        return logits, numbers

    @staticmethod
    def decode(features: torch.Tensor) -> torch.Tensor:
        """features (or a model's output: logits + numbers) -> matrix rows (argmax, unscaled)."""
        logits, numbers = RowCodec.split(features)
        out = features.new_zeros(*features.shape[:-1], sm.WIDTH)
        for c, lg in zip(CATEGORY_COLUMNS, logits):
            out[..., c] = lg.argmax(-1).to(out.dtype)
        centre, scale = (torch.as_tensor(a[NUMBER_COLUMNS], dtype=out.dtype, device=out.device)
                         for a in (_CENTRE, _SCALE))
        out[..., NUMBER_COLUMNS] = numbers * scale + centre
        return out


def reconstruction_loss(output: torch.Tensor, matrix: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Cross-entropy on the categories + MSE on the scaled numbers. The element type is scored
    on every row (padding = "end"); everything else only on real rows."""
    logits, numbers = RowCodec.split(output)
    real = matrix[..., sm.ELEM] > 0
    target_numbers = RowCodec.split(RowCodec.encode(matrix))[1]
    ce = 0.0
    for k, (c, lg) in enumerate(zip(CATEGORY_COLUMNS, logits)):
        target = matrix[..., c].round().long()
        if c == sm.ELEM:
            ce = ce + F.cross_entropy(lg.flatten(0, -2).float(), target.flatten())
        else:
            ce = ce + F.cross_entropy(lg[real].float(), target[real]) if real.any() else ce
    mse = F.mse_loss(numbers[real].float(), target_numbers[real].float()) if real.any() else numbers.sum() * 0
    with torch.no_grad():
        cmd_acc = (logits[CATEGORY_COLUMNS.index(sm.CMD)].argmax(-1) == matrix[..., sm.CMD].round().long())[real]
        coord_err = ((numbers[..., :8] - target_numbers[..., :8]).abs() * 128)[real].mean()
    return ce + 10 * mse, {"ce": float(ce.detach()), "mse": float(mse.detach()), "cmd_acc": float(cmd_acc.float().mean()),
                           "coord_err_px256": float(coord_err)}


# ---------------------------------------------------------------- VP-VAE

class PixelEncoder(nn.Module):
    """Render (B, 3, S, S) in [-1, 1] -> (B, (S/8)^2, dim) pixel tokens (a small CNN, trained here)."""

    def __init__(self, dim: int, channels: int = 32):
        super().__init__()
        c = channels

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU())
        self.body = nn.Sequential(block(3, c), block(c, 2 * c), block(2 * c, 4 * c), nn.Conv2d(4 * c, dim, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.body(image)
        return h.flatten(2).transpose(1, 2)


class VPVAE(ModelMixin, ConfigMixin):
    """Vector-Pixel fusion VAE: SVG matrix (+ its render) -> latent (B, rows, latent_dim) -> matrix."""

    @register_to_config
    def __init__(self, max_rows: int = 64, latent_dim: int = 16, hidden_size: int = 192, num_heads: int = 4,
                 encoder_layers: int = 4, decoder_layers: int = 4, image_size: int = 64, pixel_channels: int = 32,
                 kl_weight: float = 1e-4, scaling_factor: float = 1.0):
        super().__init__()
        d = hidden_size
        self.row_in = nn.Linear(RowCodec.features, d)
        self.pixels = PixelEncoder(d, pixel_channels)
        self.register_buffer("pos", sincos_1d(d, torch.arange(max_rows)).float()[None], persistent=False)
        pixel_tokens = (image_size // 8) ** 2
        self.pixel_pos = nn.Parameter(torch.zeros(1, pixel_tokens, d))
        # Encoder blocks: self-attention over rows + cross-attention to the pixel tokens (vector-pixel fusion).
        self.encoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d, num_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True),
            encoder_layers)
        self.to_moments = nn.Linear(d, 2 * latent_dim)
        self.latent_in = nn.Linear(latent_dim, d)
        self.decoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, num_heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True),
            decoder_layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(d)
        self.row_out = nn.Linear(d, RowCodec.features)
        nn.init.normal_(self.pixel_pos, std=0.02)

    def encode(self, matrix: torch.Tensor, image: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, rows, WIDTH) [+ (B, 3, S, S) render] -> (mu, logvar), each (B, rows, latent_dim).

        Without `image`, the pixel branch sees an empty (white) canvas."""
        B, R = matrix.shape[:2]
        h = self.row_in(RowCodec.encode(matrix.to(self.dtype))) + self.pos[:, :R].to(self.dtype)
        if image is None:
            size = self.config.image_size
            image = torch.ones(B, 3, size, size, device=matrix.device, dtype=self.dtype)
        pixels = self.pixels(image.to(self.dtype)) + self.pixel_pos
        h = self.encoder(h, pixels)
        mu, logvar = self.to_moments(h).chunk(2, -1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, rows, latent_dim) -> row features (B, rows, FEATURES): category logits + numbers."""
        h = self.latent_in(z.to(self.dtype)) + self.pos[:, :z.shape[1]].to(self.dtype)
        return self.row_out(self.norm_out(self.decoder(h)))

    def decode_matrix(self, z: torch.Tensor) -> torch.Tensor:
        return RowCodec.decode(self.decode(z).float())

    def forward(self, matrix: torch.Tensor, image: torch.Tensor | None = None, sample: bool = True):
        mu, logvar = self.encode(matrix, image)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
        return self.decode(z), mu, logvar


def vae_loss(model: VPVAE, batch: dict):
    matrix, image = batch["matrix"], batch.get("image")
    output, mu, logvar = model(matrix, image)
    rec, logs = reconstruction_loss(output, matrix)
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(-1).mean()
    return rec + model.config.kl_weight * kl, {**logs, "kl": float(kl)}


# ---------------------------------------------------------------- VS-DiT

VSDIT_CONFIGS = {  # hidden, depth, heads
    "tiny": dict(hidden_size=64, depth=2, num_heads=2),
    "XS": dict(hidden_size=96, depth=3, num_heads=2),     # a guide for autoguidance (a smaller, shorter-trained S)
    "S": dict(hidden_size=192, depth=6, num_heads=4),
    "M": dict(hidden_size=256, depth=8, num_heads=4),    # 12.5 M parameters: fp16 with the VAE under 30 MB
    "B": dict(hidden_size=384, depth=12, num_heads=6),
}


def make_vsdit(preset: str, channels: int, max_rows: int, text_dim: int = 384, text_dropout: float = 0.1,
               self_condition: bool = False) -> DiT:
    """The core DiT over a (channels, max_rows, 1) latent sequence, cross-attending to text tokens
    (self_condition: it also reads its previous x0 estimate; not in the paper, see DiT)."""
    if preset not in VSDIT_CONFIGS:
        raise ValueError(f"unknown VS-DiT preset {preset!r}; choose from {sorted(VSDIT_CONFIGS)}")
    return DiT(input_size=(max_rows, 1), patch_size=1, in_channels=channels, num_classes=0, learn_sigma=False,
               context_dim=text_dim, class_dropout_prob=text_dropout, self_condition=self_condition,
               **VSDIT_CONFIGS[preset])


def to_dit(z: torch.Tensor) -> torch.Tensor:
    """(B, rows, C) latent sequence -> the DiT's (B, C, rows, 1)."""
    return z.transpose(1, 2).unsqueeze(-1)


def from_dit(x: torch.Tensor) -> torch.Tensor:
    return x.squeeze(-1).transpose(1, 2)
