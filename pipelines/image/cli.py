"""`genstudio generate`: class-conditional images from a latent DiT (SIMS guidance when the checkpoint has it).

    genstudio generate --class A --class g -n 8 -o out/           # out/A_000.png ... + out/grid.png
    genstudio generate --class 7 -n 16 -o sevens.png --guidance 3  # one grid PNG
    genstudio generate --model dit-glyphs-S-sims --sims 1.0 --class A -o a.png
    genstudio generate --model DiT-XL-2-256 --class 207 -o dog.png  # official weights (network once)
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, PrecisionOpt, SeedOpt

from . import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast

WORK_BUDGET = 64 * 4 * 50  # images x sampling steps: 64 classes x 4 images at 50 steps (README: Limits and safety)


def generate(ctx: typer.Context,
             classes: List[str] = typer.Option([], "--class", "-c",
                                               help="A class name (e.g. A) or number; repeat for several. "
                                                    "Default: every class of the model (up to 64)."),
             num: int = typer.Option(4, "--num", "-n", min=1, max=1024, help="Images per class."),
             output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                   help="A .png (one grid) or a folder (one PNG per image + grid.png). "
                                                        "Default: outputs/generate/grid.png."),
             guidance: float = typer.Option(2.0, "--guidance", "-g", min=1.0, max=50.0,
                                            help="Classifier-free guidance scale (1 = off)."),
             sims: Optional[float] = typer.Option(None, "--sims", min=0.0, max=10.0,
                                                  help="SIMS negative guidance w (needs a SIMS checkpoint; "
                                                       "default: the checkpoint's own, 0 = off)."),
             sims_mode: str = typer.Option("guidance", "--sims-mode",
                                           help="guidance (two models per step) or weights (merged once)."),
             steps: int = typer.Option(25, "--steps", "-s", min=1, max=1000, help="Sampling steps."),
             scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                                     help="ddim, dpm, euler or ddpm (default: the checkpoint's, DDIM)."),
             model: str = typer.Option(DEFAULT_MODEL, "--model", "-m",
                                       help="Checkpoint name or folder; DiT-XL-2-256 / DiT-XL-2-512 or a .pt file "
                                            "for official weights."),
             vae: Optional[str] = typer.Option(None, "--vae", help="With official weights: the AutoencoderKL "
                                                                  "(hub id or folder; default stabilityai/sd-vae-ft-ema)."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output files."),
             max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
             device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Generate images for the given classes and write a grid (or a folder of PNGs)."""
    from genstudio.cli_common import check_new_file, console, limit_time, run_options
    from genstudio.limits import check_work
    from genstudio.render import InputError

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    if classes:  # without --class the count is known once the model is (checked again below)
        check_work(f"{num} image(s) of {len(classes)} class(es) at {steps} steps", num * len(classes) * steps,
                   WORK_BUDGET, "image-steps", no_limit)
    target = output or Path("outputs/generate/grid.png")
    if target.suffix and target.suffix.lower() != ".png":
        raise InputError(f"output {target} should be a .png file or a folder")
    grid_path = target if target.suffix else target / "grid.png"
    check_new_file(grid_path, overwrite)

    from .pipeline import OFFICIAL, DiTImagePipeline
    if model in OFFICIAL or Path(model).suffix in (".pt", ".pth", ".safetensors"):
        pipe = DiTImagePipeline.from_official(model, **({"vae": vae} if vae else {}), device=run.device,
                                              precision=run.precision)
    else:
        pipe = DiTImagePipeline.from_pretrained(model, device=run.device, precision=run.precision)
    labels = list(classes) or list(range(min(pipe.transformer.num_classes, 64)))
    check_work(f"{num} image(s) of {len(labels)} class(es) at {steps} steps", num * len(labels) * steps,
               WORK_BUDGET, "image-steps", no_limit)
    out = pipe(labels, num_images_per_class=num, guidance_scale=guidance, num_inference_steps=steps,
               scheduler=scheduler, sims_guidance=sims, sims_mode=sims_mode, seed=run.seed)
    if target.suffix:
        out.save(target)
    else:
        from genstudio.pipeline import save_all
        out.save(target)  # one PNG per image
        save_all([(grid_path, lambda tmp: out.grid().save(tmp, format="PNG"))])
    w = out.metadata.get("sims_guidance") or 0
    console.print(f"[green]wrote[/green] {target}: {len(out.images)} images of {len(set(out.labels))} classes, "
                  f"CFG {guidance:g}" + (f", SIMS w={w:g} ({sims_mode})" if w else "") +
                  f", {steps} steps, {out.nfe} network evaluations per image, {out.seconds:.1f} s", soft_wrap=True)
