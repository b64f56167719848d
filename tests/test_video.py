"""VDT video pipeline: masks, model, data, video I/O, the `clips` source, pipeline, CLI, app, bench.

Model-dependent tests use a tiny random VDT (16x16, 8 frames) saved to a temporary folder; its
zero-initialised output layers are perturbed so that its predictions are not trivially zero.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genstudio.data import DataError
from genstudio.formats.video import read_video, write_video
from genstudio.render import InputError
from pipelines.video.data import PhysicsClips, make_clip, simulate_balls
from pipelines.video.vdt import (MASK_MODES, VDT, VDT_CONFIGS, interpolation_frames, make_mask, random_mask,
                                 sample_training_mask)

T, S = 8, 16  # the tiny test model's clip


def given_frames(mask: torch.Tensor) -> list[int]:
    """Frames given whole in a (T, 1, H, W) mask."""
    return [t for t in range(mask.shape[0]) if not mask[t].any()]


# ---- Masks ----

@pytest.mark.parametrize("task", MASK_MODES)
def test_every_mask_mode_has_the_right_shape_and_given_part(task):
    g = torch.Generator().manual_seed(0)
    m = make_mask(task, 16, 32, 32, batch=3, generator=g)
    assert m.shape == (3, 16, 1, 32, 32) and m.dtype == torch.bool and m[0].any()
    assert torch.equal(m[0], m[2])  # one mask shared by the batch
    given = given_frames(m[0])
    expected = {"predict": list(range(8)), "backward": list(range(8, 16)), "interpolate": [0, 5, 10, 15],
                "generate": [], "animate": [0]}
    if task in expected:
        assert given == expected[task]
    if task == "random":
        assert 0 < m[0].all(dim=(1, 2, 3)).sum() and all(m[0, t].all() or not m[0, t].any() for t in range(16))
    if task == "complete":  # a block generated in every frame, the rest given
        assert m[0].any(dim=(1, 2, 3)).all() and not m[0].all(dim=(1, 2, 3)).any()
        box = make_mask("complete", 4, 8, 8, box=(2, 3, 5, 7), frame_range=(1, 3))[0, :, 0]
        assert box.sum() == 2 * 3 * 4 and box[1, 2:5, 3:7].all() and not box[0].any()


def test_any_number_of_given_frames_works():
    for k in range(1, 16):
        assert given_frames(make_mask("predict", 16, 4, 4, num_known=k)[0]) == list(range(k))
        assert given_frames(make_mask("backward", 16, 4, 4, num_known=k)[0]) == list(range(16 - k, 16))
    for k in range(2, 17):
        assert given_frames(make_mask("interpolate", 16, 4, 4, num_known=k)[0]) == interpolation_frames(16, k)
        assert len(interpolation_frames(16, k)) == k
    assert given_frames(make_mask("predict", 16, 4, 4, num_known=99)[0]) == list(range(15))  # clamped
    assert given_frames(make_mask("animate", 16, 4, 4, index=7)[0]) == [7]
    with pytest.raises(ValueError, match="unknown mask task"):
        make_mask("rewind", 16, 4, 4)


def test_training_mixture_draws_every_mode_and_every_count():
    g = torch.Generator().manual_seed(1)
    counts = {len(given_frames(random_mask("predict", 16, 4, 4, g))) for _ in range(200)}
    assert counts == set(range(1, 16))  # not a fixed 8 as in the reference
    starts = {given_frames(random_mask("animate", 16, 4, 4, g))[0] for _ in range(200)}
    assert len(starts) > 10
    masks = sample_training_mask(256, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    assert masks.shape == (256, 16, 1, 8, 8) and masks.flatten(1).any(1).all()  # always something to learn
    spatial = (masks.any(dim=(2, 3, 4)) & ~masks.all(dim=(2, 3, 4))).any(1)  # partly generated frames
    assert 0.1 < spatial.float().mean() < 0.3  # the paper's 20% spatial completion
    assert masks.flatten(1).all(1).any()  # unconditional clips are in the mix
    again = sample_training_mask(256, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(masks, again)
    only = sample_training_mask(8, 16, 8, 8, mixture={"predict": 1.0})
    assert all(given_frames(m) == list(range(len(given_frames(m)))) for m in only)
    with pytest.raises(ValueError, match="unknown mask mode"):
        sample_training_mask(2, 16, 8, 8, mixture={"sideways": 1.0})


# ---- Model ----

def tiny_vdt(seed: int = 0) -> VDT:
    torch.manual_seed(seed)
    model = VDT(sample_size=S, num_frames=T, **VDT_CONFIGS["tiny"])
    with torch.no_grad():  # open the adaLN-Zero gates: an untouched DiT predicts exactly 0
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "vdt-tiny"
    tiny_vdt().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_gif(tmp_path_factory):
    """A 12-frame 32 px procedural clip: longer and larger than the tiny model's 8 x 16 px."""
    path = tmp_path_factory.mktemp("clips") / "balls.gif"
    write_video(path, make_clip(5, 0, frames=12, size=32, kinds=("balls",))[1])
    return path


def test_vdt_forward_uses_the_mask_and_round_trips(tmp_path):
    model = tiny_vdt()
    x, t = torch.randn(2, T, 3, S, S), torch.tensor([10, 900])
    mask = make_mask("predict", T, S, S, batch=2, num_known=3)
    with torch.no_grad():
        out = model(x, t, generate_mask=mask)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, model(x, t))  # the mask channel is seen
        model.save_pretrained(tmp_path / "m")
        again = VDT.from_pretrained(tmp_path / "m").eval()
        assert again.config.num_frames == T and again.config.prediction_type == "v_prediction"
        assert torch.equal(again(x, t, generate_mask=mask), out)
    assert set(VDT_CONFIGS) == {"tiny", "S", "M", "B"}


# ---- Data ----

def test_procedural_clips_are_deterministic_and_in_range():
    kind, a = make_clip(3, 7)
    assert make_clip(3, 7)[1].tobytes() == a.tobytes() and kind in ("balls", "digits")
    assert make_clip(4, 7)[1].tobytes() != a.tobytes()
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    ds = PhysicsClips(length=4, seed=3)
    item = ds[1]["video"]
    assert item.shape == (16, 3, 32, 32) and item.min() >= -1 and item.max() <= 1
    assert torch.equal(item, PhysicsClips(length=4, seed=3)[1]["video"])
    assert make_clip(3, 7, size=64, kinds=("digits",))[1].shape == (16, 64, 64, 3)
    moving = [np.abs(np.diff(make_clip(9, k)[1].astype(int), axis=0)).mean() for k in range(6)]
    assert min(moving) > 0  # every clip moves
    with pytest.raises(IndexError):
        ds.clip(4)


def test_balls_stay_in_the_frame_and_keep_their_energy():
    for k in range(40):
        rng = np.random.default_rng([11, k])
        sim = simulate_balls(rng, frames=32, size=32)
        pos, r = sim["positions"], sim["radii"]
        assert (pos >= r[None, :, None] - 1e-6).all() and (pos <= 32 - r[None, :, None] + 1e-6).all()
        for i in range(len(r)):
            for j in range(i + 1, len(r)):
                assert (np.linalg.norm(pos[:, i] - pos[:, j], axis=-1) > 0.8 * (r[i] + r[j])).all()
    sim = simulate_balls(np.random.default_rng(0), frames=48, size=32, num_balls=1)
    y, v, g = sim["positions"][:, 0, 0], sim["velocities"][:, 0], sim["gravity"]
    energy = 0.5 * (v ** 2).sum(-1) + g * (32 - y)  # y grows downwards
    assert np.ptp(energy) < 0.1 * energy.mean()  # elastic walls, gravity: conserved
    assert (np.diff(np.sign(np.diff(y))) != 0).any()  # it bounced


# ---- Video I/O ----

def test_video_read_write_round_trips(tmp_path):
    clip = make_clip(1, 2, frames=10, kinds=("balls",))[1]
    clip[4] = clip[3]  # Pillow merges equal frames into one; reading must restore both
    write_video(tmp_path / "a.gif", clip)
    assert np.array_equal(read_video(tmp_path / "a.gif"), clip)
    write_video(tmp_path / "a.mp4", clip, fps=10)
    back = read_video(tmp_path / "a.mp4")
    assert back.shape == clip.shape and np.abs(back.astype(int) - clip).mean() < 3
    assert read_video(tmp_path / "a.mp4", max_frames=3).shape[0] == 3
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, f in enumerate(clip):
        Image.fromarray(f).save(folder / f"f{t}.png")  # f10 after f9: natural order
    assert np.array_equal(read_video(folder), clip)
    write_video(tmp_path / "odd.mp4", np.zeros((3, 15, 17, 3), np.uint8))  # odd sides are padded for H.264
    assert read_video(tmp_path / "odd.mp4").shape == (3, 16, 18, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4", "frames", "odd.mp4"]  # no temp files
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    (tmp_path / "empty").mkdir()
    for bad, why in [("missing.gif", "does not exist"), ("bad.mp4", "not a readable video"),
                     ("empty", "holds no frames"), ("a.txt", "not a video")]:
        (tmp_path / "a.txt").write_text("x")
        with pytest.raises(InputError, match=why):
            read_video(tmp_path / bad)
    with pytest.raises(InputError, match=".gif or .mp4"):
        write_video(tmp_path / "x.webp", clip)


# ---- The clips source (opencv-doc), on a fake .avi ----

def _fake_avi(path: Path, frames: int = 40):
    import imageio_ffmpeg
    writer = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=10, codec="mjpeg", macro_block_size=1,
                                         output_params=["-q:v", "3"])
    writer.send(None)
    for t in range(frames):
        frame = np.full((48, 64, 3), 30, np.uint8)
        frame[10:30, t:t + 12] = (220, 80, 40)
        writer.send(frame)
    writer.close()


@pytest.fixture(scope="module")
def fake_clips_root(tmp_path_factory):
    import pipelines.video.data as vd
    from genstudio.data import prepare
    src = tmp_path_factory.mktemp("opencv_doc") / "examples" / "data"
    src.mkdir(parents=True)
    _fake_avi(src / "walk.avi")
    _fake_avi(src / "walk_bugy.avi")
    (src / "broken.avi").write_bytes(b"RIFF broken")
    root = tmp_path_factory.mktemp("data")
    original = vd._download_opencv_doc
    vd._download_opencv_doc = lambda tmp, log: src  # no network in tests
    try:
        prepare("clips", root=root, quiet=True)
    finally:
        vd._download_opencv_doc = original
    return root


def test_clips_source_cuts_resized_clips_with_licence(fake_clips_root, monkeypatch):
    from genstudio.data import load_manifest, prepare
    items = load_manifest("clips", root=fake_clips_root)
    assert [it["id"] for it in items] == ["opencv-doc/walk/00000"]  # 40 frames, stride 2: one clip; bugy skipped
    assert items[0]["licence"] == "BSD-3-Clause (OpenCV)"
    clip = np.load(items[0]["path"])
    assert clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8 and clip.std() > 10
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(DataError, match="apt-get"):
        prepare("clips", root=fake_clips_root / "other", quiet=True)


# ---- Pipeline ----

def test_known_frames_come_out_bit_identical(tiny_model_dir, clip_gif):
    from pipelines.video.data import uint8_to_video
    from pipelines.video.pipeline import VDTPipeline, sample_clips
    pipe = VDTPipeline.from_pretrained(tiny_model_dir, device="cpu")
    for task, k in [("predict", 1), ("predict", 3), ("predict", 7), ("backward", 2), ("interpolate", 3),
                    ("complete", None), ("animate", None), ("generate", None)]:
        out = pipe(task=task, frames=str(clip_gif), num_known=k, num_inference_steps=3, progress=False)
        assert out.frames.shape == (T, S, S, 3) and out.frames.dtype == np.uint8 and out.mask.any()
        if task != "generate":
            assert np.array_equal(out.frames[~out.mask], out.input[~out.mask]), task
            assert any("resized to 16x16" in n for n in out.notes) and any("kept the first 8" in n for n in out.notes)
        if task == "predict":
            assert given_frames(torch.from_numpy(out.mask)[:, None]) == list(range(k))
    # below the pipeline, in float: the sampler returns the given values bit for bit
    clip = uint8_to_video(read_video(clip_gif)[:T, :S, :S])[None]
    mask = make_mask("interpolate", T, S, S, num_known=3)
    for scheduler in ("dpm", "ddim", "euler", "ddpm"):
        x, nfe = sample_clips(pipe.transformer, torch.where(mask, 0.0, clip), mask, 4, scheduler, progress=False)
        assert torch.equal(x[~mask.expand_as(x)], clip[~mask.expand_as(clip)]) and nfe == 4
    a = pipe(task="predict", frames=str(clip_gif), num_inference_steps=3, seed=5, progress=False)
    b = pipe(task="predict", frames=str(clip_gif), num_inference_steps=3, seed=5, progress=False)
    assert np.array_equal(a.frames, b.frames)


def test_pipeline_accepts_arrays_tensors_images_and_masks(tiny_model_dir, tmp_path):
    from pipelines.video.pipeline import VDTPipeline
    pipe = VDTPipeline.from_pretrained(tiny_model_dir, device="cpu")
    clip = make_clip(2, 1, frames=T, size=S)[1]
    run = dict(num_inference_steps=2, progress=False)
    out = pipe(task="predict", frames=clip[:3], **run)  # 3 frames given: they are the known ones
    assert given_frames(torch.from_numpy(out.mask)[:, None]) == [0, 1, 2] and out.reference_scores() is None
    full = pipe(task="predict", frames=clip, num_known=2, **run)
    assert full.notes == [] and 0 <= full.reference_scores()["mse"] <= 1
    tensor = torch.from_numpy(clip).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert np.array_equal(pipe(task="predict", frames=tensor, num_known=2, **run).input, full.input)
    keys = pipe(task="interpolate", frames=[Image.fromarray(f) for f in clip[[0, 7]]], **run)
    assert given_frames(torch.from_numpy(keys.mask)[:, None]) == [0, 7]
    Image.fromarray(clip[0]).save(tmp_path / "still.png")
    assert pipe(task="animate", frames=tmp_path / "still.png", **run).mask[1:].all()
    hole = np.zeros((S, S), bool)
    hole[4:8, 4:12] = True
    Image.fromarray(hole.astype(np.uint8) * 255).resize((64, 64), Image.NEAREST).save(tmp_path / "hole.png")
    done = pipe(task="complete", frames=clip, mask=tmp_path / "hole.png", **run)
    assert np.array_equal(done.mask[0], hole) and np.array_equal(done.frames[:, ~hole], clip[:, ~hole])
    per_frame = pipe(task="predict", frames=clip, mask=np.array([0, 1, 0, 1, 0, 1, 0, 1], bool), **run)
    assert given_frames(torch.from_numpy(per_frame.mask)[:, None]) == [0, 2, 4, 6]
    (tmp_path / "broken.gif").write_bytes(b"GIF89a broken")
    bad = [(dict(task="predict"), "needs input frames"),
           (dict(task="predict", frames=[]), "empty"),
           (dict(task="predict", frames=str(tmp_path / "broken.gif")), "not a readable video"),
           (dict(task="predict", frames=clip, mask=np.ones((3, 5, 5))), "mask has shape"),
           (dict(task="complete", frames=clip[:2]), "needs frame"),
           (dict(task="interpolate", frames=clip[:3], num_known=4), "keyframes"),
           (dict(task="predict", frames=clip, num_known=99), "num_known"),
           (dict(task="predict", frames=clip, num_known=8), "nothing to generate"),
           (dict(task="fly", frames=clip), "unknown task"),
           (dict(task="predict", frames=clip, scheduler="magic"), "unknown scheduler"),
           (dict(task="predict", frames=np.zeros((0, 4, 4, 3), np.uint8)), "shape")]
    for kwargs, why in bad:
        with pytest.raises(InputError, match=why):
            pipe(**{**run, **kwargs})


# ---- CLI, app, recipe, bench ----

def run_cli(*args):
    from cli_runner import run_genstudio
    return run_genstudio(*args, env={"GENSTUDIO_DEBUG": ""})


def test_cli_predicts_a_clip_and_gives_one_line_errors(tiny_model_dir, clip_gif, tmp_path, monkeypatch, capsys):
    out, preview = tmp_path / "out" / "future.mp4", tmp_path / "given.gif"
    r = run_cli("--device", "cpu", "video", "--task", "predict", "--input", clip_gif, "-o", out, "--num-known", 3,
                "--steps", 3, "--model", tiny_model_dir, "--preview", preview)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "3 given whole" in r.stderr and "vs input" in r.stderr
    assert read_video(out).shape == (T, S, S, 3) and read_video(preview).shape == (T, S, S, 3)
    for args, why in [(("--task", "predict"), "needs --input"),
                      (("--task", "predict", "--input", tmp_path / "none.gif"), "does not exist"),
                      (("--task", "generate", "-o", tmp_path / "x.png"), ".gif or .mp4")]:
        from genstudio.cli import main  # in-process: the same entry point, without a new interpreter
        monkeypatch.setattr(sys, "argv", ["genstudio", "video", *map(str, args), "--model", str(tiny_model_dir)])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # (other tasks may warn)
        assert exit_.value.code == 1 and len(errors) == 1 and why in errors[0], err
        assert err.rstrip().endswith(errors[0].rstrip()) and "Traceback" not in err, err
    r = run_cli("video", "--task", "warp", "--input", clip_gif, "--model", tiny_model_dir)
    assert r.returncode == 2 and "unknown task 'warp'" in r.stderr  # a bad option value: a usage error


def test_app_runs_a_task_and_builds_its_tab(tiny_model_dir, clip_gif):
    from apps.video import EXAMPLES, run_video
    examples = sorted(EXAMPLES.glob("*.gif"))
    assert len(examples) == 2 and all(p.stat().st_size < 100_000 for p in examples)
    assert read_video(examples[0]).shape == (16, 32, 32, 3)
    given, result, info, download = run_video(str(clip_gif), "interpolate", 3, 2, "ddim", 0, model=str(tiny_model_dir))
    assert read_video(result).shape == (T, 4 * S, 4 * S, 3) and read_video(given).shape[0] == T
    assert info.startswith(f"interpolate: {T} frames") and "2 model calls" in info and "PSNR" in info
    assert "{" not in info and download == result and download.endswith(".gif")  # the download: a GIF
    _, result, info, download = run_video(None, "generate", None, 2, "dpm", 1, model=str(tiny_model_dir))
    assert Path(result).exists() and Path(download).suffix == ".gif" and "100% of the clip generated" in info
    with pytest.raises(ValueError, match="Upload a clip"):
        run_video(None, "predict", model=str(tiny_model_dir))
    gr = pytest.importorskip("gradio")
    from apps.video import build_tab
    with gr.Blocks():
        build_tab()


def test_recipe_loss_and_eval_on_the_tiny_preset():
    from pipelines.video.train import recipe
    r = recipe({"preset": "tiny", "size": 16, "frames": 8, "eval_clips": 2, "eval_steps": 2, "output_dir": "unused"})
    batch = {"video": torch.stack([r.dataset[i]["video"] for i in range(2)])}
    loss, logs = r.loss_fn(r.model, batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 < logs["generated_share"] <= 1
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in r.model.parameters())
    metrics = r.eval_fn(r.model.eval())
    assert set(metrics) == {"predict_mse", "interpolate_mse", "copy_last_mse"} and all(v >= 0 for v in metrics.values())
    with pytest.raises(ValueError, match="unknown vdt option"):
        recipe({"preset": "tiny", "colour": "red"})
    with pytest.raises(ValueError, match="unknown mask mode"):
        recipe({"preset": "tiny", "mixture": {"rewind": 1.0}})


def test_recipe_init_from_continues_from_saved_weights(tmp_path):
    from pipelines.video.train import recipe
    opts = {"preset": "tiny", "size": 16, "frames": 8, "eval_clips": 1, "output_dir": "unused"}
    first = recipe(opts).model
    first.save_pretrained(tmp_path / "run" / "final")
    again = recipe({**opts, "init_from": str(tmp_path / "run")}).model
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="vdt init_from"):  # another preset's weights
        recipe({**opts, "preset": "S", "init_from": str(tmp_path / "run")})


def test_bench_quick_with_the_tiny_model(tiny_model_dir, fake_clips_root, monkeypatch, tmp_path):
    from genstudio.bench import Report
    from pipelines.video.bench import bench_video, copy_last_frame, linear_blend, linear_extrapolation
    ramp = np.stack([np.full((2, 2, 3), 10 * t, np.uint8) for t in range(6)])
    assert np.array_equal(linear_extrapolation(ramp, [0, 1]), ramp)  # exact on linear motion
    assert np.array_equal(linear_blend(ramp, [0, 5]), ramp)
    assert np.array_equal(copy_last_frame(ramp, [0, 1])[2:], np.repeat(ramp[1:2], 4, 0))
    monkeypatch.setenv("GENSTUDIO_DATA", str(fake_clips_root))
    report = Report("video", tmp_path / "out")
    bench_video(report, quick=True, model=str(tiny_model_dir), device="cpu")
    datasets = {r["dataset"] for r in report.rows}
    assert datasets == {f"{d}/{t}" for d in ("balls", "digits", "opencv-clips") for t in ("predict", "interpolate")}
    ours = [r for r in report.rows if r["method"] == "ours-dpm-2"]
    assert len(ours) == 6 and all(r["nfe"] == 2 and r["n"] >= 1 and 0 <= r["ssim"] <= 1 for r in ours)
    assert any("ours = VDT" in n for n in report.notes)
    _, md = report.write()
    assert "| balls/predict | copy-last-frame |" in md.read_text()
    empty = Report("video", tmp_path / "out2")
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "nothing"))
    bench_video(empty, quick=True, model=str(tmp_path / "no-such-model"))
    assert any("ours skipped" in n for n in empty.notes) and any("not built" in n for n in empty.notes)
    assert {r["method"] for r in empty.rows} == {"copy-last-frame", "linear-extrapolation", "linear-blend"}


# ---- SIMS on VDT (genstudio/sims.py) ----

def test_sims_auxiliary_for_a_vdt_checkpoint(tmp_path, tiny_model_dir):
    from genstudio.sims import train_auxiliary, write_sims_checkpoint
    from pipelines.video.pipeline import VDTPipeline
    pipe = VDTPipeline.from_pretrained(str(tiny_model_dir), device="cpu", precision="fp32")
    aux, record = train_auxiliary(pipe, synthetic_size=2, steps=2, num_inference_steps=2, batch_size=2, lr=1e-3,
                                  progress=False)
    assert any(not torch.equal(p, q) for p, q in zip(aux.parameters(), pipe.transformer.parameters()))
    out = write_sims_checkpoint(tiny_model_dir, aux, tmp_path / "vdt-sims", record, guidance=0.5)
    sims = VDTPipeline.from_pretrained(str(out), device="cpu", precision="fp32")
    assert sims.negative_transformer is not None and sims.sims_guidance == 0.5
    plain = sims("generate", num_inference_steps=2, sims_guidance=0.0, progress=False)
    guided = sims("generate", num_inference_steps=2, progress=False)  # the checkpoint's w = 0.5
    assert guided.nfe == 2 * plain.nfe and not np.array_equal(plain.frames, guided.frames)
    with pytest.raises(InputError, match="SIMS checkpoint"):
        pipe("generate", num_inference_steps=2, sims_guidance=1.0, progress=False)
