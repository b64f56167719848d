"""Class-conditional DiT images (`genstudio generate`) and SIMS (`genstudio sims`): glyph data,
the pipeline, official-layout loading, SIMS guidance / weight merging / auxiliary training, CLIs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_runner import run_genstudio
from genstudio.diffusion import make_scheduler
from genstudio.render import InputError
from genstudio.sims import merge_weights, read_sims, train_auxiliary, write_sims_checkpoint
from pipelines.image.data import CLASSES, class_index, render_glyph
from pipelines.image.pipeline import DiTImagePipeline
from pipelines.image.models import make_dit, make_vae, write_model_index


def perturb(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def tiny_pipeline(seed=0) -> DiTImagePipeline:
    torch.manual_seed(seed)
    dit = perturb(make_dit("tiny", len(CLASSES), 8, 4), seed=seed + 1)
    vae = make_vae((8, 8, 8)).eval()
    pipe = DiTImagePipeline(dit, vae, make_scheduler("ddim"), id2label=dict(enumerate(CLASSES)))
    pipe.set_precision("fp32")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(pipe: DiTImagePipeline, folder):
    pipe.transformer.save_pretrained(folder / "transformer")
    pipe.vae.save_pretrained(folder / "vae")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    write_model_index(folder)
    return folder


# ---- data ----

def test_render_glyph_keeps_case_and_baseline():
    from PIL import ImageFont

    from pipelines.image.data import latin_fonts
    fonts = latin_fonts(fonts="DejaVu Sans")
    if not fonts:
        pytest.skip("DejaVu Sans is not installed")
    font = ImageFont.truetype(str(fonts[0][0]), 96)
    upper, lower = render_glyph(font, "C"), render_glyph(font, "c")
    assert upper.shape == (32, 32) and upper.dtype == np.uint8 and upper.max() > 200
    assert (upper > 127).sum() > 1.3 * (lower > 127).sum()  # 'c' is smaller than 'C': case survives
    assert not (upper[25:] > 127).any()  # nothing below the baseline (3/4 height) for 'C'
    assert (render_glyph(font, "g")[25:] > 127).any()  # 'g' descends below it
    assert class_index("A") == 10 and class_index("z") == 61 and class_index("12") == 12
    with pytest.raises(ValueError, match="unknown class"):
        class_index("?")


# ---- pipeline ----

def test_pipeline_generates_each_class_and_counts_evaluations(tmp_path):
    pipe = tiny_pipeline()
    out = pipe(["A", "g", 3], num_images_per_class=2, num_inference_steps=3, guidance_scale=2.0, seed=1)
    assert out.labels == [10, 10, 42, 42, 3, 3] and len(out.images) == 6
    assert out.images[0].size == (32, 32) and out.nfe == 6  # CFG: cond + uncond per step
    assert out.metadata["seed"] == 1 and out.metadata["guidance_scale"] == 2.0
    again = pipe(["A", "g", 3], num_images_per_class=2, num_inference_steps=3, guidance_scale=2.0, seed=1)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, again.images))
    assert pipe(["A"], num_inference_steps=3, guidance_scale=1.0).nfe == 3
    grid = out.grid()
    assert grid.size == (64, 96)  # one row per class, one column per image
    out.save(tmp_path / "grid.png")
    paths = out.save(tmp_path / "each")
    assert sorted(p.name for p in paths)[:2] == ["3_004.png", "3_005.png"] and len(paths) == 6


@pytest.mark.parametrize("bad, match", [(dict(class_labels=["?"]), "unknown class"),
                                        (dict(class_labels=[62]), "out of range"),
                                        (dict(class_labels=["A"], num_inference_steps=0), "num_inference_steps"),
                                        (dict(class_labels=["A"], guidance_scale=0.5), "guidance_scale"),
                                        (dict(class_labels=["A"], num_images_per_class=2000), "images per call"),
                                        (dict(class_labels=["A"], sims_guidance=1.0), "SIMS checkpoint")])
def test_pipeline_refuses_bad_requests(bad, match):
    with pytest.raises(InputError, match=match):
        tiny_pipeline()(**bad)


def test_checkpoint_round_trip_and_official_layout(tmp_path):
    pipe = tiny_pipeline()
    folder = save_pipeline(pipe, tmp_path / "ckpt")
    loaded = DiTImagePipeline.from_pretrained(str(folder), device="cpu", precision="fp32")
    loaded.set_progress_bar_config(disable=True)
    a = pipe(["b"], num_inference_steps=2, output_type="latent").images[0]
    b = loaded(["b"], num_inference_steps=2, output_type="latent").images[0]
    assert torch.allclose(a, b, atol=1e-5) and loaded.id2label[10] == "A"
    # facebookresearch/DiT's torch.save(state_dict) layout (pos_embed stored), + a VAE folder
    fb = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    fb["pos_embed"] = pipe.transformer.pos_embed.clone()
    torch.save(fb, tmp_path / "DiT-tiny.pt")
    official = DiTImagePipeline.from_official(tmp_path / "DiT-tiny.pt", vae=str(folder / "vae"), device="cpu",
                                              precision="fp32")
    official.set_progress_bar_config(disable=True)
    c = official([10], num_inference_steps=2, output_type="latent").images[0]
    assert torch.allclose(pipe([10], num_inference_steps=2, output_type="latent").images[0], c, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="neither a DiT checkpoint"):
        DiTImagePipeline.from_official(tmp_path / "missing.pt")


# ---- SIMS ----

def test_merge_weights_is_linear_extrapolation():
    base, aux = tiny_pipeline(0).transformer, tiny_pipeline(5).transformer
    merged = merge_weights(base, aux, 0.5)
    name = "blocks.0.attn.qkv.weight"
    expected = 1.5 * base.state_dict()[name] - 0.5 * aux.state_dict()[name]
    assert torch.allclose(merged.state_dict()[name], expected, atol=1e-6)
    same = merge_weights(base, base, 2.0)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(same.parameters(), base.parameters()))


def test_sims_guidance_moves_samples_and_is_neutral_for_an_identical_model():
    pipe = tiny_pipeline()
    plain = pipe(["A", "B"], num_inference_steps=3, output_type="latent", seed=0, guidance_scale=1.0).images
    pipe.negative_transformer = pipe.transformer  # s = (1 + w) s - w s = s
    same = pipe(["A", "B"], num_inference_steps=3, output_type="latent", seed=0, guidance_scale=1.0, sims_guidance=1.0)
    assert same.nfe == 6 and all(torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, same.images))
    pipe.negative_transformer = tiny_pipeline(7).transformer
    moved = pipe(["A", "B"], num_inference_steps=3, output_type="latent", seed=0, guidance_scale=1.0, sims_guidance=1.0).images
    assert not torch.allclose(plain[0], moved[0], atol=1e-3)
    merged = pipe(["A", "B"], num_inference_steps=3, output_type="latent", seed=0, guidance_scale=1.0, sims_guidance=1.0,
                  sims_mode="weights")
    assert merged.nfe == 3  # the weight-space variant costs nothing extra per step


def test_auxiliary_training_and_sims_checkpoint(tmp_path):
    pipe = tiny_pipeline()
    base = save_pipeline(pipe, tmp_path / "base")
    aux, record = train_auxiliary(pipe, synthetic_size=8, steps=3, num_inference_steps=2, batch_size=4, lr=1e-3,
                                  progress=False)
    changed = [not torch.equal(p, q) for p, q in zip(aux.parameters(), pipe.transformer.parameters())]
    assert any(changed) and record["synthetic_size"] == 8 and record["finetune_steps"] == 3
    out = write_sims_checkpoint(base, aux, tmp_path / "sims", record, guidance=0.75)
    assert read_sims(out)["guidance"] == 0.75 and (out / "negative_transformer" / "config.json").exists()
    loaded = DiTImagePipeline.from_pretrained(str(out), device="cpu", precision="fp32")
    assert loaded.negative_transformer is not None and loaded.sims_guidance == 0.75
    assert loaded(["A"], num_inference_steps=2, progress=False).nfe == 6  # CFG (2) + auxiliary (1) per step


# ---- CLI ----

def test_generate_and_sims_commands(tmp_path):
    base = save_pipeline(tiny_pipeline(), tmp_path / "base")
    r = run_genstudio("generate", "--model", base, "--class", "A", "--class", "7", "-n", "2", "--steps", "2",
                      "-o", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.png").exists() and "4 images of 2 classes" in r.stderr
    r = run_genstudio("generate", "--model", base, "--class", "A", "--steps", "2", "-o", tmp_path / "out.png")
    assert r.returncode != 0 and "exists" in r.stderr and "Traceback" not in r.stderr
    r = run_genstudio("generate", "--model", base, "--class", "#", "--steps", "2", "-o", tmp_path / "x.png")
    assert r.returncode != 0 and "unknown class" in r.stderr and not (tmp_path / "x.png").exists()
    r = run_genstudio("sims", "--base", base, "--synthetic-size", "4", "--steps", "2", "--sampling-steps", "2",
                      "--batch-size", "2", "-o", tmp_path / "sims")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "sims" / "sims.json").read_text())["finetune_steps"] == 2
    r = run_genstudio("generate", "--model", tmp_path / "sims", "--class", "A", "--steps", "2", "--sims", "1.5",
                      "-o", tmp_path / "folder")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "folder" / "grid.png").exists() and "SIMS w=1.5" in r.stderr
    r = run_genstudio("sims", "--base", tmp_path / "missing", "-o", tmp_path / "s2")
    assert r.returncode != 0 and "Traceback" not in r.stderr and not (tmp_path / "s2").exists()


def test_app_tab_runs_on_a_checkpoint(tmp_path):
    from apps.generate import run_generate
    base = save_pipeline(tiny_pipeline(), tmp_path / "base")
    grid, info, path = run_generate("A, g 7", num=2, steps=2, model=str(base))
    assert grid.size == (2 * 32 * 3, 3 * 32 * 3) and info.startswith("6 images (3 classes × 2)")
    assert " s." in info and "{" not in info
    from PIL import Image
    assert path.endswith(".png") and Image.open(path).size == grid.size  # the download: the grid as a PNG
    with pytest.raises(ValueError, match="no SIMS auxiliary"):
        run_generate("A", sims=1.0, steps=2, model=str(base))
    with pytest.raises(ValueError, match="At most"):
        run_generate("A B C D E", num=16, model=str(base))


# ---- recipes: classifier -> VAE -> DiT -> export, on the DejaVu fonts every machine has ----

def test_recipes_train_and_export_a_loadable_checkpoint(tmp_path, monkeypatch):
    from genstudio.data import prepare
    from genstudio.export import export_run
    from genstudio.train import load_recipe, train
    from pipelines.image.data import latin_fonts
    if not latin_fonts(fonts="DejaVu Sans"):
        pytest.skip("DejaVu fonts are not installed")
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "data"))
    prepare("glyph-classes", fonts="DejaVu Sans,DejaVu Serif", variants=1, quiet=True)
    common = dict(steps=2, batch_size=8, save_every=10**6, progress=False, mixed_precision="fp32")
    train(load_recipe("glyph-classifier")({**common, "channels": 8, "feature_dim": 16,
                                            "output_dir": str(tmp_path / "clf")}))
    train(load_recipe("image-vae")({**common, "channels": [8, 8, 8], "output_dir": str(tmp_path / "vae")}))
    summary = train(load_recipe("image-dit")({**common, "vae": str(tmp_path / "vae"), "preset": "tiny",
                                              "output_dir": str(tmp_path / "dit")}))
    assert summary["steps"] == 2 and np.isfinite(summary["loss_ema"])
    export_run(tmp_path / "dit", tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "vae" / "config.json").read_text())["scaling_factor"] != 0.18215
    pipe = DiTImagePipeline.from_pretrained(str(tmp_path / "ckpt"), device="cpu", precision="fp32")
    assert pipe(["Q"], num_inference_steps=2, progress=False).images[0].size == (32, 32)


def test_official_layout_weights_compress_with_vq4dit_and_still_generate(tmp_path):
    """VQ4DiT on the official DiT layout: facebookresearch/DiT weights -> a pipeline folder -> 2 bits."""
    from genstudio.vq4dit import quantization_config
    pipe = tiny_pipeline()
    fb = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    fb["pos_embed"] = pipe.transformer.pos_embed.clone()
    torch.save(fb, tmp_path / "DiT-tiny.pt")
    vae_dir = tmp_path / "vae"
    pipe.vae.save_pretrained(vae_dir)
    official = DiTImagePipeline.from_official(tmp_path / "DiT-tiny.pt", vae=str(vae_dir), device="cpu", precision="fp32")
    folder = save_pipeline(official, tmp_path / "official")
    r = run_genstudio("compress", folder, "--bits", "2", "-o", tmp_path / "vq2", "--samples", "2", "--steps", "2",
                      "--iters", "2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert quantization_config(tmp_path / "vq2" / "transformer")["bits"] == 2
    small = DiTImagePipeline.from_pretrained(str(tmp_path / "vq2"), device="cpu", precision="fp32")
    out = small(["A", "b"], num_inference_steps=2, progress=False)
    assert len(out.images) == 2 and not out.failed
