"""Diffusion training loss and sampling on top of diffusers schedulers.

One generic model interface serves DiT, a video DiT and UNet wrappers alike:

    model_fn(x_t, t, **model_kwargs) -> prediction        # same shape as x_t, or 2x channels

where `t` is a (B,) tensor of scheduler timesteps. A prediction with twice the channels of
`x_t` (DiT's `learn_sigma`) is cut to its first half, the epsilon / v part.

* `diffusion_loss` / `DiffusionObjective`: epsilon or v-prediction MSE, with optional masked
  diffusion (inpainting / frame conditioning): `mask` 1 = generate, 0 = known; the model sees
  known positions clean and is scored only where mask = 1.
* `sample`: the reverse loop for DDIM, DPM-Solver++, Euler or DDPM, with classifier-free
  guidance, SIMS negative-model guidance (`guided_prediction`) and known-value re-insertion.
* `make_scheduler`: the schedulers above with consistent settings.

Training noises with the DDPM forward process (`scheduler.add_noise` of DDPM / DDIM / DPM);
use `make_scheduler("ddpm")` for training and any of them for sampling.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from .limits import check_time

ModelFn = Callable[..., torch.Tensor]

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
}


# ---- Schedulers ----

def make_scheduler(
    name: str = "ddim",
    num_train_timesteps: int = 1000,
    prediction_type: str = "epsilon",
    beta_schedule: str = "linear",
    **kwargs,
):
    """A diffusers scheduler by short name: "ddim", "dpm" (DPM-Solver++ 2M), "ddpm" or "euler".

    Defaults follow DiT/ADM: linear betas 1e-4..0.02 over 1000 steps, no sample clipping (latents
    are not bounded to [-1, 1]). Extra keyword arguments go to the scheduler's constructor.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}")
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")
    config = dict(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
    )
    if name in ("ddpm", "ddim"):
        config["clip_sample"] = False
    if name == "dpm":
        config.update(algorithm_type="dpmsolver++", solver_order=2)
    return SCHEDULERS[name](**{**config, **kwargs})


# ---- Helpers ----

def drop_learned_sigma(prediction: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Keep the first half of the one dimension where `prediction` is twice `like` (channels of
    (B, C, H, W) or (B, T, C, H, W)); pass through when the shapes already agree."""
    if prediction.shape == like.shape:
        return prediction
    if prediction.ndim == like.ndim:
        diff = [d for d in range(like.ndim) if prediction.shape[d] != like.shape[d]]
        if len(diff) == 1 and prediction.shape[diff[0]] == 2 * like.shape[diff[0]]:
            return prediction.narrow(diff[0], 0, like.shape[diff[0]])
    raise ValueError(
        f"model output has shape {tuple(prediction.shape)}; expected {tuple(like.shape)} "
        "or twice the channels (learn_sigma)"
    )


def _velocity(scheduler, x0, noise, timesteps):
    """v = sqrt(a_t) * eps - sqrt(1 - a_t) * x0 (Salimans & Ho), for schedulers without get_velocity."""
    if hasattr(scheduler, "get_velocity"):
        return scheduler.get_velocity(x0, noise, timesteps)
    alphas = scheduler.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)[timesteps.to(x0.device)]
    alphas = alphas.reshape(-1, *([1] * (x0.ndim - 1)))
    return alphas.sqrt() * noise - (1 - alphas).sqrt() * x0


def _target(scheduler, x0, noise, timesteps, prediction_type: str) -> torch.Tensor:
    """What a model of `prediction_type` is trained to output at x_t = add_noise(x0, noise, timesteps)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return _velocity(scheduler, x0, noise, timesteps)
    if prediction_type == "sample":
        return x0
    raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")


def _alphas_like(scheduler, timesteps, x: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod at `timesteps` (float32), shaped to broadcast over x's per-sample dimensions."""
    a = scheduler.alphas_cumprod.to(x.device)[torch.as_tensor(timesteps, device=x.device).long()].float()
    return a.reshape(-1, *([1] * (x.ndim - 1)))


def convert_prediction(scheduler, x_t, timesteps, prediction, from_type: str, to_type: str) -> torch.Tensor:
    """A prediction of one kind (epsilon, v or x0) at x_t rewritten as another: e.g. a v-prediction model
    serving steps of an epsilon-prediction sampler (expert denoisers of different parametrisations)."""
    if from_type == to_type:
        return prediction
    x0 = predicted_x0(scheduler, x_t, timesteps, prediction, from_type)
    a = _alphas_like(scheduler, timesteps, x_t)
    noise = (x_t.float() - a.sqrt() * x0) / (1 - a).sqrt()
    return _target(scheduler, x0, noise, timesteps, to_type).to(prediction.dtype)


def predicted_x0(scheduler, x_t, timesteps, prediction, prediction_type: str = "epsilon") -> torch.Tensor:
    """The x0 a prediction (epsilon, v or x0) implies at x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"{type(scheduler).__name__} has no alphas_cumprod: use ddpm, ddim or dpm")
    a = _alphas_like(scheduler, timesteps, x_t)
    x_t, prediction = x_t.float(), prediction.float()
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * prediction) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * prediction
    if prediction_type == "sample":
        return prediction
    raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")


def _generate_mask(mask, like) -> torch.Tensor:
    """Boolean mask broadcast to `like`: True where values are to be generated."""
    mask = torch.as_tensor(mask, device=like.device)
    try:
        return (mask > 0.5).expand_as(like) if mask.dtype != torch.bool else mask.expand_as(like)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the data shape {tuple(like.shape)}"
        ) from None


# ---- Training loss ----

def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str = "epsilon",
                    floor: float = 0.0) -> torch.Tensor:
    """Min-SNR-gamma loss weights per sample (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR
    Weighting Strategy"): the x0-MSE weight min(SNR, gamma), written for the model's target, i.e.
    min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v, min(SNR, gamma) for x0.
    It stops the many low-noise steps from dominating, which speeds up convergence.
    floor > 0: the x0 weight is clamp(SNR, floor, gamma) instead, so the high-noise steps, where the layout is
    decided, keep a weight of at least `floor` (floor 1 is the truncated-SNR weighting of Salimans & Ho 2022,
    capped at gamma); meant for v or x0 prediction (for epsilon it grows as 1 / SNR at high noise)."""
    if not gamma > 0:
        raise ValueError(f"min-SNR gamma must be > 0, got {gamma}")
    if not 0 <= floor <= gamma:
        raise ValueError(f"the SNR floor must be between 0 and gamma ({gamma}), got {floor}")
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()].float()
    snr = abar / (1 - abar)
    clipped = snr.clamp(min=float(floor), max=float(gamma))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}")


def diffusion_loss(
    model_fn: ModelFn,
    x0: torch.Tensor,
    scheduler,
    prediction_type: str = "epsilon",
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    snr_gamma: float = 0.0,
    self_condition: bool = False,
    snr_floor: float = 0.0,
    timestep_range: tuple[int, int] | None = None,
    **model_kwargs,
) -> torch.Tensor:
    """Denoising MSE at uniformly random timesteps.

    prediction_type: "epsilon" (target = noise), "v_prediction" (target = v) or "sample" (x0).
    mask: broadcastable to x0; 1 = unknown (noised, scored), 0 = known (shown clean, not
    scored). The loss is the mean over masked elements only.
    timesteps / noise: fixed values instead of random ones (tests, evaluation).
    snr_gamma: > 0 weights each sample's MSE by Min-SNR-gamma (`min_snr_weights`); 0 = plain MSE.
    snr_floor: with snr_gamma, the lowest x0 weight (`min_snr_weights`' floor).
    self_condition: for a random half of the batch the model first predicts without gradient and
        then gets that x0 estimate as `x_self_cond` (Chen et al. 2022); the other half gets zeros.
    timestep_range: (low, high): random timesteps only in [low, high), to train an expert denoiser on
        its own interval (eDiff-I, Balaji et al. 2022); None = all of [0, num_train_timesteps).
    """
    if (snr_gamma > 0 or self_condition) and mask is not None:
        raise ValueError("snr_gamma and self_condition are not supported with a mask")
    batch = x0.shape[0]
    if timesteps is None:
        low, high = timestep_range or (0, scheduler.config.num_train_timesteps)
        if not 0 <= low < high <= scheduler.config.num_train_timesteps:
            raise ValueError(f"timestep_range {timestep_range} is not inside "
                             f"[0, {scheduler.config.num_train_timesteps})")
        timesteps = torch.randint(
            low, high, (batch,),
            generator=generator, device=generator.device if generator is not None else x0.device,
        )
    timesteps = timesteps.to(x0.device).long()
    if noise is None:
        noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    target = _target(scheduler, x0, noise, timesteps, prediction_type)

    generate = None
    if mask is not None:
        generate = _generate_mask(mask, x0)
        x_t = torch.where(generate, x_t, x0)
    if self_condition:
        zeros = torch.zeros_like(x_t)
        with torch.no_grad():
            first = drop_learned_sigma(model_fn(x_t, timesteps, x_self_cond=zeros, **model_kwargs), x0)
            estimate = predicted_x0(scheduler, x_t, timesteps, first, prediction_type).to(x_t.dtype)
        use = torch.rand(batch, device=x0.device, generator=generator) < 0.5
        model_kwargs["x_self_cond"] = torch.where(use.reshape(-1, *([1] * (x0.ndim - 1))), estimate, zeros)
    prediction = drop_learned_sigma(model_fn(x_t, timesteps, **model_kwargs), x0).float()
    if generate is None and snr_gamma > 0:
        per_sample = (prediction - target.float()).pow(2).flatten(1).mean(1)
        return (per_sample * min_snr_weights(scheduler, timesteps, snr_gamma, prediction_type,
                                                     snr_floor)).mean()
    if generate is None:
        return F.mse_loss(prediction, target.float())
    # where(), not multiply: NaN/inf predictions at known positions must not leak into the loss.
    squared = torch.where(generate, (prediction - target.float()) ** 2, torch.zeros_like(prediction))
    return squared.sum() / generate.sum().clamp(min=1)


class DiffusionObjective:
    """`diffusion_loss` bound to a scheduler and prediction type, for training recipes:

        objective = DiffusionObjective(make_scheduler("ddpm"))
        loss = objective(model, latents, y=labels)
    """

    def __init__(self, scheduler=None, prediction_type: str = "epsilon"):
        self.scheduler = scheduler if scheduler is not None else make_scheduler("ddpm", prediction_type=prediction_type)
        self.prediction_type = prediction_type

    def __call__(self, model_fn: ModelFn, x0, mask=None, generator=None, **model_kwargs) -> torch.Tensor:
        return diffusion_loss(
            model_fn, x0, self.scheduler, self.prediction_type, mask=mask, generator=generator, **model_kwargs
        )


# ---- Guidance ----

@torch.no_grad()
def denoising_errors(model_fn: ModelFn, x0: torch.Tensor, scheduler, timesteps, prediction_type: str = "epsilon",
                     generator: torch.Generator | None = None, **model_kwargs) -> torch.Tensor:
    """Per-sample denoising MSE of `x0` at each of `timesteps` (one shared noise draw per timestep for the
    whole batch, so that samples compare on equal terms): (B,) averaged over the timesteps. Lower = the model
    finds x0 more likely under its conditioning (the ELBO's terms up to weights; Li et al. 2023 use the
    drop of this error when the condition is given as a zero-shot classifier)."""
    errors = []
    for t in timesteps:
        noise = randn_tensor((1, *x0.shape[1:]), generator=generator, device=x0.device, dtype=x0.dtype).expand_as(x0)
        tt = torch.full((x0.shape[0],), int(t), device=x0.device, dtype=torch.long)
        x_t = scheduler.add_noise(x0, noise, tt)
        target = _target(scheduler, x0, noise, tt, prediction_type)
        pred = drop_learned_sigma(model_fn(x_t, tt, **model_kwargs), x0).float()
        errors.append((pred - target.float()).pow(2).flatten(1).mean(1))
    return torch.stack(errors, 1).mean(1)


def guided_prediction(
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    negative: torch.Tensor | None = None,
    negative_guidance: float = 0.0,
) -> torch.Tensor:
    """Combine model predictions (epsilon, v or x0 alike, all linear in the score).

    Classifier-free guidance: p = uncond + s * (cond - uncond)   (s = 1: cond, returned as is)
    SIMS negative-model guidance: p = (1 + w) * p - w * negative  (w = 0: p, returned as is)
    """
    prediction = cond
    if uncond is not None and guidance_scale != 1.0:
        prediction = uncond + guidance_scale * (cond - uncond)
    if negative is not None and negative_guidance != 0.0:
        prediction = (1 + negative_guidance) * prediction - negative_guidance * negative
    return prediction


def _batch_kwargs(cond: dict, uncond: dict, batch: int) -> dict | None:
    """Concatenate conditional and unconditional kwargs along the batch for one model call;
    None when some argument cannot be batched (then the caller makes two calls)."""
    merged = {}
    for key in cond.keys() | uncond.keys():
        a, b = cond.get(key), uncond.get(key)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
            if a.ndim == 0 or b.ndim == 0 or a.shape[0] != batch or a.shape != b.shape:
                return None
            merged[key] = torch.cat([a, b])
        elif a is b and not isinstance(a, torch.Tensor):
            merged[key] = a  # shared non-tensor option (or None in both)
        else:
            return None
    return merged


def _predict(model_fn, x, t, like, kwargs):
    return drop_learned_sigma(model_fn(x, t, **kwargs), like).to(like.dtype)


def _cfg_predictions(model_fn, x, t, model_kwargs, uncond_kwargs):
    """(cond, uncond) predictions, batched into a single call when the kwargs allow it."""
    uncond_kwargs = {**model_kwargs, **uncond_kwargs}
    batch = x.shape[0]
    merged = _batch_kwargs(model_kwargs, uncond_kwargs, batch)
    if merged is not None:
        both = _predict(model_fn, torch.cat([x, x]), torch.cat([t, t]), torch.cat([x, x]), merged)
        return both[:batch], both[batch:]
    return _predict(model_fn, x, t, x, model_kwargs), _predict(model_fn, x, t, x, uncond_kwargs)


# ---- Sampling ----

@torch.no_grad()
def sample(
    model_fn: ModelFn,
    shape,
    scheduler,
    num_inference_steps: int = 25,
    generator: torch.Generator | None = None,
    guidance_scale: float = 1.0,
    uncond_kwargs: dict | None = None,
    negative_model_fn: ModelFn | None = None,
    negative_guidance: float = 0.0,
    known: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    progress: bool = True,
    device=None,
    dtype: torch.dtype = torch.float32,
    self_condition: bool = False,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
    **model_kwargs,
) -> torch.Tensor:
    """Run the reverse diffusion from noise of `shape`; returns the final sample x0.

    guidance_scale / uncond_kwargs: classifier-free guidance; `uncond_kwargs` overrides
        `model_kwargs` for the unconditional branch (e.g. {"y": null_labels}).
    negative_model_fn / negative_guidance: SIMS guidance away from an auxiliary model (trained
        on synthetic data): p = (1 + w) * p_main - w * p_aux; the auxiliary model gets the
        conditional kwargs.
    known / mask: inpainting or frame conditioning. mask 1 = generate, 0 = keep `known`. The
        model sees the known values clean at every step (as trained by `diffusion_loss`) and
        the returned sample equals `known` bit for bit there.
    self_condition: pass each step's (guided) x0 estimate to the next as `x_self_cond` (zeros at
        the first step), for models trained with `diffusion_loss(self_condition=True)`.
    init / strength: SDEdit (Meng et al. 2022): start from `init` (shape `shape`) noised to the level of
        the last round(strength * num_inference_steps) steps, and run only those; strength 1 = from noise.
    """
    if (known is None) != (mask is None):
        raise ValueError("known and mask go together: pass both or neither")
    if guidance_scale != 1.0 and uncond_kwargs is None:
        raise ValueError("guidance_scale != 1 needs uncond_kwargs (e.g. {'y': null_class_labels})")
    if negative_guidance != 0.0 and negative_model_fn is None:
        raise ValueError("negative_guidance != 0 needs negative_model_fn")
    shape = tuple(shape)
    if device is None:
        device = known.device if known is not None else torch.device("cpu")
    generate = None
    if known is not None:
        if tuple(known.shape) != shape:
            raise ValueError(f"known has shape {tuple(known.shape)}; expected the sample shape {shape}")
        known = known.to(device=device, dtype=dtype)
        generate = _generate_mask(mask, known)

    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    if init is not None and tuple(init.shape) != shape:
        raise ValueError(f"init has shape {tuple(init.shape)}; expected the sample shape {shape}")
    scheduler.set_timesteps(num_inference_steps, device=device)
    x = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype) * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if init is not None:
        start = num_inference_steps - max(1, round(strength * num_inference_steps))
        timesteps = timesteps[start * scheduler.order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start * scheduler.order)
        x = scheduler.add_noise(init.to(device=device, dtype=dtype), x / scheduler.init_noise_sigma, timesteps[:1])
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    if self_condition:
        if not hasattr(scheduler, "alphas_cumprod") or isinstance(scheduler, EulerDiscreteScheduler):
            raise ValueError("self_condition needs a ddpm, ddim or dpm scheduler")
        model_kwargs = {**model_kwargs, "x_self_cond": torch.zeros_like(x)}
    for t in tqdm(timesteps, desc="sampling", disable=not progress, leave=False):
        check_time()  # --max-seconds
        if generate is not None:
            x = torch.where(generate, x, known)
        model_input = scheduler.scale_model_input(x, t)
        if generate is not None:
            model_input = torch.where(generate, model_input, known)
        t_batch = t.expand(shape[0]).to(device)
        if guidance_scale != 1.0:
            cond, uncond = _cfg_predictions(model_fn, model_input, t_batch, model_kwargs, uncond_kwargs)
        else:
            cond, uncond = _predict(model_fn, model_input, t_batch, x, model_kwargs), None
        negative = None
        if negative_guidance != 0.0:
            negative = _predict(negative_model_fn, model_input, t_batch, x, model_kwargs)
        prediction = guided_prediction(cond, uncond, guidance_scale, negative, negative_guidance)
        if self_condition:
            model_kwargs["x_self_cond"] = predicted_x0(scheduler, x, t_batch, prediction,
                                                       scheduler.config.prediction_type).to(x.dtype)
        x = scheduler.step(prediction, t, x, **step_kwargs).prev_sample
    if generate is not None:
        x = torch.where(generate, x, known)
    return x
