"""Vec2FacePipeline, AttrOP and `genstudio face` on tiny random models saved in the export layout
(Vec2Face at the folder's top, its recogniser in recognizer/): shapes, seeds, bounds, the
similarity constraint of new identities, bounded attribute edits, whole saves, the CLI and resuming."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cli_runner import run_genstudio
from genstudio.render import InputError


# ---------------------------------------------------------------- fixtures

def build_tiny_checkpoint(folder: Path) -> Path:
    """A tiny random Vec2Face checkpoint in the export layout (Vec2Face at the top, recognizer/ inside)."""
    from genstudio.export import save_safetensors
    from pipelines.face.recognizer import RECOGNIZER_CONFIGS, FaceRecognizer
    from pipelines.face.vec2face import VEC2FACE_CONFIGS, Vec2Face
    torch.manual_seed(0)
    recognizer = FaceRecognizer(**RECOGNIZER_CONFIGS["tiny"]).eval()
    model = Vec2Face(**{**VEC2FACE_CONFIGS["tiny"], "vector_dim": recognizer.config.embed_dim, "image_size": 64})
    save_safetensors(model, folder)
    save_safetensors(recognizer, folder / "recognizer")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("vec2face-tiny"))


@pytest.fixture(scope="module")
def pipe(checkpoint):
    from pipelines.face.pipeline import Vec2FacePipeline
    p = Vec2FacePipeline.from_pretrained(checkpoint, device="cpu", precision="fp32")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def face_png(pipe, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("face") / "face.png"
    pipe.from_vector(torch.randn(pipe.vector_dim, generator=torch.Generator().manual_seed(3)), n=1).images[0].save(path)
    return path


@pytest.fixture(scope="module")
def genstudio_face():
    """`genstudio face` before its entry point is installed: registered on the CLI for this module."""
    from genstudio import cli
    from pipelines.face.cli import face
    if any(c.name == "face" for c in cli.app.registered_commands):
        yield
        return
    cli.app.command("face")(face)
    info = cli.app.registered_commands[-1]
    yield
    cli.app.registered_commands.remove(info)


def _arrays(images):
    return [np.asarray(im) for im in images]


# ---------------------------------------------------------------- pipeline

def test_loads_the_export_layout_and_refuses_a_folder_without_its_recognizer(pipe, checkpoint, tmp_path):
    from genstudio.pipeline import CheckpointMismatch
    from pipelines.face.pipeline import Vec2FacePipeline
    assert pipe.task == "face" and pipe.precision.name == "fp32" and pipe.name == str(checkpoint)
    assert pipe.vector_dim == 32 and pipe.image_size == 64
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in checkpoint.iterdir():
        if f.is_file():
            (bare / f.name).write_bytes(f.read_bytes())
    with pytest.raises(CheckpointMismatch, match="no recognizer/"):
        Vec2FacePipeline.from_pretrained(bare, device="cpu")
    with pytest.raises(CheckpointMismatch, match="FaceRecognizer checkpoint, not a Vec2Face one"):
        Vec2FacePipeline.from_pretrained(checkpoint / "recognizer", device="cpu")


def test_from_vector_shapes_and_seeds(pipe):
    v = torch.randn(pipe.vector_dim)
    out = pipe.from_vector(v, n=3, seed=5)
    assert len(out.images) == 3 and all(im.size == (64, 64) and im.mode == "RGB" for im in out.images)
    assert out.identity == [0, 0, 0] and out.vectors.shape == (3, 32) and out.identities.shape == (1, 32)
    assert len(out.identity_similarity) == 3 and out.metadata["seed"] == 5 and out.metadata["task"] == "face"
    again, other = pipe.from_vector(v, n=3, seed=5), pipe.from_vector(v, n=3, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(out.images), _arrays(again.images)))
    assert not torch.equal(out.vectors, other.vectors)
    # std 0: the vector itself (unit-normalised); two identities at once: by identity
    still = pipe.from_vector(v * 7, n=2, std=0.0)
    assert torch.allclose(still.vectors, F.normalize(v, dim=0).expand(2, -1), atol=1e-6)
    two = pipe.from_vector(torch.randn(2, 32), n=2)
    assert two.identity == [0, 0, 1, 1] and two.by_identity


def test_from_image_pads_resizes_and_refuses_bad_files(pipe, face_png, tmp_path):
    out = pipe.from_image(face_png, n=2, seed=1)
    assert len(out.images) == 2 and out.metadata["mode"] == "image"
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(out.images), _arrays(pipe.from_image(face_png, n=2, seed=1).images)))
    wide = Image.new("RGBA", (120, 80), (10, 200, 30, 255))
    assert len(pipe.from_image(wide, n=1).images) == 1  # a PIL image, not square, with alpha
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    with pytest.raises(InputError, match="broken.png is not a readable image"):
        pipe.from_image(broken)
    with pytest.raises(InputError, match="does not exist"):
        pipe.from_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="image file or a PIL image"):
        pipe.from_image(12)


def test_bounds_are_input_errors(pipe):
    v = torch.randn(32)
    with pytest.raises(InputError, match="256 faces per identity"):
        pipe.from_vector(v, n=257)
    with pytest.raises(InputError, match="10,000 faces per call"):
        pipe.new_identities(101, per_identity=100)
    with pytest.raises(InputError, match=r"shape \(32,\)"):
        pipe.from_vector(torch.randn(16))
    with pytest.raises(InputError, match="finite and non-zero"):
        pipe.from_vector(torch.zeros(32))
    with pytest.raises(InputError, match="exactly one of"):
        pipe(image="a.png", vector=v)
    with pytest.raises(InputError, match="found only"):  # an impossible constraint ends, with a clear error
        pipe.sample_identities(60, max_similarity=0.01)


def test_new_identities_respect_the_similarity_bound_and_match_per_identity_runs(pipe):
    from pipelines.face.pipeline import identity_seed
    out = pipe.new_identities(4, per_identity=2, max_similarity=0.3, seed=2)
    assert len(out.images) == 8 and out.identity == [0, 0, 1, 1, 2, 2, 3, 3] and out.by_identity
    cos = out.identities @ out.identities.T
    assert (cos - torch.eye(4)).max() < 0.3 and torch.allclose(cos.diagonal(), torch.ones(4), atol=1e-5)
    again = pipe.new_identities(4, per_identity=2, max_similarity=0.3, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(out.images), _arrays(again.images)))
    # identity 2 alone (what the resumable CLI writes) gives the same faces
    alone = pipe.from_vector(out.identities[2], n=2, seed=identity_seed(2, 2))
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(out.images[4:6]), _arrays(alone.images)))
    via_call = pipe(new_identities=4, per_identity=2, max_similarity=0.3, seed=2)
    assert torch.equal(via_call.vectors, out.vectors)


def test_save_writes_a_folder_per_identity_whole_or_nothing(pipe, tmp_path):
    out = pipe.new_identities(3, per_identity=2, seed=0)
    written = out.save(tmp_path / "ds")
    assert sorted(p.relative_to(tmp_path / "ds").as_posix() for p in written) == \
        [f"id_{i:04d}/{j:03d}.png" for i in range(3) for j in range(2)]
    assert all(Image.open(p).size == (64, 64) for p in written)
    grid = out.save(tmp_path / "grid.png")
    assert Image.open(grid).size == (2 * 64, 3 * 64)
    assert not [p for p in tmp_path.rglob(".*")]  # no temp file left
    flat = pipe.from_vector(torch.randn(32), n=2).save(tmp_path / "flat")
    assert [p.name for p in flat] == ["000.png", "001.png"]

    class Broken:
        def save(self, *args, **kwargs):
            raise OSError("disk full")

    out.images[-1] = Broken()
    with pytest.raises(OSError, match="disk full"):
        out.save(tmp_path / "partial")
    assert not (tmp_path / "partial").exists() or not list((tmp_path / "partial").rglob("*.png"))
    with pytest.raises(InputError, match=".png file"):
        pipe.from_vector(torch.randn(32), n=1).save(tmp_path / "x.jpg")


# ---------------------------------------------------------------- AttrOP

def test_proxies_measure_what_they_say():
    from pipelines.face.attrop import expression_proxy, pose_proxy
    image = -torch.ones(2, 3, 64, 64)      # black background
    image[0, :, 20:40, 40:60] = 1.0         # a blob right of centre
    image[1, :, 20:40, 4:24] = 1.0          # ... left of centre
    pose = pose_proxy(image)
    assert pose[0] > 0.3 and pose[1] < -0.3
    flat = torch.zeros(1, 3, 64, 64)
    stripes = flat.clone()
    stripes[..., 40:54, 20:44:2] = 1.0
    assert float(expression_proxy(flat)) == 0.0 and 0.3 < float(expression_proxy(stripes)) <= 1.0


def test_project_to_cap_keeps_the_similarity_floor():
    from pipelines.face.attrop import project_to_cap
    center = F.normalize(torch.randn(32), dim=0)
    for v in (torch.randn(32), -center, center * 3):
        u = project_to_cap(v, center, 0.8)
        assert abs(float(u.norm()) - 1) < 1e-5 and float(u @ center) >= 0.8 - 1e-5


def test_attrop_stops_at_its_cap_with_the_best_so_far_and_within_its_time(pipe):
    from pipelines.face.attrop import AttrTarget, attrop
    model = lambda v, mask_ratio: pipe.vec2face(v, mask_ratio=mask_ratio)
    v = torch.randn(32)
    unreachable = AttrTarget(lambda im: im.mean((1, 2, 3)), target=5.0, tolerance=0.1, name="brightness")
    result = attrop(model, v, [unreachable], max_iters=7, min_similarity=0.7, lr=0.05)
    assert result.iterations == 7 and not result.met and result.stopped == "max_iters"
    assert len(result.errors) == 7 and abs(result.scores["brightness"] - 5.0) / 0.1 == pytest.approx(min(result.errors))
    assert result.similarity >= 0.7 - 1e-5 and result.image.shape == (3, 64, 64)

    def slow(im):
        time.sleep(0.05)
        return im.mean((1, 2, 3))

    t0 = time.perf_counter()
    timed = attrop(model, v, [AttrTarget(slow, 5.0, 0.1)], max_iters=500, max_seconds=0.3)
    assert timed.stopped == "max_seconds" and 1 <= timed.iterations < 50 and time.perf_counter() - t0 < 5
    start = result.start_scores["brightness"]
    met = attrop(model, v, [AttrTarget(unreachable.scorer, start, 0.01)], max_iters=50)
    assert met.met and met.iterations == 1 and met.stopped == "target met"
    with pytest.raises(ValueError, match="at least one target"):
        attrop(model, v, [], max_iters=5)


def test_pipeline_edit_is_bounded_and_reports(pipe):
    out = pipe.edit(torch.randn(32), pose=0.9, max_iters=5, min_similarity=0.9)
    info = out.metadata["attrop"]
    assert len(out.images) == 1 and info["iterations"] <= 5 and info["similarity"] >= 0.9 - 1e-4
    assert set(info["scores"]) == {"pose"} and out.metadata["steps"] == info["iterations"]
    both = pipe(vector=torch.randn(32), pose=0.0, expression=0.5, max_iters=3)
    assert set(both.metadata["attrop"]["scores"]) == {"pose", "expression"}
    with pytest.raises(InputError, match="max_iters must be between 1 and 500"):
        pipe.edit(torch.randn(32), pose=0.1, max_iters=501)
    with pytest.raises(InputError, match="needs a target"):
        pipe.edit(torch.randn(32))
    with pytest.raises(InputError, match="pose must be between"):
        pipe.edit(torch.randn(32), pose=3.0)


# ---------------------------------------------------------------- CLI

def test_cli_module_imports_no_torch():
    code = "import sys, pipelines.face.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "False", out.stderr


def test_cli_variations_grid_and_edit(genstudio_face, checkpoint, face_png, tmp_path):
    common = ["--model", checkpoint, "--device", "cpu", "--precision", "fp32"]
    r = run_genstudio("face", "--image", face_png, "-n", 3, "-o", tmp_path / "out", *common)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000.png", "001.png", "002.png"]
    r = run_genstudio("face", "--image", face_png, "-n", 2, "-o", tmp_path / "grid.png", *common)
    assert r.returncode == 0 and Image.open(tmp_path / "grid.png").size == (128, 64)
    r = run_genstudio("face", "--image", face_png, "--pose", 0.3, "--max-iters", 3, "-o", tmp_path / "e.png", *common)
    assert r.returncode == 0 and "iterations" in r.stderr and (tmp_path / "e.png").is_file()


@pytest.mark.parametrize("args, code, message", [
    (["--image", "missing.png"], 1, "image missing.png does not exist"),
    (["--image", "BROKEN"], 1, "is not a readable image"),
    ([], 1, "give --image FACE"),
    (["--new-identities", 2, "--pose", 0.1], 1, "do not apply to --new-identities"),
    (["--new-identities", 1000, "--per-identity", 20], 2, "--no-limit"),
    (["--new-identities", 2, "-o", "x.png"], 1, "a folder per identity"),
    (["--image", "FACE", "-o", "x.jpg"], 1, "should be a .png file"),
    (["--image", "FACE", "--max-iters", 501, "--pose", 0.1], 2, ""),
])
def test_cli_refuses_bad_input_in_one_line(genstudio_face, checkpoint, face_png, tmp_path, args, code, message):
    broken = tmp_path / "broken.png"
    broken.write_text("no")
    args = [{"BROKEN": broken, "FACE": face_png}.get(a, a) if isinstance(a, str) else a for a in args]
    r = run_genstudio("face", *args, "--model", checkpoint, "--device", "cpu", cwd=tmp_path)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    if code == 1:
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")


def test_cli_new_identities_resume_skips_finished_identities(genstudio_face, pipe, checkpoint, tmp_path):
    args = ["face", "--new-identities", 3, "--per-identity", 2, "-o", tmp_path / "ds", "--model", checkpoint,
            "--device", "cpu", "--precision", "fp32", "--seed", 4]
    r = run_genstudio(*args)
    assert r.returncode == 0, r.stderr
    folders = sorted(p.name for p in (tmp_path / "ds").iterdir() if p.is_dir())
    assert folders == ["id_0000", "id_0001", "id_0002"]
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "id_0000").iterdir()}
    before = (tmp_path / "ds" / "id_0001" / "001.png").read_bytes()
    # the same faces as one Python call
    whole = pipe.new_identities(3, per_identity=2, seed=4)
    on_disk = [np.asarray(Image.open(tmp_path / "ds" / name)) for name in whole.files()]
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(whole.images), on_disk))
    assert np.allclose(np.load(tmp_path / "ds" / "identities.npy"), whole.identities.numpy(), atol=1e-6)
    # an interrupted run: id_0001 missing, id_0002 incomplete -> redone; id_0000 untouched
    for p in (tmp_path / "ds" / "id_0001").iterdir():
        p.unlink()
    (tmp_path / "ds" / "id_0001").rmdir()
    (tmp_path / "ds" / "id_0002" / "001.png").unlink()
    r = run_genstudio(*args)
    assert r.returncode == 0 and "2 done, 1 skipped" in r.stderr, r.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "id_0000").iterdir()} == first
    assert (tmp_path / "ds" / "id_0001" / "001.png").read_bytes() == before
    # other settings in the same folder are refused
    r = run_genstudio(*args[:-1], 5)
    assert r.returncode == 1 and "other settings (seed=4)" in r.stderr


# ---------------------------------------------------------------- app

def test_app_callback_makes_variations_and_edits(pipe, face_png, monkeypatch):
    import apps.face as tab
    monkeypatch.setattr(tab, "load_pipeline", lambda task, model, progress=None: pipe)
    gallery, text, files = tab.run_face(str(face_png), num=3, seed=0)
    assert len(gallery) == 3 and len(files) == 3 and "uploaded face" in text
    gallery, text, files = tab.run_face(None, new_identity=True, num=2, pose=0.1, max_iters=3, seed=1)
    assert len(gallery) == 3 and "pose" in text and "new identity" in text
    with pytest.raises(ValueError, match="Upload a face"):
        tab.run_face(None, num=2)
