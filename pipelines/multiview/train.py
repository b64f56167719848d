"""MV-Adapter's recipes, in the order they run (the CPU recipe: 1 thread, bf16 autocast where native):

    genstudio data prepare multiview
    genstudio train mv-vae --set preset=S --set steps=1100 --set batch_size=32 --output-dir runs/mv-vae
    genstudio train mv-base --set preset=S-latent --set vae='"runs/mv-vae"' --set steps=1900 \
        --set batch_size=32 --output-dir runs/mv-base                          # the text-to-image base
    genstudio train mv-adapter --set base='"runs/mv-base"' --set steps=1050 --set batch_size=8 \
        --output-dir runs/mv-adapter

(`make train-multiview`, with the time budgets the shipped models trained under.) Measured per step
after a warm-up on a 2-core CPU, OMP_NUM_THREADS=1, bf16 autocast (AVX-512 BF16), the other core busy:
mv-vae S 2.1 s at batch 32, mv-base S-latent 1.6 s at batch 32 incl. VAE encoding, mv-adapter 2.8 s at
8 objects x 4 views + reference. On a GPU raise them (e.g. 20000 / 20000 / 10000) and keep the rest: the
shipped v2 continued base and adapter on one H200 at batch 512 / 64 (scripts/gpu-multiview.sh, 0.15-0.16 s
per step), with the captions' states from a `caption_table` (write_caption_table) instead of the encoder.

WHY LATENTS: the pixel-space preset "S" (64 px, self-attention over 64 x 64 = 4096 tokens in its
first level) took 79 s per step at batch 32 on that CPU (130 s in fp32): untrainable there. Like SD,
the CPU recipe trains a small `AutoencoderKL` first (`mv-vae`, latent.py: 64 px -> 16 x 16 x 4) and the
base on its latents (`vae=`): attention over 256 tokens. The base run keeps that VAE, with its
measured scaling factor, in its `vae/` folder, which is where the pipeline looks for it; the adapter
then gets the T2IAdapter downscale_factor = the VAE's factor (4), as the reference uses 8 for SD.
Pixel-space presets ("tiny", "S") remain for tests and GPUs.

`mv-base` trains a small diffusers `UNet2DConditionModel` on single views (64 px RGB renders in
[-1, 1], or their scaled VAE latents), with the packaged MiniLM's token states as `encoder_hidden_states`,
caption dropout (the empty caption) for classifier-free guidance, DDPM epsilon on the standard
diffusers `DDPMScheduler` (linear betas, 1000 steps).

`mv-adapter` freezes that base (and its VAE) and trains only the adapter (`add_mv_adapter`: multi-view and
reference attention branches + the T2IAdapter camera encoder) on V views of each object, with the
reference's shifted noise schedule (SNR / shift_scale, interpolated) and ONE timestep per object
for all its views. The reference image is the object's front reference render (image-to-multiview);
dropouts, each per object and 0.1 by default: the reference image (-> zeros, the null image),
the caption (-> ""), the camera condition (-> zeros). The trainer sees the adapter as the model,
so its checkpoints and EMA hold the adapter alone; the frozen base stays in the loss function.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from genstudio.diffusion import make_scheduler, min_snr_weights
from genstudio.export import init_weights
from genstudio.train import Recipe, parse_config

from .attention import add_mv_adapter, encode_reference
from .condition import camera_condition, shift_noise_schedule
from .data import MultiViewDataset
from .latent import base_vae, make_vae, prepare_base_vae, to_latents, vae_factor

# name -> UNet2DConditionModel kwargs. S: 13.1M parameters (26 MB in fp16). "S-latent" is S's UNet on
# the S VAE's 16 x 16 x 4 latents (the CPU preset: 1.4 s/step at batch 32 vs 79 s for S on 64 px pixels);
# presets in LATENT_PRESETS need `vae=`, the others run in pixel space unless one is given.
# The last down block has no attention and no downsampler, as in SD, so the camera encoder's
# features line up with every down block (diffusers adds a plain block's residual after its downsampler).
BASE_CONFIGS = {
    "tiny": dict(block_out_channels=(32, 64), layers_per_block=1, attention_head_dim=8, norm_num_groups=8),
    "S": dict(block_out_channels=(64, 128, 256), layers_per_block=1, attention_head_dim=8, norm_num_groups=32),
    "S-latent": dict(block_out_channels=(64, 128, 256), layers_per_block=1, attention_head_dim=8, norm_num_groups=32),
}
LATENT_PRESETS = ("S-latent",)


def make_base_unet(preset: str, image_size: int = 64, text_dim: int = 384, in_channels: int = 3):
    """image_size: the UNet's input side (pixels, or latents of a VAE); in_channels: 3 or the latent channels."""
    from diffusers import UNet2DConditionModel
    if preset not in BASE_CONFIGS:
        raise ValueError(f"mv-base: unknown preset {preset!r}; choose from {', '.join(BASE_CONFIGS)}")
    cfg = BASE_CONFIGS[preset]
    n = len(cfg["block_out_channels"])
    return UNet2DConditionModel(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels, cross_attention_dim=text_dim,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1), **cfg)


class CaptionTokens:
    """MiniLM token states of captions, computed once per distinct caption and padded per batch.

    `text_encoder`: "minilm" (the packaged one) or another encoder's name or path. `table`: a caption table
    of that encoder (`write_caption_table`) to read the states from instead: a machine without the encoder
    (a GPU box that cannot download it) trains the same model, on the table's fixed caption set."""

    def __init__(self, text_encoder: str = "minilm", table: str | None = None):
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.encoder, self.table = None, table
        if table:
            self.cache, self._dim, source = read_caption_table(table)
            if source != text_encoder:
                raise ValueError(f"the caption table {table} holds {source!r} states, not {text_encoder!r}'s")
        else:
            from genstudio.text import get_text_encoder
            self.encoder = get_text_encoder(None if text_encoder == "minilm" else text_encoder)

    @property
    def dim(self) -> int:
        return self._dim if self.encoder is None else self.encoder.dim

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing and self.encoder is None:
            raise ValueError(f"caption {missing[0]!r} is not in the caption table {self.table}")
        if missing:
            enc = self.encoder.encode(missing, return_tokens=True)
            for k, c in enumerate(missing):
                length = int(enc.mask[k].sum())
                self.cache[c] = (enc.hidden_states[k, :length].float().cpu(), enc.mask[k, :length].cpu())
        length = max(self.cache[c][0].shape[0] for c in captions)
        states = torch.stack([F.pad(self.cache[c][0], (0, 0, 0, length - self.cache[c][0].shape[0])) for c in captions])
        mask = torch.stack([F.pad(self.cache[c][1], (0, length - self.cache[c][1].shape[0])) for c in captions])
        return states, mask


def write_caption_table(path, captions: list[str], text_encoder: str = "minilm") -> int:
    """Precompute `captions`' token states (and the empty caption's, for dropout) into a safetensors table
    that CaptionTokens reads in place of the encoder. Returns the number of captions."""
    from safetensors.torch import save_file
    tokens = CaptionTokens(text_encoder)
    captions = list(dict.fromkeys(["", *captions]))
    tensors = {}
    for k, c in enumerate(captions):
        states, mask = tokens([c])
        tensors[f"states.{k}"], tensors[f"mask.{k}"] = states[0].contiguous(), mask[0].contiguous()
    save_file(tensors, str(path), metadata={"captions": json.dumps(captions), "dim": str(tokens.dim),
                                            "text_encoder": text_encoder})
    return len(captions)


def read_caption_table(path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], int, str]:
    """(caption -> (states, mask), the states' width, the encoder that made them)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            captions = json.loads(meta["captions"])
            table = {c: (f.get_tensor(f"states.{k}").float(), f.get_tensor(f"mask.{k}")) for k, c in enumerate(captions)}
            return table, int(meta["dim"]), meta["text_encoder"]
    except Exception as e:  # noqa: BLE001 (a missing, corrupt or foreign file: one clear line)
        raise ValueError(f"{path} is not a caption table (write_caption_table): {e}") from None


def drop(items: list, p: float, null, generator: torch.Generator | None = None) -> list:
    keep = torch.rand(len(items), generator=generator) >= p
    return [x if k else null for x, k in zip(items, keep.tolist())]


def _stack(batch: list[dict]) -> dict:
    out = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


# ---------------------------------------------------------------- mv-vae

@dataclass
class VaeOptions:
    preset: str = "S"                 # latent.VAE_CONFIGS
    kl_weight: float = 1e-6           # SD's weight: latents stay informative, the scaling factor fixes their scale


def vae_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, VaeOptions, recipe="mv-vae", output_dir="runs/mv-vae", steps=2000,
                                   batch_size=32, lr=3e-4, warmup_steps=100, save_every=500, weight_decay=0.0)
    dataset = MultiViewDataset("train", single_view=True)
    size = dataset[0]["image"].shape[-1]
    model = make_vae(opts.preset, size)
    print(f"[mv-vae] {opts.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{size} px -> {size // vae_factor(model)} px x {model.config.latent_channels} latents")

    def loss_fn(vae, batch):
        inner = vae.module if hasattr(vae, "module") else vae
        x = batch["image"].to(inner.device, inner.dtype)
        posterior = inner.encode(x).latent_dist
        recon = inner.decode(posterior.sample() if vae.training else posterior.mode()).sample
        l1 = F.l1_loss(recon.float(), x.float())
        kl = posterior.kl().float().mean()   # summed over one image's latents, as SD's loss weighs it
        # SD: sum of |x - x'| over an image's pixels + kl_weight * KL; divided by the pixels here
        return l1 + opts.kl_weight * kl / x[0].numel(), {"l1": l1.item(), "kl": kl.item()}

    return Recipe(model, dataset, loss_fn, train_cfg, collate_fn=_stack, name="mv-vae", options=opts)


def export_vae(run_dir, to, dtype: torch.dtype) -> None:
    from diffusers import AutoencoderKL
    from genstudio.export import export_model
    export_model(AutoencoderKL, run_dir, to, dtype)


vae_recipe.export = export_vae


# ---------------------------------------------------------------- mv-base

@dataclass
class BaseOptions:
    preset: str = "S"
    caption_dropout: float = 0.1
    text_encoder: str = "minilm"
    caption_table: Optional[str] = None   # the text encoder's states precomputed (write_caption_table)
    vae: Optional[str] = None         # an mv-vae run or AutoencoderKL folder: train on its latents (kept in vae/)
    init_from: Optional[str] = None   # continue from these UNet weights (an mv-base run, export or checkpoint)
    snr_gamma: float = 0.0            # > 0: Min-SNR-gamma loss weighting (genstudio.diffusion.min_snr_weights)


def base_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, BaseOptions, recipe="mv-base", output_dir="runs/mv-base", steps=20000,
                                   batch_size=64, lr=2e-4, warmup_steps=500, save_every=1000, weight_decay=0.0)
    if opts.preset in LATENT_PRESETS and not opts.vae:
        raise ValueError(f"mv-base: preset {opts.preset!r} is a latent-space UNet; give vae= (an mv-vae run)")
    dataset = MultiViewDataset("train", single_view=True)
    size = dataset[0]["image"].shape[-1]
    tokens = CaptionTokens(opts.text_encoder, opts.caption_table)
    vae = prepare_base_vae(opts.vae, train_cfg.output_dir, dataset) if opts.vae else None
    factor = vae_factor(vae) if vae is not None else 1
    if size % factor:
        raise ValueError(f"mv-base: {size} px renders do not divide by the VAE's factor {factor}")
    model = make_base_unet(opts.preset, size // factor, tokens.dim, vae.config.latent_channels if vae else 3)
    if opts.init_from:
        opts.init_from = init_weights(model, opts.init_from, "mv-base init_from")
    scheduler = make_scheduler("ddpm", prediction_type="epsilon")
    space = f"{size // factor} px latents (scaling {vae.config.scaling_factor:.4f})" if vae else "pixels"
    print(f"[mv-base] {opts.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{len(dataset)} views of {len(dataset.items)} objects at {size} px, on {space}")

    def loss_fn(unet, batch):
        x0 = batch["image"].to(unet.device, unet.dtype)
        if vae is not None:
            x0 = to_latents(vae, x0)
        states, mask = tokens(drop(batch["caption"], opts.caption_dropout if unet.training else 0.0, ""))
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),), device=x0.device)
        noisy = scheduler.add_noise(x0, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=states.to(x0.device, x0.dtype),
                    encoder_attention_mask=mask.to(x0.device)).sample
        if opts.snr_gamma > 0:
            err = (pred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
            return (err * min_snr_weights(scheduler, t, opts.snr_gamma)).mean()
        return F.mse_loss(pred.float(), noise.float())

    return Recipe(model, dataset, loss_fn, train_cfg, collate_fn=_stack, name="mv-base", options=opts)


def load_base(path):
    """The frozen base UNet from an mv-base run (its final/ weights) or a folder."""
    from diffusers import UNet2DConditionModel
    from genstudio.export import run_weights
    return UNet2DConditionModel.from_pretrained(run_weights(path)).float().eval().requires_grad_(False)


def export_base(run_dir, to, dtype: torch.dtype) -> None:
    """The UNet, plus the run's vae/ (with its scaling factor) for a latent-space base."""
    from diffusers import UNet2DConditionModel
    from genstudio.export import export_model, save_safetensors
    export_model(UNet2DConditionModel, run_dir, to, dtype)
    vae = base_vae(run_dir)
    if vae is not None:
        save_safetensors(vae.to(dtype), Path(to) / "vae")


base_recipe.export = export_base


# ---------------------------------------------------------------- mv-adapter

@dataclass
class AdapterOptions:
    base: str = "runs/mv-base"        # an mv-base run or UNet folder (frozen)
    views: int = 4
    cameras: str = "mixed"            # reference | random | mixed (MultiViewDataset)
    mv_layout: str = "full"           # row (the reference: horizontal views) | position | full (any camera)
    use_ref: bool = True              # image-to-multiview: reference attention on the front render
    geometry: bool = False            # add position + normal maps to the camera condition (12 channels)
    shift_scale: float = 8.0
    image_dropout: float = 0.1
    caption_dropout: float = 0.1
    condition_dropout: float = 0.1
    text_encoder: str = "minilm"
    caption_table: Optional[str] = None   # the text encoder's states precomputed (write_caption_table)
    init_from: Optional[str] = None   # start from these adapter weights


def adapter_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, AdapterOptions, recipe="mv-adapter", output_dir="runs/mv-adapter",
                                   steps=10000, batch_size=8, lr=1e-4, warmup_steps=200, save_every=1000,
                                   weight_decay=0.0)
    from .attention import MVAdapter
    unet = load_base(opts.base)
    vae = base_vae(opts.base)                 # a latent-space base: images and reference go through it
    dataset = MultiViewDataset("train", views=opts.views, cameras=opts.cameras)
    if opts.geometry and "position" not in dataset[0]:
        raise ValueError("mv-adapter: geometry=true needs the position / normal maps, which this data copy lacks "
                         "(a slim_copy); use the full `genstudio data prepare multiview` build")
    tokens = CaptionTokens(opts.text_encoder, opts.caption_table)
    if opts.init_from:
        from genstudio.export import run_weights
        adapter = add_mv_adapter(unet, opts.views, adapter=MVAdapter.from_pretrained(run_weights(opts.init_from)))
        factor = vae_factor(vae) if vae is not None else 1
        if adapter.config.cond_downscale_factor != factor:
            raise ValueError(f"mv-adapter: init_from's camera encoder downscales by {adapter.config.cond_downscale_factor}, "
                             f"the base's {'VAE' if vae is not None else 'pixel space'} needs {factor}")
    else:
        adapter = add_mv_adapter(unet, opts.views, use_ref=opts.use_ref, mv_layout=opts.mv_layout,
                                 cond_in_channels=12 if opts.geometry else 6,
                                 cond_downscale_factor=vae_factor(vae) if vae is not None else 1)
    adapter.train()
    scheduler = shift_noise_schedule(make_scheduler("ddpm", prediction_type="epsilon"), opts.shift_scale)
    trainable = sum(p.numel() for p in adapter.parameters())
    print(f"[mv-adapter] {trainable / 1e6:.2f}M adapter parameters on a frozen {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M "
          f"base; {len(dataset)} objects x {opts.views} views ({opts.cameras} cameras, {opts.mv_layout} attention)")
    state = {"unet": unet}

    def loss_fn(m, batch):
        inner = m.module if hasattr(m, "module") else m          # DDP wraps the adapter
        base = state["unet"]
        if base.device != inner.device or base.dtype != inner.dtype:
            base.to(inner.device, inner.dtype)
        device, dtype = inner.device, inner.dtype
        images = batch["images"].to(device, dtype)                # (B, V, 3, H, W)
        b, v = images.shape[:2]
        inner.num_views = v
        p = lambda x: x if m.training else 0.0                    # noqa: E731 (no dropout when evaluating)
        captions = drop(batch["caption"], p(opts.caption_dropout), "")
        states, mask = tokens(captions)
        states = states.to(device, dtype).repeat_interleave(v, 0)
        mask = mask.to(device).repeat_interleave(v, 0)
        maps = [batch["plucker"]] + ([batch["position"], batch["normal"]] if inner.config.cond_in_channels == 12 else [])
        cond = camera_condition(*[x.flatten(0, 1) for x in maps]).to(device, dtype)
        keep_cond = (torch.rand(b) >= p(opts.condition_dropout)).to(device, dtype).repeat_interleave(v)
        cond = cond * keep_cond[:, None, None, None]
        x0 = images.flatten(0, 1) if vae is None else to_latents(vae, images.flatten(0, 1))
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), device=device).repeat_interleave(v)
        noisy = scheduler.add_noise(x0, noise, t)
        kwargs = {}
        if "ref" in inner.branches(inner.attention_names[0]).kinds:
            ref = batch["reference"].to(device, dtype)
            ref = ref * (torch.rand(b) >= p(opts.image_dropout)).to(device, dtype)[:, None, None, None]
            if vae is not None:   # the pipeline's encoding: the posterior mode, zeros for the null image
                ref = to_latents(vae, ref, sample=False)
            ref_states, ref_mask = tokens(captions)
            kwargs["ref_hidden_states"] = encode_reference(base, ref, ref_states.to(device, dtype),
                                                           encoder_attention_mask=ref_mask.to(device))
        pred = base(noisy, t, encoder_hidden_states=states, encoder_attention_mask=mask,
                    down_intrablock_additional_residuals=m(cond), cross_attention_kwargs=kwargs or None).sample
        return F.mse_loss(pred.float(), noise.float())

    return Recipe(adapter, dataset, loss_fn, train_cfg, collate_fn=_stack, name="mv-adapter", options=opts,
                  extra={"unet": unet})


def export_adapter(run_dir, to, dtype: torch.dtype) -> None:
    from genstudio.export import export_model
    from .attention import MVAdapter
    export_model(MVAdapter, run_dir, to, dtype)


adapter_recipe.export = export_adapter
