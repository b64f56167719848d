"""Vec2Face (Wu et al., "Vec2Face: Scaling Face Dataset Generation with Loosely Constrained Vectors"):
an identity vector -> a face image, at our scale (64x64 avatars, 128-d vectors, an 8x8 token grid).

    model = Vec2Face.from_config(VEC2FACE_CONFIGS["S"])
    faces = model.eval()(vectors)                           # (B, 128) unit vectors -> (B, 3, 64, 64) in [-1, 1]
    ids = sample_identities(100, 128, max_similarity=0.3)  # new, loosely constrained identities
    variations = perturb(ids.repeat_interleave(8, 0), std=0.5)

INFORMATION FLOW (as in the reference implementation, HaiyuWu/Vec2Face `model_vec2face.py`). The
only input is the identity vector; no image enters the model, the training image is the target
(and, through the frozen recogniser, the source of the vector).
1. The vector v is projected to the transformer width: e = W v (`latent_prior_proj_f`), the
   "vector token".
2. A "feature map" of g x g tokens is expanded from e by a linear layer over a singleton axis
   (`feature_token`, Linear(1, g*g)): token_p = a_p * e + b_p. It plays the part of MAGE's image
   tokens, but it is made from the vector.
3. MAGE-style masking: a ratio r is drawn from a truncated normal (training: peak 0.55, std 0.25,
   in [0.5, 1.0]; one r per batch, a random set of positions per sample). The ceil(r * g*g) masked
   positions are overwritten with the vector token e itself; the ceil(r_min * g*g) of them first in
   the random order are also *dropped* from the encoder's input.
4. The sequence [e, tokens] (+ learned positions, LayerNorm) without the dropped tokens goes through
   the ViT encoder.
5. Decoder: after a width projection, every masked or dropped position is filled with the encoder's
   output at position 0 (the vector token), learned positions are added, the ViT decoder runs over
   all 1 + g*g positions, and the g*g grid tokens are projected to `z_channels`.
6. The image decoder (convolutional, VQGAN-decoder-like, no quantisation) upsamples g x g -> 64x64 RGB.
At generation the same path runs, and the masking is a source of variation besides the vector
perturbation: the reference generates with a milder ratio distribution (peak 0.15 in [0.1, 1.0]),
which is what `mask_ratio=None` draws in eval mode; `mask_ratio=0.0` gives the deterministic image.
So the issue's "ViT encoder over masked feature-map tokens" is this vector-made feature map, not
an image encoder's.

LOSSES (`vec2face_loss`): pixel MSE, SSIM, an identity loss (1 - cos between the frozen
recogniser's vector of the output and the input vector) and a perceptual term: distances between the
channel-normalised stage features of the same recogniser on the output and the target (LPIPS-style;
the reference uses LPIPS on VGG, the issue asks for a network trained here, and the recogniser is
one). The reference's token loss is not used.

ADVERSARIAL TERM (optional, as the reference's VQGAN-style loss): the identity vector carries nothing
about hair, mouth or background (they vary within an identity), so the losses above alone make the
generator average over them ("mean faces"). `PatchDiscriminator` (taming-transformers'
NLayerDiscriminator at our scale: a map of patch logits), `hinge_d_loss` for it and
`generator_adversarial_loss` (-mean D(fake)) for the generator; `adaptive_weight` is VQGAN's balance
of the two gradients at the image decoder's last layer (`last_layer`). The `vec2face` recipe owns the
discriminator and its optimiser (pipelines/face/train.py, `adversarial_weight`); it is never part of
the exported model.

NEW IDENTITIES: `sample_identities` draws random unit vectors and keeps a candidate only while its
cosine to every kept vector stays below `max_similarity` (0.3 in the paper), with a bounded number of
draws; `perturb` adds Gaussian noise for intra-class variation (std 0.3 / 0.5 / 0.7 in the paper).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

VEC2FACE_CONFIGS = {
    "tiny": dict(width=64, depth=1, heads=2, decoder_width=64, decoder_depth=1, decoder_heads=2,
                 z_channels=16, decoder_channels=(32, 16, 16)),
    "S": dict(width=256, depth=4, heads=8, decoder_width=256, decoder_depth=4, decoder_heads=8,
              z_channels=64, decoder_channels=(128, 64, 32)),
}


# ---------------------------------------------------------------- masking ratio

def truncated_normal(n: int, mean: float, std: float, low: float, high: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of N(mean, std^2) truncated to [low, high] (inverse CDF: exact, no rejection loop)."""
    cdf = lambda x: torch.special.ndtr(torch.tensor((x - mean) / std, dtype=torch.float64))
    a, b = cdf(low), cdf(high)
    u = a + (b - a) * torch.rand(n, generator=generator, dtype=torch.float64)
    return (mean + std * torch.special.ndtri(u)).clamp(low, high).float()


# ---------------------------------------------------------------- transformer

class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm ViT block (the reference's timm-style names: norm1, attn.qkv, attn.proj, norm2, mlp.fc1/fc2)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, dropout)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenEmbeddings(nn.Module):
    """Learned positions + LayerNorm + dropout over [vector token, grid tokens] (BERT-style, as the reference)."""

    def __init__(self, dim: int, positions: int, dropout: float = 0.0):
        super().__init__()
        self.position_embeddings = nn.Embedding(positions, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.position_embeddings.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.LayerNorm(x + self.position_embeddings.weight[None, :x.shape[1]]))


# ---------------------------------------------------------------- image decoder

class ResnetBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, channels), nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ImageDecoder(nn.Module):
    """(B, z, g, g) -> (B, 3, g * 2^L, g * 2^L): conv_in, then per level a residual block and a 2x
    nearest upsampling + conv (channels[i] -> channels[i + 1]), then GroupNorm, SiLU, conv_out."""

    def __init__(self, z_channels: int, channels: Sequence[int], out_channels: int = 3):
        super().__init__()
        channels = list(channels)
        self.conv_in = nn.Conv2d(z_channels, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList(ResnetBlock(c) for c in channels)
        self.upsample = nn.ModuleList(nn.Conv2d(c, n, 3, padding=1) for c, n in zip(channels, channels[1:] + channels[-1:]))
        self.norm_out = nn.GroupNorm(8, channels[-1])
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for block, up in zip(self.blocks, self.upsample):
            h = up(F.interpolate(block(h), scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------- model

class Vec2Face(ModelMixin, ConfigMixin):
    """Identity vector (B, vector_dim) -> face (B, 3, image_size, image_size).

    forward() returns the decoder's raw output in training mode (the losses see it unclipped) and the
    image clamped to [-1, 1] in eval mode."""

    @register_to_config
    def __init__(self, vector_dim: int = 128, image_size: int = 64, grid_size: int = 8,
                 width: int = 256, depth: int = 4, heads: int = 8,
                 decoder_width: int = 256, decoder_depth: int = 4, decoder_heads: int = 8,
                 mlp_ratio: float = 4.0, dropout: float = 0.1,
                 z_channels: int = 64, decoder_channels: Sequence[int] = (128, 64, 32),
                 mask_ratio_min: float = 0.5, mask_ratio_max: float = 1.0, mask_ratio_mu: float = 0.55,
                 mask_ratio_std: float = 0.25, gen_mask_ratio_min: float = 0.1, gen_mask_ratio_mu: float = 0.15):
        super().__init__()
        if grid_size * 2 ** len(decoder_channels) != image_size:
            raise ValueError(f"Vec2Face: grid_size {grid_size} x 2^len(decoder_channels={tuple(decoder_channels)}) "
                             f"must equal image_size {image_size}")
        n = grid_size * grid_size
        self.latent_prior_proj_f = nn.Linear(vector_dim, width)
        self.feature_token = nn.Linear(1, n)
        self.token_emb = TokenEmbeddings(width, n + 1, dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.decoder_embed = nn.Linear(width, decoder_width)
        self.decoder_pos_embed_learned = nn.Parameter(torch.randn(1, n + 1, decoder_width) * 0.02)
        self.decoder_blocks = nn.ModuleList(Block(decoder_width, decoder_heads, mlp_ratio, dropout)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_width, eps=1e-6)
        self.im_decoder_proj = nn.Linear(decoder_width, z_channels)
        self.im_decoder = ImageDecoder(z_channels, decoder_channels)
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):  # xavier as the official JAX ViT (and the reference)
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    # ---- masking
    def draw_mask_ratio(self, generator: torch.Generator | None = None) -> float:
        """One ratio per batch: the training distribution in train mode, the generation one in eval mode."""
        c = self.config
        low, mu = (c.mask_ratio_min, c.mask_ratio_mu) if self.training else (c.gen_mask_ratio_min, c.gen_mask_ratio_mu)
        return float(truncated_normal(1, mu, c.mask_ratio_std, low, c.mask_ratio_max, generator)[0])

    def token_masks(self, batch: int, mask_ratio: float, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked, dropped) boolean (batch, g*g): the first ceil(r * n) positions of a random order
        per sample are masked, the first ceil(r_min * n) of those are also dropped (r_min of the mode)."""
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        n = self.config.grid_size ** 2
        low = self.config.mask_ratio_min if self.training else self.config.gen_mask_ratio_min
        n_masked = math.ceil(n * mask_ratio - 1e-9)
        n_dropped = min(math.ceil(n * low - 1e-9), n_masked)
        rank = torch.rand(batch, n, generator=generator).argsort(1).argsort(1)
        return (rank < n_masked).to(self.device), (rank < n_dropped).to(self.device)

    # ---- forward
    def forward(self, vector: torch.Tensor, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        c = self.config
        if vector.ndim != 2 or vector.shape[1] != c.vector_dim:
            raise ValueError(f"Vec2Face expects identity vectors of shape (B, {c.vector_dim}), got {tuple(vector.shape)}")
        B, n = vector.shape[0], c.grid_size ** 2
        if mask_ratio is None:
            mask_ratio = self.draw_mask_ratio(generator)
        masked, dropped = self.token_masks(B, mask_ratio, generator)

        # 1-3: the vector token, the feature map made from it, masked positions overwritten by it
        e = self.latent_prior_proj_f(vector.to(self.dtype))
        tokens = self.feature_token(e[:, :, None]).transpose(1, 2)            # (B, n, width)
        tokens = torch.where(masked[..., None], e[:, None], tokens)
        sequence = self.token_emb(torch.cat([e[:, None], tokens], 1))         # (B, 1 + n, width)

        # 4: the encoder sees the vector token and the kept grid tokens (same count in every row)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=self.device), ~dropped], 1)
        x = sequence[keep].reshape(B, -1, sequence.shape[-1])
        for block in self.blocks:
            x = block(x)
        x = self.decoder_embed(self.norm(x))

        # 5: masked and dropped positions take the encoder's vector-token output
        fill = x[:, :1].expand(B, n + 1, x.shape[-1])
        x = fill.masked_scatter(keep[..., None], x)
        masked_all = torch.cat([torch.zeros_like(keep[:, :1]), masked], 1)
        x = torch.where(masked_all[..., None], fill, x) + self.decoder_pos_embed_learned
        for block in self.decoder_blocks:
            x = block(x)
        z = self.im_decoder_proj(self.decoder_norm(x)[:, 1:])                 # (B, n, z)
        z = z.transpose(1, 2).reshape(B, -1, c.grid_size, c.grid_size)

        # 6: pixels
        image = self.im_decoder(z)
        return image if self.training else image.clamp(-1, 1)


# ---------------------------------------------------------------- losses

def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Differentiable mean SSIM (Gaussian window 11 / sigma 1.5, per channel, valid region) of
    (B, C, H, W) images in [-1, 1]. They are moved to [0, 1] first: SSIM's luminance term is not
    shift-invariant and goes unstable around a mean of 0. genstudio.metrics.ssim (skimage, not
    differentiable) gives the same value with gaussian_weights=True, use_sample_covariance=False."""
    with torch.autocast(a.device.type, enabled=False):  # variances of near-equal means: bf16 loses them
        return _ssim(a.float(), b.float(), window)


def _ssim(a: torch.Tensor, b: torch.Tensor, window: int) -> torch.Tensor:
    a, b = (a + 1) / 2, (b + 1) / 2
    C = a.shape[1]
    w = _gaussian_window(window).to(a.device, a.dtype).expand(C, 1, window, window).contiguous()
    blur = lambda x: F.conv2d(x, w, groups=C)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


def identity_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos(predicted, target): 0 when every predicted vector points where its target does."""
    return (1 - F.cosine_similarity(predicted.float(), target.float(), dim=-1)).mean()


def perceptual_loss(features_a: list[torch.Tensor], features_b: list[torch.Tensor]) -> torch.Tensor:
    """LPIPS-style: per stage, squared distance of the channel-normalised maps, summed over channels,
    averaged over positions, then over stages."""
    terms = [(F.normalize(fa.float(), dim=1) - F.normalize(fb.float(), dim=1)).pow(2).sum(1).mean()
             for fa, fb in zip(features_a, features_b)]
    return torch.stack(terms).mean()


def vec2face_loss(model: Vec2Face, recognizer, image: torch.Tensor, vector: torch.Tensor | None = None,
                  pixel_weight: float = 1.0, ssim_weight: float = 0.5, identity_weight: float = 0.5,
                  perceptual_weight: float = 0.5, mask_ratio: float | None = None,
                  generator: torch.Generator | None = None, output: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, dict]:
    """The training loss on faces `image` (B, 3, S, S) in [-1, 1]. `vector` defaults to the frozen
    recogniser's vector of `image` (the paper's training input). `output`: the model's output for
    `vector` when the caller already has it (it must come from that `vector`; the adversarial
    term reuses one forward). Returns (loss, {term: float})."""
    if vector is None:
        with torch.no_grad():
            vector = recognizer(image)
    if output is None:
        output = model(vector, mask_ratio=mask_ratio, generator=generator)
    mse = F.mse_loss(output.float(), image.float())
    ssim_term = 1 - ssim(output.float(), image.float())
    embedding, features_out = recognizer.forward_features(output)
    with torch.no_grad():
        _, features_target = recognizer.forward_features(image)
    id_term = identity_loss(embedding, vector)
    perceptual = perceptual_loss(features_out, features_target)
    loss = pixel_weight * mse + ssim_weight * ssim_term + identity_weight * id_term + perceptual_weight * perceptual
    return loss, {"mse": float(mse.detach()), "ssim": float(1 - ssim_term.detach()),
                  "identity_loss": float(id_term.detach()), "perceptual": float(perceptual.detach())}


# ---------------------------------------------------------------- adversarial term (optional)

class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator in the style of pix2pix / taming-transformers' NLayerDiscriminator:
    conv 4x4 stride 2 (no norm), `n_layers - 1` more stride-2 convs and one stride-1 conv with
    BatchNorm, LeakyReLU(0.2) after each, then a stride-1 conv to one logit per patch. Channels
    double per layer from `channels` (capped at 8x). A 64x64 face -> (B, 1, 14, 14) logits with the
    default n_layers=2 (each logit sees a 34-pixel patch; the original's n_layers=3 sees 70 pixels,
    more than our whole image). Initialised as in VQGAN: conv N(0, 0.02), norm weight N(1, 0.02)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.main(image)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: 0.5 * (mean relu(1 - D(real)) + mean relu(1 + D(fake)))."""
    return 0.5 * (F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean())


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial term: -mean D(fake)."""
    return -fake_logits.float().mean()


def last_layer(model: Vec2Face) -> torch.Tensor:
    """The weight of the image decoder's last layer (conv_out): where VQGAN balances the gradients."""
    return getattr(model, "module", model).im_decoder.conv_out.weight  # (a DDP wrapper's .module)


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's adaptive weight: ||d rec / d layer|| / (||d adv / d layer|| + 1e-4), clamped to
    [0, max_weight], detached (the graph is kept for the real backward)."""
    rec_grad = torch.autograd.grad(rec_loss, layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (adv_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# ---------------------------------------------------------------- new identities

def sample_identities(k: int, dim: int, max_similarity: float = 0.3, generator: torch.Generator | None = None,
                      max_draws: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """k unit vectors (k, dim) whose pairwise cosine similarities are all below `max_similarity`
    (the paper's loosely constrained vectors): random directions, each kept only if it is far enough
    from every kept one. Stops after `max_draws` candidates (default 100 k + 10,000) with a
    RuntimeError that says how many it found, so an impossible request cannot loop forever."""
    if k < 1 or dim < 1:
        raise ValueError(f"sample_identities needs k >= 1 and dim >= 1, got k={k}, dim={dim}")
    max_draws = max_draws if max_draws is not None else 100 * k + 10_000
    kept = torch.empty(0, dim)
    draws = 0
    while len(kept) < k and draws < max_draws:
        n = min(chunk, max_draws - draws)
        candidates = F.normalize(torch.randn(n, dim, generator=generator), dim=-1)
        draws += n
        if len(kept):  # one matrix product rules out most candidates against what is already kept
            candidates = candidates[(candidates @ kept.T).max(1).values < max_similarity]
        for v in candidates:  # then greedily within the chunk
            if len(kept) == k:
                break
            if not len(kept) or float((kept @ v).max()) < max_similarity:
                kept = torch.cat([kept, v[None]])
    if len(kept) < k:
        raise RuntimeError(f"sample_identities found only {len(kept)} of {k} vectors in {dim} dimensions with "
                           f"pairwise cosine < {max_similarity} after {draws} draws: ask for fewer identities, "
                           f"more dimensions or a larger max_similarity")
    return kept


def perturb(vectors: torch.Tensor, std: float | torch.Tensor, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """Intra-class variation: v + noise, rescaled to |v|. The noise has per-coordinate std
    `std` / sqrt(dim) relative to |v|, i.e. a norm of about `std` * |v|: the paper adds N(0, std^2)
    to unnormalised 512-d ArcFace features, whose norms are about sqrt(512), so the same std gives
    the same angular spread here (mean cosine to v: 0.96 / 0.89 / 0.82 for std 0.3 / 0.5 / 0.7).
    `std` may be one value or one per row."""
    v = vectors.float()
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1) if torch.is_tensor(std) else std
    noise = (torch.randn(v.shape, generator=generator) * std / math.sqrt(v.shape[-1])).to(v.device)
    norm = v.norm(dim=-1, keepdim=True)
    return (F.normalize(F.normalize(v, dim=-1) + noise, dim=-1) * norm).to(vectors.dtype)
