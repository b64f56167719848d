"""`genstudio export RUN --to checkpoints/NAME`: a training run -> a shippable checkpoint folder.

The trainer records in RUN/train_config.json which recipe made the run; that recipe's module
(entry-point group `genstudio.recipes`) offers `export(run_dir, to, dtype, **options)`, which
writes the model(s) into the empty folder `to` with save_pretrained. This module does what every
export needs: find the exporter, write into a temporary folder beside the target and rename it
into place (never a half-written checkpoint), refuse to replace an existing folder unless asked,
insist on safetensors, and keep the run's records (summary.json, train_config.json) with the weights.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
KEPT_ON_OVERWRITE = ("README.md",)  # the hand-written model card survives a re-export


def run_record(run_dir: str | Path) -> dict:
    """RUN/train_config.json: the TrainConfig fields, plus `recipe` and its `options`."""
    path = Path(run_dir) / "train_config.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run: it has no train_config.json "
                                "(pass the folder `genstudio train --output-dir` wrote)")
    return json.loads(path.read_text())


def run_weights(path: str | Path) -> Path:
    """The weights folder of a run (its final/ EMA weights) or of a checkpoint folder itself."""
    path = Path(path)
    for folder in (path / "final", path):
        if (folder / "config.json").exists():
            return folder
    hint = " (the run has not finished: rerun its `genstudio train` command to resume)" \
        if (path / "train_config.json").exists() else ""
    raise FileNotFoundError(f"{path} holds no trained weights: expected {path / 'final'}/config.json{hint}")


def init_weights(model, path: str | Path, what: str, new: tuple[str, ...] = ()) -> str:
    """Start `model` from the weights of a run / checkpoint / export of the same architecture
    (a recipe's `init_from`; strict, except that parameters whose names start with one of `new`, modules
    the source lacks, keep their own initialisation). `what` names the option in the error. Returns
    the absolute path, for the run's train_config.json."""
    source = type(model).from_pretrained(run_weights(path))
    try:
        missing, unexpected = model.load_state_dict(source.state_dict(), strict=not new)
        left = [k for k in missing if not k.startswith(tuple(new))]
        if left or unexpected:
            raise RuntimeError(f"missing {left[:3]}, unexpected {unexpected[:3]}")
    except RuntimeError as e:
        raise ValueError(f"{what} {path}: its weights do not fit this model ({str(e).splitlines()[0]})") from None
    return str(Path(path).resolve())


def save_safetensors(model, to: str | Path) -> None:
    """save_pretrained in safetensors, whichever library the model comes from."""
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        model.save_pretrained(to, safe_serialization=True)
    else:  # transformers >= 5 writes safetensors only
        model.save_pretrained(to)


def export_model(model_cls, run_dir: str | Path, to: str | Path, dtype: torch.dtype,
                 load_kwargs: dict | None = None) -> None:
    """The common exporter: one model class, the run's final weights (loaded with `load_kwargs`), cast to `dtype`."""
    model = model_cls.from_pretrained(run_weights(run_dir), **(load_kwargs or {}))
    save_safetensors(model.to(dtype), to)


def find_exporter(recipe: str):
    """The recipe's own `export` attribute (several recipes in one module), else the `export`
    function of the module that defines recipe `recipe` (entry point)."""
    import importlib
    from .train import recipe_entry_point
    ep = recipe_entry_point(recipe)
    module = importlib.import_module(ep.module)
    exporter = getattr(ep.load(), "export", None) or getattr(module, "export", None)
    if exporter is None:
        raise ValueError(f"recipe {recipe!r} ({ep.module}) has no export(run_dir, to, dtype) function")
    return exporter


def export_run(run_dir: str | Path, to: str | Path, dtype: str = "fp16", overwrite: bool = False,
               recipe: str | None = None, **options) -> Path:
    """Export training run `run_dir` to the checkpoint folder `to`; returns `to`.

    `recipe` overrides the one the run recorded (runs from before the trainer recorded it);
    `options` go to the recipe's exporter (e.g. PUT's `vqvae=RUN`).
    """
    run_dir, to = Path(run_dir), Path(to)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    record = run_record(run_dir)
    name = recipe or record.get("recipe")
    if not name:
        raise ValueError(f"{run_dir}/train_config.json does not say which recipe made the run: pass --recipe NAME")
    exporter = find_exporter(name)
    accepted = set(list(inspect.signature(exporter).parameters)[3:])
    unknown = set(options) - accepted
    if unknown:
        raise ValueError(f"recipe {name!r} export takes no option {', '.join(sorted(unknown))}; "
                         f"its options: {', '.join(sorted(accepted)) or 'none'}")
    if to.exists() and not overwrite:
        raise FileExistsError(f"{to} exists: pass --overwrite to replace it")
    if to.resolve() == run_dir.resolve() or run_dir.resolve() in to.resolve().parents:
        raise ValueError(f"--to {to} lies inside the run {run_dir}: export to a folder of its own")
    if to.resolve() in run_dir.resolve().parents:
        raise ValueError(f"--to {to} holds the run {run_dir}: export to a folder of its own")
    if to.exists() and not _replaceable(to):
        raise ValueError(f"--to {to} exists and is not a checkpoint folder (no config.json or .safetensors): "
                         "--overwrite only replaces an earlier export; pick a new folder")
    def write(tmp: Path) -> None:
        exporter(run_dir, tmp, DTYPES[dtype], **options)
        _check_safetensors(tmp)
        _copy_records(run_dir, tmp)
        for kept in KEPT_ON_OVERWRITE:
            if (to / kept).is_file() and not (tmp / kept).exists():
                shutil.copy2(to / kept, tmp / kept)

    write_folder_atomically(to, write)
    return to


def write_folder_atomically(folder: str | Path, write) -> Path:
    """`write(tmp)` fills a temporary folder beside `folder`, which then replaces `folder` whole (a
    failure leaves the old one, or nothing). Files get the usual permissions, not mkdtemp's private ones.
    Every command that writes a checkpoint folder (export, compress, sims) goes through here."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.partial-"))
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
        folder.rename(old / folder.name)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(folder)
    return folder


def _replaceable(folder: Path) -> bool:
    """An empty folder or one that looks like a checkpoint (config.json or .safetensors, top or one down)."""
    if not folder.is_dir():
        return False
    signs = ("config.json", "*/config.json", "*.safetensors", "*/*.safetensors")
    return not any(folder.iterdir()) or any(any(folder.glob(pattern)) for pattern in signs)


def _check_safetensors(folder: Path) -> None:
    pickles = [p.relative_to(folder) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise RuntimeError(f"export wrote pickle weights {[str(p) for p in pickles]}: checkpoints ship safetensors only")
    if not list(folder.rglob("*.safetensors")):
        raise RuntimeError("export wrote no .safetensors weights")


def _copy_records(run_dir: Path, to: Path) -> None:
    """summary.json (without the run-local `final` path) and train_config.json, for the model card."""
    summary = run_dir / "summary.json"
    if summary.exists():
        row = {k: v for k, v in json.loads(summary.read_text()).items() if k != "final"}
        (to / "summary.json").write_text(json.dumps(row, indent=2))
    shutil.copy2(run_dir / "train_config.json", to / "train_config.json")
