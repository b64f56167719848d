"""Vector quantisers: vanilla / EMA VQ, SimVQ, residual VQ, multi-scale residual VQ (VAR-style),
a dual-codebook VQ for PUT, and codebook-usage statistics.

Shape convention: every quantiser works channels-last, ``z`` of shape ``(..., dim)``; the
indices then have shape ``(...)``. For (B, C, H, W) feature maps use ``quantize_feature_map``.

References
- van den Oord et al. 2017, "Neural Discrete Representation Learning" (VQ-VAE, EMA updates).
- Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
  Linear Layer" (SimVQ): a frozen random codebook C reparameterised by one learned linear W.
- Zeghidour et al. 2021 (SoundStream) / Lee et al. 2022 (RQ-VAE): residual quantisation.
- Tian et al. 2024, "Visual Autoregressive Modeling" (VAR): multi-scale residual quantisation.
- Liu et al. 2022, "Reduce Information Loss in Transformers for Pluralistic Image Inpainting"
  (PUT): separate codebooks for fully-known and partially-masked patches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "QuantizerOutput",
    "VectorQuantizer",
    "SimVQ",
    "ResidualVQ",
    "MultiScaleResidualVQ",
    "DualCodebookVQ",
    "CodebookUsageMeter",
    "codebook_usage",
    "quantize_feature_map",
    "build_quantizer",
]


@dataclass
class QuantizerOutput:
    """quantized: straight-through output, same shape/dtype as the input.
    indices: code ids, ``(...)`` (``(..., Q)`` for ResidualVQ, a list per scale for
    MultiScaleResidualVQ). loss: scalar commitment + codebook loss. perplexity: exp(entropy)
    of this batch's code histogram (no gradient)."""

    quantized: torch.Tensor
    indices: torch.Tensor | list[torch.Tensor]
    loss: torch.Tensor
    perplexity: torch.Tensor


# ---- Helpers ----

def _check_last_dim(z: torch.Tensor, dim: int, name: str) -> None:
    if not torch.is_tensor(z) or z.ndim < 1 or z.shape[-1] != dim:
        shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise ValueError(f"{name} expects z of shape (..., {dim}) (channels last), got {shape}")


def _perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    probs = counts.double() / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-30))).sum()
    return entropy.exp().float()


@torch.no_grad()
def _batch_perplexity(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size)
    return _perplexity_from_counts(counts)


def _nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ||z - c_k||^2 in float32. z: (N, D), codebook: (K, D) -> (N,) long.
    ||c||^2 - 2 z.c suffices for the argmin (||z||^2 is constant per row)."""
    z, codebook = z.float(), codebook.float()
    distances = codebook.pow(2).sum(-1)[None, :] - 2.0 * z @ codebook.t()
    return distances.argmin(dim=-1)


def _fp32_region(device: torch.device):
    # bf16 distances collapse near-ties onto the same code; assignment is always float32.
    return torch.autocast(device_type=device.type, enabled=False)


def _vq_loss(z: torch.Tensor, codes: torch.Tensor, beta: float, codebook_term: bool) -> torch.Tensor:
    """beta * ||sg(zq) - z||^2 (+ ||zq - sg(z)||^2 when the codebook learns by gradient)."""
    z, codes = z.float(), codes.float()
    loss = beta * F.mse_loss(z, codes.detach())
    if codebook_term:
        loss = loss + F.mse_loss(codes, z.detach())
    return loss


# ---- Single-codebook quantisers ----

class _NearestNeighbourQuantizer(nn.Module):
    """Shared forward of VectorQuantizer and SimVQ; subclasses define ``codebook_vectors``."""

    codebook_size: int
    dim: int
    beta: float
    ema: bool = False
    l2_normalize: bool = False

    def codebook_vectors(self) -> torch.Tensor:  # (K, dim)
        raise NotImplementedError

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) long -> (..., dim) code vectors, exactly what ``forward`` would output."""
        return F.embedding(indices, self.codebook_vectors())

    def _after_assignment(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Hook for non-gradient codebook updates (EMA)."""

    def lookup(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes without straight-through: returns ``(codes, indices)`` with codes
        (..., dim) float32, differentiable w.r.t. the codebook parameters only. In training
        mode an EMA quantiser updates its codebook here (after the assignment)."""
        _check_last_dim(z, self.dim, type(self).__name__)
        with _fp32_region(z.device):
            z = z.float()
            if self.l2_normalize:
                z = F.normalize(z, dim=-1)
            codebook = self.codebook_vectors().float()
            indices = _nearest_code(z.reshape(-1, self.dim), codebook).view(z.shape[:-1])
            codes = F.embedding(indices, codebook)
            if self.training:
                self._after_assignment(z.detach(), indices)
        return codes, indices

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        codes, indices = self.lookup(z)
        z_target = F.normalize(z.float(), dim=-1) if self.l2_normalize else z
        loss = _vq_loss(z_target, codes, self.beta, codebook_term=not self.ema)
        # Straight-through: forward value is the code, gradient w.r.t. z is the identity.
        quantized = z_target + (codes.to(z_target.dtype) - z_target).detach()
        return QuantizerOutput(quantized.to(z.dtype), indices, loss,
                               _batch_perplexity(indices, self.codebook_size))


class VectorQuantizer(_NearestNeighbourQuantizer):
    """VQ-VAE quantiser. With ``ema=True`` the codebook follows exponential moving averages of
    its assigned encoder outputs (Laplace-smoothed cluster sizes) instead of gradients, and the
    loss is the commitment term alone. ``l2_normalize`` matches on the unit sphere (cosine)."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, l2_normalize: bool = False):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1, got {codebook_size}, {dim}")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.ema, self.decay, self.eps, self.l2_normalize = ema, decay, eps, l2_normalize
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2_normalize:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, dim=-1)
        if ema:
            self.embedding.weight.requires_grad_(False)
            # Starting from one pseudo-member at the initial vector keeps unused codes in place
            # instead of dividing by a near-zero cluster size on the first update.
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_sum", self.embedding.weight.data.clone())

    def codebook_vectors(self) -> torch.Tensor:
        weight = self.embedding.weight
        return F.normalize(weight, dim=-1) if self.l2_normalize else weight

    @torch.no_grad()
    def init_from_data(self, vectors: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Data-dependent initialisation: every code becomes one of `vectors` (N, dim), drawn at random
        (with replacement when N < codebook_size); the EMA statistics restart from there."""
        vectors = vectors.reshape(-1, self.dim).float()
        if not len(vectors):
            raise ValueError("init_from_data needs at least one vector")
        pick = torch.randint(0, len(vectors), (self.codebook_size,), generator=generator) \
            if len(vectors) < self.codebook_size else torch.randperm(len(vectors), generator=generator)[:self.codebook_size]
        codes = vectors[pick.to(vectors.device)]
        self.embedding.weight.copy_(F.normalize(codes, dim=-1) if self.l2_normalize else codes)
        if self.ema:
            self.cluster_size.fill_(1.0)
            self.embed_sum.copy_(self.embedding.weight)

    @torch.no_grad()
    def _after_assignment(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        if not self.ema or indices.numel() == 0:
            return
        flat_z, flat_idx = z.reshape(-1, self.dim), indices.reshape(-1)
        counts = torch.bincount(flat_idx, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed_sum).index_add_(0, flat_idx, flat_z)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embedding.weight.data.copy_(self.embed_sum / smoothed[:, None])


class SimVQ(_NearestNeighbourQuantizer):
    """SimVQ: a frozen random codebook C ~ N(0, dim^-1/2) and a learned linear map W; the
    effective codebook is W(C). Because every code moves with W, the whole codebook stays in
    use. Attribute names match the official checkpoints (``quantize.embedding.weight``,
    ``quantize.embedding_proj.weight``); official checkpoints also carry
    ``embedding_proj.bias``, so load those with ``proj_bias=True``."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, proj_bias: bool = False):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size and dim must be >= 1, got {codebook_size}, {dim}")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=dim**-0.5)
        self.embedding.weight.requires_grad_(False)
        self.embedding_proj = nn.Linear(dim, dim, bias=proj_bias)

    def codebook_vectors(self) -> torch.Tensor:
        # detach(): C stays frozen even if someone calls requires_grad_(True) on the module.
        return self.embedding_proj(self.embedding.weight.detach())


def _build_single(kind: str, codebook_size: int, dim: int, **kw) -> _NearestNeighbourQuantizer:
    if kind == "vq":
        return VectorQuantizer(codebook_size, dim, **kw)
    if kind == "vq_ema":
        return VectorQuantizer(codebook_size, dim, ema=True, **kw)
    if kind == "simvq":
        return SimVQ(codebook_size, dim, **kw)
    raise ValueError(f"quantizer kind must be 'vq', 'vq_ema' or 'simvq', got {kind!r}")


def quantize_feature_map(quantizer: nn.Module, z_bchw: torch.Tensor, **kwargs) -> QuantizerOutput:
    """Apply a channels-last quantiser to a (B, C, H, W) map: quantized comes back (B, C, H, W),
    indices (B, H, W) (or (B, H, W, Q) for ResidualVQ). kwargs go to the quantiser
    (e.g. ``known_mask`` of shape (B, H, W) for DualCodebookVQ)."""
    if z_bchw.ndim != 4:
        raise ValueError(f"quantize_feature_map expects (B, C, H, W), got {tuple(z_bchw.shape)}")
    out = quantizer(z_bchw.permute(0, 2, 3, 1), **kwargs)
    return dataclasses.replace(out, quantized=out.quantized.permute(0, 3, 1, 2))


# ---- Residual VQ ----

class ResidualVQ(nn.Module):
    """``num_quantizers`` codebooks, each quantising what the previous ones left over.
    quantized = sum of the stage codes; indices (..., Q); loss = mean of the stage losses."""

    def __init__(self, num_quantizers: int, codebook_size: int, dim: int,
                 quantizer: str = "vq", **quantizer_kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        self.num_quantizers, self.codebook_size, self.dim = num_quantizers, codebook_size, dim
        self.layers = nn.ModuleList(
            _build_single(quantizer, codebook_size, dim, **quantizer_kwargs)
            for _ in range(num_quantizers))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        _check_last_dim(z, self.dim, "ResidualVQ")
        residual, total = z.float(), torch.zeros_like(z, dtype=torch.float32)
        indices, losses, perplexities = [], [], []
        for layer in self.layers:
            out = layer(residual)
            code = out.quantized.detach().float()
            total, residual = total + code, residual - code
            indices.append(out.indices)
            losses.append(out.loss)
            perplexities.append(out.perplexity)
        quantized = z + (total.to(z.dtype) - z).detach()
        return QuantizerOutput(quantized, torch.stack(indices, dim=-1), torch.stack(losses).mean(),
                               torch.stack(perplexities).mean())

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., Q') with Q' <= num_quantizers (coarse prefix decoding) -> (..., dim)."""
        if indices.shape[-1] > self.num_quantizers:
            raise ValueError(f"indices have {indices.shape[-1]} stages, "
                             f"the model has {self.num_quantizers}")
        return sum(layer.decode_indices(indices[..., q]).float()
                   for q, layer in enumerate(self.layers[: indices.shape[-1]]))


# ---- Multi-scale residual VQ (VAR) ----

class MultiScaleResidualVQ(nn.Module):
    """VAR-style quantisation with ONE shared codebook over a pyramid of scales. At each scale
    the residual is area-downsampled, quantised, (bi)linearly upsampled back and subtracted.

    Inputs: a sequence (B, L, dim) with ``scales`` as token counts, or a channels-last map
    (B, H, W, dim) with ``scales`` as side lengths (int for square, or (h, w) pairs).
    The loss follows VAR: per scale, on the running reconstruction, averaged over scales."""

    def __init__(self, codebook_size: int, dim: int, scales=(1, 4, 16, 64),
                 quantizer: str = "vq", **quantizer_kwargs):
        super().__init__()
        if len(scales) == 0:
            raise ValueError("scales must be a non-empty sequence")
        self.codebook_size, self.dim, self.scales = codebook_size, dim, tuple(scales)
        self.quantizer = _build_single(quantizer, codebook_size, dim, **quantizer_kwargs)

    def _scale_sizes(self, spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
        sizes = []
        for s in self.scales:
            size = (s,) * len(spatial) if isinstance(s, int) else tuple(s)
            if len(size) != len(spatial) or any(a < 1 or a > b for a, b in zip(size, spatial)):
                raise ValueError(f"scale {s} does not fit an input of size {spatial}")
            sizes.append(size)
        return sizes

    @staticmethod
    def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
        """Channels-last resize: area when shrinking, (bi)linear when growing."""
        spatial = tuple(x.shape[1:-1])
        if spatial == size:
            return x
        x = x.movedim(-1, 1)
        if all(s <= t for s, t in zip(size, spatial)):
            x = F.interpolate(x, size=size, mode="area")
        else:
            x = F.interpolate(x, size=size, mode="linear" if len(size) == 1 else "bilinear",
                              align_corners=False)
        return x.movedim(1, -1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        if z.ndim not in (3, 4):
            raise ValueError("MultiScaleResidualVQ expects (B, L, dim) or (B, H, W, dim), "
                             f"got {tuple(z.shape)}")
        _check_last_dim(z, self.dim, "MultiScaleResidualVQ")
        spatial = tuple(z.shape[1:-1])
        z32 = z.float()
        residual, f_hat = z32.detach(), torch.zeros_like(z32)
        indices, loss = [], 0.0
        counts = torch.zeros(self.codebook_size, dtype=torch.long, device=z.device)
        with _fp32_region(z.device):
            for size in self._scale_sizes(spatial):
                codes, idx = self.quantizer.lookup(self._resize(residual, size))
                up = self._resize(codes, spatial)
                f_hat = f_hat + up
                residual = residual - up.detach()
                loss = loss + _vq_loss(z32, f_hat, self.quantizer.beta,
                                       codebook_term=not self.quantizer.ema)
                indices.append(idx)
                counts += torch.bincount(idx.reshape(-1), minlength=self.codebook_size)
        quantized = z + (f_hat.detach().to(z.dtype) - z).detach()
        return QuantizerOutput(quantized, indices, loss / len(indices), _perplexity_from_counts(counts))

    @torch.no_grad()
    def init_codebook(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialise the shared codebook from data: the residual of `z` area-pooled to every scale, as
        `forward` would quantise it if each scale were reconstructed exactly (the codes then start at
        the latents' scale instead of near zero). Needs a quantiser with `init_from_data`."""
        if not hasattr(self.quantizer, "init_from_data"):
            raise ValueError(f"{type(self.quantizer).__name__} has no data-dependent initialisation")
        spatial = tuple(z.shape[1:-1])
        residual, vectors = z.detach().float(), []
        for size in self._scale_sizes(spatial):
            pooled = self._resize(residual, size)
            vectors.append(pooled.reshape(-1, self.dim))
            residual = residual - self._resize(pooled, spatial)
        self.quantizer.init_from_data(torch.cat(vectors), generator)

    def decode_indices(self, indices: list[torch.Tensor], length) -> torch.Tensor:
        """indices: one tensor per scale ((B, s) or (B, h, w)); a prefix of the scales decodes
        a coarse reconstruction. length: L for sequences, (H, W) for maps -> (B, L|H, W, dim)."""
        spatial = (length,) if isinstance(length, int) else tuple(length)
        f_hat = 0.0
        for idx in indices:
            f_hat = f_hat + self._resize(self.quantizer.decode_indices(idx).float(), spatial)
        return f_hat


# ---- Dual-codebook VQ (PUT) ----

class DualCodebookVQ(nn.Module):
    """Two codebooks sharing one index space: positions with ``known_mask`` True use the
    known-patch codebook (ids ``[0, K_known)``), the others the partially-masked-patch codebook
    (ids ``[K_known, K_known + K_unknown)``)."""

    def __init__(self, codebook_size_known: int, codebook_size_unknown: int, dim: int,
                 quantizer: str = "vq", **quantizer_kwargs):
        super().__init__()
        self.codebook_size_known = codebook_size_known
        self.codebook_size_unknown = codebook_size_unknown
        self.codebook_size, self.dim = codebook_size_known + codebook_size_unknown, dim
        self.known = _build_single(quantizer, codebook_size_known, dim, **quantizer_kwargs)
        self.unknown = _build_single(quantizer, codebook_size_unknown, dim, **quantizer_kwargs)

    def forward(self, z: torch.Tensor, known_mask: torch.Tensor) -> QuantizerOutput:
        _check_last_dim(z, self.dim, "DualCodebookVQ")
        if known_mask.shape != z.shape[:-1] or known_mask.dtype != torch.bool:
            raise ValueError(f"known_mask must be bool of shape {tuple(z.shape[:-1])}, "
                             f"got {known_mask.dtype} {tuple(known_mask.shape)}")
        flat_z, mask = z.reshape(-1, self.dim), known_mask.reshape(-1)
        quantized = torch.zeros_like(flat_z)
        indices = torch.zeros(mask.shape, dtype=torch.long, device=z.device)
        loss = flat_z.new_zeros((), dtype=torch.float32)
        for quantizer, select, offset in ((self.known, mask, 0),
                                          (self.unknown, ~mask, self.codebook_size_known)):
            if not select.any():  # an empty batch would give a NaN mse
                continue
            out = quantizer(flat_z[select])
            quantized[select] = out.quantized
            indices[select] = out.indices + offset
            loss = loss + out.loss * (select.sum() / mask.numel())  # = mean over all positions
        return QuantizerOutput(quantized.view(z.shape), indices.view(z.shape[:-1]), loss,
                               _batch_perplexity(indices, self.codebook_size))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        is_known = indices < self.codebook_size_known
        known = self.known.decode_indices(indices.clamp(max=self.codebook_size_known - 1))
        unknown = self.unknown.decode_indices((indices - self.codebook_size_known).clamp(min=0))
        return torch.where(is_known[..., None], known, unknown)


# ---- Usage statistics ----

def _usage_from_counts(counts: torch.Tensor) -> dict:
    used = int((counts > 0).sum())
    return {"utilization": used / counts.numel(),
            "perplexity": float(_perplexity_from_counts(counts)),
            "used": used}


def _count_indices(indices, codebook_size: int) -> torch.Tensor:
    if isinstance(indices, (list, tuple)):  # MultiScaleResidualVQ's per-scale list
        indices = torch.cat([i.reshape(-1) for i in indices]) if indices else torch.zeros(0)
    flat = torch.as_tensor(indices).reshape(-1).long().cpu()
    if flat.numel() and (flat.min() < 0 or flat.max() >= codebook_size):
        raise ValueError(f"indices must lie in [0, {codebook_size}), "
                         f"got range [{int(flat.min())}, {int(flat.max())}]")
    return torch.bincount(flat, minlength=codebook_size)


def codebook_usage(indices, codebook_size: int) -> dict:
    """utilization: fraction of codes used; perplexity: exp(entropy) of the code histogram
    (equals the number of codes when usage is uniform); used: number of codes used.
    For ResidualVQ indices pass one stage at a time (``indices[..., q]``)."""
    return _usage_from_counts(_count_indices(indices, codebook_size))


class CodebookUsageMeter:
    """Accumulates the code histogram over many batches (e.g. a whole validation set)."""

    def __init__(self, codebook_size: int):
        self.codebook_size = codebook_size
        self.reset()

    def reset(self) -> None:
        self.counts = torch.zeros(self.codebook_size, dtype=torch.long)

    def update(self, indices) -> None:
        self.counts += _count_indices(indices, self.codebook_size)

    def compute(self) -> dict:
        return _usage_from_counts(self.counts)


# ---- Factory ----

def build_quantizer(kind: str, codebook_size: int, dim: int, **kw) -> nn.Module:
    """kinds: "vq", "vq_ema", "simvq" (kw to the class), "rvq" (num_quantizers=4, quantizer="vq"),
    "msrvq" (scales, quantizer), "dual" (codebook_size_unknown defaults to codebook_size)."""
    if kind in ("vq", "vq_ema", "simvq"):
        return _build_single(kind, codebook_size, dim, **kw)
    if kind == "rvq":
        return ResidualVQ(kw.pop("num_quantizers", 4), codebook_size, dim, **kw)
    if kind == "msrvq":
        return MultiScaleResidualVQ(codebook_size, dim, **kw)
    if kind == "dual":
        return DualCodebookVQ(codebook_size, kw.pop("codebook_size_unknown", codebook_size), dim, **kw)
    raise ValueError(f"unknown quantizer kind {kind!r}; expected one of "
                     "'vq', 'vq_ema', 'simvq', 'rvq', 'msrvq', 'dual'")
