"""Vec2Face's optional adversarial term: the PatchGAN discriminator, the hinge losses, VQGAN's adaptive
weight, and the `vec2face` recipe that owns the discriminator outside the trained model (tiny models
and a fake in-memory faces dataset: offline and fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import pipelines.face.train as face_train
from pipelines.face.vec2face import (VEC2FACE_CONFIGS, PatchDiscriminator, Vec2Face, adaptive_weight,
                                     generator_adversarial_loss, hinge_d_loss, last_layer)


# ---------------------------------------------------------------- fixtures

class _FakeFaces:
    """FaceDataset's interface over 8 random 64x64 faces of 4 identities."""
    num_identities = 4

    def __init__(self, split="train", augment=True, seed=None, **kw):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(8, 3, 64, 64, generator=g) * 2 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, k):
        return {"image": self.images[k], "identity": k % 4}


def _fake_load_faces(split, root=None):
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    return images, [{"row": i, "identity": f"id{i}"} for i in range(4)]


@pytest.fixture(scope="module")
def recognizer_dir(tmp_path_factory):
    from genstudio.export import save_safetensors
    from pipelines.face.recognizer import RECOGNIZER_CONFIGS, FaceRecognizer
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("recognizer-tiny")
    save_safetensors(FaceRecognizer(**RECOGNIZER_CONFIGS["tiny"]).eval(), folder)
    return folder


@pytest.fixture
def fake_faces(monkeypatch):
    monkeypatch.setattr(face_train, "FaceDataset", _FakeFaces)
    monkeypatch.setattr(face_train, "load_faces", _fake_load_faces)


def _recipe(recognizer_dir, tmp_path, **options):
    cfg = {"recognizer": str(recognizer_dir), "preset": "tiny", "batch_size": 4, "eval_images": 4, "cpu": True,
           "mixed_precision": "fp32", "progress": False, "output_dir": str(tmp_path / "run"), "warmup_steps": 0,
           "dropout": 0.0, **options}
    return face_train.vec2face_recipe(cfg)


def _step(recipe, step=0):
    """One generator step as the trainer does it (its optimizer over recipe.model only)."""
    model = recipe.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = {"image": torch.stack([recipe.dataset[i]["image"] for i in range(4)])}
    loss, logs = recipe.loss_fn(model, batch, step=step)
    loss.backward()
    opt.step()
    return loss, logs


def _copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if v.is_floating_point())


# ---------------------------------------------------------------- losses and discriminator

def test_discriminator_gives_a_patch_logit_map():
    d = PatchDiscriminator()
    out = d(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 1, 14, 14)
    assert PatchDiscriminator(n_layers=3)(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())


def test_hinge_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2] -> 1
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    assert float(hinge_d_loss(torch.full((4,), 1.0), torch.full((4,), -1.0))) == 0.0  # both margins met
    assert float(generator_adversarial_loss(fake)) == pytest.approx(1 / 3)


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.nn.Parameter(torch.ones(3))
    rec, adv = (3 * w).sum(), (w * torch.tensor([1.0, 0.0, 0.0])).sum()  # grad norms sqrt(27) and 1
    assert float(adaptive_weight(rec, adv, w)) == pytest.approx(27 ** 0.5 / (1 + 1e-4), rel=1e-5)
    assert float(adaptive_weight((w * 0).sum() + (1e6 * w).sum(), (1e-6 * w).sum(), w)) == 1e4  # clamped
    model = Vec2Face(**{**VEC2FACE_CONFIGS["tiny"], "vector_dim": 32})
    assert last_layer(model) is model.im_decoder.conv_out.weight


# ---------------------------------------------------------------- recipe

def test_off_by_default_no_discriminator(fake_faces, recognizer_dir, tmp_path):
    recipe = _recipe(recognizer_dir, tmp_path)
    assert recipe.options.adversarial_weight == 0.0 and recipe.extra["adversary"] is None
    _, logs = _step(recipe)
    assert "d_loss" not in logs and "g_adv" not in logs
    assert not any("disc" in k for k in recipe.model.state_dict())


def test_one_step_updates_discriminator_and_generator(fake_faces, recognizer_dir, tmp_path):
    recipe = _recipe(recognizer_dir, tmp_path, adversarial_weight=0.1)
    adversary = recipe.extra["adversary"]
    d_before, g_before = _copy(adversary.disc), _copy(recipe.model)
    _, logs = _step(recipe)
    assert _changed(d_before, adversary.disc) and _changed(g_before, recipe.model)
    assert {"d_loss", "g_adv", "adv_weight"} <= set(logs) and logs["adv_weight"] > 0
    # the generator's backward adds nothing to D's gradients (those of D's own update)
    batch = {"image": torch.stack([recipe.dataset[i]["image"] for i in range(4)])}
    loss, _ = recipe.loss_fn(recipe.model, batch, step=1)
    d_grads = [p.grad.clone() for p in adversary.disc.parameters()]
    loss.backward()
    assert all(torch.equal(g, p.grad) for g, p in zip(d_grads, adversary.disc.parameters()))
    assert adversary.opt.defaults["betas"] == (0.5, 0.9) and adversary.opt.defaults["lr"] == 1e-4
    # without the adaptive weight the weight is adversarial_weight itself
    fixed = _recipe(recognizer_dir, tmp_path, adversarial_weight=0.25, adaptive_weight=False)
    assert _step(fixed)[1]["adv_weight"] == pytest.approx(0.25)


def test_adversarial_start_delays_the_term(fake_faces, recognizer_dir, tmp_path):
    recipe = _recipe(recognizer_dir, tmp_path, adversarial_weight=0.1, adversarial_start=5)
    adversary = recipe.extra["adversary"]
    d_before = _copy(adversary.disc)
    _, logs = _step(recipe, step=4)
    assert logs["adv_weight"] == 0.0 and logs["d_loss"] == 0.0 and not _changed(d_before, adversary.disc)
    _, logs = _step(recipe, step=5)
    assert logs["adv_weight"] > 0 and _changed(d_before, adversary.disc)


def test_trained_and_saved_model_has_no_discriminator(fake_faces, recognizer_dir, tmp_path):
    from genstudio.train import train
    recipe = _recipe(recognizer_dir, tmp_path, adversarial_weight=0.1, steps=2, save_every=2, log_every=1)
    d_before = _copy(recipe.extra["adversary"].disc)
    train(recipe)
    run = tmp_path / "run"
    with safe_open(str(run / "final" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("disc" in k or k.startswith("main.") for k in keys)
    assert set(keys) == set(Vec2Face(**{**VEC2FACE_CONFIGS["tiny"], "vector_dim": 32}).state_dict())
    assert _changed(d_before, recipe.extra["adversary"].disc)
    saved = torch.load(run / "discriminator.pt")
    assert set(saved) == {"discriminator", "optimizer"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any({"d_loss", "g_adv", "adv_weight"} <= set(r) for r in rows)


def test_init_from_loads_the_given_weights(fake_faces, recognizer_dir, tmp_path):
    from genstudio.export import save_safetensors
    torch.manual_seed(7)
    source = Vec2Face(**{**VEC2FACE_CONFIGS["tiny"], "vector_dim": 32, "image_size": 64})
    save_safetensors(source, tmp_path / "export")
    recipe = _recipe(recognizer_dir, tmp_path, init_from=str(tmp_path / "export"))
    assert recipe.options.init_from == str((tmp_path / "export").resolve())
    for k, v in source.state_dict().items():
        assert torch.equal(recipe.model.state_dict()[k], v), k
    with pytest.raises(ValueError, match="init_from"):  # another architecture is refused
        _recipe(recognizer_dir, tmp_path, preset="S", init_from=str(tmp_path / "export"))
