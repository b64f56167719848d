"""`genstudio bench shape` quick, offline: a tiny `shapes` build (test_shape_data's urdf-like objects + primitives,
so the test split holds urdf/002 and primitive/sphere_00007), tiny random VAT / G3PT checkpoints."""
import math

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("DracoPy")
pytest.importorskip("fast_simplification")

from genstudio.bench import Report  # noqa: E402
from pipelines.shape.bench import (UNIT, draco_codes, generation_metrics, measure, prefix_bytes,  # noqa: E402
                                   surface_points)
from test_shape_data import urdf_like  # noqa: E402


@pytest.fixture(scope="module")
def shapes_archive(tmp_path_factory):
    """A `shapes` build whose test split is urdf/002 + primitive/sphere_00007; returns the urdf folder."""
    from genstudio.data import prepare
    root = tmp_path_factory.mktemp("pybullet-bench") / "random_urdfs"
    for k in range(3):
        (root / f"{k:03d}").mkdir(parents=True)
        (root / f"{k:03d}" / f"{k:03d}.obj").write_text(urdf_like(k).export(file_type="obj"))
    prepare("shapes", force=True, quiet=True, sources="urdf,primitives", archive=str(root), primitives=8,
            points=256, near=128, uniform=128)
    return root


def fit_a_little(vat, steps: int = 60):
    """A few optimiser steps on the tiny build, so that the decoded occupancy crosses 0.5 (a random VAT's
    surface is usually empty) and the metrics have meshes to measure."""
    from genstudio.data import load_manifest
    from pipelines.shape.data import ShapeDataset
    from pipelines.shape.train import vat_loss
    data = ShapeDataset(load_manifest("shapes"), num_points=128, num_queries=256, deterministic=True)
    batch = {k: torch.stack([data[i][k] for i in range(len(data))]) for k in ("points", "queries", "occupancy")}
    opt = torch.optim.Adam(vat.parameters(), lr=3e-3)
    vat.train()
    for _ in range(steps):
        loss, _ = vat_loss(vat, batch, kl_weight=1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return vat.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory, shapes_archive):
    from pipelines.shape.g3pt import G3PT, g3pt_config, vat_settings
    from pipelines.shape.data import SHAPE_CLASSES
    from pipelines.shape.vat import VATTokenizer, vat_config
    out = tmp_path_factory.mktemp("shape-models")
    torch.manual_seed(0)
    vat = fit_a_little(VATTokenizer(**vat_config("tiny")))
    vat.save_pretrained(out / "ckpt" / "vat")                       # the checkpoint layout: vat/ + g3pt/
    fit_a_little(VATTokenizer(**vat_config("tiny", variational=False))).save_pretrained(out / "novar")
    fit_a_little(VATTokenizer(**vat_config("tiny", scales=[8]))).save_pretrained(out / "vq")
    for name, cross in (("ckpt/g3pt", True), ("interp", False)):
        G3PT(**g3pt_config("tiny", **vat_settings(vat), num_classes=len(SHAPE_CLASSES), cross_scale=cross,
                           class_names=list(SHAPE_CLASSES))).save_pretrained(out / name)
    return out


def test_metrics_of_a_mesh_against_itself_and_draco_near_lossless():
    mesh = trimesh.creation.icosphere(3)
    mesh.apply_scale(0.9)
    gt = surface_points(mesh, 30000, 1, True)
    same = measure(*surface_points(mesh, 30000, 2, True), gt)
    assert same["chamfer"] < 0.006 and same["f_score_0.02"] > 0.99 and same["normal_consistency"] > 0.99
    assert 0 <= same["f_score_0.01"] <= 1
    shifted = measure(gt[0] + [0.1 * UNIT, 0, 0], gt[1], gt)                 # 0.1 of the unit side away
    assert shifted["chamfer"] > 0.05 and shifted["f_score_0.02"] < same["f_score_0.02"]
    codes = list(draco_codes(mesh, [0, 80], [6, 14], level=7))
    assert [c[0] for c in codes] == ["Fall/q6", "Fall/q14", "F80/q6", "F80/q14"]
    sizes = {name: size for name, size, _ in codes}
    assert sizes["Fall/q14"] > sizes["Fall/q6"] > sizes["F80/q6"] and sizes["Fall/q14"] > sizes["F80/q14"]
    lossless = measure(*surface_points(codes[1][2], 30000, 2, True), gt)     # 14 bits, every face
    assert lossless["chamfer"] < same["chamfer"] * 1.05 + 1e-4 and lossless["f_score_0.01"] > 0.95
    coarse = measure(*surface_points(codes[2][2], 30000, 2, True), gt)       # 80 faces, 6 bits
    assert coarse["chamfer"] > lossless["chamfer"]


def test_hidden_pieces_of_a_union_are_not_ground_truth():
    a, b = trimesh.creation.box(), trimesh.creation.box()
    b.apply_translation([0.5, 0, 0])
    points, _ = surface_points(trimesh.util.concatenate([a, b]), 2000, 0, boundary_only=True)
    assert not ((np.abs(points[:, 1:]).max(1) < 0.45) & (points[:, 0] > -0.45) & (points[:, 0] < 0.95)).any()


def test_generation_metrics_separate_matching_and_distant_sets():
    rng = np.random.default_rng(0)
    spheres = [rng.normal(size=(300, 3)) for _ in range(4)]
    spheres = [p / np.linalg.norm(p, axis=1, keepdims=True) * 0.8 for p in spheres]
    far = [p + 5.0 for p in spheres]
    same = generation_metrics(spheres[:2], spheres[2:])
    apart = generation_metrics(far[:2], spheres[2:])
    assert apart["1-nna"] == 1.0 and apart["mmd"] > same["mmd"] * 10 and apart["cov"] == 0.5
    assert 0 <= same["1-nna"] <= 1 and 0 < same["cov"] <= 1


def test_bench_shape_quick(tmp_path, shapes_archive, models):
    from pipelines.shape.bench import bench_shape, load_model
    report = Report("shape", tmp_path)
    bench_shape(report, quick=True, vat=None, vat_novar=str(models / "novar"), vat_vq=str(models / "vq"),
                g3pt=str(models / "ckpt"), g3pt_interp=str(models / "interp"), archive=str(shapes_archive))
    rows = {(r["method"], r["dataset"]): r for r in report.rows}
    vat = load_model("vat", models / "ckpt")
    K = len(vat.scales)
    curve = [rows[(f"vat k={k}/{K}", "shapes-test")] for k in range(1, K + 1)]
    sizes = [r["bytes"] for r in curve]
    assert sizes == [prefix_bytes(vat, k) for k in range(1, K + 1)] and sizes == sorted(set(sizes))
    assert sizes[-1] == vat.bytes_per_shape and [r["tokens"] for r in curve] == [1, 3, 7, 15]
    floor = rows[("gt mesh resampled (floor)", "shapes-test")]
    assert floor["n"] == 2 and floor["chamfer"] < 0.02 and floor["normal_consistency"] > 0.95
    draco = [r for (m, _), r in rows.items() if m.startswith("draco F")]
    assert {r["method"] for r in draco} == {"draco Fall/q8", "draco Fall/q14", "draco F50/q8", "draco F50/q14"}
    for r in draco:
        assert r["n"] == 2 and r["valid"] == 1.0 and r["bytes"] > 0
        assert 0 < r["chamfer"] < 0.1 and 0 <= r["f_score_0.01"] <= r["f_score_0.02"] <= 1
    lossless = rows[("draco Fall/q14", "shapes-test")]                     # every face, 14 bits: at the floor
    assert abs(lossless["chamfer"] - floor["chamfer"]) < 0.002
    assert abs(lossless["f_score_0.02"] - floor["f_score_0.02"]) < 0.03
    assert lossless["bytes"] > rows[("draco F50/q8", "shapes-test")]["bytes"]
    measured = [r for r in curve if r["n"]]
    assert measured, "the fitted tiny VAT decoded no surface at any scale"
    for r in measured:
        assert 0 < r["chamfer"] < 1 and 0 <= r["f_score_0.01"] <= r["f_score_0.02"] <= 1
        assert 0 <= r["normal_consistency"] <= 1
    for k in range(1, K + 1):                                                 # matched budgets never exceed
        r = rows[(f"draco@<={sizes[k - 1]} B", "shapes-test")]
        assert r["valid"] == 0.0 or r["bytes"] <= sizes[k - 1]
    assert rows[("vat_novar (full scales)", "shapes-test")]["tokens"] == 15
    assert rows[("vat_vq (full scales)", "shapes-test")]["tokens"] == 8
    for r in curve:
        assert 0 <= r["valid"] <= 1 and (r["n"] == 0 or 0 <= r["f_score_0.01"] <= 1)
    gen = [r for r in report.rows if r["dataset"].startswith("class ")]
    assert {r["dataset"] for r in gen} == {"class sphere", "class urdf"}
    for r in gen:
        assert r["method"] in ("g3pt", "g3pt_interp (cross_scale=False)", "train shapes (reference)")
        if r["method"] != "train shapes (reference)":
            assert r["generated"] == 2 and r["references"] == 1 and r["sec_per_shape"] > 0
        if r["valid"] > 0:
            assert 0 <= r["cov"] <= 1 and r["mmd"] >= 0 and 0 <= r["1-nna"] <= 1
    for r in report.rows:
        assert all(math.isfinite(v) for k, v in r.items() if isinstance(v, float) and k not in
                   ("chamfer", "f_score_0.01", "f_score_0.02", "normal_consistency", "bytes", "faces"))
    jp, mp = report.write()
    text = mp.read_text()
    assert "vat k=4/4" in text and "draco@<=" in text and "unit frame" in text and jp.exists()


def test_bench_shape_generation_only(tmp_path, shapes_archive, models):
    """tokenizer=false skips part 1 (no source rebuild, no Draco rows) and still scores generation."""
    from pipelines.shape.bench import bench_shape
    report = Report("shape", tmp_path)
    bench_shape(report, quick=True, g3pt=str(models / "ckpt"), archive=str(tmp_path / "absent"), tokenizer="false")
    methods = {r["method"] for r in report.rows}
    assert "g3pt" in methods and not any(m.startswith(("draco", "vat k=")) for m in methods)
