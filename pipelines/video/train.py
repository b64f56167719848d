"""`genstudio train vdt`: VDT on procedural physics clips with the unified mask-modelling mixture.

    genstudio train vdt --set preset='"S"' --set steps=1500 --output-dir runs/vdt-physics-S

Options (besides TrainConfig's): `VDTOptions` -- preset (tiny / S / M / B, see `VDT_CONFIGS`), size (32),
frames (16), kinds ("balls,digits"), prediction_type ("v_prediction"; or "epsilon", "sample"),
train_seed (0: the training stream of clips), eval_clips (8), eval_steps (10),
mixture (mask-mode weights, e.g. '{"predict": 2, "interpolate": 1}'; default: the paper's
`TRAINING_MIXTURE`), init_from (continue from a run / checkpoint of the same preset, e.g.
'"checkpoints/vdt-physics-M"'; the run's own steps, LR schedule and EMA start afresh).

Each batch draws its clips from an endless deterministic stream (`PhysicsClips`, seed
`train_seed`) and one mask per clip from VDT's mixture (`sample_training_mask`); the loss is the
masked diffusion loss (given positions shown clean, scored only where generated). Evaluation
uses clips of seed EVAL_SEED, which training never sees, and few-step DPM-Solver++ sampling.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from genstudio.diffusion import diffusion_loss, make_scheduler
from genstudio.train import Recipe, parse_config

from .data import EVAL_SEED, KINDS, PhysicsClips
from .sampling import sample_clips
from .vdt import VDT, VDT_CONFIGS, make_mask, sample_training_mask

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _kinds(value) -> tuple[str, ...]:
    kinds = tuple(s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be a comma-separated subset of {', '.join(KINDS)}; got {value!r}")
    return kinds


def _attention_for(device: torch.device):
    """On CPU, plain matmul-softmax attention: VDT's many short sequences (16 frames per patch
    position, 64 patches per frame) make the fused CPU kernel's backward ~1.5x slower per step.
    The choice is made at forward time; autograd records the math ops for the backward."""
    if device.type != "cpu":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.MATH)


def _copy_last_frame(known: torch.Tensor, num_known: int) -> torch.Tensor:
    """The prediction baseline: every future frame repeats the last given one. (B, T, C, H, W)."""
    out = known.clone()
    out[:, num_known:] = known[:, num_known - 1:num_known]
    return out


@torch.no_grad()
def evaluate_vdt(model: VDT, clips: torch.Tensor, num_known: int = 4, steps: int = 10) -> dict:
    """Prediction (first `num_known` frames given) and interpolation (4 evenly spaced frames given)
    on fixed clips (B, T, C, H, W) in [-1, 1]: MSE of the generated frames in [0, 1] pixels, for
    the model (DPM-Solver++, `steps` steps, seed 0) and the copy-last-frame baseline."""
    B, T, C, H, W = clips.shape
    device = next(model.parameters()).device
    clips = clips.to(device)
    metrics = {}
    for task, k in (("predict", num_known), ("interpolate", 4)):
        generate = make_mask(task, T, H, W, batch=B, num_known=k, device=device)
        known = torch.where(generate, torch.zeros_like(clips), clips)
        x, _ = sample_clips(model, known, generate, steps, "dpm", torch.Generator().manual_seed(0), progress=False)
        sel = generate.expand_as(clips)
        metrics[f"{task}_mse"] = float((((x - clips) / 2) ** 2)[sel].mean())
    baseline = _copy_last_frame(clips, num_known)
    metrics["copy_last_mse"] = float((((baseline - clips) / 2) ** 2)[:, num_known:].mean())
    return metrics


@dataclass
class VDTOptions:
    """`genstudio train vdt` options (besides TrainConfig's)."""
    preset: str = "S"                        # a VDT_CONFIGS name: tiny / S / M / B
    size: int = 32                           # frame side in pixels
    frames: int = 16                         # frames per clip
    kinds: tuple[str, ...] = KINDS           # which procedural clip kinds to train on ("balls,digits")
    prediction_type: str = "v_prediction"    # or "epsilon", "sample"
    train_seed: int = 0                      # seed of the endless training clip stream
    eval_clips: int = 8                      # evaluation clips (seed EVAL_SEED) scored at each save
    eval_steps: int = 10                     # DPM-Solver++ steps of the evaluation
    mixture: Optional[dict[str, float]] = None  # mask-mode weights; None: the paper's TRAINING_MIXTURE
    init_from: Optional[str] = None          # continue from these VDT weights (run, checkpoint or export; same preset)


def recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, VDTOptions, recipe="vdt", output_dir="runs/vdt", steps=1500, batch_size=16,
                                   lr=5e-4, warmup_steps=100, weight_decay=0.0, save_every=500, log_every=20)
    preset, size, frames, mixture = opts.preset, opts.size, opts.frames, opts.mixture
    if preset not in VDT_CONFIGS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(VDT_CONFIGS)}")
    kinds = _kinds(opts.kinds)
    prediction_type = opts.prediction_type
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}; got {prediction_type!r}")
    train_seed, eval_clips, eval_steps = opts.train_seed, opts.eval_clips, opts.eval_steps
    if mixture is not None:
        sample_training_mask(1, frames, size, size, mixture=mixture)  # unknown modes fail here, not at step 1

    model = VDT(sample_size=size, num_frames=frames, prediction_type=prediction_type, **VDT_CONFIGS[preset])
    if opts.init_from:
        from genstudio.export import init_weights
        opts.init_from = init_weights(model, opts.init_from, "vdt init_from")  # absolute: recorded in train_config.json
    print(f"[vdt] preset {preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{frames}x{size}x{size} clips of {'+'.join(kinds)}, {prediction_type}")
    # A stream of fresh clips: a million is more than any CPU run draws (the trainer shuffles
    # indices with randperm, so the length must stay modest).
    dataset = PhysicsClips(length=1_000_000, frames=frames, size=size, seed=train_seed, kinds=kinds)
    eval_set = PhysicsClips(length=eval_clips, frames=frames, size=size, seed=EVAL_SEED, kinds=kinds)
    eval_batch = torch.stack([eval_set[i]["video"] for i in range(eval_clips)])
    scheduler = make_scheduler("ddpm", num_train_timesteps=model.config.num_train_timesteps,
                               prediction_type=prediction_type, beta_schedule=model.config.beta_schedule)

    def loss_fn(m, batch):
        x0 = batch["video"]
        B, T, _, H, W = x0.shape
        generate = sample_training_mask(B, T, H, W, device=x0.device, mixture=mixture)
        with _attention_for(x0.device):
            loss = diffusion_loss(m, x0, scheduler, prediction_type, mask=generate, generate_mask=generate)
        return loss, {"generated_share": float(generate.float().mean())}

    return Recipe(model, dataset, loss_fn, train_cfg,
                  eval_fn=lambda m: evaluate_vdt(m, eval_batch, num_known=frames // 4, steps=eval_steps),
                  extra={"eval_batch": eval_batch, "scheduler": scheduler}, name="vdt", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) VDT weights in `dtype`."""
    from genstudio.export import export_model
    export_model(VDT, run_dir, to, dtype)

