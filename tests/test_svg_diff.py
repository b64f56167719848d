"""The differentiable SVG rasteriser (genstudio.formats.svg_diff, svg_geometry), its SVG I/O (svg_scene)
and refinement (svg_refine):
agreement with cairosvg, fill rules, strokes and caps, opacity, gradients against central
differences, and the primitive-keeping round trip. Tiny canvases: the whole file runs in seconds."""
from pathlib import Path

import numpy as np
import pytest
import torch

from genstudio.formats.svg import rasterize_svg
from genstudio.formats.svg_diff import render
from genstudio.formats.svg_scene import scene_from_svg, scene_to_svg

ICONS = Path(__file__).parent / "fixtures" / "npm_icons"
FIXTURES = ["@mdi/svg/svg/plus-box.svg", "@phosphor-icons/core/assets/regular/leaf.svg",
            "lucide-static/icons/house.svg", "@tabler/icons/icons/outline/square.svg",
            "openmoji/color/svg/1F642.svg", "bootstrap-icons/icons/record-circle-fill.svg",
            "heroicons/24/outline/arrow-right.svg"]
SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">{}</svg>'
STAR = '<path d="M16 2L24.2 27.3L2.7 11.7H29.3L7.8 27.3Z" fill="#204080"{}/>'


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensor ops: a second thread only adds contention on shared cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _difference(svg_text: str, size: int) -> np.ndarray:
    reference = rasterize_svg(svg_text, size).astype(np.float64) / 255
    with torch.no_grad():
        ours = render(scene_from_svg(svg_text, requires_grad=False), size).numpy()
    return np.abs(ours - reference)


def test_matches_cairosvg_on_icons():
    # measured at 64 px (tau 0.18): 0.001-0.007 per icon, 0.0036 on average (128 px: 0.0020)
    diffs = {name: _difference((ICONS / name).read_text(encoding="utf-8"), 64).mean() for name in FIXTURES}
    assert max(diffs.values()) < 0.015, diffs
    assert np.mean(list(diffs.values())) < 0.008, diffs


@pytest.mark.parametrize("rule, centre_inked", [("nonzero", True), ("evenodd", False)])
def test_fill_rules_on_a_self_intersecting_star(rule, centre_inked):
    text = SVG.format(STAR.format(' fill-rule="evenodd"' if rule == "evenodd" else ""))
    with torch.no_grad():
        image = render(scene_from_svg(text), 32).numpy()
    assert (image[16, 16].mean() < 0.5) == centre_inked
    assert _difference(text, 32).mean() < 0.01  # and no seam along the inner pentagon under nonzero


@pytest.mark.parametrize("cap", ["butt", "round", "square"])
def test_strokes_and_caps(cap):
    body = (f'<path d="M4 6H28" stroke="#000" stroke-width="3" stroke-linecap="{cap}"/>'
            f'<path d="M4 12Q28 12 28 28" fill="none" stroke="#c03" stroke-width="2.5" stroke-linecap="{cap}"/>'
            '<polyline points="3 29 12 18 20 29" fill="none" stroke="#06c" stroke-width="2" stroke-linejoin="round"/>')
    diff = _difference(SVG.format(body), 64)
    assert diff.mean() < 0.01 and diff.max() < 0.35


def test_miter_joins_have_their_tips():
    # the default join: a stroked square drawn with round joins differs by ~0.25 at its corners
    body = '<rect x="6" y="6" width="20" height="20" fill="none" stroke="#000" stroke-width="3"/>'
    assert _difference(SVG.format(body), 64).max() < 0.1
    sharp = '<polyline points="3 29 16 4 29 29" fill="none" stroke="#000" stroke-width="2"/>'  # a 55 degree apex
    assert _difference(SVG.format(sharp), 64).mean() < 0.005


def test_opacity_and_primitives():
    body = ('<rect x="3" y="3" width="18" height="18" fill="#f00" fill-opacity=".6"/>'
            '<circle cx="19" cy="19" r="10" fill="#00f" fill-opacity=".5" stroke="#0a0" stroke-width="2" '
            'stroke-opacity=".8"/><ellipse cx="16" cy="8" rx="12" ry="4" fill="#fa0" opacity=".7"/>'
            '<rect x="2" y="24" width="10" height="6" rx="2" fill="#080"/>')
    assert _difference(SVG.format(body), 32).mean() < 0.01
    assert _difference(SVG.format(body), 64).mean() < 0.006


def _numeric_gradient(loss, tensor: torch.Tensor, index: int, h: float = 1e-4) -> float:
    flat = tensor.data.view(-1)
    old = float(flat[index])
    flat[index] = old + h
    with torch.no_grad():
        plus = float(loss())
    flat[index] = old - h
    with torch.no_grad():
        minus = float(loss())
    flat[index] = old
    return (plus - minus) / (2 * h)


def test_gradients_match_central_differences():
    text = SVG.format('<circle cx="12.3" cy="13.2" r="6.4" fill="#3060c0" fill-opacity=".8"/>'
                      '<path d="M4 5Q18 2 26 12L22 26" fill="none" stroke="#c03020" stroke-width="2.7"/>'
                      '<rect x="16.2" y="17.6" width="10.1" height="8.3" fill="#20a040" stroke="#000" '
                      'stroke-width="1.6"/>')
    scene = scene_from_svg(text, dtype=torch.float64)
    target = torch.rand(24, 24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss():
        return ((render(scene, 24, tau=0.5) - target) ** 2).sum()

    loss().backward()
    circle, path, rect = scene.shapes
    checks = {"path coordinate": (path.params, 2), "circle radius": (circle.params, 2),
              "rect width": (rect.params, 2), "stroke width": (path.stroke_width, 0),
              "fill colour": (circle.fill, 2), "stroke colour": (rect.stroke, 1),
              "fill opacity": (circle.fill_opacity, 0)}
    for name, (tensor, index) in checks.items():
        analytic = float(tensor.grad.view(-1)[index])
        numeric = _numeric_gradient(loss, tensor, index)
        assert abs(analytic) > 1e-3, name  # the check must not pass on two zeros
        assert analytic == pytest.approx(numeric, rel=1e-3, abs=1e-5), name


def test_round_trip_keeps_primitives():
    body = ('<rect x="2.25" y="3" width="10" height="6" rx="2" fill="#008800"/><circle cx="20" cy="8" r="5.5" '
            'stroke="#112233" stroke-width="1.5"/><ellipse cx="16" cy="20" rx="9" ry="3" fill="#fa0" '
            'fill-opacity=".5"/><polygon points="3 30 10 22 17 30" fill="#0af"/><line x1="18" y1="24" x2="30" '
            'y2="30" stroke="#000" stroke-width="1.5" stroke-linecap="round"/>'
            '<path d="M20 26C22 22 26 22 28 26Z" fill-rule="evenodd"/>')
    scene = scene_from_svg(SVG.format(body))
    assert [s.kind for s in scene.shapes] == ["rect", "circle", "ellipse", "polygon", "line", "path"]
    assert all(t.requires_grad for t in scene.parameters())
    text = scene_to_svg(scene, precision=2)
    again = scene_from_svg(text)
    assert [s.kind for s in again.shapes] == [s.kind for s in scene.shapes]
    for a, b in zip(scene.shapes, again.shapes):
        assert torch.allclose(a.params, b.params, atol=0.006)
        assert a.fill_rule == b.fill_rule and a.linecap == b.linecap
    assert '<rect x="2.25" y="3" width="10" height="6" rx="2"' in text
    reference = rasterize_svg(SVG.format(body), 64).astype(float)
    assert np.abs(rasterize_svg(text, 64).astype(float) - reference).mean() / 255 < 0.002


def test_transforms_and_unsafe_input():
    rotated = SVG.format('<g transform="rotate(30 16 16)"><rect x="8" y="8" width="16" height="16"/></g>'
                         '<g transform="translate(2 3) scale(2 1)"><circle cx="3" cy="4" r="2"/></g>')
    scene = scene_from_svg(rotated)
    assert [s.kind for s in scene.shapes] == ["path", "ellipse"]  # rotated rect -> path; uneven circle -> ellipse
    assert scene.shapes[1].params.tolist() == pytest.approx([8, 7, 4, 2])
    assert _difference(rotated, 32).mean() < 0.01
    shield = scene_from_svg((ICONS / "lucide-static/icons/shield.svg").read_text(encoding="utf-8"))
    assert [s.kind for s in shield.shapes] == ["path"]  # the script and the raster never become shapes


# ---- refinement (genstudio.formats.svg_refine) and the pipeline's use of it ----

ICON = SVG.format('<circle cx="11" cy="12" r="7" fill="#d04020"/><rect x="15" y="16" width="12" height="10" '
                  'fill="#2050c0" stroke="#000" stroke-width="1.5"/>')


def test_refine_fits_the_numbers_and_keeps_the_primitives():
    from genstudio.formats.svg_refine import SSIM_TOLERANCE, refine_svg, score_svg
    from genstudio.formats.svg_safety import validate_svg
    target = rasterize_svg(ICON, 64)
    rough = ICON.replace('cx="11" cy="12" r="7"', 'cx="14" cy="9" r="5"').replace('x="15" y="16"', 'x="12" y="19"')
    result = refine_svg(rough, target, steps=40, size=64, add_paths=False)
    assert result.initial_score["ssim"] < 0.85 and result.score["ssim"] > 0.95, (result.initial_score, result.score)
    assert result.score == score_svg(result.svg, target)  # the rounded text's own score, not the scene's
    assert validate_svg(result.svg) == [] and "<circle" in result.svg and "<rect" in result.svg
    already = refine_svg(ICON, target, steps=5, size=64)  # never (noticeably) worse than its input
    assert already.score["ssim"] >= already.initial_score["ssim"] - SSIM_TOLERANCE
    bounded = refine_svg(rough, target, steps=50, size=64, time_limit=0.0)  # the time bound holds
    assert bounded.steps == 0 and bounded.score["ssim"] >= bounded.initial_score["ssim"] - SSIM_TOLERANCE


def test_refine_from_an_empty_canvas_adds_shapes_on_the_error():
    from genstudio.formats.svg_refine import refine_svg
    target = rasterize_svg(ICON, 64)
    result = refine_svg(None, target, steps=40, size=64, max_paths=4)
    assert result.initial_score is None and result.added >= 2 and result.score["ssim"] > 0.9, result
    assert 1 <= len(scene_from_svg(result.svg).shapes) <= 4


TWO_COLOURS = SVG.format('<rect x="4" y="6" width="12" height="20" fill="#203040"/>'
                         '<rect x="16" y="6" width="12" height="20" fill="#e0b030"/>')  # touching: one blob


def test_added_shapes_are_one_colour_each_not_the_mean_of_touching_colours():
    from genstudio.formats.svg_refine import _error_components, refine_svg
    target = rasterize_svg(TWO_COLOURS, 32).astype(np.float32) / 255
    error = np.abs(1 - target).mean(-1)  # an empty (white) canvas
    masks = _error_components(error, target, 4)
    assert len(masks) == 2  # the dark and the yellow half, not one blob of their mean colour
    for mask in masks:
        colours = target[mask]
        assert np.abs(colours - np.median(colours, 0)).mean(-1).max() < 0.3  # each one colour (plus fringe)
    assert masks[0][6:26, 4:15].mean() > 0.9 and masks[1][6:26, 17:28].mean() > 0.9  # the larger error first: dark
    result = refine_svg(None, rasterize_svg(TWO_COLOURS, 32), steps=20, size=32, max_paths=4)
    assert result.score["ssim"] > 0.95, result  # one shape of their mean colour scored 0.74 here


def test_thin_lines_fall_back_to_mixed_components():
    from genstudio.formats.svg_refine import _error_components
    lines = rasterize_svg(SVG.format('<path d="M2 4L30 28M2 28L30 4" stroke="#000" stroke-width="1.2"/>'), 32)
    target = lines.astype(np.float32) / 255
    error = np.abs(1 - target).mean(-1)
    masks = _error_components(error, target, 8)
    assert len(masks) == 1 and masks[0].sum() >= 40  # the cross, whole, though mostly anti-aliased grey


def test_box_mean_is_avg_pool():
    from genstudio.formats.svg_refine import _box_mean
    x = torch.rand(5, 20, 17, dtype=torch.float64)
    expected = torch.nn.functional.avg_pool2d(x[None], 7, stride=1)[0]
    assert torch.allclose(_box_mean(x, 7), expected, atol=1e-12)


def test_refine_from_an_empty_canvas_never_adds_past_max_paths():
    from genstudio.formats.svg_refine import refine_svg
    result = refine_svg(None, rasterize_svg(ICON, 32), steps=4, size=32, max_paths=2)
    assert result.added <= 2 and len(scene_from_svg(result.svg).shapes) <= 2


def test_cpu_threads_only_the_outermost_main_thread_call_sets_them():
    """genstudio.device.cpu_threads (refinement and MeshAnything decoding run under it)."""
    import threading
    from genstudio.device import cpu_threads as _threads
    before = torch.get_num_threads()
    seen = []
    with _threads(before + 1):
        with _threads(before + 2):  # nested: the outer setting stays
            seen.append(torch.get_num_threads())
        seen.append(torch.get_num_threads())
    seen.append(torch.get_num_threads())
    assert seen == [before + 1, before + 1, before]

    def worker():
        with _threads(before + 3):
            seen.append(torch.get_num_threads())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen[-1] == before == torch.get_num_threads()  # a worker thread leaves the process setting alone


def test_simplify_drops_invisible_vertices_and_straightens_flat_curves():
    from genstudio.formats.svg_refine import _simplify
    scene = scene_from_svg(SVG.format('<polygon points="2 2 10 2.01 20 2 20 20 2 20"/>'
                                      '<path d="M4 24C8 24.05 12 23.98 16 24L28 24L28 30Z"/>'))
    assert _simplify(scene, 32) == 3  # a polygon vertex, the flat cubic, then the vertex it left on a line
    text = scene_to_svg(scene, 2)
    assert 'points="2 2 20 2 20 20 2 20"' in text and "C" not in text and "c" not in text
    assert np.abs(rasterize_svg(text, 64).astype(float) - rasterize_svg(SVG.format(
        '<polygon points="2 2 20 2 20 20 2 20"/><path d="M4 24H28V30Z"/>'), 64)).mean() / 255 < 0.002


class _FakeModel:
    def __init__(self, text, image_size=32):
        from types import SimpleNamespace
        self.text, self.config = text, SimpleNamespace(image_size=image_size)

    def generate_svg(self, pixel_values, tokenizer, num_candidates=1, **kwargs):
        return [[self.text] * num_candidates]


def test_pipeline_refines_each_candidate_and_keeps_the_old_path_without():
    from PIL import Image
    from pipelines.svg.pipeline import REFINE_SIZE, StarVectorPipeline
    rough = ICON.replace('cx="11" cy="12" r="7"', 'cx="14" cy="9" r="5"')
    pipe = StarVectorPipeline(_FakeModel(rough), tokenizer=None, device="cpu", precision="fp32")
    image = Image.fromarray(rasterize_svg(ICON, 96))
    plain = pipe(image, num_candidates=2, refine=False)
    assert not any(c.refined for c in plain.candidates) and '<circle cx="14" cy="9" r="5"' in plain.svg
    out = pipe(image, num_candidates=2, refine_steps=30, max_paths=4, refine_top_k=2, empty_canvas=False,
               progress=False)
    assert all(c.refined and c.unrefined for c in out.candidates) and "refine" in out.message
    reference = np.asarray(image.resize((REFINE_SIZE, REFINE_SIZE), Image.BICUBIC))
    from genstudio.formats.svg_refine import score_svg
    assert out.score["ssim"] > plain.score["ssim"] and out.score["ssim"] > 0.93
    assert score_svg(out.candidates[out.best].unrefined, reference)["ssim"] < out.score["ssim"]
    assert out.metadata["refine_steps"] == 30 and 'width="96"' in out.svg and out.metadata["winner"] == "model"
    top1 = pipe(image, num_candidates=2, refine_steps=5, max_paths=4, progress=False)  # the defaults' shape
    assert [c.refined for c in top1.candidates] == [True, False, True] and top1.candidates[2].origin == "empty-canvas"
    assert top1.best != 1 and top1.metadata["winner"] in ("model", "empty-canvas")
