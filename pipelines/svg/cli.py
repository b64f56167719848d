"""`genstudio svg`: image -> SVG code with StarVector (a file, or a folder of images).
`genstudio svg-distill`: distillation targets for the recipe (pipelines/svg/distill.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, OverwriteOpt, PrecisionOpt, SeedOpt

# no torch at import: `genstudio --help` stays fast
from . import DEFAULT_MODEL, REFINE_SECONDS, REFINE_STEPS, REFINE_TOP_K

# Work budgets per image (README: Limits and safety). Tokens: candidates x SVG tokens each (the
# model's context when --max-tokens is not given): 32 candidates at the shipped model's 1,024-token
# context, or 4 at an 8k one; the default (greedy, ~1k tokens) and `--candidates 8` pass 4x over.
TOKEN_BUDGET = 32_768
# Refinement: refined candidates x --refine-steps (default 2 x 60 = 120); --refine-seconds bounds
# its time as well.
REFINE_BUDGET = 2_000

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
        overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
        device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Convert an image (or a folder of images) into SVG code; print the score and the output path."""
    from genstudio.cli_common import (console, files_in, finish_batch, limit_time, output_file, output_folder,
                                      output_names, run_batch, run_options)
    from genstudio.render import InputError, load_image
    from .pipeline import StarVectorPipeline

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    _check_refine_work(candidates, refine, refine_steps, refine_top_k, empty_canvas, no_limit)
    if not image.exists():
        raise InputError(f"image {image} does not exist")
    options = dict(num_candidates=candidates, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_tokens, seed=run.seed, refine=refine, refine_steps=refine_steps,
                   max_paths=max_paths, refine_top_k=refine_top_k, refine_seconds=refine_seconds,
                   empty_canvas=empty_canvas)

    if image.is_dir():
        files = files_in(image, IMAGE_SUFFIXES, "images")
        out_dir = output_folder(output, Path("outputs/svg") / image.resolve().name)
        pipe = _check_token_work(StarVectorPipeline.from_pretrained(model, device=run.device, precision=run.precision),
                                 candidates, max_tokens, no_limit)
        jobs = [(f, out_dir / name) for f, name in zip(files, output_names(files, ".svg"))]
        summary = run_batch(jobs, lambda f: pipe(f, **options), "image -> SVG", overwrite=overwrite)
        finish_batch(summary, out_dir)
        return

    picture = load_image(image)  # a bad file fails here, before the model loads
    target = output_file(output, image.stem, (".svg",), "outputs/svg")
    pipe = _check_token_work(StarVectorPipeline.from_pretrained(model, device=run.device, precision=run.precision),
                             candidates, max_tokens, no_limit)
    out = pipe(picture, **options)
    if out.failed:
        raise RuntimeError(f"{image}: {out.message}; nothing was written "
                           f"(try {'--candidates 8 or a larger --max-tokens' if refine else 'without --no-refine'})")
    out.save(target)
    console.print(f"[green]wrote[/green] {target}  {_describe(out)}")


def _check_refine_work(candidates: int, refine: bool, steps: int, top_k: int, empty_canvas: bool,
                       no_limit: bool) -> None:
    """Refinement's cost, known before the model loads: refined candidates x optimiser steps."""
    from genstudio.limits import check_work
    if refine:
        refined = min(top_k, candidates) + int(empty_canvas)
        check_work(f"refining {refined} candidate(s) at --refine-steps {steps} (per image)", refined * steps,
                   REFINE_BUDGET, "optimiser steps", no_limit)


def _check_token_work(pipe, candidates: int, max_tokens: int | None, no_limit: bool):
    """Generation's cost, once the model says its context: candidates x SVG tokens each (the
    pipeline caps --max-tokens at the context, so the estimate does too)."""
    from genstudio.limits import check_work
    context = pipe.token_budget()
    tokens = min(max_tokens or context, context) if context else (max_tokens or 16_384)
    check_work(f"{candidates} candidate(s) x {tokens} SVG tokens (per image)", candidates * tokens,
               TOKEN_BUDGET, "tokens", no_limit)
    return pipe


def svg_distill(ctx: typer.Context,
                output: Path = typer.Option(..., "--output", "-o",
                                            help="The targets file (JSON lines) to write or resume, e.g. "
                                                 "runs/distill/targets.jsonl."),
                model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
                max_items: Optional[int] = typer.Option(600, "--max-items", min=0,
                                                        help="Most training items processed in this run."),
                max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0.0,
                                                            help="Stop cleanly (the file stays whole) after "
                                                                 "this long."),
                min_ssim: float = typer.Option(0.9, "--min-ssim", min=-1.0, max=2.0,
                                               help="Keep a refined SVG only if its rendering scores this SSIM "
                                                    "against the input."),
                max_bytes_ratio: float = typer.Option(1.5, "--max-bytes-ratio", min=0.01, max=100.0,
                                                      help="... and it is at most this many times the "
                                                           "item's own text."),
                max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=8, max=16_384,
                                                         help="... and fits this many tokens (default: the model's "
                                                              "max_length_train; use the training run's max_tokens)."),
                sets: Optional[str] = typer.Option(None, "--sets",
                                                   help="Icon sets, comma-separated (default: the recipe's, all but "
                                                        "colour emoji)."),
                glyphs: bool = typer.Option(True, "--glyphs/--no-glyphs", help="Also the font glyphs' train split."),
                candidates: int = typer.Option(1, "--candidates", "-n", min=1, max=64,
                                               help="Model candidates per image (the pipeline's best-of-N)."),
                refine_steps: int = typer.Option(REFINE_STEPS, "--refine-steps", min=1, max=5000,
                                                 help="Optimiser steps per refined candidate."),
                refine_seconds: float = typer.Option(REFINE_SECONDS, "--refine-seconds", min=0.0, max=3600.0,
                                                     help="Time bound for all refinements of one image."),
                model_wins_only: bool = typer.Option(False, "--model-wins-only",
                                                     help="Keep only targets where the refined model candidate (not "
                                                          "the empty canvas) won."),
                device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Distillation targets: refined SVGs of training images (kept when close, short and valid) for
    `genstudio train starvector --set targets=FILE`; resumable, one JSON line per item."""
    from genstudio.cli_common import check_writable, console, run_options
    from genstudio.hub import resolve
    from .distill import build_distill_targets
    from .train import load_items

    run = run_options(ctx, device, seed, precision)
    if output.exists() and not output.is_file():
        raise typer.BadParameter(f"{output} is not a file", param_hint="--output")
    check_writable(output)
    resolve(model)  # a missing checkpoint fails here, before the data loads
    items = load_items("train", sets, glyphs)
    if not items:
        raise typer.BadParameter("no training items for these --sets / --glyphs", param_hint="--sets")
    summary = build_distill_targets(model, items, output, max_items=max_items, max_minutes=max_minutes,
                                    min_ssim=min_ssim, max_bytes_ratio=max_bytes_ratio, seed=run.seed,
                                    max_tokens=max_tokens, model_wins_only=model_wins_only, device=run.device,
                                    precision=run.precision, num_candidates=candidates, refine_steps=refine_steps,
                                    refine_seconds=refine_seconds)
    console.print(f"[green]wrote[/green] {output}  kept {summary['file_kept']} of {summary['file_processed']} items")
