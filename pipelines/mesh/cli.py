"""`genstudio mesh`: a dense mesh or a point cloud -> an artist-like mesh with MeshAnything."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, OverwriteOpt, PrecisionOpt, SeedOpt
from genstudio.formats.mesh import OUTPUT_SUFFIXES

from . import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast

# Work budget (README: Limits and safety): mesh tokens decoded per input, counted for --max-faces (or
# the checkpoint's default) at the worst case, a greedy pass plus its sampling fallback. The shipped
# checkpoint's 2,048-token context needs at most 4,096; 16,384 is two passes of an 8k-token context
# (the size of the reference MeshAnything V2's).
WORK_BUDGET = 16_384


def mesh(ctx: typer.Context,
         input: Path = typer.Option(..., "--input", "-i",
                                    help="A mesh (.obj/.ply/.glb/.gltf/.stl/.off), points (.npy, (N, 3) or "
                                         "(N, 6) with normals), or a folder of them."),
         output: Optional[Path] = typer.Option(None, "--output", "-o",
                                               help="Output mesh: .obj, .glb, .ply, .stl or .off "
                                                    "(default: outputs/mesh/<name>.obj); a folder when --input "
                                                    "is one (each result written as it is done)."),
         marching_cubes: bool = typer.Option(False, "--marching-cubes",
                                             help="Remesh the input densely first (voxelise + marching cubes), "
                                                  "as the reference's --mc; use it for meshes that are not "
                                                  "dense scans/reconstructions."),
         max_faces: Optional[int] = typer.Option(None, "--max-faces", min=1, max=100_000,
                                                 help="Most faces to generate (default: the checkpoint's; at "
                                                      "most what its context holds)."),
         model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
         temperature: Optional[float] = typer.Option(None, min=0.0, max=10.0,
                                                     help="0 = greedy; > 0 samples (default: the checkpoint's; "
                                                          "the shipped one samples at 1)."),
         top_k: int = typer.Option(50, "--top-k", min=0, max=100_000, help="Sampling: keep the k likeliest tokens."),
         top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Sampling: nucleus."),
         candidates: Optional[int] = typer.Option(None, "--candidates", min=1, max=16,
                                                  help="Sampling: draw this many meshes in one batch and keep the "
                                                       "one nearest the input points (default: the checkpoint's)."),
         fit_steps: Optional[int] = typer.Option(None, "--fit-steps", min=0, max=2000,
                                                 help="Steps of the surface fit that moves the kept mesh's vertices "
                                                      "onto the input's surface, faces unchanged (default: the "
                                                      "checkpoint's; 0 = the decoder's vertices as they are)."),
         overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
         device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Turn a dense mesh or point cloud (or a folder of them) into a compact mesh; print #V/#F and the output path."""
    from genstudio.cli_common import (console, files_in, finish_batch, limit_time, output_file, output_folder,
                                      output_names, run_batch, run_options)
    from genstudio.formats.mesh import MESH_SUFFIXES, load_mesh_input
    from .pipeline import MeshAnythingPipeline

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    options = dict(max_faces=max_faces, seed=run.seed, temperature=temperature, top_k=top_k, top_p=top_p,
                   marching_cubes=marching_cubes, num_candidates=candidates, fit_steps=fit_steps)
    if input.is_dir():
        files = files_in(input, MESH_SUFFIXES + (".npy",), "meshes or point clouds")
        out_dir = output_folder(output, Path("outputs/mesh") / input.resolve().name)
        pipe = _check_faces(MeshAnythingPipeline.from_pretrained(model, device=run.device, precision=run.precision),
                            max_faces, no_limit, candidates)
        jobs = [(f, out_dir / name) for f, name in zip(files, output_names(files, ".obj"))]
        finish_batch(run_batch(jobs, lambda f: pipe(load_mesh_input(f), **options), "mesh", overwrite=overwrite),
                     out_dir)
        return
    target = output_file(output, input.stem, OUTPUT_SUFFIXES, "outputs/mesh", ".obj")
    source = load_mesh_input(input)  # a bad file fails here, before the model loads
    pipe = _check_faces(MeshAnythingPipeline.from_pretrained(model, device=run.device, precision=run.precision),
                        max_faces, no_limit)
    out = pipe(source, **options)
    if out.failed:
        raise RuntimeError(f"{input}: {out.message}; nothing was written (try --marching-cubes or another --seed)")
    out.save(target)
    size = f"input #F={out.input_faces}, " if out.input_faces is not None else ""
    console.print(f"[green]wrote[/green] {target}  #V={out.num_vertices} #F={out.num_faces}  "
                  f"({size}{out.message}, {out.seconds:.1f} s)")


def _check_faces(pipe, max_faces: int | None, no_limit: bool = False, candidates: int | None = None):
    """--max-faces above what the checkpoint's context holds is refused (the pipeline would cut it);
    then the decoding work (tokens for that many faces, a greedy pass + its sampling fallback of one pass
    per candidate) against WORK_BUDGET."""
    from genstudio.limits import UsageError, check_work
    model = pipe.model
    budget = model.face_budget()
    if max_faces is not None and max_faces > budget:
        raise UsageError(f"--max-faces {max_faces}: this checkpoint generates at most {budget} faces")
    faces = min(max_faces or int(model.config.max_faces), budget)
    per_face = 10 if model.config.tokenization == "amt" else model.config.tokens_per_face  # amt: worst case
    tokens = min(model.token_budget(), per_face * faces + 1)
    passes = 1 + (candidates or model.config.default_candidates)  # worst case: greedy, then its sampled fallback
    check_work(f"up to {faces} faces ({tokens} mesh tokens a pass, {passes} passes: greedy + a sampling fallback "
               "of one pass per candidate)", passes * tokens, WORK_BUDGET, "tokens", no_limit)
    return pipe
