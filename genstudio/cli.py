"""`genstudio`: one command line for every task.

Core commands live here; task commands are found through the entry-point group
`genstudio.tasks` (a typer app or a plain function), so a pipeline registers itself with one
pyproject line. Heavy imports (torch, diffusers) happen inside commands: `--help` stays fast.
"""
from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_common import DeviceOpt, MaxSecondsOpt, PrecisionOpt, RunOptions, SeedOpt, console, limit_time, run_options

app = typer.Typer(name="genstudio", help="genstudio: a generative vision suite (SVG, 3D, video, inpainting, faces).",
                  no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False)
data_app = typer.Typer(help="Offline datasets: build them into the cache and list them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
space_app = typer.Typer(help="The Hugging Face Space: export a folder that runs the app.", no_args_is_help=True)
app.add_typer(space_app, name="space")


@app.callback()
def _global(ctx: typer.Context, device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Root options are the defaults of every command's own --device / --seed / --precision."""
    ctx.obj = run_options(None, device, seed, precision)


# ---------------------------------------------------------------- data
@data_app.command("list")
def data_list():
    """List the data sources and whether they are built."""
    from .data import list_sources
    t = Table("source", "built", "items", "licence", "description")
    for r in list_sources():
        t.add_row(r["name"], "yes" if r["built"] else "no", str(r["items"]), r["licence"], r["description"])
    Console().print(t)


@data_app.command("prepare")
def data_prepare(name: str = typer.Argument(..., help="Source name (see `genstudio data list`)."),
                 force: bool = typer.Option(False, help="Rebuild even if a build exists."),
                 root: Optional[Path] = typer.Option(None, help="Cache folder (default $GENSTUDIO_DATA or ~/.cache/genstudio/data)."),
                 option: List[str] = typer.Option([], "--option", "-o", help="Source option KEY=VALUE (repeatable).")):
    """Build a data source into the cache (deterministic, idempotent)."""
    from .data import prepare
    out = prepare(name, root=root, force=force, **_parse_kv(option))
    console.print(f"[green]built[/green] {name} -> {out}")


# ---------------------------------------------------------------- train / bench / app / info
@app.command()
def train(ctx: typer.Context,
          recipe: str = typer.Argument(..., help="Recipe name (entry point in genstudio.recipes)."),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="JSON or YAML config file."),
          set_: List[str] = typer.Option([], "--set", help="Override KEY=VALUE (repeatable)."),
          output_dir: Optional[str] = typer.Option(None, help="Where checkpoints and metrics go."),
          max_seconds: Optional[float] = typer.Option(
              None, "--max-seconds", min=1, max=30 * 24 * 3600,
              help="Stop training after this many seconds of training steps: the step in progress ends, a "
                   "resumable checkpoint and the final weights are saved whole (the config's max_minutes)."),
          device: DeviceOpt = None, seed: SeedOpt = None,
          precision: Optional[str] = typer.Option(
              None, "--precision", help="auto | fp32 | bf16 | fp16 (CUDA only). Default: the config's "
              "mixed_precision, else auto (bf16 only where the hardware runs it natively, else fp32).")):
    """Train a recipe with the shared trainer (auto precision, EMA, resume, multi-process via accelerate launch)."""
    from .train import load_recipe, train as run
    cfg = _load_config(config) if config else {}
    if "recipe" in cfg:  # a run's own train_config.json: {"recipe", trainer keys..., "options": {...}}
        if cfg.pop("recipe") != recipe:
            raise typer.BadParameter(f"{config} is a config for another recipe", param_hint="--config")
        cfg.update(cfg.pop("options", None) or {})
    cfg.update(_parse_kv(set_))
    if output_dir:
        cfg["output_dir"] = output_dir
    if max_seconds is not None:  # the trainer's own clean stop (saves), not a kill
        cfg["max_minutes"] = max_seconds / 60
    root = ctx.find_object(RunOptions) or RunOptions()
    precision = precision or (root.precision if root.precision != "auto" else None)
    device = device or root.device
    if precision is not None:
        import torch
        from .train import _train_device, train_precision
        no_accel = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        try:  # train() runs the same check, but only after the recipe is built: fail before that
            train_precision(precision, _train_device(device == "cpu" or no_accel))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--precision") from None
        cfg["mixed_precision"] = precision.lower()
    if device == "cpu":
        cfg["cpu"] = True
    if seed is not None:
        cfg["seed"] = seed
    else:
        cfg.setdefault("seed", root.seed)
    summary = run(load_recipe(recipe)(cfg))
    console.print_json(json.dumps(summary))


@app.command()
def bench(task: str = typer.Argument(..., help="Benchmark name (entry point in genstudio.benchmarks)."),
          out: Path = typer.Option(Path("benchmarks/results"), help="Folder for TASK.json and TASK.md."),
          quick: bool = typer.Option(False, help="A small, fast version (for smoke tests)."),
          option: List[str] = typer.Option([], "--option", "-o", help="Benchmark option KEY=VALUE (repeatable).")):
    """Run a task's benchmark against its baselines; write JSON + a markdown table."""
    from .bench import run_benchmark
    jp, mp = run_benchmark(task, out, quick=quick, **_parse_kv(option))
    console.print(f"[green]wrote[/green] {jp} and {mp}")


@app.command("export")
def export_cmd(run: Path = typer.Argument(..., help="A training run folder (what `genstudio train --output-dir` wrote)."),
               to: Path = typer.Option(..., "--to", help="The checkpoint folder to write, e.g. checkpoints/NAME."),
               dtype: str = typer.Option("fp16", "--dtype", help="fp16 | bf16 | fp32"),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder (keeps its README.md)."),
               recipe: Optional[str] = typer.Option(None, "--recipe", help="The recipe, for runs that do not record it."),
               set_: List[str] = typer.Option([], "--set", help="Exporter option KEY=VALUE (e.g. put: vqvae=RUN).")):
    """Export a run's final weights to a shippable safetensors checkpoint (written atomically)."""
    from .export import export_run
    out = export_run(run, to, dtype=dtype, overwrite=overwrite, recipe=recipe, **_parse_kv(set_))
    console.print(f"[green]exported[/green] {run} -> {out} ({dtype})")


@space_app.command("export")
def space_export(folder: Path = typer.Argument(..., help="The Space folder to write (outside the source tree)."),
                 overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder.")):
    """Write a Gradio Space: the package, shipped checkpoints, app.py, requirements.txt, LFS attributes."""
    from .space import export_space
    out = export_space(folder, overwrite=overwrite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    console.print(f"[green]exported[/green] the Space to {out} ({size:.0f} MB); push it to a Space repo with git + git-lfs")


@app.command()
def batch(ctx: typer.Context,
          jobs: Path = typer.Argument(..., help="JOBS.jsonl: one job per line, {\"id\", \"task\", \"args\", \"kwargs\", \"seed\", \"model\"}."),
          output: Path = typer.Option(..., "--output", "-o", help="Output folder: OUT/<id><suffix> + results.jsonl."),
          device: DeviceOpt = None, precision: PrecisionOpt = None):
    """Run many jobs of any task; resumable (finished jobs are skipped). Scale out with
    `accelerate launch --multi_gpu --num_processes N -m genstudio.cli batch JOBS.jsonl -o OUT/`
    (with no GPU visible, N CPU processes)."""
    from .batch import JobError, read_jobs, run_batch_jobs
    from .render import InputError
    run = run_options(ctx, device, None, precision)
    if not jobs.is_file():
        raise InputError(f"jobs file {jobs} does not exist")
    try:
        read_jobs(jobs)  # a malformed file is refused before any model loads
    except JobError as e:
        raise InputError(str(e)) from None
    summary = run_batch_jobs(jobs, output, device=run.device, precision=run.precision)
    console.print(f"[green]batch[/green] rank {summary['rank']}/{summary['processes']}: {summary['done']} done, "
                  f"{summary['skipped']} skipped, {summary['failed']} failed -> {output}/results.jsonl", soft_wrap=True)
    if summary["failed"]:  # one line, exit 1 (the reasons are in results.jsonl)
        raise RuntimeError(f"{summary['failed']} job(s) failed: see {output}/results.jsonl")


@app.command()
def sims(ctx: typer.Context,
         base: str = typer.Option(..., "--base", help="A diffusion checkpoint (name or folder) whose pipeline supports SIMS."),
         output: Path = typer.Option(..., "--output", "-o", help="The SIMS checkpoint to write, e.g. checkpoints/NAME-sims."),
         synthetic_size: int = typer.Option(2048, "--synthetic-size", min=1, max=1_000_000,
                                            help="Samples drawn from the base model (the auxiliary model's data)."),
         steps: int = typer.Option(500, "--steps", min=1, max=1_000_000, help="Fine-tuning steps of the auxiliary model."),
         guidance: float = typer.Option(1.0, "--guidance", min=0.0, max=10.0,
                                        help="The default negative-guidance strength w recorded in the checkpoint."),
         sampling_steps: int = typer.Option(25, "--sampling-steps", min=1, max=1000, help="Sampler steps per synthetic sample."),
         lr: float = typer.Option(1e-4, "--lr", help="Fine-tuning learning rate."),
         batch_size: int = typer.Option(64, "--batch-size", min=1, help="Fine-tuning batch size."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
         max_seconds: MaxSecondsOpt = None,
         device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """SIMS: sample a synthetic set from BASE, fine-tune an auxiliary copy on it, and write BASE +
    the auxiliary model as one checkpoint that samples with negative guidance away from it."""
    from .hub import resolve
    from .pipeline import pipeline_classes, task_of_checkpoint
    from .render import InputError
    from .sims import train_auxiliary, write_sims_checkpoint
    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)  # checked between sampling and training steps; the checkpoint is written last
    if output.exists() and not overwrite:
        raise InputError(f"{output} exists; pass --overwrite to replace it")
    folder = resolve(base)
    task = task_of_checkpoint(folder)
    cls = pipeline_classes().get(task) if task else None
    if cls is None or not hasattr(cls, "synthetic_dataset"):
        raise InputError(f"{base} is not a checkpoint of a pipeline with SIMS support "
                         f"({task or 'unknown task'}); SIMS needs a diffusion pipeline such as `genstudio generate`'s")
    pipe = cls.from_pretrained(str(folder), device=run.device, precision=run.precision)  # sampling; training: auto
    pipe.set_progress_bar_config(disable=True)
    aux, record = train_auxiliary(pipe, synthetic_size, steps, num_inference_steps=sampling_steps, seed=run.seed,
                                  batch_size=batch_size, lr=lr)
    write_sims_checkpoint(folder, aux, output, record, guidance, base_name=base)
    console.print(f"[green]wrote[/green] {output}: auxiliary model fine-tuned {steps} steps on {synthetic_size} samples "
                  f"of {base} ({record['sample_seconds']:.0f} s sampling, {record['finetune_seconds']:.0f} s training); "
                  f"default w = {guidance:g}", soft_wrap=True)


@app.command()
def compress(ctx: typer.Context,
             checkpoint: str = typer.Argument(..., help="A DiT checkpoint: shipped name, folder or hub id (e.g. vdt-physics-S)."),
             output: Path = typer.Option(..., "--output", "-o", help="The folder to write, e.g. checkpoints/NAME-vq2."),
             method: str = typer.Option("vq4dit", "--method", help="vq4dit | kmeans (VQ, no calibration) | rtn (uniform round-to-nearest)."),
             bits: int = typer.Option(2, "--bits", help="Bits per weight: 2, 3 or 4."),
             samples: int = typer.Option(8, "--samples", help="vq4dit: calibration samples drawn from pure noise."),
             steps: int = typer.Option(10, "--steps", help="vq4dit: sampler steps per calibration sample."),
             iters: int = typer.Option(100, "--iters", help="vq4dit: optimisation steps per DiT block."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
             max_seconds: MaxSecondsOpt = None, device: DeviceOpt = None, seed: SeedOpt = None):
    """Compress a DiT checkpoint's weights to 2-4 bits (VQ4DiT, or the k-means / RTN baselines); written atomically."""
    from .compress import CalibrationOptions, compress_checkpoint
    from .device import resolve_device
    run = run_options(ctx, device, seed, None)
    limit_time(ctx, max_seconds)  # checked between calibration samples' steps, k-means and optimisation steps
    for name, value in (("--samples", samples), ("--steps", steps), ("--iters", iters)):
        if value < 1:
            raise typer.BadParameter(f"must be >= 1, got {value}", param_hint=name)
    opts = CalibrationOptions(samples=samples, steps=steps, iters=iters)
    result = compress_checkpoint(checkpoint, output, method=method, bits=bits, opts=opts, seed=run.seed,
                                 overwrite=overwrite, device=resolve_device(run.device))
    console.print(f"[green]compressed[/green] {checkpoint} -> {result.output}: {method} {bits}-bit, "
                  f"{result.size_mb:.2f} MB (was {result.source_size_mb:.2f} MB), {result.seconds:.1f} s", soft_wrap=True)


@app.command("app")
def app_cmd(host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1 = this machine only)."),
            port: int = typer.Option(7860, help="Port."),
            share: bool = typer.Option(False, help="Ask Gradio for a public share link (needs internet).")):
    """Launch the Gradio app (one tab per installed pipeline)."""
    eps = list(entry_points(group="genstudio.app"))
    if not eps:
        raise RuntimeError("no app is installed (entry point group genstudio.app); install genstudio[app]")
    eps[0].load()().launch(server_name=host, server_port=port, share=share)


@app.command()
def info(ctx: typer.Context, device: DeviceOpt = None, precision: PrecisionOpt = None):
    """Versions, device, what --precision auto picks and why, and the checkpoints found."""
    import torch
    from importlib.metadata import version
    from .device import resolve_device
    from .hub import available, checkpoints_dir
    t = Table("what", "value")
    for pkg in ("genstudio", "torch", "diffusers", "transformers", "accelerate", "gradio"):
        try:
            t.add_row(pkg, version(pkg))
        except Exception:
            t.add_row(pkg, "not installed")
    from .precision import resolve_precision
    run = run_options(ctx, device, None, precision)
    device = resolve_device(run.device)
    chosen = resolve_precision(device, run.precision)
    t.add_row(f"device ({run.device})", device)
    t.add_row(f"precision ({run.precision})", f"{chosen.name}: {chosen.reason}")
    t.add_row("cpu", f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    t.add_row("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no")
    t.add_row("checkpoints", f"{checkpoints_dir()}: {', '.join(available()) or 'none'}")
    t.add_row("tasks", ", ".join(sorted(ep.name for ep in entry_points(group="genstudio.tasks"))))
    t.add_row("recipes", ", ".join(sorted(ep.name for ep in entry_points(group="genstudio.recipes"))))
    t.add_row("benchmarks", ", ".join(sorted(ep.name for ep in entry_points(group="genstudio.benchmarks"))))
    Console().print(t)


# ---------------------------------------------------------------- helpers
def _parse_kv(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"{p!r} is not KEY=VALUE")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _load_config(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        return dict(yaml.safe_load(text) or {})
    return json.loads(text)


def _register_tasks() -> None:
    for ep in entry_points(group="genstudio.tasks"):
        try:
            obj = ep.load()
        except Exception as e:  # a broken optional pipeline must not break the whole CLI
            console.print(f"[yellow]task {ep.name!r} unavailable: {type(e).__name__}: {e}[/yellow]")
            continue
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=ep.name)
        else:
            app.command(ep.name)(obj)


_register_tasks()


def main() -> None:
    """Entry point: known errors become one clear line (GENSTUDIO_DEBUG=1 shows tracebacks)."""
    try:
        app(standalone_mode=False)
    except SystemExit as e:
        raise
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the CLI's last line of defence
        # typer vendors its own click: match its exceptions by kind, not by click's classes
        kind = type(e).__name__
        if isinstance(e, typer.Exit) or kind == "Exit":
            sys.exit(getattr(e, "exit_code", 0))
        if isinstance(e, typer.Abort) or kind == "Abort":
            console.print("[red]aborted[/red]")
            sys.exit(1)
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):  # usage errors: exit 2
            e.show()
            sys.exit(e.exit_code)
        if os.environ.get("GENSTUDIO_DEBUG"):
            raise
        code = getattr(e, "exit_code", 1)  # genstudio.limits.UsageError: 2; every other error: 1
        from rich.text import Text
        msg = str(e).strip("'\"") if isinstance(e, KeyError) else str(e)
        console.print(Text("error: ", style="bold red") + Text(msg or type(e).__name__), soft_wrap=True)
        sys.exit(code if isinstance(code, int) and code in (1, 2) else 1)


if __name__ == "__main__":
    main()
