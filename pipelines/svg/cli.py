"""`genstudio svg`: image -> SVG code with StarVector (a file, or a folder of images)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, OverwriteOpt, PrecisionOpt, SeedOpt

# no torch at import: `genstudio --help` stays fast
from . import DEFAULT_MODEL, REFINE_SECONDS, REFINE_STEPS, REFINE_TOP_K

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _describe(out) -> str:
    s = out.score
    notes = out.message
    if len(out.candidates) > 1:
        notes += f", candidate #{out.best}"
    if out.metadata.get("winner"):
        notes += f" ({out.metadata['winner']})"
    return f"SSIM={s['ssim']:.4f} MSE={s['mse']:.5f} paths={s['paths']} bytes={s['bytes']}  ({notes})"


def svg(ctx: typer.Context,
        image: Path = typer.Option(..., "--image", "-i", help="An image (PNG/JPEG/...) or a folder of images."),
        output: Optional[Path] = typer.Option(None, "--output", "-o",
                                              help="SVG file, or a folder when --image is a folder "
                                                   "(default: outputs/svg/<name>.svg)."),
        candidates: int = typer.Option(1, "--candidates", "-n", min=1, max=64,
                                       help="Best-of-N: sample N SVGs, keep the one closest to the image "
                                            "(1 = greedy)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
        temperature: float = typer.Option(0.8, min=0.0, max=10.0, help="Sampling temperature (N > 1)."),
        top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (N > 1)."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, max=16_384,
                                                 help="Most SVG tokens per candidate (default and upper bound: "
                                                      "what the model's context holds)."),
        refine: bool = typer.Option(True, "--refine/--no-refine",
                                    help="Fit the best candidates' numbers to the image with the differentiable "
                                         "rasteriser (the model keeps the structure), and also vectorise from "
                                         "an empty canvas; --no-refine: the model's best-of-N as written."),
        refine_steps: int = typer.Option(REFINE_STEPS, "--refine-steps", min=1, max=5000,
                                         help="Optimiser steps per candidate when refining."),
        refine_top_k: int = typer.Option(REFINE_TOP_K, "--refine-top-k", min=0, max=64,
                                         help="Model candidates refined (the best by their own score)."),
        refine_seconds: float = typer.Option(REFINE_SECONDS, "--refine-seconds", min=0.0, max=3600.0,
                                             help="Time bound for all refinements of one image."),
        empty_canvas: bool = typer.Option(True, "--empty-canvas/--no-empty-canvas",
                                          help="When refining, also vectorise from an empty canvas (one more "
                                               "candidate; the output never fails on a drawable image)."),
        max_paths: int = typer.Option(32, "--max-paths", min=1, max=256,
                                      help="Most shapes in a refined SVG (refinement adds shapes where the "
                                           "error stays large and prunes invisible ones)."),
        overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None,
        device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Convert an image (or a folder of images) into SVG code; print the score and the output path."""
    from genstudio.cli_common import (console, files_in, finish_batch, limit_time, output_file, output_folder,
                                      output_names, run_batch, run_options)
    from genstudio.render import InputError, load_image
    from .pipeline import StarVectorPipeline

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    if not image.exists():
        raise InputError(f"image {image} does not exist")
    options = dict(num_candidates=candidates, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_tokens, seed=run.seed, refine=refine, refine_steps=refine_steps,
                   max_paths=max_paths, refine_top_k=refine_top_k, refine_seconds=refine_seconds,
                   empty_canvas=empty_canvas)

    if image.is_dir():
        files = files_in(image, IMAGE_SUFFIXES, "images")
        out_dir = output_folder(output, Path("outputs/svg") / image.resolve().name)
        pipe = StarVectorPipeline.from_pretrained(model, device=run.device, precision=run.precision)
        jobs = [(f, out_dir / name) for f, name in zip(files, output_names(files, ".svg"))]
        summary = run_batch(jobs, lambda f: pipe(f, **options), "image -> SVG", overwrite=overwrite)
        finish_batch(summary, out_dir)
        return

    picture = load_image(image)  # a bad file fails here, before the model loads
    target = output_file(output, image.stem, (".svg",), "outputs/svg")
    pipe = StarVectorPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    out = pipe(picture, **options)
    if out.failed:
        raise RuntimeError(f"{image}: {out.message}; nothing was written "
                           f"(try {'--candidates 8 or a larger --max-tokens' if refine else 'without --no-refine'})")
    out.save(target)
    console.print(f"[green]wrote[/green] {target}  {_describe(out)}")
