"""Text / image -> V consistent views of one object with MV-Adapter on a frozen base UNet.

    pipe = MVAdapterPipeline.from_pretrained("mv-base-S", "mv-adapter-S")   # or just ("mv-adapter-S")
    out = pipe("a red teapot", num_views=6, elevation=0, num_inference_steps=30, seed=0)
    out = pipe(image="front.png", azimuths=[0, 90, 180, 270])               # image-to-multiview
    out.images, out.grid                                                    # PIL views, one grid
    out.save("out/")                                                        # grid.png + view_00.png ...

SAMPLING IS TRAINING'S (train.py, `adapter_recipe.loss_fn`): the base's beta schedule with the
adapter's SNR shift (`shift_noise_schedule`, shift_scale from the adapter run's record), ONE timestep
for all views of the object, MiniLM token states (each caption at its own length, zero-padded, with
its mask) as encoder_hidden_states, the camera condition (Plücker maps -> T2IAdapter features as
`down_intrablock_additional_residuals`) in every branch, and the reference features from the same
frozen UNet at t = 0 on the reference image (or on zeros, the null image training drops to) with the
branch's caption. Classifier-free guidance drops what training dropped: the caption ("") and the
image (zeros); with `image_guidance_scale` the two are guided separately (InstructPix2Pix-style).

AZIMUTHS are degrees from the front view (0 = front, 90 = the object's right side, as the reference's
six views 0, 45, 90, 180, 270, 315); a `CameraSet` is taken as it is (world coordinates).

CHECKPOINTS: the base is a diffusers UNet folder (its config.json + safetensors, or unet/), with an
optional scheduler/ (else the mv-base recipe's DDPM) and vae/ (a latent-space base, the CPU recipe's
`mv-base vae=`: latents are vae.config.scaling_factor times the VAE's, the factor the recipe measured
and saved in that vae/; the reference image is encoded by its posterior mode and views are decoded by
the VAE, `low_memory` one view at a time; camera maps are drawn at the image size, so the adapter's
T2IAdapter downscale_factor must be the VAE's factor, as the mv-adapter recipe sets it). The adapter is an `MVAdapter` folder or training
run (train_config.json gives shift_scale and the text encoder), or a released `.safetensors` file /
the hub id "huanngzh/mv-adapter" (official.py; then the reference's constant orthographic camera
embedding is used, and the base must be the matching SD UNet with its vae/ and text_encoder/).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, checkpoint_classes, save_all
from genstudio.render import InputError, load_image, pad_square, to_tensor, to_uint8

from . import DEFAULT_BASE, DEFAULT_MODEL, MAX_PROMPT_CHARS, MAX_STEPS, MAX_VIEWS
from .attention import MVAdapter, add_mv_adapter, encode_reference
from .cameras import REFERENCE_AZIMUTHS, CameraSet, orbit_cameras, reference_ortho_maps
from .condition import camera_condition, shift_noise_schedule

FRONT_AZIMUTH = REFERENCE_AZIMUTHS[0]   # world azimuth of the front view (-90: the reference's convention)
SAMPLERS = ("ddim", "dpm", "ddpm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# ---------------------------------------------------------------- output

@dataclass
class MultiViewOutput(PipelineOutput):
    images: list                  # V PIL images, view by view
    grid: Image.Image             # the views side by side (rows of at most 6)
    azimuths: list[float]         # degrees from the front view
    elevations: list[float]
    prompt: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def _write(self, path: Path):
        """A folder: grid.png + view_00.png ... (all or none); an image path: the grid alone."""
        def writer(image):
            return lambda tmp: image.save(tmp, format=Image.registered_extensions()[tmp.suffix.lower()])
        if path.suffix:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{path}: write a folder or an image ({', '.join(IMAGE_SUFFIXES)})")
            return save_all([(path, writer(self.grid))])[0]
        path.mkdir(parents=True, exist_ok=True)
        views = [(path / f"view_{k:02d}.png", writer(im)) for k, im in enumerate(self.images)]
        return save_all([(path / "grid.png", writer(self.grid)), *views])


def make_grid(images: list[Image.Image], columns: int = 6) -> Image.Image:
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    grid = Image.new("RGB", (columns * w, rows * h), "white")
    for k, im in enumerate(images):
        grid.paste(im, ((k % columns) * w, (k // columns) * h))
    return grid


# ---------------------------------------------------------------- checkpoint helpers

def _declares(folder: Path, name: str) -> bool:
    return name in checkpoint_classes(folder)


def _run_options(folder: Path) -> dict:
    """The recipe options a training run (or an exported checkpoint, which keeps train_config.json) recorded."""
    try:
        return dict(json.loads((Path(folder) / "train_config.json").read_text()).get("options") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def _official_source(adapter, variant: str | None) -> bool:
    """A released adapter: a .safetensors file, or a hub id / folder when a variant is named."""
    return adapter is not None and (str(adapter).endswith(".safetensors") or variant is not None)


def _official_variant(path: str, state_keys, variant: str | None) -> str:
    from .official import OFFICIAL_VARIANTS
    if variant is not None:
        return variant
    for name, (filename, _) in OFFICIAL_VARIANTS.items():
        if Path(path).name == filename:
            return name
    return "i2mv_sd21" if any("_ref." in k for k in state_keys) else "t2mv_sd21"


def _load_base(folder: Path, dtype):
    """(unet, the base's training scheduler, vae or None, text encoder name or None) of a base folder."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from genstudio.diffusion import make_scheduler
    from genstudio.export import run_weights
    declared = checkpoint_classes(folder)
    if declared and "UNet2DConditionModel" not in declared:
        raise ValueError(f"base {folder} is a {declared[0]} checkpoint, not a diffusers UNet2DConditionModel")
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").exists() else run_weights(folder)
    unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=dtype).eval().requires_grad_(False)
    sched_dir = next((d for d in (folder / "scheduler", folder) if (d / "scheduler_config.json").exists()), None)
    scheduler = DDPMScheduler.from_config(DDPMScheduler.load_config(sched_dir)) if sched_dir else \
        make_scheduler("ddpm", prediction_type="epsilon")  # what the mv-base recipe trains with
    vae_dir = folder / "vae"
    if not vae_dir.is_dir() and (folder / "vae.json").is_file():
        # a shipped base keeps its VAE as a checkpoint of its own (each <= 30 MB): vae.json names it
        from genstudio.hub import resolve
        vae_dir = resolve(json.loads((folder / "vae.json").read_text())["checkpoint"])
    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=dtype).eval() if vae_dir.is_dir() else None
    text = str(folder / "text_encoder") if (folder / "text_encoder").is_dir() else None
    return unet, scheduler, vae, text


# ---------------------------------------------------------------- the pipeline

class MVAdapterPipeline(DiffusionPipeline, PipelineMixin):
    """A frozen base UNet with MV-Adapter installed (+ scheduler, optional VAE): prompt / image -> views."""

    model_cpu_offload_seq = "unet->vae"
    task, paper, default_model = "multiview", "MV-Adapter", DEFAULT_MODEL
    output_suffix = ".png"
    checkpoint_classes = ("MVAdapter", "UNet2DConditionModel")
    _optional_components = ["vae"]

    def __init__(self, unet, adapter: MVAdapter, scheduler, vae=None, shift_scale: float = 8.0,
                 text_encoder: str = "minilm", camera_embedding: str = "plucker"):
        super().__init__()
        self.register_modules(unet=unet, adapter=adapter, scheduler=scheduler, vae=vae)
        self.shift_scale, self.text_encoder_name = float(shift_scale), text_encoder
        self.camera_embedding = camera_embedding   # "plucker" (ours) | "reference" (the released weights)
        self.name = None
        self.precision = None

    # ---- loading
    @classmethod
    def from_pretrained(cls, base=None, adapter=None, *, device: str = "auto", dtype=None, torch_dtype=None,
                        precision: str | None = "auto", official_variant: str | None = None,
                        **kwargs) -> "MVAdapterPipeline":
        """`base` (default mv-base-S) and `adapter` (default mv-adapter-S): checkpoint names, folders,
        training runs or hub ids; one name that is an adapter (`from_pretrained("mv-adapter-S")`) is
        the adapter on the default base. `adapter` may be a released MV-Adapter (.safetensors file, or
        a hub id with `official_variant`, see official.py)."""
        from genstudio.hub import resolve
        if adapter is not None and not _official_source(adapter, official_variant):
            resolve(adapter)  # both missing: name the adapter (the task's checkpoint) first
        if base is not None:
            first = cls.check_checkpoint(resolve(base))  # another task's checkpoint: refused, naming its command
            if adapter is None and _declares(first, "MVAdapter"):
                base, adapter = None, base
        if adapter is None:
            from .official import OFFICIAL_REPO
            adapter = OFFICIAL_REPO if official_variant else DEFAULT_MODEL
        base = DEFAULT_BASE if base is None else base
        if _official_source(adapter, official_variant):
            # the base folder is what the mixin checks; the released file has no config to check
            primary, parts = base, {"adapter": adapter, "official_variant": official_variant}
        else:
            resolve(adapter)  # a missing adapter is named before the base
            primary, parts = adapter, {"base": resolve(base)}  # a missing base fails here, by its name
        pipe = PipelineMixin.from_pretrained.__func__(cls, primary, device=device, dtype=dtype or torch_dtype,
                                                      precision=precision, **parts, **kwargs)
        pipe.name = str(adapter)
        return pipe

    @classmethod
    def _from_folder(cls, folder: Path, dtype, base: Path | None = None, adapter=None,
                     official_variant: str | None = None, **kwargs) -> "MVAdapterPipeline":
        from genstudio.export import run_weights
        if base is None:  # the released adapter route: `folder` is the base
            return cls._from_official(folder, adapter, official_variant, dtype)
        if not _declares(folder, "MVAdapter"):
            raise ValueError(f"{folder} holds no MVAdapter (config.json _class_name)")
        unet, scheduler, vae, text = _load_base(base, dtype)
        loaded = MVAdapter.from_pretrained(run_weights(folder), torch_dtype=dtype).eval()
        if loaded.config.cond_in_channels != 6:
            raise ValueError(f"{folder}: a geometry-conditioned adapter ({loaded.config.cond_in_channels} channels) "
                             "needs position/normal maps of a mesh; this pipeline gives cameras only")
        mv = add_mv_adapter(unet, loaded.config.num_views, adapter=loaded)
        options = {**_run_options(base), **_run_options(folder)}
        return cls(unet, mv, scheduler, vae, shift_scale=float(options.get("shift_scale", 8.0)),
                   text_encoder=text or options.get("text_encoder", "minilm"))

    @classmethod
    def _from_official(cls, base: Path, source, variant: str | None, dtype) -> "MVAdapterPipeline":
        from .official import OFFICIAL_REPO, _official_file, load_official
        unet, scheduler, vae, text = _load_base(base, dtype)
        source = OFFICIAL_REPO if source is None else source
        if variant is None and not str(source).endswith(".safetensors"):
            raise ValueError("name the released variant (official_variant=, e.g. 't2mv_sd21') for a hub id or folder")
        path = _official_file(source, variant) if variant is not None else Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"released MV-Adapter file {path} does not exist")
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            variant = _official_variant(str(path), list(f.keys()), variant)
        if variant.startswith(("tg2mv", "ig2mv")):
            raise ValueError(f"the released {variant} adapter is geometry-guided (a mesh's position/normal maps); "
                             "this pipeline gives cameras only")
        mv = load_official(unet, path, variant, num_views=6)
        # the reference: 8x shift, interpolated (scripts/inference_*), its own constant camera embedding
        return cls(unet, mv, scheduler, vae, shift_scale=8.0, text_encoder=text or "minilm",
                   camera_embedding="reference")

    # ---- pieces of a call
    def encode_text(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, L, D) token states and (N, L) masks as the recipe's CaptionTokens makes them: each
        caption cut to its own length, zero-padded to the longest."""
        from genstudio.text import get_text_encoder
        name = self.text_encoder_name
        encoder = get_text_encoder(None if name == "minilm" else name)
        rows = []
        for caption in captions:
            enc = encoder.encode([caption], return_tokens=True)
            n = int(enc.mask[0].sum())
            rows.append((enc.hidden_states[0, :n].float().cpu(), enc.mask[0, :n].cpu()))
        length = max(r[0].shape[0] for r in rows)
        states = torch.stack([torch.nn.functional.pad(s, (0, 0, 0, length - len(s))) for s, _ in rows])
        mask = torch.stack([torch.nn.functional.pad(m, (0, length - len(m))) for _, m in rows])
        if states.shape[-1] != self.unet.config.cross_attention_dim:
            raise ValueError(f"text encoder {name!r} gives {states.shape[-1]}-d states; the UNet expects "
                             f"{self.unet.config.cross_attention_dim}")
        return states.to(self.unet.device, self.unet.dtype), mask.to(self.unet.device)

    @property
    def image_size(self) -> int:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 1
        return int(self.unet.config.sample_size) * factor

    def make_cameras(self, num_views, azimuths, elevation, cameras, projection: str) -> tuple[CameraSet, list, list]:
        """(cameras, azimuths from the front, elevations): from a CameraSet, an azimuth list or V even views."""
        if cameras is not None:
            if not isinstance(cameras, CameraSet):
                raise InputError(f"cameras must be a CameraSet, got {type(cameras).__name__}")
            pos = cameras.positions
            az = torch.rad2deg(torch.atan2(pos[:, 1], pos[:, 0])) - FRONT_AZIMUTH
            el = torch.rad2deg(torch.asin((pos[:, 2] / pos.norm(dim=-1)).clamp(-1, 1)))
            found = cameras, [float((a + 180) % 360 - 180) for a in az], el.tolist()
        else:
            if azimuths is None and self.camera_embedding == "reference" and num_views in (None, 6):
                azimuths = [a - FRONT_AZIMUTH for a in REFERENCE_AZIMUTHS]  # the views the released weights know
            if azimuths is None:
                views = 6 if num_views is None else int(num_views)
                if not 1 <= views <= MAX_VIEWS:
                    raise InputError(f"num_views must be between 1 and {MAX_VIEWS}, got {views}")
                azimuths = [360.0 * k / views for k in range(views)]
            try:
                azimuths = [float(a) for a in azimuths]
            except (TypeError, ValueError):
                raise InputError(f"azimuths must be numbers (degrees from the front), got {azimuths!r}") from None
            if not all(math.isfinite(a) for a in azimuths):
                raise InputError(f"azimuths must be finite degrees, got {azimuths}")
            try:
                cams = orbit_cameras([a + FRONT_AZIMUTH for a in azimuths], elevation, projection=projection)
            except ValueError as e:
                raise InputError(str(e)) from None
            found = cams, azimuths, [float(e) for e in torch.as_tensor(elevation, dtype=torch.float32).flatten()
                                     .expand(len(azimuths)).tolist()]
        views = len(found[0])
        if not 1 <= views <= MAX_VIEWS:
            raise InputError(f"between 1 and {MAX_VIEWS} views per call; got {views}")
        if num_views is not None and int(num_views) != views:
            raise InputError(f"num_views={num_views} but the cameras give {views} views")
        return found

    def camera_features(self, cameras: CameraSet) -> list[torch.Tensor]:
        """The adapter's T2IAdapter features of the views' condition maps (computed once per call)."""
        size = int(self.unet.config.sample_size) * int(self.adapter.config.cond_downscale_factor)
        maps = reference_ortho_maps(cameras, size) if self.camera_embedding == "reference" else cameras.plucker(size)
        return self.adapter(camera_condition(maps).to(self.unet.device, self.unet.dtype))

    def prepare_image(self, image) -> torch.Tensor:
        """A path / PIL image -> (1, 3, S, S) in [-1, 1]: alpha on white, padded square (white), resized."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        if not isinstance(image, Image.Image):
            raise InputError(f"image must be a path or a PIL image, got {type(image).__name__}")
        from genstudio.render import flatten_alpha
        return to_tensor(pad_square(flatten_alpha(image)), self.image_size)[None]

    def _to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.unet.device, self.unet.dtype)
        if self.vae is None:
            return pixels
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def _decode(self, x: torch.Tensor, one_at_a_time: bool) -> torch.Tensor:
        if self.vae is None:
            return x.float()
        z = x / self.vae.config.scaling_factor
        if one_at_a_time:  # peak memory of one view's decoder activations
            return torch.cat([self.vae.decode(z[k:k + 1]).sample.float() for k in range(len(z))])
        return self.vae.decode(z).sample.float()

    def sampler(self, name: str):
        """The base's schedule as a `name` sampler, shifted as the adapter was trained; 'trailing'
        spacing so that the first step starts from pure noise (t = T - 1, where the shift acts most)."""
        from genstudio.diffusion import SCHEDULERS
        if name not in SAMPLERS:
            raise InputError(f"unknown scheduler {name!r}; choose from {', '.join(SAMPLERS)}")
        extra = {"algorithm_type": "dpmsolver++", "solver_order": 2} if name == "dpm" else {}
        plain = SCHEDULERS[name].from_config(self.scheduler.config, timestep_spacing="trailing", **extra)
        return shift_noise_schedule(plain, self.shift_scale)

    # ---- generation
    @torch.no_grad()
    def __call__(self, prompt: str | None = None, image=None, num_views: int | None = None, azimuths=None,
                 elevation: float | list = 0.0, cameras: CameraSet | None = None, projection: str = "orthographic",
                 num_inference_steps: int = 30, guidance_scale: float = 3.0, image_guidance_scale: float | None = None,
                 scheduler: str = "ddim", seed: int | None = SEED_DEFAULT, generator=None, progress: bool | None = None,
                 low_memory: bool = False) -> MultiViewOutput:
        """V views of one object from a `prompt`, a reference `image` (front view) or both. Views: a
        `CameraSet`, `azimuths` (degrees from the front) or `num_views` evenly spaced (default 6), at
        `elevation` (one or per view). guidance_scale: classifier-free guidance on the prompt and image
        together (1 = off); image_guidance_scale (with both): the image's own scale. low_memory: the
        guidance branches one after another and the VAE one view at a time (same result, less memory)."""
        from genstudio.limits import check_time
        t0 = time.perf_counter()
        # 1. inputs
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
            raise InputError(f"prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        prompt = prompt.strip() if prompt else None
        if prompt is None and image is None:
            raise InputError("give a prompt, a reference image or both")
        uses_ref = "ref" in self.adapter.branches(self.adapter.attention_names[0]).kinds
        if image is not None and not uses_ref:
            raise InputError("this adapter was trained without reference attention: text-to-multiview only")
        if not 1 <= int(num_inference_steps) <= min(MAX_STEPS, self.scheduler.config.num_train_timesteps):
            raise InputError(f"num_inference_steps must be between 1 and {MAX_STEPS}, got {num_inference_steps}")
        for label, value in (("guidance_scale", guidance_scale), ("image_guidance_scale", image_guidance_scale)):
            if value is not None and not (math.isfinite(value) and 1.0 <= value <= 50.0):
                raise InputError(f"{label} must be between 1 (no guidance) and 50, got {value}")
        cams, azimuth_list, elevation_list = self.make_cameras(num_views, azimuths, elevation, cameras, projection)
        views = len(cams)
        reference = self.prepare_image(image) if image is not None else None
        sampler = self.sampler(scheduler)
        generator, seed = self.make_generator(seed, generator)

        # 2. the guidance branches (caption, image or None): unconditional first, as training dropped them
        text = prompt or ""
        if image_guidance_scale is not None and prompt and reference is not None:
            branches, weights = [("", None), ("", reference), (text, reference)], (image_guidance_scale, guidance_scale)
        elif guidance_scale != 1.0:
            branches, weights = [("", None), (text, reference)], (guidance_scale,)
        else:
            branches, weights = [(text, reference)], ()
        with self.autocast():
            states, masks = self.encode_text([caption for caption, _ in branches])  # one common length
            refs = None
            if uses_ref:  # the adapter always saw reference features: the image, or zeros (its null image)
                null = torch.zeros(1, 3, self.image_size, self.image_size)
                refs = [encode_reference(self.unet, self._to_model_space(null if ref is None else ref), states[k:k + 1],
                                         encoder_attention_mask=masks[k:k + 1]) for k, (_, ref) in enumerate(branches)]
            residuals = self.camera_features(cams)
            self.adapter.num_views, self.adapter.aspect = views, 1.0

            def predict(x, t, ks):
                """Noise prediction of branches `ks` (one UNet batch of len(ks) * V)."""
                n = len(ks)
                kwargs = {"ref_hidden_states": {key: torch.cat([refs[k][key] for k in ks])
                                                for key in refs[ks[0]]}} if refs is not None else None
                return self.unet(x.repeat(n, 1, 1, 1), t,
                                 encoder_hidden_states=torch.cat([states[k:k + 1].expand(views, -1, -1) for k in ks]),
                                 encoder_attention_mask=torch.cat([masks[k:k + 1].expand(views, -1) for k in ks]),
                                 down_intrablock_additional_residuals=[r.repeat(n, 1, 1, 1) for r in residuals],
                                 cross_attention_kwargs=kwargs).sample

            # 3. sampling: one timestep for all views, CFG combined as trained
            unet = self.unet
            latent = (views, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
            x = torch.randn(latent, generator=generator).to(unet.device, unet.dtype) * sampler.init_noise_sigma
            sampler.set_timesteps(int(num_inference_steps), device=unet.device)
            bar = PipelineMixin.progress_bar(self, total=len(sampler.timesteps), desc="MV-Adapter sampling",
                                             disable=not self.progress_enabled(progress))
            for t in sampler.timesteps:
                check_time()  # --max-seconds
                model_in = sampler.scale_model_input(x, t)
                ks = list(range(len(branches)))
                if low_memory:
                    eps = [predict(model_in, t, [k]) for k in ks]
                else:
                    eps = list(predict(model_in, t, ks).chunk(len(ks)))
                out = eps[0]
                for k, w in enumerate(weights, start=1):  # u + w1 (e1 - u) [+ w2 (e2 - e1)]
                    out = out + w * (eps[k] - eps[k - 1])
                x = sampler.step(out, t, x, generator=generator).prev_sample
                bar.update()
            bar.close()
            # 4. views
            pixels = self._decode(x, one_at_a_time=low_memory)
        images = [Image.fromarray(a) for a in to_uint8(pixels)]
        conditioning = "+".join(k for k, v in (("text", prompt), ("image", reference)) if v is not None)
        return MultiViewOutput(images, make_grid(images), azimuth_list, elevation_list, prompt,
                               time.perf_counter() - t0,
                               metadata=self.metadata(seed, int(num_inference_steps), t0, views=views,
                                                      guidance_scale=guidance_scale, conditioning=conditioning,
                                                      image_guidance_scale=image_guidance_scale,
                                                      azimuths=azimuth_list, elevations=elevation_list,
                                                      shift_scale=self.shift_scale, scheduler=scheduler))
