"""PUT: "Reduce Information Loss in Transformers for Pluralistic Image Inpainting" (Liu et al.).

Two models, trained one after the other:

* `PatchVQVAE` (P-VQVAE). The encoder sees non-overlapping p x p patches one at a time
  (unfold -> linear residual blocks), so a masked pixel can never change the feature of a
  patch that does not contain it. Features go through a *dual* codebook (the core's
  `DualCodebookVQ`): fully-known patches use the known codebook (the tokens the transformer
  predicts), patches with missing pixels use a separate unknown codebook, so they do not
  pollute the known one. The decoder is guided by the masked image: at every scale, features
  of known regions are replaced by features computed from the masked image itself, and the
  pipeline finally pastes the known pixels back, unchanged. With `reference_fill="harmonic"`
  (our addition, not in the paper) the reference branch sees the holes pre-filled by a smooth
  harmonic fill of the known pixels (`harmonic_fill`), its features are added to the token
  features inside the holes too, and the decoder predicts a residual over that fill: with no
  token information it falls back to a classical diffusion fill instead of grey.
  `reference_fill="biharmonic"` does the same on top of scikit-image's biharmonic fill
  (`biharmonic_fill`; exact, on the CPU), the better fill of small holes.
* `UnquantizedTransformer` (UQ-Transformer). A bidirectional transformer whose inputs are
  the encoder's *un-quantised* features (no information lost to quantisation; during
  training some are randomly replaced by their quantised vectors, which is what already
  sampled positions look like at inference), predicting the known-codebook token of every
  patch that has missing pixels. Cross-entropy on those positions only.

Conventions: images in [-1, 1], (B, 3, H, W); `known` is (B, 1, H, W) with 1 = known pixel,
0 = hole (user-facing mask files use white = hole; see pipeline.py).
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from genstudio.dit import sincos_2d
from genstudio.limits import check_time
from genstudio.vq import DualCodebookVQ, quantize_feature_map

# Named configs: `vqvae` builds PatchVQVAE, `transformer` builds UnquantizedTransformer.
# The reference (256 px, stride 8) uses 256-d features, 512 + 512 codes and a 35-layer,
# 512-d transformer; S is the CPU-sized version shipped in checkpoints/put-photos-S.
PUT_CONFIGS = {
    "tiny": {"vqvae": dict(sample_size=32, patch_size=8, hidden_dim=32, latent_dim=16, num_res_blocks=1,
                           decoder_channels=(32, 16, 16, 8), codebook_size_known=32, codebook_size_unknown=8),
             "transformer": dict(hidden_size=32, num_layers=2, num_heads=2)},
    "S": {"vqvae": dict(sample_size=128, patch_size=8, hidden_dim=256, latent_dim=32, num_res_blocks=4,
                        decoder_channels=(128, 64, 32, 32), codebook_size_known=512, codebook_size_unknown=128),
          "transformer": dict(hidden_size=256, num_layers=8, num_heads=8)},
    "B": {"vqvae": dict(sample_size=256, patch_size=8, hidden_dim=256, latent_dim=256, num_res_blocks=8,
                        decoder_channels=(256, 128, 64, 64), codebook_size_known=512, codebook_size_unknown=512),
          "transformer": dict(hidden_size=512, num_layers=35, num_heads=8)},
}


def patch_known_mask(known: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, H/p, W/p) bool: True where every pixel of the patch is known."""
    return F.avg_pool2d(known.float(), patch_size)[:, 0] > 1 - 1e-6


# ---- P-VQVAE ----

REFERENCE_FILLS = ("zeros", "harmonic", "biharmonic")


@torch.no_grad()
def harmonic_fill(image: torch.Tensor, known: torch.Tensor, iterations: int = 16) -> torch.Tensor:
    """Fill the holes of `image` (B, C, H, W) smoothly from its known pixels (`known` (B, 1, H, W),
    1 = known): a push-pull pyramid (mask-weighted means, coarse to fine) relaxed at every level by
    Jacobi iterations of Laplace's equation, i.e. a multigrid harmonic fill (the solution cv2's
    Navier-Stokes fill approximates). Known pixels are returned unchanged; no known pixel -> zeros."""
    image, known = image.float(), known.float()
    levels = [(image * known, known)]
    while min(levels[-1][0].shape[-2:]) > 2:
        v, w = levels[-1]
        levels.append((F.avg_pool2d(v, 2), F.avg_pool2d(w, 2)))
    out = None
    for v, w in reversed(levels):
        value = v / w.clamp_min(1e-6)
        if out is None:
            total = w.sum((-2, -1), keepdim=True)
            out = torch.where(w > 0, value, (v.sum((-2, -1), keepdim=True) / total.clamp_min(1e-6)).expand_as(v))
        else:
            out = F.interpolate(out, size=v.shape[-2:], mode="bilinear", align_corners=False)
        # Pixels fully known at this level are pinned; partly known ones blend towards their mean.
        pinned = w.clamp(0, 1)
        out = pinned * value + (1 - pinned) * out
        for _ in range(iterations):
            smooth = F.avg_pool2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
            out = pinned * value + (1 - pinned) * smooth
    return torch.where(known > 0.5, image, out)


@torch.no_grad()
def biharmonic_fill(image: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill the holes of `image` (B, C, H, W) with scikit-image's biharmonic inpainting (a sparse
    solve per hole region, on the CPU, per image); known pixels are returned unchanged."""
    from skimage.restoration import inpaint_biharmonic
    out = []
    for x, k in zip(image.detach().float().cpu().numpy(), known.detach().float().cpu().numpy()):
        hole = k[0] < 0.5
        if hole.all():  # nothing to extend: zeros, as the harmonic fill gives
            out.append(torch.zeros(x.shape))
            continue
        filled = inpaint_biharmonic(x.transpose(1, 2, 0), hole, channel_axis=-1) if hole.any() else x.transpose(1, 2, 0)
        out.append(torch.from_numpy(filled.transpose(2, 0, 1).copy()).float())
    return torch.where(known > 0.5, image.float(), torch.stack(out).to(image.device))


REFERENCE_FILL_FNS = {"harmonic": harmonic_fill, "biharmonic": biharmonic_fill}


class LinearResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim // 2), nn.Linear(dim // 2, dim)

    def forward(self, x):
        return x + self.fc2(F.relu(self.fc1(F.relu(x))))


class ConvResBlock(nn.Module):
    """x + 1x1(relu(3x3(relu(x)))). `hidden` defaults to half the channels; `dilation` widens the 3x3's
    context at no cost in weights; `identity_init` zeroes the 1x1, so a block added to a trained model
    starts as the identity."""

    def __init__(self, channels: int, dilation: int = 1, hidden: int | None = None, identity_init: bool = False):
        super().__init__()
        hidden = hidden or channels // 2
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(hidden, channels, 1)
        if identity_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class PatchEncoder(nn.Module):
    """Each p x p patch -> one feature vector, with no interaction between patches."""

    def __init__(self, patch_size: int, hidden_dim: int, latent_dim: int, num_res_blocks: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj_in = nn.Linear(3 * patch_size**2, hidden_dim)
        self.res_blocks = nn.Sequential(*[LinearResBlock(hidden_dim) for _ in range(num_res_blocks)])
        self.proj_out = nn.Linear(hidden_dim, latent_dim)
        # Bounded feature scale (unit norm on average, like the SimVQ codebook W(C)): without it
        # the encoder inflates its outputs and the codebook loss diverges.
        self.norm = nn.LayerNorm(latent_dim, elementwise_affine=False)
        self.scale = latent_dim**-0.5

    def forward(self, x):  # (B, 3, H, W) -> (B, D, H/p, W/p)
        b, _, h, w = x.shape
        p = self.patch_size
        patches = F.unfold(x, kernel_size=p, stride=p).transpose(1, 2)  # (B, L, 3 p^2)
        z = self.norm(self.proj_out(F.relu(self.res_blocks(self.proj_in(patches))))) * self.scale
        return z.transpose(1, 2).reshape(b, -1, h // p, w // p)


class GuidedDecoder(nn.Module):
    """Token grid -> image, upsampling x2 per stage. Before each upsampling (and before the
    output layer) the features of known pixels are swapped for features of the masked image,
    computed by a small conv encoder whose scales mirror the decoder's. `refine_blocks` (our
    addition) adds that many dilated residual blocks at full resolution after the last merge
    (dilations 1, 2, 4, 8, 1, ...): pixel-level context for the final output, which otherwise
    sees the full-resolution reference through one 3x3 conv only."""

    def __init__(self, latent_dim: int, channels: tuple[int, ...], num_res_blocks: int, reference_fill: str = "zeros",
                 refine_blocks: int = 0):
        super().__init__()
        if reference_fill not in REFERENCE_FILLS:
            raise ValueError(f"reference_fill must be one of {', '.join(REFERENCE_FILLS)}, got {reference_fill!r}")
        self.reference_fill = reference_fill
        self.proj_in = nn.Conv2d(latent_dim, channels[0], 3, padding=1)
        self.res_blocks = nn.Sequential(*[ConvResBlock(channels[0]) for _ in range(num_res_blocks)])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)
                                 for a, b in zip(channels[:-1], channels[1:]))
        self.proj_out = nn.Conv2d(channels[-1], 3, 3, padding=1)
        # Reference encoder: masked image + mask at full resolution -> the same scales, reversed.
        self.ref_in = nn.Conv2d(4, channels[-1], 3, padding=1)
        self.ref_downs = nn.ModuleList(nn.Conv2d(b, a, 4, stride=2, padding=1)
                                       for a, b in zip(channels[:-1], channels[1:]))
        self.refine = nn.Sequential(*[ConvResBlock(channels[-1], 2 ** (i % 4), hidden=channels[-1], identity_init=True)
                                      for i in range(refine_blocks)])

    def reference_features(self, masked_image, known) -> list[torch.Tensor]:
        """Features of the masked image, coarsest first (one per decoder scale)."""
        f = self.ref_in(torch.cat([masked_image, known], dim=1))
        feats = [f]
        for down in reversed(self.ref_downs):
            f = down(F.relu(f))
            feats.append(f)
        return feats[::-1]

    def forward(self, z, masked_image, known, reference=None):
        """`reference`: the reference fill of (masked_image, known), when the caller already has it."""
        fill = REFERENCE_FILL_FNS.get(self.reference_fill)
        if fill is None:
            reference = masked_image
        elif reference is None:
            reference = fill(masked_image, known)
        reference = reference.to(masked_image.dtype)
        refs = self.reference_features(reference, known)
        x = self.res_blocks(self.proj_in(z))
        for i, ref in enumerate(refs):
            m = F.interpolate(known, size=x.shape[-2:], mode="nearest")
            # zeros (the paper): holes keep the token features; a fill: they also get the fill's.
            x = x * (1 - m) + ref * (1.0 if fill else m)
            x = self.ups[i](F.relu(x)) if i < len(self.ups) else x
        out = self.proj_out(F.relu(self.refine(x)))
        return reference + out if fill else out


class PatchVQVAE(ModelMixin, ConfigMixin):
    """P-VQVAE: patch encoder, dual codebook, mask-guided decoder. See the module docstring."""

    @register_to_config
    def __init__(self, sample_size: int = 128, patch_size: int = 8, hidden_dim: int = 256, latent_dim: int = 64,
                 num_res_blocks: int = 4, decoder_channels: tuple = (128, 64, 32, 32),
                 codebook_size_known: int = 512, codebook_size_unknown: int = 128, quantizer: str = "simvq",
                 reference_fill: str = "zeros", refine_blocks: int = 0):
        super().__init__()
        if 2 ** (len(decoder_channels) - 1) != patch_size:
            raise ValueError(f"decoder_channels needs log2(patch_size) + 1 = {patch_size.bit_length()} "
                             f"entries for patch_size={patch_size}, got {len(decoder_channels)}")
        self.encoder = PatchEncoder(patch_size, hidden_dim, latent_dim, num_res_blocks)
        self.vq = DualCodebookVQ(codebook_size_known, codebook_size_unknown, latent_dim, quantizer=quantizer)
        self.decoder = GuidedDecoder(latent_dim, tuple(decoder_channels), num_res_blocks, reference_fill, refine_blocks)

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def num_known_codes(self) -> int:
        return self.config.codebook_size_known

    def encode(self, image, known=None) -> torch.Tensor:
        """Un-quantised features (B, D, h, w) of the image with its holes zeroed."""
        self._check(image, known)
        return self.encoder(image if known is None else image * known)

    def quantize(self, features, known=None):
        """Dual-codebook quantisation; `known` is the pixel mask (None: every patch known)."""
        b, _, h, w = features.shape
        patch_known = (torch.ones(b, h, w, dtype=torch.bool, device=features.device) if known is None
                       else patch_known_mask(known, self.patch_size))
        return quantize_feature_map(self.vq, features, known_mask=patch_known)

    def known_code_vectors(self, tokens) -> torch.Tensor:
        """(B, h, w) known-codebook ids -> (B, h, w, D) code vectors."""
        return self.vq.known.decode_indices(tokens)

    def decode(self, quantized, masked_image, known, reference=None) -> torch.Tensor:
        """Quantised features (B, D, h, w) + the masked image -> image; known pixels pasted back."""
        out = self.decoder(quantized, masked_image, known, reference)
        return out * (1 - known) + masked_image * known

    def decode_tokens(self, tokens, masked_image, known, reference=None) -> torch.Tensor:
        q = self.vq.decode_indices(tokens).permute(0, 3, 1, 2)
        return self.decode(q, masked_image, known, reference)

    def forward(self, image, known, erase=None) -> dict:
        """Training pass. The encoder sees the image with `erase` holes (patches touched by them
        use the unknown codebook); the decoder is guided by the image with `known` holes and
        must reconstruct the whole image."""
        if erase is None:
            erase = torch.ones_like(known)
        q = self.quantize(self.encode(image, erase), erase)
        masked = image * known
        return {"reconstruction": self.decoder(q.quantized, masked, known), "vq_loss": q.loss,
                "indices": q.indices, "perplexity": q.perplexity}

    def _check(self, image, known):
        p = self.patch_size
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[-1] % p or image.shape[-2] % p:
            raise ValueError(f"PatchVQVAE expects (B, 3, H, W) with H, W multiples of {p}, got {tuple(image.shape)}")
        if known is not None and known.shape != (image.shape[0], 1, *image.shape[-2:]):
            raise ValueError(f"known mask must be {(image.shape[0], 1, *image.shape[-2:])}, got {tuple(known.shape)}")


# ---- UQ-Transformer ----

class UnquantizedTransformer(ModelMixin, ConfigMixin):
    """Bidirectional transformer over the token grid: un-quantised features in, logits over the
    known codebook out. Positions use fixed 2D sin-cos embeddings, so any grid size works."""

    @register_to_config
    def __init__(self, feature_dim: int = 64, num_tokens: int = 512, hidden_size: int = 256, num_layers: int = 8,
                 num_heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.proj_in = nn.Linear(feature_dim, hidden_size)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, int(hidden_size * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, num_tokens)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, h, w, D) -> logits (B, h, w, num_tokens)."""
        b, h, w, d = features.shape
        pos = sincos_2d(self.config.hidden_size, (h, w)).to(features.device, features.dtype)
        x = self.proj_in(features.reshape(b, h * w, d)) + pos
        x = self.head(self.norm(self.blocks(x)))
        return x.reshape(b, h, w, -1)


def transformer_loss(transformer, vqvae, image, known, random_quantize: float = 0.3):
    """Cross-entropy on the patches with missing pixels; targets are the known-codebook tokens
    of the complete image. Returns (loss, token accuracy)."""
    with torch.no_grad():
        full = vqvae.quantize(vqvae.encode(image))          # every patch known -> known codebook
        target = full.indices                                # (B, h, w)
        features = vqvae.encode(image, known).permute(0, 2, 3, 1)
        patch_known = patch_known_mask(known, vqvae.patch_size)
        # Known patches' features equal the full image's (patch locality), so their quantised
        # vectors are full.quantized: show them sometimes, as sampled positions are at inference.
        swap = patch_known & (torch.rand(patch_known.shape, device=image.device) < random_quantize)
        features = torch.where(swap[..., None], full.quantized.permute(0, 2, 3, 1), features)
    logits = transformer(features)
    masked = ~patch_known
    if not masked.any():
        return logits.sum() * 0.0, 1.0
    loss = F.cross_entropy(logits[masked].float(), target[masked])
    acc = (logits[masked].argmax(-1) == target[masked]).float().mean().item()
    return loss, acc


@torch.no_grad()
def sample_tokens(transformer, vqvae, features, patch_known, known_tokens, *, top_k: int = 50,
                  temperature: float = 1.0, tokens_per_step: int = 4, generator=None, progress=None):
    """Fill every masked position, most confident first.

    features (B, h, w, D) un-quantised; patch_known (B, h, w) bool; known_tokens (B, h, w) the
    known patches' tokens. Each step predicts all masked positions, keeps the `tokens_per_step`
    per image whose top probability is highest, samples their tokens from the top-k, and feeds
    those positions back as quantised code vectors. Returns (B, h, w) tokens.
    """
    features, filled, tokens = features.clone(), patch_known.clone(), known_tokens.clone()
    b = features.shape[0]
    while not filled.all():
        check_time()  # --max-seconds
        logits = transformer(features).float() / max(temperature, 1e-6)
        probs = logits.softmax(-1).reshape(b, -1, logits.shape[-1])
        if 0 < top_k < probs.shape[-1]:
            kth = probs.topk(top_k, dim=-1).values[..., -1:]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
            probs = probs / probs.sum(-1, keepdim=True)
        confidence = probs.amax(-1).masked_fill(filled.reshape(b, -1), -1.0)
        for i in range(b):
            remaining = int((~filled[i]).sum())
            if remaining == 0:
                continue
            pick = confidence[i].topk(min(tokens_per_step, remaining)).indices
            drawn = torch.multinomial(probs[i, pick].cpu(), 1, generator=generator).squeeze(1).to(pick.device)
            flat_tokens, flat_filled = tokens[i].view(-1), filled[i].view(-1)
            flat_tokens[pick], flat_filled[pick] = drawn, True
            features[i].view(-1, features.shape[-1])[pick] = vqvae.known_code_vectors(drawn).to(features.dtype)
        if progress is not None:
            progress.update(1)
    return tokens


# ---- Checkpoint ----

def save_put(vqvae: PatchVQVAE, transformer: UnquantizedTransformer, path, dtype: torch.dtype | None = None):
    """The two-part checkpoint the pipeline loads: `path/vqvae/` and `path/transformer/` (safetensors),
    optionally cast (e.g. torch.float16 to ship) on copies, so the models passed in stay as they are."""
    path = Path(path)
    for name, model in (("vqvae", vqvae), ("transformer", transformer)):
        m = copy.deepcopy(model).to("cpu", dtype) if dtype is not None else model
        m.save_pretrained(path / name, safe_serialization=True)
    return path
