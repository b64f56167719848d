"""Video prediction / interpolation / completion / animation / generation with one VDT.

    pipe = VDTPipeline.from_pretrained("vdt-physics-M")
    out = pipe(task="predict", frames="clip.gif", num_known=4, num_inference_steps=25, seed=0)
    out.save("future.gif")        # out.frames uint8 (T, H, W, 3); out.mask (T, H, W), True = generated

Every task is a mask over the model's clip (see `pipelines.video.vdt.make_mask`); the frames
that are given come out bit-identical to the (resized) input, because `genstudio.diffusion.sample`
re-inserts them at every step and the last one. Input of another size is centre-cropped square
and resized; input longer than the model's clip is trimmed; `out.notes` says what was done.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from genstudio.pipeline import SEED_DEFAULT, CheckpointMismatch, PipelineMixin, PipelineOutput, save_all
from genstudio.formats.video import FRAME_SUFFIXES, read_video, video_frames_uint8, write_video
from genstudio.render import InputError, load_image
from genstudio.sims import NEGATIVE, read_sims
from genstudio.vq4dit import load_model

from . import DEFAULT_MODEL, TASKS
from .data import square_resize, to_uint8_video, uint8_to_video
from .sampling import SCHEDULERS, sample_clips, scheduler_for  # noqa: F401  (re-exported)
from .vdt import VDT, interpolation_frames, make_mask, sample_training_mask


@dataclass
class VideoOutput(PipelineOutput):
    frames: np.ndarray            # (T, H, W, 3) uint8: the result
    mask: np.ndarray              # (T, H, W) bool, True = generated, False = copied from the input
    input: np.ndarray | None      # (T, H, W, 3) uint8: the input as the model saw it (None: no input)
    task: str = "generate"
    nfe: int = 0                  # model evaluations
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    covered: np.ndarray | None = None  # (T,) bool: which frames the input provided

    def save(self, path, fps: float = 8.0, preview=None) -> Path:
        """Write the result as .gif or .mp4, atomically; with `preview` (a second path) also what
        the model was given, both or neither."""
        if self.failed:
            return super().save(path)
        writes = [(Path(path), lambda tmp: write_video(tmp, self.frames, fps=fps))]
        if preview is not None:
            writes.append((Path(preview), lambda tmp: write_video(tmp, self.preview(), fps=fps)))
        return save_all(writes)[0]

    def preview(self) -> np.ndarray:
        """The input with the generated region shown dimmed grey: what the model was given."""
        base = self.input if self.input is not None else np.zeros_like(self.frames)
        dim = (base.astype(np.float32) * 0.25 + 40).astype(np.uint8)
        return np.where(self.mask[..., None], dim, base)

    def reference_scores(self) -> dict | None:
        """MSE / PSNR (pixels in [0, 1]) at the generated positions against the input, when the
        input covers them (e.g. predicting the second half of a whole clip); else None."""
        from genstudio.metrics import mse, psnr
        if self.input is None or self.covered is None:
            return None
        where = self.mask & self.covered[:, None, None]
        if not where.any():
            return None
        return {"mse": mse(self.frames, self.input, where), "psnr": psnr(self.frames, self.input, where)}


# ---- Input helpers ----

def load_frames(frames, max_frames: int | None = None) -> np.ndarray:
    """A path (video / GIF / folder), an array (T, H, W[, C]) uint8 or float [0, 1], a tensor
    (T, C, H, W) in [-1, 1], or a list of PIL images / paths -> uint8 (T, H, W, 3)."""
    if isinstance(frames, (str, os.PathLike)):
        if Path(frames).suffix.lower() in FRAME_SUFFIXES:  # one still image (to animate)
            return np.asarray(load_image(frames))[None]
        return read_video(frames, max_frames=max_frames)
    if isinstance(frames, torch.Tensor):
        t = frames.detach().float().cpu()
        if t.ndim != 4 or t.shape[1] not in (1, 3):
            raise InputError(f"a frames tensor must be (T, C, H, W) in [-1, 1]; got {tuple(t.shape)}")
        return video_frames_uint8(((t.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy())
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError("the frame list is empty")
        images = [load_image(f) if isinstance(f, (str, os.PathLike)) else f for f in frames]
        if not all(isinstance(im, Image.Image) for im in images):
            raise InputError("a frame list must hold PIL images or image paths")
        sizes = {im.size for im in images}
        if len(sizes) > 1:
            raise InputError(f"the frames differ in size ({sorted(sizes)}); they must share one")
        return np.stack([np.asarray(im.convert("RGB")) for im in images])
    if isinstance(frames, np.ndarray):
        return video_frames_uint8(frames)
    raise InputError(f"frames must be a video path, an array, a tensor or a list of images; "
                     f"got {type(frames).__name__}")


def image_mask(mask, frames, size: int):
    """A mask image (path or PIL) -> bool (size, size), True = generate, checked against the input:
    it must have the input frames' shape (their size or a scaled copy; it is then centre-cropped and
    resized as they are) or the model's size. Anything else (arrays, tensors, None) is returned as is."""
    if not isinstance(mask, (str, os.PathLike, Image.Image)):
        return mask
    name = str(mask) if isinstance(mask, (str, os.PathLike)) else "the mask"
    image = load_image(mask, mode="L") if isinstance(mask, (str, os.PathLike)) else mask.convert("L")
    if frames is not None:
        h, w = load_frames(frames, max_frames=1).shape[1:3]
        mw, mh = image.size
        if abs(mw / mh - w / h) > 0.02 * w / h and (mw, mh) != (size, size):
            raise InputError(f"{name} is {mw}x{mh}, but the input frames are {w}x{h}; the mask must have "
                             f"their shape (the same size, or scaled) or the model's size, {size}x{size}")
    binary = np.asarray(image) > 127
    return square_resize(binary.astype(np.uint8) * 255, size) > 127 if binary.shape != (size, size) else binary


def load_mask(mask, frames: int, size: int) -> np.ndarray:
    """A user mask -> bool (T, size, size), True = generate. Accepts an image path / PIL image
    (white = generate, applied to every frame), or an array / tensor of shape (H, W), (T,),
    (T, H, W) or (T, 1, H, W); spatial sizes other than the model's are resized (nearest)."""
    if isinstance(mask, (str, os.PathLike)):
        mask = load_image(mask, mode="L")
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L")) > 127
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.dtype != bool:
        m = m > 0.5
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim == 1:
        if m.shape[0] != frames:
            raise InputError(f"a per-frame mask needs {frames} entries; got {m.shape[0]}")
        return np.broadcast_to(m[:, None, None], (frames, size, size)).copy()
    if m.ndim == 2:
        m = np.broadcast_to(m, (frames, *m.shape))
    if m.ndim != 3 or m.shape[0] != frames or 0 in m.shape:
        raise InputError(f"mask has shape {tuple(np.shape(mask))}; expected (H, W), ({frames},), ({frames}, H, W) "
                         f"or ({frames}, 1, H, W) with True/white = generate")
    if m.shape[1:] != (size, size):
        m = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.NEAREST)) for f in m])
    return m.astype(bool)


class VDTPipeline(DiffusionPipeline, PipelineMixin):
    """A VDT plus its default (DPM-Solver++) scheduler; `__call__` runs one task on one clip."""

    model_cpu_offload_seq = "transformer"
    task, paper, default_model = "video", "VDT", DEFAULT_MODEL
    output_suffix = ".gif"  # what `genstudio batch` writes
    checkpoint_classes = ("VDT",)
    compress_component = "transformer"  # `genstudio compress` quantises this VDT (calibration_samples below)

    _optional_components = ["negative_transformer"]

    def __init__(self, transformer: VDT, scheduler, negative_transformer: VDT | None = None,
                 sims_guidance: float = 0.0):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, negative_transformer=negative_transformer)
        self.sims_guidance = sims_guidance  # a SIMS checkpoint's default w (genstudio sims)
        self.name = None
        self.precision = None

    @classmethod
    def from_model(cls, model: VDT) -> "VDTPipeline":
        """Wrap a VDT with the DPM-Solver++ scheduler matching its training noise schedule."""
        return cls(model, scheduler_for(model, "dpm"))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None = None, torch_dtype=None,
                        device: str = "auto", precision: str | None = "auto", dtype=None,
                        **kwargs) -> "VDTPipeline":
        """diffusers' contract (`torch_dtype`) and genstudio's (`device`, `dtype`, `precision`): a
        checkpoint name (`checkpoints/<name>`), a folder (a VDT's config.json + safetensors, as
        `genstudio train vdt` writes; or a saved pipeline with a transformer/ subfolder) or hub id."""
        from genstudio.hub import CheckpointNotFound
        try:
            return PipelineMixin.from_pretrained.__func__(cls, pretrained_model_name_or_path, device=device,
                                                          dtype=dtype or torch_dtype, precision=precision, **kwargs)
        except CheckpointNotFound as e:
            if isinstance(e, CheckpointMismatch):
                raise
            raise CheckpointNotFound(f"{e} To make one: `genstudio train vdt --output-dir runs/vdt`, then "
                                     "use runs/vdt/final as the model.") from None

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "VDTPipeline":
        if (folder / "transformer").is_dir():
            folder = folder / "transformer"
        pipe = cls.from_model(load_model(VDT, folder, torch_dtype=dtype).eval())  # fp16 or compressed on disk
        if (folder / NEGATIVE).is_dir():  # a SIMS checkpoint: the auxiliary model and its default w
            pipe.negative_transformer = load_model(VDT, folder / NEGATIVE, torch_dtype=dtype).eval()
            pipe.sims_guidance = float(read_sims(folder).get("guidance", 0.0))
        return pipe

    @torch.no_grad()
    def calibration_samples(self, num_samples: int, num_inference_steps: int = 10,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """Zero-data calibration clips for `genstudio compress` (B, T, C, H, W) in [-1, 1]: the first
        half generated from pure noise with the pipeline's sampler; the rest predict / interpolate
        (alternately), their given frames taken from those generated clips, so the DiT also sees
        the mask channel of the conditional tasks."""
        T, C, H, W = self.transformer.sample_shape
        fresh = max(1, (num_samples + 1) // 2)
        clips, _ = sample_clips(self.transformer, torch.zeros(fresh, T, C, H, W), torch.ones(fresh, T, 1, H, W,
                                dtype=torch.bool), num_inference_steps, self.scheduler, generator, progress=False)
        rest = num_samples - fresh
        if rest <= 0:
            return clips
        masks = [make_mask("predict" if i % 2 == 0 else "interpolate", T, H, W,
                           num_known=int(torch.randint(1, T, (1,), generator=generator)) if i % 2 == 0 else None)[0]
                 for i in range(rest)]
        known = clips[torch.arange(rest) % fresh]
        generate = torch.stack(masks).to(clips.device)
        conditional, _ = sample_clips(self.transformer, torch.where(generate, 0.0, known), generate,
                                      num_inference_steps, self.scheduler, generator, progress=False)
        return torch.cat([clips, conditional])

    # SIMS (genstudio/sims.py): the synthetic set and the auxiliary model's fine-tuning
    @torch.no_grad()
    def synthetic_dataset(self, num_items: int, num_inference_steps: int, generator, batch_size: int = 16,
                          sims_guidance: float = 0.0):
        """`num_items` clips generated from pure noise by this VDT, as {"video"} items (what training reads)."""
        T, C, H, W = self.transformer.sample_shape
        clips = []
        for start in range(0, num_items, batch_size):
            n = min(batch_size, num_items - start)
            x, _ = sample_clips(self.transformer, torch.zeros(n, T, C, H, W), torch.ones(n, T, 1, H, W, dtype=torch.bool),
                                num_inference_steps, self.scheduler, generator, progress=False,
                                negative_model=self.negative_transformer, negative_guidance=sims_guidance)
            clips.append(x.cpu())
        from genstudio.train import TensorDictDataset
        return TensorDictDataset(video=torch.cat(clips))

    def finetune_recipe(self, dataset, config):
        """A copy of this VDT trained with its own objective (the mask-modelling mixture) on `dataset`."""
        import copy

        from genstudio.diffusion import diffusion_loss, make_scheduler
        from genstudio.train import Recipe

        model = copy.deepcopy(self.transformer).float().train()
        c = model.config
        noise = make_scheduler("ddpm", num_train_timesteps=c.num_train_timesteps, prediction_type=c.prediction_type,
                               beta_schedule=c.beta_schedule)

        def loss_fn(m, batch):
            x0 = batch["video"]
            B, T, _, H, W = x0.shape
            generate = sample_training_mask(B, T, H, W, device=x0.device)
            return diffusion_loss(m, x0, noise, c.prediction_type, mask=generate, generate_mask=generate)

        return Recipe(model, dataset, loss_fn, config, name="sims-finetune")

    # 1. inputs
    def _prepare_input(self, frames, task: str, notes: list[str]) -> np.ndarray | None:
        T, _, size, _ = self.transformer.sample_shape
        if frames is None:
            return None
        from_file = isinstance(frames, (str, os.PathLike))
        clip = load_frames(frames, max_frames=T + 1)  # one more than needed tells that it was longer
        if len(clip) > T:
            count = f"more than {T}" if from_file else str(len(clip))
            notes.append(f"input has {count} frames; the model's clip is {T}: kept the first {T}")
            clip = clip[:T]
        h, w = clip.shape[1:3]
        if (h, w) != (size, size):
            crop = " centre-cropped square and" if h != w else ""
            notes.append(f"input frames are {w}x{h}:{crop} resized to {size}x{size}")
            clip = np.stack([square_resize(f, size) for f in clip])
        if task == "generate":
            notes.append("task 'generate' ignores the input frames")
            return None
        return clip

    # 2. the mask and where the input goes
    def _task_mask(self, task, clip, mask, num_known) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(generate mask (T, H, W) bool, the input placed in the clip (T, H, W, 3) uint8, which
        frames it covers (T,) bool). Every given position must be covered by the input."""
        T, _, size, _ = self.transformer.sample_shape
        n = 0 if clip is None else len(clip)
        placed = np.zeros((T, size, size, 3), np.uint8)
        covered = np.zeros(T, bool)
        if num_known is not None and not 1 <= num_known <= T:
            raise InputError(f"num_known must be between 1 and {T} (the clip length), got {num_known}")

        def put(positions, source):
            placed[positions] = clip[source]
            covered[positions] = True

        if task == "interpolate" and mask is None and 0 < n < T:
            k = n if num_known is None else num_known
            if n != k or k < 2:
                raise InputError(f"interpolate got {n} frames: give the whole {T}-frame clip, or exactly the "
                                 f"keyframes (>= 2; num_known={k})")
            positions = interpolation_frames(T, k)
            if len(positions) != n:
                raise InputError(f"{n} keyframes do not spread evenly over {T} frames; give the whole clip")
            put(positions, list(range(n)))
            return make_mask("interpolate", T, size, size, num_known=k)[0, :, 0].numpy(), placed, covered
        if task == "backward" and 0 < n < T:
            put(list(range(T - n, T)), list(range(n)))
        elif n:
            put(list(range(n)), list(range(n)))

        if mask is not None:
            generate = load_mask(mask, T, size)
        elif task == "generate":
            generate = np.ones((T, size, size), bool)
        elif task in ("predict", "backward"):
            k = num_known if num_known is not None else (n if n < T else T // 2)
            if k >= T:
                raise InputError(f"{task} with num_known={k} leaves nothing to generate in a {T}-frame clip")
            generate = make_mask(task, T, size, size, num_known=k)[0, :, 0].numpy()
        elif task == "interpolate":
            generate = make_mask(task, T, size, size, num_known=num_known or 4)[0, :, 0].numpy()
        elif task == "animate":
            generate = make_mask("animate", T, size, size, index=0)[0, :, 0].numpy()
        else:  # complete without a mask: the central square of half the side, in every frame
            q = size // 4
            generate = make_mask("complete", T, size, size, box=(q, q, size - q, size - q))[0, :, 0].numpy()
        given = ~generate.reshape(T, -1).all(axis=1)
        missing = np.flatnonzero(given & ~covered)
        if missing.size:
            raise InputError(f"task {task!r} needs frame(s) {missing.tolist()} as input, but the input has {n} "
                             f"frame{'s' if n != 1 else ''}" + (" (none given)" if n == 0 else ""))
        return generate, placed, covered

    # 3. sampling, 4. output
    @torch.no_grad()
    def __call__(self, task: str = "predict", frames=None, mask=None, num_known: int | None = None,
                 num_inference_steps: int = 25, scheduler: str | None = None, seed: int | None = SEED_DEFAULT,
                 progress: bool | None = None, generator: torch.Generator | None = None,
                 sims_guidance: float | None = None) -> VideoOutput:
        """Run `task` on `frames` (see `load_frames` for the accepted forms). `mask` (True/white =
        generate) overrides the task's mask; `num_known` sets how many frames are given for
        predict / backward / interpolate. `scheduler`: "dpm" (DPM-Solver++ 2M), "ddim", "euler" or
        "ddpm"; None = the pipeline's own (`self.scheduler`). `sims_guidance`: SIMS's w with a SIMS
        checkpoint (None = its default, 0 = off). Raises InputError for bad input."""
        w = self.sims_guidance if sims_guidance is None else float(sims_guidance)
        if w and self.negative_transformer is None:
            raise InputError("sims_guidance needs a SIMS checkpoint (with negative_transformer/): "
                             "make one with `genstudio sims --base CHECKPOINT`")
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        if task != "generate" and frames is None and mask is None:
            raise InputError(f"task {task!r} needs input frames (a video, GIF, folder or array)")
        t0 = time.perf_counter()
        notes: list[str] = []
        mask = image_mask(mask, frames, self.transformer.sample_shape[2])
        clip = self._prepare_input(frames, task, notes)
        generate, placed, covered = self._task_mask(task, clip, mask, num_known)
        if not generate.any():
            raise InputError("the mask generates nothing: every position is given")

        known = uint8_to_video(placed)[None]
        generate_t = torch.from_numpy(generate)[None, :, None]
        generator, seed = self.make_generator(seed, generator)
        with self.autocast():  # the precision policy: bf16 only where the device runs it natively
            x, nfe = sample_clips(self.transformer, known, generate_t, num_inference_steps,
                                  self.scheduler if scheduler is None else scheduler, generator,
                                  self.progress_enabled(progress), self.negative_transformer, w)
        frames_out = to_uint8_video(x[0])
        frames_out = np.where(generate[..., None], frames_out, placed)  # already equal; made explicit
        return VideoOutput(frames_out, generate, placed if clip is not None else None, task, nfe,
                           time.perf_counter() - t0, notes, covered=covered if clip is not None else None,
                           metadata=self.metadata(seed, num_inference_steps, t0, nfe=nfe))
