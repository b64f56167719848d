"""`genstudio inpaint`: N plausible completions of an image's holes with PUT."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, PrecisionOpt, SeedOpt

from .pipeline import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast


def inpaint(ctx: typer.Context,
            image: Path = typer.Option(..., "--image", "-i", help="The image to complete (PNG/JPEG/...)."),
            mask: Path = typer.Option(..., "--mask", "-m",
                                      help="Mask of the same size: white (or painted alpha) = hole to fill."),
            num_samples: int = typer.Option(4, "--num-samples", "-n", min=1, max=32,
                                            help="How many different completions (pluralistic)."),
            output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                  help="Output folder (default: outputs/inpaint/<image name>/)."),
            top_k: int = typer.Option(50, "--top-k", min=1, help="Sample each token from the k most likely."),
            temperature: float = typer.Option(1.0, min=0.01, help="Sampling temperature."),
            tokens_per_step: int = typer.Option(4, "--tokens-per-step", min=1,
                                                help="Masked tokens filled per transformer pass."),
            resolution: Optional[int] = typer.Option(None, "--resolution", min=8,
                                                     help="Long side the model works at (default: its training "
                                                          "size); known pixels are kept at full resolution."),
            model: str = typer.Option(DEFAULT_MODEL, "--model", help="Checkpoint name, folder or hub id."),
            device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Fill the white region of --mask in --image, N different ways; write N PNGs (all or none)."""
    from genstudio.cli_common import console, output_folder, run_options
    from genstudio.render import InputError, load_image
    from .pipeline import PUTInpaintPipeline, prepare_hole

    run = run_options(ctx, device, seed, precision)

    for path, what in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            raise InputError(f"{what} {path} does not exist or is not a file")
    img = load_image(image)
    prepare_hole(load_image(mask, "L") if not _has_alpha(mask) else _alpha(mask), img.size)  # fail early
    out_dir = output_folder(output, Path("outputs/inpaint") / image.stem)

    pipe = PUTInpaintPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    result = pipe(img, _alpha(mask) if _has_alpha(mask) else load_image(mask, "L"), num_samples=num_samples,
                  top_k=top_k, temperature=temperature, tokens_per_step=tokens_per_step,
                  seed=run.seed, resolution=resolution, progress=True)
    result.source = str(image)
    paths = result.save(out_dir)
    console.print(f"hole {100 * result.info['hole_ratio']:.1f}% of {img.size[0]}x{img.size[1]}, model at "
                  f"{result.work_size[0]}x{result.work_size[1]}, {result.info['masked_tokens']} tokens sampled "
                  f"in {result.info['sampling_steps']} steps")
    for p in paths:
        console.print(f"wrote {p}")


def _has_alpha(path: Path) -> bool:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.mode in ("RGBA", "LA") and im.getchannel("A").getextrema()[0] < 255
    except Exception:
        return False  # load_image reports unreadable files clearly


def _alpha(path: Path):
    from PIL import Image
    with Image.open(path) as im:
        return im.convert("RGBA").getchannel("A")
