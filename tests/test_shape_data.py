"""The `shapes` source (VAT's data): watertight repair, occupancy labels, surface samples, the build and
`ShapeDataset`. Offline, tiny sizes only."""
import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
from pipelines.shape.data import (EXTENT, PRIMITIVE_CLASSES, SHAPE_CLASSES, ShapeDataset, load_shape,  # noqa: E402
                                  normalize_mesh, random_primitive, sample_shape, watertight, winding_number)


def occupancy_of(arrays: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    points = arrays[key].astype(np.float64)
    return points, np.unpackbits(arrays[f"{key}_occ"])[:len(points)].astype(bool)


def test_winding_number_is_one_inside_zero_outside_and_two_in_an_overlap():
    sphere = trimesh.creation.icosphere(2)
    w = winding_number(sphere.vertices, sphere.faces, np.array([[0, 0, 0], [0.5, 0.2, 0], [2, 0, 0], [0, 1.5, 0]]))
    assert np.allclose(w, [1, 1, 0, 0], atol=1e-4)
    a, b = trimesh.creation.box(), trimesh.creation.box()
    b.apply_translation([0.5, 0, 0])
    union = trimesh.util.concatenate([a, b])
    assert winding_number(union.vertices, union.faces, np.array([[0.25, 0, 0]]))[0] == pytest.approx(2, abs=1e-4)


@pytest.mark.parametrize("name", ["sphere", "cube"])
def test_occupancy_labels_of_a_sphere_and_a_cube_are_right(name):
    mesh = trimesh.creation.icosphere(3) if name == "sphere" else trimesh.creation.box()
    arrays = sample_shape(normalize_mesh(watertight(mesh)), 256, 512, 512, seed=1)
    if name == "sphere":
        def depth(p):
            return EXTENT - np.linalg.norm(p, axis=1)  # > 0 inside (radius 0.9; the icosphere is ~0.3% inside)
    else:
        def depth(p):
            return EXTENT - np.abs(p).max(1)
    for key in ("near", "uniform"):
        points, occ = occupancy_of(arrays, key)
        clear = np.abs(depth(points)) > 0.01  # away from the facets' deviation from the ideal surface
        assert clear.sum() > 100 and np.array_equal(occ[clear], depth(points[clear]) > 0)
    surface = arrays["points"].astype(np.float64)
    assert surface.shape == (256, 6)
    assert np.abs(depth(surface[:, :3])).max() < 0.01                       # on the surface
    assert (np.einsum("ij,ij->i", surface[:, :3], surface[:, 3:]) > 0).all()  # normals point outward


def test_surface_points_inside_another_piece_of_a_union_are_dropped():
    a, b = trimesh.creation.box(), trimesh.creation.box()
    b.apply_translation([0.5, 0, 0])
    union = normalize_mesh(watertight(trimesh.util.concatenate([a, b])))
    arrays = sample_shape(union, 512, 64, 64)
    points = arrays["points"][:, :3].astype(np.float64)
    # union spans x in [-0.9, 0.9]; no point may lie strictly inside (|y|, |z| < ~0.6, x in (-0.9, 0.9))
    interior = (np.abs(points[:, 1:]).max(1) < 0.55) & (np.abs(points[:, 0]) < 0.85)
    assert not interior.any()


def test_watertight_repairs_what_it_can_and_skips_the_rest():
    box = trimesh.creation.box()
    holed = trimesh.Trimesh(box.vertices, box.faces[:-1], process=False)   # one triangle missing: fillable
    assert watertight(holed) is not None and watertight(holed).is_watertight
    sheet = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]])
    assert watertight(sheet) is None
    inverted = trimesh.creation.icosphere(1)
    inverted.invert()
    assert watertight(inverted).volume > 0                                   # oriented outward again


def test_every_primitive_class_is_watertight_and_fits_the_unit_cube():
    rng = np.random.default_rng(0)
    for kind in PRIMITIVE_CLASSES:
        mesh = normalize_mesh(watertight(random_primitive(kind, rng)))
        assert np.abs(mesh.vertices).max() == pytest.approx(EXTENT)


def urdf_like(seed: int, parts: int = 3):
    rng = np.random.default_rng(seed)
    return trimesh.util.concatenate([trimesh.convex.convex_hull(rng.normal(size=(12, 3)) * 0.4 + rng.normal(size=3) * 0.3)
                                     for _ in range(parts)])


@pytest.fixture(scope="module")
def shapes_built(tmp_path_factory):
    """A tiny `shapes` build: 3 urdf-like objects in a random_urdfs folder (one unreadable) + 7 primitives."""
    from genstudio.data import prepare
    root = tmp_path_factory.mktemp("pybullet") / "random_urdfs"
    for k in range(4):
        (root / f"{k:03d}").mkdir(parents=True)
        text = urdf_like(k).export(file_type="obj") if k < 3 else "not an obj\n"
        (root / f"{k:03d}" / f"{k:03d}.obj").write_text(text)
    return prepare("shapes", force=True, quiet=True, sources="urdf,primitives", archive=str(root), primitives=7,
                   points=128, near=128, uniform=128)


def test_shapes_source_builds_and_the_dataset_reads_it(shapes_built):
    import json
    from genstudio.data import load_manifest
    items = load_manifest("shapes")
    assert {it["id"] for it in items} == {"urdf/000", "urdf/001", "urdf/002"} | \
        {f"primitive/{PRIMITIVE_CLASSES[k]}_{k:05d}" for k in range(7)}
    info = json.loads((shapes_built / "info.json").read_text())
    assert sum(info["splits"].values()) == 10 and set(info["licences"]) == {"zlib (pybullet_data)",
                                                                            "Apache-2.0 (generated here with trimesh)"}
    shape = load_shape(items[0]["path"])
    assert shape["points"].shape == (128, 6) and shape["queries"].shape == (256, 3)
    assert 0 < shape["occupancy"][:128].mean() < 1                             # near queries straddle the surface
    dataset = ShapeDataset(items, num_points=64, num_queries=32, deterministic=True)
    a, b = dataset[3], dataset[3]
    assert a["points"].shape == (64, 6) and a["queries"].shape == (32, 3) and a["occupancy"].shape == (32,)
    assert torch.equal(a["queries"], b["queries"])                               # deterministic for evaluation
    assert SHAPE_CLASSES[int(dataset[0]["label"])] == items[0]["label"]
    with pytest.raises(Exception, match="no shapes"):
        ShapeDataset([])
