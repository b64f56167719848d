"""G3PT: next-scale prediction of VAT tokens with a cross-scale querying transformer.

Zhang, Xiong, Xu, "G3PT: Unleash the power of Autoregressive Modeling in 3D Generation via Cross-scale
Querying Transformer" (2024). No code or weights were released; this follows the paper's generator (CAR,
cross-scale autoregressive modelling) on our core, predicting the token indices of our `VATTokenizer`.

- The VAT's scales (1, 2, 4, ..., num_tokens tokens) are the levels of detail. Scale k is predicted from
  `n_k` learnable query tokens (+ a scale embedding + a 1D sin-cos position over the full token axis).
- One transformer runs on [tokens of scales 0..k-1 ; queries of scales 0..k] with a block-causal mask:
  the tokens of scale j see the tokens of scales <= j, the queries of scale k see the tokens of scales < k
  and each other, nothing sees a query of another scale. No order inside a scale is needed.
- Conditioning by cross-attention in every block to a context of [a learned base token ; the class
  embedding ; the projected MiniLM token states of a prompt]; dropping the condition (CFG) swaps the
  class for the null class and masks the prompt, so "unconditional" is the base token alone.
- Training is teacher forcing over all scales at once (like VAR); `generate` samples scale by scale (a
  fixed number of steps), with classifier-free guidance, temperature and top-k.
- `cross_scale=False` is the paper's ablation (VAR's input scheme): no separate token stream and no learned
  queries; the input of scale k is the sum of the earlier scales' token embeddings linearly interpolated to
  n_k tokens (scale 0: a learned start block), and the blocks are block-causal among themselves.

Faithful: learnable queries per scale, the block-causal cross-scale attention, next-scale teacher forcing,
cross-attention conditioning with a null condition for CFG, the interpolation ablation.
Not faithful: (1) the paper's tokenizer (CVQ) also builds its scales with learnable down-/up-sampling
attention queries and quantises them with lookup-free quantisation (LFQ); our VAT builds its scales by
area pooling / linear upsampling of the residual and quantises them with the core's residual VQ (one shared
learned codebook). The core has no LFQ, so it is future work on the tokenizer side (a `quantizer_kind="lfq"`
in `genstudio.vq` plus query-based resampling in `MultiScaleResidualVQ`); this generator only needs token
indices and a codebook size, so it would not change. (2) The paper conditions on image features too; here
the conditions are a class id and/or a text prompt. (3) Sizes are ours (see G3PT_CONFIGS).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from genstudio.dit import CrossAttention, Mlp, sincos_1d

G3PT_CONFIGS = {
    "tiny": dict(hidden_size=32, num_heads=2, depth=2),        # tests
    "XS": dict(hidden_size=192, num_heads=4, depth=6),         # the CPU-trained shipped size (~3M; ~2 s per step of 64 on 1 core)
    "S": dict(hidden_size=384, num_heads=6, depth=12),         # ~29M parameters (class + MiniLM conditioning, 1024 codes)
    "B": dict(hidden_size=768, num_heads=12, depth=16),        # ~153M parameters
}


def g3pt_config(preset: str, **overrides) -> dict:
    if preset not in G3PT_CONFIGS:
        raise ValueError(f"unknown G3PT preset {preset!r}; choose from {', '.join(G3PT_CONFIGS)}")
    return {**G3PT_CONFIGS[preset], **overrides}


def vat_settings(vat) -> dict:
    """The G3PT config keys that must match a VATTokenizer (codebook and scales)."""
    return {"codebook_size": vat.config.codebook_size, "scales": list(vat.scales), "num_tokens": vat.config.num_tokens}


# ---------------------------------------------------------------- the block-causal mask

def scale_layout(scales: list[int], num_token_scales: int, cross_scale: bool) -> tuple[list[int], list[bool]]:
    """Per sequence element: its scale and whether it is a query. cross_scale: the tokens of scales
    0..num_token_scales-1, then the queries of scales 0..num_token_scales; else only the input blocks."""
    levels, is_query = [], []
    if cross_scale:
        for k in range(num_token_scales):
            levels += [k] * scales[k]
            is_query += [False] * scales[k]
    for k in range(num_token_scales + 1):
        levels += [k] * scales[k]
        is_query += [True] * scales[k]
    return levels, is_query


def block_causal_mask(scales: list[int], num_token_scales: int, cross_scale: bool = True) -> torch.Tensor:
    """(L, L) bool, True = row may attend to column. Tokens of scale j see tokens of scales <= j; queries of
    scale k see tokens of scales < k and the queries of scale k. Without cross_scale (VAR): the input block
    of scale k sees the blocks of scales <= k."""
    levels, is_query = scale_layout(scales, num_token_scales, cross_scale)
    level, query = torch.tensor(levels), torch.tensor(is_query)
    row_level, col_level = level[:, None], level[None, :]
    if not cross_scale:
        return col_level <= row_level
    token_sees_token = ~query[:, None] & ~query[None, :] & (col_level <= row_level)
    query_sees_token = query[:, None] & ~query[None, :] & (col_level < row_level)
    query_sees_own = query[:, None] & query[None, :] & (col_level == row_level)
    return token_sees_token | query_sees_token | query_sees_own


# ---------------------------------------------------------------- blocks

class MaskedAttention(nn.Module):
    """Self-attention with a boolean mask (timm's `qkv`/`proj` layout, like genstudio.dit.Attention)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        B, L, D = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(x.transpose(1, 2).reshape(B, L, D))


class G3PTBlock(nn.Module):
    """Pre-norm: masked self-attention (cross-scale querying), cross-attention to the condition, MLP."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedAttention(dim, num_heads)
        self.cross_attn = CrossAttention(dim, dim, num_heads)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x, mask, context, context_mask):
        x = x + self.attn(self.norm1(x), mask)
        x = x + self.cross_attn(self.norm2(x), context, context_mask)
        return x + self.mlp(self.norm3(x))


# ---------------------------------------------------------------- the model

@dataclass
class ShapeCondition:
    """What a shape is generated from: class ids (B,), and/or prompt token states (B, S, context_dim) with
    their mask (B, S). None everywhere = unconditional (the null condition)."""
    labels: torch.Tensor | None = None
    text_states: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int | None:
        for t in (self.labels, self.text_states):
            if t is not None:
                return len(t)
        return None


class G3PT(ModelMixin, ConfigMixin):
    """Token indices of scales 0..k-1 (+ a condition) -> logits over the codebook for scales 0..k."""

    @register_to_config
    def __init__(self, codebook_size: int = 1024, scales: list[int] | None = None, num_tokens: int | None = None,
                 hidden_size: int = 384, num_heads: int = 6, depth: int = 12, num_classes: int = 0,
                 context_dim: int = 0, cond_dropout: float = 0.1, cross_scale: bool = True,
                 class_names: list[str] | None = None):
        super().__init__()
        self.scales = list(scales) if scales else [1, 2, 4, 8, 16, 32, 64]
        if sorted(self.scales) != self.scales or self.scales[0] < 1:
            raise ValueError(f"scales must be increasing token counts, got {self.scales}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        d, N = hidden_size, num_tokens or self.scales[-1]
        self.token_embed = nn.Embedding(codebook_size, d)
        self.scale_embed = nn.Embedding(len(self.scales), d)
        # scale k's element i sits at the centre of its span on the full token axis [0, N)
        centres = torch.cat([(torch.arange(s) + 0.5) * N / s for s in self.scales])
        self.register_buffer("pos_embed", sincos_1d(d, centres).float(), persistent=False)
        self.register_buffer("scale_ids", torch.cat([torch.full((s,), k) for k, s in enumerate(self.scales)]),
                             persistent=False)
        # cross_scale: the learned queries of every scale; ablation: only a learned start block for scale 0
        self.queries = nn.Parameter(torch.randn(sum(self.scales) if cross_scale else self.scales[0], d) * 0.02)
        self.base_context = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.class_embed = nn.Embedding(num_classes + 1, d) if num_classes else None   # row num_classes: null
        self.text_proj = nn.Linear(context_dim, d) if context_dim else None
        self.blocks = nn.ModuleList(G3PTBlock(d, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, codebook_size)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    # ---- pieces ----

    def _offsets(self) -> list[int]:
        out = [0]
        for s in self.scales:
            out.append(out[-1] + s)
        return out

    def _scale_extras(self, k: int) -> torch.Tensor:
        """Position + scale embedding of scale k's elements, (n_k, d)."""
        a, b = self._offsets()[k], self._offsets()[k + 1]
        return (self.pos_embed[a:b] + self.scale_embed(self.scale_ids[a:b])).to(self.dtype)

    def _context(self, condition: ShapeCondition | None, batch: int, drop: torch.Tensor | None):
        """[base ; class ; text] context (B, S, d) and its mask (B, S); `drop` (B,) bool = null condition."""
        c = condition or ShapeCondition()
        device = self.base_context.device
        drop = torch.zeros(batch, dtype=torch.bool, device=device) if drop is None else drop.to(device).bool()
        parts = [self.base_context.expand(batch, -1, -1)]
        masks = [torch.ones(batch, 1, dtype=torch.bool, device=device)]
        if self.class_embed is not None:
            null = torch.full((batch,), self.config.num_classes, device=device)
            labels = null if c.labels is None else torch.where(drop, null, c.labels.to(device).long())
            if labels.min() < 0 or labels.max() > self.config.num_classes:
                raise ValueError(f"class labels must lie in [0, {self.config.num_classes}), got {labels.tolist()}")
            parts.append(self.class_embed(labels)[:, None])
            masks.append(torch.ones(batch, 1, dtype=torch.bool, device=device))
        elif c.labels is not None:
            raise ValueError("this G3PT has no class conditioning (num_classes=0), but labels were given")
        if self.text_proj is not None and c.text_states is not None:
            states = c.text_states.to(device, self.dtype)
            if states.ndim != 3 or states.shape[-1] != self.config.context_dim:
                raise ValueError(f"text states must be (B, S, {self.config.context_dim}), got {tuple(states.shape)}")
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=device) if c.text_mask is None \
                else c.text_mask.to(device).bool()
            parts.append(self.text_proj(states))
            masks.append(mask & ~drop[:, None])
        elif c.text_states is not None:
            raise ValueError("this G3PT has no text conditioning (context_dim=0), but text states were given")
        return torch.cat(parts, 1), torch.cat(masks, 1)

    def _inputs(self, indices: list[torch.Tensor], batch: int) -> torch.Tensor:
        """The transformer's input sequence for `indices` of scales 0..m-1 (see `scale_layout`)."""
        m, d = len(indices), self.config.hidden_size
        offsets = self._offsets()
        if self.config.cross_scale:
            tokens = [self.token_embed(idx) + self._scale_extras(k) for k, idx in enumerate(indices)]
            queries = [self.queries[offsets[k]:offsets[k + 1]].to(self.dtype) + self._scale_extras(k)
                       for k in range(m + 1)]
            return torch.cat(tokens + [q.expand(batch, -1, -1) for q in queries], 1)
        # ablation: block k = sum of the earlier scales' embeddings, linearly interpolated to n_k tokens
        blocks = [(self.queries.to(self.dtype) + self._scale_extras(0)).expand(batch, -1, -1)]
        embedded = [self.token_embed(idx) for idx in indices]
        for k in range(1, m + 1):
            size = self.scales[k]
            up = sum(F.interpolate(e.transpose(1, 2), size=size, mode="linear", align_corners=False)
                     for e in embedded[:k]).transpose(1, 2)
            blocks.append(up + self._scale_extras(k))
        return torch.cat(blocks, 1).reshape(batch, -1, d)

    # ---- forward ----

    def forward(self, indices: list[torch.Tensor], condition: ShapeCondition | None = None,
                drop_condition: torch.Tensor | None = None, batch_size: int | None = None) -> list[torch.Tensor]:
        """indices: (B, n_j) long tensors for scales j = 0..m-1 (m <= num_scales; all scales = teacher forcing,
        the last scale's tokens are then targets only). Returns logits (B, n_k, codebook_size) for scales
        k = 0..min(m, num_scales - 1): scale k's logits see only scales < k. `drop_condition` (B,) bool swaps
        in the null condition; in training mode, each row is also dropped with probability cond_dropout."""
        indices = list(indices)[:self.num_scales - 1]
        for k, idx in enumerate(indices):
            if idx.ndim != 2 or idx.shape[1] != self.scales[k]:
                raise ValueError(f"scale {k} holds {self.scales[k]} tokens: expected (B, {self.scales[k]}), "
                                 f"got {tuple(idx.shape)}")
        B = len(indices[0]) if indices else batch_size or (condition.batch_size if condition else None) or 1
        drop = torch.zeros(B, dtype=torch.bool, device=self.device) if drop_condition is None \
            else drop_condition.to(self.device).bool()
        if self.training and self.config.cond_dropout > 0:
            drop = drop | (torch.rand(B, device=self.device) < self.config.cond_dropout)
        context, context_mask = self._context(condition, B, drop)
        x = self._inputs([i.to(self.device).long() for i in indices], B)
        mask = block_causal_mask(self.scales, len(indices), self.config.cross_scale).to(self.device)
        for block in self.blocks:
            x = block(x, mask, context, context_mask)
        queries = x[:, -sum(self.scales[:len(indices) + 1]):]
        logits = self.head(self.norm(queries))
        return list(logits.split(self.scales[:len(indices) + 1], 1))

    def guided_logits(self, indices: list[torch.Tensor], condition: ShapeCondition | None,
                      guidance_scale: float = 1.0, batch_size: int | None = None) -> torch.Tensor:
        """Logits (B, n_k, V) of the next scale k = len(indices) with classifier-free guidance:
        uncond + g * (cond - uncond), the two in one doubled batch (g == 1: the conditional pass alone)."""
        B = len(indices[0]) if indices else batch_size or (condition.batch_size if condition else None) or 1
        if guidance_scale == 1.0:
            return self(indices, condition, batch_size=B)[-1]
        doubled = ShapeCondition(*(None if t is None else torch.cat([t, t]) for t in
                                   (condition.labels, condition.text_states, condition.text_mask))) \
            if condition is not None else None
        drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)])
        cond, uncond = self([torch.cat([i, i]) for i in indices], doubled, drop, 2 * B)[-1].float().chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    @torch.no_grad()
    def generate(self, condition: ShapeCondition | None = None, num_samples: int | None = None,
                 guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 generator: torch.Generator | None = None, progress: bool = False) -> list[torch.Tensor]:
        """Sample the scales coarse to fine (num_scales steps) -> one (B, n_k) long tensor per scale, ready
        for `VATTokenizer.decode`. temperature 0 = greedy; top_k 0 = all codes; `generator` on self.device."""
        from tqdm.auto import tqdm
        B = (condition.batch_size if condition else None) or num_samples or 1
        if num_samples is not None and num_samples != B:
            raise ValueError(f"num_samples={num_samples} but the condition holds {B} rows")
        if temperature < 0 or top_k < 0:
            raise ValueError(f"temperature and top_k must be >= 0, got {temperature}, {top_k}")
        indices: list[torch.Tensor] = []
        for _ in tqdm(range(self.num_scales), desc="scales", disable=not progress, leave=False):
            logits = self.guided_logits(indices, condition, guidance_scale, B).float()
            if top_k:
                kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if temperature == 0:
                sample = logits.argmax(-1)
            else:
                probs = F.softmax(logits / temperature, -1).reshape(-1, logits.shape[-1])
                sample = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:2])
            indices.append(sample)
        return indices


# ---------------------------------------------------------------- text prompts

# The prompt of each class in training (g3pt_train) and at inference (pipeline.py): one table, so a
# class name given to a text-conditioned model becomes the very prompt it learned.
CLASS_PROMPTS = {"sphere": "a sphere", "box": "a box", "cylinder": "a cylinder", "capsule": "a capsule",
                 "cone": "a cone", "torus": "a torus", "union": "a union of two or three simple shapes",
                 "urdf": "an irregular object made of convex pieces"}


def encode_prompts(prompts: list[str], encoder: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> frozen MiniLM (or `encoder`) token states (B, S, D) and mask (B, S), via the core."""
    from genstudio.text import get_text_encoder
    enc = get_text_encoder(encoder).encode(list(prompts), return_tokens=True)
    return enc.hidden_states.float().cpu(), enc.mask.cpu()
