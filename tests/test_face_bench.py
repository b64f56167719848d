"""`genstudio bench face` quick, offline: a fake `faces` build (test_face_data's stand-in for the
node side) and a tiny random Vec2Face checkpoint in the export layout (test_face_pipeline's)."""
import math

import numpy as np
import pytest
import torch

pytest.importorskip("cairosvg")

from genstudio.bench import Report  # noqa: E402
from test_face_data import build_fake_faces  # noqa: E402
from test_face_pipeline import checkpoint  # noqa: E402,F401  (the tiny Vec2Face fixture)


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces-root")
    with pytest.MonkeyPatch.context() as mp:
        return build_fake_faces(root, mp.setattr, identities=40, variations=4, size=64)


def test_bench_face_quick(tmp_path, checkpoint, faces_root):  # noqa: F811
    from pipelines.face.bench import bench_face
    report = Report("face", tmp_path)
    bench_face(report, quick=True, model=str(checkpoint), root=str(faces_root))
    rows = {r["method"]: r for r in report.rows}

    trained = [rows[f"recognizer on {m}"] for m in ("vec2face", "real", "single-image + augmentation")]
    assert len({r["train_images"] for r in trained}) == 1 and trained[0]["train_images"] == 8 * 3
    assert all(r["train_identities"] == 8 and r["steps"] == 5 for r in trained)
    for r in trained + [rows["shipped recognizer (reference)"]]:
        assert r["dataset"] == "test identities" and 0.0 <= r["verification_acc"] <= 1.0

    for m in ("separation: vec2face", "separation: real"):
        r = rows[m]
        assert all(-1.0 <= r[k] <= 1.0 for k in ("intra_cos", "inter_cos"))
        assert math.isclose(r["gap"], r["intra_cos"] - r["inter_cos"], abs_tol=2e-4)

    a = rows["AttrOP pose edit"]
    assert a["trials"] == 2 and 0.0 <= a["success_rate"] <= 1.0 and a["within_cap"] is True
    assert 1 <= a["mean_iters"] <= a["max_iters_seen"] <= a["iter_cap"] == 5
    assert a["min_vector_cos"] >= 0.8 - 1e-4

    s = rows["new_identities speed"]
    assert s["images"] == 24 and s["images_per_s"] > 0

    for r in report.rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
    jp, mp = report.write()
    assert "recognizer on vec2face" in mp.read_text() and jp.exists()


def test_training_sets_are_the_same_size_and_single_repeats_one_face():
    from pipelines.face.bench import FaceArrayDataset, real_set
    images = np.arange(5 * 4 * 8 * 8 * 3, dtype=np.int64).reshape(20, 8, 8, 3).astype(np.uint8)
    items = [{"identity": f"id{k // 4}"} for k in range(20)]
    real, labels = real_set(images, items, 3, 2)
    single, single_labels = real_set(images, items, 3, 2, single=True)
    assert real.shape == single.shape == (6, 8, 8, 3) and list(labels) == list(single_labels) == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(real[1], images[1]) and np.array_equal(single[1], images[0])
    with pytest.raises(ValueError, match="only 5 identities"):
        real_set(images, items, 6, 2)
    item = FaceArrayDataset(real, labels, augment=True, seed=0)[3]
    assert item["image"].shape == (3, 8, 8) and item["identity"] == 1
    assert float(item["image"].min()) >= -1 and float(item["image"].max()) <= 1
    assert torch.equal(FaceArrayDataset(real, labels, augment=False)[0]["image"],
                       torch.from_numpy(real[0]).permute(2, 0, 1).float() / 127.5 - 1)
