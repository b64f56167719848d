"""MV-Adapter inference (pipelines/multiview/pipeline.py, cli.py, apps/multiview.py) on a tiny base UNet +
tiny adapter saved here: determinism, views and cameras, the training-exact sampling step, image
conditioning, low-memory equality, the released-adapter route, saving, the CLI and the app callback."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runner import run_genstudio
from pipelines.multiview.pipeline import FRONT_AZIMUTH, MVAdapterPipeline, MultiViewOutput
from genstudio.render import InputError

SIZE = 8
SHIFT = 4.0


def _perturb_out_layers(adapter, seed=0):
    """Zero-initialised out layers make the adapter the identity: give them weights so the test can see it."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "to_out" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _build(root, use_ref=True, vae=False):
    from pipelines.multiview.attention import add_mv_adapter
    from pipelines.multiview.train import make_base_unet
    torch.manual_seed(0)
    unet = make_base_unet("tiny", image_size=SIZE // 2 if vae else SIZE, text_dim=384)
    if vae:  # a latent-space base: unet/ (4 latent channels) + vae/ (2x down), no scheduler/: the recipe's
        from diffusers import AutoencoderKL
        unet = type(unet).from_config({**unet.config, "in_channels": 4, "out_channels": 4})
        unet.save_pretrained(root / "base" / "unet")
        AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                      layers_per_block=1).save_pretrained(root / "base" / "vae")
    else:
        unet.save_pretrained(root / "base")
    adapter = add_mv_adapter(unet, 4, use_ref=use_ref, mv_layout="full", cond_downscale_factor=1)
    _perturb_out_layers(adapter)
    adapter.save_pretrained(root / "adapter")
    # what `genstudio export` keeps of the run: the recipe's options (shift_scale reaches sampling)
    (root / "adapter" / "train_config.json").write_text(json.dumps({"recipe": "mv-adapter",
                                                                   "options": {"shift_scale": SHIFT}}))
    return root / "base", root / "adapter"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("mv-tiny"))


@pytest.fixture(scope="module")
def pipe(parts):
    return MVAdapterPipeline.from_pretrained(*parts, device="cpu", precision="fp32")


def run(pipe, prompt="a red box", **kwargs):
    kwargs = {"num_views": 4, "num_inference_steps": 3, "seed": 1, "progress": False, **kwargs}
    return pipe(prompt, **kwargs)


def arrays(out: MultiViewOutput) -> np.ndarray:
    return np.stack([np.asarray(im) for im in out.images])


def test_deterministic_views_of_the_model_size(pipe):
    a, b, other = run(pipe), run(pipe), run(pipe, seed=2)
    assert len(a.images) == 4 and all(im.size == (SIZE, SIZE) and im.mode == "RGB" for im in a.images)
    assert a.grid.size == (4 * SIZE, SIZE)
    assert np.array_equal(arrays(a), arrays(b))
    assert not np.array_equal(arrays(a), arrays(other))
    assert a.metadata["seed"] == 1 and a.metadata["views"] == 4 and a.metadata["shift_scale"] == SHIFT
    assert len(run(pipe, num_views=7).images) == 7 and run(pipe, num_views=7).grid.size == (6 * SIZE, 2 * SIZE)


def test_azimuths_are_the_cameras_used(pipe, monkeypatch):
    from pipelines.multiview.cameras import orbit_cameras
    seen = []
    real = MVAdapterPipeline.camera_features
    monkeypatch.setattr(MVAdapterPipeline, "camera_features", lambda self, cams: seen.append(cams) or real(self, cams))
    front = run(pipe, num_views=None, azimuths=[0, 90, 180, 270], elevation=20)
    turned = run(pipe, num_views=None, azimuths=[0, 30, 60, 90], elevation=20)
    assert front.azimuths == [0, 90, 180, 270] and front.elevations == pytest.approx([20] * 4)
    torch.testing.assert_close(seen[0].c2w, orbit_cameras([a + FRONT_AZIMUTH for a in (0, 90, 180, 270)], 20).c2w)
    assert not np.array_equal(arrays(front), arrays(turned))  # the cameras reach the model
    # a CameraSet is used as given, and its angles are reported from the front
    out = run(pipe, num_views=None, cameras=orbit_cameras([FRONT_AZIMUTH + 45, FRONT_AZIMUTH - 90], [10, 30]))
    assert out.azimuths == pytest.approx([45, -90], abs=1e-4) and out.elevations == pytest.approx([10, 30], abs=1e-4)


def test_one_sampling_step_is_the_training_loss_call(pipe, monkeypatch):
    """The pipeline's noise prediction equals the mv-adapter recipe's: CaptionTokens states, the
    reference through encode_reference on the same frozen UNet, camera features as intrablock
    residuals, one timestep repeated per view; the sampler carries the recipe's shifted schedule."""
    from genstudio.diffusion import make_scheduler
    from pipelines.multiview.attention import encode_reference
    from pipelines.multiview.condition import camera_condition, shift_noise_schedule
    from pipelines.multiview.train import CaptionTokens
    calls = []
    unet = pipe.unet
    real = type(unet).forward

    def record(self, sample, timestep, *args, **kwargs):
        result = real(self, sample, timestep, *args, **kwargs)
        calls.append((sample.clone(), timestep, (result[0] if isinstance(result, tuple) else result.sample).clone()))
        return result

    monkeypatch.setattr(type(unet), "forward", record)
    reference = Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8))
    run(pipe, image=reference, guidance_scale=1.0, num_inference_steps=2)
    monkeypatch.undo()
    steps = [c for c in calls if torch.as_tensor(c[1]).numel() == 1 and int(c[1]) != 0]
    assert len(steps) == 2 and all(c[0].shape[0] == 4 for c in steps)  # one batch of V views per step
    x, t, pipeline_eps = steps[0]
    # the recipe's loss_fn, written out for this batch
    tokens = CaptionTokens()
    states, mask = tokens(["a red box"])
    ref = pipe.prepare_image(reference)
    cams = pipe.make_cameras(4, None, 0.0, None, "orthographic")[0]
    with torch.no_grad():
        features = encode_reference(unet, ref, states, encoder_attention_mask=mask)
        eps = unet(x, torch.full((4,), int(t)), encoder_hidden_states=states.repeat_interleave(4, 0),
                   encoder_attention_mask=mask.repeat_interleave(4, 0),
                   down_intrablock_additional_residuals=pipe.adapter(camera_condition(cams.plucker(SIZE))),
                   cross_attention_kwargs={"ref_hidden_states": features}).sample
    torch.testing.assert_close(pipeline_eps, eps, atol=1e-5, rtol=1e-4)
    trained = shift_noise_schedule(make_scheduler("ddpm", prediction_type="epsilon"), SHIFT)
    torch.testing.assert_close(pipe.sampler("ddim").alphas_cumprod, trained.alphas_cumprod)
    assert int(steps[0][1]) == trained.config.num_train_timesteps - 1  # the first step starts from pure noise


def test_guidance_and_image_conditioning(pipe, tmp_path):
    text = run(pipe)
    assert not np.array_equal(arrays(text), arrays(run(pipe, guidance_scale=1.0)))
    red = Image.new("RGB", (40, 30), (220, 30, 30))
    blue = Image.new("RGB", (40, 30), (30, 30, 220))
    blue.save(tmp_path / "blue.png")
    a, b = run(pipe, None, image=red), run(pipe, None, image=tmp_path / "blue.png")
    assert a.metadata["conditioning"] == "image" and len(a.images) == 4
    assert not np.array_equal(arrays(a), arrays(b))  # the reference image steers the views
    both = run(pipe, image=red, image_guidance_scale=1.5)
    assert both.metadata["conditioning"] == "text+image"
    assert not np.array_equal(arrays(both), arrays(run(pipe, image=red)))


def test_low_memory_gives_the_same_views(pipe):
    for kwargs in ({}, {"image": Image.new("RGB", (8, 8), "red"), "image_guidance_scale": 2.0}):
        assert np.array_equal(arrays(run(pipe, **kwargs)), arrays(run(pipe, low_memory=True, **kwargs)))


def test_latent_base_decodes_one_view_at_a_time_identically(tmp_path):
    base, adapter = _build(tmp_path, vae=True)
    latent = MVAdapterPipeline.from_pretrained(base, adapter, device="cpu", precision="fp32")
    assert latent.vae is not None and latent.image_size == SIZE
    out = run(latent, image=Image.new("RGB", (8, 8), "blue"))
    assert out.images[0].size == (SIZE, SIZE)
    assert np.array_equal(arrays(out), arrays(run(latent, image=Image.new("RGB", (8, 8), "blue"), low_memory=True)))


def test_save_writes_grid_and_views_atomically(pipe, tmp_path):
    out = run(pipe, num_views=3)
    written = out.save(tmp_path / "views")
    assert sorted(p.name for p in (tmp_path / "views").iterdir()) == ["grid.png", "view_00.png", "view_01.png",
                                                                       "view_02.png"]
    assert [p.name for p in written][0] == "grid.png"
    assert np.array_equal(np.asarray(Image.open(tmp_path / "views" / "view_01.png")), np.asarray(out.images[1]))
    assert out.save(tmp_path / "g.png").name == "g.png" and Image.open(tmp_path / "g.png").size == out.grid.size
    with pytest.raises(ValueError, match="folder or an image"):
        out.save(tmp_path / "x.gif")
    out.failed, out.message = True, "nothing"
    with pytest.raises(ValueError, match="nothing to write"):
        out.save(tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt": None}, "prompt, a reference image or both"),
    ({"num_views": 0}, "between 1 and 16"), ({"num_views": 17}, "between 1 and 16"),
    ({"azimuths": [0, "left"], "num_views": None}, "azimuths must be numbers"),
    ({"azimuths": [0, 90]}, "num_views=4 but the cameras give 2"),
    ({"elevation": 90}, "elevations must lie strictly between"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"scheduler": "euler"}, "unknown scheduler"), ({"prompt": "x" * 501}, "at most 500"),
])
def test_bad_inputs_are_input_errors(pipe, kwargs, match):
    with pytest.raises(InputError, match=match):
        run(pipe, **kwargs)


def test_names_runs_and_missing_checkpoints(parts, tmp_path, monkeypatch):
    from genstudio.hub import CheckpointNotFound
    from genstudio.pipeline import CheckpointMismatch
    base, adapter = parts
    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    monkeypatch.setenv("GENSTUDIO_CHECKPOINTS", str(shipped))
    with pytest.raises(CheckpointNotFound, match="'mv-adapter-S'"):
        MVAdapterPipeline.from_pretrained(device="cpu")
    shutil.copytree(adapter, shipped / "mv-adapter-S")
    with pytest.raises(CheckpointNotFound, match="'mv-base-S'"):
        MVAdapterPipeline.from_pretrained(device="cpu")
    shutil.copytree(base, shipped / "mv-base-S")
    by_name = MVAdapterPipeline.from_pretrained("mv-adapter-S", device="cpu", precision="fp32")
    assert by_name.name == "mv-adapter-S" and by_name.shift_scale == SHIFT
    # a training run (train_config.json + final/) works as the adapter
    run_dir = tmp_path / "runs" / "mv-adapter"
    shutil.copytree(adapter, run_dir / "final")
    (run_dir / "train_config.json").write_text(json.dumps({"recipe": "mv-adapter", "options": {"shift_scale": 2.0}}))
    from_run = MVAdapterPipeline.from_pretrained(base, run_dir, device="cpu", precision="fp32")
    assert from_run.shift_scale == 2.0
    assert not np.array_equal(arrays(run(by_name)), arrays(run(from_run)))  # the recorded shift is used
    with pytest.raises(CheckpointMismatch, match="holds no MVAdapter"):
        MVAdapterPipeline.from_pretrained(adapter, base, device="cpu")  # swapped parts


def test_released_adapter_file_loads_and_uses_the_reference_cameras(tmp_path):
    from safetensors.torch import save_file

    from pipelines.multiview.attention import MVAdapter
    from pipelines.multiview.official import ours_to_official
    from pipelines.multiview.train import make_base_unet
    torch.manual_seed(0)
    unet = make_base_unet("tiny", image_size=SIZE, text_dim=384)
    unet.save_pretrained(tmp_path / "base")
    released = MVAdapter.for_unet(unet, 6, use_ref=False, mv_layout="row", cond_downscale_factor=8)
    _perturb_out_layers(released)
    path = tmp_path / "mvadapter_t2mv_sd21.safetensors"
    save_file({k: v.contiguous() for k, v in ours_to_official(released.state_dict()).items()}, str(path))
    pipe = MVAdapterPipeline.from_pretrained(tmp_path / "base", path, device="cpu", precision="fp32")
    assert pipe.camera_embedding == "reference" and pipe.adapter.config.mv_layout == "row"
    torch.testing.assert_close(pipe.adapter.state_dict()["cond_encoder.adapter.conv_in.weight"],
                               released.state_dict()["cond_encoder.adapter.conv_in.weight"])
    out = run(pipe, num_views=None, num_inference_steps=2)
    assert out.azimuths == [0, 45, 90, 180, 270, 315] and len(out.images) == 6
    with pytest.raises(InputError, match="without reference attention"):
        run(pipe, image=Image.new("RGB", (8, 8)), num_views=None)


# ---------------------------------------------------------------- CLI and app

def _one_error_line(r, *names):
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.lstrip("│ ").lower().startswith("error: ")]
    assert len(errors) == 1, text
    for name in names:
        assert name in errors[0], (name, errors[0])


def test_cli_writes_grid_and_views(parts, tmp_path):
    base, adapter = parts
    out = tmp_path / "out"
    common = ["--base", base, "--adapter", adapter, "--steps", "2", "--device", "cpu"]
    r = run_genstudio("multiview", "--text", "a red box", "--views", "3", "-o", out, *common)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "view_00.png", "view_01.png", "view_02.png"]
    _one_error_line(run_genstudio("multiview", "--text", "a red box", "-o", out, *common), "--overwrite")
    Image.new("RGB", (20, 20), "red").save(tmp_path / "front.png")
    r = run_genstudio("multiview", "--image", tmp_path / "front.png", "--azimuths", "0,90", "--elevation", "10",
                      "--low-memory", "-o", tmp_path / "grid.png", *common)
    assert r.returncode == 0 and Image.open(tmp_path / "grid.png").size == (2 * SIZE, SIZE), r.stdout + r.stderr


def test_cli_bad_inputs_are_one_line_and_write_nothing(parts, tmp_path):
    base, adapter = parts
    out = tmp_path / "out"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = ["-o", out, "--base", base, "--adapter", adapter, "--device", "cpu"]  # each case fails before loading
    cases = [
        (["--text", "a box", "--azimuths", "0,ninety"], ("--azimuths", "0,ninety")),
        (["--text", "a box", "--azimuths", ",".join(["0"] * 17)], ("at most 16",)),
        (["--text", "a box", "--azimuths", "0,90", "--views", "3"], ("--views 3", "2 views")),
        (["--text", "a box", "--elevation", "95"], ("--elevation",)),
        (["--text", "a box", "--elevation", "0,10"], ("--elevation", "2 values for 6 views")),
        (["--image", tmp_path / "missing.png"], ("missing.png", "does not exist")),
        (["--image", tmp_path / "corrupt.png"], ("corrupt.png", "not a readable image")),
        ([], ("--text", "--image")),
        (["--text", "  "], ("--text",)),
        (["--text", "a box", "--views", "17"], ("--views",)),
        (["--text", "a box", "--steps", "0"], ("--steps",)),
    ]
    for args, names in cases:
        _one_error_line(run_genstudio("multiview", *args, *common), *names)
    r = run_genstudio("multiview", "--text", "a box", "-o", out, "--base", base, "--adapter", tmp_path / "none",
                      "--device", "cpu")
    _one_error_line(r, "none")
    assert not out.exists() or not any(out.rglob("*"))


def test_app_callback_runs_and_refuses(pipe, monkeypatch):
    import apps.multiview as tab
    monkeypatch.setattr(tab, "load_pipeline", lambda task, model, progress=None, then=None: pipe)
    gallery, text, files = tab.run_multiview("a red box", None, num_views=3, elevation=10, steps=2, seed=0)
    assert len(gallery) == 3 and gallery[1][1] == "azimuth 120°" and "3 views of text" in text
    assert sorted(f.rsplit("/", 1)[-1] for f in files) == ["grid.png", "view_00.png", "view_01.png", "view_02.png"]
    with pytest.raises(ValueError, match="prompt or upload"):
        tab.run_multiview("", None)
    with pytest.raises(ValueError, match="Between 1 and 8 views"):
        tab.run_multiview("a box", None, num_views=9)


def test_app_tab_says_when_the_checkpoint_is_missing(tmp_path, monkeypatch):
    import gradio as gr

    import apps
    import apps.multiview as tab
    monkeypatch.setenv("GENSTUDIO_CHECKPOINTS", str(tmp_path))
    apps.pipeline.cache_clear()
    with pytest.raises(gr.Error, match="mv-adapter-S"):
        apps.ui_errors(tab.run_multiview)("a red box", None, steps=2)
