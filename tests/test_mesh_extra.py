"""MeshAnything's broader data (`meshes-extra`: meshes that wheels ship, decimated to the model's face limit) and
the one-thread CPU decoding. Offline: the packages are stood in for by a folder of tiny synthetic meshes laid
out as the wheels lay theirs out."""
import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("fast_simplification")
from genstudio.data import split_of  # noqa: E402


def _name_in_split(prefix: str, split: str) -> str:
    """A file name whose source id (`prefix` + name) hashes into `split`."""
    return next(f"shape{k}" for k in range(1000) if split_of(f"{prefix}shape{k}.ply") == split)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """site-packages-like folder: what each PACKAGE_MESHES pattern should take, and what it should not."""
    root = tmp_path_factory.mktemp("site-packages")

    def put(rel: str, mesh=None, text: str | None = None):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text if text is not None else mesh.export(file_type=path.suffix[1:].lower())
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    put("pybullet_data/duck.obj", trimesh.creation.icosphere(3))                        # 1280 faces: decimated
    put("pybullet_data/tall.obj", trimesh.creation.box((0.2, 0.3, 1.0)))                # z-up: becomes tall in y
    put("pybullet_data/plane.obj", trimesh.creation.box((1.0, 1.0, 0.0)))               # flat: left out
    put("pybullet_data/urdf/duck.obj", trimesh.creation.icosphere(3))                   # a duplicate: left out
    put("pybullet_data/random_urdfs/000/000.obj", trimesh.creation.box())               # the `meshes` source's
    put("pybullet_data/robot/meshes/LINK.STL", trimesh.creation.icosphere(2).apply_scale((0.3, 0.5, 1.0)))
    put("dm_control/suite/dog_assets/bone.stl", trimesh.creation.capsule(1.0, 0.3, count=[16, 16]))
    put("dm_control/third_party/kinova/arm.stl", trimesh.creation.box())                # no stated licence
    test_name = _name_in_split("pyvista/examples/", "test")
    put(f"pyvista/examples/{test_name}.ply", trimesh.creation.torus(0.5, 0.2, 32, 12))  # hashes to "test"
    put("pyvista/examples/broken.ply", text="not a ply\n")
    return root, test_name


@pytest.fixture(scope="module")
def extra_built(packages, tmp_path_factory):
    from genstudio.data import prepare
    import pipelines.mesh.data  # noqa: F401  (registers the source)
    root = tmp_path_factory.mktemp("data")
    prepare("meshes-extra", root=root, quiet=True, source_dir=str(packages[0]), max_faces=100, levels=2,
            points=256, resolution=24)
    return root


def test_meshes_extra_takes_each_packages_meshes_decimated_at_two_densities(packages, extra_built):
    from genstudio.data import load_manifest
    items = {it["id"]: it for it in load_manifest("meshes-extra", root=extra_built)}
    torus = f"pyvista/examples/{packages[1]}.ply"
    assert set(items) == {"pybullet/duck.obj@100", "pybullet/duck.obj@50", "pybullet/tall.obj@100",
                          "pybullet/robot/meshes/LINK.STL@100", "pybullet/robot/meshes/LINK.STL@50",
                          "dm_control/suite/dog_assets/bone.stl@100", "dm_control/suite/dog_assets/bone.stl@50",
                          f"{torus}@100", f"{torus}@50"}  # no random_urdfs, third_party, flat, duplicate, broken
    for it in items.values():
        target = int(it["id"].rsplit("@", 1)[1])
        assert 4 <= it["faces"] <= target and it["source"] == it["id"].split("/")[0]
        assert it["licence"] == {"pybullet": "zlib (pybullet_data)", "dm_control": "Apache-2.0 (dm_control)",
                                 "pyvista": "MIT (pyvista)"}[it["source"]]
        assert it["split"] in ("train", "val")  # never the benchmark's test split ...
        with np.load(it["path"]) as z:
            v, f, points = z["vertices"], z["faces"], z["points"]
        assert len(f) >= it["faces"] and np.abs(v).max() <= 0.5 + 1e-6 and points.shape == (256, 6)
        assert (np.unique(np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0, return_counts=True)[1]
                == 2).mean() > 0.9  # closed: nearly every edge borders two faces
    assert split_of(torus) == "test" and items[f"{torus}@100"]["split"] == "train"  # ... even where it hashes there
    assert items["pybullet/duck.obj@100"]["source_faces"] == 1280 and items["pybullet/duck.obj@50"]["faces"] <= 50
    with np.load(items["pybullet/tall.obj@100"]["path"]) as z:
        extent = z["vertices"].max(0) - z["vertices"].min(0)
    assert extent[1] == pytest.approx(1.0) and extent[2] == pytest.approx(0.3, abs=1e-3)  # y-up


def test_decimated_levels_keep_closed_solid_meshes_under_each_target():
    from pipelines.mesh.data import decimated_levels, is_closed_and_solid
    sphere = trimesh.creation.icosphere(4)  # 5120 faces
    levels = list(decimated_levels(sphere, 200, levels=3))
    assert [target for target, *_ in levels] == [200, 100, 50]
    for target, unit, faces, quantized in levels:
        assert 0.8 * target <= quantized.num_faces <= target and np.abs(unit).max() <= 0.5
    sieve = trimesh.Trimesh(sphere.vertices, sphere.faces[::2])  # most edges border one face
    assert not is_closed_and_solid(sieve) and not is_closed_and_solid(trimesh.creation.box((1, 1, 0)))
    assert is_closed_and_solid(sphere)


def test_recipe_adds_extra_train_meshes_only_when_asked(extra_built, tmp_path, monkeypatch):
    import shutil
    from genstudio.data import load_manifest, prepare
    from pipelines.mesh.train import recipe
    urdf = tmp_path / "random_urdfs"
    for k, mesh in enumerate([trimesh.creation.box(), trimesh.creation.icosphere(1), trimesh.creation.cone(0.5, 1)]):
        (urdf / f"{k:03d}").mkdir(parents=True)
        (urdf / f"{k:03d}" / f"{k:03d}.obj").write_text(mesh.export(file_type="obj"))
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "data"))
    prepare("meshes", quiet=True, source_dir=str(urdf), points=256, resolution=24, max_faces=400)
    shutil.copytree(extra_built / "meshes-extra", tmp_path / "data" / "meshes-extra")
    test_before = load_manifest("meshes", "test")
    cfg = {"preset": "tiny", "steps": 1, "output_dir": str(tmp_path / "run"), "max_faces": 64, "progress": False}
    plain, broad = recipe(cfg), recipe({**cfg, "extra_sources": True})
    extra_train = [it for it in load_manifest("meshes-extra", "train") if it["faces"] <= 64]
    assert len(broad.dataset) == len(plain.dataset) + len(extra_train) > len(plain.dataset)
    assert load_manifest("meshes", "test") == test_before  # the benchmark's split is the `meshes` one, untouched
