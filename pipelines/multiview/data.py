"""MV-Adapter's data: the `multiview` source (coloured meshes rendered from many cameras) and
`MultiViewDataset`.

Source (`genstudio data prepare multiview`), from what this machine has offline:
- "urdf": pybullet's `random_urdfs` objects (1,000 procedural objects, zlib), read out of the pybullet
  wheel (`pip download pybullet==3.2.7 --no-deps`, or `--option archive=<wheel|folder>`); class "object";
- "primitives": trimesh primitives (sphere, box, cylinder, capsule, cone, torus) with random per-axis
  scales and rotations; the class is the primitive's name.
`--option limit=N` keeps at most N objects per source (a bounded build); `primitives` is how many to make.

Each object is centred and scaled so its bounding box's largest side is 1 (inside [-0.5, 0.5]^3, z up),
given a colour drawn around a named palette colour ("red", "blue", ...) and a light direction, and
rendered (render.py) from the reference's 6 fixed orthographic views plus `views` random orbit cameras
(azimuth uniform, elevation in [-15, 45] deg, one projection per object: orthographic or perspective).
Its caption is "a <colour> <class>". Stored per object in `mv/<id>.npz`: `rgb` (N, H, W, 3) uint8 over
white, `alpha` (N, H, W) uint8 coverage, `position` / `normal` (N, H, W, 3) float16 world maps, `c2w`
(N, 4, 4), `azimuth` / `elevation` / `radius` (N,), and per group ("reference": the first 6,
"random": the rest) its projection, ortho_scale and fov; plus `color` and `light`.
Splits are by a hash of the object id (the core registry's `split_of`), so an object's views never
cross splits.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from genstudio.data import DataError, load_manifest, mesh_sources, register_source
from genstudio.data.mesh_sources import (LICENCE_PRIMITIVES, LICENCE_URDF, PRIMITIVE_CLASSES,  # noqa: F401
                                         PYBULLET_VERSION, source_meshes)

from .cameras import REFERENCE_AZIMUTHS, REFERENCE_ORTHO_SCALE, REFERENCE_RADIUS, CameraSet, orbit_cameras, reference_cameras
from .render import face_corner_normals, render_mesh

# name -> RGB in [0, 1]; each object's colour is drawn near one of these (no white: the background is)
PALETTE = {"red": (0.85, 0.12, 0.10), "orange": (0.95, 0.50, 0.08), "yellow": (0.95, 0.85, 0.10),
           "green": (0.15, 0.65, 0.20), "blue": (0.12, 0.30, 0.85), "purple": (0.50, 0.18, 0.70),
           "pink": (0.95, 0.45, 0.70), "brown": (0.50, 0.30, 0.12), "gray": (0.50, 0.50, 0.50),
           "black": (0.10, 0.10, 0.10), "cyan": (0.10, 0.75, 0.80)}
NUM_REFERENCE = 6
RANDOM_FOV = 40.0


# ---- Meshes ----

def random_primitive(kind: str, rng: np.random.Generator):
    """One trimesh primitive of `kind` with a random per-axis scale and rotation (icosphere(3), a 32-section
    torus of minor radius 0.12-0.25)."""
    return mesh_sources.random_primitive(kind, rng, sphere_subdivisions=3, torus_minor=(0.12, 0.25), torus_sections=32)


def normalize_unit_cube(vertices: np.ndarray) -> np.ndarray:
    """Centre the bounding box and scale its largest side to 1 (inside [-0.5, 0.5]^3)."""
    lo, hi = vertices.min(0), vertices.max(0)
    side = float((hi - lo).max())
    if not side > 0:
        raise ValueError("the mesh has no extent")
    return (vertices - (lo + hi) / 2) / side


def _meshes(sources: list[str], primitives: int, archive: str | None, tmp: Path, log, seed: int):
    """(id, class, licence, trimesh or None) for every requested source; URDF objects (z-up already) are class
    "object"."""
    for item_id, kind, licence, mesh in source_meshes(sources, primitives, archive, tmp, log, seed,
                                                      classes=PRIMITIVE_CLASSES, primitive=random_primitive,
                                                      name="multiview"):
        yield item_id, "object" if kind == "urdf" else kind, licence, mesh


# ---- Rendering one object ----

def random_look(rng: np.random.Generator) -> tuple[str, np.ndarray, np.ndarray]:
    """A palette colour name, the jittered RGB and a unit light direction (from above more often than not)."""
    name = str(rng.choice(list(PALETTE)))
    color = np.clip(np.asarray(PALETTE[name]) + rng.normal(0, 0.04, 3), 0.02, 0.98)
    light = rng.normal(size=3) + np.array([0.0, 0.0, 0.8])
    return name, color, light / np.linalg.norm(light)


def random_orbit(rng: np.random.Generator, views: int, projection: str) -> tuple[CameraSet, np.ndarray]:
    """`views` random orbit cameras around [-0.5, 0.5]^3 and their (azimuth, elevation, radius)."""
    azimuth = rng.uniform(-180, 180, views)
    elevation = rng.uniform(-15, 45, views)
    radius = rng.uniform(1.6, 2.2, views) if projection == "orthographic" else rng.uniform(1.7, 2.2, views)
    cams = orbit_cameras(azimuth, elevation, radius, projection=projection, ortho_scale=REFERENCE_ORTHO_SCALE,
                         fov=RANDOM_FOV)
    return cams, np.stack([azimuth, elevation, radius], 1)


def render_object(vertices: np.ndarray, faces: np.ndarray, views: int, size: int, rng: np.random.Generator,
                  supersample: int = 2) -> dict[str, np.ndarray]:
    """The stored arrays of one normalised object: the 6 reference views, then `views` random ones."""
    color_name, color, light = random_look(rng)
    ambient = float(rng.uniform(0.3, 0.5))
    projection = str(rng.choice(["orthographic", "perspective"]))
    ref = reference_cameras()
    rand, orbit = random_orbit(rng, views, projection)
    corners = face_corner_normals(vertices, faces)
    groups = [render_mesh(vertices, faces, cams, size, color=color, light=light, ambient=ambient,
                          supersample=supersample, corner_normals=corners) for cams in (ref, rand)]
    out = {key: np.concatenate([g[key] for g in groups]) for key in ("rgb", "alpha", "position", "normal")}
    ref_orbit = np.stack([np.asarray(REFERENCE_AZIMUTHS, float),
                          np.zeros(NUM_REFERENCE), np.full(NUM_REFERENCE, REFERENCE_RADIUS)], 1)
    angles = np.concatenate([ref_orbit, orbit])
    return {"rgb": np.round(out["rgb"] * 255).astype(np.uint8),
            "alpha": np.round(out["alpha"] * 255).astype(np.uint8),
            "position": out["position"].astype(np.float16), "normal": out["normal"].astype(np.float16),
            "c2w": torch.cat([ref.c2w, rand.c2w]).numpy().astype(np.float32),
            "azimuth": angles[:, 0].astype(np.float32), "elevation": angles[:, 1].astype(np.float32),
            "radius": angles[:, 2].astype(np.float32),
            "projection": np.array(["orthographic", projection]),
            "ortho_scale": np.array([ref.ortho_scale, rand.ortho_scale], np.float32),
            "fov": np.array([ref.fov, rand.fov], np.float32),
            "color": color.astype(np.float32), "light": light.astype(np.float32),
            "color_name": np.array(color_name)}


def caption(color_name: str, label: str) -> str:
    return f"a {color_name} {label}"


@register_source("multiview", "coloured meshes rendered from the 6 reference views + random orbit cameras: "
                 "RGB, masks, position/normal maps, cameras, captions (pybullet random_urdfs + trimesh primitives)",
                 licence="see items")
def build_multiview(out: Path, log, sources: str = "urdf,primitives", limit: int | None = None,
                    primitives: int = 600, views: int = 10, size: int = 64, supersample: int = 2,
                    archive: str | None = None, seed: int = 0) -> Iterator[dict]:
    (out / "mv").mkdir(exist_ok=True)
    kept, skipped, t0 = 0, 0, time.time()
    per_source: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item_id, label, licence, mesh in _meshes([s.strip() for s in sources.split(",") if s.strip()],
                                                     int(primitives), archive, Path(tmp), log, int(seed)):
            source = item_id.split("/")[0]
            if limit is not None and per_source.get(source, 0) >= int(limit):
                continue
            if mesh is None or len(mesh.faces) == 0:
                skipped += 1
                continue
            item_seed = int.from_bytes(hashlib.sha1(f"{seed}/{item_id}".encode()).digest()[:4], "big")
            try:
                vertices = normalize_unit_cube(np.asarray(mesh.vertices, np.float64))
            except ValueError:
                skipped += 1
                continue
            arrays = render_object(vertices, np.asarray(mesh.faces, np.int64), int(views), int(size),
                                   np.random.default_rng(item_seed), int(supersample))
            if (arrays["alpha"] >= 128).sum((1, 2)).min() == 0:  # an empty view: something degenerate
                skipped += 1
                continue
            rel = f"mv/{item_id.replace('/', '_')}.npz"
            np.savez_compressed(out / rel, **arrays)
            kept += 1
            per_source[source] = per_source.get(source, 0) + 1
            color_name = str(arrays["color_name"])
            yield {"id": item_id, "path": rel, "label": label, "color": color_name,
                   "caption": caption(color_name, label), "licence": licence, "faces": len(mesh.faces),
                   "views": NUM_REFERENCE + int(views), "projection": str(arrays["projection"][1])}
            if kept % 50 == 0:
                log(f"multiview: {kept} kept, {skipped} skipped, {time.time() - t0:.0f} s")
    log(f"multiview: kept {kept} {per_source}, skipped {skipped} in {time.time() - t0:.0f} s")


# ---- Training data ----

def load_object(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def slim_copy(out: str | Path, splits: tuple[str, ...] = ("train",), root: Path | None = None,
              compress: bool = True) -> int:
    """Copy the `multiview` build's `splits` to `out` (a data root) without the masks and the position /
    normal maps: what the base and the geometry-free adapter train on, at a fifteenth of the bytes (to carry
    the training data to another machine, e.g. a GPU box). `compress=False` stores the arrays raw, for an
    archiver that compresses better than zip's deflate (xz: a third smaller). Returns the bytes written."""
    from genstudio.data.registry import copy_build

    def write(src: Path, dst: Path) -> None:
        data = {k: v for k, v in load_object(src).items() if k not in ("alpha", "position", "normal")}
        (np.savez_compressed if compress else np.savez)(dst, **data)

    items = copy_build("multiview", out, lambda it: it["split"] in splits, write, root)
    return sum((Path(out) / "multiview" / it["path"]).stat().st_size for it in items)


def object_cameras(data: dict, index: np.ndarray) -> CameraSet:
    """The CameraSet of views `index` of one stored object (all from one group, so one projection)."""
    group = int(index[0] >= NUM_REFERENCE)
    if any(int(i >= NUM_REFERENCE) != group for i in index):
        raise ValueError("views of one item must come from one camera group (reference or random)")
    return CameraSet(torch.from_numpy(data["c2w"][index]), str(data["projection"][group]),
                     float(data["ortho_scale"][group]), float(data["fov"][group]))


def to_image(rgb: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(rgb).float().div(127.5).sub(1).movedim(-1, -3)


class MultiViewDataset(torch.utils.data.Dataset):
    """Rendered objects of one split (or a list of manifest items).

    Multi-view mode (`views` = V): per object {"images" (V, 3, H, W) in [-1, 1], "masks" (V, 1, H, W)
    in [0, 1], "position" / "normal" (V, 3, H, W), "plucker" (V, 6, H, W), "c2w" (V, 4, 4),
    "orthographic" (bool), "reference" (3, H, W) the front reference render, "caption" (str)}. The V views are the 6 reference views (`cameras`
    "reference", V <= 6), V of the random views ("random"), or either at random per access ("mixed").
    Single-view mode (`single_view=True`, for the base model): one item per stored view,
    {"image" (3, H, W), "mask" (1, H, W), "caption"}. `deterministic` (default: not on train) picks the
    same views for item k every time.
    """

    def __init__(self, split: str | list[dict], views: int = 6, cameras: str = "mixed", single_view: bool = False,
                 deterministic: bool | None = None, seed: int = 0, root: Path | None = None):
        items = load_manifest("multiview", split, root) if isinstance(split, str) else list(split)
        if not items:
            raise DataError(f"no multiview objects in {split if isinstance(split, str) else 'the given items'}; "
                            "run `genstudio data prepare multiview`")
        if cameras not in ("reference", "random", "mixed"):
            raise ValueError(f"MultiViewDataset: cameras must be 'reference', 'random' or 'mixed', got {cameras!r}")
        num_random = min(it["views"] for it in items) - NUM_REFERENCE
        if not single_view:
            limit = NUM_REFERENCE if cameras == "reference" else num_random if cameras == "random" else \
                min(NUM_REFERENCE, num_random)
            if not 1 <= views <= limit:
                raise ValueError(f"MultiViewDataset: views={views} with cameras={cameras!r} needs 1..{limit} "
                                 f"(the build stores {NUM_REFERENCE} reference + {num_random} random views)")
        self.items, self.views, self.cameras, self.single_view, self.seed = items, views, cameras, single_view, seed
        self.deterministic = (split != "train") if deterministic is None else deterministic
        self.per_object = [it["views"] for it in items]
        self.offsets = np.cumsum([0] + self.per_object)
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.single_view else len(self.items)

    def _object(self, k: int) -> dict:
        if k not in self._cache:
            self._cache[k] = load_object(self.items[k]["path"])
        return self._cache[k]

    def __getitem__(self, i: int) -> dict:
        if self.single_view:
            k = int(np.searchsorted(self.offsets, i, side="right") - 1)
            data, view = self._object(k), i - int(self.offsets[k])
            mask = {"mask": torch.from_numpy(data["alpha"][view]).float().div(255)[None]} if "alpha" in data else {}
            return {"image": to_image(data["rgb"][view]), **mask, "caption": self.items[k]["caption"]}
        data = self._object(i)
        rng = np.random.default_rng((self.seed, i)) if self.deterministic else np.random.default_rng()
        group = self.cameras if self.cameras != "mixed" else str(rng.choice(["reference", "random"]))
        if group == "reference":
            index = np.sort(rng.choice(NUM_REFERENCE, self.views, replace=False))
        else:
            index = NUM_REFERENCE + rng.choice(len(data["c2w"]) - NUM_REFERENCE, self.views, replace=False)
        cams = object_cameras(data, index)
        size = data["rgb"].shape[1]
        maps = {key: torch.from_numpy(data[key][index].astype(np.float32)).movedim(-1, 1)
                for key in ("position", "normal") if key in data}   # absent from a slimmed copy (slim_copy)
        if "alpha" in data:
            maps["masks"] = torch.from_numpy(data["alpha"][index]).float().div(255)[:, None]
        return {"images": to_image(data["rgb"][index]), **maps,
                "plucker": cams.plucker(size), "c2w": cams.c2w,
                "orthographic": torch.tensor(cams.projection == "orthographic"),
                "reference": to_image(data["rgb"][0]),   # the front reference render (image conditioning)
                "caption": self.items[i]["caption"]}
