"""`genstudio multiview`: consistent views of one object from text and/or a front image (MV-Adapter).

    genstudio multiview --text "a red teapot" --views 6 -o out/              # out/grid.png + view_00.png ...
    genstudio multiview --text "a red box" --azimuths 0,90,180,270 --elevation 20 -o out/
    genstudio multiview --image front.png --views 4 --low-memory -o out/

Everything the user gives is checked (azimuth list, image file, view count, output folder) before
the model loads; the outputs are written whole or not at all.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, OverwriteOpt, PrecisionOpt, SeedOpt

from . import DEFAULT_BASE, DEFAULT_MODEL, MAX_STEPS, MAX_VIEWS  # no torch at import: `genstudio --help` stays fast


def parse_degrees(text: str, option: str) -> list[float]:
    """'0,60,120' -> [0.0, 60.0, 120.0]; anything else is an InputError naming the option."""
    import math

    from genstudio.render import InputError
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = None
    if not parts or values is None or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} {text!r}: expected comma-separated degrees, e.g. 0,90,180,270")
    return values


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "views"


def multiview(ctx: typer.Context,
              text: Optional[str] = typer.Option(None, "--text", "-t", help="What the object is (a prompt)."),
              image: Optional[Path] = typer.Option(None, "--image", "-i",
                                                   help="A front view of the object (image-to-multiview)."),
              views: Optional[int] = typer.Option(None, "--views", "-n", min=1, max=MAX_VIEWS,
                                                  help="Evenly spaced views (default 6; or as many as --azimuths)."),
              azimuths: Optional[str] = typer.Option(None, "--azimuths",
                                                     help="Degrees from the front view, e.g. 0,90,180,270."),
              elevation: str = typer.Option("0", "--elevation",
                                            help="Camera elevation in degrees (-89..89): one, or one per view."),
              steps: int = typer.Option(30, "--steps", min=1, max=MAX_STEPS, help="Sampling steps."),
              guidance: float = typer.Option(3.0, "--guidance", min=1.0, max=50.0,
                                             help="Classifier-free guidance (1 = off)."),
              image_guidance: Optional[float] = typer.Option(None, "--image-guidance", min=1.0, max=50.0,
                                                             help="With --text and --image: the image's own scale."),
              base: str = typer.Option(DEFAULT_BASE, "--base",
                                       help="Base UNet: checkpoint name, folder, run or hub id."),
              adapter: str = typer.Option(DEFAULT_MODEL, "--adapter", "-m",
                                          help="MV-Adapter: checkpoint name, folder, run, or a released .safetensors."),
              low_memory: bool = typer.Option(False, "--low-memory",
                                              help="Guidance branches one at a time, VAE one view at a time."),
              output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                    help="A folder (grid.png + view_XX.png) or a .png (the grid)."),
              overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None,
              device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Multi-view images of one object from text and/or a front image with MV-Adapter."""
    from genstudio.cli_common import check_new_file, console, limit_time, output_folder, run_options
    from genstudio.limits import check_time
    from genstudio.render import InputError, load_image

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    # 1. inputs, all before the model loads
    if text is not None and not text.strip():
        raise InputError("--text is empty")
    if text is None and image is None:
        raise InputError("give --text PROMPT, --image FRONT_VIEW or both")
    azimuth_list = parse_degrees(azimuths, "--azimuths") if azimuths is not None else None
    if azimuth_list is not None and len(azimuth_list) > MAX_VIEWS:
        raise InputError(f"--azimuths gives {len(azimuth_list)} views; at most {MAX_VIEWS}")
    if azimuth_list is not None and views is not None and views != len(azimuth_list):
        raise InputError(f"--views {views} but --azimuths gives {len(azimuth_list)} views")
    count = len(azimuth_list) if azimuth_list is not None else (views or 6)
    elevations = parse_degrees(elevation, "--elevation")
    if len(elevations) not in (1, count):
        raise InputError(f"--elevation gives {len(elevations)} values for {count} views (give one or one per view)")
    if any(abs(e) >= 90 for e in elevations):
        raise InputError(f"--elevation {elevation}: elevations must lie between -89 and 89 degrees")
    front = None
    if image is not None:
        if not image.is_file():
            raise InputError(f"image {image} does not exist" if not image.exists() else f"image {image} is not a file")
        front = load_image(image)  # a corrupt, empty or over-budget file is refused here
    stem = _slug(text or image.stem)
    if output is not None and output.suffix:
        if output.suffix.lower() != ".png":
            raise InputError(f"output {output} should be a folder or a .png file (the grid)")
        target = check_new_file(output, overwrite)
    else:
        target = output_folder(output, Path("outputs/multiview") / stem)
        if (target / "grid.png").exists() and not overwrite:
            raise InputError(f"{target} already holds views; pass --overwrite to replace them or pick another folder")

    # 2. the model, the views
    from .pipeline import MVAdapterPipeline
    pipe = MVAdapterPipeline.from_pretrained(base, adapter, device=run.device, precision=run.precision)
    out = pipe(text, image=front, num_views=views, azimuths=azimuth_list,
               elevation=elevations[0] if len(elevations) == 1 else elevations, num_inference_steps=steps,
               guidance_scale=guidance, image_guidance_scale=image_guidance, seed=run.seed, progress=True,
               low_memory=low_memory)
    check_time()  # past --max-seconds: nothing written
    out.save(target)
    angles = ", ".join(f"{a:g}" for a in out.azimuths)
    console.print(f"[green]wrote[/green] {target}: {len(out.images)} views (azimuths {angles}; "
                  f"{out.metadata['conditioning']}), {out.seconds:.1f} s", soft_wrap=True)
