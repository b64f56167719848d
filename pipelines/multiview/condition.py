"""Camera condition encoder and the noise-schedule shift of MV-Adapter.

WHERE THE CAMERA ENTERS (reference `pipeline_mvadapter_*_sd.py`): the per-view condition image
(Plücker map, or position + normal maps for geometry guidance) goes through a diffusers
`T2IAdapter` (in_channels 6, channels = the UNet's block_out_channels, num_res_blocks =
layers_per_block, downscale_factor 8 for SD2.1's VAE; "full_adapter_xl" with factor 16 for SDXL).
Its features, times a conditioning scale, are handed to the UNet as
`down_intrablock_additional_residuals`: one per down block, added after the block's last
resnet/attention layer, before its downsampler. The UNet pops from that list, so every call needs
a fresh one (`camera_residuals`).

NOISE SHIFT (reference `schedulers/scheduling_shift_snr.py`, mode "interpolated", scale 8, used in
training and sampling): with SNR(t) = abar_t / (1 - abar_t) of the base schedule and
w = t / (T - 1),  log SNR'(t) = (1 - w) log SNR(t) + w log(SNR(t) / scale),  i.e.
SNR'(t) = SNR(t) * scale^(-w): unchanged at t = 0, divided by `scale` at the last step; more noise
at high t, where multi-view layout is decided. Mode "default" divides every step by `scale`.
The new abar' = SNR' / (1 + SNR') becomes betas for `Scheduler.from_config(..., trained_betas=...)`.
"""
from __future__ import annotations

import torch
from diffusers import T2IAdapter

SHIFT_MODES = ("interpolated", "default")


# --------------------------------------------------------------------------- condition encoder

def build_condition_encoder(block_out_channels, layers_per_block, in_channels: int = 6,
                            downscale_factor: int = 8, adapter_type: str = "full_adapter") -> T2IAdapter:
    """The reference's condition encoder: diffusers' T2IAdapter sized like the UNet's down path.
    downscale_factor = condition pixels per UNet-input pixel (8 for an SD VAE, 1 in pixel space)."""
    if isinstance(layers_per_block, (list, tuple)):
        if len(set(layers_per_block)) != 1:
            raise ValueError(f"condition encoder: T2IAdapter needs one layers_per_block, got {layers_per_block}")
        layers_per_block = layers_per_block[0]
    return T2IAdapter(in_channels=in_channels, channels=list(block_out_channels), num_res_blocks=layers_per_block,
                      downscale_factor=downscale_factor, adapter_type=adapter_type)


def camera_condition(plucker: torch.Tensor, position: torch.Tensor | None = None,
                     normal: torch.Tensor | None = None, offset: float = 1.0, scale: float = 2.0) -> torch.Tensor:
    """(V, 6 [+3] [+3], H, W) encoder input: maps concatenated on channels, each mapped as the
    reference does ((x + offset) / scale: directions and unit moments from [-1, 1] to [0, 1])."""
    maps = [m for m in (plucker, position, normal) if m is not None]
    shapes = {(m.shape[0], *m.shape[2:]) for m in maps}
    if len(shapes) != 1 or any(m.ndim != 4 for m in maps):
        raise ValueError(f"camera condition: maps must share (V, ., H, W), got {[tuple(m.shape) for m in maps]}")
    return (torch.cat(maps, dim=1) + offset) / scale


def camera_residuals(cond_encoder: T2IAdapter, condition: torch.Tensor, scale: float = 1.0) -> list[torch.Tensor]:
    """Features for `down_intrablock_additional_residuals` (a new list: the UNet consumes it)."""
    return [feature * scale for feature in cond_encoder(condition)]


# --------------------------------------------------------------------------- noise-schedule shift

def shifted_alphas_cumprod(alphas_cumprod: torch.Tensor, shift_scale: float = 8.0,
                           mode: str = "interpolated") -> torch.Tensor:
    """The reference's SNR shift applied to a schedule's alphas_cumprod (length T)."""
    if mode not in SHIFT_MODES:
        raise ValueError(f"noise shift: mode {mode!r} is not one of {SHIFT_MODES}")
    if not shift_scale > 0:
        raise ValueError(f"noise shift: shift_scale must be > 0, got {shift_scale}")
    abar = alphas_cumprod.double()
    log_snr = torch.log(abar) - torch.log1p(-abar)
    if mode == "interpolated":
        weight = torch.arange(len(abar), dtype=torch.float64) / max(len(abar) - 1, 1)
    else:
        weight = torch.ones_like(abar)
    shifted_log_snr = log_snr - weight * torch.log(torch.tensor(float(shift_scale), dtype=torch.float64))
    return torch.sigmoid(shifted_log_snr).to(alphas_cumprod.dtype)


def betas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    alphas = alphas_cumprod / torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1 - alphas


def shift_noise_schedule(scheduler, shift_scale: float = 8.0, mode: str = "interpolated"):
    """A new scheduler of the same class whose betas carry the shifted SNR (the reference's
    `ShiftSNRScheduler.from_scheduler`); works for any diffusers scheduler with alphas_cumprod."""
    if not hasattr(scheduler, "alphas_cumprod"):
        raise ValueError(f"noise shift: {type(scheduler).__name__} has no alphas_cumprod (not a beta schedule)")
    betas = betas_from_alphas_cumprod(shifted_alphas_cumprod(scheduler.alphas_cumprod, shift_scale, mode))
    return type(scheduler).from_config(scheduler.config, trained_betas=betas.double().numpy())
