"""`genstudio bench svg`: StarVector (greedy and best-of-N) against classic tracers.

Inputs: the TEST split of several icon sets (and font glyphs when that source is built), each
source SVG rendered at 128 px on white. Every method turns that image into an SVG, which is
rendered back at 128 px and compared with the input (SSIM, MSE). Also: the share of valid,
safe, standalone SVGs, output bytes (and relative to the source SVG's normalised text), paths
per SVG, seconds per image and peak memory (RSS above the level before the method ran; on a
GPU, CUDA memory). Failed outputs score as a blank image; bytes and paths average the valid ones.

Refinement (genstudio.formats.svg_refine: the differentiable rasteriser fits an SVG's numbers to
the image): "ours-default" is the pipeline with its default settings (greedy decoding; the model's
SVG and an empty canvas both refined, the shorter of the close best kept; a note counts how often
the model's proposal wins); "ours-greedy+refine" refines the model's greedy SVG alone (no empty
canvas); "refine-empty-canvas" starts from nothing (shapes added on the largest error
components), a model-free vectoriser.

The model: `model=` or $GENSTUDIO_BENCH_SVG_MODEL (default: the shipped starvector-icons-S);
a missing checkpoint skips "ours" with a note and still measures the baselines.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np

from genstudio.bench import PeakMemory, evenly_spaced, training_steps
from genstudio.formats.svg import SVGError, rasterize_svg, svg_stats
from genstudio.formats.svg_safety import validate_svg

SETS = ("tabler", "mdi", "simple-icons", "lucide", "bootstrap", "phosphor", "twemoji", "openmoji")
SIZE = 128
MODEL_ENV = "GENSTUDIO_BENCH_SVG_MODEL"


# ---- Baselines ----

def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def trace_vtracer(image: np.ndarray, colormode: str = "binary") -> str:
    """vtracer with its default settings; colormode 'binary' (black on white) or 'color'."""
    import vtracer
    return vtracer.convert_raw_image_to_svg(_png_bytes(image), img_format="png", colormode=colormode)


def trace_potrace(image: np.ndarray, threshold: float = 0.5, precision: int = 1) -> str:
    """potrace (the potracer port): pixels darker than `threshold` are traced into one even-odd path."""
    import potrace
    grey = image.astype(np.float64).mean(-1) if image.ndim == 3 else image.astype(np.float64)
    h, w = grey.shape
    curves = potrace.Bitmap(grey, blacklevel=threshold).trace()  # grey below 255 * threshold is ink

    def pt(p) -> str:
        return f"{round(p.x, precision):g} {round(p.y, precision):g}"

    parts = []
    for curve in curves:
        parts.append("M" + pt(curve.start_point))
        for seg in curve.segments:
            parts.append(f"L{pt(seg.c)}L{pt(seg.end_point)}" if seg.is_corner
                         else f"C{pt(seg.c1)} {pt(seg.c2)} {pt(seg.end_point)}")
        parts.append("Z")
    body = f'<path fill-rule="evenodd" d="{"".join(parts)}"/>' if parts else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}">'
            f"{body}</svg>")


# ---- Measuring (PeakMemory: genstudio.bench) ----

def measure(svg: str | None, reference: np.ndarray, source_bytes: int, seconds: float) -> dict:
    """One output against its input image."""
    row = {"seconds": seconds, "valid": 0.0}
    rendered = None
    if svg:
        try:
            if not validate_svg(svg):
                rendered = rasterize_svg(svg, SIZE)
        except SVGError:
            rendered = None
    if rendered is not None:
        stats = svg_stats(svg)
        row.update(valid=1.0, bytes=stats["bytes"], bytes_vs_source=stats["bytes"] / source_bytes,
                   paths=stats["paths"])
    else:
        rendered = np.full_like(reference, 255)  # a failure scores as a blank image
    from genstudio.metrics import mse, ssim
    row.update(ssim=ssim(rendered, reference), mse=mse(rendered, reference))
    return row


def aggregate(rows: list[dict], peak_mb: float) -> dict:
    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return float(np.mean(vals)) if vals else float("nan")
    return {"n": len(rows), "ssim": round(mean("ssim"), 4), "mse": round(mean("mse"), 5),
            "valid": round(mean("valid"), 3), "bytes": round(mean("bytes"), 1),
            "bytes_vs_source": round(mean("bytes_vs_source"), 3), "paths": round(mean("paths"), 2),
            "sec_per_image": round(mean("seconds"), 4), "peak_mb": round(peak_mb, 1)}


# ---- Inputs ----

def load_inputs(sets, per_set: int, report=None) -> dict[str, list[tuple[str, str]]]:
    """{set: [(id, normalised source SVG text)]} from the test splits (icons, then glyphs)."""
    from genstudio.data import dataset_dir, load_manifest
    icons = load_manifest("icons", "test")
    groups = {}
    for name in sets:
        chosen = evenly_spaced([it for it in icons if it["set"] == name], per_set)
        if chosen:
            groups[name] = [(it["id"], Path(it["path"]).read_text(encoding="utf-8")) for it in chosen]
        elif report is not None:
            report.note(f"icon set {name!r} has no test items in this build: skipped")
    if (dataset_dir("glyphs") / "manifest.jsonl").exists():
        chosen = evenly_spaced(load_manifest("glyphs", "test"), per_set)
        groups["glyphs"] = [(it["id"], Path(it["path"]).read_text(encoding="utf-8")) for it in chosen]
    elif report is not None:
        report.note("glyphs: the font-glyph source is not built here (`genstudio data prepare glyphs`): skipped")
    return groups


def _checkpoint_note(pipe, folder: Path, model: str) -> str:
    params = sum(p.numel() for p in pipe.model.parameters()) if hasattr(pipe.model, "parameters") else 0
    steps = training_steps(folder)
    return (f"ours = StarVector checkpoint {model!r} ({folder}), {params / 1e6:.1f}M parameters, "
            f"{f'{steps} training steps' if steps else 'training steps: see its model card'}; "
            f"image size {pipe.image_size} px, device {pipe.device}.")


# ---- The benchmark ----

def bench_svg(report, quick: bool = False, per_set: int = 100, model: str | None = None,
              candidates: int = 8, sets=SETS, max_new_tokens: int | None = None, seed: int = 0,
              refine_steps: int | None = None, methods: str | None = None) -> None:
    """Ours (greedy, best-of-`candidates`, greedy + refinement) vs vtracer (binary, colour),
    potrace and refinement from an empty canvas; see the module doc. `methods` ("a,b"): only these
    rows (e.g. the model alone, to compare two checkpoints on the same items)."""
    from PIL import Image
    from tqdm.auto import tqdm
    from genstudio.formats.svg_refine import refine_svg
    from . import REFINE_STEPS
    refine_steps = refine_steps or REFINE_STEPS  # the pipeline's default unless asked otherwise
    if isinstance(sets, str):  # `--option sets=a,b` arrives as one string
        sets = tuple(s.strip() for s in sets.split(",") if s.strip())
    if quick:
        per_set, sets, refine_steps = 3, tuple(sets)[:2], min(refine_steps, 20)
    groups = load_inputs(sets, per_set, report)
    if not groups:
        raise SVGError("no test images: build the icons source first (`genstudio data prepare icons`)")

    methods_wanted = [m.strip() for m in methods.split(",") if m.strip()] if isinstance(methods, str) else methods
    methods = {"vtracer-binary": lambda im: trace_vtracer(im, "binary"),
               "vtracer-color": lambda im: trace_vtracer(im, "color"),
               "potrace": trace_potrace,
               # The floor: an empty white canvas already scores SSIM ~0.5 on mostly-white icons.
               "blank-canvas": lambda im: None,
               "refine-empty-canvas": lambda im: refine_svg(None, im, steps=refine_steps, size=SIZE).svg}
    model = model or os.environ.get(MODEL_ENV) or "starvector-icons-S"
    cuda = False
    winners: dict[str, list[str]] = {}  # set -> the winning candidate's origin, per image of "ours-default"

    def default_pipeline(im, set_name):
        out = pipe(Image.fromarray(im), progress=False, **gen, **({} if refine_steps == REFINE_STEPS
                                                                      else {"refine_steps": refine_steps}))
        winners.setdefault(set_name, []).append(out.metadata.get("winner") or "none")
        return out.svg

    try:
        from genstudio.hub import resolve
        from .pipeline import StarVectorPipeline
        pipe = StarVectorPipeline.from_pretrained(model)
        cuda = pipe.device.startswith("cuda")
        gen = dict(seed=seed, max_new_tokens=max_new_tokens)
        methods["ours-greedy"] = lambda im: pipe(Image.fromarray(im), num_candidates=1, refine=False, **gen).svg
        methods[f"ours-best-of-{candidates}"] = lambda im: pipe(Image.fromarray(im), num_candidates=candidates,
                                                               refine=False, **gen).svg
        methods["ours-greedy+refine"] = lambda im: pipe(Image.fromarray(im), num_candidates=1, refine=True,
                                                        refine_steps=refine_steps, empty_canvas=False,
                                                        progress=False, **gen).svg
        methods["ours-default"] = default_pipeline
        report.note(_checkpoint_note(pipe, resolve(model), model))
    except (FileNotFoundError, ValueError, ImportError) as e:
        report.note(f"ours skipped: {e}")

    if methods_wanted:
        unknown = set(methods_wanted) - set(methods)
        if unknown:
            raise SVGError(f"unknown methods {', '.join(sorted(unknown))}; available: {', '.join(methods)}")
        methods = {m: fn for m, fn in methods.items() if m in methods_wanted}
    everything: dict[str, list[dict]] = {m: [] for m in methods}
    peaks: dict[str, float] = {m: 0.0 for m in methods}
    warm: set[str] = set()
    for set_name, items in groups.items():
        inputs = [(rasterize_svg(src, SIZE), len(src.encode("utf-8"))) for _, src in items]
        for method, fn in methods.items():
            if method not in warm:  # first calls pay for lazy imports and allocator growth
                warm.add(method)
                try:
                    fn(inputs[0][0], None) if method == "ours-default" else fn(inputs[0][0])
                except (SVGError, ValueError, RuntimeError):
                    pass
            rows = []
            with PeakMemory(cuda=cuda and method.startswith("ours")) as mem:
                for image, source_bytes in tqdm(inputs, desc=f"{set_name} {method}", leave=False):
                    t = time.perf_counter()
                    try:
                        out = fn(image, set_name) if method == "ours-default" else fn(image)
                    except (SVGError, ValueError, RuntimeError):
                        out = None
                    rows.append(measure(out, image, source_bytes, time.perf_counter() - t))
            report.add(method, set_name, **aggregate(rows, mem.mb))
            everything[method] += rows
            peaks[method] = max(peaks[method], mem.mb)
    if len(groups) > 1:
        for method, rows in everything.items():
            report.add(method, "all", **aggregate(rows, peaks[method]))
    report.compare("vtracer-binary", ["ssim", "bytes", "sec_per_image"])
    won = {name: w for name, w in winners.items() if name is not None}
    if won:
        every = [x for w in won.values() for x in w]
        per = ", ".join(f"{name} {w.count('model')}/{len(w)}" for name, w in won.items())
        report.note(f"ours-default: the model's refined proposal won {every.count('model')} of {len(every)} images "
                    f"({per}); the empty canvas won the others ({every.count('empty-canvas')}).")
    report.note(f"Inputs: {per_set} test-split items per set (evenly spaced by id), source SVG rendered at "
                f"{SIZE} px on white; outputs rendered at {SIZE} px. SSIM/MSE on RGB in [0, 1]; a failed or "
                "invalid output scores as a blank image. bytes/paths average the valid outputs; "
                "bytes_vs_source = output bytes / the source's normalised SVG bytes. vtracer and potrace "
                f"with default settings (potrace: grey < 0.5 is ink). Refinement: {refine_steps} steps per "
                "candidate, at most 32 shapes, fitted at 128 px; ours-default: the pipeline's defaults. "
                "Each method runs once untimed first; peak_mb: RSS above the level before the method ran "
                "(CUDA allocated memory for ours on a GPU).")
