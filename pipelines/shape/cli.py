"""`genstudio shape encode|decode`: a mesh <-> a few hundred bytes of VAT tokens.

Not registered as a task yet (no checkpoint ships): `--model` takes a `genstudio train vat` run or an
exported folder. Part 2 (G3PT generation, the pipeline class, the app tab) builds on these commands.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

shape = typer.Typer(help="VAT tokenizer: a mesh <-> a few hundred bytes of coarse-to-fine tokens.",
                    no_args_is_help=True)

OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output file.")
ModelOpt = typer.Option(..., "--model", "-m", help="A `genstudio train vat` run or an exported VAT folder.")


def load_vat(path: Path, device: str = "cpu"):
    """The VAT tokenizer of a run (its final/ EMA weights) or of a checkpoint folder, in eval mode."""
    from genstudio.export import run_weights
    from .vat import VATTokenizer
    try:
        folder = run_weights(path)
    except FileNotFoundError as e:
        raise typer.BadParameter(str(e), param_hint="--model") from None
    return VATTokenizer.from_pretrained(folder).float().eval().to(device)


def surface_samples(path: Path, count: int, seed: int = 0):
    """A mesh file -> (1, count, 3) points and (1, count, 3) normals in VAT's frame ([-0.9, 0.9] box)."""
    import torch
    import trimesh
    from .data import normalize_mesh
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist", param_hint="--input")
    try:
        mesh = trimesh.load(path, force="mesh")
    except Exception as e:  # an unknown suffix or a broken file
        raise typer.BadParameter(f"{path} is not a readable mesh ({e})", param_hint="--input") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or not mesh.area > 0:
        raise typer.BadParameter(f"{path} holds no triangles with area", param_hint="--input")
    points, face = normalize_mesh(mesh).sample(count, return_index=True, seed=seed)
    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return as_tensor(points), as_tensor(mesh.face_normals[face])


def check_target(path: Path, overwrite: bool) -> Path:
    """Refuse to replace an existing file (e.g. the input mesh a decode would default to) without --overwrite."""
    if path.exists() and not overwrite:
        raise typer.BadParameter(f"{path} exists; pass --overwrite to replace it", param_hint="--output")
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Never leave a partial output file: write beside the target, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@shape.command()
def encode(input: Path = typer.Option(..., "--input", "-i", help="A mesh (.obj/.ply/.stl/.glb/.off)."),
           model: Path = ModelOpt,
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
           model: Path = ModelOpt,
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="Mesh file (default: INPUT.obj)."),
           resolution: int = typer.Option(128, min=8, max=512, help="Marching-cubes grid side."),
           scales: Optional[int] = typer.Option(None, min=1, help="Decode only the first N scales (coarse)."),
           overwrite: bool = OverwriteOpt, device: str = typer.Option("cpu", help="cpu / cuda / mps.")):
    """Decode VAT tokens into a mesh (occupancy on a grid + marching cubes)."""
    import torch
    from .vat import bytes_to_tokens, mesh_from_occupancy
    if not input.is_file():
        raise typer.BadParameter(f"{input} does not exist", param_hint="--input")
    target = check_target(output or input.with_suffix(".obj"), overwrite)
    if target.suffix.lower() not in (".obj", ".ply", ".stl", ".off", ".glb"):
        raise typer.BadParameter(f"{target}: expected .obj, .ply, .stl, .off or .glb", param_hint="--output")
    vat = load_vat(model, device)
    try:
        tokens = bytes_to_tokens(input.read_bytes(), vat.scales)
    except ValueError as e:
        raise typer.BadParameter(f"{input}: {e}", param_hint="--input") from None
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
