"""The `faces` data source without npm or the network: the node side is replaced by a fake that
returns tiny SVGs, so sampling, the split by identity, storage, the training view and the
verification pairs run on a build made inside the test."""
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("cairosvg")

import pipelines.face.data as face  # noqa: E402
from genstudio.data.registry import DataError, load_manifest, prepare, split_of  # noqa: E402

ENUMS = {"face": 10, "ear": 8, "nose": 12, "eyes": 32, "cheek": 6, "mouth": 38, "hair": 40, "frontHair": 12,
         "sideburn": 7}
FAKE_SCHEMA = {
    "version": "9.4.3", "meta": {"title": "Face Generator", "creator": "The Visual Team",
                                 "license": {"name": "CC BY 4.0"}},
    "properties": {**{p: {"type": "array", "items": {"enum": [f"variant{k:02d}" for k in range(1, n + 1)]}}
                      for p, n in ENUMS.items()},
                   "skinColor": {"default": ["f8b788", "da9969", "c07f50", "a66637", "89532c"]},
                   "hairColor": {"default": ["2c1b18", "e8e1e1", "d6b370"]}}}


def _fake_svg(options: dict) -> str:
    """A face-like drawing whose colours come from the options (skin, background, hair)."""
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100">'
            '<mask id="viewboxMask"><rect width="100" height="100" fill="#fff"/></mask>'
            f'<g mask="url(#viewboxMask)"><rect width="100" height="100" fill="#{options["backgroundColor"][0]}"/>'
            f'<circle cx="50" cy="55" r="30" fill="#{options["skinColor"][0]}"/>'
            f'<rect x="20" y="15" width="60" height="20" fill="#{options["hairColor"][0]}"/></g></svg>')


def build_fake_faces(root, patch, **options):
    """A `faces` build at `root` without node: DiceBear's schema and drawing replaced by fakes
    (`patch`: a monkeypatch's setattr)."""
    patch(face.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    patch(face, "_install_style", lambda scratch, log, version, packages_dir=None:
          scratch.mkdir(parents=True) or FAKE_SCHEMA)
    patch(face, "_draw_svgs", lambda scratch, jobs: ((j["key"], _fake_svg(j["options"])) for j in jobs))
    prepare("faces", root=root, quiet=True, **options)
    return root


@pytest.fixture
def built(tmp_path, monkeypatch):
    return build_fake_faces(tmp_path, monkeypatch.setattr, identities=30, variations=4, size=16)


def test_missing_node_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "node" else f"/usr/bin/{tool}")
    with pytest.raises(DataError, match="node"):
        prepare("faces", root=tmp_path, quiet=True, identities=4, variations=2)
    assert not (tmp_path / "faces").exists()


def test_identities_are_distinct_and_a_prefix_of_larger_builds():
    small = face.sample_identities(FAKE_SCHEMA, 20)
    large = face.sample_identities(FAKE_SCHEMA, 60)
    assert large[:20] == small
    eyes = face.identity_choices(FAKE_SCHEMA)["eyes"]
    assert not set(eyes) & set(face.EXPRESSIVE_EYES)
    for a in range(60):
        assert large[a]["eyes"] in eyes and set(large[a]) == set(face.IDENTITY_PARTS)
        for b in range(a):
            assert sum(large[a][p] != large[b][p] for p in face.IDENTITY_PARTS) >= 2


def test_variation_keeps_identity_parts():
    person = face.sample_identities(FAKE_SCHEMA, 1)[0]
    variations = [face.sample_variation(FAKE_SCHEMA, "big-ears-00000", person, v) for v in range(40)]
    assert variations[3] == face.sample_variation(FAKE_SCHEMA, "big-ears-00000", person, 3)
    assert all(set(v) & set(face.IDENTITY_PARTS) <= {"eyes"} for v in variations)
    assert all(v["eyes"] in (person["eyes"], *face.EXPRESSIVE_EYES) for v in variations)
    assert len({v["mouth"] for v in variations}) > 5
    opts = face.avatar_options({**person, "cheek": "none"}, variations[0])
    assert opts["cheekProbability"] == 0 and "cheek" not in opts and opts["face"] == [person["face"]]


def test_build_splits_by_identity(built):
    items = load_manifest("faces", root=built)
    assert len(items) == 30 * 4
    by_identity = {}
    for it in items:
        by_identity.setdefault(it["identity"], set()).add(it["split"])
        assert it["split"] == split_of("faces:" + it["identity"], val=0.1, test=0.1)
        assert it["licence"].startswith("CC-BY-4.0") and "Visual Team" in it["attribution"]
        assert set(it["identity_options"]) == set(face.IDENTITY_PARTS)
        assert "mouth" in it["variation_options"] and it["package"] == "@dicebear/big-ears@9.4.3"
    assert all(len(s) == 1 for s in by_identity.values())
    style = json.loads((built / "faces" / "style.json").read_text())
    assert sum(style["identities_per_split"].values()) == 30
    images, train = face.load_faces("train", built)
    assert images.shape == (len(train), 16, 16, 3) and images.dtype == np.uint8
    assert [it["row"] for it in train] == list(range(len(train)))
    # the mask workaround renders the whole drawing: the fake's skin disc sits in the middle
    assert images[:, 8, 8].astype(int).sum() > 0 and not (images[:, 8, 8] == images[:, 0, 0]).all()


def test_face_dataset_shapes_and_augmentation(built):
    plain = face.FaceDataset("train", size=16, augment=False, root=built)
    assert plain.num_identities == len({it["identity"] for it in plain.items})
    x = plain[0]
    assert x["image"].shape == (3, 16, 16) and x["image"].dtype == torch.float32
    assert -1 <= x["image"].min() and x["image"].max() <= 1
    assert 0 <= min(plain.labels) and max(plain.labels) == plain.num_identities - 1
    assert all(plain.labels[k] == plain.labels[0] for k in range(len(plain)) if plain.items[k]["identity"] == x["identity_id"])
    aug = face.FaceDataset("train", size=32, augment=True, root=built, seed=0)
    views = torch.stack([aug[0]["image"] for _ in range(6)])
    assert views.shape == (6, 3, 32, 32) and views.min() >= -1 and views.max() <= 1
    assert (views[1:] - views[0]).abs().amax() > 0.01  # each draw is a different pose / light
    again = face.FaceDataset("train", size=32, augment=True, root=built, seed=0)
    assert torch.equal(again[0]["image"], views[0])  # seeded views replay
    img = plain[0]["image"]
    still = face.augment_face(img, rotate=0, scale=0, translate=0, brightness=0, contrast=0, light=0)
    assert (still - img).abs().max() < 1e-5


def test_identity_pairs_are_balanced_and_deterministic(built):
    _, items = face.load_faces("train", built)
    pairs = face.identity_pairs("train", 101, seed=3, root=built)
    assert pairs == face.identity_pairs("train", 101, seed=3, root=built)
    assert pairs != face.identity_pairs("train", 101, seed=4, root=built)
    assert len(pairs) == 101 and sum(same for _, _, same in pairs) == 50
    for i, j, same in pairs:
        assert i != j
        assert (items[i]["identity"] == items[j]["identity"]) == same


def test_pairs_need_two_identities():
    with pytest.raises(DataError):
        face._pairs(["a", "a", "a"], 10, 0)
