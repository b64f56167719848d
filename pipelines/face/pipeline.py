"""Identity vector -> faces with Vec2Face: variations of a face, new identities, bounded attribute edits.

    pipe = Vec2FacePipeline.from_pretrained("vec2face-avatars-S")
    out = pipe.from_image("face.png", n=8, std=0.3, seed=0)     # variations of a given face
    out = pipe.from_vector(v, n=8)                              # ... of an identity vector (D,) or (k, D)
    out = pipe.new_identities(100, per_identity=20)             # a synthetic dataset: 100 new people x 20
    out = pipe.edit(v, pose=0.2, max_iters=50)                  # AttrOP: one face, pose moved, same person
    out = pipe(image="face.png", n=8) / pipe(vector=v) / pipe(new_identities=4, per_identity=2)
    out.save("grid.png")       # one row per identity
    out.save("faces/")         # 000.png ...; new identities: faces/id_0000/000.png ...

A checkpoint folder (`genstudio export vec2face`) holds Vec2Face (config.json + safetensors) and,
in recognizer/, the face recogniser it was trained against: `from_image` embeds a face with it, and
every output reports each face's recogniser similarity to its identity vector.

VARIATION comes from two sources, as in the paper: the vector is perturbed (`perturb`, noise of
norm ~std; 0.3 / 0.5 / 0.7 in the paper) and the model's own masking draws which feature-map
tokens are replaced by the vector token (one ratio per batch of up to 64 faces). `std=0` keeps the
vector; `mask_ratio=0.0` makes the model deterministic. Vectors are unit-normalised first, as the
recogniser's vectors the model was trained on are.

SEEDS: identity i of `new_identities(k, seed=s)` is drawn from seed s (all k vectors at once) and its
faces from a seed derived from (s, i), so a dataset written identity by identity (the CLI, resumable)
holds exactly the faces one `new_identities` call returns.

The shipped model knows DiceBear avatar faces (64x64), not photos; official weights are for photos:
`Vec2FacePipeline.from_pretrained("BooBooWu/Vec2Face")` (or a folder / file holding the released
`vec2face_generator.pth` and `arcface-r100-glint360k.pth`) loads them via pipelines/face/official.py.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genstudio.limits import check_time
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput, save_all
from genstudio.render import InputError, flatten_alpha, load_image, pad_square

from . import DEFAULT_MODEL
from .attrop import MAX_ITERS, SCORERS, AttrTarget, attrop
from .recognizer import FaceRecognizer, freeze, without_head
from .vec2face import Vec2Face, perturb, sample_identities

MAX_PER_IDENTITY = 256     # faces of one identity per call
MAX_IMAGES = 10_000        # faces per call (identities x per identity)
BATCH_SIZE = 64


@dataclass(kw_only=True)
class FaceOutput(PipelineOutput):
    images: list                      # PIL RGB faces, identity by identity
    identity: list[int]               # the identity index of each image
    vectors: torch.Tensor             # (N, D) the input vector of each image (after perturbation)
    identities: torch.Tensor          # (k, D) the identity vectors, row = identity index - first_identity
    identity_similarity: list[float] = field(default_factory=list)  # recogniser cos(face, its identity)
    by_identity: bool = False         # save a folder as one sub-folder per identity
    seconds: float = 0.0

    def grid(self) -> Image.Image:
        """One row per identity (columns = the most faces of one identity)."""
        rows = list(dict.fromkeys(self.identity))
        columns = max(self.identity.count(i) for i in rows)
        w, h = self.images[0].size
        sheet = Image.new("RGB", (columns * w, len(rows) * h), "white")
        seen = {i: 0 for i in rows}
        for im, i in zip(self.images, self.identity):
            sheet.paste(im, (seen[i] * w, rows.index(i) * h))
            seen[i] += 1
        return sheet

    def files(self) -> list[str]:
        """The relative file names a folder save writes, in image order."""
        count: dict[int, int] = {}
        names = []
        for i in self.identity:
            k = count.get(i, 0)
            count[i] = k + 1
            names.append(f"id_{i:04d}/{k:03d}.png" if self.by_identity else f"{len(names):03d}.png")
        return names

    def _write(self, path: Path):
        """path.png: the grid; a folder (no suffix): one PNG per face (per identity: id_0000/000.png ...),
        every file renamed into place only once all are written."""
        if path.suffix:
            if path.suffix.lower() != ".png":
                raise InputError(f"output {path} should be a .png file (a grid) or a folder")
            return save_all([(path, lambda tmp: self.grid().save(tmp, format="PNG"))])[0]
        if path.exists() and not path.is_dir():
            raise InputError(f"output {path} is a file; give a folder or a .png name")
        return save_all([(path / name, lambda tmp, im=im: im.save(tmp, format="PNG"))
                         for name, im in zip(self.files(), self.images)])


def identity_seed(seed: int, index: int) -> int:
    """The seed of identity `index`'s faces in a run seeded `seed` (independent streams per identity)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0]) % 2 ** 63


class Vec2FacePipeline(PipelineMixin):
    """Vec2Face + its face recogniser: identity vectors <-> faces."""

    task, paper, default_model = "face", "Vec2Face", DEFAULT_MODEL
    checkpoint_classes = ("Vec2Face",)
    output_suffix = ".png"

    def __init__(self, vec2face: Vec2Face, recognizer: FaceRecognizer):
        c, r = vec2face.config, recognizer.config
        if c.vector_dim != r.embed_dim or c.image_size != r.image_size:
            raise ValueError(f"Vec2Face ({c.vector_dim}-d vectors, {c.image_size}px) and its recogniser "
                             f"({r.embed_dim}-d, {r.image_size}px) do not match")
        self.vec2face = vec2face.eval().requires_grad_(False)
        self.recognizer = freeze(recognizer)
        self.name = None

    # ---- loading
    @classmethod
    def from_pretrained(cls, name_or_path=None, device: str = "auto", dtype=None, precision: str | None = "auto",
                        **kwargs) -> "Vec2FacePipeline":
        """Our export folders as every pipeline; the released Vec2Face weights (the hub id
        BooBooWu/Vec2Face, a folder or a .pth/.safetensors file in their layout) via official.py."""
        from .official import is_official, load_official
        if is_official(name_or_path):
            return load_official(name_or_path, device=device, dtype=dtype, precision=precision, **kwargs)
        return super().from_pretrained(name_or_path, device=device, dtype=dtype, precision=precision, **kwargs)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "Vec2FacePipeline":
        if not (folder / "recognizer" / "config.json").is_file():
            raise FileNotFoundError(f"no recognizer/ in {folder}: a Vec2Face checkpoint keeps its face recogniser "
                                    "there (`genstudio export vec2face` writes both)")
        vec2face = Vec2Face.from_pretrained(folder, torch_dtype=dtype)
        recognizer = without_head(FaceRecognizer.from_pretrained(folder / "recognizer", torch_dtype=dtype))
        return cls(vec2face, recognizer)

    def to(self, device):
        self.vec2face.to(device)
        self.recognizer.to(device)
        return self

    @property
    def vector_dim(self) -> int:
        return int(self.vec2face.config.vector_dim)

    @property
    def image_size(self) -> int:
        return int(self.vec2face.config.image_size)

    # ---- vectors and faces
    def as_vectors(self, vector) -> torch.Tensor:
        """(D,) or (k, D) (tensor, numpy, list) -> (k, D) float unit vectors on the CPU."""
        try:
            v = torch.as_tensor(np.asarray(vector, dtype=np.float32) if not torch.is_tensor(vector) else vector)
        except (TypeError, ValueError):
            raise InputError(f"an identity vector should be numbers of shape ({self.vector_dim},)") from None
        v = v.detach().float().cpu()
        v = v[None] if v.ndim == 1 else v
        if v.ndim != 2 or v.shape[1] != self.vector_dim or not len(v):
            raise InputError(f"identity vectors should have shape ({self.vector_dim},) or (k, {self.vector_dim}), "
                             f"got {tuple(v.shape)}")
        if not torch.isfinite(v).all() or (v.norm(dim=1) < 1e-8).any():
            raise InputError("identity vectors must be finite and non-zero")
        return F.normalize(v, dim=1)

    def load_face(self, image) -> Image.Image:
        """A path or PIL image -> RGB, padded square with its corner colour, at the model's size."""
        if isinstance(image, (str, os.PathLike)):
            image = load_image(image)
        elif isinstance(image, Image.Image):
            image = flatten_alpha(image)
        else:
            raise InputError(f"a face should be an image file or a PIL image, got {type(image).__name__}")
        image = pad_square(image, fill=image.getpixel((0, 0)))
        return image.resize((self.image_size, self.image_size), Image.BICUBIC)

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """The recogniser's unit vectors (N, D) of faces: paths / PIL images, or a (N, 3, S, S) tensor in [-1, 1]."""
        if not torch.is_tensor(images):
            faces = [self.load_face(im) for im in (images if isinstance(images, (list, tuple)) else [images])]
            images = torch.from_numpy(np.stack([np.asarray(f) for f in faces])).permute(0, 3, 1, 2).float() / 127.5 - 1
        device = self.recognizer.device
        with self.autocast():
            out = [self.recognizer(images[i:i + BATCH_SIZE].to(device, self.recognizer.dtype)).float().cpu()
                   for i in range(0, len(images), BATCH_SIZE)]
        return F.normalize(torch.cat(out), dim=1)

    @staticmethod
    def to_pil(images: torch.Tensor) -> list[Image.Image]:
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(p) for p in pixels]

    @torch.no_grad()
    def render(self, vectors: torch.Tensor, generator: torch.Generator, mask_ratio: float | None = None,
               progress: bool = False) -> torch.Tensor:
        """Faces (N, 3, S, S) in [-1, 1] of vectors (N, D), in batches (one masking ratio per batch)."""
        out = []
        device = self.vec2face.device
        with self.autocast():
            for i in self.progress_bar(range(0, len(vectors), BATCH_SIZE), disable=not progress, desc="faces"):
                check_time()
                out.append(self.vec2face(vectors[i:i + BATCH_SIZE].to(device), mask_ratio=mask_ratio,
                                         generator=generator).float().cpu())
        return torch.cat(out)

    def _faces(self, identities: torch.Tensor, n: int, std: float, generator, mask_ratio, progress,
               first_identity: int = 0) -> dict:
        """n perturbed faces per identity row, identity by identity."""
        if not 0.0 <= std <= 5.0:
            raise InputError(f"std must be between 0 and 5, got {std}")
        vectors = identities.repeat_interleave(n, 0)
        if std > 0:
            vectors = perturb(vectors, std, generator=generator)
        faces = self.render(vectors, generator, mask_ratio, progress)
        similarity = (self.embed(faces) * F.normalize(vectors, dim=1)).sum(1)
        return dict(images=self.to_pil(faces), vectors=vectors,
                    identity=[first_identity + i for i in range(len(identities)) for _ in range(n)],
                    identity_similarity=[round(float(s), 4) for s in similarity])

    @staticmethod
    def _check_counts(k: int, n: int) -> None:
        if not 1 <= n <= MAX_PER_IDENTITY:
            raise InputError(f"between 1 and {MAX_PER_IDENTITY} faces per identity per call, got {n}")
        if k < 1 or k * n > MAX_IMAGES:
            raise InputError(f"between 1 and {MAX_IMAGES:,} faces per call; asked for {k} identities x {n}")

    # ---- the three ways in
    def from_vector(self, vector, n: int = 8, std: float = 0.3, mask_ratio: float | None = None,
                    seed: int | None = SEED_DEFAULT, generator=None, progress: bool | None = None,
                    first_identity: int = 0) -> FaceOutput:
        """n faces of each identity vector (D,) or (k, D): perturbations of norm ~`std` plus the
        model's masking variation (mask_ratio None = drawn; 0.0 = none)."""
        t0 = time.perf_counter()
        identities = self.as_vectors(vector)
        self._check_counts(len(identities), int(n))
        generator, seed = self.make_generator(seed, generator)
        faces = self._faces(identities, int(n), float(std), generator, mask_ratio, self.progress_enabled(progress),
                            first_identity)
        return FaceOutput(**faces, identities=identities, by_identity=len(identities) > 1,
                          seconds=time.perf_counter() - t0,
                          metadata=self.metadata(seed, None, t0, mode="vector", n=int(n), std=float(std)))

    def from_image(self, image, n: int = 8, std: float = 0.3, mask_ratio: float | None = None,
                   seed: int | None = SEED_DEFAULT, generator=None, progress: bool | None = None) -> FaceOutput:
        """n faces of the identity the recogniser sees in `image` (a path or PIL image; padded square
        and resized to the model's size)."""
        t0 = time.perf_counter()
        vector = self.embed(image)
        out = self.from_vector(vector, n=n, std=std, mask_ratio=mask_ratio, seed=seed, generator=generator,
                               progress=progress)
        out.metadata.update(mode="image", seconds=round(time.perf_counter() - t0, 3))
        out.seconds = time.perf_counter() - t0
        return out

    def sample_identities(self, k: int, max_similarity: float = 0.3, seed: int | None = SEED_DEFAULT,
                          generator=None) -> torch.Tensor:
        """k new identity vectors (k, D), pairwise cosine < max_similarity (the paper's loose constraint)."""
        if not 0.0 < max_similarity <= 1.0:
            raise InputError(f"max_similarity must be in (0, 1], got {max_similarity}")
        generator, _ = self.make_generator(seed, generator)
        try:
            return sample_identities(int(k), self.vector_dim, max_similarity, generator)
        except (RuntimeError, ValueError) as e:
            raise InputError(str(e)) from None

    def new_identities(self, k: int, per_identity: int = 8, max_similarity: float = 0.3, std: float = 0.3,
                       mask_ratio: float | None = None, seed: int | None = SEED_DEFAULT,
                       progress: bool | None = None) -> FaceOutput:
        """k new people x `per_identity` faces each (a synthetic face dataset)."""
        t0 = time.perf_counter()
        self._check_counts(int(k), int(per_identity))
        _, seed = self.make_generator(seed)
        identities = self.sample_identities(k, max_similarity, seed=seed)
        parts = [self.from_vector(v, per_identity, std, mask_ratio, seed=identity_seed(seed, i), progress=False,
                                  first_identity=i)
                 for i, v in enumerate(self.progress_bar(identities, disable=not self.progress_enabled(progress),
                                                         desc="identities"))]
        return FaceOutput(images=[im for p in parts for im in p.images], identity=[i for p in parts for i in p.identity],
                          vectors=torch.cat([p.vectors for p in parts]), identities=identities,
                          identity_similarity=[s for p in parts for s in p.identity_similarity], by_identity=True,
                          seconds=time.perf_counter() - t0,
                          metadata=self.metadata(seed, None, t0, mode="new_identities", identities=int(k),
                                                 per_identity=int(per_identity), std=float(std),
                                                 max_similarity=float(max_similarity)))

    def edit(self, vector, pose: float | None = None, expression: float | None = None,
             targets: Sequence[AttrTarget] = (), max_iters: int = 50, max_seconds: float | None = None,
             min_similarity: float = 0.8, tolerance: float = 0.05, lr: float = 0.01,
             seed: int | None = SEED_DEFAULT) -> FaceOutput:
        """AttrOP: move one identity vector (D,) until its face meets the pose / expression targets
        (attrop.py's proxies; or any `targets`), keeping cos to the original >= min_similarity.
        Always returns within `max_iters` (<= 500) model evaluations / `max_seconds`: the best face
        found, with metadata["attrop"] = iterations, met, stopped, scores, similarity."""
        t0 = time.perf_counter()
        identities = self.as_vectors(vector)
        if len(identities) != 1:
            raise InputError(f"edit takes one identity vector, got {len(identities)}")
        if not 1 <= int(max_iters) <= MAX_ITERS:
            raise InputError(f"max_iters must be between 1 and {MAX_ITERS}, got {max_iters}")
        if max_seconds is not None and max_seconds <= 0:
            raise InputError(f"max_seconds must be positive, got {max_seconds}")
        if not 0.0 <= min_similarity <= 1.0:
            raise InputError(f"min_similarity must be between 0 and 1, got {min_similarity}")
        wanted = list(targets)
        for name, value, low, high in (("pose", pose, -1.0, 1.0), ("expression", expression, 0.0, 1.0)):
            if value is not None:
                if not low <= float(value) <= high:
                    raise InputError(f"{name} must be between {low:g} and {high:g}, got {value}")
                wanted.append(AttrTarget(SCORERS[name], float(value), tolerance, name))
        if not wanted:
            raise InputError("edit needs a target: pose=, expression= or targets=")
        _, seed = self.make_generator(seed)  # the optimisation is deterministic; recorded for the contract
        device = self.vec2face.device
        with self.autocast():
            result = attrop(lambda v, mask_ratio: self.vec2face(v.to(device), mask_ratio=mask_ratio),
                            identities[0].to(device), wanted, max_iters=int(max_iters), max_seconds=max_seconds,
                            min_similarity=float(min_similarity), lr=lr)
        face = result.image[None].float().cpu()
        best = result.vector[None].float().cpu()
        similarity = float((self.embed(face) * identities).sum())
        return FaceOutput(images=self.to_pil(face), identity=[0], vectors=best, identities=identities,
                          identity_similarity=[round(similarity, 4)], seconds=time.perf_counter() - t0,
                          metadata=self.metadata(seed, result.iterations, t0, mode="edit", attrop=result.summary(),
                                                 max_iters=int(max_iters)))

    # ---- one entry for the CLI, the app and `genstudio batch`
    def __call__(self, image=None, vector=None, new_identities: int | None = None, n: int | None = None,
                 per_identity: int = 8, std: float = 0.3, pose: float | None = None,
                 expression: float | None = None, max_iters: int = 50, max_seconds: float | None = None,
                 seed: int | None = SEED_DEFAULT, progress: bool | None = None, **kwargs) -> FaceOutput:
        """Exactly one input:
        - `image=` a face (path / PIL) or `vector=` an identity (D,) / (k, D): `n` (default 8) faces each;
          with `pose=` / `expression=`, one edited face instead (AttrOP, `max_iters`, `max_seconds`).
        - `new_identities=k`: k new people x `per_identity` faces.
        A positional argument is taken as an image (so `genstudio batch` can hand over files)."""
        if sum(x is not None for x in (image, vector, new_identities)) != 1:
            raise InputError("give exactly one of image=, vector= or new_identities=")
        if new_identities is not None:
            if pose is not None or expression is not None:
                raise InputError("pose / expression edit one given identity (image= or vector=), not new identities")
            return self.new_identities(int(new_identities), per_identity=per_identity, std=std, seed=seed,
                                       progress=progress, **kwargs)
        if pose is not None or expression is not None:
            if n not in (None, 1):
                raise InputError("an edit returns one face; n is for variations")
            v = self.embed(image) if image is not None else vector
            return self.edit(v, pose=pose, expression=expression, max_iters=max_iters, max_seconds=max_seconds,
                             seed=seed, **kwargs)
        n = 8 if n is None else int(n)
        if image is not None:
            return self.from_image(image, n=n, std=std, seed=seed, progress=progress, **kwargs)
        return self.from_vector(vector, n=n, std=std, seed=seed, progress=progress, **kwargs)
