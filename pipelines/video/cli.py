"""`genstudio video`: predict, interpolate, complete, animate or generate a short clip with VDT.

    genstudio video --task predict --input clip.mp4 -o future.gif --num-known 4
    genstudio video --task complete --input clip.gif --mask hole.png -o filled.gif
    genstudio video --task generate -o sample.gif --seed 3
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, PrecisionOpt, SeedOpt

from genstudio.formats.video import OUTPUT_SUFFIXES

from . import DEFAULT_MODEL, TASKS  # no torch at import: `genstudio --help` stays fast

# Work budget (README: Limits and safety): frames x pixels per frame x sampling steps x model passes
# per step (2 with SIMS guidance): the shipped 16-frame 32x32 clip at 500 steps (20x the default 25),
# or a 64x64 clip at 125. The checkpoint fixes frames and size; --steps and --sims multiply them.
WORK_BUDGET = 16 * 32 * 32 * 500


def video(ctx: typer.Context,
          task: str = typer.Option("predict", "--task", "-t", help=f"One of: {', '.join(TASKS)}."),
          input: Optional[Path] = typer.Option(None, "--input", "-i",
                                               help="A video (MP4/GIF/AVI/...), a folder of frames, or one image "
                                                    "(animate). Not needed for generate."),
          output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                help="Result .gif or .mp4 (default: outputs/video/<name>-<task>.gif)."),
          num_known: Optional[int] = typer.Option(None, "--num-known", "-k", min=1, max=1024,
                                                  help="Given frames for predict/backward/interpolate (default: "
                                                       "half the clip for predict, 4 keyframes for interpolate)."),
          mask: Optional[Path] = typer.Option(None, "--mask",
                                              help="For complete (or any task): an image, white = generate."),
          steps: int = typer.Option(25, "--steps", "-s", min=1, max=1000, help="Sampling steps (= model calls)."),
          scheduler: str = typer.Option("dpm", "--scheduler", help="dpm (DPM-Solver++), ddim, euler or ddpm."),
          model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
          fps: float = typer.Option(8.0, "--fps", min=0.5, max=60, help="Frame rate of the written video."),
          sims: Optional[float] = typer.Option(None, "--sims", min=0.0, max=10.0,
                                               help="SIMS negative guidance w (a checkpoint made by `genstudio sims`; "
                                                    "default: its own w, 0 = off)."),
          preview: Optional[Path] = typer.Option(None, "--preview",
                                                 help="Also write what the model was given (generated part dimmed)."),
          max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
          device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Run one VDT task on a clip and write the result; prints what was given, what was generated,
    and (when the input covers the generated frames) the error against it."""
    from genstudio.cli_common import check_writable, console, limit_time, output_file, run_options
    from genstudio.render import InputError

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)

    if task not in TASKS:
        raise typer.BadParameter(f"unknown task {task!r}; choose from {', '.join(TASKS)}", param_hint="--task")
    if input is None and task != "generate":
        raise InputError(f"--task {task} needs --input (a video, GIF, folder of frames or image)")
    if input is not None and not input.exists():
        raise InputError(f"input {input} does not exist")
    if mask is not None and not mask.exists():
        raise InputError(f"mask {mask} does not exist")
    target = output_file(output, f"{input.stem}-{task}" if input is not None else task, OUTPUT_SUFFIXES,
                         "outputs/video", ".gif")
    if preview is not None:
        if preview.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"preview {preview} should end in .gif or .mp4")
        check_writable(preview)

    from .pipeline import VDTPipeline, load_frames
    if input is not None:
        load_frames(input, max_frames=1)  # a bad file fails here, before the model loads
    pipe = VDTPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    _check_work(pipe, steps, sims, no_limit)
    out = pipe(task=task, frames=str(input) if input is not None else None, mask=mask, num_known=num_known,
               num_inference_steps=steps, scheduler=scheduler, seed=run.seed, sims_guidance=sims)
    out.save(target, fps=fps, preview=preview)
    for note in out.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    given = int((~out.mask).reshape(len(out.mask), -1).all(axis=1).sum())
    line = (f"[green]wrote[/green] {target}  {task}: {len(out.frames)} frames "
            f"{out.frames.shape[2]}x{out.frames.shape[1]}, {given} given whole, "
            f"{out.mask.mean():.0%} generated, {out.nfe} model calls ({scheduler}), {out.seconds:.1f} s")
    scores = out.reference_scores()
    if scores:
        line += f"; vs input: MSE={scores['mse']:.4f} PSNR={scores['psnr']:.2f} dB"
    console.print(line, soft_wrap=True)


def _check_work(pipe, steps: int, sims: float | None, no_limit: bool) -> None:
    """Refuse sampling over WORK_BUDGET (unless --no-limit), once the checkpoint gives the clip's shape."""
    from genstudio.limits import check_work
    frames, _, height, width = pipe.transformer.sample_shape
    w = pipe.sims_guidance if sims is None else sims
    passes = 2 if w and pipe.negative_transformer is not None else 1
    guided = " with SIMS guidance (2 model passes a step)" if passes == 2 else ""
    check_work(f"{frames} frames of {width}x{height} at {steps} steps{guided}", frames * height * width * steps * passes,
               WORK_BUDGET, "pixel-steps (frames x pixels x steps)", no_limit)
