"""Diffusion Transformers: DiT (image), text-conditioned DiT, and a factorised video DiT (VDT).

Modelled on facebookresearch/DiT `models.py`: a patch embedder, timestep / label embedders,
adaLN-Zero transformer blocks, a zero-initialised final layer, and a table of named configs.
Additions over the original, each off by default so an image DiT is the paper's DiT:

* `context_dim`: text conditioning. Each block gets a cross-attention layer between
  self-attention and the MLP, and a masked mean of the context is projected and added to the
  conditioning vector `c`. A fully masked (or absent) context is the unconditional case.
* `num_frames > 1`: video. Blocks become `SpatioTemporalBlock`s (temporal attention across
  frames at each patch position, then DiT's spatial attention + MLP within each frame), and a
  1D sin-cos temporal embedding is added. Spatial weights keep DiT's names, so an image DiT
  state dict initialises the spatial half of a video DiT.

Official weights: module names follow facebookresearch/DiT (and the timm `Attention`, `Mlp`
and `PatchEmbed` modules it uses), so its checkpoints load with a near-identity mapping; see
`convert_facebook_dit_state_dict` and `DiT.from_facebook_checkpoint`.
"""
from __future__ import annotations

import math
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


def modulate(x, shift, scale):
    """adaLN: `x` (B, L, D) shifted and scaled per sample by `shift`, `scale` (B, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


# ---- Positional embeddings (fixed sin-cos, as MAE / DiT) ----

def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, embed_dim) as [sin | cos]; float64 like DiT's numpy code."""
    if embed_dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double().reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid_size) -> torch.Tensor:
    """(H*W, embed_dim) row-major; the first half encodes the column, as DiT's meshgrid(w, h)."""
    gh, gw = _pair(grid_size)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    first = sincos_1d(embed_dim // 2, cols.reshape(-1))
    second = sincos_1d(embed_dim // 2, rows.reshape(-1))
    return torch.cat([first, second], dim=1).float()


def sincos_temporal(embed_dim: int, num_frames: int) -> torch.Tensor:
    return sincos_1d(embed_dim, torch.arange(num_frames)).float()


# ---- Embedders ----

class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, H/p * W/p, D) with a strided Conv2d named `proj`, as timm."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        # contiguous: a transposed view would make the whole residual stream (x + gate * h keeps
        # x's strides) non-contiguous, and every LayerNorm and Linear then copies it first.
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


class TimestepEmbedder(nn.Module):
    """Scalar diffusion timesteps -> vectors: sinusoidal frequencies, then a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        """(B,) possibly fractional timesteps -> (B, dim) as [cos | sin] (DiT's order)."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(t_freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors. Row `num_classes` is the null class used for CFG dropout."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train: bool, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# ---- Attention and MLP (timm-compatible parameter names) ----

class Attention(nn.Module):
    """Multi-head self-attention; `qkv` output is laid out (3, heads, head_dim) like timm."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class CrossAttention(nn.Module):
    """Queries from the tokens, keys/values from a context sequence (B, S, context_dim)."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, context, context_mask=None):
        B, L, D = x.shape
        S, H = context.shape[1], self.num_heads
        q = self.q(x).reshape(B, L, H, D // H).transpose(1, 2)
        k, v = self.kv(context).reshape(B, S, 2, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask, has_context = None, None
        if context_mask is not None:
            keep = context_mask.bool()
            has_context = keep.any(dim=1)
            # A fully masked row would give NaN in softmax; let it attend anywhere, then zero it,
            # which makes "all masked" identical to "no context" (the CFG null condition).
            keep = keep | ~has_context[:, None]
            attn_mask = keep[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(B, L, D))
        if has_context is not None:
            out = out * has_context[:, None, None].to(out.dtype)
        return out


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


# ---- Core DiT blocks ----

class DiTBlock(nn.Module):
    """adaLN-Zero block: self-attention, optional cross-attention, MLP; identity at init."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, context_dim=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(hidden_size, eps=1e-6)
            self.cross_attn = CrossAttention(hidden_size, context_dim, num_heads)
        else:
            self.norm_cross = self.cross_attn = None
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c, context=None, context_mask=None, frames: int = 1):
        """x (B, L, D), c (B, D). With `frames` > 1, L = frames * N and self-attention stays
        within each frame (the spatial half of a factorised video block)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        B, L, D = h.shape
        h = self.attn(h.reshape(B * frames, L // frames, D)).reshape(B, L, D)
        x = x + gate_msa.unsqueeze(1) * h
        if self.cross_attn is not None and context is not None:
            # Ungated: zero-initialised `cross_attn.proj` keeps the block an identity at init.
            x = x + self.cross_attn(self.norm_cross(x), context, context_mask)
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class SpatioTemporalBlock(DiTBlock):
    """Factorised video block (VDT): temporal attention per patch position, then a DiT block
    per frame. Input/output (B, T, N, D)."""

    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, context_dim=None):
        super().__init__(hidden_size, num_heads, mlp_ratio, context_dim)
        self.temporal_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.temporal_attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.temporal_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size, bias=True))

    def forward(self, x, c, context=None, context_mask=None):
        B, T, N, D = x.shape
        shift, scale, gate = self.temporal_adaLN_modulation(c).chunk(3, dim=1)
        h = modulate(self.temporal_norm(x.reshape(B, T * N, D)), shift, scale)
        h = h.reshape(B, T, N, D).transpose(1, 2).reshape(B * N, T, D)
        h = self.temporal_attn(h).reshape(B, N, T, D).transpose(1, 2)
        x = x + gate[:, None, None, :] * h
        x = super().forward(x.reshape(B, T * N, D), c, context, context_mask, frames=T)
        return x.reshape(B, T, N, D)


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---- Model ----

class DiT(ModelMixin, ConfigMixin):
    """Diffusion Transformer over latents/pixels (B, C, H, W), or videos (B, T, C, H, W) when
    `num_frames` > 1. `forward(x, t, y=None, context=None, context_mask=None)` returns the same
    layout with `out_channels` channels (2 * in_channels when `learn_sigma`: [eps | sigma]).

    self_condition: the model also reads its own previous x0 estimate, `x_self_cond` (same shape
    as x; zeros = none), concatenated to x along the channels (Chen et al. 2022, "Analog Bits";
    `diffusion_loss(self_condition=True)` trains it, `sample(self_condition=True)` feeds it)."""

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiTBlock", "SpatioTemporalBlock"]

    @register_to_config
    def __init__(
        self,
        input_size=32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        context_dim: int | None = None,
        num_frames: int = 1,
        self_condition: bool = False,
    ):
        super().__init__()
        grid_h, grid_w = _pair(input_size)
        if grid_h % patch_size or grid_w % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.grid_size = (grid_h // patch_size, grid_w // patch_size)
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.num_classes = num_classes
        self.num_frames = num_frames
        self.gradient_checkpointing = False

        self.x_embedder = PatchEmbed(patch_size, in_channels * (2 if self_condition else 1), hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes > 0 else None
        if context_dim is not None:
            self.context_embedder = nn.Sequential(
                nn.Linear(context_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
            )
        else:
            self.context_embedder = None
        # Fixed (not learned, not saved): recomputed from the config on every load.
        self.register_buffer("pos_embed", sincos_2d(hidden_size, self.grid_size)[None], persistent=False)
        block_cls = SpatioTemporalBlock if num_frames > 1 else DiTBlock
        if num_frames > 1:
            self.register_buffer(
                "temporal_embed", sincos_temporal(hidden_size, num_frames)[None, :, None], persistent=False
            )
        self.blocks = nn.ModuleList(
            [block_cls(hidden_size, num_heads, mlp_ratio, context_dim) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    @property
    def null_class(self) -> int:
        """Label of the unconditional (CFG) class; pass it as `y` in `uncond_kwargs`."""
        if self.y_embedder is None or self.config.class_dropout_prob <= 0:
            raise ValueError("this DiT has no null class (num_classes == 0 or class_dropout_prob == 0)")
        return self.num_classes

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        # Patch embedding is a linear map on flattened patches; init it as one.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.constant_(self.x_embedder.proj.bias, 0)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        # adaLN-Zero: every residual branch starts closed, so each block is the identity.
        for block in self.blocks:
            for ada in (block.adaLN_modulation, getattr(block, "temporal_adaLN_modulation", None)):
                if ada is not None:
                    nn.init.constant_(ada[-1].weight, 0)
                    nn.init.constant_(ada[-1].bias, 0)
            if block.cross_attn is not None:
                nn.init.constant_(block.cross_attn.proj.weight, 0)
                nn.init.constant_(block.cross_attn.proj.bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        """(B, N, p*p*C) -> (B, C, H, W)."""
        c, p = self.out_channels, self.patch_size
        h, w = self.grid_size
        if x.shape[1] != h * w:
            raise ValueError(f"expected {h * w} patch tokens, got {x.shape[1]}")
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def _check_input(self, x):
        video = self.num_frames > 1
        expected = "(B, T, C, H, W)" if video else "(B, C, H, W)"
        size = tuple(s * self.patch_size for s in self.grid_size)
        if x.ndim != (5 if video else 4) or x.shape[-3] != self.in_channels or tuple(x.shape[-2:]) != size:
            raise ValueError(
                f"DiT input x has shape {tuple(x.shape)}; expected {expected} with C={self.in_channels}, "
                f"(H, W)={size}"
            )
        if video and x.shape[1] > self.num_frames:
            raise ValueError(f"video has {x.shape[1]} frames; this model was built for at most {self.num_frames}")

    def _condition(self, t, y, context, context_mask, batch):
        """The conditioning vector c (B, D) plus the (possibly CFG-dropped) context mask."""
        t = torch.as_tensor(t, device=self.pos_embed.device)
        if t.ndim == 0:
            t = t.expand(batch)
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:
                y = torch.full((batch,), self.null_class, device=c.device, dtype=torch.long)
            c = c + self.y_embedder(y, self.training)
        elif y is not None:
            raise ValueError("y was given but this DiT is unconditional (num_classes=0)")
        if self.context_embedder is None:
            if context is not None:
                raise ValueError("context was given but this DiT has no cross-attention (context_dim=None)")
            return c, None, None
        if context is not None:
            if context_mask is None:
                context_mask = torch.ones(context.shape[:2], dtype=torch.bool, device=context.device)
            context_mask = context_mask.bool()
            if self.training and self.config.class_dropout_prob > 0:
                keep = torch.rand(batch, device=c.device) >= self.config.class_dropout_prob
                context_mask = context_mask & keep[:, None]
            weights = context_mask.to(context.dtype).unsqueeze(-1)
            pooled = (context * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            # No context is the null condition, identical to a fully masked context.
            pooled = c.new_zeros(batch, self.config.context_dim)
        c = c + self.context_embedder(pooled.to(c.dtype))
        return c, context, context_mask

    def forward(self, x, t, y=None, context=None, context_mask=None, x_self_cond=None):
        """x: (B, C, H, W) or (B, T, C, H, W); t: (B,) or scalar diffusion timesteps;
        y: (B,) class labels (None = null class); context: (B, S, context_dim) text tokens;
        context_mask: (B, S), 1 = real token; x_self_cond: like x, the previous x0 estimate
        (self_condition models only; None = zeros)."""
        self._check_input(x)
        B = x.shape[0]
        frames = x.shape[1] if x.ndim == 5 else 1
        if self.config.self_condition:
            if x_self_cond is not None and x_self_cond.shape != x.shape:
                raise ValueError(f"x_self_cond has shape {tuple(x_self_cond.shape)}; expected {tuple(x.shape)}")
            x = torch.cat([x, torch.zeros_like(x) if x_self_cond is None else x_self_cond.to(x.dtype)], dim=-3)
        elif x_self_cond is not None:
            raise ValueError("x_self_cond was given but this DiT has no self-conditioning (self_condition=False)")
        h = self.x_embedder(x.reshape(B * frames, *x.shape[-3:])) + self.pos_embed
        c, context, context_mask = self._condition(t, y, context, context_mask, B)
        if self.num_frames > 1:
            h = h.reshape(B, frames, *h.shape[1:]) + self.temporal_embed[:, :frames]
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(block, h, c, context, context_mask)
            else:
                h = block(h, c, context, context_mask)
        h = self.final_layer(h.reshape(B, -1, h.shape[-1]), c)
        out = self.unpatchify(h.reshape(B * frames, -1, h.shape[-1]))
        return out.reshape(B, frames, *out.shape[1:]) if x.ndim == 5 else out

    # ---- Official checkpoints ----

    @classmethod
    def from_facebook_checkpoint(cls, path_or_state_dict, **config) -> "DiT":
        """Load a facebookresearch/DiT checkpoint (e.g. `DiT-XL-2-256x256.pt`, a plain state dict;
        `.safetensors` also accepted). The config is inferred from tensor shapes (num_heads from
        `DIT_CONFIGS`); keyword arguments override it. Example:

            model = DiT.from_facebook_checkpoint("DiT-XL-2-256x256.pt")  # input_size=32 latents
            model.save_pretrained("checkpoints/dit-xl-2-256")
        """
        if isinstance(path_or_state_dict, (str, os.PathLike)):
            path = os.fspath(path_or_state_dict)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"DiT checkpoint not found: {path}")
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                state_dict = load_file(path)
            else:
                state_dict = torch.load(path, map_location="cpu", weights_only=True)
        else:
            state_dict = path_or_state_dict
        state_dict = _unwrap_checkpoint(state_dict)
        config = {**infer_dit_config(state_dict), **config}
        if "num_heads" not in config:
            raise ValueError(
                f"cannot infer num_heads for a DiT with depth={config['depth']}, hidden_size={config['hidden_size']} "
                f"(not in DIT_CONFIGS); pass num_heads=..."
            )
        model = cls(**config)
        converted = convert_facebook_dit_state_dict(state_dict, pos_embed=model.pos_embed)
        _check_keys(converted, model)
        model.load_state_dict(converted, strict=True)
        return model.eval()


def widen_input(state: dict, model: DiT) -> dict:
    """DiT weights `state` for `model`: weights of a DiT without self-conditioning start a self-conditioned
    one with zero weights on the estimate's channels (the same function until it learns to use them)."""
    key = "x_embedder.proj.weight"
    target = model.state_dict()[key].shape
    if state[key].shape != target and state[key].shape[1] * 2 == target[1]:
        state = {**state, key: torch.cat([state[key], torch.zeros_like(state[key])], 1)}
    return state


def load_trunk(model: DiT, state: dict, partial: bool = False) -> list[str]:
    """Load DiT weights `state` into `model` (widened as widen_input does). A DiT of another latent width fits
    only with `partial`: the layers whose shapes differ (the input and output projections) keep `model`'s fresh
    weights. Returns those layers' names."""
    state, own = widen_input(state, model), model.state_dict()
    fresh = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
    if fresh and not partial:
        raise ValueError(f"these DiT weights do not fit the model ({', '.join(fresh)} differ in shape)")
    model.load_state_dict({**state, **{k: own[k] for k in fresh}})
    return fresh


# ---- Official-checkpoint conversion ----
#
# facebookresearch/DiT key               -> genstudio DiT key
# x_embedder.proj.{weight,bias}          -> same (Conv2d patch embed)
# t_embedder.mlp.{0,2}.{weight,bias}     -> same
# y_embedder.embedding_table.weight      -> same (num_classes + 1 rows; last = null class)
# pos_embed (1, N, D), fixed             -> dropped (recomputed buffer; checked if given)
# blocks.{i}.attn.qkv / attn.proj        -> same (timm Attention layout)
# blocks.{i}.mlp.fc1 / mlp.fc2           -> same (timm Mlp)
# blocks.{i}.adaLN_modulation.1          -> same
# final_layer.linear / adaLN_modulation.1 -> same
# (norm1 / norm2 / norm_final have no parameters.)

def _unwrap_checkpoint(state_dict):
    """Accept a training checkpoint ({"model", "ema", ...}: EMA weights preferred, as DiT's
    sample.py) or a DataParallel state dict ("module." prefixes)."""
    if "ema" in state_dict and isinstance(state_dict["ema"], dict):
        state_dict = state_dict["ema"]
    elif "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def convert_facebook_dit_state_dict(state_dict, pos_embed: torch.Tensor | None = None):
    """facebookresearch/DiT state dict -> genstudio `DiT` state dict (see the table above).

    Names are identical except `pos_embed`, which is dropped: ours is a fixed buffer recomputed
    from the config. When `pos_embed` (the model's buffer) is given, the checkpoint's copy is
    checked against it so a wrong `input_size`/`patch_size` fails loudly here.
    """
    state_dict = _unwrap_checkpoint(state_dict)
    converted = dict(state_dict)
    theirs = converted.pop("pos_embed", None)
    if theirs is not None and pos_embed is not None:
        theirs = theirs.reshape(1, -1, theirs.shape[-1])
        if theirs.shape != pos_embed.shape:
            raise ValueError(
                f"checkpoint pos_embed has shape {tuple(theirs.shape)} but the model's is "
                f"{tuple(pos_embed.shape)}: input_size / patch_size / hidden_size do not match the checkpoint"
            )
        if not torch.allclose(theirs.float().cpu(), pos_embed.float().cpu(), atol=1e-4):
            raise ValueError("checkpoint pos_embed differs from DiT's 2D sin-cos embedding; not a DiT checkpoint?")
    return converted


def _check_keys(state_dict, model):
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(
            "DiT checkpoint does not match the model config.\n"
            f"  missing keys ({len(missing)}): {missing[:20]}{' ...' if len(missing) > 20 else ''}\n"
            f"  unexpected keys ({len(unexpected)}): {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}"
        )
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise ValueError("DiT checkpoint shapes do not match the model config:\n  " + "\n  ".join(wrong[:20]))


def infer_dit_config(state_dict) -> dict:
    """Config for `DiT` read off a (facebook or genstudio) state dict's tensor shapes."""
    try:
        patch_w = state_dict["x_embedder.proj.weight"]
        final_w = state_dict["final_layer.linear.weight"]
    except KeyError as err:
        raise KeyError(f"not a DiT state dict: missing {err.args[0]!r}") from None
    hidden, in_channels, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
    depth = len({m.group(1) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))})
    config = dict(
        patch_size=patch,
        in_channels=in_channels,
        hidden_size=hidden,
        depth=depth,
        learn_sigma=final_w.shape[0] == 2 * in_channels * patch * patch,
        mlp_ratio=state_dict["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
    )
    table = state_dict.get("y_embedder.embedding_table.weight")
    if table is None:
        config["num_classes"] = 0
    else:  # facebook checkpoints carry num_classes + 1 rows (the null class for CFG)
        config.update(num_classes=table.shape[0] - 1, class_dropout_prob=0.1)
    if "pos_embed" in state_dict:
        side = math.isqrt(state_dict["pos_embed"].reshape(-1, hidden).shape[0])
        config["input_size"] = side * patch
    if "blocks.0.cross_attn.kv.weight" in state_dict:
        config["context_dim"] = state_dict["blocks.0.cross_attn.kv.weight"].shape[1]
    for spec in DIT_CONFIGS.values():
        if (spec["depth"], spec["hidden_size"]) == (depth, hidden):
            config["num_heads"] = spec["num_heads"]
    return config


# ---- Named configs ----

DIT_CONFIGS = {
    "DiT-tiny": dict(depth=2, hidden_size=64, num_heads=2),
    "DiT-S": dict(depth=12, hidden_size=384, num_heads=6),
    "DiT-B": dict(depth=12, hidden_size=768, num_heads=12),
    "DiT-L": dict(depth=24, hidden_size=1024, num_heads=16),
    "DiT-XL": dict(depth=28, hidden_size=1152, num_heads=16),
}


def dit_from_name(name: str, patch_size: int = 2, **kw) -> DiT:
    """`dit_from_name("DiT-XL", patch_size=2)`; "DiT-XL/2", "XL" and "tiny" also work."""
    base, _, patch = name.partition("/")
    key = base if base in DIT_CONFIGS else f"DiT-{base}"
    if key not in DIT_CONFIGS:
        raise ValueError(f"unknown DiT config {name!r}; choose from {sorted(DIT_CONFIGS)}")
    return DiT(patch_size=int(patch) if patch else patch_size, **{**DIT_CONFIGS[key], **kw})
