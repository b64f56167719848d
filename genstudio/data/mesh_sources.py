"""Offline mesh sources shared by the mesh-based data builds: pybullet's `random_urdfs` and trimesh primitives.

- "urdf": the 1,000 procedural objects (unions of convex pieces, zlib) of `pybullet_data/random_urdfs`,
  read out of the pybullet wheel or sdist (`pip download pybullet==PYBULLET_VERSION --no-deps`) or out of
  a folder holding `NNN/NNN.obj`. They are z-up, as URDF is; turning them is the caller's choice.
- "primitives": trimesh primitives (`PRIMITIVE_CLASSES`, plus "union" of two or three of them) with random
  per-axis scales and rotations, drawn from one seeded generator in a fixed order.

`source_meshes` yields (id, kind, licence, trimesh or None) for the requested sources; each pipeline maps the
kind to its own class label and orientation.

`package_meshes` reads the other meshes that wheels ship (shared/DATA.md "Meshes", `PACKAGE_MESHES`): pybullet_data's
root objects and robots, dm_control's STL files, pyvista's example .ply files.
"""
from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .registry import DataError

PYBULLET_VERSION = "3.2.7"
LICENCE_URDF = "zlib (pybullet_data)"
LICENCE_PRIMITIVES = "Apache-2.0 (generated here with trimesh)"
PRIMITIVE_CLASSES = ("sphere", "box", "cylinder", "capsule", "cone", "torus")
UNION = "union"   # 2-3 overlapping primitives, also accepted by `random_primitive`
_OBJ_IN_ARCHIVE = re.compile(r"(?:^|/)random_urdfs/(\d+)/\1\.obj$")
# source -> (pip requirement, mesh files inside the wheel, licence, z-up as stored); dm_control's third_party
# (Kinova) meshes are left out: the wheel states no licence for them
PACKAGE_MESHES = {
    "pybullet": (f"pybullet=={PYBULLET_VERSION}", r"^pybullet_data/(?!random_urdfs/).+\.(?:obj|stl)$",
                 "zlib (pybullet_data)", True),
    "dm_control": ("dm-control==1.0.50", r"^dm_control/(?!third_party/).+\.stl$", "Apache-2.0 (dm_control)", True),
    "pyvista": ("pyvista==0.49.1", r"^pyvista/examples/.+\.ply$", "MIT (pyvista)", False),
}


def random_primitive(kind: str, rng: np.random.Generator, *, sphere_subdivisions: int = 3,
                     torus_minor: tuple[float, float] = (0.12, 0.25), torus_sections: int = 32):
    """One trimesh primitive of `kind` with a random per-axis scale and rotation ("union": 2-3 primitives).

    The keywords set the tessellation (icosphere subdivisions, the torus's major sections) and the torus's
    minor-radius range; the random draws, and their order, are the same for any of them."""
    import trimesh
    from trimesh.transformations import random_rotation_matrix
    style = {"sphere_subdivisions": sphere_subdivisions, "torus_minor": torus_minor, "torus_sections": torus_sections}
    if kind == UNION:
        parts = [random_primitive(str(rng.choice(PRIMITIVE_CLASSES)), rng, **style)
                 for _ in range(int(rng.integers(2, 4)))]
        for part in parts[1:]:  # overlapping but not nested: offset by about a part's size
            part.apply_translation(rng.normal(size=3) * 0.4)
        return trimesh.util.concatenate(parts)
    make = {"sphere": lambda: trimesh.creation.icosphere(sphere_subdivisions),
            "box": lambda: trimesh.creation.box(),
            "cylinder": lambda: trimesh.creation.cylinder(0.5, 1.0, sections=32),
            "capsule": lambda: trimesh.creation.capsule(1.0, 0.35, count=[12, 12]),
            "cone": lambda: trimesh.creation.cone(0.5, 1.0, sections=32),
            "torus": lambda: trimesh.creation.torus(0.5, float(rng.uniform(*torus_minor)), torus_sections, 12)}
    if kind not in make:
        raise ValueError(f"unknown primitive {kind!r}; expected one of {', '.join(PRIMITIVE_CLASSES + (UNION,))}")
    mesh = make[kind]()
    mesh.apply_scale(rng.uniform(0.5, 1.0, 3))
    mesh.apply_transform(random_rotation_matrix(rng.random(3)))
    return mesh


def urdf_archive(archive: str | Path | None, folder: Path, log, *, version: str = PYBULLET_VERSION,
                 wheel_only: bool = True,
                 hint: str = "pass --option archive=<a pybullet wheel, or a folder holding random_urdfs>") -> Path:
    """`archive` as a Path, or else the pybullet archive that `pip download` puts in `folder` (a wheel, or with
    `wheel_only=False` a wheel or an sdist). Failures raise DataError ending in `hint`."""
    return package_archive(f"pybullet=={version}", folder, log, archive, wheel_only=wheel_only, hint=hint)


def package_archive(requirement: str, folder: Path, log, archive: str | Path | None = None, *,
                    wheel_only: bool = True, hint: str = "pass the archive's path") -> Path:
    """`archive` as a Path, or else what `pip download <requirement> --no-deps` puts in `folder` (a wheel, or with
    `wheel_only=False` a wheel or an sdist). Failures raise DataError ending in `hint`."""
    if archive:
        return Path(archive)
    dist = requirement.split("==")[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps",
           *(["--only-binary", ":all:"] if wheel_only else []), "-d", str(folder)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise DataError(f"this build needs pip to download {dist} ({e}); install it or {hint}") from None
    stem = dist.replace("-", "_")  # wheels spell dm-control dm_control
    found = sorted(p for p in folder.iterdir() if p.name.lower().startswith((dist.lower(), stem.lower()))
                   and (p.suffix == ".whl" or not wheel_only))
    if r.returncode != 0 or not found:
        if "No module named pip" in (r.stderr or ""):
            raise DataError(f"this build needs pip ({sys.executable} -m pip), which is not installed; "
                            f"install it or {hint}")
        tail = ((r.stderr or r.stdout).strip().splitlines() or ["no output"])[-1]
        raise DataError(f"`pip download {requirement}` failed ({tail[:200]}); check the network/index, "
                        f"or {hint}")
    log(f"{requirement}: {found[0].name} ({found[0].stat().st_size / 1e6:.0f} MB)")
    return found[0]


def package_files(archive: Path, pattern: str) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the files whose path (as in the wheel: `pybullet_data/duck.obj`) matches `pattern`
    (case-insensitive), from a wheel or from a folder holding the unpacked packages (site-packages), sorted."""
    match = re.compile(pattern, re.IGNORECASE).search
    archive = Path(archive)
    if archive.is_dir():
        for path in sorted(p for p in archive.rglob("*") if p.is_file()):
            rel = path.relative_to(archive).as_posix()
            if match(rel):
                yield rel, path.read_bytes()
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            yield from ((name, z.read(name)) for name in sorted(z.namelist()) if match(name))
    else:
        raise DataError(f"{archive} is not a wheel (zip) or a folder")


def package_meshes(sources: list[str], tmp: Path, log, archive: str | Path | None = None
                   ) -> Iterator[tuple[str, str, bool, object]]:
    """(id, licence, z_up, trimesh or None) of every mesh file of the `PACKAGE_MESHES` sources, in order; ids are
    `<source>/<path in the package>` (link1.obj and link1.stl may sit side by side). `archive`: a folder holding
    the unpacked packages (site-packages, or a test fixture) used for every source; else each wheel is
    `pip download`ed into `tmp`."""
    import trimesh
    for source in sources:
        if source not in PACKAGE_MESHES:
            raise DataError(f"unknown package mesh source {source!r}: expected some of {', '.join(PACKAGE_MESHES)}")
        requirement, pattern, licence, z_up = PACKAGE_MESHES[source]
        found = package_archive(requirement, Path(tmp) / source, log, archive,
                                hint="pass --option source_dir=<a folder holding the unpacked packages>")
        for name, data in package_files(found, pattern):
            try:
                mesh = trimesh.load(io.BytesIO(data), file_type=name.rsplit(".", 1)[-1].lower(), force="mesh")
            except Exception:  # an empty or broken file
                mesh = None
            yield f"{source}/{name.split('/', 1)[1]}", licence, z_up, mesh


def urdf_objects(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(number, .obj bytes) of `random_urdfs/N/N.obj` in a pybullet wheel or sdist, or `<dir>/N/N.obj` in a
    folder, in sorted order."""
    archive = Path(archive)
    if archive.is_dir():
        files = sorted(p for p in archive.rglob("*.obj") if p.parent.name == p.stem)
        if not files:
            raise DataError(f"{archive} holds no random_urdfs-style objects (<dir>/NNN/NNN.obj)")
        yield from ((p.stem, p.read_bytes()) for p in files)
        return
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for name in sorted(z.namelist()):
                m = _OBJ_IN_ARCHIVE.search(name)
                if m:
                    yield m.group(1), z.read(name)
    elif archive.is_file() and tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            for member in sorted(t.getmembers(), key=lambda m: m.name):
                m = _OBJ_IN_ARCHIVE.search(member.name)
                if m and member.isfile():
                    yield m.group(1), t.extractfile(member).read()
    else:
        raise DataError(f"{archive} is not a pybullet wheel (zip), sdist (tar) or a folder")


def source_meshes(sources: list[str], primitives: int, archive: str | None, tmp: Path, log, seed: int, *,
                  classes: tuple[str, ...] = PRIMITIVE_CLASSES,
                  primitive: Callable[[str, np.random.Generator], object] = random_primitive,
                  name: str = "mesh") -> Iterator[tuple[str, str, str, object]]:
    """(id, kind, licence, trimesh or None) for every requested source, in order.

    "primitives": `primitives` meshes `primitive(kind, rng)`, kinds cycling through `classes`, all drawn from
    one `default_rng(seed)`; ids `primitive/<kind>_<k:05d>`. "urdf": `urdf_objects(urdf_archive(archive, tmp,
    log))`, kind "urdf", ids `urdf/<N>`, z-up as stored; None where a file does not load."""
    import trimesh
    for source in sources:
        if source == "primitives":
            rng = np.random.default_rng(seed)
            for k in range(primitives):
                kind = classes[k % len(classes)]
                yield f"primitive/{kind}_{k:05d}", kind, LICENCE_PRIMITIVES, primitive(kind, rng)
        elif source == "urdf":
            for number, data in urdf_objects(urdf_archive(archive, tmp, log)):
                try:
                    mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh")
                except Exception:  # an empty or broken file
                    mesh = None
                yield f"urdf/{number}", "urdf", LICENCE_URDF, mesh
        else:
            raise DataError(f"unknown {name} source {source!r}: expected 'urdf' and/or 'primitives'")
