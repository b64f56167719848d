"""Class-conditional image generation with a latent DiT (and SIMS guidance when the checkpoint has it).

    pipe = DiTImagePipeline.from_pretrained("dit-glyphs-S")
    out = pipe(["A", "g", 7], num_images_per_class=4, guidance_scale=2.0, seed=0)
    out.save("grid.png")                       # a grid: one row per class
    out.images                                  # PIL images, class by class

A checkpoint folder holds transformer/ (the core DiT), vae/ (a diffusers AutoencoderKL with its
scaling factor), scheduler/ and model_index.json (class names). A SIMS checkpoint (`genstudio sims`)
adds negative_transformer/: the auxiliary model fine-tuned on the base model's own samples, and
sampling follows s = (1 + w) s_base - w s_aux (`sims_guidance` = w; 0 turns it off), on top of
classifier-free guidance; `sims_mode="weights"` merges the two into (1 + w) theta_base - w theta_aux
once instead (no extra evaluations per step).

Official weights: `DiTImagePipeline.from_official("DiT-XL-2-256x256.pt", vae="stabilityai/sd-vae-ft-ema")`
(ImageNet labels 0-999).
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from genstudio.diffusion import make_scheduler, sample
from genstudio.dit import DiT
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, save_all
from genstudio.render import InputError
from genstudio.sims import NEGATIVE, merge_weights, read_sims
from genstudio.vq4dit import load_model

from . import DEFAULT_MODEL

SCHEDULERS = ("ddim", "dpm", "euler", "ddpm")
MAX_IMAGES = 1024        # one call's bound
OFFICIAL = {  # facebookresearch/DiT release files (input_size 32 / 64 latents of sd-vae-ft-ema)
    "DiT-XL-2-256": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
    "DiT-XL-2-512": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt",
}
OFFICIAL_VAE = "stabilityai/sd-vae-ft-ema"
MAX_STEPS = 1000


@dataclass
class ImageOutput(PipelineOutput):
    images: list                  # PIL images, in the order of `labels`
    labels: list[int]
    class_names: list[str]
    nfe: int = 0                  # network evaluations per image
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def grid(self, columns: int | None = None) -> Image.Image:
        """One row per class (when each class has the same count), else a near-square grid."""
        n = len(self.images)
        if columns is None:
            per_class = [self.labels.count(label) for label in dict.fromkeys(self.labels)]
            same = len(set(per_class)) == 1 and per_class[0] > 1
            columns = per_class[0] if same else math.ceil(math.sqrt(n))
        rows = math.ceil(n / columns)
        w, h = self.images[0].size
        sheet = Image.new(self.images[0].mode, (columns * w, rows * h), "white")
        for i, im in enumerate(self.images):
            sheet.paste(im, ((i % columns) * w, (i // columns) * h))
        return sheet

    def _write(self, path: Path):
        """path.png: the grid; a folder (no suffix): one PNG per image, named class_index.png."""
        if path.suffix:
            return save_all([(path, lambda tmp: self.grid().save(tmp, format="PNG"))])[0]
        names = [f"{self.class_names[i]}_{k:03d}.png" for k, i in enumerate(self.labels)]
        path.mkdir(parents=True, exist_ok=True)
        return save_all([(path / name, lambda tmp, im=im: im.save(tmp, format="PNG"))
                         for name, im in zip(names, self.images)])


class DiTImagePipeline(DiffusionPipeline, PipelineMixin):
    """DiT + AutoencoderKL + scheduler (+ SIMS's auxiliary DiT): class labels -> images."""

    model_cpu_offload_seq = "transformer->vae"
    task, paper, default_model = "generate", "DiT", DEFAULT_MODEL
    output_suffix = ".png"  # what `genstudio batch` writes
    checkpoint_classes = ("DiTImagePipeline", "DiT")
    compress_component = "transformer"
    _optional_components = ["negative_transformer"]

    def __init__(self, transformer: DiT, vae, scheduler, negative_transformer: DiT | None = None,
                 id2label: dict | None = None, sims_guidance: float = 0.0):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler,
                              negative_transformer=negative_transformer)
        n = transformer.num_classes
        self.id2label = {int(k): str(v) for k, v in (id2label or {i: str(i) for i in range(n)}).items()}
        self.sims_guidance = sims_guidance  # the checkpoint's default w
        self.name = None
        self.precision = None

    # ---- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, torch_dtype=None, device: str = "auto",
                        precision: str | None = "auto", dtype=None, **kwargs) -> "DiTImagePipeline":
        """A checkpoint name, a pipeline folder (transformer/, vae/, model_index.json) or hub id."""
        return PipelineMixin.from_pretrained.__func__(cls, pretrained_model_name_or_path, device=device,
                                                      dtype=dtype or torch_dtype, precision=precision, **kwargs)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "DiTImagePipeline":
        from diffusers import AutoencoderKL, DDIMScheduler
        index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").exists() else {}
        transformer = load_model(DiT, folder / "transformer", dtype).eval()
        negative = load_model(DiT, folder / NEGATIVE, dtype).eval() if (folder / NEGATIVE).is_dir() else None
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype).eval()
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler") if (folder / "scheduler").is_dir() \
            else make_scheduler("ddim")
        return cls(transformer, vae, scheduler, negative, index.get("id2label"),
                   float(read_sims(folder).get("guidance", 0.0)))

    @classmethod
    def from_official(cls, checkpoint: str | os.PathLike, vae: str | os.PathLike = OFFICIAL_VAE,
                      device: str = "auto", precision: str = "auto") -> "DiTImagePipeline":
        """facebookresearch/DiT weights + a diffusers AutoencoderKL: `checkpoint` is a file
        (`DiT-XL-2-256x256.pt`, a plain state dict read with weights_only, or .safetensors) or one of
        OFFICIAL (downloaded once into the torch hub cache; needs the network); `vae` a hub id or
        folder. ImageNet class labels 0-999."""
        from diffusers import AutoencoderKL

        from genstudio.device import resolve_device
        from genstudio.hub import CheckpointNotFound
        path = Path(checkpoint)
        if str(checkpoint) in OFFICIAL:
            path = _download_official(OFFICIAL[str(checkpoint)])
        elif not path.is_file():
            raise CheckpointNotFound(f"{checkpoint} is neither a DiT checkpoint file nor one of {', '.join(OFFICIAL)}")
        try:
            transformer = DiT.from_facebook_checkpoint(path).eval()
            autoencoder = AutoencoderKL.from_pretrained(vae).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise CheckpointNotFound(f"could not load the official DiT from {path} with VAE {vae} ({first})") from None
        return cls(transformer, autoencoder, make_scheduler("ddim")).ready(resolve_device(device), precision, checkpoint)

    # ---- helpers
    def class_index(self, label) -> int:
        """A class by number (int or digit string) or by name (e.g. 'A')."""
        names = {v: k for k, v in self.id2label.items()}
        if isinstance(label, str) and label in names:
            return names[label]
        try:
            index = int(label)
        except (TypeError, ValueError):
            shown = ", ".join(list(names)[:70])
            raise InputError(f"unknown class {label!r}; classes: {shown}") from None
        if not 0 <= index < self.transformer.num_classes:
            raise InputError(f"class {index} is out of range 0-{self.transformer.num_classes - 1}")
        return index

    def _scheduler(self, name: str | None):
        if name is None:
            return self.scheduler.__class__.from_config(self.scheduler.config)
        if name not in SCHEDULERS:
            raise InputError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
        return make_scheduler(name, num_train_timesteps=self.scheduler.config.num_train_timesteps,
                              beta_schedule=self.scheduler.config.beta_schedule)

    def sims_models(self, sims_guidance: float, mode: str):
        """(main model, negative model or None, w for sampling) for a SIMS setting."""
        if sims_guidance == 0.0:
            return self.transformer, None, 0.0
        if self.negative_transformer is None:
            raise InputError("sims_guidance needs a SIMS checkpoint (with negative_transformer/): "
                             "make one with `genstudio sims --base CHECKPOINT`")
        if mode == "weights":
            return merge_weights(self.transformer, self.negative_transformer, sims_guidance), None, 0.0
        if mode != "guidance":
            raise InputError(f"sims_mode must be 'guidance' or 'weights', got {mode!r}")
        return self.transformer, self.negative_transformer, sims_guidance

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        scale = self.vae.config.scaling_factor
        x = self.vae.decode(latents.to(self.vae.dtype) / scale).sample.float().clamp(-1, 1)
        pixels = ((x + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        if pixels.shape[1] == 1:  # our glyphs: ink on black -> black ink on white, as a user expects
            return [Image.fromarray(255 - p[0]) for p in pixels]
        return [Image.fromarray(p.transpose(1, 2, 0)) for p in pixels]

    # ---- generation
    @torch.no_grad()
    def __call__(self, class_labels, num_images_per_class: int = 1, guidance_scale: float = 2.0,
                 num_inference_steps: int = 25, scheduler: str | None = None, sims_guidance: float | None = None,
                 sims_mode: str = "guidance", seed: int | None = SEED_DEFAULT, generator=None,
                 progress: bool | None = None, output_type: str = "pil", batch_size: int = 256) -> ImageOutput:
        """Generate `num_images_per_class` images for each of `class_labels` (names or numbers).
        guidance_scale: classifier-free guidance (1 = off). sims_guidance: w of SIMS (None = the
        checkpoint's default, 0 = off). output_type "latent" keeps latents in `images`."""
        t0 = time.perf_counter()
        # 1. inputs
        labels = [self.class_index(c) for c in (class_labels if isinstance(class_labels, (list, tuple))
                                                 else [class_labels])]
        if not labels:
            raise InputError("no class given")
        if not 1 <= num_images_per_class or len(labels) * num_images_per_class > MAX_IMAGES:
            raise InputError(f"between 1 and {MAX_IMAGES} images per call; asked for "
                             f"{len(labels)} x {num_images_per_class}")
        if not 1 <= num_inference_steps <= MAX_STEPS:
            raise InputError(f"num_inference_steps must be between 1 and {MAX_STEPS}, got {num_inference_steps}")
        if guidance_scale < 1.0:
            raise InputError(f"guidance_scale must be >= 1 (1 = no classifier-free guidance), got {guidance_scale}")
        w = self.sims_guidance if sims_guidance is None else float(sims_guidance)
        model, negative, w_sample = self.sims_models(w, sims_mode)
        labels = [c for c in labels for _ in range(num_images_per_class)]
        generator, seed = self.make_generator(seed, generator)
        # 2. sampling, in batches of `batch_size`
        t = self.transformer
        shape = (t.in_channels, *[g * t.patch_size for g in t.grid_size])
        device = self.transformer.device
        latents = []
        with self.autocast():
            for i in range(0, len(labels), batch_size):
                y = torch.tensor(labels[i:i + batch_size], device=device)
                counter = {"main": 0, "negative": 0}

                def model_fn(x, tt, **kw):
                    counter["main"] += 1
                    return model(x.to(model.dtype), tt, **kw)

                def negative_fn(x, tt, **kw):
                    counter["negative"] += 1
                    return negative(x.to(negative.dtype), tt, **kw)

                cfg = dict(guidance_scale=guidance_scale, uncond_kwargs={"y": torch.full_like(y, t.null_class)}) \
                    if guidance_scale != 1.0 else {}
                latents.append(sample(model_fn, (len(y), *shape), self._scheduler(scheduler), num_inference_steps,
                                      generator=generator, negative_model_fn=negative_fn if negative is not None else None,
                                      negative_guidance=w_sample, progress=self.progress_enabled(progress),
                                      device=device, y=y, **cfg).float())
        latents = torch.cat(latents)
        # 3. decoding; network evaluations per image: CFG runs cond + uncond (one batched call)
        nfe = counter["main"] * (2 if guidance_scale != 1.0 else 1) + counter["negative"]
        images = list(latents) if output_type == "latent" else self.decode(latents)
        names = [self.id2label.get(i, str(i)) for i in range(t.num_classes)]
        return ImageOutput(images, labels, names, nfe, time.perf_counter() - t0,
                           metadata=self.metadata(seed, num_inference_steps, t0, nfe=nfe, guidance_scale=guidance_scale,
                                                  sims_guidance=w, sims_mode=sims_mode if w else None))

    # ---- SIMS (genstudio/sims.py): the synthetic set and the auxiliary model's fine-tuning
    def synthetic_dataset(self, num_items: int, num_inference_steps: int, generator, guidance_scale: float = 1.0,
                          sims_guidance: float = 0.0, batch_size: int = 256):
        """`num_items` latents sampled by this model, classes in turn (balanced), as {"latent", "label"}
        items: what the auxiliary model trains on. guidance_scale 1, sims_guidance 0 = the model's own
        distribution."""
        from genstudio.train import TensorDictDataset
        n = self.transformer.num_classes
        labels = [i % n for i in range(num_items)]
        latents = []
        for start in range(0, num_items, MAX_IMAGES):  # one call's bound; the generator carries on
            out = self(labels[start:start + MAX_IMAGES], guidance_scale=guidance_scale, generator=generator,
                       num_inference_steps=num_inference_steps, output_type="latent", batch_size=batch_size,
                       sims_guidance=sims_guidance)
            latents += out.images
        return TensorDictDataset(latent=torch.stack(latents).cpu(), label=torch.tensor(labels))

    def finetune_recipe(self, dataset, config):
        """A copy of the base DiT trained with its own objective (epsilon MSE, label dropout) on `dataset`."""
        from genstudio.train import Recipe

        from .models import latent_loss
        model = copy.deepcopy(self.transformer).float().train()
        return Recipe(model, dataset, latent_loss(make_scheduler("ddpm")), config, name="sims-finetune")

    # ---- `genstudio compress` calibration (VQ4DiT)
    def calibration_samples(self, num_samples: int, num_inference_steps: int, generator):
        classes = torch.randint(0, self.transformer.num_classes, (num_samples,), generator=generator).tolist()
        return self(classes, num_inference_steps=num_inference_steps, generator=generator, progress=False,
                    output_type="latent").images


def _download_official(url: str) -> Path:
    """The release file in torch's hub cache, downloaded on first use (a clear error offline)."""
    from genstudio.hub import CheckpointNotFound, is_offline
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    if is_offline():
        raise CheckpointNotFound(f"{target.name} is not in {target.parent} and downloads are off (HF_HUB_OFFLINE); "
                                 f"download {url} and pass its path")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(target), progress=True)
    except Exception as e:  # no network, proxy, HTTP error
        raise CheckpointNotFound(f"could not download {url} ({type(e).__name__}: {str(e)[:200]}); download it "
                                 "yourself and pass its path") from None
    return target
