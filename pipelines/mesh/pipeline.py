"""Dense mesh / point cloud -> artist-like mesh: `MeshAnythingPipeline.from_pretrained(...)(input)`.

    pipe = MeshAnythingPipeline.from_pretrained("meshanything-urdf-XS")
    out = pipe("scan.obj", max_faces=400, seed=0)     # or a trimesh, or an (N, 3) / (N, 6) array
    out.save("artist.glb")                            # out.mesh (trimesh), out.vertices, out.faces, out.tokens

Steps: 1. read the input (a mesh is optionally remeshed densely first, `marching_cubes=True`, as the
reference's `--mc`; points + normals are sampled on its surface; an (N, 3) cloud gets PCA normals),
2. normalise the points as in training, 3. generate tokens under the grammar (greedy, or sampled
with temperature/top-k/top-p), 4. decode, map back to the input's frame, clean up (merge vertices,
drop degenerate/duplicate faces, consistent outward normals). With sampling, `num_candidates=N` draws
N meshes in one batch and keeps the one whose surface is nearest the input points (Chamfer distance;
our addition: the input is known at inference, so a bad draw can be told from a good one). A model
that writes no face gives `failed=True` with the reason in `message`; nothing empty is ever saved.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genstudio.device import cpu_threads
from genstudio.formats.mesh import load_mesh_input, write_mesh
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput
from genstudio.render import InputError

from . import DEFAULT_MODEL
from .data import dense_remesh, normalize_points, sample_surface
from .tokenize import postprocess

MAX_CANDIDATES = 16  # draws per input (one batch): bounds the time and memory of `num_candidates`
FIT_POINTS = 8192    # input-surface points the surface fit draws from
SMALL_DECODER = 512  # hidden size up to which CPU decoding runs on one thread (XS: 192, official: 1024)


@dataclass
class MeshOutput(PipelineOutput):
    mesh: object | None            # trimesh.Trimesh in the input's frame; None when failed
    vertices: np.ndarray           # (V, 3) float
    faces: np.ndarray              # (F, 3) int
    tokens: np.ndarray             # the generated token ids (after BOS, without EOS)
    seconds: float = 0.0
    source: str | None = None      # the input's path, when it came from a file
    input_faces: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_vertices(self) -> int:
        return len(self.vertices)

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def _write(self, path: Path) -> Path:
        """.obj/.glb/.ply/.stl/.off, atomically."""
        if self.mesh is None:
            raise ValueError(f"nothing to write to {path}: {self.message}")
        return write_mesh(path, self.mesh)


# ---- 1. Inputs ----

def estimate_normals(points: np.ndarray, neighbours: int = 16) -> np.ndarray:
    """Normals of an (N, 3) cloud: the smallest principal direction of each point's neighbourhood,
    flipped to point away from the centroid (a heuristic: right for blob-like shapes)."""
    from scipy.spatial import cKDTree
    k = min(neighbours, len(points))
    _, index = cKDTree(points).query(points, k)
    local = points[index] - points[index].mean(1, keepdims=True)
    normals = np.linalg.eigh(np.einsum("nki,nkj->nij", local, local))[1][:, :, 0]
    flip = np.einsum("ij,ij->i", normals, points - points.mean(0)) < 0
    normals[flip] *= -1
    return normals


def condition_from(source, num_points: int, seed: int = 0) -> np.ndarray:
    """Loaded input (a mesh, remeshed by the caller if asked, or points) -> (num_points, 6) points +
    normals in the input's frame."""
    rng = np.random.default_rng(seed)
    if isinstance(source, np.ndarray):
        cloud = source if source.shape[1] == 6 else np.concatenate([source, estimate_normals(source)], 1)
        if np.any(np.linalg.norm(cloud[:, 3:], axis=1) < 1e-8):
            raise InputError("input: some normals are zero; give unit normals or (N, 3) points only")
        return cloud[rng.choice(len(cloud), num_points, replace=len(cloud) < num_points)]
    points, normals = sample_surface(np.asarray(source.vertices, dtype=np.float64), np.asarray(source.faces),
                                     num_points, rng)
    return np.concatenate([points, normals], 1)


def distance_to_input(mesh, points: np.ndarray, seed: int = 0, count: int = 2000) -> float:
    """Chamfer distance between a mesh's surface (area-sampled) and the input points; inf for a
    mesh without area (what ranks several draws of one input)."""
    from genstudio.metrics import chamfer_distance
    try:
        surface, _ = sample_surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), count,
                                    np.random.default_rng(seed))
    except ValueError:
        return float("inf")
    return chamfer_distance(surface, points)


# ---- The pipeline ----

class MeshAnythingPipeline(PipelineMixin):
    task, paper, default_model = "mesh", "MeshAnything", DEFAULT_MODEL
    output_suffix = ".obj"  # what `genstudio batch` writes
    checkpoint_classes = ("MeshAnythingModel", "genstudio-meshanything")
    workload = "decode"

    def __init__(self, model, device: str = "cpu", precision=None):
        self.model, self.device = model, device
        self.set_precision(precision)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "MeshAnythingPipeline":
        from .meshanything import MeshAnythingModel
        return cls(MeshAnythingModel.from_pretrained(folder, dtype=dtype).eval(), **kwargs)

    def to(self, device) -> "MeshAnythingPipeline":
        self.model.to(device)
        return self

    def __call__(self, points_or_mesh, max_faces: int | None = None, seed: int | None = SEED_DEFAULT,
                 temperature: float | None = None, top_k: int = 50, top_p: float = 0.95, marching_cubes: bool = False,
                 mc_resolution: int = 64, progress: bool | None = None, fallback: bool = True,
                 generator=None, constrained: bool = True, num_candidates: int | None = None,
                 fit_steps: int | None = None) -> MeshOutput:
        """One input -> MeshOutput. temperature 0 = greedy; > 0 samples (with top_k / top_p); None = the
        checkpoint's `default_temperature` (greedy unless its config names one).
        max_faces: None = the checkpoint's (what it was trained for). fallback: when greedy decoding
        yields no faces (a small model can loop on one vertex), decode again with the reference's
        sampling mode (temperature 1, top-k 50, top-p 0.95) and say so in the message.
        constrained: decode under the full grammar (default), which also forbids zero-area and repeated
        faces, so greedy and sampled decodes always end with faces; False = syntax and ordering only.
        num_candidates: with sampling, draw this many meshes in one batch and keep the one nearest the input
        points (Chamfer); None = the checkpoint's `default_candidates` (1 unless its config names one).
        fit_steps: move the kept mesh's vertices to fit the input's surface (`fit.py`; faces unchanged; the
        decoder's vertices stay in `extra["unfitted_vertices"]`); None = the checkpoint's `default_fit_steps`
        (0 unless its config names some), 0 = off (the reference's output)."""
        import torch
        from .fit import MAX_FIT_STEPS, fit_to_points
        if max_faces is None:
            max_faces = int(self.model.config.max_faces)
        if max_faces < 1:
            raise InputError(f"max_faces must be >= 1 (got {max_faces})")
        t0 = time.perf_counter()
        _, seed = self.make_generator(seed, generator)
        # Off unless asked (None = off), unlike the pipelines whose bars follow set_progress_bar_config:
        # mesh calls run in tests and the app without `progress`, and a bar there would only be noise.
        progress = bool(progress)
        source_path = str(points_or_mesh) if isinstance(points_or_mesh, (str, os.PathLike)) else None
        # 1. read and sample the condition
        source = load_mesh_input(points_or_mesh)
        input_faces = None if isinstance(source, np.ndarray) else len(source.faces)
        surface = source  # what the condition (and the surface fit) sample: the input, remeshed once if asked
        if marching_cubes and not isinstance(source, np.ndarray):
            import trimesh
            surface = trimesh.Trimesh(*dense_remesh(np.asarray(source.vertices, np.float64), np.asarray(source.faces),
                                                    mc_resolution), process=False)
        cloud = condition_from(surface, self.model.config.num_points, seed=seed)
        # 2. normalise as in training
        points, center, half = normalize_points(cloud)
        # 3. generate
        if temperature is None:
            temperature = self.model.config.default_temperature
        sampling = temperature > 0
        if num_candidates is None:
            num_candidates = self.model.config.default_candidates
        if not 1 <= int(num_candidates) <= MAX_CANDIDATES:
            raise InputError(f"num_candidates must be between 1 and {MAX_CANDIDATES} (got {num_candidates})")
        draws = int(num_candidates) if sampling else 1
        if fit_steps is None:
            fit_steps = self.model.config.default_fit_steps
        if not 0 <= int(fit_steps) <= MAX_FIT_STEPS:
            raise InputError(f"fit_steps must be between 0 and {MAX_FIT_STEPS} (got {fit_steps})")
        # a small decoder's per-token ops are too small to share: one CPU thread (see cpu_threads)
        threads = 1 if str(self.device) == "cpu" and self.model.transformer.hidden_size <= SMALL_DECODER else None
        with cpu_threads(threads), self.autocast():  # precision: bf16 only where the device runs it natively
            rows = self.model.generate_tokens(
                torch.from_numpy(points).float()[None].repeat(draws, 1, 1).to(self.device), max_faces=max_faces,
                do_sample=sampling, temperature=temperature if sampling else 1.0, top_k=top_k if sampling else 0,
                top_p=top_p if sampling else 1.0, seed=seed, progress=progress, constrained=constrained)
        # 4. decode, back to the input's frame, clean up (several draws: the one nearest the input)
        decoded = []
        for tokens in rows:
            quantized = self.model.tokens_to_mesh(tokens)
            mesh = postprocess(self.model.mesh_vertices(quantized) * 2 * half + center, quantized.faces)
            score = distance_to_input(mesh, cloud[:, :3], seed) if draws > 1 else 0.0
            decoded.append((score, tokens, quantized, mesh))
        _, tokens, quantized, mesh = min(decoded, key=lambda d: d[0])
        extra = {}
        if fit_steps and len(mesh.faces):  # 5. fit the vertices to a denser sample of the input's surface
            import trimesh
            target = condition_from(surface, FIT_POINTS, seed=seed + 1)[:, :3]
            extra["unfitted_vertices"] = np.asarray(mesh.vertices)
            fitted = fit_to_points(mesh.vertices, mesh.faces, target, int(fit_steps), seed=seed)
            mesh = trimesh.Trimesh(fitted, np.asarray(mesh.faces), process=False)
        seconds = time.perf_counter() - t0
        how = f"sampled (T={temperature:g}, top-k {top_k}, top-p {top_p:g}, seed {seed})" if sampling else "greedy"
        if draws > 1:
            how += f", nearest the input of {draws} draws"
        if extra:
            how += f", fitted to the input's surface ({fit_steps} steps)"
        tokens_np = tokens.numpy()
        if len(mesh.faces) == 0 and fallback and not sampling:
            # the input as already remeshed (not twice), with the caller's draws and fit
            out = self(surface, max_faces=max_faces, seed=seed, temperature=1.0, top_k=50, top_p=0.95,
                       progress=progress, fallback=False, constrained=constrained, num_candidates=num_candidates,
                       fit_steps=fit_steps)
            out.message = f"greedy decoding gave no faces, so {out.message}"
            out.seconds += seconds
            out.source, out.input_faces = source_path, input_faces
            out.metadata["seconds"] = round(out.seconds, 3)
            return out
        if len(mesh.faces) == 0:
            return MeshOutput(None, np.zeros((0, 3)), np.zeros((0, 3), np.int64), tokens_np, failed=True,
                              message=f"the model produced no faces ({len(tokens_np)} tokens, {how})",
                              seconds=seconds, source=source_path, input_faces=input_faces,
                              metadata=self.metadata(seed, None, t0, max_faces=max_faces))
        limit = quantized.num_faces >= max_faces
        message = f"{how}, {len(tokens_np)} tokens" + (f"; stopped at the {max_faces}-face limit" if limit else "")
        return MeshOutput(mesh, np.asarray(mesh.vertices), np.asarray(mesh.faces), tokens_np, message=message,
                          seconds=seconds, source=source_path, input_faces=input_faces,
                          extra={"hit_face_limit": limit, **extra},
                          metadata=self.metadata(seed, None, t0, max_faces=max_faces))
