"""`genstudio shape generate|encode|decode`: text/class -> 3D shapes (G3PT), a mesh <-> a few hundred bytes (VAT).

    genstudio shape generate --text "a torus" -n 4 -o out/            # out/000.obj + out/000.vat ...
    genstudio shape generate --class cone --format glb -o cone.glb
    genstudio shape encode -i bunny.obj                                # bunny.vat: ~160 bytes
    genstudio shape decode -i bunny.vat --scales 3 -o coarse.obj       # the first 3 scales only

`--model` (default: the shipped shape checkpoint) takes a checkpoint name or folder (vat/ + g3pt/);
encode/decode also take a bare VAT folder or a `genstudio train vat` run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, PrecisionOpt, SeedOpt

from . import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast

shape = typer.Typer(help="3D shapes: text/class -> meshes with G3PT; a mesh <-> a few hundred bytes of VAT tokens.",
                    no_args_is_help=True)

OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output file.")
ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m",
                        help="Checkpoint name or folder (vat/ + g3pt/), a VAT folder or a `genstudio train vat` run.")
MAX_VAT_BYTES = 1 << 20  # a .vat file is a few hundred bytes; anything this big is not one


def vat_folder(model: str | Path) -> Path:
    """The VAT weights of a shape checkpoint (its vat/), a VAT folder, or a run (its final/), by path or name."""
    from genstudio.export import run_weights
    from genstudio.hub import CheckpointNotFound, resolve
    path = Path(model)
    if not path.exists():
        try:  # a shipped checkpoint name (or a hub id)
            path = resolve(str(model))
        except CheckpointNotFound as e:
            raise typer.BadParameter(str(e), param_hint="--model") from None
    if (path / "vat" / "config.json").is_file():
        return path / "vat"
    try:
        return run_weights(path)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--model") from None


def load_vat(path: str | Path, device: str = "cpu"):
    """The VAT tokenizer of a checkpoint, a VAT folder or a run (its final/ EMA weights), in eval mode."""
    from .vat import VATTokenizer
    folder = vat_folder(path)
    try:
        return VATTokenizer.from_pretrained(folder).float().eval().to(device)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise typer.BadParameter(f"{folder} is not a VAT checkpoint ({first})", param_hint="--model") from None


def surface_samples(path: Path, count: int, seed: int = 0):
    """A mesh file -> (1, count, 3) points and (1, count, 3) normals in VAT's frame ([-0.9, 0.9] box);
    the core's mesh loader checks the file (existence, size, readability, degenerate or non-finite data)."""
    from genstudio.render import InputError
    from .pipeline import surface_samples as sample
    try:
        return sample(path, count, seed)
    except InputError as e:
        raise typer.BadParameter(str(e), param_hint="--input") from None


def check_target(path: Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file (e.g. the input mesh a decode would default to) without --overwrite."""
    if path.exists() and not overwrite:
        raise typer.BadParameter(f"{path} exists; pass --overwrite to replace it", param_hint="--output")
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Never leave a partial output file (the core's write-beside-then-rename)."""
    from genstudio.render import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@shape.command()
def encode(input: Path = typer.Option(..., "--input", "-i", help="A mesh (.obj/.ply/.stl/.glb/.off)."),
           model: str = ModelOpt,
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Token file (default: INPUT.vat)."),
           points: int = typer.Option(2048, min=16, max=100_000, help="Surface points sampled for the encoder."),
           seed: int = typer.Option(0, help="Seed of the surface sampling."),
           overwrite: bool = OverwriteOpt, device: str = typer.Option("cpu", help="cpu / cuda / mps.")):
    """Encode a mesh into VAT tokens; print the byte count and the output path."""
    import torch
    from .vat import tokens_to_bytes
    target = check_target(output or input.with_suffix(".vat"), overwrite)
    pts, normals = surface_samples(input, points, seed)
    vat = load_vat(model, device)
    with torch.no_grad():
        enc = vat.encode(pts.to(device), normals.to(device))
    data = tokens_to_bytes([i[0] for i in enc.indices], vat.config.codebook_size)
    write_atomically(target, data)
    typer.echo(f"wrote {target}  {len(data)} bytes ({sum(vat.scales)} tokens in {len(vat.scales)} scales)")


@shape.command()
def decode(input: Path = typer.Option(..., "--input", "-i", help="A .vat token file from `genstudio shape encode`."),
           model: str = ModelOpt,
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Mesh file (default: INPUT.obj)."),
           resolution: int = typer.Option(128, min=8, max=512, help="Marching-cubes grid side."),
           scales: Optional[int] = typer.Option(None, min=1, help="Decode only the first N scales (coarse)."),
           overwrite: bool = OverwriteOpt, device: str = typer.Option("cpu", help="cpu / cuda / mps.")):
    """Decode VAT tokens into a mesh (occupancy on a grid + marching cubes)."""
    import torch
    from .vat import bytes_to_tokens, mesh_from_occupancy
    if not input.is_file():
        raise typer.BadParameter(f"{input} does not exist", param_hint="--input")
    if input.stat().st_size > MAX_VAT_BYTES:
        raise typer.BadParameter(f"{input} is {input.stat().st_size:,} bytes: not a VAT token file", param_hint="--input")
    target = check_target(output or input.with_suffix(".obj"), overwrite)
    if target.suffix.lower() not in (".obj", ".ply", ".stl", ".off", ".glb"):
        raise typer.BadParameter(f"{target}: expected .obj, .ply, .stl, .off or .glb", param_hint="--output")
    vat = load_vat(model, device)
    try:
        tokens = bytes_to_tokens(input.read_bytes(), vat.scales)
    except ValueError as e:
        raise typer.BadParameter(f"{input}: {e}", param_hint="--input") from None
    if scales is not None and scales > len(vat.scales):
        raise typer.BadParameter(f"the model has {len(vat.scales)} scales, got {scales}", param_hint="--scales")
    with torch.no_grad():
        triplane = vat.decode([t.to(device) for t in tokens[:scales]])
        grid = torch.sigmoid(vat.occupancy_grid(triplane, resolution))[0]
    try:
        mesh = mesh_from_occupancy(grid)
    except ValueError as e:
        raise typer.BadParameter(f"{input}: the decoded shape is empty ({e})", param_hint="--input") from None
    data = mesh.export(file_type=target.suffix.lstrip(".").lower())
    write_atomically(target, data.encode() if isinstance(data, str) else data)
    typer.echo(f"wrote {target}  #V={len(mesh.vertices)} #F={len(mesh.faces)}")


@shape.command()
def generate(ctx: typer.Context,
             text: Optional[str] = typer.Option(None, "--text", "-t", help='A prompt, e.g. "a torus".'),
             class_name: Optional[str] = typer.Option(None, "--class", "-c", help="A class the model knows, e.g. torus."),
             num: int = typer.Option(1, "--num", "-n", min=1, max=16, help="Shapes to generate."),
             output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                   help="A folder (000.obj + 000.vat ...) or a mesh file. "
                                                        "Default: outputs/shape/<prompt>/."),
             file_format: Optional[str] = typer.Option(None, "--format", "-f", help="obj | glb | ply (folder output)."),
             guidance: float = typer.Option(1.0, "--guidance", "-g", min=0.0, max=20.0,
                                            help="Classifier-free guidance scale (1 = none)."),
             temperature: float = typer.Option(1.0, "--temperature", min=0.0, max=5.0, help="0 = greedy."),
             top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k likeliest codes (0 = all)."),
             resolution: int = typer.Option(64, "--resolution", min=16, max=256, help="Marching-cubes grid side."),
             scales: Optional[int] = typer.Option(None, "--scales", min=1, help="Decode only the first N scales."),
             model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name or folder (vat/ + g3pt/)."),
             overwrite: bool = OverwriteOpt, max_seconds: MaxSecondsOpt = None,
             device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Generate 3D shapes from a prompt and/or a class (neither: unconditional samples) with G3PT."""
    import re

    from genstudio.cli_common import check_new_file, console, limit_time, output_folder, run_options
    from genstudio.limits import check_time
    from genstudio.render import InputError
    from .pipeline import MESH_FORMATS

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    # 1. Every input and output checked before the model loads.
    if text is not None and not text.strip():
        raise InputError("--text is empty; give a prompt such as \"a torus\" (or --class)")
    suffix = None
    if file_format is not None:
        suffix = "." + file_format.lower().lstrip(".")
        if suffix not in MESH_FORMATS:
            raise InputError(f"--format {file_format!r}: use one of {', '.join(f[1:] for f in MESH_FORMATS)}")
    if output is not None and output.suffix:
        if output.suffix.lower() not in MESH_FORMATS:
            raise InputError(f"output {output} should end in {', '.join(MESH_FORMATS)} or be a folder")
        if suffix is not None and suffix != output.suffix.lower():
            raise InputError(f"--format {file_format} does not match the output file {output.name}")
        check_new_file(output, overwrite)
        target = output
    else:
        slug = re.sub(r"[^a-z0-9]+", "-", (text or class_name or "unconditional").lower()).strip("-")[:40] or "shape"
        target = output_folder(output, Path("outputs/shape") / slug)
        if any(target.glob("[0-9][0-9][0-9].*")) and not overwrite:
            raise InputError(f"{target} already holds shapes; pass --overwrite to replace them or pick another folder")

    # 2. Generate, then write whole outputs only (past --max-seconds: nothing).
    from .pipeline import G3PTPipeline
    pipe = G3PTPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    out = pipe(text, class_name=class_name, num_samples=num, guidance_scale=guidance, temperature=temperature,
               top_k=top_k, seed=run.seed, resolution=resolution, scales=scales, progress=True)
    check_time()
    if out.failed:
        raise RuntimeError(out.message)
    out.file_format = suffix or ".obj"
    written = out.save(target)
    shapes = len(out.good)
    note = f" ({out.message})" if out.message else ""
    where = target if not target.suffix else ", ".join(str(p) for p in written)
    console.print(f"[green]wrote[/green] {where}: {shapes} shape{'s' if shapes != 1 else ''}{note}, "
                  f"{out.num_bytes[0]} bytes of tokens each, seed {out.metadata['seed']}, {out.seconds:.1f} s",
                  soft_wrap=True)
