"""`genstudio face`: faces from identity vectors with Vec2Face (avatar faces with the shipped model).

    genstudio face --image face.png -n 8 -o out/                  # out/000.png ... (variations of a face)
    genstudio face --image face.png -n 8 -o grid.png              # one grid
    genstudio face --image face.png --pose 0.2 --max-iters 100 -o turned.png   # AttrOP, bounded
    genstudio face --new-identities 100 --per-identity 20 -o dataset/          # dataset/id_0000/000.png ...

--new-identities writes one folder per identity, each whole (written, then renamed into place), so a
killed run keeps its finished identities and a rerun skips them; dataset/face_dataset.json records
the settings (a rerun with other settings is refused) and identities.npy the identity vectors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, OverwriteOpt, PrecisionOpt, SeedOpt

from . import DEFAULT_MODEL  # no torch at import: `genstudio --help` stays fast

WORK_BUDGET = 10_000   # faces in one command (README: Limits and safety); --no-limit for more
SETTINGS_FILE = "face_dataset.json"
VECTORS_FILE = "identities.npy"


def face(ctx: typer.Context,
         image: Optional[Path] = typer.Option(None, "--image", "-i", help="A face image: make variations of it "
                                                                          "(or edit it with --pose/--expression)."),
         new_identities: Optional[int] = typer.Option(None, "--new-identities", min=1, max=1_000_000,
                                                      help="Make this many new people (a folder per identity)."),
         per_identity: int = typer.Option(8, "--per-identity", min=1, max=256, help="Faces per new identity."),
         num: int = typer.Option(8, "--num", "-n", min=1, max=256, help="Variations of the --image face."),
         std: float = typer.Option(0.3, "--std", min=0.0, max=2.0,
                                   help="Vector perturbation (the paper: 0.3 / 0.5 / 0.7; 0 = the vector itself)."),
         max_similarity: float = typer.Option(0.3, "--max-similarity", min=0.01, max=1.0,
                                              help="New identities: the largest cosine between two identity vectors."),
         pose: Optional[float] = typer.Option(None, "--pose", min=-1.0, max=1.0,
                                              help="Edit --image towards this horizontal offset (-1 left .. 1 right)."),
         expression: Optional[float] = typer.Option(None, "--expression", min=0.0, max=1.0,
                                                    help="Edit --image towards this mouth-region contrast (0 .. 1)."),
         max_iters: int = typer.Option(50, "--max-iters", min=1, max=500, help="Edits: the hard iteration cap."),
         min_similarity: float = typer.Option(0.8, "--min-similarity", min=0.0, max=1.0,
                                              help="Edits: the least cosine to the original identity vector."),
         output: Optional[Path] = typer.Option(None, "--output", "-o",
                                               help="A .png (one grid) or a folder. Default: outputs/face/."),
         model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
         overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
         device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Face variations, new identities (a dataset) or bounded pose/expression edits with Vec2Face."""
    from genstudio.cli_common import check_new_file, console, limit_time, output_folder, run_options
    from genstudio.limits import check_time, check_work
    from genstudio.render import InputError, load_image

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    if (image is None) == (new_identities is None):
        raise InputError("give --image FACE (variations or an edit) or --new-identities K (not both)")
    editing = pose is not None or expression is not None
    if editing and image is None:
        raise InputError("--pose / --expression edit the --image face; they do not apply to --new-identities")
    if image is not None and not image.is_file():
        raise InputError(f"image {image} does not exist" if not image.exists() else f"image {image} is not a file")
    count = new_identities * per_identity if new_identities else (1 if editing else num)
    check_work(f"{count} face(s)", count, WORK_BUDGET, "faces", no_limit)
    if image is not None:
        face_image = load_image(image)  # a bad, degenerate or over-budget file is refused before any model loads

    if new_identities:
        if output is not None and output.suffix:
            raise InputError(f"--new-identities writes a folder per identity; {output} looks like a file name")
        folder = output_folder(output, Path("outputs/face"))
        _new_identities(folder, new_identities, per_identity, std, max_similarity, model, run, overwrite)
        return

    single_file = output is not None and output.suffix != ""
    if single_file:
        if output.suffix.lower() != ".png":
            raise InputError(f"output {output} should be a .png file (a grid) or a folder")
        check_new_file(output, overwrite)
        target = output
    else:
        target = output_folder(output, Path("outputs/face"))
        if any(target.glob("[0-9][0-9][0-9].png")) and not overwrite:
            raise InputError(f"{target} already holds faces; pass --overwrite to replace them or pick another folder")

    from .pipeline import Vec2FacePipeline
    pipe = Vec2FacePipeline.from_pretrained(model, device=run.device, precision=run.precision)
    if editing:
        out = pipe.edit(pipe.embed(face_image), pose=pose, expression=expression, max_iters=max_iters,
                        min_similarity=min_similarity, seed=run.seed)
        check_time()  # past --max-seconds: nothing written
        written = out.save(target)
        info = out.metadata["attrop"]
        goal = ", ".join(f"{k} {info['start_scores'][k]:.3f} -> {v:.3f}" for k, v in info["scores"].items())
        console.print(f"[green]wrote[/green] {written if single_file else target}: {goal}, target "
                      f"{'met' if info['met'] else 'not met'} ({info['stopped']}, {info['iterations']} iterations), "
                      f"vector cos {info['similarity']:.3f}, recogniser similarity {out.identity_similarity[0]:.3f}",
                      soft_wrap=True)
        return
    out = pipe.from_image(face_image, n=num, std=std, seed=run.seed)
    check_time()
    out.save(target)
    mean = sum(out.identity_similarity) / len(out.identity_similarity)
    console.print(f"[green]wrote[/green] {target}: {len(out.images)} variations (std {std:g}), mean recogniser "
                  f"similarity to the face {mean:.3f}, {out.seconds:.1f} s", soft_wrap=True)


def _new_identities(folder: Path, k: int, per_identity: int, std: float, max_similarity: float, model: str, run,
                    overwrite: bool) -> None:
    """One folder per identity through run_batch (finished ones skipped), after the settings check."""
    import numpy as np

    from genstudio.cli_common import console, finish_batch, run_batch
    from genstudio.pipeline import save_all
    from genstudio.render import InputError

    settings = {"model": str(model), "seed": run.seed, "std": std, "max_similarity": max_similarity,
                "per_identity": per_identity}
    record = folder / SETTINGS_FILE
    if record.is_file() and not overwrite:
        try:
            before = json.loads(record.read_text())
        except (OSError, ValueError):
            before = {}
        changed = [key for key, value in settings.items() if before.get(key) != value]
        if changed:
            raise InputError(f"{folder} was started with other settings ({', '.join(f'{c}={before.get(c)!r}' for c in changed)}); "
                             "rerun with the same ones to resume, or pass --overwrite / another folder")

    from .pipeline import Vec2FacePipeline, identity_seed
    pipe = Vec2FacePipeline.from_pretrained(model, device=run.device, precision=run.precision)
    identities = pipe.sample_identities(k, max_similarity, seed=run.seed)
    save_all([(record, lambda tmp: tmp.write_text(json.dumps({**settings, "identities": k}, indent=1))),
              (folder / VECTORS_FILE, lambda tmp: np.save(tmp, identities.numpy()))])
    jobs = [(Path(f"id_{i:04d}"), folder / f"id_{i:04d}") for i in range(k)]

    def make(source: Path):
        i = int(source.name[3:])
        out = pipe.from_vector(identities[i], n=per_identity, std=std, seed=identity_seed(run.seed, i), progress=False)
        return out  # one identity: saved flat into its own folder

    summary = run_batch(jobs, make, "identities", overwrite=overwrite,
                        done=lambda target: target.is_dir() and len(list(target.glob("*.png"))) >= per_identity)
    finish_batch(summary, folder)
    console.print(f"[green]{folder}[/green]: {k} identities x {per_identity} faces (std {std:g}, pairwise identity "
                  f"cosine < {max_similarity:g})", soft_wrap=True)
