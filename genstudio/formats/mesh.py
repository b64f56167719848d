"""Meshes and point clouds: reading .obj/.ply/.glb/.gltf/.stl/.off meshes and .npy point arrays with
clear errors, and writing a mesh atomically (an output file is whole or absent).

`load_mesh_input` accepts a path, a trimesh (Trimesh, Scene, PointCloud) or an array and returns a
`trimesh.Trimesh` of at least MIN_FACES faces of positive area, or an (N, 3) / (N, 6) (xyz + normal)
float64 array of at least MIN_POINTS points, not all coinciding; coordinates are finite and within
MAX_COORDINATE; files, points and faces are within the budgets of `genstudio.limits`. A .npy file is
never unpickled. trimesh is imported only when used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genstudio.limits import check_file_size, max_mesh_elements
from genstudio.render import InputError, atomic_path

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
OUTPUT_SUFFIXES = (".obj", ".glb", ".ply", ".stl", ".off")
MIN_POINTS = 16
MIN_FACES = 4  # a tetrahedron: fewer faces describe no shape to remesh
MAX_COORDINATE = 1e12  # beyond this, normalising (squares, extents) overflows or loses the shape


def load_mesh_input(source):
    """A path (mesh file or .npy points), a trimesh, or an array -> trimesh.Trimesh or (N, 3|6) float array.
    Raises InputError with the reason for anything unusable."""
    import trimesh
    name, from_file = "input", False
    if isinstance(source, (str, os.PathLike)):
        path, name = Path(source), str(source)
        if not path.exists():
            raise InputError(f"input {path} does not exist")
        if path.is_dir():
            raise InputError(f"input {path} is a folder; expected a mesh file ({', '.join(MESH_SUFFIXES)}) or .npy points")
        suffix = path.suffix.lower()
        if suffix in MESH_SUFFIXES + (".npy",):
            check_file_size(path)
        if suffix == ".npy":
            source = _load_npy(path)
        elif suffix in MESH_SUFFIXES:
            try:  # unprocessed, so NaN/inf vertices are seen here rather than silently dropped
                source, from_file = trimesh.load(path, force="mesh", process=False), True
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
            _check_count(len(source.vertices), "vertices", name)
            _check_count(len(source.faces), "faces", name)
            _check_coordinates(np.asarray(source.vertices), name)
            if from_file:
                source.process()  # what trimesh.load does by default (merge vertices), after the checks above
            if not source.area > 0:
                raise InputError(f"{name} is degenerate: its faces have no area")
            if len(source.faces) < MIN_FACES:
                raise InputError(f"{name} has {len(source.faces)} face{'s' if len(source.faces) != 1 else ''}; "
                                 f"at least {MIN_FACES} are needed to describe a shape")
            return source
    if not isinstance(source, np.ndarray):  # lists, tensors: numbers become float coordinates
        try:
            source = np.asarray(source, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"{name} is not an array of coordinates ({e})") from None
    array = source
    if array.dtype.kind != "f":
        raise InputError(f"{name} holds {array.dtype} values; expected float coordinates (float16/32/64; "
                         "convert integer coordinates with .astype(numpy.float32))")
    array = array.astype(np.float64)
    if array.ndim != 2 or array.shape[1] not in (3, 6):
        raise InputError(f"{name}: expected points of shape (N, 3) or (N, 6) (xyz + normal), got {array.shape}")
    if len(array) < MIN_POINTS:
        raise InputError(f"{name} has {len(array)} points; at least {MIN_POINTS} are needed")
    _check_count(len(array), "points", name)
    _check_coordinates(array[:, :3], name)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite normals")
    if not np.ptp(array[:, :3], axis=0).max() > 0:
        raise InputError(f"{name} is degenerate: all points coincide")
    return array


def _load_npy(path: Path) -> np.ndarray:
    """A .npy array, its header checked before its data is read; pickled (object) arrays are refused."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if any(s in str(e) for s in ("allow_pickle", "Object arrays", "Python objects")):
            raise InputError(f"{path} holds Python objects (a pickle); genstudio never unpickles files: "
                             "save the points as a float array") from None
        raise InputError(f"{path} is not a readable .npy array ({e})") from None
    except OSError as e:
        raise InputError(f"{path} is not a readable .npy array ({e})") from None
    if array.ndim and array.shape[0] > max_mesh_elements():
        _check_count(array.shape[0], "points", str(path))
    return np.asarray(array)


def _check_count(count: int, what: str, name: str) -> None:
    if count > max_mesh_elements():
        raise InputError(f"{name} has {count:,} {what}; the limit is {max_mesh_elements():,} "
                         "(set GENSTUDIO_MAX_MESH_ELEMENTS to raise it)")


def _check_coordinates(values: np.ndarray, name: str) -> None:
    if not np.isfinite(values).all():
        raise InputError(f"{name} contains NaN or infinite coordinates")
    if values.size and np.abs(values).max() > MAX_COORDINATE:
        raise InputError(f"{name} has coordinates up to {np.abs(values).max():.3g}; the limit is "
                         f"{MAX_COORDINATE:g} (scale the input down)")


def write_mesh(path, mesh) -> Path:
    """Write a trimesh as .obj/.glb/.ply/.stl/.off (by the suffix of `path`), atomically."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"output {path} should end in one of {', '.join(OUTPUT_SUFFIXES)}")
    data = mesh.export(file_type=path.suffix.lower()[1:])
    with atomic_path(path) as tmp:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path
