"""VAT's data: the `shapes` source (watertight shapes with surface points and occupancy) and `ShapeDataset`.

Source (`genstudio data prepare shapes`), from what this machine has offline:
- "urdf": pybullet's `random_urdfs` objects (1,000 procedural unions of convex pieces, zlib), read out of
  the pybullet wheel (`pip download pybullet==3.2.7 --no-deps`, or `--option archive=<wheel|folder>`);
- "primitives": trimesh primitives (sphere, box, cylinder, capsule, cone, torus) with random per-axis
  scales and rotations, and unions of two or three of them (class "union").

`--option limit=N` keeps at most N shapes per source (a bounded build); `primitives` is how many to generate.

Each mesh is merged, made watertight where trimesh's repair can (else skipped), oriented outward, turned
y-up (URDF is z-up) and normalised so its bounding box is centred and its largest side spans
2 * EXTENT (inside [-1, 1]^3, with room for jittered queries and marching cubes' border). Stored per
shape in `shape/<id>.npz`: `points` (S, 6) surface points + outward normals, `near` (Q, 3) points
jittered about the surface, `uniform` (Q, 3) points uniform in [-1, 1]^3 (all float16) and their
occupancy as packed bits (`near_occ`, `uniform_occ`).

Inside/outside comes from the generalised winding number (sum of the triangles' solid angles / 4 pi),
which is exact for closed meshes and, unlike a ray-parity test, right for unions whose pieces
overlap (winding 2 inside the overlap). For the same reason surface samples are kept only where the
surface is a real boundary: a step along the normal must leave the solid (this drops the parts of a
piece that lie inside another piece, and checks the normals point outward).
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from genstudio.data import DataError, load_manifest, mesh_sources, prepare, register_source
from genstudio.data.mesh_sources import (LICENCE_PRIMITIVES, LICENCE_URDF, PYBULLET_VERSION,  # noqa: F401 (re-exported)
                                         source_meshes)

EXTENT = 0.9                    # half the largest side after normalisation
PRIMITIVE_CLASSES = mesh_sources.PRIMITIVE_CLASSES + (mesh_sources.UNION,)
SHAPE_CLASSES = PRIMITIVE_CLASSES + ("urdf",)   # the class label of each item, as an index (for G3PT)


# ---- Geometry ----

def winding_number(vertices: np.ndarray, faces: np.ndarray, queries: np.ndarray, chunk_elems: int = 2**21) -> np.ndarray:
    """Generalised winding number of a triangle mesh at `queries` (Q, 3) -> (Q,): ~1 inside a closed,
    outward-oriented mesh, ~0 outside (Van Oosterom & Strackee's solid angle per triangle)."""
    # float32 is ample for a 0.5 threshold in [-1, 1]^3 and halves the memory traffic
    tri = np.asarray(vertices, dtype=np.float32)[np.asarray(faces, dtype=np.int64)]   # (F, 3, 3)
    queries = np.asarray(queries, dtype=np.float32)
    out = np.empty(len(queries))
    step = max(1, chunk_elems // max(len(tri), 1))
    for s in range(0, len(queries), step):
        rel = tri[None] - queries[s:s + step, None, None]                            # (P, F, 3, 3)
        a, b, c = rel[:, :, 0], rel[:, :, 1], rel[:, :, 2]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        denom = la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la \
            + np.einsum("pfi,pfi->pf", c, a) * lb
        out[s:s + step] = np.arctan2(det, denom).sum(1) / (2 * np.pi)
    return out


def watertight(mesh):
    """A merged, outward-oriented, watertight copy of `mesh`, or None when trimesh's repair cannot close it."""
    import trimesh
    mesh = trimesh.Trimesh(mesh.vertices, mesh.faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight:
        trimesh.repair.fill_holes(mesh)
    if len(mesh.faces) == 0 or not mesh.is_watertight:
        return None
    trimesh.repair.fix_normals(mesh, multibody=True)
    return mesh if mesh.volume > 0 else None


def normalize_mesh(mesh, extent: float = EXTENT):
    """Centre the bounding box and scale its largest side to 2 * extent (in place; returns the mesh)."""
    lo, hi = mesh.bounds
    half = float((hi - lo).max()) / 2
    if not half > 0:
        raise ValueError("the mesh has no extent")
    mesh.apply_translation(-(lo + hi) / 2)
    mesh.apply_scale(extent / half)
    return mesh


def sample_shape(mesh, num_points: int = 2048, num_near: int = 4096, num_uniform: int = 4096,
                 sigmas: tuple[float, ...] = (0.01, 0.04), seed: int = 0) -> dict[str, np.ndarray]:
    """Surface points + normals and labelled occupancy queries of a watertight, normalised mesh."""
    rng = np.random.default_rng(seed)
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    points, normals = np.empty((0, 3)), np.empty((0, 3))
    for _ in range(4):  # oversample, keep real boundary points; a union may hide much of its surface
        count = 2 * (num_points - len(points)) + 64
        p, face = mesh.sample(count, return_index=True, seed=int(rng.integers(2**31)))
        n = mesh.face_normals[face]
        outside = winding_number(v, f, p + 2e-3 * n) < 0.5
        points, normals = np.concatenate([points, p[outside]]), np.concatenate([normals, n[outside]])
        if len(points) >= num_points:
            break
    if len(points) < num_points:
        raise ValueError("too little of the surface faces outward (inconsistent normals?)")
    keep = rng.choice(len(points), num_points, replace=False)
    points, normals = points[keep], normals[keep]
    base = points[rng.choice(num_points, num_near)]
    sigma = np.asarray(sigmas)[rng.integers(len(sigmas), size=num_near)][:, None]
    near = np.clip(base + rng.normal(size=(num_near, 3)) * sigma, -1, 1).astype(np.float16)
    uniform = rng.uniform(-1, 1, (num_uniform, 3)).astype(np.float16)
    # label the float16-rounded coordinates, which are the ones stored
    occ = winding_number(v, f, np.concatenate([near, uniform]).astype(np.float64)) > 0.5
    return {"points": np.concatenate([points, normals], 1).astype(np.float16),
            "near": near, "near_occ": np.packbits(occ[:num_near]),
            "uniform": uniform, "uniform_occ": np.packbits(occ[num_near:])}


def y_up(mesh):
    """URDF z-up -> y-up: (x, y, z) -> (x, z, -y), a rotation (winding kept)."""
    mesh.apply_transform(np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float))
    return mesh


# ---- Sources of meshes ----

def random_primitive(kind: str, rng: np.random.Generator):
    """One trimesh primitive of `kind` (`PRIMITIVE_CLASSES`) with a random per-axis scale and rotation, in VAT's
    tessellation (icosphere(2), a 24-section torus of minor radius 0.1-0.25)."""
    return mesh_sources.random_primitive(kind, rng, sphere_subdivisions=2, torus_minor=(0.1, 0.25), torus_sections=24)


def _meshes(sources: list[str], primitives: int, archive: str | None, tmp: Path, log, seed: int):
    """(id, class label, licence, trimesh) for every requested source; URDF objects turned y-up."""
    for item_id, kind, licence, mesh in source_meshes(sources, primitives, archive, tmp, log, seed,
                                                      classes=PRIMITIVE_CLASSES, primitive=random_primitive,
                                                      name="shapes"):
        yield item_id, kind, licence, y_up(mesh) if kind == "urdf" and mesh is not None else mesh


@register_source("shapes", "watertight shapes in [-1,1]^3: surface points + normals, occupancy samples "
                 "(pybullet random_urdfs + trimesh primitives)", licence="see items")
def build_shapes(out: Path, log, sources: str = "urdf,primitives", limit: int | None = None, primitives: int = 600,
                 points: int = 2048, near: int = 3072, uniform: int = 3072, archive: str | None = None,
                 seed: int = 0) -> Iterator[dict]:
    (out / "shape").mkdir(exist_ok=True)
    kept, skipped, t0 = 0, 0, time.time()
    per_source: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item_id, label, licence, mesh in _meshes([s.strip() for s in sources.split(",") if s.strip()],
                                                     primitives, archive, Path(tmp), log, seed):
            source = item_id.split("/")[0]
            if limit is not None and per_source.get(source, 0) >= limit:
                continue
            mesh = watertight(mesh) if mesh is not None else None
            if mesh is None:
                skipped += 1
                continue
            item_seed = int.from_bytes(hashlib.sha1(item_id.encode()).digest()[:4], "big")
            try:
                arrays = sample_shape(normalize_mesh(mesh), points, near, uniform, seed=item_seed)
            except ValueError:
                skipped += 1
                continue
            rel = f"shape/{item_id.replace('/', '_')}.npz"
            np.savez_compressed(out / rel, **arrays)
            kept += 1
            per_source[source] = per_source.get(source, 0) + 1
            yield {"id": item_id, "path": rel, "label": label, "licence": licence, "faces": len(mesh.faces),
                   "inside_fraction": round(float(np.unpackbits(arrays["uniform_occ"])[:uniform].mean()), 4)}
            if kept % 50 == 0:
                log(f"shapes: {kept} kept, {skipped} skipped, {time.time() - t0:.0f} s")
    log(f"shapes: kept {kept} {per_source}, skipped {skipped} (not watertight or no outward surface) "
        f"in {time.time() - t0:.0f} s")


# ---- Training data ----

def load_shape(path: str | Path) -> dict[str, np.ndarray]:
    """One stored shape -> float32 `points` (S, 6), `queries` (Qn + Qu, 3), `occupancy` (Qn + Qu,) in {0, 1}."""
    with np.load(path) as z:
        near, uniform = z["near"].astype(np.float32), z["uniform"].astype(np.float32)
        occ = np.concatenate([np.unpackbits(z["near_occ"])[:len(near)], np.unpackbits(z["uniform_occ"])[:len(uniform)]])
        return {"points": z["points"].astype(np.float32), "queries": np.concatenate([near, uniform]),
                "occupancy": occ.astype(np.float32), "num_near": len(near)}


class ShapeDataset(torch.utils.data.Dataset):
    """Shapes of one split (or a list of manifest items) -> {"points": (P, 6), "queries": (Q, 3),
    "occupancy": (Q,), "label": int}. Each call draws P surface points and Q queries (half near the
    surface, half uniform); `deterministic` (evaluation) draws the same ones for item k every time."""

    def __init__(self, split: str | list[dict], num_points: int = 2048, num_queries: int = 2048,
                 deterministic: bool | None = None, seed: int = 0):
        items = load_manifest("shapes", split) if isinstance(split, str) else list(split)
        if not items:
            raise DataError(f"no shapes in {split if isinstance(split, str) else 'the given items'}; "
                            "run `genstudio data prepare shapes`")
        self.items, self.num_points, self.num_queries, self.seed = items, num_points, num_queries, seed
        self.deterministic = (split != "train") if deterministic is None else deterministic
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        if k not in self._cache:
            self._cache[k] = load_shape(self.items[k]["path"])
        data = self._cache[k]
        rng = np.random.default_rng((self.seed, k)) if self.deterministic else np.random.default_rng()
        count = len(data["points"])
        pts = data["points"][rng.choice(count, self.num_points, replace=count < self.num_points)]
        half, total = self.num_queries // 2, len(data["queries"])
        near, rest = data["num_near"], self.num_queries - half
        pick = np.concatenate([rng.choice(near, half, replace=near < half),
                               near + rng.choice(total - near, rest, replace=total - near < rest)])
        return {"points": torch.from_numpy(pts), "queries": torch.from_numpy(data["queries"][pick]),
                "occupancy": torch.from_numpy(data["occupancy"][pick]),
                "label": torch.tensor(SHAPE_CLASSES.index(self.items[k]["label"]))}


def load_items(split: str) -> list[dict]:
    """The manifest items of one split of the `shapes` source (built on first use)."""
    prepare("shapes", quiet=True)
    return load_manifest("shapes", split)
