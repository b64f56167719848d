"""What every task command shares: typed run options, output paths, folder batches.

A task command declares the shared options with these annotations and merges them with the
root's (`genstudio --device cpu svg ...` and `genstudio svg --device cpu ...` both work; the
command's own value wins), so settings reach commands as typed options: no module global, no
environment variable.

    def svg(ctx: typer.Context, ..., device: DeviceOpt = None, seed: SeedOpt = None,
            precision: PrecisionOpt = None):
        run = run_options(ctx, device, seed, precision)      # RunOptions(device, seed, precision)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Callable, Iterable, Optional

import typer
from rich.console import Console

from .pipeline import SEED_DEFAULT

console = Console(stderr=True)  # status lines go to stderr; stdout stays for data

DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda[:N] | mps (default: auto).")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help=f"Random seed (default: {SEED_DEFAULT}).")]
PrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", help="auto | fp32 | bf16 | fp16 (default: auto = bf16 only where the device runs it natively).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo outputs that already exist (folder mode).")]
MaxSecondsOpt = Annotated[Optional[float], typer.Option(
    "--max-seconds", min=1, max=7 * 24 * 3600,
    help="Stop after this many seconds (checked between sampling steps/tokens), write nothing partial, exit 1.")]
NoLimitOpt = Annotated[bool, typer.Option(
    "--no-limit", help="Run a request over the default work budget (README: Limits and safety).")]


@dataclass(frozen=True)
class RunOptions:
    device: str = "auto"
    seed: int = SEED_DEFAULT
    precision: str = "auto"


def run_options(ctx: typer.Context | None, device: str | None = None, seed: int | None = None,
                precision: str | None = None) -> RunOptions:
    """The command's own options over the root's (ctx.obj), over the defaults; checked here."""
    from .pipeline import check_seed
    from .precision import PRECISIONS
    root = ctx.find_object(RunOptions) if ctx is not None else None
    root = root or RunOptions()
    try:
        checked_seed = check_seed(seed if seed is not None else root.seed)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--seed") from None
    run = RunOptions(device=device or root.device, seed=checked_seed, precision=(precision or root.precision).lower())
    if run.precision not in PRECISIONS:
        raise typer.BadParameter(f"unknown precision {run.precision!r}: use one of {', '.join(PRECISIONS)}",
                                 param_hint="--precision")
    return run


def limit_time(ctx: typer.Context, seconds: float | None) -> None:
    """--max-seconds: a deadline from now until the command ends (genstudio.limits.time_limit)."""
    from .limits import time_limit
    if seconds:
        ctx.with_resource(time_limit(seconds))


# ---------------------------------------------------------------- output paths

def check_writable(path: Path) -> Path:
    """Fail before any model loads when `path` (a file to write) cannot be written."""
    from .render import InputError
    folder = path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {path}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: {probe} is not writable")
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name")
    return path


def check_new_file(path: Path, overwrite: bool) -> Path:
    """`check_writable`, and refuse to replace an existing file without --overwrite."""
    from .render import InputError
    check_writable(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")
    return path


def output_file(output: Path | None, stem: str, suffixes: tuple[str, ...], default_dir: str,
                default_suffix: str | None = None) -> Path:
    """The file a single-input command writes: `output`, or `output/<stem><suffix>` when it is a
    folder, or `default_dir/<stem><suffix>`; its suffix must be one of `suffixes`."""
    from .render import InputError
    suffix = default_suffix or suffixes[0]
    target = output if output is not None else Path(default_dir) / f"{stem}{suffix}"
    if target.is_dir():
        target = target / f"{stem}{suffix}"
    if target.suffix.lower() not in suffixes:
        raise InputError(f"output {target} should end in {' or '.join(suffixes)}")
    return check_writable(target)


def output_folder(output: Path | None, default: Path) -> Path:
    """The folder a multi-output command writes into; refused early if it is a file or unwritable."""
    from .render import InputError
    folder = output if output is not None else default
    if folder.exists() and not folder.is_dir():
        raise InputError(f"-o must be a folder; {folder} is a file")
    check_writable(folder / ".probe")
    return folder


def files_in(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    from .render import InputError
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise InputError(f"{folder} holds no {what} (expected {', '.join(suffixes)} files)")
    return files


def output_names(files: list[Path], suffix: str) -> list[str]:
    """logo.png -> logo.svg; a stem two inputs share (a.png, a.jpg) keeps the suffix: a.jpg.svg."""
    stems = [p.stem for p in files]
    return [f"{p.stem}{suffix}" if stems.count(p.stem) == 1 else f"{p.name}{suffix}" for p in files]


# ---------------------------------------------------------------- folder in, folder out

@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    def line(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped (already there), {len(self.failed)} failed"


def run_batch(jobs: Iterable[tuple[Path, Path]], process: Callable[[Path], object], desc: str,
              overwrite: bool = False, progress: bool = True,
              done: Callable[[Path], bool] = Path.exists) -> BatchSummary:
    """For each (input, output): skip an existing output (unless `overwrite`), else run
    `process(input)` and save its result at once, atomically (`result.save(output)`), so a killed
    run keeps every finished output and a rerun does only the rest. A bad item (an input error or
    a failed result) is recorded and the batch goes on. `done(output)` says whether an output is
    already there (for results of several files)."""
    from tqdm.auto import tqdm
    from .limits import TimeLimitExceeded
    summary = BatchSummary()
    jobs = list(jobs)
    bar = tqdm(jobs, desc=desc, unit="item", disable=not progress)
    for source, target in bar:
        if done(target) and not overwrite:
            summary.skipped.append(source.name)
            continue
        try:
            result = process(source)
            if getattr(result, "failed", False):
                raise ValueError(getattr(result, "message", "") or "failed")
            result.save(target)
        except TimeLimitExceeded as e:  # the whole command's time is up: keep what is done, stop
            left = len(jobs) - len(summary.done) - len(summary.skipped) - len(summary.failed)
            raise TimeLimitExceeded(f"{e}; {summary.line()}, {left} not finished") from None
        except Exception as e:  # one bad item (InputError, OSError, a RuntimeError...) does not stop the batch
            summary.failed.append((source.name, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        summary.done.append(source.name)
    return summary


def finish_batch(summary: BatchSummary, out_dir: Path) -> None:
    """Print the summary line; a non-zero exit (RuntimeError -> one line, exit 1) if any failed."""
    console.print(f"{out_dir}: {summary.line()}", soft_wrap=True)
    if summary.failed:
        detail = "; ".join(f"{name} ({why})" for name, why in summary.failed[:10])
        more = f" and {len(summary.failed) - 10} more" if len(summary.failed) > 10 else ""
        raise RuntimeError(f"{len(summary.failed)} item(s) failed: {detail}{more}")
