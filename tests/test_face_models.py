"""Vec2Face's models on random tensors (no dataset cache): masking, shapes, ArcFace margin, the
verification protocol, losses, new-identity sampling, overfitting and save/load."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipelines.face.recognizer import (RECOGNIZER_CONFIGS, ArcFaceHead, FaceRecognizer, freeze, threshold_accuracy,
                                       verification_accuracy, without_head)
from pipelines.face.vec2face import (VEC2FACE_CONFIGS, Vec2Face, identity_loss, perturb, sample_identities, ssim,
                                     truncated_normal, vec2face_loss)


def tiny_vec2face(**kw) -> Vec2Face:
    return Vec2Face(**{**VEC2FACE_CONFIGS["tiny"], "vector_dim": 32, "dropout": 0.0, **kw})


def tiny_recognizer(**kw) -> FaceRecognizer:
    return FaceRecognizer(**{**RECOGNIZER_CONFIGS["tiny"], **kw})


# ---------------------------------------------------------------- masking

def test_mask_ratio_is_truncated_normal_peaked_at_055():
    g = torch.Generator().manual_seed(0)
    r = truncated_normal(200_000, 0.55, 0.25, 0.5, 1.0, generator=g).numpy()
    assert r.min() >= 0.5 and r.max() <= 1.0
    # N(0.55, 0.25) cut to [0.5, 1]: the peak is 0.55, the mean is pulled up to ~0.69
    from scipy.stats import kstest, truncnorm
    reference = truncnorm((0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25, loc=0.55, scale=0.25)
    assert abs(r.mean() - reference.mean()) < 0.003 and abs(reference.mean() - 0.6935) < 0.001
    assert kstest(r[:20_000], reference.cdf).pvalue > 0.01
    density = lambda lo: ((r >= lo) & (r < lo + 0.05)).mean()
    assert density(0.525) > density(0.7) > density(0.95)  # falls away from the 0.55 peak


def test_model_draws_training_and_generation_ratios():
    m = tiny_vec2face()
    g = torch.Generator().manual_seed(1)
    train = [m.train().draw_mask_ratio(g) for _ in range(300)]
    gen = [m.eval().draw_mask_ratio(g) for _ in range(300)]
    assert min(train) >= 0.5 and max(train) <= 1.0
    assert min(gen) >= 0.1 and np.mean(gen) < np.mean(train)


def test_token_masks_counts_and_nesting():
    m = tiny_vec2face().train()
    masked, dropped = m.token_masks(5, 0.6)
    n = m.config.grid_size ** 2
    assert masked.shape == (5, n)
    assert (masked.sum(1) == math.ceil(0.6 * n)).all() and (dropped.sum(1) == math.ceil(0.5 * n)).all()
    assert (masked | ~dropped).all()  # every dropped token is a masked one
    none_masked, none_dropped = m.token_masks(2, 0.0)
    assert not none_masked.any() and not none_dropped.any()
    with pytest.raises(ValueError, match="mask_ratio"):
        m.token_masks(2, 1.5)


# ---------------------------------------------------------------- shapes

def test_shapes_and_unit_vectors():
    rec = tiny_recognizer()
    v = rec(torch.randn(3, 3, 64, 64))
    assert v.shape == (3, 32) and torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    m = tiny_vec2face()
    assert m.train()(F.normalize(torch.randn(3, 32), dim=-1)).shape == (3, 3, 64, 64)
    out = m.eval()(F.normalize(torch.randn(3, 32), dim=-1))
    assert out.shape == (3, 3, 64, 64) and out.abs().max() <= 1.0
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    v = F.normalize(torch.randn(2, 32), dim=-1)
    assert torch.equal(m(v, generator=g1), m(v, generator=g2))  # seeded masking is reproducible
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        m(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        rec(torch.randn(2, 3, 32, 32))


# ---------------------------------------------------------------- ArcFace

def test_arcface_margin_reduces_only_the_target_logit():
    torch.manual_seed(0)
    head = ArcFaceHead(10, 16, scale=32.0, margin=0.5)
    e, y = torch.randn(6, 16), torch.randint(0, 10, (6,))
    plain, with_margin = head(e, y, margin=0.0), head(e, y)
    target = F.one_hot(y, 10).bool()
    assert torch.allclose(plain, 32.0 * head.cosine(e), atol=1e-4)
    assert (with_margin[target] < plain[target]).all()
    assert torch.allclose(with_margin[~target], plain[~target])
    theta = torch.acos(head.cosine(e)[target].clamp(-1, 1))
    ok = theta + 0.5 < math.pi  # cos(theta + m) where defined; the linear fallback elsewhere
    assert torch.allclose(with_margin[target][ok], 32.0 * torch.cos(theta[ok] + 0.5), atol=1e-3)


def test_arcface_head_runs_in_fp32_under_autocast():
    # CUDA autocast runs F.linear in bf16: the margin arithmetic then mixed dtypes (a scatter error on a
    # GPU). The head keeps its cosine in fp32 under any autocast; CPU autocast checks the same path here.
    torch.manual_seed(0)
    head = ArcFaceHead(10, 16)
    e, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head.cosine(e.bfloat16()).dtype == torch.float32
        logits = head(e.bfloat16(), y)
    assert logits.dtype == torch.float32 and torch.allclose(logits, head(e.bfloat16().float(), y), atol=1e-4)


def test_head_is_dropped_for_export():
    rec = tiny_recognizer(num_classes=7)
    bare = without_head(rec.eval())
    assert bare.head is None and bare.config.num_classes == 0
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(bare.eval()(x), rec(x), atol=1e-6)


# ---------------------------------------------------------------- verification

def _pairs(labels, n, seed=0):
    rng = np.random.default_rng(seed)
    pairs = []
    for k in range(n):
        same = k % 2 == 0
        i = int(rng.integers(len(labels)))
        choices = np.flatnonzero((labels == labels[i]) if same else (labels != labels[i]))
        choices = choices[choices != i]
        pairs.append((i, int(rng.choice(choices)), same))
    return pairs


def test_verification_accuracy_separable_and_random():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(20, 64, generator=g), dim=-1)
    labels = np.repeat(np.arange(20), 5)
    separable = F.normalize(centres[labels] + 0.05 * torch.randn(100, 64, generator=g), dim=-1)
    pairs = _pairs(labels, 400)
    identity_model = lambda x: x  # "images" are the vectors themselves
    assert verification_accuracy(identity_model, separable, pairs) == 1.0
    random_vectors = torch.randn(100, 64, generator=g)
    assert abs(verification_accuracy(identity_model, random_vectors, _pairs(labels, 2000)) - 0.5) < 0.06
    with pytest.raises(ValueError, match="pairs"):
        threshold_accuracy(np.zeros(3), np.zeros(3, bool))


# ---------------------------------------------------------------- losses

def test_identity_loss_and_ssim():
    v = F.normalize(torch.randn(5, 32), dim=-1)
    assert float(identity_loss(v, v)) == pytest.approx(0.0, abs=1e-6)
    assert float(identity_loss(v, -v)) == pytest.approx(2.0, abs=1e-5)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    from skimage.metrics import structural_similarity
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    to_hwc = lambda t: ((t[0] + 1) / 2).permute(1, 2, 0).numpy()
    ref = structural_similarity(to_hwc(x), to_hwc(y), data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                sigma=1.5, use_sample_covariance=False)
    assert float(ssim(x[:1], y[:1])) == pytest.approx(ref, abs=1e-4)


def test_vec2face_overfits_four_faces():
    torch.manual_seed(0)
    rec = freeze(tiny_recognizer())
    model = tiny_vec2face().train()
    images = (torch.rand(4, 3, 8, 8) * 2 - 1).repeat_interleave(8, 2).repeat_interleave(8, 3)  # blocky faces
    # Distinct vectors, and no identity term: an untrained recogniser maps every image to nearly the
    # same vector, so neither its vectors nor its identity loss could tell the four faces apart.
    vectors = F.normalize(torch.randn(4, 32), dim=-1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(80):
        loss, logs = vec2face_loss(model, rec, images, vectors, identity_weight=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert set(logs) == {"mse", "ssim", "identity_loss", "perceptual"}
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses
    assert all(p.grad is None for p in rec.parameters())  # the recogniser stays frozen


# ---------------------------------------------------------------- new identities

def test_sample_identities_respects_bound_and_terminates():
    g = torch.Generator().manual_seed(0)
    ids = sample_identities(200, 64, max_similarity=0.3, generator=g)
    assert ids.shape == (200, 64) and torch.allclose(ids.norm(dim=-1), torch.ones(200), atol=1e-5)
    sims = ids @ ids.T
    assert sims.fill_diagonal_(-1).max() < 0.3
    with pytest.raises(RuntimeError, match="found only"):  # impossible: > 2 * dim near-orthogonal vectors in 2-D
        sample_identities(10, 2, max_similarity=0.0, generator=g, max_draws=5000)


def test_perturb_keeps_norm_and_spreads_with_std():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(2000, 128, generator=g), dim=-1) * 3.0
    cos = {}
    for std in (0.3, 0.5, 0.7):
        p = perturb(v, std, generator=g)
        assert torch.allclose(p.norm(dim=-1), torch.full((2000,), 3.0), atol=1e-4)
        cos[std] = float(F.cosine_similarity(p, v, dim=-1).mean())
    assert cos[0.3] > cos[0.5] > cos[0.7] and abs(cos[0.5] - 1 / math.sqrt(1.25)) < 0.02
    per_row = perturb(v[:3], torch.tensor([0.0, 0.3, 0.7]), generator=g)
    assert torch.allclose(per_row[0], v[0], atol=1e-5)


# ---------------------------------------------------------------- save / load

def test_save_load_round_trip(tmp_path):
    m = tiny_vec2face().eval()
    m.save_pretrained(tmp_path / "v2f", safe_serialization=True)
    loaded = Vec2Face.from_pretrained(tmp_path / "v2f").eval()
    v = F.normalize(torch.randn(2, 32), dim=-1)
    assert torch.equal(m(v, mask_ratio=0.3, generator=torch.Generator().manual_seed(0)),
                       loaded(v, mask_ratio=0.3, generator=torch.Generator().manual_seed(0)))
    rec = tiny_recognizer(num_classes=5).eval()
    rec.save_pretrained(tmp_path / "rec", safe_serialization=True)
    from pipelines.face.recognizer import load_recognizer
    bare = load_recognizer(tmp_path / "rec")
    x = torch.randn(2, 3, 64, 64)
    assert bare.head is None and not any(p.requires_grad for p in bare.parameters())
    assert torch.allclose(bare(x), rec(x), atol=1e-6)
    assert list((tmp_path / "v2f").glob("*.safetensors"))
