"""Every CLI command x every relevant bad input (issue #27), on a corpus of small bad files made here.

Exit codes (README "Limits and safety"): 1 = a bad input (unreadable, degenerate, over an input
budget) or a run that stopped; 2 = a usage error (an option out of its range, a value the model
cannot honour, work over a default budget without --no-limit). Either way: one line that names
the input or the option, no traceback, and nothing left in the output folder. Almost every case
fails before a model loads; the few that need one use the small shipped checkpoints.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_runner import run_genstudio

INPUT, USAGE = 1, 2
CUBE = ("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nv 1 0 1\nv 1 1 1\nv 0 1 1\n"
        "f 1 2 3\nf 1 3 4\nf 5 6 7\nf 5 7 8\nf 1 2 6\nf 1 6 5\nf 2 3 7\nf 2 7 6\nf 3 4 8\nf 3 8 7\nf 4 1 5\nf 4 5 8\n")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _gif(path: Path, count: int, size: int = 16) -> Path:
    frames = [Image.new("RGB", (size, size), (i % 256, (i // 256) * 40, 0)) for i in range(count)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Small bad (and a few good) files, written once per module; nothing here is committed."""
    d = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    good = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8))
    good.save(d / "good.png")
    (d / "empty.png").write_bytes(b"")
    (d / "truncated.png").write_bytes(_png(good)[:200])
    (d / "text.png").write_text("hello, I am a text file with a .png name\n")
    header = bytearray(_png(Image.new("RGB", (8, 8))))  # IHDR patched to claim 20,000 x 20,000
    ihdr = bytearray(header[12:29])
    ihdr[4:12] = struct.pack(">II", 20_000, 20_000)
    header[12:29], header[29:33] = ihdr, struct.pack(">I", zlib.crc32(bytes(ihdr)))
    (d / "huge.png").write_bytes(bytes(header))
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(d / "transparent.png")
    Image.new("RGB", (1, 1), "red").save(d / "one.png")
    Image.new("RGB", (2100, 2000), "gray").save(d / "large.png")  # 4.2 MP: over the tokenizer's work budget
    (d / "xxe.svg").write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                               '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8">'
                               '<script>alert(1)</script><text>&x;</text></svg>')
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 16, 16))
    mask.save(d / "mask.png")
    Image.new("L", (17, 9), 255).save(d / "mask_wrong.png")
    _gif(d / "clip.gif", 16)
    _gif(d / "long.gif", 40)
    _gif(d / "too_many.gif", 1001, size=4)  # over the default budget of 1,000 frames
    _gif(d / "tiny.gif", 4, size=1)
    (d / "empty.gif").write_bytes(b"")
    (d / "text.gif").write_text("not a gif")
    (d / "truncated.gif").write_bytes((d / "clip.gif").read_bytes()[:60])
    huge = bytearray((d / "clip.gif").read_bytes())
    huge[6:10] = struct.pack("<HH", 30_000, 30_000)  # the logical screen claims 900 megapixels
    (d / "huge.gif").write_bytes(bytes(huge))
    (d / "cube.obj").write_text(CUBE)
    (d / "empty.obj").write_bytes(b"")
    (d / "text.obj").write_text("this is not an obj\n")
    (d / "nan.obj").write_text(CUBE.replace("v 1 1 1", "v nan 1 1"))
    (d / "inf.obj").write_text(CUBE.replace("v 1 1 1", "v inf 1 1"))
    (d / "one_face.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    np.save(d / "points.npy", rng.random((200, 3)))
    np.save(d / "few.npy", rng.random((10, 3)))
    np.save(d / "empty_array.npy", np.zeros((0, 3)))
    np.save(d / "int8.npy", rng.integers(-100, 100, (200, 3)).astype(np.int8))
    np.save(d / "bool.npy", rng.random((200, 3)) > 0.5)
    np.save(d / "complex.npy", rng.random((200, 3)) + 1j)
    np.save(d / "string.npy", np.array([["a", "b", "c"]] * 200))
    np.save(d / "pickle.npy", np.array([{"a": 1}] * 200, dtype=object), allow_pickle=True)
    np.save(d / "nan.npy", np.full((200, 3), np.nan))
    np.save(d / "huge_coords.npy", np.where(rng.random((200, 3)) > 0.5, 1e308, -1e308))
    (d / "truncated.npy").write_bytes((d / "points.npy").read_bytes()[:70])
    return d


def check(r, code: int, names: str | tuple[str, ...], out: Path) -> None:
    """Exit `code`; no traceback; exactly one error line, naming each of `names`; `out` holds no file."""
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text[-3000:]
    assert r.returncode == code, (r.returncode, text[-2000:])
    lines = [line for line in r.stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.lstrip("│ ").startswith(("error: ", "Error: "))]
    assert len(errors) == 1, lines
    if code == INPUT:  # nothing but the error line
        assert lines == errors, lines
    for name in (names,) if isinstance(names, str) else names:
        assert name in errors[0], (name, errors[0])
    assert "root:" not in text  # /etc/passwd never reaches a message
    left = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert not left, left


BAD_IMAGES = [("empty.png", "not a readable image"), ("truncated.png", "not a readable image"),
              ("text.png", "not a readable image"), ("huge.png", "megapixels"),
              ("transparent.png", "fully transparent"), ("one.png", "too small"),
              ("xxe.svg", "not a readable image")]


@pytest.mark.parametrize("command", ["svg", "tokenizer", "inpaint-image", "inpaint-mask", "video-animate",
                                     "video-mask", "face", "multiview"])
def test_every_image_reader_refuses_every_bad_image(corpus, tmp_path, command):
    out = tmp_path / "out"
    for name, why in BAD_IMAGES:
        bad = corpus / name
        args = {"svg": ["svg", "-i", bad, "-o", out / "x.svg"],
                "tokenizer": ["tokenizer", "reconstruct", "-i", bad, "-o", out / "x.png"],
                "inpaint-image": ["inpaint", "-i", bad, "-m", corpus / "mask.png", "-o", out],
                "inpaint-mask": ["inpaint", "-i", corpus / "good.png", "-m", bad, "-o", out],
                "video-animate": ["video", "-t", "animate", "-i", bad, "-o", out / "x.gif"],
                "video-mask": ["video", "-t", "complete", "-i", corpus / "clip.gif", "--mask", bad,
                               "-o", out / "x.gif"],
                "face": ["face", "--image", bad, "-o", out],
                "multiview": ["multiview", "--image", bad, "-o", out]}[command]
        if command == "video-animate" and name.endswith(".svg"):
            why = "not a video"
        if command == "inpaint-mask" and name == "transparent.png":
            why = "no hole"  # a transparent mask is read by its alpha: nothing painted, nothing to fill
        r = run_genstudio(*args)
        check(r, INPUT, (str(bad), why), out)


@pytest.mark.parametrize("name, why", [
    ("empty.gif", "not a readable video"), ("text.gif", "not a readable video"),
    ("truncated.gif", "not a readable video"), ("huge.gif", "megapixels"),
    ("too_many.gif", "1001 frames; the limit is 1000"), ("tiny.gif", "too small")])
def test_video_refuses_bad_clips(corpus, tmp_path, name, why):
    out = tmp_path / "out"
    check(run_genstudio("video", "-i", corpus / name, "-o", out / "x.gif"), INPUT, (str(corpus / name), why), out)


def test_frame_budget_is_set_by_environment(corpus, tmp_path):
    out = tmp_path / "out"
    r = run_genstudio("video", "-i", corpus / "long.gif", "-o", out / "x.gif", env={"GENSTUDIO_MAX_FRAMES": "20"})
    check(r, INPUT, ("long.gif", "40 frames", "GENSTUDIO_MAX_FRAMES"), out)


def test_masks_of_the_wrong_size_are_refused(corpus, tmp_path):
    out = tmp_path / "out"
    wrong = corpus / "mask_wrong.png"
    r = run_genstudio("inpaint", "-i", corpus / "good.png", "-m", wrong, "-o", out)
    check(r, INPUT, (str(wrong), "17x9", "32x32"), out)
    r = run_genstudio("video", "-t", "complete", "-i", corpus / "clip.gif", "--mask", wrong, "-o", out / "x.gif")
    check(r, INPUT, (str(wrong), "17x9", "16x16"), out)


@pytest.mark.parametrize("name, why", [
    ("empty.obj", "empty"), ("text.obj", "empty"), ("nan.obj", "NaN or infinite"), ("inf.obj", "NaN or infinite"),
    ("one_face.obj", "1 face; at least 4"), ("few.npy", "10 points; at least 16"),
    ("empty_array.npy", "0 points"), ("int8.npy", "int8"), ("bool.npy", "bool"), ("complex.npy", "complex128"),
    ("string.npy", "<U1"), ("pickle.npy", "never unpickles"), ("nan.npy", "NaN or infinite"),
    ("huge_coords.npy", "coordinates up to 1e+308"), ("truncated.npy", "not a readable .npy"),
    ("good.png", "unknown file type")])
def test_mesh_refuses_bad_meshes_and_point_clouds(corpus, tmp_path, name, why):
    out = tmp_path / "out"
    check(run_genstudio("mesh", "-i", corpus / name, "-o", out / "x.obj"), INPUT, (str(corpus / name), why), out)


def test_mesh_budget_on_points_is_set_by_environment(corpus, tmp_path):
    out = tmp_path / "out"
    r = run_genstudio("mesh", "-i", corpus / "points.npy", "-o", out / "x.obj",
                      env={"GENSTUDIO_MAX_MESH_ELEMENTS": "100"})
    check(r, INPUT, ("points.npy", "200 points", "GENSTUDIO_MAX_MESH_ELEMENTS"), out)
    r = run_genstudio("mesh", "-i", corpus / "cube.obj", "-o", out / "x.obj", env={"GENSTUDIO_MAX_INPUT_BYTES": "10"})
    check(r, INPUT, ("cube.obj", "GENSTUDIO_MAX_INPUT_BYTES"), out)


def _absurd(corpus: Path, out: Path) -> list[tuple[list, str]]:
    img, mask, clip = corpus / "good.png", corpus / "mask.png", corpus / "clip.gif"
    svg = ["svg", "-i", img, "-o", out / "x.svg"]
    inpaint = ["inpaint", "-i", img, "-m", mask, "-o", out]
    video = ["video", "-i", clip, "-o", out / "x.gif"]
    mesh = ["mesh", "-i", corpus / "points.npy", "-o", out / "x.obj"]
    generate = ["generate", "-o", out / "grid.png"]
    return [
        (svg + ["-n", "0"], "--candidates"), (svg + ["-n", "-1"], "--candidates"),
        (svg + ["--max-tokens", "100000000"], "--max-tokens"), (svg + ["--refine-steps", "0"], "--refine-steps"),
        (svg + ["--temperature", "-1"], "--temperature"), (svg + ["--refine-seconds", "1e9"], "--refine-seconds"),
        (svg + ["--max-seconds", "0"], "--max-seconds"), (svg + ["--seed", "-1"], "--seed"),
        (svg + ["--seed", "2e70"], "--seed"),
        (svg + ["--refine-steps", "5000"], ("--no-limit", "optimiser steps")),  # refinement: 2 x 5000 steps
        (inpaint + ["-n", "-1"], "--num-samples"), (inpaint + ["-n", "0"], "--num-samples"),
        (inpaint + ["--resolution", "100000"], "--resolution"), (inpaint + ["--top-k", "0"], "--top-k"),
        (inpaint + ["--resolution", "1024"], "--no-limit"),  # the work budget: 4 samples x 1024^2
        (video + ["--steps", "0"], "--steps"), (video + ["--steps", "100000"], "--steps"),
        (video + ["--task", "bogus"], "--task"), (video + ["--fps", "0"], "--fps"),
        (video + ["--num-known", "0"], "--num-known"),
        (mesh + ["--max-faces", "1000000000"], "--max-faces"), (mesh + ["--max-faces", "0"], "--max-faces"),
        (mesh + ["--temperature", "-1"], "--temperature"), (mesh + ["--candidates", "0"], "--candidates"),
        (mesh + ["--candidates", "17"], "--candidates"),
        (generate + ["--steps", "0"], "--steps"), (generate + ["-n", "-1"], "--num"),
        (generate + ["-n", "100000"], "--num"), (generate + ["--guidance", "0"], "--guidance"),
        (generate + ["--class", "A", "-n", "1000"], "--no-limit"),  # the work budget: images x steps
        (["tokenizer", "reconstruct", "-i", corpus / "large.png", "-o", out / "x.png"], "--no-limit"),
    ]


def test_absurd_options_are_usage_errors_before_any_model_loads(corpus, tmp_path):
    out = tmp_path / "out"
    for args, option in _absurd(corpus, out):
        r = run_genstudio(*args)
        check(r, USAGE, option, out)


def test_work_over_a_budget_the_checkpoint_sets_is_refused_before_sampling(corpus, tmp_path, monkeypatch):
    """svg (candidates x the model's context), video (frames x pixels x steps) and mesh (tokens for
    --max-faces) know their work once the (small, shipped) checkpoint has loaded, before any sampling."""
    out = tmp_path / "out"
    r = run_genstudio("svg", "-i", corpus / "good.png", "-o", out / "x.svg", "-n", "64", "--no-refine")
    check(r, USAGE, ("64 candidate(s)", "tokens", "--no-limit"), out)
    r = run_genstudio("video", "-i", corpus / "clip.gif", "-o", out / "x.gif", "--steps", "1000")
    check(r, USAGE, ("16 frames of 32x32 at 1000 steps", "--no-limit"), out)
    import pipelines.mesh.cli as mesh_cli
    monkeypatch.setattr(mesh_cli, "WORK_BUDGET", 100)  # the shipped checkpoint's context fits the real one
    r = run_genstudio("mesh", "-i", corpus / "points.npy", "-o", out / "x.obj", "--max-faces", "50")
    check(r, USAGE, ("up to 50 faces", "--no-limit"), out)


def test_default_settings_and_the_readme_examples_fit_the_work_budgets():
    from genstudio.limits import UsageError
    from pipelines.mesh.cli import _check_faces
    from pipelines.mesh.pipeline import MeshAnythingPipeline
    from pipelines.svg.cli import _check_refine_work, _check_token_work
    from pipelines.svg.pipeline import StarVectorPipeline
    from pipelines.video.cli import _check_work
    from pipelines.video.pipeline import VDTPipeline
    svg = StarVectorPipeline.from_pretrained("starvector-icons-S", device="cpu")
    for n in (1, 8):  # greedy (the default) and the README's / `make demo`'s best-of-8
        _check_token_work(svg, n, None, no_limit=False)
        _check_refine_work(n, True, 60, 1, True, no_limit=False)
    with pytest.raises(UsageError, match="--no-limit"):
        _check_token_work(svg, 64, None, no_limit=False)
    _check_token_work(svg, 64, None, no_limit=True)
    video = VDTPipeline.from_pretrained("vdt-physics-S", device="cpu")
    _check_work(video, 25, None, no_limit=False)
    _check_work(video, 500, None, no_limit=False)
    _check_work(video, 1000, None, no_limit=True)
    mesh = MeshAnythingPipeline.from_pretrained("meshanything-urdf-XS", device="cpu")
    _check_faces(mesh, None)
    _check_faces(mesh, mesh.model.face_budget())  # the shipped checkpoint's whole context fits
    _check_faces(mesh, None, candidates=mesh.model.config.default_candidates)
    with pytest.raises(UsageError, match="--no-limit"):  # 16 draws of a whole context
        _check_faces(mesh, None, candidates=16)


def test_more_faces_than_the_checkpoint_holds_is_a_usage_error(corpus, tmp_path):
    out = tmp_path / "out"  # the one case that needs the (small, shipped) model: its context sets the bound
    r = run_genstudio("mesh", "-i", corpus / "points.npy", "-o", out / "x.obj", "--max-faces", "50000")
    check(r, USAGE, ("--max-faces 50000", "at most"), out)


def test_other_bad_outputs_and_options_are_input_errors(corpus, tmp_path):
    out = tmp_path / "out"
    r = run_genstudio("generate", "-o", out / "grid.jpg")
    check(r, INPUT, ("grid.jpg", ".png"), out)
    r = run_genstudio("svg", "-i", corpus / "missing.png", "-o", out / "x.svg")
    check(r, INPUT, ("missing.png", "does not exist"), out)


def test_max_seconds_stops_cleanly_and_writes_nothing(corpus, tmp_path):
    out = tmp_path / "out"
    r = run_genstudio("video", "-i", corpus / "clip.gif", "-o", out / "x.gif", "--steps", "1000", "--max-seconds", "1",
                      "--no-limit")
    assert r.returncode == INPUT and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("--max-seconds limit (1 s); nothing was written")
    assert not out.exists() or not any(out.iterdir())
    from genstudio.limits import time_limited
    assert not time_limited()  # the deadline ended with the command


def _stopped(r, out: Path, seconds: int = 1) -> None:
    assert r.returncode == INPUT and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].endswith(f"--max-seconds limit ({seconds} s); nothing was written")
    assert not out.exists() or not any(out.iterdir())


def test_max_seconds_stops_sims_compress_and_reconstruct_writing_nothing(corpus, tmp_path, monkeypatch):
    out = tmp_path / "out"
    r = run_genstudio("sims", "--base", "vdt-physics-S", "--synthetic-size", "4", "--sampling-steps", "2",
                      "--steps", "1000000", "--batch-size", "2", "--max-seconds", "1", "-o", out / "sims",
                      "--device", "cpu")
    _stopped(r, out)  # fine-tuning (genstudio.train's loop) checks the deadline each step
    r = run_genstudio("compress", "vdt-physics-S", "--samples", "2", "--steps", "2", "--iters", "1000000",
                      "--max-seconds", "1", "-o", out / "vq2", "--device", "cpu")
    _stopped(r, out)  # calibration checks it each optimisation step (and k-means each iteration)
    import time
    from genstudio.tokenizer import VQTokenizer
    forward = VQTokenizer.forward

    def slow(self, x):
        time.sleep(1.2)
        return forward(self, x)
    monkeypatch.setattr(VQTokenizer, "forward", slow)
    r = run_genstudio("tokenizer", "reconstruct", "-i", corpus / "good.png", "-o", out / "x.png", "--max-seconds", "1")
    _stopped(r, out)  # checked between tiles and before the output is written


def test_train_max_seconds_is_the_trainers_clean_stop(tmp_path, monkeypatch):
    """`train --max-seconds` maps onto the trainer's max_minutes: it stops after the step in
    progress and saves a resumable checkpoint and the final weights, whole (exit 0)."""
    import json
    import genstudio.train
    from toy_recipe import toy_recipe
    seen = {}

    def recipe(cfg):
        seen.update(cfg)
        return toy_recipe(cfg.pop("output_dir"), steps=10**7, ema_decay=None, mixed_precision="no", **cfg)
    monkeypatch.setattr(genstudio.train, "load_recipe", lambda name: recipe)
    r = run_genstudio("train", "toy", "--max-seconds", "1", "--output-dir", tmp_path / "run", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert seen["max_minutes"] == pytest.approx(1 / 60)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0 < summary["steps"] < 10**7 and (tmp_path / "run" / "final").is_dir()
    assert (tmp_path / "run" / f"checkpoint-{summary['steps']}").is_dir()
    assert "time limit (1 s" in r.stdout + r.stderr


def test_the_core_loops_check_the_deadline():
    """Token generation (svg, mesh) and diffusion sampling (video, generate) stop past --max-seconds."""
    import time
    import torch
    from genstudio.diffusion import make_scheduler, sample
    from genstudio.limits import TimeLimitExceeded, time_limit
    from genstudio.lm import PrefixLM, build_causal_lm
    torch.manual_seed(0)
    lm = PrefixLM(build_causal_lm("gpt2", 40, "tiny")).eval()
    prefix = torch.randn(1, 2, lm.lm.config.hidden_size)
    assert lm.generate(prefix, max_new_tokens=4, stop_token_ids=[]).shape[1] == 4  # no deadline: no check
    with time_limit(0.001):
        time.sleep(0.01)
        with pytest.raises(TimeLimitExceeded, match="--max-seconds"):
            lm.generate(prefix, max_new_tokens=4, stop_token_ids=[])
        with pytest.raises(TimeLimitExceeded):
            sample(lambda x, t: torch.zeros_like(x), (1, 1, 4, 4), make_scheduler("ddim"), 3, progress=False)


def test_the_deadline_stops_a_folder_batch_keeping_finished_outputs(tmp_path):
    import time
    from genstudio.cli_common import run_batch
    from genstudio.limits import TimeLimitExceeded, check_time, time_limit

    class Done:
        def __init__(self, text):
            self.text = text

        def save(self, path):
            Path(path).write_text(self.text)

    def slow(source: Path):
        if source.name == "b":
            time.sleep(0.2)
            check_time()
        return Done(source.name)

    jobs = [(tmp_path / n, tmp_path / f"{n}.out") for n in "abc"]
    with time_limit(0.1), pytest.raises(TimeLimitExceeded, match="1 done, 0 skipped .* 2 not finished"):
        run_batch(jobs, slow, "test", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.out"]
    check_time()  # the deadline ended with its block


def test_svg_reading_never_expands_entities_or_keeps_scripts():
    from genstudio.formats.svg import SVGError, normalize_svg
    xxe = ('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><text>&x;</text></svg>')
    with pytest.raises(SVGError, match="entities"):
        normalize_svg(xxe)
    script = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 8 8"><script>alert(1)</script>'
              '<rect width="4" height="4" onload="alert(2)"/></svg>')
    clean = normalize_svg(script)
    assert "script" not in clean and "alert" not in clean and "onload" not in clean and "<path" in clean


# ---------------------------------------------------------------- kill -9 in a folder batch

def _svgs(folder: Path) -> dict[str, bytes]:
    """The visible outputs, each checked to be a whole SVG document."""
    import xml.etree.ElementTree as ET
    found = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue  # an atomic write's temp file (a kill can land mid-write): hidden, never an output
        assert p.suffix == ".svg", p
        assert ET.fromstring(p.read_bytes()).tag.endswith("svg"), p
        found[p.name] = p.read_bytes()
    return found


@pytest.mark.slow
def test_kill_9_mid_batch_keeps_finished_outputs_and_a_rerun_does_only_the_rest(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from PIL import ImageDraw
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(4):
        im = Image.new("RGB", (64, 64), "white")
        draw = ImageDraw.Draw(im)
        draw.ellipse((8 + 4 * i, 8, 48, 48 + i), fill=(200, 40 * i, 30))
        draw.rectangle((30, 30, 60, 60 - 5 * i), fill=(20, 90, 200))
        im.save(src / f"shape{i}.png")
    fast = ["--max-tokens", "32", "--refine-steps", "10", "--refine-seconds", "0.5"]  # ~1 s an image
    args = ["svg", "-i", str(src), "-o", str(out), *fast]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "genstudio.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out.is_dir() and any(p.suffix == ".svg" and not p.name.startswith(".") for p in out.iterdir())):
            assert proc.poll() is None, f"the batch ended before its first output: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no output within 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = _svgs(out)
    assert 1 <= len(finished) < 4, f"killed too late to test a resume: {sorted(finished)}"
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}

    r = run_genstudio(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    k = len(finished)
    assert f"{4 - k} done, {k} skipped" in r.stderr, r.stderr[-1000:]
    after = _svgs(out)
    assert sorted(after) == [f"shape{i}.svg" for i in range(4)]  # every image once: no duplicates
    for name, data in finished.items():  # the finished ones were skipped, not redone
        assert after[name] == data and (out / name).stat().st_mtime_ns == stamps[name]


# ---------------------------------------------------------------- text2svg and face (the newest commands)

@pytest.fixture(scope="module")
def tiny_svgfusion(tmp_path_factory) -> Path:
    """A tiny random SVGFusion checkpoint (tests/test_text2svg.py's), so the few cases that load a model stay fast."""
    from test_text2svg import build_tiny_pipeline
    return build_tiny_pipeline(tmp_path_factory.mktemp("svgfusion") / "svgfusion-tiny")


@pytest.fixture(scope="module")
def tiny_vec2face(tmp_path_factory) -> Path:
    """A tiny random Vec2Face checkpoint in the export layout (tests/test_face_pipeline.py's)."""
    from test_face_pipeline import build_tiny_checkpoint
    return build_tiny_checkpoint(tmp_path_factory.mktemp("vec2face-tiny"))


def test_text2svg_refuses_bad_prompts_and_prompt_files_before_any_model_loads(corpus, tmp_path):
    out, missing_model = tmp_path / "out", ["-m", tmp_path / "no-such-model"]  # a load would fail otherwise
    files = tmp_path / "files"
    files.mkdir()
    (files / "empty.txt").write_bytes(b"")
    (files / "comments.txt").write_text("# only a comment\n\n   \n")
    (files / "garbage.txt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (files / "nul.txt").write_bytes(b"a rocket\x00\x00\x00\x01\x02 binary\n")
    (files / "large.txt").write_bytes(b"a rocket\n" * 120_000)  # 1.08 MB: over the 1 MB limit
    (files / "long_line.txt").write_text("a house\n" + "x" * 2000 + "\n")
    cases = [
        ([""], ("prompt", "empty")), (["   "], ("prompt", "empty")),
        (["x" * 5000], ("5000 characters", "500")),
        ([], "give one prompt or --prompts"), (["x", "--prompts", files / "comments.txt"], "not both"),
        (["--prompts", tmp_path / "missing.txt"], ("missing.txt", "does not exist")),
        (["--prompts", files], (str(files), "not a file")),
        (["--prompts", files / "empty.txt"], ("empty.txt", "no prompts")),
        (["--prompts", files / "comments.txt"], ("comments.txt", "no prompts")),
        (["--prompts", files / "garbage.txt"], ("garbage.txt", "not UTF-8 text")),
        (["--prompts", files / "nul.txt"], ("nul.txt", "binary")),
        (["--prompts", corpus / "good.png"], ("good.png", "not UTF-8 text")),
        (["--prompts", files / "large.txt"], ("large.txt", "1000 kB")),
        (["--prompts", files / "long_line.txt"], ("long_line.txt", "line 2", "2000 characters")),
    ]
    for args, names in cases:
        r = run_genstudio("text2svg", *args, "-o", out, *missing_model)
        check(r, INPUT, names, out)


def test_text2svg_absurd_options_and_budgets_are_usage_errors_before_any_model_loads(tmp_path):
    out = tmp_path / "out"
    base = ["text2svg", "a rocket", "-o", out, "-m", tmp_path / "no-such-model"]
    many = tmp_path / "many.txt"
    many.write_text("".join(f"icon {i}\n" for i in range(300)))  # 300 prompts x 50 steps: over the budget
    for args, option in [
        (["-s", "0"], "--steps"), (["-s", "100000"], "--steps"), (["-s", "-5"], "--steps"),
        (["-g", "0"], "--guidance"), (["-g", "-1"], "--guidance"), (["-g", "1e9"], "--guidance"),
        (["-g", "nan"], "--guidance"), (["-g", "inf"], "--guidance"),
        (["-n", "0"], "--num"), (["-n", "-1"], "--num"), (["-n", "100000"], "--num"),
        (["--scheduler", "bogus"], "--scheduler"), (["--max-seconds", "0"], "--max-seconds"),
        (["--seed", "-1"], "--seed"),
        (["-n", "256", "-s", "1000"], ("256 sample(s)", "--no-limit")),
    ]:
        check(run_genstudio(*base, *args), USAGE, option, out)
    r = run_genstudio("text2svg", "--prompts", many, "-o", out, "-m", tmp_path / "no-such-model", "-n", "1")
    check(r, USAGE, ("300 prompt(s)", "--no-limit"), out)


def test_text2svg_bad_outputs_are_refused_before_any_model_loads(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    plain = out / "plain"  # a regular file where a folder should be (removed before the checks below)
    plain.write_text("x")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a rocket\n")
    cases = [(["a rocket", "-o", plain / "x.svg"], (str(plain), "not a folder")),
             (["a rocket", "-o", plain / "sub"], (str(plain), "not a folder")),
             (["a rocket", "-o", plain], (str(plain), "is a file")),
             (["a rocket", "-o", out / "x.png"], ("x.png", "should be a folder")),
             (["--prompts", prompts, "-o", out / "x.svg"], ("x.svg", "should be a folder"))]
    for args, names in cases:
        r = run_genstudio("text2svg", *args, "-m", tmp_path / "no-such-model")
        plain.unlink()
        check(r, INPUT, names, out)
        plain.write_text("x")


def test_text2svg_max_seconds_stops_cleanly_and_writes_nothing(tiny_svgfusion, tmp_path, monkeypatch):
    import time
    from genstudio.dit import DiT
    forward = DiT.forward

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(DiT, "forward", slow)
    out = tmp_path / "out"
    for target in (out / "x.svg", out):
        r = run_genstudio("text2svg", "a rocket", "-m", tiny_svgfusion, "-n", "1", "-s", "20", "--max-seconds", "1",
                          "-o", target, "--device", "cpu")
        _stopped(r, out)


def test_face_refuses_missing_double_and_absurd_inputs_before_any_model_loads(corpus, tmp_path):
    out = tmp_path / "out"
    face = ["face", "-o", out, "-m", tmp_path / "no-such-model"]
    img = corpus / "good.png"
    check(run_genstudio(*face), INPUT, ("--image", "--new-identities"), out)
    check(run_genstudio(*face, "--image", img, "--new-identities", "2"), INPUT, ("--image", "not both"), out)
    check(run_genstudio(*face, "--image", corpus / "missing.png"), INPUT, ("missing.png", "does not exist"), out)
    check(run_genstudio(*face, "--image", corpus), INPUT, (str(corpus), "not a file"), out)
    for args, option in [
        (["--new-identities", "0"], "--new-identities"), (["--new-identities", "-3"], "--new-identities"),
        (["--new-identities", "2", "--per-identity", "100000"], "--per-identity"),
        (["--new-identities", "2", "--per-identity", "0"], "--per-identity"),
        (["--image", img, "--std", "-1"], "--std"), (["--image", img, "--std", "nan"], "--std"),
        (["--image", img, "--std", "1e9"], "--std"),
        (["--image", img, "--pose", "0.2", "--max-iters", "0"], "--max-iters"),
        (["--image", img, "--pose", "0.2", "--max-iters", "100000"], "--max-iters"),
        (["--image", img, "--pose", "nan"], "--pose"), (["--image", img, "--pose", "5"], "--pose"),
        (["--image", img, "--expression", "-1"], "--expression"),
        (["--new-identities", "2", "--max-similarity", "0"], "--max-similarity"),
        (["--new-identities", "2", "--max-similarity", "nan"], "--max-similarity"),
        (["--image", img, "--min-similarity", "nan", "--pose", "0.1"], "--min-similarity"),
        (["--image", img, "-n", "0"], "--num"), (["--image", img, "-n", "100000"], "--num"),
        (["--image", img, "--max-seconds", "0"], "--max-seconds"), (["--image", img, "--seed", "-1"], "--seed"),
        (["--new-identities", "1000", "--per-identity", "20"], ("20000 face(s)", "--no-limit")),  # the work budget
        (["--new-identities", "1000000", "--per-identity", "256"], ("--no-limit",)),
    ]:
        check(run_genstudio(*face, *args), USAGE, option, out)


def test_face_bad_outputs_are_refused_before_any_model_loads(corpus, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    plain = out / "plain"
    plain.write_text("x")
    img = corpus / "good.png"
    face = ["face", "-m", tmp_path / "no-such-model"]
    cases = [(["--image", img, "-o", plain / "x.png"], (str(plain), "not a folder")),
             (["--image", img, "-o", plain / "sub"], (str(plain), "not a folder")),
             (["--image", img, "-o", plain], (str(plain), "is a file")),
             (["--image", img, "-o", out / "x.jpg"], ("x.jpg", ".png")),
             (["--new-identities", "2", "-o", plain / "ds"], (str(plain), "not a folder")),
             (["--new-identities", "2", "-o", plain], (str(plain), "is a file")),
             (["--new-identities", "2", "-o", out / "ds.png"], ("ds.png", "folder per identity"))]
    for args, names in cases:
        r = run_genstudio(*face, *args)
        plain.unlink()
        check(r, INPUT, names, out)
        plain.write_text("x")


def test_face_max_seconds_stops_cleanly_and_writes_nothing(corpus, tiny_vec2face, tmp_path, monkeypatch):
    import time
    from pipelines.face.vec2face import Vec2Face
    forward = Vec2Face.forward

    def slow(self, *args, **kwargs):
        time.sleep(1.1)
        return forward(self, *args, **kwargs)
    monkeypatch.setattr(Vec2Face, "forward", slow)
    out = tmp_path / "out"
    common = ["--image", corpus / "good.png", "-m", tiny_vec2face, "--device", "cpu", "--max-seconds", "1"]
    for args in (["-n", "2", "-o", out], ["-n", "2", "-o", out / "grid.png"],
                 ["--pose", "0.3", "--max-iters", "50", "-o", out / "edit.png"]):
        r = run_genstudio("face", *common, *args)
        _stopped(r, out)
