"""PUT inference: `PUTInpaintPipeline.from_pretrained(...)(image, mask, num_samples=4, seed=0)`.

Images of any size: the model works at `resolution` (the long side, default the training
size), the filled holes are upsampled back, and every known pixel of the original image is
copied into the output unchanged. Mask convention: white (non-zero) = hole to fill.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, save_all
from genstudio.render import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

from . import DEFAULT_MODEL
from .put import REFERENCE_FILL_FNS, PatchVQVAE, UnquantizedTransformer, patch_known_mask, sample_tokens, save_put
from .validate import residual_weight, validation_holes

DEFAULT_VALIDATION_MASKS = 3  # for models with a reference fill (see validate.py)
MAX_VALIDATION_MASKS = 16


@dataclass
class InpaintOutput(PipelineOutput):
    images: list                      # N PIL images, the size of the input
    hole: np.ndarray                  # (H, W) bool, True = filled pixel
    work_size: tuple[int, int]        # (W, H) the models ran at
    tokens: torch.Tensor | None = None  # (N, h, w) known-codebook tokens
    info: dict = field(default_factory=dict)
    source: str | None = None         # the input's path, when it came from a file

    def paths_for(self, path: Path) -> list[Path]:
        """An image file name (one completion; `name_i.png` for several) or a folder
        (`<folder>/<input name>_inpaint_<i>.png`)."""
        path = Path(path)
        if path.suffix.lower() in IMAGE_SUFFIXES:
            if len(self.images) == 1:
                return [path]
            return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(self.images))]
        stem = Path(self.source).stem if self.source else "image"
        return [path / f"{stem}_inpaint_{i}.png" for i in range(len(self.images))]

    def _write(self, path: Path) -> list[Path]:
        """Every completion or none (a full disk leaves no partial set)."""
        def writer(image):
            return lambda tmp: image.save(tmp, format=Image.registered_extensions()[tmp.suffix.lower()])
        return save_all([(p, writer(im)) for p, im in zip(self.paths_for(path), self.images)])


def _as_image(image, what: str) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        from genstudio.render import load_image
        return load_image(image, "L" if what == "mask" else "RGB")
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif arr.dtype != np.uint8:
            arr = np.clip(arr * (255 if arr.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    if not isinstance(image, Image.Image):
        raise InputError(f"{what} must be a path, a PIL image or an array, got {type(image).__name__}")
    if what == "mask":
        if image.mode in ("RGBA", "LA"):  # a painted layer: the paint is the hole
            return image.getchannel("A")
        return image.convert("L")
    from genstudio.render import flatten_alpha
    return flatten_alpha(image) if image.mode in ("RGBA", "LA", "P") else image.convert("RGB")


def is_greyscale(image: Image.Image) -> bool:
    """True when every pixel of the (RGB) image has R == G == B: its hidden pixels are grey too."""
    a = np.asarray(image)
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def _to_grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> the same with every channel the mean of the three."""
    return images.float().mean(1, keepdim=True).expand_as(images)


def prepare_hole(mask, size: tuple[int, int]) -> np.ndarray:
    """Mask (white = hole) -> (H, W) bool, with the checks a user needs to hear about."""
    m = _as_image(mask, "mask")
    if m.size != size:
        raise InputError(f"the mask is {m.size[0]}x{m.size[1]} but the image is {size[0]}x{size[1]}; "
                         "they must have the same size")
    hole = np.asarray(m) > 127
    if not hole.any():
        raise InputError("the mask has no hole (white = region to fill): nothing to inpaint")
    if hole.all():
        raise InputError("the mask covers the whole image: PUT needs some known pixels to work from")
    return hole


def work_size(width: int, height: int, resolution: int, patch: int) -> tuple[int, int]:
    """Scale so the long side is `resolution`; both sides multiples of the patch size."""
    s = resolution / max(width, height)
    return (max(patch, round(width * s / patch) * patch), max(patch, round(height * s / patch) * patch))


class PUTInpaintPipeline(PipelineMixin):
    """P-VQVAE + UQ-Transformer; see pipelines/inpaint/put.py."""
    task, paper, default_model = "inpaint", "PUT", DEFAULT_MODEL
    output_suffix = ".png"  # what `genstudio batch` writes
    checkpoint_classes = ("PatchVQVAE", "UnquantizedTransformer")

    def __init__(self, vqvae, transformer, device: str | None = None, precision=None):
        from genstudio.device import resolve_device
        self.device = resolve_device(device) if device in (None, "auto") else device
        self.vqvae = vqvae.to(self.device).eval()
        self.transformer = transformer.to(self.device).eval()
        self.set_precision(precision)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "PUTInpaintPipeline":
        from genstudio.hub import resolve
        vqvae = PatchVQVAE.from_pretrained(resolve(folder, "vqvae"), torch_dtype=dtype)
        transformer = UnquantizedTransformer.from_pretrained(resolve(folder, "transformer"), torch_dtype=dtype)
        return cls(vqvae, transformer, "cpu", **kwargs)

    def to(self, device) -> "PUTInpaintPipeline":
        self.vqvae.to(device)
        self.transformer.to(device)
        return self

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Writes vqvae/ and transformer/ (optionally cast, e.g. torch.float16 to ship)."""
        return save_put(self.vqvae, self.transformer, path, dtype)

    @torch.no_grad()
    def __call__(self, image, mask, num_samples: int = 1, top_k: int = 50, temperature: float = 1.0,
                 tokens_per_step: int = 4, seed: int | None = SEED_DEFAULT, resolution: int | None = None,
                 validation_masks: int | None = None, progress: bool | None = None,
                 generator: torch.Generator | None = None) -> InpaintOutput:
        """`validation_masks` (a model with a reference fill only; None: `DEFAULT_VALIDATION_MASKS`,
        0: off): how many extra holes, drawn over known pixels, decide how much of the decoder's
        residual over its reference fill to keep (`validate.py`; the weight is in `info`)."""
        if num_samples < 1:
            raise InputError(f"num_samples must be >= 1, got {num_samples}")
        fill = REFERENCE_FILL_FNS.get(self.vqvae.config.reference_fill)
        if validation_masks is None:
            validation_masks = DEFAULT_VALIDATION_MASKS if fill is not None else 0
        if not 0 <= validation_masks <= MAX_VALIDATION_MASKS:
            raise InputError(f"validation_masks must be between 0 and {MAX_VALIDATION_MASKS}, got {validation_masks}")
        if validation_masks and fill is None:
            raise InputError("validation_masks needs a model with a reference fill (its decoder predicts no "
                             "residual over one); pass 0")
        started = time.perf_counter()
        # 1. Inputs: the image, its hole mask, the working size.
        source = str(image) if isinstance(image, (str, os.PathLike)) else None
        image = _as_image(image, "image")
        hole = prepare_hole(mask, image.size)
        # A greyscale picture stays greyscale: the decoder's channels are averaged (it may add faint colour).
        grey = is_greyscale(image)
        patch = self.vqvae.patch_size
        size = work_size(*image.size, resolution or self.vqvae.config.sample_size, patch)
        small = np.asarray(image.resize(size, Image.BICUBIC), np.float32) / 127.5 - 1
        # A low-resolution pixel is known only if all of its source pixels are (BOX filter > 0).
        small_hole = np.asarray(Image.fromarray(hole.astype(np.uint8) * 255).resize(size, Image.BOX)) > 0
        x = torch.from_numpy(small.transpose(2, 0, 1)).to(self.device)[None].repeat(num_samples, 1, 1, 1)
        known = torch.from_numpy(~small_hole).float().to(self.device)[None, None].repeat(num_samples, 1, 1, 1)
        x = x.to(self.vqvae.dtype) * known.to(self.vqvae.dtype)
        known = known.to(self.vqvae.dtype)
        generator, seed = self.make_generator(seed, generator)
        # Validation holes over known pixels (seeded like the sampling): one sampled completion each.
        checks = validation_holes(small_hole, validation_masks, np.random.default_rng(seed))
        check_known = known[:1] * torch.from_numpy(~checks).to(known)[:, None]
        masked = (~patch_known_mask(torch.cat([known[:1], check_known]), patch)).sum((1, 2)).tolist()
        total = sum(int(np.ceil(m / tokens_per_step)) for m in (masked[0], max(masked[1:], default=0)))
        info = {"hole_ratio": float(hole.mean()), "sampling_steps": total, "masked_tokens": masked[0],
                "greyscale": grey}
        with self.autocast(), self.progress_bar(total=total, desc="PUT sampling",
                                                 disable=not self.progress_enabled(progress)) as bar:
            # The precision policy (bf16 only where the device runs it natively) covers every pass.
            # The reference fill, once for the N identical samples (the decoder would solve it per sample).
            reference = fill(x[:1], known[:1]).float() if fill is not None else None
            tokens, out = self._complete(x, known, generator, bar, top_k, temperature, tokens_per_step,
                                         None if reference is None else reference.expand(num_samples, -1, -1, -1))
            out = _to_grey(out) if grey else out
            if validation_masks and checks.any():
                check_reference = fill(x[:1] * check_known, check_known).float()
                _, checked = self._complete(x[:1] * check_known, check_known, generator, bar, top_k, temperature,
                                            tokens_per_step, check_reference)
                checked = _to_grey(checked) if grey else checked
                weight = residual_weight(x[0], checked.float(), check_reference,
                                         torch.from_numpy(checks)[:, None].to(self.device))
                weight = 1.0 if weight is None else weight
                if weight != 1.0:
                    out = reference + weight * (out.float() - reference)
                info.update(residual_weight=weight, validation_masks=validation_masks)
        out = out.float().clamp(-1, 1)
        original = np.asarray(image)
        images = []
        for o in out.cpu().numpy():
            filled = Image.fromarray(((o.transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8))
            filled = np.asarray(filled.resize(image.size, Image.BICUBIC))
            images.append(Image.fromarray(np.where(hole[..., None], filled, original)))
        return InpaintOutput(images, hole, size, tokens.cpu(), info, source=source,
                             metadata=self.metadata(seed, total, started, samples=num_samples))

    def _complete(self, x, known, generator, bar, top_k, temperature, tokens_per_step, reference=None):
        """One batch of masked images (each with its own `known`) -> (tokens, decoded images): the
        fully known patches' tokens, the others sampled most confident first, then the guided decode
        (on `reference`, the batch's reference fill, when given)."""
        features = self.vqvae.encode(x, known)
        patch_known = patch_known_mask(known, self.vqvae.patch_size)
        known_tokens = self.vqvae.quantize(features, known).indices.masked_fill(~patch_known, 0)
        tokens = sample_tokens(self.transformer, self.vqvae, features.permute(0, 2, 3, 1), patch_known, known_tokens,
                               top_k=top_k, temperature=temperature, tokens_per_step=tokens_per_step,
                               generator=generator, progress=bar)
        return tokens, self.vqvae.decode_tokens(tokens, x, known, reference)
