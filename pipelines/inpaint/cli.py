"""`genstudio inpaint`: N plausible completions of an image's holes with PUT."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, OverwriteOpt, PrecisionOpt, SeedOpt

from . import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast

# Work budget: samples x the working long side squared. PUT's cost grows faster than the pixels
# (more tokens to fill, each pass attending over more tokens): 4 samples at 256 take minutes on a
# CPU, at 1024 about a day.
WORK_BUDGET = 4 * 256 ** 2


def inpaint(ctx: typer.Context,
            image: Path = typer.Option(..., "--image", "-i", help="The image to complete (PNG/JPEG/...), or a folder."),
            mask: Path = typer.Option(..., "--mask", "-m",
                                      help="Mask of the same size: white (or painted alpha) = hole to fill; a folder with --image DIR."),
            num_samples: int = typer.Option(4, "--num-samples", "-n", min=1, max=32,
                                            help="How many different completions (pluralistic)."),
            output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                  help="Output folder (default: outputs/inpaint/<image name>/). "
                                                       "With folders: --image DIR --mask DIR (a mask of the same "
                                                       "name per image); each image's fills written when done."),
            overwrite: OverwriteOpt = False,
            top_k: int = typer.Option(50, "--top-k", min=1, max=100_000,
                                      help="Sample each token from the k most likely."),
            temperature: float = typer.Option(1.0, min=0.01, max=10.0, help="Sampling temperature."),
            tokens_per_step: int = typer.Option(4, "--tokens-per-step", min=1, max=65_536,
                                                help="Masked tokens filled per transformer pass."),
            resolution: Optional[int] = typer.Option(None, "--resolution", min=8, max=2048,
                                                     help="Long side the model works at (default: its training "
                                                          "size); known pixels are kept at full resolution."),
            validation_masks: Optional[int] = typer.Option(
                None, "--validation-masks", min=0, max=16,
                help="Extra holes drawn over known pixels that decide how much of the decoder's residual over "
                     "its classical fill to keep (models with a reference fill; default: 3; 0 = off)."),
            model: str = typer.Option(DEFAULT_MODEL, "--model", help="Checkpoint name, folder or hub id."),
            max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
            device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Fill the white region of --mask in --image, N different ways; write N PNGs (all or none)."""
    from genstudio.cli_common import console, limit_time, output_folder, run_options
    from genstudio.limits import check_work
    from genstudio.render import InputError, load_image
    from .pipeline import PUTInpaintPipeline, prepare_hole

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    if resolution is not None:  # None: the model's training size, within the budget
        check_work(f"{num_samples} sample(s) at --resolution {resolution}", num_samples * resolution ** 2,
                   WORK_BUDGET, "working pixels (samples x resolution^2)", no_limit)
    options = dict(num_samples=num_samples, top_k=top_k, temperature=temperature, tokens_per_step=tokens_per_step,
                   seed=run.seed, resolution=resolution, validation_masks=validation_masks)
    if image.is_dir():
        _folder(image, mask, output, model, run, options, overwrite)
        return

    for path, what in ((image, "image"), (mask, "mask")):
        if not path.is_file():
            raise InputError(f"{what} {path} does not exist or is not a file")
    img = load_image(image)
    hole = _load_mask(mask)
    try:
        prepare_hole(hole, img.size)  # fail early
    except InputError as e:
        raise InputError(f"{mask}: {e}") from None
    out_dir = output_folder(output, Path("outputs/inpaint") / image.stem)

    pipe = PUTInpaintPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    result = pipe(img, hole, progress=True, **options)
    result.source = str(image)
    paths = result.save(out_dir)
    console.print(f"hole {100 * result.info['hole_ratio']:.1f}% of {img.size[0]}x{img.size[1]}, model at "
                  f"{result.work_size[0]}x{result.work_size[1]}, {result.info['masked_tokens']} tokens sampled "
                  f"in {result.info['sampling_steps']} steps"
                  + (f"; residual weight {result.info['residual_weight']:g} from {result.info['validation_masks']} "
                     "validation holes" if "residual_weight" in result.info else ""))
    for p in paths:
        console.print(f"wrote {p}")


def _folder(images: Path, masks: Path, output: Optional[Path], model: str, run, options: dict,
            overwrite: bool) -> None:
    """--image DIR --mask DIR: each image with the mask of the same stem -> OUT/<stem>_inpaint_<i>.png."""
    from genstudio.cli_common import files_in, finish_batch, output_folder, output_names, run_batch
    from genstudio.render import InputError, load_image
    from .pipeline import IMAGE_SUFFIXES, PUTInpaintPipeline
    if not masks.is_dir():
        raise InputError(f"--image is a folder, so --mask must be a folder of masks with the same names; {masks} is not")
    mask_of = {p.stem: p for p in files_in(masks, IMAGE_SUFFIXES, "masks")}
    files = files_in(images, IMAGE_SUFFIXES, "images")
    out_dir = output_folder(output, Path("outputs/inpaint") / images.resolve().name)
    pipe = PUTInpaintPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    n = options["num_samples"]

    def fill(path: Path):
        if path.stem not in mask_of:
            raise InputError(f"no mask named {path.stem}.* in {masks}")
        out = pipe(load_image(path), _load_mask(mask_of[path.stem]), progress=False, **options)
        out.source = str(path)
        return out

    def done(target: Path) -> bool:
        return all(p.exists() for p in ([target] if n == 1 else
                                        [target.with_name(f"{target.stem}_{i}{target.suffix}") for i in range(n)]))
    jobs = [(f, out_dir / name) for f, name in zip(files, output_names(files, "_inpaint.png"))]
    finish_batch(run_batch(jobs, fill, "inpaint", overwrite=overwrite, done=done), out_dir)


def _load_mask(path: Path):
    from genstudio.render import load_image
    return _alpha(path) if _has_alpha(path) else load_image(path, "L")


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
