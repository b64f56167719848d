"""Text -> SVG with SVGFusion: the VS-DiT samples a VP-VAE latent sequence, the VP-VAE decodes it
into an SVG matrix, and the matrix becomes a standalone, sanitised SVG.

    pipe = SVGFusionPipeline.from_pretrained("svgfusion-icons-S")
    out = pipe("a rocket", num_samples=4, guidance_scale=3.0, num_inference_steps=50, seed=0)
    out.svgs          # SVG strings (None where a sample drew nothing)
    out.images        # their renders (PIL, 256 px)
    out.save("out/")  # rocket_000.svg + .png ... ; or out.save("rocket.svg") for the first valid one
    pipe("a rocket", init_svg=open("plane.svg").read(), strength=0.2)  # variations of a drawing (SDEdit)

A checkpoint folder holds transformer/ (the core DiT), vae/ (the VP-VAE with its latent scaling
factor; absent in the raw-rows ablation), scheduler/ and model_index.json. An optional
transformer_high/ is a second VS-DiT that takes the steps at timesteps >= model_index's
"expert_boundary" (expert denoisers, Balaji et al. 2022, "eDiff-I"), of its own prediction type
("high_prediction_type"), rewritten for the scheduler. An optional transformer_guide/ is a weaker,
earlier VS-DiT that sampling is guided away from (autoguidance, Karras et al. 2024, "Guiding a Diffusion
Model with a Bad Version of Itself"): p = (1 + w) * p_cfg - w * p_guide, both conditioned on the prompt,
w = model_index's "autoguidance" unless the call says otherwise (0 = off). The text encoder is the
packaged MiniLM (`genstudio.text`). SVGFusion's authors released no weights, so there is no
official checkpoint to load: `from_pretrained` takes our checkpoints (a name, folder or hub id).
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from genstudio.diffusion import convert_prediction, denoising_errors, make_scheduler, sample
from genstudio.dit import DiT
from genstudio.formats.svg import SVGError, normalize_svg, rasterize_svg
from genstudio.formats.svg_matrix import UnsupportedSVG, matrix_to_svg, svg_to_matrix
from genstudio.formats.svg_safety import is_empty
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, save_all
from genstudio.render import InputError
from genstudio.text import get_text_encoder
from genstudio.vq4dit import load_model

from . import DEFAULT_MODEL, MAX_AUTOGUIDANCE, MAX_PROMPT_CHARS, SCHEDULERS
from .data import pad, render
from .svgfusion import VPVAE, RowCodec, from_dit, to_dit

MAX_SAMPLES = 256       # one call's bound (prompts x samples)
MAX_STEPS = 1000
MAX_CANDIDATES = 16
RERANK_TIMESTEPS = (100, 250, 400, 550, 700, 850)  # where the VS-DiT's own denoising error ranks candidates


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "svg"


@dataclass
class Text2SVGOutput(PipelineOutput):
    svgs: list                    # SVG strings, prompt by prompt; None where a sample drew nothing
    images: list                  # PIL renders (a blank canvas where the sample is None)
    prompts: list[str]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    scores: list | None = None    # candidates > 1: the VS-DiT's own score of each kept sample (best first per prompt)

    @property
    def valid(self) -> list[bool]:
        return [s is not None for s in self.svgs]

    def _write(self, path: Path):
        """path.svg: the first valid SVG; a folder: PROMPT_k.svg and PROMPT_k.png for every valid sample."""
        if path.suffix:
            if path.suffix.lower() != ".svg":
                raise ValueError(f"{path}: write an .svg file or a folder")
            first = next(s for s in self.svgs if s is not None)
            return save_all([(path, lambda tmp: Path(tmp).write_text(first, encoding="utf-8"))])[0]
        path.mkdir(parents=True, exist_ok=True)
        writes, counts = [], {}
        for prompt, svg, image in zip(self.prompts, self.svgs, self.images):
            k = counts[prompt] = counts.get(prompt, -1) + 1
            if svg is None:
                continue
            stem = path / f"{slug(prompt)}_{k:03d}"
            writes.append((stem.with_suffix(".svg"), lambda tmp, s=svg: Path(tmp).write_text(s, encoding="utf-8")))
            writes.append((stem.with_suffix(".png"), lambda tmp, im=image: im.save(tmp, format="PNG")))
        return save_all(writes)


class SVGFusionPipeline(DiffusionPipeline, PipelineMixin):
    """VS-DiT + VP-VAE + scheduler (+ the frozen MiniLM): prompts -> SVGs."""

    model_cpu_offload_seq = "transformer->vae"
    task, paper, default_model = "text2svg", "SVGFusion", DEFAULT_MODEL
    output_suffix = ".svg"
    checkpoint_classes = ("SVGFusionPipeline", "VPVAE")
    compress_component = "transformer"
    _optional_components = ["vae", "transformer_high", "transformer_guide"]

    def __init__(self, transformer: DiT, scheduler, vae: VPVAE | None = None, text_encoder: str = "minilm",
                 transformer_high: DiT | None = None, expert_boundary: int = 1000,
                 high_prediction_type: str = "epsilon", transformer_guide: DiT | None = None,
                 autoguidance: float = 0.0, guide_input_scale: float = 1.0):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler, transformer_high=transformer_high,
                              transformer_guide=transformer_guide)
        self.expert_boundary, self.high_prediction_type = int(expert_boundary), high_prediction_type
        # the guide's default weight, and the factor from this latent scale to the one the guide was trained on
        self.autoguidance, self.guide_input_scale = float(autoguidance), float(guide_input_scale)
        self.text_encoder_name = text_encoder
        self.name = None
        self.precision = None

    # ---- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path=None, torch_dtype=None, device: str = "auto",
                        precision: str | None = "auto", dtype=None, **kwargs) -> "SVGFusionPipeline":
        """A checkpoint name, a pipeline folder (transformer/, vae/, model_index.json) or hub id."""
        return PipelineMixin.from_pretrained.__func__(cls, pretrained_model_name_or_path, device=device,
                                                      dtype=dtype or torch_dtype, precision=precision, **kwargs)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "SVGFusionPipeline":
        from diffusers import DDIMScheduler
        index_path = folder / "model_index.json"
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        if index.get("_class_name") != "SVGFusionPipeline":
            raise ValueError("no model_index.json of an SVGFusionPipeline")
        transformer = load_model(DiT, folder / "transformer", dtype).eval()
        vae = VPVAE.from_pretrained(folder / "vae", torch_dtype=dtype).eval() if (folder / "vae").is_dir() else None
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler") if (folder / "scheduler").is_dir() \
            else make_scheduler("ddim")
        high = load_model(DiT, folder / "transformer_high", dtype).eval() if (folder / "transformer_high").is_dir() \
            else None
        guide = load_model(DiT, folder / "transformer_guide", dtype).eval() \
            if (folder / "transformer_guide").is_dir() else None
        return cls(transformer, scheduler, vae, index.get("text_encoder", "minilm"), high,
                   index.get("expert_boundary", 1000), index.get("high_prediction_type", "epsilon"), guide,
                   index.get("autoguidance", 0.0) if guide is not None else 0.0, index.get("guide_input_scale", 1.0))

    # ---- helpers
    def _scheduler(self, name: str | None):
        if name is None:
            return self.scheduler.__class__.from_config(self.scheduler.config)
        if name not in SCHEDULERS:
            raise InputError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
        c = self.scheduler.config
        return make_scheduler(name, num_train_timesteps=c.num_train_timesteps, beta_schedule=c.beta_schedule,
                              prediction_type=c.prediction_type)

    def denoiser(self):
        """The VS-DiT as the samplers call it, (x, t, **kw) -> the scheduler's prediction type; with a
        transformer_high, the steps at t >= expert_boundary go to it (its prediction rewritten)."""
        low, high, kind = self.transformer, self.transformer_high, self.scheduler.config.prediction_type

        def fn(x, t, **kw):
            upper = t >= self.expert_boundary
            if high is None or not upper.any():
                return low(x.to(low.dtype), t, **kw)
            out = convert_prediction(self.scheduler, x, t, high(x.to(high.dtype), t, **kw),
                                     self.high_prediction_type, kind)
            if upper.all():
                return out
            return torch.where(upper.reshape(-1, *[1] * (x.ndim - 1)), out, low(x.to(low.dtype), t, **kw).to(out.dtype))
        return fn

    def guide(self):
        """The weaker VS-DiT as the sampler's negative model (same prediction type as the scheduler)."""
        guide, scale = self.transformer_guide, self.guide_input_scale

        def fn(x, t, **kw):
            return guide((x * scale).to(guide.dtype), t, **kw)
        return fn

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        name = None if self.text_encoder_name == "minilm" else self.text_encoder_name
        enc = get_text_encoder(name).encode(prompts, return_tokens=True)
        device = self.transformer.device
        return enc.hidden_states.to(device, self.transformer.dtype), enc.mask.to(device)

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> np.ndarray:
        """DiT samples (B, C, rows, 1) -> SVG matrices (B, rows, WIDTH)."""
        z = from_dit(x.float())
        if self.vae is None:
            return RowCodec.decode(z).numpy()
        return self.vae.decode_matrix(z / self.vae.config.scaling_factor).cpu().numpy()

    @torch.no_grad()
    def encode(self, svgs: list[str]) -> torch.Tensor:
        """SVG texts -> DiT latents (B, C, rows, 1), the inverse of `decode`: each SVG is sanitised and
        normalised, written as a matrix and encoded by the VP-VAE with its render (posterior mean)."""
        rows = self.transformer.grid_size[0] * self.transformer.patch_size  # the DiT grid is (rows, 1)
        matrices = []
        for k, text in enumerate(svgs):
            where = f"init SVG {k + 1}" if len(svgs) > 1 else "the init SVG"
            try:
                matrix = svg_to_matrix(normalize_svg(text))
            except UnsupportedSVG as e:
                raise InputError(f"{where} cannot be written as drawing commands: {e}") from None
            except SVGError as e:
                raise InputError(f"{where} is not a usable SVG: {e}") from None
            if len(matrix) > rows:
                raise InputError(f"{where} has {len(matrix)} drawing commands; this model draws at most {rows}")
            matrices.append(matrix)
        batch = torch.from_numpy(np.stack([pad(m, rows) for m in matrices]))
        if self.vae is None:
            return to_dit(RowCodec.encode(batch))
        device, dtype = self.vae.device, self.vae.dtype
        image = torch.stack([render(m, self.vae.config.image_size) for m in matrices])
        mean, _ = self.vae.encode(batch.to(device), image.to(device, dtype))
        return to_dit(mean.float()) * self.vae.config.scaling_factor

    @staticmethod
    def to_svg(matrix: np.ndarray) -> str | None:
        """A decoded matrix -> a sanitised standalone SVG, or None when it draws nothing."""
        try:
            svg = normalize_svg(matrix_to_svg(matrix))
        except SVGError:
            return None
        return None if is_empty(svg) else svg

    # ---- generation
    @torch.no_grad()
    def __call__(self, prompt, num_samples: int = 4, guidance_scale: float = 3.0, num_inference_steps: int = 50,
                 scheduler: str | None = None, seed: int | None = SEED_DEFAULT, generator=None,
                 progress: bool | None = None, image_size: int = 256, batch_size: int = 64,
                 candidates: int = 1, init_svg: str | list[str] | None = None,
                 strength: float = 0.2, autoguidance: float | None = None) -> Text2SVGOutput:
        """`num_samples` SVGs for each prompt (a string or a list). guidance_scale: classifier-free
        guidance (1 = off). candidates > 1: draw that many times more samples and keep, per prompt, the
        `num_samples` the VS-DiT itself rates most about the prompt (`self_scores`; measured with DDIM 50, 4
        candidates take 3.5x the time of one). init_svg: variations of a drawing (one SVG text, or one per
        prompt) redrawn toward the prompt, SDEdit-style: its latent is noised to `strength` (0 = keep it,
        1 = ignore it) and only that last part of the sampling runs. autoguidance: the weight w of the guidance
        away from transformer_guide (None = the checkpoint's default, 0 = off; costs one more DiT call a step)."""
        t0 = time.perf_counter()
        # 1. inputs
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError("give at least one non-empty text prompt")
        longest = max(len(p) for p in prompts)
        if longest > MAX_PROMPT_CHARS:
            raise InputError(f"a prompt of {longest} characters; prompts are limited to {MAX_PROMPT_CHARS} characters")
        if not 1 <= num_samples or len(prompts) * num_samples > MAX_SAMPLES:
            raise InputError(f"between 1 and {MAX_SAMPLES} samples per call; asked for {len(prompts)} x {num_samples}")
        if not 1 <= num_inference_steps <= MAX_STEPS:
            raise InputError(f"num_inference_steps must be between 1 and {MAX_STEPS}, got {num_inference_steps}")
        if guidance_scale < 1.0:
            raise InputError(f"guidance_scale must be >= 1 (1 = no classifier-free guidance), got {guidance_scale}")
        if not 16 <= image_size <= 2048:
            raise InputError(f"image_size must be between 16 and 2048, got {image_size}")
        if not 1 <= candidates <= MAX_CANDIDATES:
            raise InputError(f"candidates must be between 1 and {MAX_CANDIDATES}, got {candidates}")
        autoguidance = self.autoguidance if autoguidance is None else float(autoguidance)
        if not 0.0 <= autoguidance <= MAX_AUTOGUIDANCE:
            raise InputError(f"autoguidance must be between 0 and {MAX_AUTOGUIDANCE} (0 = off), got {autoguidance}")
        if autoguidance and self.transformer_guide is None:
            raise InputError("autoguidance needs a checkpoint with a guide model (transformer_guide/); this one has none")
        guide = dict(negative_model_fn=self.guide(), negative_guidance=autoguidance) if autoguidance else {}
        inits = None
        if init_svg is not None:
            if not 0.0 < strength <= 1.0:
                raise InputError(f"strength must be in (0, 1] (1 = from pure noise), got {strength}")
            inits = [init_svg] if isinstance(init_svg, str) else list(init_svg)
            if len(inits) not in (1, len(prompts)):
                raise InputError(f"give one init SVG or one per prompt; got {len(inits)} for {len(prompts)} prompts")
            inits = self.encode(inits)
        per_prompt = num_samples * candidates
        expanded = [p.strip() for p in prompts for _ in range(per_prompt)]
        if inits is not None:  # each sample starts from its prompt's drawing
            inits = inits.repeat_interleave(per_prompt if len(inits) > 1 else len(expanded), 0)
        generator, seed = self.make_generator(seed, generator)
        # 2. text features, then sampling in batches
        t = self.transformer
        shape = (t.in_channels, *[g * t.patch_size for g in t.grid_size])
        device = t.device
        samples, texts = [], []
        with self.autocast():
            for i in range(0, len(expanded), batch_size):
                context, mask = self.encode_prompts(expanded[i:i + batch_size])
                texts.append((context, mask))
                cfg = dict(guidance_scale=guidance_scale, uncond_kwargs={"context_mask": torch.zeros_like(mask)}) \
                    if guidance_scale != 1.0 else {}
                samples.append(sample(self.denoiser(), (len(context), *shape),
                                      self._scheduler(scheduler), num_inference_steps, generator=generator,
                                      progress=self.progress_enabled(progress), device=device,
                                      self_condition=t.config.self_condition, context=context,
                                      context_mask=mask, **cfg, **guide,
                                      **({} if inits is None else {"init": inits[i:i + batch_size],
                                                                   "strength": strength})).float())
        latents = torch.cat(samples)
        # 3. decoding: latent -> matrix -> sanitised SVG -> render
        matrices = self.decode(latents)
        svgs = [self.to_svg(m) for m in matrices]
        scores = None
        if candidates > 1:  # keep each prompt's best num_samples: valid ones first, then by the DiT's own score
            scores = self.self_scores(latents, expanded, seed, batch_size, texts)
            keep = []
            for start in range(0, len(svgs), per_prompt):
                group = range(start, start + per_prompt)
                keep += sorted(group, key=lambda j: (svgs[j] is None, -scores[j]))[:num_samples]
            svgs, expanded, scores = [svgs[j] for j in keep], [expanded[j] for j in keep], [scores[j] for j in keep]
        blank = Image.new("RGB", (image_size, image_size), "white")
        images = [Image.fromarray(rasterize_svg(s, image_size)) if s is not None else blank for s in svgs]
        valid = sum(s is not None for s in svgs)
        message = "" if valid else "no sample drew anything: try more steps or another seed"
        return Text2SVGOutput(svgs, images, expanded, time.perf_counter() - t0, scores=scores, failed=not valid,
                              message=message,
                              metadata=self.metadata(seed, num_inference_steps, t0, guidance_scale=guidance_scale,
                                                     valid=valid, samples=len(svgs), candidates=candidates,
                                                     autoguidance=autoguidance,
                                                     latent="raw" if self.vae is None else "vae",
                                                     **({} if inits is None else {"strength": strength})))

    @torch.no_grad()
    def self_scores(self, latents: torch.Tensor, prompts: list[str], seed: int | None = 0,
                    batch_size: int = 64, texts: list | None = None) -> list[float]:
        """How much each sampled latent is about its prompt by the VS-DiT's own judgement, higher = more: the drop
        of its denoising error when it reads the prompt (log p(x|c) - log p(x) up to weights: the diffusion
        classifier of Li et al. 2023). The noises are seeded and shared by every sample, so the scores compare
        candidates on equal terms. (Minus the conditional error alone, a likelihood, ranked worse: the card.)
        `texts`: the prompts' (context, mask) per batch of `batch_size`, when the caller has them already."""
        t = self.transformer
        fn = self.denoiser()
        kind = self.scheduler.config.prediction_type
        out = []
        with self.autocast():
            for i in range(0, len(prompts), batch_size):
                context, mask = texts[i // batch_size] if texts else self.encode_prompts(prompts[i:i + batch_size])
                x = latents[i:i + batch_size].to(t.device)
                cond, uncond = [denoising_errors(fn, x, self.scheduler, RERANK_TIMESTEPS, kind,
                                                 generator=torch.Generator().manual_seed(seed or 0),
                                                 context=context, context_mask=m)
                                for m in (mask, torch.zeros_like(mask))]
                out += (uncond - cond).tolist()
        return out

    # ---- `genstudio compress`
    @torch.no_grad()
    def calibration_samples(self, num_samples: int, num_inference_steps: int, generator):
        prompts = ["an icon"] * num_samples
        context, mask = self.encode_prompts(prompts)
        t = self.transformer
        shape = (num_samples, t.in_channels, *[g * t.patch_size for g in t.grid_size])
        return sample(self.denoiser(), shape, self._scheduler(None),
                      num_inference_steps, generator=generator, progress=False, device=t.device,
                      self_condition=t.config.self_condition, context=context, context_mask=mask)
