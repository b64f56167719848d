import json
from collections import Counter

import pytest

from genstudio.data import DataError, load_manifest, prepare, register_source, split_of
from genstudio.data.registry import SOURCES


def test_split_is_deterministic_and_proportional():
    ids = [f"item-{i}" for i in range(4000)]
    a = [split_of(i) for i in ids]
    assert a == [split_of(i) for i in reversed(ids)][::-1]  # order-independent
    c = Counter(a)
    assert 0.03 < c["test"] / 4000 < 0.07 and 0.03 < c["val"] / 4000 < 0.07


@pytest.fixture
def toy_source():
    calls = {"n": 0}

    @register_source("toy", "test items", licence="MIT")
    def build(out, log, n=10, fail_at=None):
        calls["n"] += 1
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("boom")
            (out / f"{i}.txt").write_text(str(i))
            yield {"id": f"toy/{i}", "path": f"{i}.txt"}
            yield {"id": f"toy/{i}", "path": f"{i}.txt"}  # duplicate: dropped
    yield calls
    SOURCES.pop("toy")


def test_prepare_is_cached_deduped_and_records_licence(tmp_path, toy_source):
    out = prepare("toy", root=tmp_path, quiet=True, n=12)
    info = json.loads((out / "info.json").read_text())
    assert info["items"] == 12 and info["licences"] == {"MIT": 12}
    prepare("toy", root=tmp_path, quiet=True, n=12)
    assert toy_source["n"] == 1  # second call reused the build
    items = load_manifest("toy", root=tmp_path)
    assert [it["split"] for it in items] == [split_of(f"toy/{i}") for i in range(12)]
    assert all(it["path"].startswith(str(tmp_path)) for it in items)
    assert {it["id"] for it in load_manifest("toy", "train", root=tmp_path)} <= {it["id"] for it in items}


def test_failed_build_publishes_nothing(tmp_path, toy_source):
    with pytest.raises(RuntimeError):
        prepare("toy", root=tmp_path, quiet=True, fail_at=3)
    assert not (tmp_path / "toy").exists()
    with pytest.raises(DataError, match="genstudio data prepare toy"):
        load_manifest("toy", root=tmp_path)


def test_missing_tool_and_unknown_source_are_clear(tmp_path):
    register_source("needs_tool", "x", requires=("definitely-not-a-tool",))(lambda out, log: iter(()))
    try:
        with pytest.raises(DataError, match="definitely-not-a-tool"):
            prepare("needs_tool", root=tmp_path, quiet=True)
    finally:
        SOURCES.pop("needs_tool")
    with pytest.raises(DataError, match="available"):
        prepare("nope", root=tmp_path)


def test_photo_source_and_crops(photos_built):
    from genstudio.data.photos import PhotoCropDataset
    items = load_manifest("photos")
    assert len(items) >= 15 and all(it["licence"] for it in items)
    ds = PhotoCropDataset(items, size=32, length=8, deterministic=True, seed=3)
    a, b = ds[5]["image"], ds[5]["image"]
    assert a.shape == (3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert (a == b).all()  # evaluation crops are fixed
    assert not (ds[5]["image"] == ds[6]["image"]).all()
