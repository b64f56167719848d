"""Decoupled attention: MV-Adapter's multi-view and reference branches on a frozen diffusers UNet.

For every self-attention (`attn1`) of a `UNet2DConditionModel` (reference
`models/attention_processor.py`, `DecoupledMVRowSelfAttnProcessor2_0`):

    out = base_attn(x) + mv_scale * MV(x) + ref_scale * REF(x, reference features)

- base: the UNet's own processor, untouched (so mv_scale = ref_scale = 0 is exactly the base).
- MV: attention among the V views of one object. The reference attends ROW-WISE: a token in row
  i of view n attends to row i of every view (its 6 cameras are horizontal orthographic, so
  corresponding points share a row). `mv_layout` also offers "position" (same pixel across
  views: cheapest) and "full" (all tokens of all views: for arbitrary elevations, costliest).
- REF: attention from each view's tokens to the reference image's `attn1` input tokens, taken
  by running the same frozen UNet on the reference image at t = 0 (`encode_reference`).
- Both branches copy the base to_q/to_k/to_v/to_out weights (q/k/v without bias like SD's) and
  start with to_out zeroed, so the adapter starts as the identity on the base UNet.

BATCH LAYOUT: the UNet batch is (B * V, ...) with object b's views at rows b*V .. b*V + V - 1
(the reference's "(b nv)"); classifier-free guidance stacks [uncond objects; cond objects].
Reference features have batch B (one per object, shared by its views) or B * V.

The adapter's parameters live in `MVAdapter` (a ModelMixin), not in the UNet: the UNet's state
dict and `save_pretrained` stay those of the base, and the adapter saves on its own. Processors
are plain objects holding the base processor and their branch modules.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config

from .condition import build_condition_encoder, camera_residuals

MV_LAYOUTS = ("row", "position", "full")
PROJECTIONS = ("to_q", "to_k", "to_v")


# --------------------------------------------------------------------------- branches

class DecoupledBranches(nn.Module):
    """The new projections of one self-attention; names as in the reference (to_q_mv, to_out_mv.0 ...)."""

    def __init__(self, query_dim: int, inner_dim: int, qkv_bias: bool = False, use_mv: bool = True,
                 use_ref: bool = False):
        super().__init__()
        self.kinds = [kind for kind, used in (("mv", use_mv), ("ref", use_ref)) if used]
        for kind in self.kinds:
            for proj in PROJECTIONS:
                self.add_module(f"{proj}_{kind}", nn.Linear(query_dim, inner_dim, bias=qkv_bias))
            self.add_module(f"to_out_{kind}", nn.ModuleList([nn.Linear(inner_dim, query_dim), nn.Dropout(0.0)]))

    def project(self, kind: str, x: torch.Tensor, source: torch.Tensor | None = None):
        source = x if source is None else source
        return (getattr(self, f"to_q_{kind}")(x), getattr(self, f"to_k_{kind}")(source),
                getattr(self, f"to_v_{kind}")(source))

    def output(self, kind: str, h: torch.Tensor) -> torch.Tensor:
        linear, dropout = getattr(self, f"to_out_{kind}")
        return dropout(linear(h))


def spatial_shape(tokens: int, aspect: float) -> tuple[int, int]:
    """Feature-map (h, w) of `tokens` tokens for an input of height/width ratio `aspect`."""
    h = max(1, round(math.sqrt(tokens * aspect)))
    if tokens % h:
        raise ValueError(f"multi-view attention: {tokens} tokens do not form a map of aspect {aspect:.3g} "
                         "(set adapter.aspect = height / width of the UNet input)")
    return h, tokens // h


def multiview_attention(q, k, v, heads: int, num_views: int, layout: str, hw: tuple[int, int] | None,
                        scale: float | None = None) -> torch.Tensor:
    """(B*V, L, heads*d) q/k/v -> (B*V, L, heads*d): attention among the views of each object."""
    n, tokens, inner = q.shape
    if n % num_views:
        raise ValueError(f"multi-view attention: batch {n} is not a multiple of num_views {num_views}")
    b, d = n // num_views, inner // heads
    h, w = hw if hw is not None else (1, tokens)

    def gather(t):
        t = t.reshape(b, num_views, h, w, heads, d)
        if layout == "row":       # (B*h, heads, V*w, d): one row of every view
            return t.permute(0, 2, 4, 1, 3, 5).reshape(b * h, heads, num_views * w, d)
        if layout == "position":  # (B*h*w, heads, V, d): one pixel of every view
            return t.permute(0, 2, 3, 4, 1, 5).reshape(b * h * w, heads, num_views, d)
        return t.permute(0, 4, 1, 2, 3, 5).reshape(b, heads, num_views * tokens, d)

    out = F.scaled_dot_product_attention(gather(q), gather(k), gather(v), scale=scale)
    if layout == "row":
        out = out.reshape(b, h, heads, num_views, w, d).permute(0, 3, 1, 4, 2, 5)
    elif layout == "position":
        out = out.reshape(b, h, w, heads, num_views, d).permute(0, 4, 1, 2, 3, 5)
    else:
        out = out.reshape(b, heads, num_views, h, w, d).permute(0, 2, 3, 4, 1, 5)
    return out.reshape(n, tokens, inner)


def reference_attention(q, k, v, heads: int, scale: float | None = None) -> torch.Tensor:
    """q (N, L, inner) against reference k/v (R, Lr, inner), N a multiple of R: the N/R views of
    an object share its reference (folded into the query length, so nothing is copied)."""
    n, tokens, inner = q.shape
    r, d = k.shape[0], inner // heads
    if n % r:
        raise ValueError(f"reference attention: batch {n} is not a multiple of the reference batch {r}")

    def heads_first(t, batch):
        return t.reshape(batch, -1, heads, d).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads_first(q, r), heads_first(k, r), heads_first(v, r), scale=scale)
    return out.transpose(1, 2).reshape(n, tokens, inner)


# --------------------------------------------------------------------------- processor

class MVAttnProcessor:
    """Wraps a UNet attention's own processor; adds the branches where the attention has them.
    Cross-attentions get one without branches, so the MV kwargs pass through quietly."""

    def __init__(self, name: str, base, adapter: "MVAdapter", branches: DecoupledBranches | None):
        self.name, self.base, self.adapter, self.branches = name, base, adapter, branches

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 num_views: int | None = None, mv_scale: float | None = None, ref_scale: float | None = None,
                 ref_hidden_states: dict | None = None, cache_hidden_states: dict | None = None,
                 use_mv: bool = True, use_ref: bool = True, **kwargs):
        out = self.base(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                        attention_mask=attention_mask, temb=temb, **kwargs)
        if self.branches is None:
            return out
        if cache_hidden_states is not None:
            cache_hidden_states[self.name] = hidden_states
        adapter = self.adapter
        if not adapter.enabled:
            return out
        if hidden_states.ndim != 3 or attn.spatial_norm is not None or attn.group_norm is not None:
            raise ValueError(f"{self.name}: MV-Adapter supports token self-attention (batch, tokens, channels) only")
        mv_scale = adapter.mv_scale if mv_scale is None else mv_scale
        ref_scale = adapter.ref_scale if ref_scale is None else ref_scale
        extra = 0.0
        if use_mv and "mv" in self.branches.kinds and mv_scale != 0:
            views = adapter.num_views if num_views is None else num_views
            layout = adapter.config.mv_layout
            hw = None if layout == "full" else spatial_shape(hidden_states.shape[1], adapter.aspect)
            q, k, v = self.branches.project("mv", hidden_states)
            h = multiview_attention(q, k, v, attn.heads, views, layout, hw, attn.scale)
            extra = extra + mv_scale * self.branches.output("mv", h.to(hidden_states.dtype))
        if use_ref and "ref" in self.branches.kinds and ref_hidden_states is not None and ref_scale != 0:
            if self.name not in ref_hidden_states:
                raise KeyError(f"reference features have no entry for {self.name} (from another UNet?)")
            q, k, v = self.branches.project("ref", hidden_states, ref_hidden_states[self.name])
            h = reference_attention(q, k, v, attn.heads, attn.scale)
            extra = extra + ref_scale * self.branches.output("ref", h.to(hidden_states.dtype))
        return out + extra / attn.rescale_output_factor


# --------------------------------------------------------------------------- the adapter

def self_attention_names(unet) -> list[str]:
    """Module paths of the UNet's self-attentions, the reference's choice ("...attn1")."""
    return [name[: -len(".processor")] for name in unet.attn_processors
            if name.endswith("attn1.processor")]


def _tree_put(root: nn.ModuleDict, dotted: str, module: nn.Module) -> None:
    node = root
    for part in dotted.split(".")[:-1]:
        if part not in node:
            node[part] = nn.ModuleDict()
        node = node[part]
    node[dotted.split(".")[-1]] = module


def _tree_get(root: nn.Module, dotted: str) -> nn.Module:
    return root.get_submodule(dotted)


class MVAdapter(ModelMixin, ConfigMixin):
    """All trainable MV-Adapter modules: per self-attention branches under `attn.<unet path>`
    (e.g. attn.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_mv.weight) and the
    camera condition encoder `cond_encoder` (a diffusers T2IAdapter)."""

    @register_to_config
    def __init__(self, attention_dims: dict, num_views: int = 6, use_mv: bool = True, use_ref: bool = False,
                 qkv_bias: bool = False, mv_layout: str = "row", cond_in_channels: int = 6,
                 cond_channels: tuple = (320, 640, 1280, 1280), cond_num_res_blocks: int = 2,
                 cond_downscale_factor: int = 8, cond_adapter_type: str = "full_adapter"):
        super().__init__()
        if mv_layout not in MV_LAYOUTS:
            raise ValueError(f"MVAdapter: mv_layout {mv_layout!r} is not one of {MV_LAYOUTS}")
        if num_views < 1:
            raise ValueError(f"MVAdapter: num_views must be >= 1, got {num_views}")
        self.attn = nn.ModuleDict()
        for name, (query_dim, inner_dim) in attention_dims.items():
            _tree_put(self.attn, name, DecoupledBranches(query_dim, inner_dim, qkv_bias, use_mv, use_ref))
        self.cond_encoder = build_condition_encoder(cond_channels, cond_num_res_blocks, cond_in_channels,
                                                    cond_downscale_factor, cond_adapter_type)
        # run-time switches (not saved): views per object, branch scales, input height / width
        self.num_views, self.mv_scale, self.ref_scale, self.aspect, self.enabled = num_views, 1.0, 1.0, 1.0, True

    @classmethod
    def for_unet(cls, unet, num_views: int = 6, **kwargs) -> "MVAdapter":
        """An adapter shaped for `unet` (random branches; see `add_mv_adapter` for the copy init)."""
        names = self_attention_names(unet)
        if not names:
            raise ValueError("MV-Adapter: the UNet has no self-attention (attn1) layers to adapt")
        first = unet.get_submodule(names[0])
        dims = {n: [unet.get_submodule(n).to_q.in_features, unet.get_submodule(n).to_q.out_features] for n in names}
        layers = unet.config.layers_per_block
        kwargs.setdefault("qkv_bias", first.to_q.bias is not None)
        kwargs.setdefault("cond_channels", tuple(unet.config.block_out_channels))
        kwargs.setdefault("cond_num_res_blocks", layers if isinstance(layers, int) else layers[0])
        return cls(attention_dims=dims, num_views=num_views, **kwargs)

    @property
    def attention_names(self) -> list[str]:
        return list(self.config.attention_dims)

    def branches(self, name: str) -> DecoupledBranches:
        return _tree_get(self.attn, name)

    def set_scales(self, mv_scale: float | None = None, ref_scale: float | None = None) -> None:
        """mv_scale = 0 is the ablation without multi-view attention; ref_scale = 0 ignores the image."""
        self.mv_scale = self.mv_scale if mv_scale is None else float(mv_scale)
        self.ref_scale = self.ref_scale if ref_scale is None else float(ref_scale)

    def forward(self, condition: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
        """Camera condition (B*V, C, H, W) -> the UNet's `down_intrablock_additional_residuals`."""
        return camera_residuals(self.cond_encoder, condition, scale)

    @torch.no_grad()
    def copy_base_weights(self, unet, zero_init_out: bool = True) -> None:
        """The reference's init: each branch copies its attention's to_q/k/v/out; to_out then zeroed."""
        for name in self.attention_names:
            attn, branches = unet.get_submodule(name), self.branches(name)
            for kind in branches.kinds:
                for proj in PROJECTIONS:
                    _copy_linear(getattr(branches, f"{proj}_{kind}"), getattr(attn, proj))
                out = getattr(branches, f"to_out_{kind}")[0]
                _copy_linear(out, attn.to_out[0])
                if zero_init_out:
                    nn.init.zeros_(out.weight)
                    nn.init.zeros_(out.bias)

    def install(self, unet) -> None:
        """Put the processors on `unet` (replacing an earlier adapter's); the base weights are untouched."""
        names = set(self_attention_names(unet))
        if names != set(self.attention_names):
            extra, missing = sorted(set(self.attention_names) - names), sorted(names - set(self.attention_names))
            raise ValueError(f"MV-Adapter does not fit this UNet: {len(extra)} adapted layers absent "
                             f"(e.g. {extra[:1]}), {len(missing)} self-attentions without branches (e.g. {missing[:1]})")
        for name, (query_dim, inner_dim) in self.config.attention_dims.items():
            to_q = unet.get_submodule(name).to_q
            if (to_q.in_features, to_q.out_features) != (query_dim, inner_dim):
                raise ValueError(f"MV-Adapter does not fit this UNet: {name} is {to_q.in_features}->{to_q.out_features}, "
                                 f"the adapter expects {query_dim}->{inner_dim}")
        processors = {}
        for key, proc in unet.attn_processors.items():
            base = proc.base if isinstance(proc, MVAttnProcessor) else proc
            name = key[: -len(".processor")]
            processors[key] = MVAttnProcessor(name, base, self, self.branches(name) if name in names else None)
        unet.set_attn_processor(processors)


def _copy_linear(target: nn.Linear, source: nn.Linear) -> None:
    target.weight.copy_(source.weight)
    if target.bias is not None:
        if source.bias is None:
            target.bias.zero_()
        else:
            target.bias.copy_(source.bias)


# --------------------------------------------------------------------------- install / remove

def add_mv_adapter(unet, num_views: int = 6, *, use_ref: bool = False, mv_layout: str = "row",
                   cond_in_channels: int = 6, cond_downscale_factor: int = 8,
                   cond_adapter_type: str = "full_adapter", adapter: MVAdapter | None = None,
                   copy_weights: bool = True, freeze_base: bool = True) -> MVAdapter:
    """Install MV-Adapter processors on `unet` and return the adapter holding every new (trainable)
    module. A given `adapter` (e.g. `MVAdapter.from_pretrained`) is installed as it is; otherwise
    a new one is made with the reference's init (copied q/k/v/out, zeroed out layers)."""
    if adapter is None:
        adapter = MVAdapter.for_unet(unet, num_views, use_ref=use_ref, mv_layout=mv_layout,
                                     cond_in_channels=cond_in_channels, cond_downscale_factor=cond_downscale_factor,
                                     cond_adapter_type=cond_adapter_type)
        if copy_weights:
            adapter.copy_base_weights(unet)
    else:
        adapter.num_views = num_views
    adapter.to(unet.device)
    if adapter.dtype != unet.dtype:
        adapter.to(unet.dtype)
    adapter.install(unet)
    if freeze_base:
        unet.requires_grad_(False)
    return adapter


def remove_mv_adapter(unet) -> None:
    """Give the UNet its own processors back."""
    unet.set_attn_processor({key: proc.base if isinstance(proc, MVAttnProcessor) else proc
                             for key, proc in unet.attn_processors.items()})


@torch.no_grad()
def encode_reference(unet, sample: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep=0,
                     **unet_kwargs) -> dict[str, torch.Tensor]:
    """The reference image's `attn1` inputs from the same frozen UNet at t = 0 (one per object),
    to pass as cross_attention_kwargs["ref_hidden_states"]."""
    cache: dict[str, torch.Tensor] = {}
    unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False,
         cross_attention_kwargs={"cache_hidden_states": cache, "use_mv": False, "use_ref": False}, **unet_kwargs)
    if not cache:
        raise RuntimeError("encode_reference: the UNet has no MV-Adapter processors (call add_mv_adapter first)")
    return cache
