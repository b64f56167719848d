"""`genstudio text2svg`: text -> SVG with SVGFusion (one prompt, or a prompts file into a folder).

    genstudio text2svg "a rocket" -n 4 -o out/            # out/a-rocket_000.svg (+ .png) ...
    genstudio text2svg "a house" -o house.svg             # the first valid sample
    genstudio text2svg --prompts prompts.txt -o out/      # one prompt per line; reruns skip finished prompts
    genstudio text2svg "a rocket" --init plane.svg --strength 0.2 -o out/   # variations of a drawing (SDEdit)
    genstudio text2svg "a rocket" --init search -o out/   # variations of the library icons nearest the words
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from genstudio.cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, OverwriteOpt, PrecisionOpt, SeedOpt

# no torch at import: `genstudio --help` stays fast
from . import DEFAULT_MODEL, MAX_AUTOGUIDANCE, MAX_PROMPT_CHARS, SCHEDULERS

WORK_BUDGET = 256 * 50      # samples x sampling steps in one command (README: Limits and safety)
MAX_PROMPTS_FILE = 1_000_000  # bytes


def _check_prompt(text: str, where: str) -> None:
    from genstudio.render import InputError
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"{where} is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")


def read_text_file(path: Path, what: str, limit: int) -> str:
    """A UTF-8 text file of at most `limit` bytes, or a one-line InputError naming `what` it is."""
    from genstudio.render import InputError
    if not path.is_file():
        raise InputError(f"{what} {path} " + ("is not a file" if path.exists() else "does not exist"))
    if path.stat().st_size > limit:
        raise InputError(f"{what} {path} is over {limit // 1000} kB")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None
    except OSError as e:
        raise InputError(f"{what} {path} is not readable ({e.strerror or e})") from None


def _prompts_from(path: Path) -> list[str]:
    from genstudio.render import InputError
    text = read_text_file(path, "prompts file", MAX_PROMPTS_FILE)
    if "\x00" in text:
        raise InputError(f"prompts file {path} is binary (it holds NUL bytes), not one prompt per line")
    prompts = []
    for k, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            _check_prompt(line.strip(), f"prompts file {path} line {k}")
            prompts.append(line.strip())
    if not prompts:
        raise InputError(f"prompts file {path} has no prompts (one per line; # starts a comment)")
    return prompts


def text2svg(ctx: typer.Context,
             prompt: Optional[str] = typer.Argument(None, help="What to draw, e.g. 'a rocket'."),
             prompts: Optional[Path] = typer.Option(None, "--prompts", "-p",
                                                    help="A text file, one prompt per line (writes into a folder)."),
             num: int = typer.Option(4, "--num", "-n", min=1, max=256, help="Samples per prompt."),
             output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                   help="A .svg file (the first valid sample) or a folder "
                                                        "(every sample as .svg + .png). Default: outputs/text2svg/."),
             guidance: float = typer.Option(3.0, "--guidance", "-g", min=1.0, max=50.0,
                                            help="Classifier-free guidance scale (1 = off)."),
             steps: int = typer.Option(50, "--steps", "-s", min=1, max=1000, help="Sampling steps."),
             autoguidance: Optional[float] = typer.Option(None, "--autoguidance", "-a", min=0.0,
                                                          max=MAX_AUTOGUIDANCE,
                                                          help="Guidance away from the checkpoint's weaker guide "
                                                               "model (autoguidance; 0 = off; default: the "
                                                               "checkpoint's own)."),
             candidates: int = typer.Option(1, "--candidates", "-c", min=1, max=16,
                                            help="Draw C x NUM samples per prompt and keep the NUM the model itself "
                                                 "rates most about the prompt (slower; 1 = off)."),
             init: Optional[Path] = typer.Option(None, "--init", "-i",
                                                 help="An SVG to make variations of: it is noised to --strength and "
                                                      "redrawn toward the prompt (at most the model's rows of drawing "
                                                      "commands; 64 for the shipped model). 'search': each sample "
                                                      "starts from one of the training icons whose words are nearest "
                                                      "the prompt (needs `genstudio data prepare icons`)."),
             strength: float = typer.Option(0.2, "--strength", min=0.01, max=1.0,
                                            help="With --init: how much to redraw (0.1 keeps the drawing, "
                                                 "1 ignores it)."),
             scheduler: Optional[str] = typer.Option(None, "--scheduler",
                                                     help="ddim, dpm, euler or ddpm (default: the checkpoint's, DDIM)."),
             model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Checkpoint name, folder or hub id."),
             overwrite: OverwriteOpt = False, max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False,
             device: DeviceOpt = None, seed: SeedOpt = None, precision: PrecisionOpt = None):
    """Generate SVG icons from text with SVGFusion."""
    from genstudio.cli_common import (check_new_file, console, finish_batch, limit_time, output_folder, run_batch,
                                      run_options)
    from genstudio.limits import UsageError, check_time, check_work
    from genstudio.render import InputError

    run = run_options(ctx, device, seed, precision)
    limit_time(ctx, max_seconds)
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise UsageError(f"--scheduler {scheduler!r} is unknown; choose from {', '.join(SCHEDULERS)}")
    if (prompt is None) == (prompts is None):
        raise InputError("give one prompt or --prompts FILE (not both)")
    if prompt is not None:
        if not prompt.strip():
            raise InputError("the prompt is empty: give a text to draw, e.g. 'a rocket'")
        _check_prompt(prompt.strip(), "the prompt")
    todo = _prompts_from(prompts) if prompts is not None else [prompt]
    from_search = init is not None and str(init) == "search" and not init.exists()
    from genstudio.formats.svg import MAX_INPUT_BYTES
    init_svg = read_text_file(init, "init SVG", MAX_INPUT_BYTES) if init is not None and not from_search else None
    draws = num * candidates
    check_work(f"{draws} sample(s) of {len(todo)} prompt(s) at {steps} steps", draws * len(todo) * steps,
               WORK_BUDGET, "sample-steps", no_limit)
    single_file = output is not None and output.suffix != ""
    if single_file:
        if prompts is not None or output.suffix.lower() != ".svg":
            raise InputError(f"output {output} should be a folder (or one .svg file for a single prompt)")
        check_new_file(output, overwrite)
    folder = None if single_file else output_folder(output, Path("outputs/text2svg"))

    from .pipeline import SVGFusionPipeline, slug
    pipe = SVGFusionPipeline.from_pretrained(model, device=run.device, precision=run.precision)
    search = None
    if from_search:
        from .data import load_items
        from .search import IconSearch
        search = IconSearch(load_items("train"))

    def generate(text: str):
        if search is not None:  # sample k starts from the k-th nearest library icon
            found = [search.read(item) for item in search.top([text], num)[0]]
            return pipe([text] * len(found), num_samples=1, guidance_scale=guidance, num_inference_steps=steps,
                        scheduler=scheduler, seed=run.seed, candidates=candidates, init_svg=found, strength=strength,
                        autoguidance=autoguidance)
        return pipe(text, num_samples=num, guidance_scale=guidance, num_inference_steps=steps,
                    scheduler=scheduler, seed=run.seed, candidates=candidates, init_svg=init_svg,
                    strength=strength, autoguidance=autoguidance)

    if single_file:
        out = generate(todo[0])
        if out.failed:
            raise RuntimeError(out.message)
        check_time()  # past --max-seconds: nothing written
        out.save(output)
        console.print(f"[green]wrote[/green] {output}: {sum(out.valid)}/{len(out.svgs)} samples valid, "
                      f"{out.seconds:.1f} s", soft_wrap=True)
        return
    if prompts is None:  # one prompt into a folder
        out = generate(todo[0])
        if out.failed:
            raise RuntimeError(out.message)
        check_time()
        written = out.save(folder)
        console.print(f"[green]wrote[/green] {len(written) // 2} SVG(s) (+ PNG renders) to {folder}: "
                      f"{sum(out.valid)}/{len(out.svgs)} samples valid, {out.seconds:.1f} s", soft_wrap=True)
        return
    # A prompts file: one sub-folder per prompt, written whole; a rerun skips finished prompts.
    jobs = [(Path(text), folder / f"{k:04d}-{slug(text)}") for k, text in enumerate(todo)]
    summary = run_batch(jobs, lambda p: generate(str(p)), "prompts", overwrite=overwrite,
                        done=lambda target: target.is_dir() and any(target.glob("*.svg")))
    finish_batch(summary, folder)
