"""Text / class -> 3D shape with G3PT over VAT tokens, and mesh -> a few hundred bytes -> mesh.

    pipe = G3PTPipeline.from_pretrained("shape-S")           # or a folder, or a `genstudio train g3pt` run
    out = pipe("a torus", num_samples=4, seed=0)             # or pipe(class_name="torus")
    out.meshes, out.tokens, out.empty                        # trimesh per sample (None: no surface), bytes
    out.save("shapes/")                                      # 000.obj + 000.vat ...; out.save("torus.glb")
    rec = pipe.reconstruct("bunny.obj", scales_kept=4)       # the mesh from its first 4 scales of tokens
    rec.num_bytes[0], rec.meshes[0]

A checkpoint folder holds the tokenizer in vat/ (VATTokenizer) and the generator in g3pt/ (G3PT), the
model card and summary.json at the top. A g3pt training run folder also loads: its final/ weights and
the VAT its options name (`--set vat=...`).

CONDITIONS follow what the generator was trained on (g3pt_train.Conditioner): a class id (its
config's `class_names`) and/or a prompt through the frozen MiniLM. A class name given to a
text model becomes the prompt it was trained with (CLASS_PROMPTS); a prompt given to a class-only
model must name one of its classes ("a small torus" -> torus), else the call is refused.

EMPTY SHAPES: a sampled token sequence whose occupancy never crosses 0.5 has no surface. That sample
is flagged (`empty[i]`, `meshes[i] is None`) and skipped by `save`; when no sample has a surface the
output is `failed` with a message, as the contract asks, rather than raising.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from genstudio.limits import check_time
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, save_all
from genstudio.render import InputError

from . import DEFAULT_MODEL
from .g3pt import CLASS_PROMPTS, G3PT, ShapeCondition, encode_prompts
from .vat import VATTokenizer, mesh_from_occupancy, tokens_to_bytes

MAX_SAMPLES = 16               # shapes per call: each is a grid of resolution^3 occupancy queries
MIN_RESOLUTION, MAX_RESOLUTION = 16, 256   # marching-cubes grid side (256^3 = 16.8M queries)
MAX_PROMPT_CHARS = 300
MAX_GUIDANCE = 20.0
MAX_TEMPERATURE = 5.0
MESH_FORMATS = (".obj", ".glb", ".ply")


@dataclass(kw_only=True)
class ShapeOutput(PipelineOutput):
    meshes: list                      # trimesh.Trimesh per sample; None where the field has no surface
    tokens: list[bytes]               # per sample: every scale's indices (`genstudio shape decode` reads them)
    num_bytes: list[int]              # per sample: the bytes of the scales that were decoded
    empty: list[bool]                 # per sample: True = no surface (a flagged failure, nothing saved)
    file_format: str = ".obj"         # what a folder save writes: .obj / .glb / .ply
    seconds: float = 0.0

    @property
    def good(self) -> list[int]:
        """The indices of the samples with a surface."""
        return [i for i, e in enumerate(self.empty) if not e]

    def paths_for(self, path: Path) -> list[tuple[int, Path]]:
        """(sample index, mesh path) for each sample with a surface: a mesh file name (one shape;
        `name_<i>.obj` for several) or a folder (`<i:03d>.obj`, its tokens beside it as `<i:03d>.vat`)."""
        good = self.good
        if path.suffix:
            if path.suffix.lower() not in MESH_FORMATS:
                raise InputError(f"output {path} should end in {', '.join(MESH_FORMATS)} or be a folder")
            if len(good) == 1:
                return [(good[0], path)]
            return [(i, path.with_name(f"{path.stem}_{i}{path.suffix}")) for i in good]
        if path.exists() and not path.is_dir():
            raise InputError(f"output {path} is a file; give a folder or a mesh file name")
        suffix = self.file_format if self.file_format.startswith(".") else f".{self.file_format}"
        if suffix.lower() not in MESH_FORMATS:
            raise InputError(f"format {self.file_format!r}: use one of {', '.join(MESH_FORMATS)}")
        return [(i, path / f"{i:03d}{suffix.lower()}") for i in good]

    def _write(self, path: Path) -> list[Path]:
        """Every mesh (and, in a folder, its tokens) or none: written beside, renamed once all are whole."""
        writes = []
        for i, target in self.paths_for(path):
            writes.append((target, _mesh_writer(self.meshes[i], target.suffix.lower()[1:])))
            if not path.suffix:
                writes.append((target.with_suffix(".vat"), lambda tmp, data=self.tokens[i]: tmp.write_bytes(data)))
        return save_all(writes)


def _mesh_writer(mesh, file_type: str):
    def write(tmp: Path):
        data = mesh.export(file_type=file_type)
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return write


def _bounded(name: str, value, low, high, kind=float):
    """`value` as `kind`, within [low, high], or an InputError naming the argument."""
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, float) and kind is int and not value.is_integer():
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not (low <= number <= high):  # also refuses NaN
        raise InputError(f"{name} must be between {low} and {high}, got {value!r}")
    return number


class G3PTPipeline(PipelineMixin):
    """VATTokenizer + G3PT: a prompt or class -> multi-scale tokens -> occupancy -> meshes."""

    task, paper, default_model = "shape", "G3PT", DEFAULT_MODEL
    checkpoint_classes = ("G3PT", "VATTokenizer")
    output_suffix = ".obj"

    def __init__(self, vat: VATTokenizer, g3pt: G3PT, text_encoder: str | None = None):
        if vat.config.codebook_size != g3pt.config.codebook_size or list(vat.scales) != list(g3pt.scales):
            raise ValueError(f"the G3PT (codebook {g3pt.config.codebook_size}, scales {g3pt.scales}) was not trained "
                             f"on this VAT (codebook {vat.config.codebook_size}, scales {vat.scales})")
        self.vat = vat.eval().requires_grad_(False)
        self.g3pt = g3pt.eval().requires_grad_(False)
        self.text_encoder = None if text_encoder in (None, "", "minilm") else str(text_encoder)
        self.name = None

    # ---- loading
    @classmethod
    def _from_folder(cls, folder: Path, dtype, text_encoder: str | None = None, **kwargs) -> "G3PTPipeline":
        vat_dir, g3pt_dir, options = locate_parts(folder)
        vat = VATTokenizer.from_pretrained(vat_dir, torch_dtype=dtype)
        g3pt = G3PT.from_pretrained(g3pt_dir, torch_dtype=dtype)
        return cls(vat, g3pt, text_encoder=text_encoder or options.get("text_encoder"))

    def to(self, device):
        self.vat.to(device)
        self.g3pt.to(device)
        return self

    # ---- what the model knows
    @property
    def class_names(self) -> list[str]:
        """The classes a call may name: the generator's own (its config's names; `class_<k>` for a model saved
        without them) or, for a text-only model, the classes whose training prompts it knows."""
        if self.g3pt.config.num_classes:
            names = self.g3pt.config.class_names
            return list(names) if names else [f"class_{k}" for k in range(self.g3pt.config.num_classes)]
        return list(CLASS_PROMPTS) if self.uses_text else []

    @property
    def uses_text(self) -> bool:
        return bool(self.g3pt.config.context_dim)

    @property
    def num_scales(self) -> int:
        return len(self.vat.scales)

    def class_index(self, class_name: str) -> int:
        names = [n.lower() for n in self.class_names]
        key = str(class_name).strip().lower()
        if key not in names:
            known = ", ".join(self.class_names) or "none (this model is not class-conditioned)"
            raise InputError(f"unknown class {class_name!r}; this model knows: {known}")
        return names.index(key)

    def _class_in_prompt(self, prompt: str) -> int | None:
        """The class a prompt names (a class name as a word, or a class's training prompt), else None."""
        text = prompt.strip().lower()
        for k, name in enumerate(self.class_names):
            if text == CLASS_PROMPTS.get(name, "").lower() or re.search(rf"\b{re.escape(name.lower())}\b", text):
                return k
        return None

    def condition(self, prompt: str | None, class_name: str | None, batch: int) -> ShapeCondition | None:
        """The ShapeCondition of `batch` rows the generator was trained on, or None (unconditional)."""
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError("prompt must be non-empty text")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise InputError(f"prompt is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
        has_classes = self.g3pt.config.num_classes > 0
        if (prompt is not None or class_name is not None) and not (has_classes or self.uses_text):
            raise InputError("this model is unconditional; it takes neither a class nor a prompt")
        label = self.class_index(class_name) if class_name is not None else None
        if prompt is None and label is not None and self.uses_text:
            # a text model meets a class as the prompt it was trained with
            prompt = CLASS_PROMPTS.get(self.class_names[label], f"a {self.class_names[label]}")
        if prompt is not None and has_classes and label is None:
            label = self._class_in_prompt(prompt)
            if label is None and not self.uses_text:
                raise InputError(f"this model is conditioned on classes only and the prompt {prompt!r} names "
                                 f"none of them: {', '.join(self.class_names)}")
        if prompt is None and label is None:
            return None
        c = ShapeCondition()
        device = self.g3pt.device
        if label is not None and has_classes:
            c.labels = torch.full((batch,), label, dtype=torch.long, device=device)
        if prompt is not None and self.uses_text:
            states, mask = encode_prompts([prompt], self.text_encoder)
            if states.shape[-1] != self.g3pt.config.context_dim:
                raise ValueError(f"the text encoder gives {states.shape[-1]}-d states; this G3PT was trained on "
                                 f"{self.g3pt.config.context_dim}-d ones (pass its text_encoder=)")
            c.text_states, c.text_mask = states.expand(batch, -1, -1).to(device), mask.expand(batch, -1).to(device)
        return c

    # ---- tokens -> meshes
    @torch.no_grad()
    def tokens_to_meshes(self, indices: list[torch.Tensor], resolution: int, progress: bool = False) -> list:
        """Indices per scale (B, n_k) (a coarse prefix decodes too) -> a trimesh per row, None without a surface."""
        meshes = []
        batch = len(indices[0])
        bar = self.progress_bar(range(batch), desc="meshes", disable=not progress, leave=False)
        for b in bar:
            check_time()
            with self.autocast():
                triplane = self.vat.decode([idx[b:b + 1].to(self.vat.device) for idx in indices])
                grid = torch.sigmoid(self.vat.occupancy_grid(triplane, resolution))[0]
            try:
                meshes.append(mesh_from_occupancy(grid))
            except ValueError:  # the field never crosses 0.5: no surface, flagged by the caller
                meshes.append(None)
        return meshes

    def _bytes_of(self, indices: list[torch.Tensor], row: int) -> bytes:
        return tokens_to_bytes([idx[row] for idx in indices], self.vat.config.codebook_size)

    def _scales_kept(self, scales) -> int:
        return self.num_scales if scales is None else _bounded("scales", scales, 1, self.num_scales, int)

    @staticmethod
    def _outcome(empty: list[bool], what: str) -> tuple[bool, str]:
        if all(empty):
            return True, (f"{what}: the decoded occupancy has no surface (it never crosses 0.5); try another "
                          "seed, a lower temperature or more scales")
        if any(empty):
            return False, f"{sum(empty)} of {len(empty)} samples decoded to no surface (flagged, not saved)"
        return False, ""

    # ---- generation
    @torch.no_grad()
    def __call__(self, prompt: str | None = None, class_name: str | None = None, num_samples: int = 1,
                 guidance_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0,
                 seed: int | None = SEED_DEFAULT, resolution: int = 64, scales: int | None = None,
                 generator=None, progress: bool | None = None) -> ShapeOutput:
        """`num_samples` shapes of a prompt and/or class (neither: unconditional). `scales`: decode only the
        first N scales (coarse shapes); tokens always hold every scale."""
        started = time.perf_counter()
        # 1. Inputs, bounded before any work.
        num_samples = _bounded("num_samples", num_samples, 1, MAX_SAMPLES, int)
        resolution = _bounded("resolution", resolution, MIN_RESOLUTION, MAX_RESOLUTION, int)
        guidance_scale = _bounded("guidance_scale", guidance_scale, 0.0, MAX_GUIDANCE)
        temperature = _bounded("temperature", temperature, 0.0, MAX_TEMPERATURE)
        top_k = _bounded("top_k", top_k, 0, self.g3pt.config.codebook_size, int)
        kept = self._scales_kept(scales)
        condition = self.condition(prompt, class_name, num_samples)
        show = self.progress_enabled(progress)
        # 2. Sample the token scales coarse to fine, seeded (the generator lives where the sampling runs).
        generator, seed = self.make_generator(seed, generator)
        if generator.device != self.g3pt.device:
            generator = torch.Generator(self.g3pt.device).manual_seed(seed)
        with self.autocast():
            indices = self.g3pt.generate(condition, num_samples, guidance_scale if condition is not None else 1.0,
                                         temperature, top_k, generator=generator, progress=show)
        indices = [i.cpu() for i in indices]
        # 3. Decode the kept scales to occupancy and meshes.
        meshes = self.tokens_to_meshes(indices[:kept], resolution, show)
        tokens = [self._bytes_of(indices, b) for b in range(num_samples)]
        kept_bytes = len(self._bytes_of(indices[:kept], 0))
        empty = [m is None for m in meshes]
        failed, message = self._outcome(empty, "every sample")
        return ShapeOutput(meshes=meshes, tokens=tokens, num_bytes=[kept_bytes] * num_samples, empty=empty,
                           failed=failed, message=message, seconds=time.perf_counter() - started,
                           metadata=self.metadata(seed, self.num_scales, started, prompt=prompt, class_name=class_name,
                                                  samples=num_samples, guidance_scale=guidance_scale,
                                                  temperature=temperature, top_k=top_k, resolution=resolution,
                                                  scales_kept=kept, empty=sum(empty)))

    # ---- reconstruction (the app's slider, `genstudio shape encode/decode` in one call)
    @torch.no_grad()
    def reconstruct(self, mesh, scales_kept: int | None = None, resolution: int = 64, num_points: int = 2048,
                    seed: int | None = SEED_DEFAULT) -> ShapeOutput:
        """A mesh (path or trimesh) -> VAT tokens -> the mesh of its first `scales_kept` scales.
        num_bytes[0]: what those scales take; tokens[0]: every scale (a .vat file's content)."""
        started = time.perf_counter()
        resolution = _bounded("resolution", resolution, MIN_RESOLUTION, MAX_RESOLUTION, int)
        num_points = _bounded("num_points", num_points, 16, 100_000, int)
        kept = self._scales_kept(scales_kept)
        _, seed = self.make_generator(seed)
        points, normals = surface_samples(mesh, num_points, seed)
        with self.autocast():
            enc = self.vat.encode(points.to(self.vat.device), normals.to(self.vat.device))
        indices = [i.cpu() for i in enc.indices]
        meshes = self.tokens_to_meshes(indices[:kept], resolution)
        tokens, kept_bytes = self._bytes_of(indices, 0), len(self._bytes_of(indices[:kept], 0))
        failed, message = self._outcome([meshes[0] is None], "the reconstruction")
        return ShapeOutput(meshes=meshes, tokens=[tokens], num_bytes=[kept_bytes], empty=[meshes[0] is None],
                           failed=failed, message=message, seconds=time.perf_counter() - started,
                           metadata=self.metadata(seed, None, started, mode="reconstruct", scales_kept=kept,
                                                  tokens_kept=sum(self.vat.scales[:kept]), bytes_kept=kept_bytes,
                                                  bytes_total=len(tokens), resolution=resolution))


# ---------------------------------------------------------------- helpers the CLI shares

def surface_samples(mesh, count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A mesh (path or trimesh; checked by the core's loader) -> (1, count, 3) points and normals in
    VAT's frame (centred, largest side 2 * EXTENT), seeded."""
    import trimesh
    from genstudio.formats.mesh import load_mesh_input
    from .data import normalize_mesh
    source = load_mesh_input(mesh)
    if not isinstance(source, trimesh.Trimesh):
        name = mesh if isinstance(mesh, (str, Path)) else "input"
        raise InputError(f"{name} holds points, not a mesh: the VAT encoder needs a surface with normals")
    shape = normalize_mesh(source.copy())
    points, face = shape.sample(int(count), return_index=True, seed=int(seed) % 2**32)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return as_tensor(points), as_tensor(shape.face_normals[face])


def locate_parts(folder: Path) -> tuple[Path, Path, dict]:
    """(VAT folder, G3PT folder, the g3pt run's options) of a checkpoint folder (vat/ + g3pt/) or of a
    `genstudio train g3pt` run (final/ + the VAT its options name)."""
    folder = Path(folder)
    if (folder / "vat" / "config.json").is_file() and (folder / "g3pt" / "config.json").is_file():
        return folder / "vat", folder / "g3pt", _options(folder / "g3pt") or _options(folder)
    options = _options(folder)
    if options.get("vat") is not None or (folder / "final" / "config.json").is_file():
        from genstudio.export import run_weights
        vat = Path(str(options.get("vat") or ""))
        if not str(vat) or not vat.exists():  # a relative path recorded from the run's own working folder
            vat = folder.parent / vat.name if str(vat) else vat
        if not str(vat) or not vat.exists():
            raise FileNotFoundError(f"{folder} is a g3pt run whose VAT ({options.get('vat')!r}) is not here")
        return run_weights(vat), run_weights(folder), options
    raise FileNotFoundError(f"{folder} holds no vat/ and g3pt/ subfolders: a shape checkpoint keeps its "
                            "VATTokenizer in vat/ and its G3PT in g3pt/")


def _options(folder: Path) -> dict:
    """The recipe options a run (or a checkpoint that kept its run's record) wrote in train_config.json."""
    try:
        record = json.loads((folder / "train_config.json").read_text())
    except (OSError, ValueError):
        return {}
    options = record.get("options") if isinstance(record, dict) else None
    return options if isinstance(options, dict) else {}
