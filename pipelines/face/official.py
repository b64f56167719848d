"""The released Vec2Face weights (HaiyuWu/Vec2Face, hub id "BooBooWu/Vec2Face") on our modules.

    pipe = Vec2FacePipeline.from_pretrained("BooBooWu/Vec2Face")   # downloads the two files below
    pipe = Vec2FacePipeline.from_pretrained("path/to/weights/")    # a folder holding them (or weights/)
    pipe = load_official("weights/vec2face_generator.pth", recognizer="weights/arcface-r100-glint360k.pth")

THE RELEASED FILES (the reference's README / download_vec2face_weights.py):
- `weights/vec2face_generator.pth`: torch.save of a dict; the generator's state dict is under
  "model_vec2face" (the reference's `util/misc.py` training save also holds "model_disc",
  "model_ema", "optimizer_vec2face", "optimizer_disc", "epoch", "scaler" and "args", an
  argparse.Namespace). A bare state dict, "model" or "model_ema" are accepted too.
- `weights/arcface-r100-glint360k.pth`: a bare insightface `iresnet("100")` state dict.
(The hub also holds magface-r100 (a quality scorer) and 6DRepNet (a pose scorer); they only serve
the reference's optional quality / pose optimisation and are not loaded.)

THE GENERATOR (`vec2face_vit_base_patch16` in `model_vec2face.py`): 512-d vectors, 112x112
images, a 7x7 grid (49 tokens + the vector token); ViT encoder width 768, depth 12, 12 heads;
decoder width 768, depth 8, 16 heads; mlp ratio 4, LayerNorm eps 1e-6, qkv bias. Its names
are ours (vec2face.py keeps them): latent_prior_proj_f, feature_token, token_emb.{position_embeddings,
LayerNorm}, blocks.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, decoder_embed,
decoder_pos_embed_learned, decoder_blocks.i.*, decoder_norm, im_decoder_proj (768 -> z 256).
Dropped, because the reference's forward never uses them: `patch_embed.proj.*` (MAE's image
patch embedding, 16x16 conv), `center_token.*` (Linear(768, 49)), `token_emb.position_ids` (an
arange buffer).

NOT REPRESENTABLE BY vec2face.py: the image decoder. The reference's `im_decoder` is taming's VQGAN
Decoder (ch 128, ch_mult (1, 1, 2, 2, 4), 2 residual blocks per level, z 256, no attention at
these sizes): conv_in, mid.block_{1,2}, up.{level}.block.{j}.{norm1, conv1, norm2, conv2,
nin_shortcut}, up.{level}.upsample.conv, norm_out, conv_out; GroupNorm(32, eps 1e-6), bias-free
3x3 convs in the residual blocks, and where a block changes width its residual is
nin_shortcut(h) (the block's own output, not a projection of its input, as the reference computes
it). `vec2face.ImageDecoder` (blocks.i / upsample.i, one width-preserving block per level,
GroupNorm(8), biased convs) has neither these parameters nor this computation. So the converted
weights go into `OfficialVec2Face` (below): Vec2Face with `OfficialImageDecoder` as im_decoder,
and its input rescaled (next paragraph). Everything else is Vec2Face's own code.

VECTOR SCALE: the reference feeds the raw (unnormalised) ArcFace features to the generator, and its
new identities are N(0, 1) draws in 512-d (norm ~ sqrt(512)); our pipeline hands unit vectors
over. `OfficialVec2Face` multiplies the unit vector by `vector_norm` (default sqrt(512) ~ 22.6,
the norm of the reference's sampled identities) before the first projection.

SAFETY: .safetensors files are preferred; .pth/.pt files are opened with
`torch.load(weights_only=True)` only, with argparse.Namespace (the checkpoint's "args") the one
class allowed besides tensors and containers; anything else is refused, nothing is unpickled.
The hub is touched only for a hub id, with `hf_hub_download` (offline: the local HF cache).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config

from genstudio.hub import CheckpointNotFound, is_offline
from .recognizer import FaceRecognizer
from .vec2face import Vec2Face

OFFICIAL_HUB_ID = "BooBooWu/Vec2Face"
GENERATOR_FILE = "weights/vec2face_generator.pth"
ARCFACE_FILE = "weights/arcface-r100-glint360k.pth"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")   # in order of preference
CHECKPOINT_KEYS = ("model_vec2face", "model", "model_ema")
UNUSED_GENERATOR_KEYS = re.compile(r"^(patch_embed\.proj\.|center_token\.|token_emb\.position_ids$)")

# vec2face_vit_base_patch16 + configs/vec2face/vqgan.yaml (ch 128 x ch_mult (1, 1, 2, 2, 4))
OFFICIAL_VEC2FACE_CONFIG = dict(vector_dim=512, image_size=112, grid_size=7, width=768, depth=12, heads=12,
                                decoder_width=768, decoder_depth=8, decoder_heads=16, z_channels=256,
                                level_channels=(128, 128, 256, 256, 512), res_blocks=2)


# ---------------------------------------------------------------- the reference's image decoder

class _VQGANResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(32, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm2, self.conv2 = nn.GroupNorm(32, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        # as the reference computes it: a width change takes its residual from h, not from x
        return (x if self.nin_shortcut is None else self.nin_shortcut(h)) + h


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class OfficialImageDecoder(nn.Module):
    """taming's VQGAN decoder in the reference's layout. level_channels[i] = ch * ch_mult[i]
    (level 0 = full resolution); len(level_channels) - 1 doublings of the side."""

    def __init__(self, z_channels: int, level_channels: Sequence[int], res_blocks: int, out_channels: int = 3):
        super().__init__()
        level_channels = list(level_channels)
        width = level_channels[-1]
        self.conv_in = nn.Conv2d(z_channels, width, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = _VQGANResBlock(width, width), _VQGANResBlock(width, width)
        levels: list[nn.Module] = [None] * len(level_channels)
        for i in reversed(range(len(level_channels))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(res_blocks):
                level.block.append(_VQGANResBlock(width, level_channels[i]))
                width = level_channels[i]
            if i != 0:
                level.upsample = _Upsample(width)
            levels[i] = level
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(32, width, eps=1e-6)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            if i != 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class OfficialVec2Face(Vec2Face):
    """Vec2Face with the reference's image decoder and input scale (see the module docstring)."""

    @register_to_config
    def __init__(self, vector_dim: int = 512, image_size: int = 112, grid_size: int = 7, width: int = 768,
                 depth: int = 12, heads: int = 12, decoder_width: int = 768, decoder_depth: int = 8,
                 decoder_heads: int = 16, z_channels: int = 256,
                 level_channels: Sequence[int] = (128, 128, 256, 256, 512), res_blocks: int = 2,
                 vector_norm: float | None = None, mlp_ratio: float = 4.0, dropout: float = 0.1):
        if any(c % 32 for c in level_channels) or len(level_channels) < 1:
            raise ValueError(f"the reference's image decoder needs widths divisible by 32 (GroupNorm(32)), "
                             f"got level_channels={tuple(level_channels)}")
        # Vec2Face's own image decoder is built at the right depth (its size check), then replaced
        super().__init__(vector_dim=vector_dim, image_size=image_size, grid_size=grid_size, width=width, depth=depth,
                         heads=heads, decoder_width=decoder_width, decoder_depth=decoder_depth,
                         decoder_heads=decoder_heads, mlp_ratio=mlp_ratio, dropout=dropout, z_channels=z_channels,
                         decoder_channels=tuple(level_channels[1:]))
        self.im_decoder = OfficialImageDecoder(z_channels, level_channels, res_blocks)
        self.vector_scale = float(vector_norm) if vector_norm is not None else math.sqrt(vector_dim)

    def forward(self, vector: torch.Tensor, mask_ratio: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        scaled = F.normalize(vector.float(), dim=-1).to(vector.dtype) * self.vector_scale
        return super().forward(scaled, mask_ratio=mask_ratio, generator=generator)


# ---------------------------------------------------------------- configs from tensors

def _count(sd: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd for m in [pattern.match(k)] if m})


def official_vec2face_config(state_dict: dict | None = None, **overrides) -> dict:
    """`OfficialVec2Face` keyword arguments: the released model's, or the sizes read off an official
    state dict (heads cannot be read off tensors: the released 12 / 16 unless overridden)."""
    config = dict(OFFICIAL_VEC2FACE_CONFIG)
    if state_dict is not None:
        try:
            width, vector_dim = state_dict["latent_prior_proj_f.weight"].shape
            levels = _count(state_dict, "im_decoder.up.")
            level_channels = tuple(int(state_dict[f"im_decoder.up.{i}.block.0.conv1.weight"].shape[0])
                                   for i in range(levels))
            grid = math.isqrt(state_dict["feature_token.weight"].shape[0])
            config.update(vector_dim=int(vector_dim), width=int(width), depth=_count(state_dict, "blocks."),
                          decoder_width=int(state_dict["decoder_embed.weight"].shape[0]),
                          decoder_depth=_count(state_dict, "decoder_blocks."), grid_size=grid,
                          image_size=grid * 2 ** (levels - 1), level_channels=level_channels,
                          z_channels=int(state_dict["im_decoder_proj.weight"].shape[0]),
                          res_blocks=_count(state_dict, "im_decoder.up.0.block."))
        except (KeyError, ValueError) as e:
            raise ValueError(f"not an official Vec2Face generator state dict: {e.args[0]} is missing "
                             f"(it has {_sample(state_dict)})") from None
    config.update(overrides)
    for part, heads in (("width", "heads"), ("decoder_width", "decoder_heads")):
        if config[part] % config[heads]:
            raise ValueError(f"official Vec2Face: {part} {config[part]} is not divisible by {heads}={config[heads]}; "
                             f"pass {heads}=")
    return config


def official_arcface_config(state_dict: dict) -> dict:
    """`FaceRecognizer` keyword arguments of an insightface iresnet state dict (R100: layers 3/13/30/3)."""
    try:
        channels = tuple(int(state_dict[f"layer{k}.0.conv1.weight"].shape[0]) for k in range(1, 5))
        layers = tuple(_count(state_dict, f"layer{k}.") for k in range(1, 5))
        embed_dim, fc_in = state_dict["fc.weight"].shape
    except KeyError as e:
        raise ValueError(f"not an insightface iresnet (ArcFace) state dict: {e.args[0]} is missing "
                         f"(it has {_sample(state_dict)})") from None
    side = math.isqrt(int(fc_in) // channels[-1])
    return dict(channels=channels, layers=layers, embed_dim=int(embed_dim), image_size=16 * side)


# ---------------------------------------------------------------- key mapping

def _sample(sd: dict, n: int = 4) -> str:
    keys = sorted(sd)
    return f"{len(keys)} keys: {', '.join(keys[:n])}{', ...' if len(keys) > n else ''}"


def _strip_module(sd: dict) -> dict:
    """A DistributedDataParallel save prefixes every key with "module."."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def unwrap_checkpoint(obj, keys: Sequence[str] = CHECKPOINT_KEYS) -> dict:
    """The generator's state dict out of the released training dict (or a bare state dict)."""
    if not isinstance(obj, dict):
        raise ValueError(f"an official checkpoint should be a dict, got {type(obj).__name__}")
    for key in keys:
        if isinstance(obj.get(key), dict):
            return obj[key]
    if obj and all(torch.is_tensor(v) for v in obj.values()):
        return obj
    raise ValueError(f"no state dict in the checkpoint: expected one of {list(keys)} or bare tensors, "
                     f"top-level keys are {sorted(map(str, obj))[:8]}")


def convert_vec2face_state_dict(official_sd: dict) -> dict:
    """The reference's generator keys -> OfficialVec2Face's: the same names, minus the parts its
    forward never uses (patch_embed.proj.*, center_token.*, token_emb.position_ids)."""
    sd = _strip_module(official_sd)
    if "latent_prior_proj_f.weight" not in sd:
        raise ValueError(f"not an official Vec2Face generator state dict: latent_prior_proj_f.weight is missing "
                         f"(it has {_sample(sd)})")
    return {k: v for k, v in sd.items() if not UNUSED_GENERATOR_KEYS.match(k)}


def convert_arcface_state_dict(official_sd: dict) -> dict:
    """insightface iresnet keys -> FaceRecognizer's: the same names (conv1, bn1, prelu, layer1..4.i.
    {bn1, conv1, bn2, prelu, conv2, bn3, downsample.0/1}, bn2, fc, features); "module." is dropped."""
    sd = _strip_module(official_sd)
    if "fc.weight" not in sd or "layer1.0.conv1.weight" not in sd:
        raise ValueError(f"not an insightface iresnet (ArcFace) state dict: fc.weight / layer1.0.conv1.weight "
                         f"missing (it has {_sample(sd)})")
    return sd


def load_strict(model: nn.Module, state_dict: dict, what: str) -> None:
    """Every parameter and buffer of `model` from `state_dict`, or one line naming what does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state_dict))
              if tuple(state_dict[k].shape) != tuple(own[k].shape)]
    problems = [f"{name} {items[:4]}{' ...' if len(items) > 4 else ''} ({len(items)})"
                for name, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
                if items]
    if problems:
        raise ValueError(f"{what} does not match the official layout: {'; '.join(problems)}")
    model.load_state_dict(state_dict, strict=True)


# ---------------------------------------------------------------- files

def read_weights(path: str | os.PathLike) -> dict:
    """A .safetensors file, or a .pth/.pt file read with torch.load(weights_only=True) (tensors,
    containers and argparse.Namespace only; anything else is refused with one line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: official weights should be .safetensors, .pth or .pt")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (a class outside the allow-list), a corrupt file ...
        first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ValueError(f"{path} was refused: it holds more than tensors (torch.load weights_only=True: "
                         f"{first[:160]}); genstudio never unpickles arbitrary objects; convert it to "
                         f".safetensors") from None


def _find(folder: Path, name: str) -> Path | None:
    stem = Path(name).stem
    for where in (folder, folder / "weights"):
        for suffix in WEIGHT_SUFFIXES:
            if (where / f"{stem}{suffix}").is_file():
                return where / f"{stem}{suffix}"
    return None


def is_official(name_or_path) -> bool:
    """Whether `from_pretrained` should route this to `load_official`: the official hub id, a weights
    file, or a folder (without our config.json) holding vec2face_generator.* directly or in weights/."""
    if name_or_path is None:
        return False
    if str(name_or_path).lower() == OFFICIAL_HUB_ID.lower() and not Path(name_or_path).exists():
        return True
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.suffix in WEIGHT_SUFFIXES
    return path.is_dir() and not (path / "config.json").is_file() and _find(path, GENERATOR_FILE) is not None


def _download(hub_id: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(hub_id, filename, local_files_only=is_offline()))
    except Exception as e:  # offline, unknown repo or file, network down ...
        why = "the machine is offline (HF_HUB_OFFLINE=1) and it is not in the local HF cache" if is_offline() \
            else f"download failed: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
        raise CheckpointNotFound(f"official Vec2Face weights {hub_id}/{filename} could not be loaded: {why}") from None


def official_files(path_or_hub_id, recognizer=None) -> tuple[Path, Path]:
    """(generator file, ArcFace file): local files next to each other / in a folder (or its weights/),
    or, for a hub id that is not a local path, the README's two files from the hub."""
    path = Path(path_or_hub_id).expanduser()
    if path.is_file():
        generator, folder = path, path.parent
    elif path.is_dir():
        generator, folder = _find(path, GENERATOR_FILE), path
        if generator is None:
            raise FileNotFoundError(f"{path} holds no vec2face_generator.safetensors / .pth (nor in weights/)")
    elif str(path_or_hub_id).count("/") == 1 and not str(path_or_hub_id).startswith((".", "/", "~")):
        generator = _download(str(path_or_hub_id), GENERATOR_FILE)
        arcface = Path(recognizer) if recognizer is not None else _download(str(path_or_hub_id), ARCFACE_FILE)
        return generator, arcface
    else:
        raise FileNotFoundError(f"{path_or_hub_id} is neither a local file or folder nor a hub id")
    arcface = Path(recognizer) if recognizer is not None else _find(folder, ARCFACE_FILE)
    if arcface is None:
        raise FileNotFoundError(f"no arcface-r100-glint360k.safetensors / .pth next to {generator}: the pipeline needs "
                                f"the identity model the generator was trained with (pass recognizer=)")
    return generator, arcface


def load_official_models(path_or_hub_id=OFFICIAL_HUB_ID, recognizer=None, dtype: torch.dtype | None = None,
                         **config) -> tuple[OfficialVec2Face, FaceRecognizer]:
    """(generator, ArcFace recogniser) from the released files; `config` overrides
    `official_vec2face_config` (heads, vector_norm)."""
    generator_file, arcface_file = official_files(path_or_hub_id, recognizer)
    generator_sd = convert_vec2face_state_dict(unwrap_checkpoint(read_weights(generator_file)))
    generator = OfficialVec2Face(**official_vec2face_config(generator_sd, **config))
    load_strict(generator, generator_sd, f"{generator_file}")
    arcface_sd = convert_arcface_state_dict(unwrap_checkpoint(read_weights(arcface_file), keys=("state_dict", "model")))
    arcface = FaceRecognizer(**official_arcface_config(arcface_sd))
    load_strict(arcface, arcface_sd, f"{arcface_file}")
    if dtype is not None and dtype != torch.float32:
        generator, arcface = generator.to(dtype), arcface.to(dtype)
    return generator.eval(), arcface.eval()


def load_official(path_or_hub_id=OFFICIAL_HUB_ID, recognizer=None, device: str = "auto", dtype=None,
                  precision: str | None = "auto", **config):
    """A ready Vec2FacePipeline from the released weights (a hub id, a folder or the generator file;
    `recognizer=` the ArcFace file when it is elsewhere)."""
    from genstudio.device import resolve_device
    from genstudio.pipeline import CheckpointMismatch
    from genstudio.precision import resolve_precision
    from .pipeline import Vec2FacePipeline
    dev = resolve_device(device)
    chosen = resolve_precision(dev, precision, Vec2FacePipeline.workload)
    try:
        generator, arcface = load_official_models(path_or_hub_id, recognizer, dtype or torch.float32, **config)
    except CheckpointNotFound:
        raise
    except (FileNotFoundError, OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
        raise CheckpointMismatch(f"{path_or_hub_id} could not be loaded as official Vec2Face weights ({first})") from None
    return Vec2FacePipeline(generator, arcface).ready(dev, chosen, str(path_or_hub_id))
