"""Dense mesh / point cloud -> artist-like mesh: `MeshAnythingPipeline.from_pretrained(...)(input)`.

    pipe = MeshAnythingPipeline.from_pretrained("meshanything-urdf-XS")
    out = pipe("scan.obj", max_faces=400, seed=0)     # or a trimesh, or an (N, 3) / (N, 6) array
    out.save("artist.glb")                            # out.mesh (trimesh), out.vertices, out.faces, out.tokens

Steps: 1. read the input (a mesh is optionally remeshed densely first, `marching_cubes=True`, as the
reference's `--mc`; points + normals are sampled on its surface; an (N, 3) cloud gets PCA normals),
2. normalise the points as in training, 3. generate tokens under the grammar (greedy, or sampled
with temperature/top-k/top-p), 4. decode, map back to the input's frame, clean up (merge vertices,
drop degenerate/duplicate faces, consistent outward normals). A model that writes no face gives
`failed=True` with the reason in `message`; nothing empty is ever saved.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genstudio.render import InputError, atomic_path

from .data import dense_remesh, normalize_points, sample_surface
from .tokenize import postprocess

DEFAULT_MODEL = "meshanything-urdf-XS"
MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
OUTPUT_SUFFIXES = (".obj", ".glb", ".ply", ".stl", ".off")
MIN_POINTS = 16


@dataclass
class MeshOutput:
    mesh: object | None            # trimesh.Trimesh in the input's frame; None when failed
    vertices: np.ndarray           # (V, 3) float
    faces: np.ndarray              # (F, 3) int
    tokens: np.ndarray             # the generated token ids (after BOS, without EOS)
    message: str = ""
    failed: bool = False
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

    def save(self, path) -> Path:
        """Write .obj/.glb/.ply/.stl/.off atomically; refuses (ValueError) when the model failed."""
        path = Path(path)
        if self.failed or self.mesh is None:
            raise ValueError(f"no mesh to write to {path}: {self.message}")
        if path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {path} should end in one of {', '.join(OUTPUT_SUFFIXES)}")
        data = self.mesh.export(file_type=path.suffix.lower()[1:])
        with atomic_path(path) as tmp:
            tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path


# ---- 1. Inputs ----

def load_input(source):
    """A path (mesh file or .npy points), a trimesh, or an array -> trimesh.Trimesh or (N, 3|6) float array.
    Raises InputError with the reason for anything unusable."""
    import trimesh
    name = "input"
    if isinstance(source, (str, os.PathLike)):
        path, name = Path(source), str(source)
        if not path.exists():
            raise InputError(f"input {path} does not exist")
        if path.is_dir():
            raise InputError(f"input {path} is a folder; expected a mesh file ({', '.join(MESH_SUFFIXES)}) or .npy points")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                source = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise InputError(f"{path} is not a readable .npy array ({e})") from None
        elif suffix in MESH_SUFFIXES:
            try:
                source = trimesh.load(path, force="mesh")
            except Exception as e:  # trimesh raises many kinds on a broken file
                raise InputError(f"{path} is not a readable mesh ({type(e).__name__}: {str(e)[:160]})") from None
        else:
            raise InputError(f"input {path}: unknown file type {suffix!r}; expected {', '.join(MESH_SUFFIXES)} or .npy")
    if isinstance(source, trimesh.Scene):
        source = source.dump(concatenate=True) if source.geometry else trimesh.Trimesh()
    if isinstance(source, trimesh.PointCloud):
        source = np.asarray(source.vertices)
    if isinstance(source, trimesh.Trimesh):
        if len(source.faces) == 0:
            if len(source.vertices) == 0:
                raise InputError(f"{name} is empty: no faces and no vertices")
            source = np.asarray(source.vertices)  # a point-cloud file read as a mesh
        else:
            _check_finite(np.asarray(source.vertices), name)
            if not source.area > 0:
                raise InputError(f"{name} is degenerate: its faces have no area")
            return source
    array = np.asarray(source, dtype=np.float64) if not isinstance(source, np.ndarray) else source.astype(np.float64)
    if array.ndim != 2 or array.shape[1] not in (3, 6):
        raise InputError(f"{name}: expected points of shape (N, 3) or (N, 6) (xyz + normal), got {array.shape}")
    if len(array) < MIN_POINTS:
        raise InputError(f"{name} has {len(array)} points; at least {MIN_POINTS} are needed")
    _check_finite(array, name)
    if not np.ptp(array[:, :3], axis=0).max() > 0:
        raise InputError(f"{name} is degenerate: all points coincide")
    return array


def _check_finite(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")


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


def condition_from(source, num_points: int, marching_cubes: bool = False, resolution: int = 64,
                   seed: int = 0) -> np.ndarray:
    """Loaded input -> (num_points, 6) points + normals in the input's frame."""
    rng = np.random.default_rng(seed)
    if isinstance(source, np.ndarray):
        cloud = source if source.shape[1] == 6 else np.concatenate([source, estimate_normals(source)], 1)
        if np.any(np.linalg.norm(cloud[:, 3:], axis=1) < 1e-8):
            raise InputError("input: some normals are zero; give unit normals or (N, 3) points only")
        return cloud[rng.choice(len(cloud), num_points, replace=len(cloud) < num_points)]
    vertices, faces = np.asarray(source.vertices, dtype=np.float64), np.asarray(source.faces)
    if marching_cubes:
        vertices, faces = dense_remesh(vertices, faces, resolution)
    points, normals = sample_surface(vertices, faces, num_points, rng)
    return np.concatenate([points, normals], 1)


# ---- The pipeline ----

class MeshAnythingPipeline:
    def __init__(self, model, device: str = "cpu"):
        self.model, self.device = model, device
        self.name: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str = "auto") -> "MeshAnythingPipeline":
        """A shipped checkpoint name, a local folder or a hub id (see genstudio.hub.resolve)."""
        import torch
        from transformers.utils import logging as hf_logging
        from genstudio.device import resolve_device
        from genstudio.hub import resolve
        from .meshanything import MeshAnythingModel
        dev = resolve_device(device)
        folder = resolve(name_or_path)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = MeshAnythingModel.from_pretrained(folder, dtype=torch.float32)
        except (FileNotFoundError, OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ValueError(f"{folder} could not be loaded as a MeshAnything checkpoint ({first})") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        pipe = cls(model.to(dev).eval(), device=dev)
        pipe.name = str(name_or_path)
        return pipe

    def __call__(self, points_or_mesh, max_faces: int | None = None, seed: int | None = 0, temperature: float = 0.0,
                 top_k: int = 50, top_p: float = 0.95, marching_cubes: bool = False, mc_resolution: int = 64,
                 progress: bool = False, fallback: bool = True) -> MeshOutput:
        """One input -> MeshOutput. temperature 0 = greedy; > 0 samples (with top_k / top_p).
        max_faces: None = the checkpoint's (what it was trained for). fallback: when greedy decoding
        yields no faces (a small model can loop on one vertex), decode again with the reference's
        sampling mode (temperature 1, top-k 50, top-p 0.95) and say so in the message."""
        import torch
        if max_faces is None:
            max_faces = int(self.model.config.max_faces)
        if max_faces < 1:
            raise InputError(f"max_faces must be >= 1 (got {max_faces})")
        t0 = time.perf_counter()
        source_path = str(points_or_mesh) if isinstance(points_or_mesh, (str, os.PathLike)) else None
        # 1. read and sample the condition
        source = load_input(points_or_mesh)
        input_faces = None if isinstance(source, np.ndarray) else len(source.faces)
        cloud = condition_from(source, self.model.config.num_points, marching_cubes, mc_resolution,
                               seed=0 if seed is None else seed)
        # 2. normalise as in training
        points, center, half = normalize_points(cloud)
        # 3. generate
        sampling = temperature > 0
        tokens = self.model.generate_tokens(
            torch.from_numpy(points).float()[None].to(self.device), max_faces=max_faces, do_sample=sampling,
            temperature=temperature if sampling else 1.0, top_k=top_k if sampling else 0,
            top_p=top_p if sampling else 1.0, seed=seed, progress=progress)[0]
        # 4. decode, back to the input's frame, clean up
        quantized = self.model.tokens_to_mesh(tokens)
        vertices = self.model.mesh_vertices(quantized) * 2 * half + center
        mesh = postprocess(vertices, quantized.faces)
        seconds = time.perf_counter() - t0
        how = f"sampled (T={temperature:g}, top-k {top_k}, top-p {top_p:g}, seed {seed})" if sampling else "greedy"
        tokens_np = tokens.numpy()
        if len(mesh.faces) == 0 and fallback and not sampling:
            out = self(source,
                       max_faces=max_faces, seed=seed, temperature=1.0, top_k=50, top_p=0.95,
                       marching_cubes=marching_cubes, mc_resolution=mc_resolution, progress=progress, fallback=False)
            out.message = f"greedy decoding gave no faces, so {out.message}"
            out.seconds += seconds
            out.source = source_path
            return out
        if len(mesh.faces) == 0:
            return MeshOutput(None, np.zeros((0, 3)), np.zeros((0, 3), np.int64), tokens_np, failed=True,
                              message=f"the model produced no faces ({len(tokens_np)} tokens, {how})",
                              seconds=seconds, source=source_path, input_faces=input_faces)
        limit = quantized.num_faces >= max_faces
        message = f"{how}, {len(tokens_np)} tokens" + (f"; stopped at the {max_faces}-face limit" if limit else "")
        return MeshOutput(mesh, np.asarray(mesh.vertices), np.asarray(mesh.faces), tokens_np, message=message,
                          seconds=seconds, source=source_path, input_faces=input_faces,
                          extra={"hit_face_limit": limit})
