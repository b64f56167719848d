"""MeshAnything's data: the `meshes` source, the shape condition, and the training dataset.

Source (`genstudio data prepare meshes`): pybullet's wheel ships `pybullet_data/random_urdfs`, 1,000
procedural objects (each a union of a few convex pieces). The build runs
`pip download pybullet==3.2.7 --no-deps` (a wheel or an sdist), reads the .obj files out of the
archive, turns them y-up (URDF is z-up; MeshAnything's convention is +Y up), keeps those with
min_faces..max_faces faces after 128-bin quantisation, normalises them to the unit cube and stores
`mesh/<id>.npz`: vertices, faces and the cached condition (`points`, 4096 x (xyz, normal)).

Source `meshes-extra` (opt-in; `genstudio train meshanything --set extra_sources=true`): the other meshes that
wheels ship (pybullet_data's objects and robots, dm_control's STL files, pyvista's examples), each quadric-decimated
to at most max_faces and to `levels - 1` halvings of that (several artist-like densities of one shape), kept when
closed enough and not flat, stored as `meshes` stores its items. Their splits are train/val only (by the hash
of the source file's id, so every density of a shape lands in the same split): the benchmark's test split stays
the `meshes` source's.

Condition. MeshAnything is meant for dense meshes from scans/reconstruction, so the points are
not sampled from the artist mesh itself: the mesh is first remeshed densely (its surface
voxelised, enclosed space filled, smoothed, skimage marching cubes, as the reference's `--mc`
preprocessing), then points + normals are sampled on that surface. Training adds the reference's
augmentation (per-axis scale 0.75-1.25, rotation about the vertical axis) to mesh and points alike,
then normalises both as inference does: the mesh to [-0.5, 0.5], the points to [-0.9995, 0.9995].
"""
from __future__ import annotations

import hashlib
import io
import re
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from genstudio.data.mesh_sources import (LICENCE_URDF, PACKAGE_MESHES, PYBULLET_VERSION, package_meshes,
                                        urdf_archive, urdf_objects)
from genstudio.data.registry import BuildLog, DataError, register_source, split_of

from .tokenize import BOS, EOS, NUM_BINS, PAD, amt_encode, face_coordinates, normalize_vertices, quantize_mesh

LICENCE = LICENCE_URDF
POINT_SCALE = 0.9995  # the reference normalises the condition to [-0.9995, 0.9995]

# ---- Geometry helpers (also used by the pipeline and the benchmark) ----


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`count` area-weighted points on the surface and their face normals, (count, 3) each."""
    rng = rng or np.random.default_rng(0)
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if len(tri) == 0 or not area.sum() > 0:
        raise ValueError("the surface has no area to sample points from")
    index = rng.choice(len(tri), size=count, p=area / area.sum())
    u, v = rng.random((2, count))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[index]
    points = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    normals = cross[index] / np.maximum(area[index], 1e-12)[:, None]
    return points, normals


def dense_remesh(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A dense, closed, smooth surface around the mesh: voxelise the surface (dense samples), fill the
    enclosed space, marching cubes on the (smoothed) depth half a voxel in; at resolution 64 the
    surface lies ~0.7% of the object's size outside the original. Works for open and
    non-manifold input too (a sheet becomes a thin slab). Returns (vertices, faces) in the input's
    frame, normals outward."""
    from scipy import ndimage
    from skimage.measure import marching_cubes
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    pitch = float((hi - lo).max()) / (resolution - 4)
    if not pitch > 0:
        raise ValueError("the mesh has no extent (all vertices coincide)")
    origin = lo - 2.5 * pitch
    shape = np.ceil((hi - lo) / pitch).astype(int) + 6
    tri = v[np.asarray(faces, dtype=np.int64)]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum() / 2
    count = int(np.clip(12 * area / pitch**2, 20_000, 600_000))  # ~12 samples per voxel face: no holes
    points, _ = sample_surface(v, faces, count)
    cells = np.floor((np.concatenate([points, v]) - origin) / pitch).astype(int)
    grid = np.zeros(shape, dtype=bool)
    grid[tuple(np.clip(cells, 0, shape - 1).T)] = True
    solid = ndimage.binary_fill_holes(grid)
    # depth inside the filled cells (voxels): the surface runs through the outer cells, half a voxel in
    depth = ndimage.distance_transform_edt(solid) - ndimage.distance_transform_edt(~solid)
    depth = ndimage.gaussian_filter(depth.astype(np.float32), sigma=0.5)
    verts, tris, _, _ = marching_cubes(depth, min(0.5, float(depth.max()) / 2), spacing=(pitch,) * 3)
    return verts + origin + 0.5 * pitch, tris[:, ::-1].copy()  # skimage winds inward for a filled solid


def normalize_points(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(N, 6) points + normals -> the condition's frame: bounding-box centre at 0, largest |coordinate|
    0.9995, unit normals. Returns (points, centre, half) with original = normalised / 0.9995 * half + centre."""
    p = np.asarray(points, dtype=np.float64)
    lo, hi = p[:, :3].min(0), p[:, :3].max(0)
    center = (lo + hi) / 2
    half = float(np.abs(p[:, :3] - center).max())
    if not half > 0:
        raise ValueError("the points have no extent (all coincide)")
    normals = p[:, 3:6] / np.maximum(np.linalg.norm(p[:, 3:6], axis=1, keepdims=True), 1e-12)
    return np.concatenate([(p[:, :3] - center) / half * POINT_SCALE, normals], 1), center, half


def condition_points(vertices: np.ndarray, faces: np.ndarray, count: int, resolution: int = 64,
                     seed: int = 0) -> np.ndarray:
    """The cached condition of a mesh: `count` points + normals on its dense remesh, in its own frame."""
    dense_v, dense_f = dense_remesh(vertices, faces, resolution)
    points, normals = sample_surface(dense_v, dense_f, count, np.random.default_rng(seed))
    return np.concatenate([points, normals], 1)


def y_up(vertices: np.ndarray) -> np.ndarray:
    """URDF z-up -> y-up (x, y, z) -> (x, z, -y): a rotation, so the winding is kept."""
    v = np.asarray(vertices)
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], 1)


# ---- The `meshes` source ----

def _load_obj(data: bytes):
    import trimesh
    mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh")
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


def slim_copy(out: str | Path, splits: tuple[str, ...] = ("train", "val"), max_faces: int = 400,
              root: Path | None = None) -> int:
    """Copy the `meshes` build's `splits` items of <= `max_faces` quantised faces (what a preset with that limit
    trains on) to `out`/meshes, a data root to carry to another machine (a GPU box). Returns the items copied."""
    from genstudio.data.registry import copy_build
    return len(copy_build("meshes", out, lambda it: it["split"] in splits and it["faces"] <= max_faces, root=root))


@register_source("meshes", "pybullet random_urdfs objects (y-up, unit cube) + dense-remesh point clouds",
                 licence=LICENCE)
def build_meshes(out: Path, log: BuildLog, max_faces: int = 800, min_faces: int = 4, resolution: int = 64,
                 points: int = 4096, source_dir: str | None = None, version: str = PYBULLET_VERSION) -> Iterator[dict]:
    (out / "mesh").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        objs = urdf_objects(Path(source_dir) if source_dir else urdf_archive(
            None, Path(tmp), log, version=version, wheel_only=False,
            hint="pass --option source_dir=<folder holding random_urdfs>"))
        kept, skipped = 0, {"unreadable": 0, "faces": 0}
        for name, data in objs:
            try:
                vertices, faces = _load_obj(data)
                unit = normalize_vertices(y_up(vertices))[0]
            except Exception:  # an empty or broken file
                skipped["unreadable"] += 1
                continue
            quantized = quantize_mesh(unit, faces, NUM_BINS, normalize=False)
            if not min_faces <= quantized.num_faces <= max_faces:
                skipped["faces"] += 1
                continue
            cloud = condition_points(unit, faces, points, resolution, seed=int(name))
            item_id = f"urdf/{name}"
            rel = f"mesh/urdf_{name}.npz"
            np.savez_compressed(out / rel, vertices=unit.astype(np.float32), faces=faces.astype(np.int32),
                                points=cloud.astype(np.float16))
            kept += 1
            yield {"id": item_id, "path": rel, "faces": quantized.num_faces, "vertices": len(quantized.vertices),
                   "tokens": len(amt_encode(quantized)), "source_faces": len(faces),
                   "sha1": hashlib.sha1(data).hexdigest()[:12]}
        log(f"meshes: kept {kept}, skipped {skipped} (faces outside {min_faces}..{max_faces})")


# ---- The `meshes-extra` source ----

def is_closed_and_solid(mesh, max_open_edges: float = 0.1, min_thickness: float = 0.01) -> bool:
    """Watertight-ish (at most `max_open_edges` of the edges border one face only) and not flat (the bounding
    box's shortest side at least `min_thickness` of its longest)."""
    if len(mesh.faces) == 0:
        return False
    extent = mesh.extents
    _, counts = np.unique(mesh.edges_sorted, axis=0, return_counts=True)
    return extent.min() >= min_thickness * extent.max() and (counts == 1).mean() <= max_open_edges


def decimated_levels(mesh, max_faces: int, levels: int = 3, min_faces: int = 4, tries: int = 3):
    """(target, unit vertices, faces, QuantizedMesh) for targets max_faces, max_faces/2, ... (`levels` of them):
    the mesh quadric-decimated (fast-simplification via trimesh) to each, normalised to the unit cube; levels
    that fail `is_closed_and_solid`, leave min_faces..target after quantisation or repeat the previous level's
    face count are skipped. A decimation that overshoots its target is retried at 85% of it."""
    from .tokenize import postprocess
    previous = None
    for target in [max_faces >> k for k in range(levels)]:
        goal = target
        for _ in range(tries):
            simple = mesh if len(mesh.faces) <= goal else mesh.simplify_quadric_decimation(face_count=goal)
            simple = postprocess(simple.vertices, simple.faces)  # merged, no degenerate faces, outward
            if len(simple.faces) == 0:
                break
            unit = normalize_vertices(simple.vertices)[0]
            quantized = quantize_mesh(unit, simple.faces, NUM_BINS, normalize=False)
            if quantized.num_faces <= target:
                break
            goal = int(goal * 0.85)
        if len(simple.faces) == 0 or not min_faces <= quantized.num_faces <= target or \
                quantized.num_faces == previous or not is_closed_and_solid(simple):
            continue
        previous = quantized.num_faces
        yield target, unit, np.asarray(simple.faces), quantized


@register_source("meshes-extra", "pybullet_data objects/robots, dm_control STLs, pyvista examples, decimated "
                 "to <= max_faces at several densities (train/val only)", licence="see items")
def build_meshes_extra(out: Path, log: BuildLog, sources: str = ",".join(PACKAGE_MESHES), max_faces: int = 400,
                       min_faces: int = 4, levels: int = 3, resolution: int = 64, points: int = 4096,
                       max_source_faces: int = 500_000, source_dir: str | None = None) -> Iterator[dict]:
    (out / "mesh").mkdir(exist_ok=True)
    wanted = [name.strip() for name in str(sources).split(",") if name.strip()]
    kept, files = {name: 0 for name in wanted}, {name: 0 for name in wanted}
    skipped, seen = {"unreadable": 0, "too large": 0, "duplicate": 0, "no level kept": 0}, set()
    with tempfile.TemporaryDirectory() as tmp:
        for base, licence, z_up, mesh in package_meshes(wanted, Path(tmp), log, source_dir):
            if mesh is None or len(mesh.faces) < min_faces:
                skipped["unreadable"] += 1
                continue
            if len(mesh.faces) > max_source_faces:
                skipped["too large"] += 1
                continue
            mesh.vertices = y_up(mesh.vertices) if z_up else mesh.vertices
            split = "val" if split_of(base) == "val" else "train"  # never "test": that is the urdf benchmark's
            sha1 = hashlib.sha1(np.ascontiguousarray(mesh.vertices).tobytes() + np.asarray(mesh.faces).tobytes())
            if sha1.digest() in seen:  # the same mesh under another name (urdf/mug.obj, objects/mug.obj)
                skipped["duplicate"] += 1
                continue
            seen.add(sha1.digest())
            count = 0
            for target, unit, faces, quantized in decimated_levels(mesh, max_faces, levels, min_faces):
                item_id = f"{base}@{target}"
                rel = "mesh/" + re.sub(r"[/@.]", "_", item_id) + ".npz"
                seed = int(hashlib.sha1(item_id.encode()).hexdigest()[:8], 16)
                cloud = condition_points(unit, faces, points, resolution, seed=seed)
                np.savez_compressed(out / rel, vertices=unit.astype(np.float32), faces=faces.astype(np.int32),
                                    points=cloud.astype(np.float16))
                count += 1
                yield {"id": item_id, "path": rel, "faces": quantized.num_faces, "vertices": len(quantized.vertices),
                       "tokens": len(amt_encode(quantized)), "source_faces": len(mesh.faces),
                       "sha1": sha1.hexdigest()[:12], "source": base.split("/")[0], "origin": base,
                       "split": split, "licence": licence}
            kept[base.split("/")[0]] += count
            files[base.split("/")[0]] += count > 0
            skipped["no level kept"] += count == 0
    log(f"meshes-extra: kept {kept} items from {files} source files, skipped {skipped} source files")


# ---- Training data ----

def augment_mesh_and_points(vertices: np.ndarray, cloud: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The reference's augmentation on mesh and condition alike: per-axis scale in [0.75, 1.25], then a
    rotation about the vertical (y) axis. Normals follow the inverse-transpose."""
    scale = rng.uniform(0.75, 1.25, 3)
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    normals = (cloud[:, 3:6] / scale) @ rot.T
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return (vertices * scale) @ rot.T, np.concatenate([(cloud[:, :3] * scale) @ rot.T, normals], 1)


class MeshDataset(torch.utils.data.Dataset):
    """Items of the `meshes` source -> {"points": (num_points, 6), "input_ids": BOS .. EOS} (AMT) or
    {"points", "faces": (F, 9) bins} (V1). `augment` draws a new scale/rotation each time; without it
    (evaluation) item k is always the same. An augmented mesh whose sequence is longer than
    `max_tokens` (or with more than `max_faces` faces) falls back to the un-augmented mesh, which
    the recipe has checked fits."""

    def __init__(self, items: list[dict], tokenization: str = "amt", num_points: int = 2048, augment: bool = True,
                 max_tokens: int | None = None, max_faces: int | None = None, seed: int = 0):
        if not items:
            raise DataError("MeshDataset got no meshes; run `genstudio data prepare meshes`")
        self.items, self.tokenization, self.num_points = items, tokenization, num_points
        self.augment, self.max_tokens, self.max_faces, self.seed = augment, max_tokens, max_faces, seed
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, k: int) -> dict:
        if k not in self._cache:
            with np.load(self.items[k]["path"]) as z:
                self._cache[k] = {name: z[name] for name in ("vertices", "faces", "points")}
        return self._cache[k]

    def sample(self, k: int, augment: bool, rng: np.random.Generator) -> dict:
        data = self._load(k)
        vertices, cloud = data["vertices"].astype(np.float64), data["points"].astype(np.float64)
        if augment:
            vertices, cloud = augment_mesh_and_points(vertices, cloud, rng)
        chosen = cloud[rng.choice(len(cloud), self.num_points, replace=len(cloud) < self.num_points)]
        points = normalize_points(chosen)[0]
        quantized = quantize_mesh(vertices, data["faces"], NUM_BINS)
        out = {"points": torch.from_numpy(points.astype(np.float32))}
        if self.tokenization == "amt":
            ids = np.concatenate([[BOS], amt_encode(quantized), [EOS]])
            out["input_ids"] = torch.from_numpy(ids.astype(np.int64))
        else:
            out["faces"] = torch.from_numpy(face_coordinates(quantized))
        return out

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng() if self.augment else np.random.default_rng((self.seed, k))
        out = self.sample(k, self.augment, rng)
        too_long = (self.max_tokens and len(out.get("input_ids", ())) > self.max_tokens) or \
            (self.max_faces and len(out.get("faces", ())) > self.max_faces)
        return self.sample(k, False, rng) if self.augment and too_long else out


def collate_meshes(batch: list[dict]) -> dict:
    """Pad token rows with PAD (labels -100 there) or face rows with zeros (face_mask False)."""
    out = {"points": torch.stack([b["points"] for b in batch])}
    if "input_ids" in batch[0]:
        from genstudio.lm import pad_token_rows  # not at import: registering the data source stays light
        out.update(pad_token_rows([b["input_ids"] for b in batch], PAD))
    else:
        length = max(len(b["faces"]) for b in batch)
        faces = torch.zeros((len(batch), length, 9), dtype=torch.long)
        face_mask = torch.zeros((len(batch), length), dtype=torch.bool)
        for i, b in enumerate(batch):
            faces[i, : len(b["faces"])] = b["faces"]
            face_mask[i, : len(b["faces"])] = True
        out.update(faces=faces, face_mask=face_mask)
    return out
