"""Every task's default model is a shipped checkpoint that loads offline and runs on a shipped example.

These are the checkpoints `make demo` and the CLI use on a fresh install (no hub, no training):
one small call each, checking the output's form and the task's guarantees, not its quality.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_svg_default_checkpoint_writes_a_valid_svg_that_resembles_the_input():
    from pipelines.svg.pipeline import DEFAULT_MODEL, StarVectorPipeline
    from genstudio.formats.svg_safety import validate_svg
    out = StarVectorPipeline.from_pretrained(DEFAULT_MODEL)(EXAMPLES / "svg" / "rocket.png", max_new_tokens=96,
                                                           refine_steps=20, refine_seconds=600, seed=0)  # no time bound: no flakiness
    assert not out.failed, out.message  # the defaults (proposal + refinement) always give a drawing
    assert validate_svg(out.svg) == [] and out.image.size == out.size
    assert out.score["ssim"] > 0.8, out.score


def test_inpaint_default_checkpoint_keeps_known_pixels():
    """Known pixels exact; the sampled tokens differ between samples (pluralistic). In pixels the samples
    differ on the textured example; on the smooth one the decoder trusts its biharmonic fill whatever the
    tokens (and the validation of its residual may drop it: then the samples are that fill, alike)."""
    from pipelines.inpaint.pipeline import DEFAULT_MODEL, PUTInpaintPipeline
    pipe = PUTInpaintPipeline.from_pretrained(DEFAULT_MODEL)
    for name in ("green", "rocket"):
        image = Image.open(EXAMPLES / "inpaint" / f"{name}.png").convert("RGB")
        out = pipe(image, Image.open(EXAMPLES / "inpaint" / f"{name}_mask.png"), num_samples=2, seed=0)
        assert len(out.images) == 2 and out.images[0].size == image.size
        known = ~out.hole
        for result in out.images:
            assert np.array_equal(np.asarray(result)[known], np.asarray(image)[known])
        assert (out.tokens[0] != out.tokens[1]).any()
        same = np.array_equal(np.asarray(out.images[0]), np.asarray(out.images[1]))
        if out.info["residual_weight"] == 0.0:
            assert same, name
        if name == "rocket":
            assert not same


def test_video_default_checkpoint_predicts_with_given_frames_exact():
    from pipelines.video.pipeline import DEFAULT_MODEL, VDTPipeline
    out = VDTPipeline.from_pretrained(DEFAULT_MODEL)("predict", frames=str(EXAMPLES / "video" / "balls.gif"),
                                                     num_known=4, num_inference_steps=2, progress=False)
    assert out.frames.dtype == np.uint8 and out.frames.shape == out.input.shape
    given = ~out.mask
    assert given[:4].all() and out.mask[4:].all()
    assert np.array_equal(out.frames[given], out.input[given])


def test_mesh_default_checkpoint_writes_a_mesh():
    pytest.importorskip("trimesh")
    from pipelines.mesh.pipeline import DEFAULT_MODEL, MeshAnythingPipeline
    pipe = MeshAnythingPipeline.from_pretrained(DEFAULT_MODEL)
    out = pipe(EXAMPLES / "mesh" / "urdf_407.obj", max_faces=8, seed=0, marching_cubes=True)
    assert not out.failed, out.message
    assert 1 <= out.num_faces <= 8
    assert out.faces.max() < len(out.vertices) and np.isfinite(out.vertices).all()


def test_multiview_default_checkpoints_give_distinct_views_at_any_cameras():
    from pipelines.multiview.pipeline import MVAdapterPipeline
    pipe = MVAdapterPipeline.from_pretrained()  # mv-adapter-S on mv-base-S
    out = pipe("a cyan torus", image=EXAMPLES / "multiview" / "torus_front.png", azimuths=[0, 45, 135, 250],
               elevation=15, num_inference_steps=4, seed=0, progress=False)
    views = [np.asarray(im, dtype=np.float32) / 255 for im in out.images]
    assert len(views) == 4 and all(v.shape == (pipe.image_size, pipe.image_size, 3) for v in views)
    assert all(v.std() > 0.02 for v in views)                     # not blank
    assert max(np.abs(views[0] - v).mean() for v in views[1:]) > 0.01  # the views differ
    assert out.azimuths == [0, 45, 135, 250]
