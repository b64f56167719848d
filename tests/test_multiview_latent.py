"""MV-Adapter on a latent-space base (pipelines/multiview/latent.py, the CPU recipe mv-vae -> mv-base vae= ->
mv-adapter): camera residuals land where diffusers adds them, the scaling factor training measured is the one
the pipeline uses, and the recipe chain runs end to end in tiny form."""
from __future__ import annotations

import math

import pytest
import torch

from pipelines.multiview.attention import add_mv_adapter
from pipelines.multiview.cameras import evenly_spaced_cameras
from pipelines.multiview.condition import camera_condition
from pipelines.multiview.train import make_base_unet

VIEWS = 2


def _pre_downsample_states(unet, x, text, residuals=None):
    """Each down block's map before its downsampler, and the mid block's input: where diffusers adds
    down_intrablock_additional_residuals (inside a cross-attention block; after a plain block)."""
    seen, hooks = [], []
    for block in unet.down_blocks:
        hooks.append(block.register_forward_hook(
            lambda m, args, out: seen.append(out[1][len(m.resnets) - 1].clone())))
    hooks.append(unet.mid_block.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True))
    try:
        with torch.no_grad():
            unet(x, 10, encoder_hidden_states=text, down_intrablock_additional_residuals=residuals)
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("preset,latent_size,factor", [("tiny", 8, 2), ("S-latent", 16, 4)])
def test_camera_residuals_are_added_where_they_belong(preset, latent_size, factor):
    torch.manual_seed(0)
    unet = make_base_unet(preset, latent_size, text_dim=32, in_channels=4).eval()
    adapter = add_mv_adapter(unet, VIEWS, cond_downscale_factor=factor)
    cond = camera_condition(evenly_spaced_cameras(VIEWS).plucker(latent_size * factor))
    features = [f.detach() for f in adapter(cond)]
    x, text = torch.randn(VIEWS, 4, latent_size, latent_size), torch.randn(VIEWS, 3, 32)
    plain = _pre_downsample_states(unet, x, text)
    n = len(unet.down_blocks)
    # the cross-attention blocks' pre-downsampler maps, then the last (plain) block's output = the mid input
    targets = plain[: n - 1] + [plain[n]]
    assert [tuple(f.shape) for f in features] == [tuple(t.shape) for t in targets]
    for k in range(n):  # one residual at a time: it appears exactly there, and nothing before it moves
        only_k = [f if j == k else torch.zeros_like(f) for j, f in enumerate(features)]
        states = _pre_downsample_states(unet, x, text, only_k)
        shifted = states[: n - 1] + [states[n]]
        for j in range(k):
            torch.testing.assert_close(shifted[j], targets[j])
        torch.testing.assert_close(shifted[k] - targets[k], features[k], atol=1e-4, rtol=1e-4)
    wrong = add_mv_adapter(unet, VIEWS, cond_downscale_factor=factor * 2)   # a VAE factor that is not the base's
    with pytest.raises(RuntimeError):
        _pre_downsample_states(unet, x, text, wrong(cond))


def test_latent_preset_needs_a_vae():
    from pipelines.multiview.train import base_recipe
    with pytest.raises(ValueError, match="give vae="):
        base_recipe({"preset": "S-latent"})


def test_cpu_presets_fit_the_checkpoint_budget():
    from pipelines.multiview.latent import make_vae, vae_factor
    vae = make_vae("S", 64)
    factor = vae_factor(vae)
    assert factor == 4 and vae.config.latent_channels == 4
    unet = make_base_unet("S-latent", 64 // factor, in_channels=4)
    adapter = add_mv_adapter(unet, 4, use_ref=True, mv_layout="full", cond_downscale_factor=factor)
    sizes = {name: sum(p.numel() for p in m.parameters()) * 2 / 1e6 for name, m in
             (("vae", vae), ("base", unet), ("adapter", adapter))}
    print(f"\n[presets] CPU recipe fp16 MB: {sizes}")
    assert all(mb <= 30 for mb in sizes.values())


# --------------------------------------------------------------------------- the recipe chain

TINY = {"steps": 1, "batch_size": 2, "progress": False, "mixed_precision": "no", "ema_decay": "none",
        "save_every": 1000, "warmup_steps": 0}


@pytest.fixture(scope="module")
def built():
    import pipelines.multiview.data  # noqa: F401  (registers the source, as the entry point does)
    from genstudio.data import prepare
    return prepare("multiview", force=True, quiet=True, sources="primitives", primitives=12, views=4, size=32)


def test_vae_base_adapter_chain_and_pipeline(built, tmp_path):
    from diffusers import AutoencoderKL
    from genstudio.train import train
    from pipelines.multiview.attention import MVAdapter
    from pipelines.multiview.data import MultiViewDataset
    from pipelines.multiview.latent import load_vae, to_latents
    from pipelines.multiview.pipeline import MVAdapterPipeline
    from pipelines.multiview.train import adapter_recipe, base_recipe, load_base, vae_recipe

    summary = train(vae_recipe({**TINY, "preset": "tiny", "output_dir": str(tmp_path / "vae")}))
    assert summary["steps"] == 1 and math.isfinite(summary["loss"])

    rec = base_recipe({**TINY, "preset": "tiny", "vae": str(tmp_path / "vae"), "output_dir": str(tmp_path / "base")})
    assert rec.model.config.in_channels == 4 and rec.model.config.sample_size == 16   # 32 px / factor 2
    kept = load_vae(tmp_path / "base")                                               # the base run's vae/
    scale = kept.config.scaling_factor
    assert scale != AutoencoderKL().config.scaling_factor
    views = MultiViewDataset("train", single_view=True)
    pixels = torch.stack([views[i]["image"] for i in range(0, len(views), max(1, len(views) // 64))])
    assert 0.7 < float(to_latents(kept, pixels, sample=False).std()) < 1.3          # unit spread, as measured
    assert math.isfinite(train(rec)["loss"])
    again = base_recipe({**TINY, "preset": "tiny", "vae": str(tmp_path / "vae"), "output_dir": str(tmp_path / "base")})
    assert again is not None and load_vae(tmp_path / "base").config.scaling_factor == scale  # resuming keeps it
    # a continued run (init_from) starts from those weights; min-SNR weighting trains
    cont = base_recipe({**TINY, "preset": "tiny", "vae": str(tmp_path / "vae"), "init_from": str(tmp_path / "base"),
                        "snr_gamma": 5.0, "output_dir": str(tmp_path / "base2")})
    for k, v in load_base(tmp_path / "base").state_dict().items():
        assert torch.equal(cont.model.state_dict()[k], v), k
    assert math.isfinite(train(cont)["loss"])
    before = {k: v.clone() for k, v in load_base(tmp_path / "base").state_dict().items()}

    rec = adapter_recipe({**TINY, "base": str(tmp_path / "base"), "views": 4, "cameras": "random",
                          "output_dir": str(tmp_path / "adapter")})
    assert rec.model.config.cond_downscale_factor == 2
    summary = train(rec)
    assert math.isfinite(summary["loss"])
    for k, v in rec.extra["unet"].state_dict().items():
        assert torch.equal(v, before[k]), k
    assert MVAdapter.from_pretrained(summary["final"]).config.cond_downscale_factor == 2

    pipe = MVAdapterPipeline.from_pretrained(tmp_path / "base", tmp_path / "adapter", device="cpu", precision="fp32")
    assert pipe.vae is not None and pipe.vae.config.scaling_factor == pytest.approx(scale) and pipe.image_size == 32
    assert [tuple(f.shape[-2:]) for f in pipe.camera_features(evenly_spaced_cameras(4))] == [(16, 16), (8, 8)]
    from PIL import Image
    out = pipe("a red box", image=Image.new("RGB", (32, 32), "red"), num_views=4, num_inference_steps=2, seed=0,
               progress=False)
    assert len(out.images) == 4 and out.images[0].size == (32, 32)

    from pipelines.multiview.train import export_base
    export_base(tmp_path / "base", tmp_path / "exported", torch.float16)
    assert (tmp_path / "exported" / "vae" / "config.json").exists()
    assert load_vae(tmp_path / "exported").config.scaling_factor == pytest.approx(scale)
