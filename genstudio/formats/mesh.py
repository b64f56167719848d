"""Meshes and point clouds: reading .obj/.ply/.glb/.gltf/.stl/.off meshes and .npy point arrays with
clear errors, and writing a mesh atomically (an output file is whole or absent).

`load_mesh_input` accepts a path, a trimesh (Trimesh, Scene, PointCloud) or an array and returns a
`trimesh.Trimesh` with faces of positive area, or an (N, 3) / (N, 6) (xyz + normal) float64 array
of at least MIN_POINTS finite, not all coinciding points. trimesh is imported only when used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genstudio.render import InputError, atomic_path

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
OUTPUT_SUFFIXES = (".obj", ".glb", ".ply", ".stl", ".off")
MIN_POINTS = 16


def load_mesh_input(source):
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


def write_mesh(path, mesh) -> Path:
    """Write a trimesh as .obj/.glb/.ply/.stl/.off (by the suffix of `path`), atomically."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {path} should end in one of {', '.join(OUTPUT_SUFFIXES)}")
    data = mesh.export(file_type=path.suffix.lower()[1:])
    with atomic_path(path) as tmp:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path
