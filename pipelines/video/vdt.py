"""VDT: General-purpose Video Diffusion Transformers via Mask Modeling (Lu et al., ICLR 2024).

The model is the core's factorised video DiT (`genstudio.dit.DiT(num_frames > 1)`: every block
is temporal attention across frames at each patch position, then DiT's adaLN-Zero spatial
attention + MLP). VDT adds two things, both here:

* **Unified spatial-temporal mask modelling.** One model does every conditional task: the
  frames (or pixels) that are given are shown clean, the rest is noised and denoised, and the
  loss covers the generated positions only (`genstudio.diffusion.diffusion_loss(mask=...)`;
  `sample(known=..., mask=...)` re-inserts the given values at every step). Prediction,
  backward prediction, interpolation, unconditional generation, animation of one frame, random
  frame masks and spatial completion are just different masks (`make_mask`), mixed in training
  (`sample_training_mask`).
* **The mask as an input channel.** The paper tells known from generated tokens only by their
  noise level; we also append the mask as one extra input channel, which costs nothing and
  removes that ambiguity at low noise levels (where a noised frame looks clean).

Unlike the reference code, which trains prediction with exactly 8 given frames and fails with
fewer, every mode here draws its number of given frames at random, so any count works.

Shapes: videos are (B, T, C, H, W) in [-1, 1]; masks are bool (B, T, 1, H, W), True = generate
(the convention of `genstudio.diffusion`), broadcast over channels.
"""
from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from genstudio.dit import DiT

# ---- Named configs ----
#
# Pixel-space models for 32x32 clips; patch 4 = 64 tokens per frame, 1,024 per 16-frame clip.
# Smaller than the paper's (VDT-L in SD-VAE latents on GPUs): "S" is sized so that a 25-minute
# training on 2 CPU cores sees ~20k clips; "M" (7.6M parameters, 15 MB in fp16) is for a short GPU
# run and still fits a shipped checkpoint; "B" (the width of DiT-S) is for a long GPU run.
VDT_CONFIGS = {
    "tiny": dict(depth=2, hidden_size=64, num_heads=2, patch_size=4),
    "S": dict(depth=6, hidden_size=128, num_heads=2, patch_size=4),
    "M": dict(depth=8, hidden_size=192, num_heads=3, patch_size=4),
    "B": dict(depth=12, hidden_size=384, num_heads=6, patch_size=4),
}


class VDT(ModelMixin, ConfigMixin):
    """Video DiT with VDT's mask conditioning. `forward(x, t, generate_mask=None)`:

    x (B, T, C, H, W) noisy video with the known values already clean in it; t (B,) timesteps;
    generate_mask (B, T, 1, H, W) or broadcastable, True = generate (None: generate everything).
    Returns the prediction (epsilon / v / x0, per `prediction_type`) with the shape of x.
    The DiT lives in `self.dit` with the core's parameter names.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        num_frames: int = 16,
        in_channels: int = 3,
        patch_size: int = 4,
        hidden_size: int = 128,
        depth: int = 6,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        prediction_type: str = "v_prediction",
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
    ):
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"a VDT needs num_frames >= 2, got {num_frames}")
        self.dit = DiT(input_size=sample_size, patch_size=patch_size, in_channels=in_channels + 1,
                       hidden_size=hidden_size, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                       class_dropout_prob=0.0, num_classes=0, learn_sigma=False, num_frames=num_frames)

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        """(T, C, H, W) of one clip."""
        c = self.config
        return c.num_frames, c.in_channels, c.sample_size, c.sample_size

    def forward(self, x, t, generate_mask=None):
        B, T, C, H, W = x.shape
        if generate_mask is None:
            m = x.new_ones(B, T, 1, H, W)
        else:
            m = torch.as_tensor(generate_mask, device=x.device).to(x.dtype).expand(B, T, 1, H, W)
        out = self.dit(torch.cat([x, m], dim=2), t)
        return out[:, :, :C]  # the mask channel's output slot is unused


def vdt_from_name(name: str, **kw) -> VDT:
    key = name.removeprefix("VDT-")
    if key not in VDT_CONFIGS:
        raise ValueError(f"unknown VDT config {name!r}; choose from {', '.join(VDT_CONFIGS)}")
    return VDT(**{**VDT_CONFIGS[key], **kw})


# ---- Masks ----
#
# Every mode returns bool (B, T, 1, H, W), True = generate. Counts of given frames are clamped to
# [1, T - 1] where a mode needs at least one given and one generated frame.

MASK_MODES = ("predict", "backward", "interpolate", "generate", "animate", "random", "complete")

# The paper's mixture (reference code): 20% spatial completion, the rest split evenly over the
# six temporal modes.
TRAINING_MIXTURE = {"predict": 0.8 / 6, "backward": 0.8 / 6, "interpolate": 0.8 / 6, "generate": 0.8 / 6,
                    "animate": 0.8 / 6, "random": 0.8 / 6, "complete": 0.2}


def _randint(low: int, high: int, generator=None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _uniform(low: float, high: float, generator=None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def interpolation_frames(frames: int, num_known: int) -> list[int]:
    """`num_known` given frames spread evenly over the clip, first and last included."""
    num_known = max(2, min(num_known, frames))
    return sorted({round(i * (frames - 1) / (num_known - 1)) for i in range(num_known)})


def spatial_box(height: int, width: int, generator=None, min_area: float = 0.1, max_area: float = 0.5,
                min_aspect: float = 0.3) -> tuple[int, int, int, int]:
    """A random rectangle (top, left, bottom, right) covering 10-50% of the frame (BEiT-style
    block masking, as the paper's spatial masks)."""
    area = _uniform(min_area, max_area, generator) * height * width
    aspect = math.exp(_uniform(math.log(min_aspect), -math.log(min_aspect), generator))
    h = max(1, min(height, round(math.sqrt(area * aspect))))
    w = max(1, min(width, round(math.sqrt(area / aspect))))
    top, left = _randint(0, height - h, generator), _randint(0, width - w, generator)
    return top, left, top + h, left + w


def make_mask(task: str, frames: int, height: int, width: int, batch: int = 1, num_known: int | None = None,
              index: int | None = None, ratio: float | None = None, box=None, frame_range=None,
              generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """The VDT mask of one task, bool (batch, frames, 1, height, width), True = generate.

    predict     the first `num_known` frames are given (default frames // 2)
    backward    the last `num_known` frames are given (default frames // 2)
    interpolate `num_known` frames evenly spaced, first and last included (default 4)
    generate    nothing is given (unconditional generation)
    animate     one frame is given: `index` (default 0) — image-to-video
    random      each frame is given with probability 1 - `ratio` (default 0.5); at least one
                frame is generated (drawn once, shared by the batch)
    complete    a spatial block is generated in frames `frame_range` (default all), everything
                else is given; `box` = (top, left, bottom, right) in pixels (default: random)
    """
    mask = torch.zeros(frames, 1, height, width, dtype=torch.bool)
    given = frames // 2 if num_known is None else int(num_known)
    if task == "predict":
        mask[max(1, min(given, frames - 1)):] = True
    elif task == "backward":
        mask[:frames - max(1, min(given, frames - 1))] = True
    elif task == "interpolate":
        mask[:] = True
        mask[interpolation_frames(frames, 4 if num_known is None else given)] = False
    elif task == "generate":
        mask[:] = True
    elif task == "animate":
        i = 0 if index is None else int(index)
        if not -frames <= i < frames:
            raise ValueError(f"animate: frame index {i} is outside a {frames}-frame clip")
        mask[:] = True
        mask[i] = False
    elif task == "random":
        p = 0.5 if ratio is None else float(ratio)
        chosen = torch.rand(frames, generator=generator) < p
        if not chosen.any():
            chosen[_randint(0, frames - 1, generator)] = True
        mask[chosen] = True
    elif task == "complete":
        top, left, bottom, right = box if box is not None else spatial_box(height, width, generator)
        start, stop = frame_range if frame_range is not None else (0, frames)
        mask[start:stop, :, top:bottom, left:right] = True
        if not mask.any():
            raise ValueError(f"complete: box {box} and frames {frame_range} select no pixel")
    else:
        raise ValueError(f"unknown mask task {task!r}; choose from {', '.join(MASK_MODES)}")
    return mask[None].expand(batch, -1, -1, -1, -1).to(device).clone()


def random_mask(task: str, frames: int, height: int, width: int, generator=None) -> torch.Tensor:
    """One training mask of mode `task` with its free parameters drawn at random: any number of
    given frames (1..T-1 for prediction, 2..T/2+1 for interpolation), any given frame for
    animation, a random share for random frame masks, a random block in a random frame range
    (the reference leaves up to 3 frames at each end whole) for completion. (T, 1, H, W)."""
    kw = {}
    if task in ("predict", "backward"):
        kw["num_known"] = _randint(1, frames - 1, generator)
    elif task == "interpolate":
        kw["num_known"] = _randint(2, frames // 2 + 1, generator)
    elif task == "animate":
        kw["index"] = _randint(0, frames - 1, generator)
    elif task == "random":
        kw["ratio"] = _uniform(0.2, 0.9, generator)
    elif task == "complete":
        edge = min(3, (frames - 1) // 2)
        kw["frame_range"] = (_randint(0, edge, generator), frames - _randint(0, edge, generator))
    return make_mask(task, frames, height, width, generator=generator, **kw)[0]


def sample_training_mask(batch: int, frames: int, height: int, width: int, generator=None, device=None,
                         mixture: dict[str, float] | None = None) -> torch.Tensor:
    """VDT's training mixture: each clip of the batch gets its own mode (drawn with the weights
    of `mixture`, default TRAINING_MIXTURE) and its own random parameters. (B, T, 1, H, W) bool."""
    mixture = TRAINING_MIXTURE if mixture is None else mixture
    unknown = set(mixture) - set(MASK_MODES)
    if unknown:
        raise ValueError(f"unknown mask mode(s) {sorted(unknown)} in the mixture; choose from {MASK_MODES}")
    names = [k for k, v in mixture.items() if v > 0]
    weights = torch.tensor([float(mixture[k]) for k in names])
    picks = torch.multinomial(weights, batch, replacement=True, generator=generator)
    masks = [random_mask(names[int(i)], frames, height, width, generator) for i in picks]
    return torch.stack(masks).to(device)
