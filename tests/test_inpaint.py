"""PUT inpainting: masks, patch locality, known-pixel preservation, sampling, save/load, CLI, bench."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXTURES
from genstudio.export import init_weights
from pipelines.inpaint.masks import RATIO_BUCKETS, hole_ratio, random_hole_mask
from pipelines.inpaint.put import (PUT_CONFIGS, PatchVQVAE, UnquantizedTransformer, harmonic_fill, patch_known_mask,
                                   transformer_loss)


def _tiny_models(seed=0):
    torch.manual_seed(seed)
    vqvae = PatchVQVAE(**PUT_CONFIGS["tiny"]["vqvae"]).eval()
    transformer = UnquantizedTransformer(feature_dim=vqvae.config.latent_dim,
                                         num_tokens=vqvae.config.codebook_size_known,
                                         **PUT_CONFIGS["tiny"]["transformer"]).eval()
    return vqvae, transformer


@pytest.fixture(scope="module")
def tiny_put_dir(tmp_path_factory):
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    d = tmp_path_factory.mktemp("ckpt") / "put-tiny"
    PUTInpaintPipeline(*_tiny_models(), device="cpu").save_pretrained(d)
    return d


def _image_and_hole(w=45, h=37, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    hole = np.zeros((h, w), bool)
    hole[10:25, 8:30] = True
    return image, hole


# ---- masks ----

@pytest.mark.parametrize("bucket", list(RATIO_BUCKETS))
def test_random_masks_hit_their_ratio_bucket_and_are_seeded(bucket):
    lo, hi = RATIO_BUCKETS[bucket]
    for s in range(5):
        m = random_hole_mask(96, 128, (lo, hi), np.random.default_rng(s))
        assert m.shape == (96, 128) and m.dtype == bool
        assert lo <= hole_ratio(m) <= hi
    a = random_hole_mask(64, 64, (lo, hi), np.random.default_rng(3))
    assert np.array_equal(a, random_hole_mask(64, 64, (lo, hi), np.random.default_rng(3)))


# ---- P-VQVAE ----

def test_patch_locality_masked_pixels_cannot_change_known_patch_tokens():
    vqvae, _ = _tiny_models()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    known = torch.ones(2, 1, 32, 32)
    known[:, :, 5:14, 9:20] = 0                       # touches several patches partially
    y = x.clone()
    y[:, :, 5:14, 9:20] = torch.rand(2, 3, 9, 11) * 2 - 1  # anything at all in the hole
    with torch.no_grad():
        fx, fy = vqvae.encode(x, known), vqvae.encode(y, known)
        fx_unmasked, fy_unmasked = vqvae.encode(x), vqvae.encode(y)
        tx, ty = vqvae.quantize(fx, known).indices, vqvae.quantize(fy, known).indices
    patch_known = patch_known_mask(known, vqvae.patch_size)
    assert patch_known.any() and (~patch_known).any()
    assert torch.equal(tx[patch_known], ty[patch_known])
    # Even without masking, only the patches containing the changed pixels change.
    assert torch.equal(fx_unmasked.permute(0, 2, 3, 1)[patch_known], fy_unmasked.permute(0, 2, 3, 1)[patch_known])
    assert not torch.equal(fx_unmasked.permute(0, 2, 3, 1)[~patch_known], fy_unmasked.permute(0, 2, 3, 1)[~patch_known])
    # Known patches use the known codebook, the others the unknown one.
    assert (tx[patch_known] < vqvae.num_known_codes).all() and (tx[~patch_known] >= vqvae.num_known_codes).all()


def test_patch_known_mask_requires_every_pixel_known():
    known = torch.ones(1, 1, 16, 16)
    known[0, 0, 3, 12] = 0
    pk = patch_known_mask(known, 8)
    assert pk.shape == (1, 2, 2) and pk.tolist() == [[[True, False], [True, True]]]


def test_decoder_pastes_known_pixels_and_shape_errors():
    vqvae, _ = _tiny_models()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    known = (torch.rand(1, 1, 32, 32) > 0.3).float()
    with torch.no_grad():
        tokens = vqvae.quantize(vqvae.encode(x)).indices
        out = vqvae.decode_tokens(tokens, x * known, known)
    assert torch.equal(out[known.expand_as(out) > 0], x[known.expand_as(x) > 0])
    with pytest.raises(ValueError, match="multiples of 8"):
        vqvae.encode(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match="decoder_channels"):
        PatchVQVAE(patch_size=4, decoder_channels=(8, 8, 8, 8))


def test_harmonic_fill_keeps_known_pixels_and_solves_laplace():
    # A linear ramp is harmonic: the fill must recover it inside the holes, to grid precision.
    ramp = torch.linspace(-1, 1, 64)
    image = (ramp[None, :] * 0.5 + ramp[:, None] * 0.3).expand(1, 3, 64, 64).contiguous()
    known = torch.ones(1, 1, 64, 64)
    known[..., 20:40, 10:50] = 0
    out = harmonic_fill(image * known, known, iterations=64)
    assert torch.equal(out[known.expand_as(out) > 0], image[known.expand_as(image) > 0])
    hole = known.expand_as(out) == 0
    zeros_error = (image[hole]).abs().mean()
    assert (out - image)[hole].abs().mean() < 0.05 * zeros_error
    assert harmonic_fill(image, torch.zeros(1, 1, 64, 64)).abs().max() == 0  # nothing known -> zeros
    assert torch.allclose(harmonic_fill(image, torch.ones(1, 1, 64, 64)), image)


def test_harmonic_reference_decoder_falls_back_to_the_fill_and_keeps_known_pixels(tmp_path):
    """reference_fill="harmonic": with a zero residual the decoder returns the harmonic fill; a
    decoder_only run starting from a "zeros" model freezes its encoder and codebooks (so its tokens
    still fit the old transformer) and starts its residual at zero."""
    from pipelines.inpaint.train import recipe
    vqvae, _ = _tiny_models()
    vqvae.save_pretrained(tmp_path / "zeros")
    torch.manual_seed(1)
    harmonic = PatchVQVAE(**{**PUT_CONFIGS["tiny"]["vqvae"], "reference_fill": "harmonic"}).eval()
    torch.nn.init.zeros_(harmonic.decoder.proj_out.weight)
    torch.nn.init.zeros_(harmonic.decoder.proj_out.bias)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    known = (torch.rand(1, 1, 32, 32) > 0.3).float()
    with torch.no_grad():
        tokens = harmonic.quantize(harmonic.encode(x)).indices
        out = harmonic.decode_tokens(tokens, x * known, known)
    assert torch.allclose(out, harmonic_fill(x * known, known), atol=1e-6)
    with pytest.raises(ValueError, match="reference_fill"):
        PatchVQVAE(**{**PUT_CONFIGS["tiny"]["vqvae"], "reference_fill": "telea"})

    r = recipe({"stage": "vqvae", "preset": "tiny", "init_from": str(tmp_path / "zeros"), "decoder_only": True,
                "vqvae_kwargs": {"reference_fill": "harmonic"}, "eval_items": 2, "output_dir": str(tmp_path / "run")})
    m = r.model
    assert m.config.reference_fill == "harmonic"
    assert not any(p.requires_grad for p in m.encoder.parameters()) and not any(p.requires_grad for p in m.vq.parameters())
    assert all(p.requires_grad for p in m.decoder.parameters())
    assert m.decoder.proj_out.weight.abs().sum() == 0
    with torch.no_grad():
        assert torch.equal(m.quantize(m.encode(x)).indices, vqvae.quantize(vqvae.encode(x)).indices)
    with pytest.raises(ValueError, match="decoder_only needs init_from"):
        recipe({"stage": "vqvae", "preset": "tiny", "decoder_only": True, "eval_items": 2})


def test_biharmonic_reference_is_scikit_images_fill_and_mse_is_a_loss_option(tmp_path):
    """reference_fill="biharmonic": with a zero residual the decoder returns skimage's biharmonic
    fill (known pixels exact); pixel_loss="mse" trains on squared error, "psnr" on the mean of each
    image's log10 squared error; other names are refused."""
    from skimage.restoration import inpaint_biharmonic
    from pipelines.inpaint.put import biharmonic_fill
    from pipelines.inpaint.train import recipe, vqvae_loss
    torch.manual_seed(2)
    model = PatchVQVAE(**{**PUT_CONFIGS["tiny"]["vqvae"], "reference_fill": "biharmonic"}).eval()
    torch.nn.init.zeros_(model.decoder.proj_out.weight)
    torch.nn.init.zeros_(model.decoder.proj_out.bias)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = torch.stack([xx * yy, xx ** 2 - 0.5, torch.sin(2 * yy)])[None]
    known = torch.ones(1, 1, 32, 32)
    known[..., 10:20, 8:22] = 0
    with torch.no_grad():
        out = model.decode_tokens(model.quantize(model.encode(x)).indices, x * known, known)
    expected = inpaint_biharmonic(x[0].permute(1, 2, 0).numpy().astype(np.float64), known[0, 0].numpy() < 0.5,
                                  channel_axis=-1)
    assert torch.allclose(out[0], torch.from_numpy(expected).permute(2, 0, 1).float(), atol=1e-5)
    assert torch.equal(out[known.expand_as(out) > 0], x[known.expand_as(x) > 0])
    assert (out - x).abs()[known.expand_as(out) == 0].mean() < 0.05  # a smooth field is filled closely
    assert biharmonic_fill(x, torch.zeros(1, 1, 32, 32)).abs().max() == 0  # nothing known -> zeros

    batch = {"image": x, "known": known, "erase": torch.ones_like(known)}
    mse, logs = vqvae_loss(model, batch, pixel_loss="mse", gradient_weight=0.0)
    l1, _ = vqvae_loss(model, batch)
    assert "mse" in logs and torch.isfinite(mse) and float(mse) != float(l1)
    two = {k: torch.cat([v, v]) for k, v in batch.items()}
    two["image"][1] = two["image"][1] * 0.5  # a second image with another error
    per_image = [vqvae_loss(model, {k: v[i:i + 1] for k, v in two.items()}, pixel_loss="mse")[1]["mse"] for i in range(2)]
    _, logs = vqvae_loss(model, two, pixel_loss="psnr")  # the mean over images of log10 of each one's error
    assert per_image[0] != pytest.approx(per_image[1])
    assert logs["psnr"] == pytest.approx(np.mean(np.log10(np.array(per_image) + 1e-5)), rel=1e-4)
    with pytest.raises(ValueError, match="pixel_loss"):
        recipe({"stage": "vqvae", "preset": "tiny", "pixel_loss": "huber", "eval_items": 2})


def test_decoder_trains_on_tokens_sampled_from_the_transformer(tmp_path):
    """With `transformer`, the decoder's hole tokens are drawn from the transformer's top-k (known
    patches keep their own tokens), only the decoder learns, and eval also reports sampled-token PSNR."""
    from pipelines.inpaint.train import recipe, sampled_hole_features
    vqvae, transformer = _tiny_models()
    vqvae.save_pretrained(tmp_path / "vq")
    transformer.save_pretrained(tmp_path / "tr")
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    known = torch.ones(4, 1, 32, 32)
    known[..., 8:24, 8:24] = 0
    with torch.no_grad():
        logits = transformer(vqvae.encode(x, known).permute(0, 2, 3, 1))
    _, tokens = sampled_hole_features(vqvae, transformer, x, known, top_k=2)
    patch_known = patch_known_mask(known, 8)
    own = vqvae.quantize(vqvae.encode(x, known), known).indices
    assert torch.equal(tokens[patch_known], own[patch_known])
    top2 = logits.topk(2, dim=-1).indices
    assert ((top2 == tokens[..., None]).any(-1) | patch_known).all()  # holes: one of the top 2
    _, oracle = sampled_hole_features(vqvae, transformer, x, known, top_k=2, oracle_share=1.0)
    assert torch.equal(oracle[~patch_known], vqvae.quantize(vqvae.encode(x)).indices[~patch_known])

    opts = {"stage": "vqvae", "preset": "tiny", "init_from": str(tmp_path / "vq"), "decoder_only": True,
            "transformer": str(tmp_path / "tr"), "eval_items": 2, "output_dir": str(tmp_path / "run")}
    r = recipe(opts)
    batch = {"image": x, "known": known, "erase": torch.ones_like(known)}
    loss, logs = r.loss_fn(r.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and r.model.decoder.proj_out.weight.grad is not None
    assert all(p.grad is None for p in r.model.encoder.parameters())
    assert "hole_psnr_sampled_tokens" in r.eval_fn(r.model)
    # A new reference fill starts from a zero residual: the decoder then scores exactly what its
    # fill alone does, which the evaluation reports beside it.
    r = recipe({**opts, "vqvae_kwargs": {"reference_fill": "harmonic"}, "hole_weight": 20.0})
    m = r.eval_fn(r.model)
    assert m["hole_psnr_oracle_tokens"] == pytest.approx(m["hole_psnr_reference"], abs=1e-3)
    assert m["hole_psnr_sampled_tokens"] == pytest.approx(m["hole_psnr_reference"], abs=1e-3)
    # Refinement blocks the source lacks start as the identity: the same image out, then they train.
    source = PatchVQVAE.from_pretrained(tmp_path / "vq").eval()
    r = recipe({**opts, "vqvae_kwargs": {"refine_blocks": 2}})
    assert len(r.model.decoder.refine) == 2 and r.model.decoder.refine[1].conv1.dilation == (2, 2)
    with torch.no_grad():
        q = source.vq.decode_indices(source.quantize(source.encode(x)).indices).permute(0, 3, 1, 2)
        assert torch.allclose(r.model.eval().decoder(q, x * known, known), source.decoder(q, x * known, known))
    loss, _ = r.loss_fn(r.model.train(), batch)
    loss.backward()
    assert r.model.decoder.refine[0].conv2.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="do not fit"):  # anything else missing is still an error
        init_weights(PatchVQVAE(**{**PUT_CONFIGS["tiny"]["vqvae"], "latent_dim": 8}), tmp_path / "vq", "x",
                     new=("decoder.refine.",))
    with pytest.raises(ValueError, match="needs decoder_only"):
        recipe({**opts, "decoder_only": False})


def test_training_losses_decrease_on_a_fixed_batch():
    from pipelines.inpaint.train import vqvae_loss
    vqvae, transformer = _tiny_models()
    vqvae.train()
    g = torch.Generator().manual_seed(0)
    photo = np.asarray(Image.open(FIXTURES / "coffee_128.png").convert("RGB"), np.float32) / 127.5 - 1
    crops = [photo[y:y + 32, x:x + 32] for y, x in ((0, 0), (40, 40), (64, 10), (90, 90))]
    batch = {"image": torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).copy()),
             "known": (torch.rand(4, 1, 32, 32, generator=g) > 0.4).float(), "erase": torch.ones(4, 1, 32, 32)}
    batch["known"][:, :, 8:24, 8:24] = 0
    opt = torch.optim.Adam(vqvae.parameters(), 3e-3)
    losses = []
    for _ in range(40):
        loss, logs = vqvae_loss(vqvae, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and {"l1", "vq", "perplexity"} <= set(logs)
    vqvae.eval()
    transformer.train()
    opt = torch.optim.Adam(transformer.parameters(), 3e-3)
    ce = []
    for _ in range(25):
        loss, acc = transformer_loss(transformer, vqvae, batch["image"], batch["known"], random_quantize=0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ce.append(loss.item())
    assert ce[-1] < 0.7 * ce[0] and 0.0 <= acc <= 1.0


def test_masked_photo_dataset_greyscale_share():
    from pipelines.inpaint.train import MaskedPhotoDataset
    photo = np.asarray(Image.open(FIXTURES / "coffee_128.png").convert("RGB"), np.float32) / 127.5 - 1
    crops = [{"image": torch.from_numpy(photo[y:y + 32, :32].transpose(2, 0, 1).copy())} for y in range(0, 96, 4)]
    grey = lambda ds: [bool(torch.equal(it["image"][0], it["image"][1])) for it in (ds[k] for k in range(len(ds)))]  # noqa: E731
    assert not any(grey(MaskedPhotoDataset(crops, deterministic=True)))
    assert all(grey(MaskedPhotoDataset(crops, deterministic=True, grey_prob=1.0)))
    some = grey(MaskedPhotoDataset(crops, deterministic=True, grey_prob=0.5))
    assert 0 < sum(some) < len(some) and some == grey(MaskedPhotoDataset(crops, deterministic=True, grey_prob=0.5))


def test_transformer_loss_is_zero_without_masked_patches_and_any_grid_works():
    vqvae, transformer = _tiny_models()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    loss, acc = transformer_loss(transformer, vqvae, x, torch.ones(2, 1, 32, 32))
    assert loss.item() == 0.0
    logits = transformer(torch.randn(1, 3, 5, vqvae.config.latent_dim))  # sin-cos positions: any grid
    assert logits.shape == (1, 3, 5, vqvae.num_known_codes)


# ---- pipeline ----

def test_pipeline_keeps_known_pixels_bit_identical_at_any_size(tiny_put_dir):
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    image, hole = _image_and_hole(45, 37)
    out = pipe(Image.fromarray(image), hole, num_samples=2, seed=1)
    assert len(out.images) == 2 and out.work_size[0] % 8 == 0 and out.work_size[1] % 8 == 0
    for im in out.images:
        a = np.asarray(im)
        assert a.shape == image.shape
        assert np.array_equal(a[~hole], image[~hole])
    assert out.tokens.shape[0] == 2 and (out.tokens < pipe.vqvae.num_known_codes).all()


def test_pipeline_keeps_a_greyscale_picture_greyscale(tiny_put_dir):
    from pipelines.inpaint.pipeline import PUTInpaintPipeline, is_greyscale
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    image, hole = _image_and_hole(40, 32)
    colour = pipe(image, hole, num_samples=2, seed=3)
    assert not colour.info["greyscale"]
    assert any(not is_greyscale(im) for im in colour.images)  # the tiny untrained decoder does add colour...
    grey = np.repeat(image[..., :1], 3, axis=-1)
    out = pipe(grey, hole, num_samples=2, seed=3)
    assert out.info["greyscale"]
    for im in out.images:  # ... which a greyscale input never gets back
        a = np.asarray(im)
        assert is_greyscale(im) and np.array_equal(a[~hole], grey[~hole])


def test_pipeline_is_pluralistic_and_seeded(tiny_put_dir):
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    image, hole = _image_and_hole(32, 32)
    a = pipe(image, hole, num_samples=3, seed=5, top_k=16)
    b = pipe(image, hole, num_samples=3, seed=5, top_k=16)
    c = pipe(image, hole, num_samples=3, seed=6, top_k=16)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert len({tuple(t.flatten().tolist()) for t in a.tokens}) > 1  # the samples differ from each other
    greedy = pipe(image, hole, num_samples=2, seed=0, top_k=1)
    assert torch.equal(greedy.tokens[0], greedy.tokens[1])


def test_pipeline_save_load_round_trip_fp16(tiny_put_dir, tmp_path):
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    pipe.save_pretrained(tmp_path / "again")
    again = PUTInpaintPipeline.from_pretrained(tmp_path / "again", device="cpu")
    image, hole = _image_and_hole(40, 40)
    assert torch.equal(pipe(image, hole, seed=3).tokens, again(image, hole, seed=3).tokens)
    pipe.save_pretrained(tmp_path / "half", dtype=torch.float16)
    st = next((tmp_path / "half" / "transformer").glob("*.safetensors"))
    from safetensors import safe_open
    with safe_open(str(st), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert PUTInpaintPipeline.from_pretrained(tmp_path / "half", device="cpu")(image, hole).images[0].size == (40, 40)


def test_export_joins_the_transformer_run_and_the_vqvae_run_it_remembers(tmp_path):
    """`genstudio export` of a transformer run: its P-VQVAE comes from the run's own record."""
    import json
    from genstudio.export import export_run
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    vqvae, transformer = _tiny_models()
    vq_run, tr_run = tmp_path / "put-vqvae", tmp_path / "put-transformer"
    vqvae.save_pretrained(vq_run / "final")
    transformer.save_pretrained(tr_run / "final")
    (vq_run / "train_config.json").write_text(json.dumps({"recipe": "put", "options": {"stage": "vqvae"}}))
    (tr_run / "train_config.json").write_text(
        json.dumps({"recipe": "put", "options": {"stage": "transformer", "vqvae": str(vq_run)}}))
    out = export_run(tr_run, tmp_path / "put-photos", dtype="fp16")
    pipe = PUTInpaintPipeline.from_pretrained(out, device="cpu", dtype=torch.float16)
    for exported, trained in ((pipe.vqvae, vqvae), (pipe.transformer, transformer)):
        ref = trained.state_dict()
        assert all(torch.equal(v, ref[k].to(torch.float16)) for k, v in exported.state_dict().items()
                   if v.is_floating_point())
    with pytest.raises(ValueError, match="export the transformer run"):
        export_run(vq_run, tmp_path / "other")
    (tr_run / "train_config.json").write_text(json.dumps({"recipe": "put", "options": {"stage": "transformer"}}))
    with pytest.raises(ValueError, match="--set vqvae"):
        export_run(tr_run, tmp_path / "other")
    assert export_run(tr_run, tmp_path / "other", vqvae=str(vq_run / "final")).is_dir()  # the override
    # A decoder_only P-VQVAE run ships with the transformer of the model it started from.
    (vq_run / "train_config.json").write_text(
        json.dumps({"recipe": "put", "options": {"stage": "vqvae", "decoder_only": True}}))
    with pytest.raises(ValueError, match="--set transformer"):
        export_run(vq_run, tmp_path / "other2")
    out = export_run(vq_run, tmp_path / "joined", transformer=str(tr_run / "final"))
    assert PUTInpaintPipeline.from_pretrained(out, device="cpu").transformer.config.num_tokens == 32


def test_pipeline_mask_errors(tiny_put_dir):
    from genstudio.render import InputError
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    image, hole = _image_and_hole(32, 32)
    with pytest.raises(InputError, match="same size"):
        pipe(image, np.zeros((16, 16), bool) | True)
    with pytest.raises(InputError, match="no hole"):
        pipe(image, np.zeros((32, 32), bool))
    with pytest.raises(InputError, match="whole image"):
        pipe(image, np.ones((32, 32), bool))
    with pytest.raises(InputError, match="num_samples"):
        pipe(image, hole, num_samples=0)


# ---- known-pixel validation of the residual ----

def test_residual_weight_picks_the_blend_that_fits_the_validation_holes():
    """The weight in WEIGHTS whose blend reference + w (decoded - reference) is nearest the image on
    the validation holes: a residual that overshoots twice -> 0.5, a right one -> 1, noise -> 0."""
    from pipelines.inpaint.validate import WEIGHTS, residual_weight
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 16, 16, generator=g)
    reference = torch.rand(2, 3, 16, 16, generator=g)
    holes = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    holes[:, :, 4:9, 3:12] = True
    assert residual_weight(target, reference + 2 * (target - reference), reference, holes) == 0.5
    assert residual_weight(target, target.expand(2, -1, -1, -1), reference, holes) == 1.0
    noise = reference + torch.randn(2, 3, 16, 16, generator=g)
    assert residual_weight(target, noise, reference, holes) == 0.0
    assert residual_weight(target, noise, reference, torch.zeros_like(holes)) is None
    assert set(WEIGHTS) >= {0.0, 1.0}


def test_validation_holes_lie_on_known_pixels_and_are_seeded():
    from pipelines.inpaint.validate import validation_holes
    hole = np.zeros((32, 32), bool)
    hole[8:20, 5:25] = True
    a = validation_holes(hole, 3, np.random.default_rng(4))
    b = validation_holes(hole, 3, np.random.default_rng(4))
    assert a.shape == (3, 32, 32) and np.array_equal(a, b)
    assert not (a & hole).any() and all(m.any() for m in a)
    assert validation_holes(hole, 0, np.random.default_rng(0)).shape == (0, 32, 32)


def _biharmonic_pipe(residual_bias: float):
    """A tiny biharmonic-reference PUT whose decoder residual is the constant `residual_bias`."""
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    vqvae, transformer = _tiny_models()
    model = PatchVQVAE(**{**PUT_CONFIGS["tiny"]["vqvae"], "reference_fill": "biharmonic"})
    model.load_state_dict(vqvae.state_dict())
    torch.nn.init.zeros_(model.decoder.proj_out.weight)
    torch.nn.init.constant_(model.decoder.proj_out.bias, residual_bias)
    return PUTInpaintPipeline(model.eval(), transformer, device="cpu")


def test_pipeline_validation_drops_a_residual_that_only_adds_error():
    """With a reference fill, the pipeline weighs the decoder's residual by how well it fills extra
    holes over known pixels: a residual that shifts every hole pixel by 0.6 is dropped (the output is
    the biharmonic fill, for every sample), with validation off it is kept; known pixels stay exact."""
    from genstudio.render import InputError
    from pipelines.inpaint.bench import biharmonic
    from pipelines.inpaint.validate import WEIGHTS
    image = np.asarray(Image.open(FIXTURES / "coffee_128.png").convert("RGB").resize((32, 32)))
    hole = np.zeros((32, 32), bool)
    hole[10:18, 6:20] = True
    pipe = _biharmonic_pipe(0.6)
    out = pipe(image, hole, num_samples=2, seed=3)
    assert out.info["residual_weight"] == 0.0 and out.info["validation_masks"] == 3
    fill = biharmonic(image, hole)
    for im in out.images:
        a = np.asarray(im).astype(int)
        assert np.array_equal(a[~hole], image[~hole])
        assert np.abs(a[hole] - fill[hole]).max() <= 1  # the classical fill (float32 vs float64 rounding)
    kept = pipe(image, hole, num_samples=1, seed=3, validation_masks=0)
    assert "residual_weight" not in kept.info
    assert np.abs(np.asarray(kept.images[0]).astype(int)[hole] - fill[hole]).mean() > 40  # the 0.6 shift
    right = _biharmonic_pipe(0.0)(image, hole, num_samples=1, seed=3, validation_masks=2)
    assert right.info["residual_weight"] in WEIGHTS and right.info["validation_masks"] == 2
    with pytest.raises(InputError, match="validation_masks"):
        pipe(image, hole, validation_masks=99)


def test_pipeline_validation_needs_a_reference_fill(tiny_put_dir):
    from genstudio.render import InputError
    from pipelines.inpaint.pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(tiny_put_dir, device="cpu")
    image, hole = _image_and_hole(32, 32)
    assert "residual_weight" not in pipe(image, hole, seed=0).info  # the paper's model: nothing to weigh
    with pytest.raises(InputError, match="reference fill"):
        pipe(image, hole, validation_masks=2)


# ---- CLI ----

def _cli(*args, cwd=None):
    from cli_runner import run_genstudio
    return run_genstudio(*args, cwd=cwd)


def test_cli_writes_n_completions_keeping_known_pixels(tiny_put_dir, tmp_path):
    image = FIXTURES / "coffee_128.png"
    src = np.asarray(Image.open(image).convert("RGB"))
    hole = np.zeros(src.shape[:2], bool)
    hole[30:70, 40:90] = True
    Image.fromarray(hole.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    r = _cli("--seed", "0", "inpaint", "--image", str(image), "--mask", str(tmp_path / "mask.png"), "-n", "2",
             "-o", str(tmp_path / "out"), "--model", str(tiny_put_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted((tmp_path / "out").glob("*.png"))
    assert [f.name for f in files] == ["coffee_128_inpaint_0.png", "coffee_128_inpaint_1.png"]
    for f in files:
        assert np.array_equal(np.asarray(Image.open(f).convert("RGB"))[~hole], src[~hole])
    assert "wrote" in r.stdout + r.stderr


def test_cli_folder_mode_pairs_masks_by_name_and_resumes(tiny_put_dir, tmp_path):
    images, masks, out = tmp_path / "img", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    photo = Image.open(FIXTURES / "coffee_128.png").convert("RGB").resize((48, 48))
    hole = np.zeros((48, 48), np.uint8)
    hole[10:30, 12:36] = 255
    for name in ("a", "b", "lonely"):
        photo.save(images / f"{name}.png")
    for name in ("a", "b"):
        Image.fromarray(hole).save(masks / f"{name}.png")
    args = ("inpaint", "-i", images, "--mask", masks, "-n", "2", "-o", out, "--model", tiny_put_dir)
    r = _cli(*map(str, args))
    assert r.returncode == 1 and "2 done, 0 skipped (already there), 1 failed" in r.stderr, r.stderr
    assert "no mask named lonely" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_inpaint_0.png", "a_inpaint_1.png", "b_inpaint_0.png",
                                                     "b_inpaint_1.png"]
    (images / "lonely.png").unlink()
    r = _cli(*map(str, args))
    assert r.returncode == 0 and "0 done, 2 skipped" in r.stderr, r.stderr


def test_cli_bad_inputs_one_line_errors(tiny_put_dir, tmp_path):
    image = FIXTURES / "coffee_128.png"
    Image.new("L", (10, 10), 255).save(tmp_path / "small.png")
    Image.new("L", (128, 128), 0).save(tmp_path / "empty.png")
    (tmp_path / "corrupt.png").write_bytes(b"not an image")
    cases = [("small.png", "same size"), ("empty.png", "no hole"), ("corrupt.png", "not a readable image"),
             ("missing.png", "does not exist")]
    for mask, message in cases:
        r = _cli("inpaint", "--image", str(image), "--mask", str(tmp_path / mask), "-o", str(tmp_path / "o"),
                 "--model", str(tiny_put_dir))
        assert r.returncode != 0 and message in r.stdout + r.stderr, (mask, r.stdout + r.stderr)
        assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "o").exists()


# ---- benchmark and app ----

def test_bench_quick_with_tiny_model(tiny_put_dir, tmp_path, monkeypatch):
    from genstudio.bench import Report
    from pipelines.inpaint import bench
    src = np.asarray(Image.open(FIXTURES / "coffee_128.png").convert("RGB").resize((32, 32)))
    fake = {name: [(src, random_hole_mask(32, 32, r, np.random.default_rng(0)))] for name, r in RATIO_BUCKETS.items()}
    monkeypatch.setattr(bench, "test_set", lambda per_bucket, size, seed=0: fake)
    report = Report("inpaint", tmp_path)
    bench.bench_inpaint(report, quick=True, model=str(tiny_put_dir))
    methods = {r["method"] for r in report.rows}
    assert {"cv2-telea", "cv2-ns", "skimage-biharmonic", "harmonic-fill"} <= methods and any("PUT" in m for m in methods)
    assert len(report.rows) == 3 * 6
    assert {"PUT oracle tokens (ceiling)"} <= methods
    ours = [r for r in report.rows if r["method"].startswith("PUT (ours")]
    assert all(r["diversity_l1"] > 0 for r in ours)
    assert all(r["diversity_l1"] == 0 for r in report.rows if not r["method"].startswith("PUT (ours"))
    report.write()
    assert (tmp_path / "inpaint.md").read_text().count("PUT") >= 3

    # A reference-fill model adds the ablation row without validation.
    pipe = _biharmonic_pipe(0.0)
    pipe.save_pretrained(tmp_path / "bih")
    report = Report("inpaint", tmp_path / "b")
    bench.bench_inpaint(report, quick=True, model=str(tmp_path / "bih"), ceiling=False)
    assert {"PUT without validation (ablation)", "PUT (ours, top-50)"} <= {r["method"] for r in report.rows}


def test_app_editor_value_to_hole_and_inpaint(tiny_put_dir):
    from apps.inpaint import editor_to_image_and_hole, inpaint
    bg = Image.fromarray(_image_and_hole(40, 32)[0])
    layer = Image.new("RGBA", bg.size, (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (5, 5, 20, 15))
    image, hole = editor_to_image_and_hole({"background": bg, "layers": [layer], "composite": bg})
    assert hole.sum() == 15 * 10 and image.size == bg.size
    images, masked, info, files = inpaint({"background": bg, "layers": [layer]}, 2, 0, 50, model=str(tiny_put_dir))
    assert len(images) == 2 and info.startswith(f"2 completions of a hole covering {100 * 150 / (40 * 32):.1f} %")
    assert " s." in info and "{" not in info
    assert len(files) == 2 and all(f.endswith(".png") for f in files)  # the downloads: one PNG per completion
    assert [Image.open(f).size for f in files] == [bg.size] * 2
    with pytest.raises(ValueError, match="Upload an image"):
        inpaint(None)
