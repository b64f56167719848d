"""MeshAnything (Chen et al. 2024, "MeshAnything: Artist-Created Mesh Generation with Autoregressive
Transformers") and MeshAnythingV2 ("... with Adjacent Mesh Tokenization").

A shape condition (points with normals on the input surface) is read by a Perceiver, whose latents
become the prefix of an OPT decoder that writes the mesh as tokens:

    points+normals (B, N, 6) -> point_encoder: Fourier features -> cross-attention into learned
    latents -> self-attention [-> KL bottleneck + shape transformer, official only]
    -> cond_head_proj / cond_proj -> [prefix | BOS mesh tokens EOS] -> transformer (PrefixLM, OPT)

Tokens are AMT (V2, default) or, with `tokenization="v1"`, per-face residual-VQ codes from a small
face VQ-VAE (`FaceVQ`, V1's tokenizer). See tokenize.py for the vocabulary and canonical order.

Module names follow the reference (point encoder = Michelangelo's `shape_model`; `cond_head_proj`,
`cond_proj`, `transformer`), and the decoder's token embedding carries the official role and
segment embeddings, so `from_official("Yiwen-ntu/meshanythingv2")` is a documented renaming.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel

from genstudio.lm import PrefixLM, PrefixLMOutput, build_causal_lm
from genstudio.vq import ResidualVQ

from .tokenize import (AMT_NUM_ROLES, BOS, COORD_OFFSET, EOS, NUM_BINS, PAD, AMTGrammar, FaceGrammar,
                       QuantizedMesh, amt_decode, amt_vocab_size, dequantize, mesh_from_face_coordinates,
                       token_roles)

TOKENIZATIONS = ("amt", "v1")
OFFICIAL_HUB_ID = "Yiwen-ntu/meshanythingv2"

# ---- Config ----


class MeshAnythingConfig(PretrainedConfig):
    """Point encoder, OPT decoder (genstudio.lm size preset + overrides), tokenisation and V1 face VQ.

    `point_kl_dim` / `point_decoder_layers` > 0 add the official Michelangelo path (KL bottleneck
    + shape transformer whose output is concatenated to the latents); ours skip it.
    `num_points`: points sampled from the input surface. `max_faces`: default generation limit.
    `default_temperature`: the decoding the pipeline uses when the caller names none (0 = greedy, the
    reference's; a small checkpoint whose greedy decodes loop can ship 1.0, its benchmarked better mode).
    `default_candidates`: sampled draws per input, of which the pipeline keeps the one nearest the input
    points (1 = the reference's single draw).
    `default_fit_steps`: steps of the pipeline's surface fit of the kept mesh's vertices to the input
    (`fit.py`, our addition; 0 = the decoder's vertices as they are, the reference's output).
    """

    model_type = "genstudio-meshanything"

    def __init__(self, tokenization: str = "amt", num_bins: int = NUM_BINS, num_points: int = 2048,
                 point_width: int = 192, point_heads: int = 4, num_latents: int = 64, point_encoder_layers: int = 2,
                 point_kl_dim: int = 0, point_decoder_layers: int = 0, num_freqs: int = 8, include_pi: bool = False,
                 qkv_bias: bool = False, lm_size: str = "tiny", lm_overrides: dict | None = None,
                 max_faces: int = 800, vq_num_quantizers: int = 3, vq_codebook_size: int = 256, vq_dim: int = 64,
                 vq_width: int = 128, vq_layers: int = 2, vq_heads: int = 4, default_temperature: float = 0.0,
                 default_candidates: int = 1, default_fit_steps: int = 0, **kwargs):
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {tokenization!r}")
        if point_width % point_heads:
            raise ValueError(f"point_width {point_width} is not divisible by {point_heads} heads")
        self.tokenization, self.num_bins, self.num_points = tokenization, num_bins, num_points
        self.point_width, self.point_heads, self.num_latents = point_width, point_heads, num_latents
        self.point_encoder_layers, self.point_kl_dim = point_encoder_layers, point_kl_dim
        self.point_decoder_layers, self.num_freqs, self.include_pi = point_decoder_layers, num_freqs, include_pi
        self.qkv_bias, self.lm_size, self.lm_overrides = qkv_bias, lm_size, dict(lm_overrides or {})
        self.max_faces, self.default_temperature = max_faces, float(default_temperature)
        self.default_candidates, self.default_fit_steps = int(default_candidates), int(default_fit_steps)
        self.vq_num_quantizers, self.vq_codebook_size, self.vq_dim = vq_num_quantizers, vq_codebook_size, vq_dim
        self.vq_width, self.vq_layers, self.vq_heads = vq_width, vq_layers, vq_heads
        for name, value in (("bos_token_id", BOS), ("eos_token_id", EOS), ("pad_token_id", PAD)):
            kwargs.setdefault(name, value)
        super().__init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        if self.tokenization == "amt":
            return amt_vocab_size(self.num_bins)
        return COORD_OFFSET + self.vq_num_quantizers * self.vq_codebook_size

    @property
    def tokens_per_face(self) -> int:
        return 9 if self.tokenization == "amt" else 3 * self.vq_num_quantizers

    @property
    def num_roles(self) -> int:
        return AMT_NUM_ROLES if self.tokenization == "amt" else COORD_OFFSET + self.tokens_per_face

    @property
    def prefix_length(self) -> int:
        return self.num_latents + 1


MESHANYTHING_CONFIGS: dict[str, dict] = {
    # tests: a few seconds to memorise a cube
    "tiny": dict(num_points=256, point_width=32, point_heads=2, num_latents=8, point_encoder_layers=1,
                 lm_overrides=dict(hidden=32, layers=1, heads=2, positions=640, dropout=0.0),
                 vq_codebook_size=32, vq_dim=16, vq_width=32, vq_layers=1, vq_heads=2, max_faces=64),
    # ~7M parameters (fp16 ~14 MB), <= 800 faces: a GPU-session checkpoint
    "S": dict(num_points=2048, point_width=192, point_heads=4, num_latents=64, point_encoder_layers=2,
              lm_overrides=dict(hidden=256, layers=6, heads=4, positions=4096, dropout=0.0), max_faces=800),
    # the shipped CPU checkpoint: ~2.7M parameters, <= 400 faces (about 1.4 s per batch of 8 on 2 CPU cores)
    "XS": dict(num_points=1024, point_width=128, point_heads=4, num_latents=32, point_encoder_layers=1,
               lm_overrides=dict(hidden=192, layers=4, heads=4, positions=2048, dropout=0.0), max_faces=400),
    # Yiwen-ntu/meshanythingv2: Michelangelo's encoder (shapevae-256) + OPT-350M, 1600 faces; the reference
    # forces word_embed_proj_dim = hidden (no project_in/out) and OPT-350M is post-LN without a final norm.
    "350m": dict(num_points=8192, point_width=768, point_heads=12, num_latents=256, point_encoder_layers=8,
                 point_kl_dim=64, point_decoder_layers=16, lm_size="350m",
                 lm_overrides=dict(positions=int(1600 * 9 * 0.7 + 3 + 257), do_layer_norm_before=False),
                 max_faces=1600),
}


def meshanything_config(preset: str = "S", **overrides) -> MeshAnythingConfig:
    if preset not in MESHANYTHING_CONFIGS:
        raise ValueError(f"unknown MeshAnything preset {preset!r}: expected one of {', '.join(MESHANYTHING_CONFIGS)}")
    base = dict(MESHANYTHING_CONFIGS[preset])
    if "lm_overrides" in overrides:
        overrides["lm_overrides"] = {**base.get("lm_overrides", {}), **overrides["lm_overrides"]}
    return MeshAnythingConfig(**{**base, **overrides})


# ---- Point encoder (Michelangelo's Perceiver, the reference's names) ----

class FourierEmbedder(nn.Module):
    """[x, sin(2^k x), cos(2^k x)] per input dimension (frequencies computed on the fly: no buffer)."""

    def __init__(self, num_freqs: int = 8, include_pi: bool = False, input_dim: int = 3):
        super().__init__()
        self.num_freqs, self.include_pi = num_freqs, include_pi
        self.out_dim = input_dim * (2 * num_freqs + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        freqs = 2.0 ** torch.arange(self.num_freqs, device=x.device, dtype=x.dtype)
        if self.include_pi:
            freqs = freqs * math.pi
        embed = (x[..., None] * freqs).flatten(-2)   # per dimension, all frequencies (reference order)
        return torch.cat([x, embed.sin(), embed.cos()], dim=-1)


class MLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc, self.gelu, self.c_proj = nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class MultiheadAttention(nn.Module):
    """Self-attention; `c_qkv` packs [q | k | v] per head, as the reference does."""

    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_qkv, self.c_proj = nn.Linear(width, 3 * width, bias=qkv_bias), nn.Linear(width, width)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.c_qkv(x).view(b, n, self.heads, -1).transpose(1, 2).chunk(3, dim=-1)
        return self.c_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


class MultiheadCrossAttention(nn.Module):
    """Queries attend to data; `c_kv` packs [k | v] per head."""

    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.c_q, self.c_kv = nn.Linear(width, width, bias=qkv_bias), nn.Linear(width, 2 * width, bias=qkv_bias)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x, data):
        b, n, _ = x.shape
        q = self.c_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.c_kv(data).view(b, data.shape[1], self.heads, -1).transpose(1, 2).chunk(2, dim=-1)
        return self.c_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.attn, self.ln_1 = MultiheadAttention(width, heads, qkv_bias), nn.LayerNorm(width)
        self.mlp, self.ln_2 = MLP(width), nn.LayerNorm(width)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ResidualCrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.attn = MultiheadCrossAttention(width, heads, qkv_bias)
        self.ln_1, self.ln_2, self.ln_3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x, data):
        x = x + self.attn(self.ln_1(x), self.ln_2(data))
        return x + self.mlp(self.ln_3(x))


class Transformer(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, qkv_bias: bool):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, qkv_bias) for _ in range(layers))

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class CrossAttentionEncoder(nn.Module):
    """Points -> (1 + num_latents) learned queries that cross-attend to them, then self-attention.
    Query 0 becomes the global "head" token, the rest the shape latents."""

    def __init__(self, config: MeshAnythingConfig):
        super().__init__()
        w = config.point_width
        self.fourier_embedder = FourierEmbedder(config.num_freqs, config.include_pi)
        self.query = nn.Parameter(torch.zeros(config.num_latents + 1, w))
        self.input_proj = nn.Linear(self.fourier_embedder.out_dim + 3, w)
        self.cross_attn = ResidualCrossAttentionBlock(w, config.point_heads, config.qkv_bias)
        self.self_attn = Transformer(w, config.point_heads, config.point_encoder_layers, config.qkv_bias)
        self.ln_post = nn.LayerNorm(w)

    def forward(self, xyz: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        data = self.input_proj(torch.cat([self.fourier_embedder(xyz), normals], dim=-1))
        latents = self.cross_attn(self.query.expand(xyz.shape[0], -1, -1).to(data.dtype), data)
        return self.ln_post(self.self_attn(latents))


class PointEncoder(nn.Module):
    """(B, N, 6) points + normals in [-1, 1] -> head (B, W), latents (B, L, W), shape latents or None."""

    def __init__(self, config: MeshAnythingConfig):
        super().__init__()
        self.encoder = CrossAttentionEncoder(config)
        self.kl_dim = config.point_kl_dim
        if config.point_kl_dim:
            self.pre_kl = nn.Linear(config.point_width, 2 * config.point_kl_dim)
            self.post_kl = nn.Linear(config.point_kl_dim, config.point_width)
        if config.point_decoder_layers:
            self.transformer = Transformer(config.point_width, config.point_heads, config.point_decoder_layers,
                                           config.qkv_bias)

    def forward(self, points: torch.Tensor):
        x = self.encoder(points[..., :3], points[..., 3:6])
        head, latents = x[:, 0], x[:, 1:]
        shape = None
        if hasattr(self, "transformer"):  # the reference's to_shape_latents: posterior mode -> decoder
            z = self.post_kl(self.pre_kl(latents)[..., : self.kl_dim]) if self.kl_dim else latents
            shape = self.transformer(z)
        return head, latents, shape


# ---- V1 face tokenizer ----

class FaceVQ(nn.Module):
    """MeshAnything V1's face VQ-VAE, small: faces (their 9 coordinates and normal) -> a transformer
    over the face sequence -> one vector per vertex -> ResidualVQ (Q codes each) -> a transformer
    -> 9 x num_bins coordinate logits. V1's decoder is also conditioned on the point cloud
    ("noise-resistant"); this one is not."""

    def __init__(self, config: MeshAnythingConfig):
        super().__init__()
        w, dim = config.vq_width, config.vq_dim
        self.num_bins, self.num_quantizers, self.codebook_size = config.num_bins, config.vq_num_quantizers, config.vq_codebook_size
        self.fourier = FourierEmbedder(6, include_pi=True, input_dim=9)

        def stack():
            layer = nn.TransformerEncoderLayer(w, config.vq_heads, 4 * w, dropout=0.0, batch_first=True,
                                               norm_first=True)
            return nn.TransformerEncoder(layer, config.vq_layers, enable_nested_tensor=False)
        self.encoder_in, self.encoder, self.to_vertices = nn.Linear(self.fourier.out_dim + 3, w), stack(), nn.Linear(w, 3 * dim)
        self.quantizer = ResidualVQ(config.vq_num_quantizers, config.vq_codebook_size, dim)
        self.decoder_in, self.decoder = nn.Linear(3 * dim, w), stack()
        self.to_logits = nn.Linear(w, 9 * config.num_bins)

    def _features(self, coords: torch.Tensor) -> torch.Tensor:
        x = (coords.float() + 0.5) / self.num_bins - 0.5
        v = x.view(*x.shape[:-1], 3, 3)
        normal = F.normalize(torch.cross(v[..., 1, :] - v[..., 0, :], v[..., 2, :] - v[..., 0, :], dim=-1), dim=-1)
        return torch.cat([self.fourier(x), normal], dim=-1)

    def encode(self, coords: torch.Tensor, mask: torch.Tensor):
        """coords (B, F, 9) bins, mask (B, F) -> QuantizerOutput with quantized (B, F, 3, dim), indices (B, F, 3, Q)."""
        h = self.encoder(self.encoder_in(self._features(coords)), src_key_padding_mask=~mask)
        return self.quantizer(self.to_vertices(h).view(*coords.shape[:2], 3, -1))

    def decode(self, quantized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, F, 3, dim) -> coordinate logits (B, F, 9, num_bins)."""
        h = self.decoder(self.decoder_in(quantized.flatten(-2)), src_key_padding_mask=~mask)
        return self.to_logits(h).view(*quantized.shape[:2], 9, self.num_bins)

    def forward(self, coords: torch.Tensor, mask: torch.Tensor) -> dict:
        vq = self.encode(coords, mask)
        logits = self.decode(vq.quantized, mask)
        recon = F.cross_entropy(logits[mask].reshape(-1, self.num_bins), coords[mask].reshape(-1))
        accuracy = (logits.argmax(-1) == coords)[mask].float().mean()
        return dict(loss=recon + vq.loss, recon_loss=recon, vq_loss=vq.loss, indices=vq.indices,
                    accuracy=accuracy, perplexity=vq.perplexity)

    def indices_to_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., F, 3, Q) codes -> (..., F * 3 * Q) ids: stage q uses ids 3 + q*K .. 3 + (q+1)*K - 1."""
        stage = torch.arange(self.num_quantizers, device=indices.device) * self.codebook_size
        return (indices + stage + COORD_OFFSET).flatten(-3)

    def tokens_to_indices(self, tokens: torch.Tensor) -> torch.Tensor:
        """(F * 3 * Q,) ids -> (F, 3, Q) codes (ids outside a stage's range are clamped into it)."""
        per_face = 3 * self.num_quantizers
        faces = tokens[: len(tokens) // per_face * per_face].view(-1, 3, self.num_quantizers)
        stage = torch.arange(self.num_quantizers, device=tokens.device) * self.codebook_size
        return (faces - COORD_OFFSET - stage).clamp(0, self.codebook_size - 1)


# ---- Decoder token embedding ----

class MeshTokenEmbedding(nn.Embedding):
    """Token + role + segment embedding: the reference's ShapeOPT decoder adds a "loop" embedding of
    each token's grammar slot (`roles`, see tokenize.token_roles) and a segment embedding
    (`segments`: 0 for the point prefix, 1 for tokens). The weight is the LM's own (tied to its head).

    During KV-cached generation tokens arrive one at a time, so the slot counter of each row is
    kept between calls: `reset()` starts over (done before every forward/generate). In training
    mode, and for calls with several tokens, every row starts fresh."""

    def __init__(self, weight: nn.Parameter, config: MeshAnythingConfig):
        super().__init__(weight.shape[0], weight.shape[1])
        self.weight = weight
        self.roles, self.segments = nn.Embedding(config.num_roles, weight.shape[1]), nn.Embedding(2, weight.shape[1])
        self.role_kwargs = dict(tokenization=config.tokenization, num_bins=config.num_bins,
                                tokens_per_face=config.tokens_per_face)
        self._state: torch.Tensor | None = None

    def reset(self) -> None:
        self._state = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        start = None
        if self._state is not None and not self.training and ids.shape[1] == 1:
            start = self._state
            if start.shape[0] != ids.shape[0]:  # rows expanded for several samples per input
                start = start.repeat_interleave(ids.shape[0] // start.shape[0])
        roles, self._state = token_roles(ids, start, **self.role_kwargs)
        return F.embedding(ids, self.weight) + self.roles(roles) + self.segments.weight[1]


# ---- Model ----

class MeshAnythingModel(PreTrainedModel):
    config_class = MeshAnythingConfig
    main_input_name = "points"
    _no_split_modules = ["OPTDecoderLayer", "ResidualAttentionBlock"]

    def __init__(self, config: MeshAnythingConfig):
        super().__init__(config)
        self.point_encoder = PointEncoder(config)
        lm = build_causal_lm("opt", config.vocab_size, config.lm_size, **config.lm_overrides)
        lm.generation_config.update(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
        decoder = lm.model.decoder
        decoder.embed_tokens = MeshTokenEmbedding(decoder.embed_tokens.weight, config)
        self.transformer = PrefixLM(lm)
        d, w = self.transformer.hidden_size, config.point_width
        self.cond_head_proj = nn.Linear(w, d)
        self.cond_proj = nn.Linear(2 * w if config.point_decoder_layers else w, d)
        self.face_vq = FaceVQ(config) if config.tokenization == "v1" else None
        self.post_init()
        # post_init only looks at direct children; the LM's tied head sits one level down in PrefixLM.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()
        elif isinstance(module, CrossAttentionEncoder):
            nn.init.normal_(module.query, std=0.02)

    @property
    def token_embedding(self) -> MeshTokenEmbedding:
        return self.transformer.lm.get_input_embeddings()

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 6) normalised points + normals -> prefix embeddings (B, 1 + num_latents, d_lm)."""
        if points.dim() == 2:
            points = points[None]
        if points.dim() != 3 or points.shape[-1] != 6:
            raise ValueError(f"points must be (B, N, 6) (xyz + normal), got {tuple(points.shape)}")
        dtype = self.cond_proj.weight.dtype
        head, latents, shape = self.point_encoder(points.to(self.device, dtype))
        rest = self.cond_proj(latents if shape is None else torch.cat([latents, shape], dim=-1))
        prefix = torch.cat([self.cond_head_proj(head)[:, None], rest], dim=1)
        return prefix + self.token_embedding.segments.weight[0]

    def forward(self, points: torch.Tensor, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None) -> PrefixLMOutput:
        """Teacher-forced pass over `[prefix | BOS tokens EOS]`; the loss counts tokens (BOS included, pads not)."""
        self.token_embedding.reset()
        return self.transformer(self.encode_points(points), input_ids, attention_mask=attention_mask, labels=labels)

    # ---- Generation ----

    def token_budget(self) -> int:
        """Most tokens after BOS that fit in the decoder's positions."""
        return int(self.transformer.lm.config.max_position_embeddings) - self.config.prefix_length - 1

    def face_budget(self) -> int:
        per_face = self.config.tokens_per_face
        return max(1, self.token_budget() // per_face) if self.config.tokenization == "v1" else \
            max(1, (self.token_budget() - 9) // 3 + 1)

    @torch.no_grad()
    def generate_tokens(self, points: torch.Tensor, max_faces: int | None = None, do_sample: bool = False,
                        temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                        progress: bool = False, constrained: bool = True) -> list[torch.Tensor]:
        """Mesh tokens (after BOS, up to and without EOS) for each point cloud, grammar-constrained.
        `constrained` (AMT): also forbid faces that post-processing would drop (zero-area, repeated;
        see `AMTGrammar`), so that every decode, greedy included, ends with at least one face; False
        keeps only the syntax and ordering rules (the earlier behaviour, for comparison)."""
        cfg = self.config
        max_faces = max(1, min(max_faces or cfg.max_faces, self.face_budget()))
        if cfg.tokenization == "amt":  # a strip of single faces costs 10 tokens each; the grammar stops at max_faces
            max_new = min(self.token_budget(), 10 * max_faces + 1)
            grammar = AMTGrammar(cfg.num_bins, max_faces=max_faces, max_new_tokens=max_new, geometry=constrained)
        else:
            max_new = min(self.token_budget(), cfg.tokens_per_face * max_faces + 1)
            grammar = FaceGrammar(cfg.vq_num_quantizers, cfg.vq_codebook_size, max_faces=max_faces)
        prefix = self.encode_points(points)
        bos = torch.full((prefix.shape[0], 1), BOS, dtype=torch.long, device=prefix.device)
        self.token_embedding.reset()
        try:
            tokens = self.transformer.generate(prefix, bos, max_new_tokens=max_new, do_sample=do_sample,
                                               temperature=temperature, top_k=top_k, top_p=top_p,
                                               stop_token_ids=[EOS], seed=seed, logits_processor=grammar,
                                               pad_token_id=PAD, progress=progress)
        finally:
            self.token_embedding.reset()
        rows = []
        for row in tokens.cpu():
            end = (row == EOS).nonzero()
            rows.append(row[: int(end[0])] if len(end) else row[row != PAD])
        return rows

    def tokens_to_mesh(self, tokens: torch.Tensor | Sequence[int]) -> QuantizedMesh:
        """Generated tokens -> canonical quantised mesh (AMT decoding, or the face VQ's decoder for V1)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if self.config.tokenization == "amt":
            return amt_decode(tokens.numpy(), self.config.num_bins)
        indices = self.face_vq.tokens_to_indices(tokens.to(self.device))
        if len(indices) == 0:
            return mesh_from_face_coordinates(np.zeros((0, 9)))
        mask = torch.ones(1, len(indices), dtype=torch.bool, device=self.device)
        quantized = self.face_vq.quantizer.decode_indices(indices[None]).to(self.face_vq.decoder_in.weight.dtype)
        coords = self.face_vq.decode(quantized, mask).argmax(-1)[0]
        return mesh_from_face_coordinates(coords.cpu().numpy())

    def mesh_vertices(self, mesh: QuantizedMesh) -> np.ndarray:
        """Bins -> coordinates in [-0.5, 0.5]."""
        return dequantize(mesh.vertices, self.config.num_bins)

    # ---- Official weights ----

    @classmethod
    def from_official(cls, path_or_hub_id: str = OFFICIAL_HUB_ID, dtype: torch.dtype | None = None) -> "MeshAnythingModel":
        """Load MeshAnythingV2's released weights (a hub id or a local folder/.safetensors file)."""
        from pathlib import Path
        from safetensors.torch import load_file
        path = Path(path_or_hub_id)
        if path.suffix == ".safetensors" and path.is_file():
            state = load_file(str(path))
        else:
            from genstudio.hub import load_safetensors_folder, resolve
            state = load_safetensors_folder(resolve(path_or_hub_id))
        model = cls(official_config(state))
        missing, unexpected = model.load_state_dict(convert_official_state_dict(state), strict=False)
        missing = [k for k in missing if k != "transformer.lm.lm_head.weight"]  # tied to the embedding
        if missing or unexpected:
            raise ValueError(f"{path_or_hub_id}: official weights do not match MeshAnythingModel; "
                             f"missing {sorted(missing)[:8]} ({len(missing)}), "
                             f"unexpected {sorted(unexpected)[:8]} ({len(unexpected)})")
        model.tie_weights()
        return (model.to(dtype) if dtype is not None else model).eval()


# ---- Official state dict ----
#
# The reference (MeshAnything/models/meshanything_v2.py, miche/, shape_opt.py) names:
#   point_encoder.model.shape_model.<encoder|pre_kl|post_kl|transformer>.*  -> point_encoder.<same>
#       (Michelangelo's AlignedShapeLatentPerceiver; its geo_decoder (occupancy head) and the
#        CLIP-alignment `point_encoder.model.shape_projection` are not used for generation: dropped)
#   cond_head_proj.*, cond_proj.*                                            -> same
#   transformer.model.decoder.token_embed_positions.weight (10, d)          -> ...embed_tokens.roles.weight
#   transformer.model.decoder.cond_embed.weight (2, d)                      -> ...embed_tokens.segments.weight
#   transformer.model.decoder.<embed_tokens|embed_positions|layers|final_layer_norm>.*
#                                                                           -> transformer.lm.model.decoder.<same>
#   transformer.lm_head.weight                                              -> transformer.lm.lm_head.weight (tied)

_DROPPED = ("point_encoder.model.shape_model.geo_decoder.", "point_encoder.model.shape_projection",
            "point_encoder.model.clip_model.", "point_encoder.loss.")
_RENAMES = (
    ("point_encoder.model.shape_model.", "point_encoder."),
    ("transformer.model.decoder.token_embed_positions.", "transformer.lm.model.decoder.embed_tokens.roles."),
    ("transformer.model.decoder.cond_embed.", "transformer.lm.model.decoder.embed_tokens.segments."),
    ("transformer.model.decoder.", "transformer.lm.model.decoder."),
    ("transformer.lm_head.", "transformer.lm.lm_head."),
    ("cond_head_proj.", "cond_head_proj."),
    ("cond_proj.", "cond_proj."),
)


def convert_official_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official MeshAnythingV2 state dict to MeshAnythingModel's keys (see the table above).
    Keys that fit no rule raise ValueError, listing them."""
    out, unknown = {}, []
    for key, value in sd.items():
        if key.startswith(_DROPPED) or key.endswith("fourier_embedder.frequencies"):
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the official state dict have no MeshAnythingModel counterpart: "
                         f"{unknown[:10]}")
    head, embed = "transformer.lm.lm_head.weight", "transformer.lm.model.decoder.embed_tokens.weight"
    if embed not in out and head in out:
        out[embed] = out[head]
    out.pop(head, None)  # tied: the embedding is the head
    return out


def official_config(sd: dict[str, torch.Tensor]) -> MeshAnythingConfig:
    """Sizes read off the tensors (the official config.json does not hold them)."""
    pe, dec = "point_encoder.model.shape_model.", "transformer.model.decoder."
    try:
        query, embed = sd[pe + "encoder.query"], sd.get(dec + "embed_tokens.weight", sd.get("transformer.lm_head.weight"))
        fc1, positions = sd[dec + "layers.0.fc1.weight"], sd[dec + "embed_positions.weight"]
    except KeyError as e:
        raise ValueError(f"not an official MeshAnythingV2 state dict: {e.args[0]} is missing") from None
    if embed is None:
        raise ValueError("not an official MeshAnythingV2 state dict: no token embedding")
    count = lambda prefix: len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})  # noqa: E731
    width, hidden = query.shape[1], embed.shape[1]
    pre_kl = sd.get(pe + "pre_kl.weight")
    return meshanything_config(
        "350m", num_latents=query.shape[0] - 1, point_width=width, point_heads=max(1, width // 64),
        point_encoder_layers=count(pe + "encoder.self_attn.resblocks."),
        point_kl_dim=pre_kl.shape[0] // 2 if pre_kl is not None else 0,
        point_decoder_layers=count(pe + "transformer.resblocks."),
        qkv_bias=pe + "encoder.cross_attn.attn.c_q.bias" in sd,
        num_bins=embed.shape[0] - COORD_OFFSET - 1,
        lm_overrides=dict(hidden=hidden, layers=count(dec + "layers."), heads=max(1, hidden // 64), ffn=fc1.shape[0],
                          positions=positions.shape[0] - 2,
                          do_layer_norm_before=dec + "final_layer_norm.weight" in sd))

