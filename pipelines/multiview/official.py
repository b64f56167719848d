"""The released MV-Adapter weights (hub id "huanngzh/mv-adapter") on our `MVAdapter`.

    adapter = load_official(unet, "huanngzh/mv-adapter", "t2mv_sd21")     # downloads one file
    adapter = load_official(unet, "path/mvadapter_t2mv_sd21.safetensors", "t2mv_sd21")

THE RELEASED FILES are one flat safetensors state dict each (the reference's
`pipeline_mvadapter_*._save_custom_adapter`: the UNet's state-dict entries whose names hold the
trained "_mv" / "_ref" modules, plus `cond_encoder.state_dict()` of a diffusers T2IAdapter):
- "<attention path>.processor.to_{q,k,v}_mv.weight" and "<path>.processor.to_out_mv.0.{weight,bias}",
  e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_mv.weight", for every
  self-attention (attn1) of the base UNet (q/k/v without bias); image-conditioned files also hold
  the same four for "_ref". Cross-attention processors have no parameters.
- "adapter.<T2IAdapter module>", e.g. "adapter.conv_in.weight", "adapter.body.0.resnets.0.block1.weight".

OUR NAMES: "attn.<attention path>.<same parameter>" (no ".processor") and "cond_encoder.adapter.<...>":
the mapping only moves prefixes, so every released tensor lands unchanged.

USING THEM FAITHFULLY: the base must be the matching diffusers UNet (stable-diffusion-2-1-base or
SDXL base), the cameras `cameras.reference_cameras()`, the condition image
`condition.camera_condition(cameras.reference_ortho_maps(...))` (the reference's constant
per-view embedding, not per-pixel Plücker rays), mv_layout "row", num_views 6, and the scheduler
`condition.shift_noise_schedule(scheduler, 8.0, "interpolated")`.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from genstudio.hub import CheckpointNotFound, is_offline

from .attention import MVAdapter, add_mv_adapter

OFFICIAL_REPO = "huanngzh/mv-adapter"
_SD21 = dict(cond_downscale_factor=8, cond_adapter_type="full_adapter")
_SDXL = dict(cond_downscale_factor=16, cond_adapter_type="full_adapter_xl",
             cond_channels=(320, 640, 1280, 1280), cond_num_res_blocks=2)
# variant -> (file, adapter settings); cond_in_channels 6 = Plücker (view) or position + normal (geometry)
OFFICIAL_VARIANTS = {
    "t2mv_sd21": ("mvadapter_t2mv_sd21.safetensors", dict(use_ref=False, **_SD21)),
    "i2mv_sd21": ("mvadapter_i2mv_sd21.safetensors", dict(use_ref=True, **_SD21)),
    "t2mv_sdxl": ("mvadapter_t2mv_sdxl.safetensors", dict(use_ref=False, **_SDXL)),
    "i2mv_sdxl": ("mvadapter_i2mv_sdxl.safetensors", dict(use_ref=True, **_SDXL)),
    "tg2mv_sdxl": ("mvadapter_tg2mv_sdxl.safetensors", dict(use_ref=False, **_SDXL)),
    "ig2mv_sdxl": ("mvadapter_ig2mv_sdxl.safetensors", dict(use_ref=True, **_SDXL)),
    "ig2mv_partial_sdxl": ("mvadapter_ig2mv_partial_sdxl.safetensors", dict(use_ref=True, **_SDXL)),
}

_OFFICIAL_BRANCH = re.compile(r"^(?P<path>.+)\.processor\.(?P<param>to_(?:q|k|v|out)_(?:mv|ref)\.(?:0\.)?(?:weight|bias))$")
_OUR_BRANCH = re.compile(r"^attn\.(?P<path>.+)\.(?P<param>to_(?:q|k|v|out)_(?:mv|ref)\.(?:0\.)?(?:weight|bias))$")


class OfficialKeyError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; one plain line reads better
        return str(self.args[0])


def _examples(keys) -> str:
    keys = sorted(keys)
    return ", ".join(repr(k) for k in keys[:2]) + (f" (+{len(keys) - 2} more)" if len(keys) > 2 else "")


def official_to_ours(state_dict: dict) -> dict:
    """Released key names -> ours; a key of neither kind is an error."""
    ours, unknown = {}, []
    for key, value in state_dict.items():
        m = _OFFICIAL_BRANCH.match(key)
        if m:
            ours[f"attn.{m['path']}.{m['param']}"] = value
        elif key.startswith("adapter."):
            ours[f"cond_encoder.{key}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise OfficialKeyError(f"official MV-Adapter state dict: {len(unknown)} keys are neither attention "
                               f"branches nor T2IAdapter weights: {_examples(unknown)}")
    return ours


def ours_to_official(state_dict: dict) -> dict:
    """Our key names -> the released ones (to export an adapter trained here for the reference's code)."""
    official, unknown = {}, []
    for key, value in state_dict.items():
        m = _OUR_BRANCH.match(key)
        if m:
            official[f"{m['path']}.processor.{m['param']}"] = value
        elif key.startswith("cond_encoder.adapter."):
            official[key[len("cond_encoder."):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise OfficialKeyError(f"MV-Adapter state dict: {len(unknown)} keys have no official name: {_examples(unknown)}")
    return official


def load_official_state_dict(adapter: MVAdapter, state_dict: dict) -> MVAdapter:
    """Load a released state dict into `adapter`; every key must match in name and shape."""
    mapped = official_to_ours(state_dict)
    expected = adapter.state_dict()
    missing, unexpected = set(expected) - set(mapped), set(mapped) - set(expected)
    if missing:
        raise OfficialKeyError(f"official MV-Adapter weights lack {len(missing)} of our adapter's tensors "
                               f"(another base model or variant?): {_examples(missing)}")
    if unexpected:
        raise OfficialKeyError(f"official MV-Adapter weights have {len(unexpected)} tensors our adapter has no "
                               f"place for (another base model or variant?): {_examples(unexpected)}")
    wrong = [f"{k} {tuple(v.shape)} vs ours {tuple(expected[k].shape)}" for k, v in mapped.items()
             if v.shape != expected[k].shape]
    if wrong:
        raise OfficialKeyError(f"official MV-Adapter weights: {len(wrong)} tensors have other shapes, e.g. {wrong[0]}")
    adapter.load_state_dict(mapped, strict=True)
    return adapter


def _official_file(source: str | Path, variant: str) -> Path:
    filename = OFFICIAL_VARIANTS[variant][0]
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / filename
    if path.exists():
        return path
    name = str(source)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise CheckpointNotFound(f"official MV-Adapter {name!r}: no such file or folder, and not a hub id")
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(name, filename, local_files_only=is_offline()))
    except Exception as e:  # offline, network, unknown repo
        why = "offline and not in the HF cache" if is_offline() else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        raise CheckpointNotFound(f"official MV-Adapter {name}/{filename} could not be loaded: {why}") from None


def load_official(unet, source: str | Path = OFFICIAL_REPO, variant: str = "t2mv_sd21", num_views: int = 6,
                  **adapter_kwargs) -> MVAdapter:
    """A released adapter (file, folder or hub id) installed on its matching diffusers `unet`."""
    if variant not in OFFICIAL_VARIANTS:
        raise ValueError(f"official MV-Adapter: unknown variant {variant!r}; one of {sorted(OFFICIAL_VARIANTS)}")
    path = _official_file(source, variant)
    if path.suffix != ".safetensors":
        raise ValueError(f"official MV-Adapter: {path} is not a .safetensors file (the released format)")
    from safetensors.torch import load_file
    settings = {**OFFICIAL_VARIANTS[variant][1], "cond_in_channels": 6, "mv_layout": "row", **adapter_kwargs}
    adapter = MVAdapter.for_unet(unet, num_views, **settings)
    load_official_state_dict(adapter, {k: v.to(torch.float32) for k, v in load_file(str(path)).items()})
    return add_mv_adapter(unet, num_views, adapter=adapter)
