"""`genstudio bench multiview` (pipelines/multiview/bench.py): the silhouette visual-hull consistency score on
synthetic renders, view names for the base-per-view prompts, and a quick end-to-end run on a tiny saved base +
adapter against a tiny multiview build."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipelines.multiview.bench import METHODS, silhouette_consistency, silhouettes, view_name
from pipelines.multiview.cameras import orbit_cameras, reference_cameras
from pipelines.multiview.render import render_mesh


def _renders(mesh, cameras, size=32):
    return np.round(render_mesh(mesh.vertices, mesh.faces, cameras, size, color=(0.8, 0.2, 0.2))["rgb"] * 255
                    ).astype(np.uint8)


@pytest.fixture(scope="module")
def meshes():
    import trimesh
    bar = trimesh.creation.box((0.9, 0.25, 0.5))                      # elongated: its views differ by azimuth
    ball = trimesh.creation.icosphere(2, radius=0.3)
    ball.apply_translation([0, 0, -0.2])
    return bar, ball


def test_true_renders_are_consistent_and_mixed_views_are_not(meshes):
    bar, ball = meshes
    cams = reference_cameras()
    a, b = _renders(bar, cams), _renders(ball, cams)
    true_a, true_b = silhouette_consistency(a, cams, grid=32), silhouette_consistency(b, cams, grid=32)
    assert true_a > 0.8 and true_b > 0.8
    per_view = silhouette_consistency(a, cams, grid=32, per_view=True)
    assert len(per_view) == 6 and min(per_view) > 0.7
    other_object = silhouette_consistency(np.concatenate([a[:3], b[3:]]), cams, grid=32)
    shuffled = silhouette_consistency(a[[3, 4, 5, 0, 1, 2]], cams, grid=32)       # views at the wrong cameras
    assert other_object < min(true_a, true_b) - 0.2
    assert shuffled < true_a - 0.2
    assert silhouette_consistency(np.full_like(a, 255), cams, grid=32) == 0.0      # blank views are not rewarded


def test_consistency_with_perspective_orbit_cameras(meshes):
    bar, ball = meshes
    cams = orbit_cameras([10, 100, 200, 290], [30, -10, 20, 40], 2.0, projection="perspective")
    a, b = _renders(bar, cams), _renders(ball, cams)
    true_a = silhouette_consistency(a, cams, grid=32)
    mixed = silhouette_consistency(np.concatenate([a[:2], b[2:]]), cams, grid=32)
    assert true_a > 0.6 and mixed < true_a - 0.15


def test_silhouette_threshold_and_view_names():
    image = np.full((1, 4, 4, 3), 255, np.uint8)
    image[0, 0, 0] = (255, 255, 240)      # 0.06 from white: background
    image[0, 1, 1] = (255, 200, 255)      # 0.22 from white: foreground
    assert silhouettes(image).sum() == 1 and silhouettes(image)[0, 1, 1]
    assert view_name(0, 0) == "front view" and view_name(90, 0) == "right side view"
    assert view_name(180, 10) == "back view" and view_name(-90, 0) == "left side view"
    assert view_name(315, 0) == "front left view" and view_name(30, 70) == "top view"


def test_quick_bench_end_to_end(tmp_path, monkeypatch):
    import pipelines.multiview.data  # noqa: F401  (registers the source, as the entry point does)
    from genstudio.bench import Report
    from genstudio.data import load_manifest, prepare
    from pipelines.multiview.bench import bench_multiview
    from test_multiview_pipeline import _build
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "data"))
    # primitives 39 and 51 are the first two whose ids hash into the test split
    prepare("multiview", quiet=True, sources="primitives", primitives=52, views=4, size=16, supersample=1)
    assert len(load_manifest("multiview", "test")) == 2
    base, adapter = _build(tmp_path / "models")

    report = Report("multiview", tmp_path / "out")
    bench_multiview(report, quick=True, model=str(adapter), base=str(base), steps=2, grid=16, device="cpu",
                    precision="fp32")
    rows = {(r["dataset"], r["method"]): r for r in report.rows}
    assert {d for d, _ in rows} == {"reference-6", "unseen-4"}
    for dataset in ("reference-6", "unseen-4"):
        for method in METHODS:
            row = rows[(dataset, method)]
            assert row["objects"] == 2
            keys = ("consistency", "foreground", "sec_per_object", "peak_mb") + (
                () if method == "true-renders" else ("psnr", "ssim"))
            for key in keys:
                assert isinstance(row[key], float) and math.isfinite(row[key]), (dataset, method, key)
            assert 0 <= row["consistency"] <= 1
    # the copy of the conditioning image is exact at the front view: its PSNR beats nothing-at-all
    assert rows[("reference-6", "copy-reference")]["psnr"] > 0
    json_path, md_path = report.write()
    assert json.loads(json_path.read_text())["results"] and "mv-adapter-no-mv" in md_path.read_text()
    assert any("base-per-view" in n for n in report.notes) and any("0.08" in n for n in report.notes)
