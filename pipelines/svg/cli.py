"""`genstudio svg`: image -> SVG code with StarVector (a file, or a folder of images)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .pipeline import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _images_in(folder: Path) -> list[Path]:
    from genstudio.render import InputError
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder} holds no images (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return files


def _svg_names(files: list[Path]) -> list[str]:
    """logo.png -> logo.svg; a stem shared by two inputs (a.png, a.jpg) keeps the suffix: a.jpg.svg."""
    stems = [p.stem for p in files]
    return [f"{p.stem}.svg" if stems.count(p.stem) == 1 else f"{p.name}.svg" for p in files]


def _describe(out) -> str:
    s = out.score
    return (f"SSIM={s['ssim']:.4f} MSE={s['mse']:.5f} paths={s['paths']} bytes={s['bytes']}  "
            f"({out.message}{f', candidate #{out.best}' if len(out.candidates) > 1 else ''})")


def svg(image: Path = typer.Option(..., "--image", "-i", help="An image (PNG/JPEG/...) or a folder of images."),
        output: Optional[Path] = typer.Option(None, "--output", "-o",
                                              help="SVG file, or a folder when --image is a folder "
                                                   "(default: outputs/svg/<name>.svg)."),
        candidates: int = typer.Option(1, "--candidates", "-n", min=1, max=64,
                                       help="Best-of-N: sample N SVGs, keep the one closest to the image "
                                            "(1 = greedy)."),
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
        temperature: float = typer.Option(0.8, min=0.0, help="Sampling temperature (N > 1)."),
        top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling (N > 1)."),
        max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1,
                                                 help="Most SVG tokens per candidate (default: the model's)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for sampling (default: the global --seed).")):
    """Convert an image (or a folder of images) into SVG code; print the score and the output path."""
    from genstudio.cli import SETTINGS, console
    from genstudio.render import InputError, load_image, write_text
    from .pipeline import StarVectorPipeline

    if not image.exists():
        raise InputError(f"image {image} does not exist")
    options = dict(num_candidates=candidates, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_tokens, seed=seed if seed is not None else SETTINGS.seed)

    if image.is_dir():
        files = _images_in(image)
        out_dir = output or Path("outputs/svg") / image.resolve().name
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--image is a folder, so -o must be a folder; {out_dir} is a file")
        pipe = StarVectorPipeline.from_pretrained(model, device=SETTINGS.device)
        bad, written = [], 0
        for path, name, out in zip(files, _svg_names(files), pipe.batch(files, **options)):
            if out.failed:
                bad.append(f"{path.name} ({out.message})")
                continue
            write_text(out_dir / name, out.svg)
            written += 1
        console.print(f"[green]wrote[/green] {written} SVG{'s' if written != 1 else ''} to {out_dir}")
        if bad:
            raise RuntimeError(f"{len(bad)} of {len(files)} images were not converted: " + "; ".join(bad))
        return

    picture = load_image(image)  # a bad file fails here, before the model loads
    target = output or Path("outputs/svg") / f"{image.stem}.svg"
    if target.is_dir():
        target = target / f"{image.stem}.svg"
    if target.suffix.lower() != ".svg":
        raise InputError(f"output {target} should end in .svg")
    pipe = StarVectorPipeline.from_pretrained(model, device=SETTINGS.device)
    out = pipe(picture, **options)
    if out.failed:
        raise RuntimeError(f"{image}: {out.message}; nothing was written "
                           f"(try --candidates 8 or a larger --max-tokens)")
    out.save(target)
    console.print(f"[green]wrote[/green] {target}  {_describe(out)}")
