"""MV-Adapter data and recipes: the CPU rasteriser, the `multiview` source read back through
MultiViewDataset, and one step of `mv-base` and `mv-adapter` on a tiny build."""
import math
import time

import numpy as np
import pytest
import torch

from pipelines.multiview.cameras import orbit_cameras, ray_origins_and_directions, reference_cameras
from pipelines.multiview.render import render_mesh


@pytest.fixture(scope="module")
def sphere():
    import trimesh
    return trimesh.creation.icosphere(4, radius=0.5)   # 5,120 faces


# --------------------------------------------------------------------------- rasteriser

@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_sphere_silhouette_depth_and_normals(sphere, projection):
    cams = orbit_cameras([0, 73, 200], [0, 30, -20], radius=2.0, projection=projection, fov=40, ortho_scale=1.1)
    out = render_mesh(sphere.vertices, sphere.faces, cams, 64)
    if projection == "orthographic":
        expected = math.pi * 0.25 / (1.1 / 64) ** 2
    else:  # a sphere of radius r at distance D spans a disc of radius focal * tan(asin(r / D))
        focal = 32 / math.tan(math.radians(20))
        expected = math.pi * (focal * math.tan(math.asin(0.25))) ** 2
    area = out["mask"].sum((1, 2))
    assert np.abs(area - expected).max() < 0.02 * expected
    mask = out["mask"]
    position, normal = out["position"][mask], out["normal"][mask]
    assert np.abs(np.linalg.norm(position, axis=-1) - 0.5).max() < 2e-3          # on the surface
    assert np.abs(normal - position / 0.5).max() < 0.02                           # outward unit normals
    assert abs(out["depth"][mask].min() - 1.5) < 5e-3                             # nearest point: D - r
    # each surface point lies on its pixel's ray (the same conventions as cameras.py)
    origins, directions = (t.numpy() for t in ray_origins_and_directions(cams, 64))
    rel = out["position"] - origins
    off_ray = np.linalg.norm(rel - (rel * directions).sum(-1, keepdims=True) * directions, axis=-1)
    assert off_ray[mask].max() < 1e-6
    assert (out["normal"][~mask] == 0).all() and (out["rgb"][~mask] == 1).all()


def test_orthographic_cube_front_view():
    import trimesh
    cube = trimesh.creation.box((0.8, 0.8, 0.8))
    cams = orbit_cameras([0.0], 0.0, radius=2.0, projection="orthographic", ortho_scale=1.0)   # on +x
    out = render_mesh(cube.vertices, cube.faces, cams, 50, light=(1.0, 0, 0), ambient=0.2, color=(1.0, 0.5, 0.0))
    mask = out["mask"][0]
    assert mask.sum() == 40 * 40 and mask[5:45, 5:45].all()                      # a 0.8 x 0.8 square
    torch.testing.assert_close(out["normal"][0][mask], np.tile([1.0, 0, 0], (1600, 1)))  # the +x face, sharp
    torch.testing.assert_close(out["position"][0][mask][:, 0], np.full(1600, 0.4))
    torch.testing.assert_close(out["depth"][0][mask], np.full(1600, 1.6))
    torch.testing.assert_close(out["rgb"][0][mask], np.tile([1.0, 0.5, 0.0], (1600, 1)))  # lit head-on
    side = render_mesh(cube.vertices, cube.faces, cams, 50, light=(0, 1.0, 0), ambient=0.2, color=(1.0, 0.5, 0.0))
    torch.testing.assert_close(side["rgb"][0][mask], np.tile([0.2, 0.1, 0.0], (1600, 1)))  # ambient only


def test_mask_agrees_with_alpha_and_supersampled_edges(sphere):
    cams = reference_cameras()
    hard = render_mesh(sphere.vertices, sphere.faces, cams, 32)
    assert set(np.unique(hard["alpha"])) <= {0.0, 1.0} and (hard["mask"] == (hard["alpha"] == 1)).all()
    soft = render_mesh(sphere.vertices, sphere.faces, cams, 32, supersample=3)
    alpha, mask = soft["alpha"], soft["mask"]
    assert (mask == (alpha >= 0.5)).all() and ((alpha > 0) & (alpha < 1)).any()
    assert (soft["rgb"][alpha == 0] == 1).all()                                   # white where nothing is drawn
    assert abs(mask.sum() - hard["mask"].sum()) < 0.03 * hard["mask"].sum()
    assert np.abs(np.linalg.norm(soft["normal"][mask], axis=-1) - 1).max() < 1e-6


def test_render_speed_2k_faces_at_64px():
    import trimesh
    mesh = trimesh.creation.icosphere(3, radius=0.5)
    mesh = trimesh.Trimesh(*trimesh.remesh.subdivide(mesh.vertices, mesh.faces, np.arange(240)))  # 2,000 faces
    assert 1900 <= len(mesh.faces) <= 2100
    cams = orbit_cameras(np.linspace(0, 330, 12), 20.0, radius=2.0, projection="perspective")
    render_mesh(mesh.vertices, mesh.faces, cams, 64)
    t0 = time.perf_counter()
    render_mesh(mesh.vertices, mesh.faces, cams, 64)
    per_view = (time.perf_counter() - t0) / len(cams)
    print(f"\n[render] {len(mesh.faces)} faces at 64 px: {per_view * 1e3:.1f} ms per view")
    assert per_view < 0.25


def test_bad_mesh_is_a_clear_error():
    with pytest.raises(ValueError, match="triangle faces"):
        render_mesh(np.zeros((4, 3)), np.zeros((2, 4), int), reference_cameras())


# --------------------------------------------------------------------------- data source and dataset

@pytest.fixture(scope="module")
def built():
    import pipelines.multiview.data  # noqa: F401  (registers the source, as the entry point does)
    from genstudio.data import prepare
    return prepare("multiview", force=True, quiet=True, sources="primitives", primitives=12, views=4, size=32)


def test_tiny_build_reads_back(built):
    import json
    from genstudio.data import load_manifest
    from pipelines.multiview.data import PALETTE, MultiViewDataset
    info = json.loads((built / "info.json").read_text())
    assert info["items"] == 12 and sum(info["splits"].values()) == 12
    items = load_manifest("multiview")
    assert {it["label"] for it in items} == {"sphere", "box", "cylinder", "capsule", "cone", "torus"}
    assert all(it["caption"] == f"a {it['color']} {it['label']}" and it["color"] in PALETTE for it in items)
    z = np.load(items[0]["path"])
    assert z["rgb"].shape == (10, 32, 32, 3) and z["rgb"].dtype == np.uint8 and z["alpha"].dtype == np.uint8
    assert z["position"].dtype == np.float16 and z["normal"].shape == (10, 32, 32, 3) and z["c2w"].shape == (10, 4, 4)
    assert (np.abs(z["position"]) <= 0.5 + 1e-2).all()                                    # the unit cube

    split = items[0]["split"]
    ds = MultiViewDataset(split, views=4, cameras="random")
    x = ds[0]
    assert x["images"].shape == (4, 3, 32, 32) and x["plucker"].shape == (4, 6, 32, 32)
    assert x["masks"].shape == (4, 1, 32, 32) and x["position"].shape == (4, 3, 32, 32) and x["c2w"].shape == (4, 4, 4)
    assert x["images"].min() >= -1 and x["images"].max() <= 1 and isinstance(x["caption"], str)
    assert x["reference"].shape == (3, 32, 32)
    ref = MultiViewDataset(split, views=6, cameras="reference")[0]
    assert bool(ref["orthographic"]) and torch.equal(ref["c2w"], reference_cameras().c2w)
    single = MultiViewDataset(split, single_view=True)
    assert len(single) == 10 * len(ds) and single[11]["image"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="views=5"):
        MultiViewDataset(split, views=5, cameras="random")


# --------------------------------------------------------------------------- recipes

TINY = {"steps": 1, "batch_size": 2, "progress": False, "mixed_precision": "no", "ema_decay": "none",
        "save_every": 1000, "warmup_steps": 0}


def test_one_step_of_each_recipe(built, tmp_path):
    from genstudio.train import train
    from pipelines.multiview.attention import MVAdapter
    from pipelines.multiview.train import adapter_recipe, base_recipe, load_base
    base = base_recipe({**TINY, "preset": "tiny", "output_dir": str(tmp_path / "base")})
    summary = train(base)
    assert summary["steps"] == 1 and math.isfinite(summary["loss"])
    before = {k: v.clone() for k, v in load_base(tmp_path / "base").state_dict().items()}

    rec = adapter_recipe({**TINY, "base": str(tmp_path / "base"), "views": 4, "cameras": "random",
                          "output_dir": str(tmp_path / "adapter")})
    unet = rec.extra["unet"]
    assert not any(p.requires_grad for p in unet.parameters())
    summary = train(rec)
    assert summary["steps"] == 1 and math.isfinite(summary["loss"])
    for k, v in unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    trained = MVAdapter.from_pretrained(summary["final"])
    assert trained.config.mv_layout == "full" and trained.config.attention_dims.keys() == rec.model.config.attention_dims.keys()
    assert any(p.abs().sum() > 0 for n, p in trained.named_parameters() if "to_out_mv" in n)  # left zero-init
    with pytest.raises(ValueError, match="unknown mv-adapter option"):
        adapter_recipe({"base": str(tmp_path / "base"), "colour": 1})


def test_slim_copy_and_caption_table_train_without_the_encoder(built, tmp_path, monkeypatch):
    """What scripts/gpu-multiview.sh carries to a GPU box: data without masks / geometry, captions precomputed."""
    from genstudio.data import load_manifest
    from genstudio.train import train
    from pipelines.multiview.data import MultiViewDataset, slim_copy
    from pipelines.multiview.train import CaptionTokens, adapter_recipe, base_recipe, write_caption_table
    items = load_manifest("multiview")
    assert slim_copy(tmp_path / "data", splits=("train", "val", "test"), compress=False) > 0
    table = tmp_path / "captions.safetensors"
    assert write_caption_table(table, [it["caption"] for it in items]) == len({it["caption"] for it in items}) + 1
    tokens, encoder = CaptionTokens(table=str(table)), CaptionTokens()
    caps = [items[0]["caption"], ""]
    for a, b in zip(tokens(caps), encoder(caps)):
        assert a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-4)
    with pytest.raises(ValueError, match="not in the caption table"):
        tokens(["a plaid zeppelin"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a caption table"):
        CaptionTokens(table=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not 'other'"):
        CaptionTokens("other", table=str(table))

    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "data"))
    slim = load_manifest("multiview")
    assert [it["id"] for it in slim] == [it["id"] for it in items]
    with np.load(slim[0]["path"]) as z:
        assert "rgb" in z.files and not {"alpha", "position", "normal"} & set(z.files)
    x = MultiViewDataset(slim[0]["split"], views=4, cameras="random")[0]
    assert x["images"].shape == (4, 3, 32, 32) and "masks" not in x and "position" not in x
    base = base_recipe({**TINY, "preset": "tiny", "caption_table": str(table), "output_dir": str(tmp_path / "base")})
    assert math.isfinite(train(base)["loss"])
    with pytest.raises(ValueError, match="position / normal maps"):
        adapter_recipe({"base": str(tmp_path / "base"), "geometry": True, "caption_table": str(table)})


def test_presets_fit_the_checkpoint_budget():
    from pipelines.multiview.attention import add_mv_adapter
    from pipelines.multiview.train import make_base_unet
    unet = make_base_unet("S", 64)
    base_mb = sum(p.numel() for p in unet.parameters()) * 2 / 1e6
    adapter_mb = sum(p.numel() for p in add_mv_adapter(unet, 4, use_ref=True, mv_layout="full",
                                                         cond_downscale_factor=1).parameters()) * 2 / 1e6
    print(f"\n[presets] S: base {base_mb:.1f} MB, adapter {adapter_mb:.1f} MB in fp16")
    assert base_mb <= 30 and adapter_mb <= 30
