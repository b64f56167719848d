"""Sampling a VDT: the sampler on the model's training noise schedule and the masked denoising loop.

Shared by inference (`pipeline.py`), the recipe's evaluation (`train.py`) and the benchmark
(`bench.py`), so none of them imports another.
"""
from __future__ import annotations

import torch

from genstudio.diffusion import make_scheduler, sample
from genstudio.render import InputError

from .vdt import VDT

SCHEDULERS = ("dpm", "ddim", "euler", "ddpm")


def scheduler_for(model: VDT, name: str = "dpm"):
    """A fresh sampler `name` on the noise schedule the model was trained with. The VDT works on
    pixels in [-1, 1], so each step's x0 estimate is clipped to that range where the sampler
    supports it (DDPM's clip_sample; DPM-Solver++'s thresholding, which with sample_max_value=1
    is the same clip), as pixel-space DDPM does; the core's default leaves latents unclipped."""
    if name not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    c = model.config
    clip = {"ddim": dict(clip_sample=True), "ddpm": dict(clip_sample=True),
            "dpm": dict(thresholding=True, sample_max_value=1.0)}.get(name, {})
    return make_scheduler(name, num_train_timesteps=c.num_train_timesteps, prediction_type=c.prediction_type,
                          beta_schedule=c.beta_schedule, **clip)


def sample_clips(model: VDT, known: torch.Tensor, generate: torch.Tensor, num_inference_steps: int = 25,
                 scheduler="dpm", generator: torch.Generator | None = None,
                 progress: bool = True, negative_model: VDT | None = None,
                 negative_guidance: float = 0.0) -> tuple[torch.Tensor, int]:
    """Denoise a batch (B, T, C, H, W) where `generate` (B, T, 1, H, W) is True; the rest stays
    `known` bit for bit. `scheduler`: a name (SCHEDULERS) or a diffusers scheduler. With
    `negative_model` and w = `negative_guidance`, SIMS: (1 + w) * model - w * negative_model.
    Returns (clips in [-1, 1] float32, number of model evaluations)."""
    if num_inference_steps < 1:
        raise InputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if isinstance(scheduler, str):
        sched = scheduler_for(model, scheduler)
    else:  # a scheduler object: a fresh copy, since set_timesteps/step keep state
        sched = scheduler.__class__.from_config(scheduler.config)
    device = next(model.parameters()).device
    generate = generate.to(device)
    calls = 0

    def model_fn(x, t):
        nonlocal calls
        calls += 1
        return model(x, t, generate_mask=generate)

    def negative_fn(x, t):
        nonlocal calls
        calls += 1
        return negative_model(x, t, generate_mask=generate)

    use_negative = negative_model is not None and negative_guidance != 0.0
    x = sample(model_fn, known.shape, sched, num_inference_steps, generator=generator,
               known=known.to(device), mask=generate.expand_as(known), progress=progress, device=device,
               negative_model_fn=negative_fn if use_negative else None,
               negative_guidance=negative_guidance if use_negative else 0.0)
    return x.float().clamp(-1, 1), calls
