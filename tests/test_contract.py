"""The pipeline contract (genstudio/pipeline.py) and the import direction, checked for every pipeline.

Every installed task pipeline (entry-point group `genstudio.pipelines`) loads its shipped
checkpoint by name, is deterministic for a seed, saves its output atomically, says what failed,
and refuses another task's checkpoint with a message naming the command that uses it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# ---------------------------------------------------------------- import direction

def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_core_never_imports_pipelines_or_apps():
    bad = [(str(p.relative_to(ROOT)), m) for p in (ROOT / "genstudio").rglob("*.py") for m in _imports(p)
           if m.split(".")[0] in ("pipelines", "apps")]
    assert bad == []


def test_a_pipeline_imports_no_other_pipeline_and_no_app():
    bad = []
    for package in sorted(p for p in (ROOT / "pipelines").iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        for path in package.rglob("*.py"):
            for m in _imports(path):
                parts = m.split(".")
                if parts[0] == "apps" or (parts[0] == "pipelines" and len(parts) > 1 and parts[1] != package.name):
                    bad.append((str(path.relative_to(ROOT)), m))
    assert bad == []


def test_the_import_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from pipelines.svg import cli\nimport apps.app\n")
    assert _imports(bad) == {"pipelines.svg", "apps.app"}


def _sibling_modules(path: Path) -> set[str]:
    """The modules of its own pipeline folder a file imports (relative or absolute), at any depth."""
    package = path.parent.name
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[:2] == ["pipelines", package]:
                names |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] for a in node.names if a.name.startswith(f"pipelines.{package}.")}
    return names


# Inside a pipeline folder: training never needs inference, and a benchmark never needs training
# helpers; what two of them share lives in the model file, data.py or a small module of its own.
LAYERS = {"train": {"pipeline", "cli", "bench"}, "bench": {"train", "cli"}}


def test_training_never_imports_inference_and_benches_never_import_training():
    bad = [(str(path.relative_to(ROOT)), sorted(_sibling_modules(path) & forbidden))
           for layer, forbidden in LAYERS.items() for path in sorted((ROOT / "pipelines").glob(f"*/{layer}.py"))
           if _sibling_modules(path) & forbidden]
    assert bad == []


def test_the_layer_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "video" / "train.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from .pipeline import sample_clips\n    from . import cli\n"
                   "from pipelines.video.bench import x\n")
    assert _sibling_modules(bad) == {"pipeline", "cli", "bench"}


# ---------------------------------------------------------------- one call per task, tiny settings

def _svg_call(pipe, seed):
    # refinement bounded by steps only (its default time bound would make the result load-dependent)
    return pipe(EXAMPLES / "svg" / "rocket.png", num_candidates=2, max_new_tokens=96, seed=seed, refine_steps=10,
                refine_seconds=600, progress=False)


def _inpaint_call(pipe, seed):
    image = Image.open(EXAMPLES / "inpaint" / "green.png").convert("RGB").resize((48, 48))
    mask = Image.open(EXAMPLES / "inpaint" / "green_mask.png").convert("L").resize((48, 48))
    return pipe(image, mask, num_samples=2, seed=seed, resolution=32, progress=False)


def _video_call(pipe, seed):
    return pipe("predict", frames=str(EXAMPLES / "video" / "balls.gif"), num_known=8, num_inference_steps=2,
                seed=seed, progress=False)


def _mesh_call(pipe, seed):
    pytest.importorskip("trimesh")
    return pipe(EXAMPLES / "mesh" / "urdf_407.obj", max_faces=8, seed=seed, temperature=1.0)


def _generate_call(pipe, seed):
    return pipe(["A", 3], num_images_per_class=2, num_inference_steps=2, seed=seed, progress=False)


def _text2svg_call(pipe, seed):
    return pipe("a rocket", num_samples=2, num_inference_steps=4, seed=seed, progress=False)


def _face_call(pipe, seed):
    return pipe(new_identities=2, per_identity=2, seed=seed, progress=False)


def _shape_call(pipe, seed):
    return pipe("a torus", num_samples=2, resolution=32, seed=seed, progress=False)


def _multiview_call(pipe, seed):
    return pipe("a red box", num_views=4, num_inference_steps=2, seed=seed, progress=False)



CALLS = {"shape": (_shape_call, "tokens", ".obj"), "face": (_face_call, "images", ".png"), "svg": (_svg_call, "svg", ".svg"), "text2svg": (_text2svg_call, "svgs", ".svg"), "generate": (_generate_call, "images", ".png"), "inpaint": (_inpaint_call, "images", ".png"),
         "video": (_video_call, "frames", ".gif"), "mesh": (_mesh_call, "faces", ".obj"),
         "multiview": (_multiview_call, "images", "")}


def _same(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Image.Image):
        return np.array_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


@pytest.fixture(scope="module")
def pipelines():
    from genstudio.pipeline import pipeline_classes
    return pipeline_classes()


def test_every_installed_pipeline_has_a_contract_call(pipelines):
    assert set(CALLS) <= set(pipelines), sorted(pipelines)
    assert set(pipelines) <= set(CALLS), "a new pipeline needs its entry in CALLS"


@pytest.mark.parametrize("task", sorted(CALLS))
def test_pipeline_contract(task, pipelines, tmp_path):
    from genstudio.pipeline import PipelineMixin, PipelineOutput
    cls = pipelines[task]
    assert issubclass(cls, PipelineMixin) and cls.task == task and cls.default_model and cls.checkpoint_classes
    call, field, suffix = CALLS[task]
    # 1. by name (the shipped checkpoint), fp32 so the result does not depend on the CPU
    pipe = cls.from_pretrained(cls.default_model, device="cpu", precision="fp32")
    assert pipe.name == cls.default_model and pipe.precision.name == "fp32"
    # 2. seeded determinism; metadata
    first, again = call(pipe, 7), call(pipe, 7)
    assert isinstance(first, PipelineOutput)
    assert first.failed == again.failed and _same(getattr(first, field), getattr(again, field))
    meta = first.metadata
    assert meta["model"] == cls.default_model and meta["seed"] == 7 and meta["task"] == task
    assert meta["seconds"] >= 0 and meta["precision"] == "fp32"
    # 3. save: atomic and whole, or a clear refusal when the model failed
    target = tmp_path / f"out{suffix}"
    if first.failed:
        assert first.message
        with pytest.raises(ValueError, match="nothing to write"):
            first.save(target)
        assert not any(tmp_path.iterdir())
    else:
        written = first.save(target)
        paths = written if isinstance(written, list) else [written]
        assert paths and all(Path(p).stat().st_size > 0 for p in paths)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("task", sorted(CALLS))
def test_another_tasks_checkpoint_is_refused_with_the_command_that_uses_it(task, pipelines):
    from genstudio.hub import checkpoints_dir
    from genstudio.pipeline import CheckpointMismatch
    cls = pipelines[task]
    other = next(c for t, c in sorted(pipelines.items()) if t != task)
    with pytest.raises(CheckpointMismatch, match=rf"not a {cls.paper} one; `genstudio {other.task}` uses it"):
        cls.from_pretrained(checkpoints_dir() / other.default_model, device="cpu")


def test_load_by_task_and_bad_seeds():
    import genstudio
    from genstudio.pipeline import PipelineMixin, check_seed
    with pytest.raises(KeyError, match="unknown task 'nope'; installed: .*svg"):
        genstudio.load("nope")
    for bad in (-1, 2**63, 2e70, "x", 1.5):
        with pytest.raises(ValueError, match="seed must"):
            check_seed(bad)
    generator, seed = PipelineMixin.make_generator(None)
    assert 0 <= seed < 2**63 and generator.initial_seed() == seed
