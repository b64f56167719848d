"""Gradio tab: VDT video tasks (predict, interpolate, complete, animate, generate) on short clips.

Input and result are shown as looping GIFs; the input GIF shows what the model was given, with
the part to generate dimmed. The model loads on the first run, so the tab builds without it.
"""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "video"
TASK_HELP = {
    "predict": "the first frames are given (num known), the rest is predicted",
    "interpolate": "keyframes spread over the clip (num known, >= 2) are given, the frames between are generated",
    "complete": "the centre of every frame is hidden and filled in",
    "animate": "only the first frame is given; the model makes it move",
    "generate": "nothing is given: a new clip from noise",
}


def _enlarge(frames, factor: int = 4):
    """Nearest-neighbour upscaling for display: 32 px clips are too small to see in a browser."""
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def run_video(path, task: str = "predict", num_known: int | None = 4, steps: int = 25, scheduler: str = "dpm",
              seed: int | None = 0, model: str | None = None,
              progress=progress_default()) -> tuple[str | None, str, str, str]:
    """(GIF of what the model was given or None, GIF of the result, summary, the result GIF again for
    the download). Raises ValueError on bad input."""
    from genstudio.formats.video import write_video
    from pipelines.video.pipeline import DEFAULT_MODEL, load_frames
    if path is None and task != "generate":
        raise ValueError(f"Upload a clip (GIF/MP4/AVI) or pick an example for '{task}'.")
    if task != "generate":
        load_frames(str(path), max_frames=1)  # as the CLI: a bad file fails here, before the model loads
    known = int(num_known) if num_known and task in ("predict", "interpolate") else None
    out = load_pipeline("video", model or DEFAULT_MODEL, progress)(task=task, frames=None if task == "generate" else str(path),
                                            num_known=known, num_inference_steps=int(steps), scheduler=scheduler,
                                            seed=None if seed is None else int(seed), progress=True)
    folder = temp_folder("video")
    result = str(write_video(folder / f"{task}.gif", _enlarge(out.frames)))
    given = str(write_video(folder / "given.gif", _enlarge(out.preview()))) if out.input is not None else None
    text = (f"{task}: {len(out.frames)} frames, {out.mask.mean():.0%} of the clip generated, "
            f"{out.nfe} model calls, {seconds(out.seconds)}.")
    scores = out.reference_scores()
    if scores:
        text += f" Against the input at the generated frames: PSNR {scores['psnr']:.1f} dB (MSE {scores['mse']:.4f})."
    if out.notes:
        text += " Note: " + "; ".join(out.notes) + "."
    return given, result, text, result


EXAMPLE_TASKS = {"balls.gif": "predict", "digits.gif": "interpolate"}  # the task each example clip shows off
KNOWN_TASKS = ("predict", "interpolate")  # the tasks that use "num known"


def example_rows() -> list[list[str]]:
    """[preview, clip, task] per example GIF: the preview (an image) shows it as a thumbnail."""
    return [[str(p), str(p), EXAMPLE_TASKS.get(p.name, "predict")] for p in sorted(EXAMPLES.glob("*.gif"))]


def task_controls(task: str):
    """What the chosen task uses: its one-line help, the clip input (not for generate) and num known
    (predict and interpolate only)."""
    import gradio as gr
    return (f"**{task}**: {TASK_HELP.get(task, '')}.", gr.update(visible=task != "generate"),
            gr.update(visible=task in KNOWN_TASKS))


def build_tab():
    import gradio as gr

    run = ui_errors(run_video)

    gr.Markdown("Video with **VDT** (video diffusion transformer, mask modelling): one model predicts, "
                "interpolates, completes, animates or generates 16-frame 32×32 clips (trained on simulated "
                "bouncing balls and moving digits).")
    with gr.Row():
        with gr.Column():
            clip = gr.File(label="input clip (GIF, MP4, AVI) or image (animate)", type="filepath",
                           file_types=[".gif", ".mp4", ".avi", ".mov", ".webm", ".png", ".jpg"])
            preview = gr.Image(type="filepath", label="input preview (GIF)", interactive=False, height=160)
        with gr.Column():
            task = gr.Dropdown(list(TASK_HELP), value="predict", label="task")
            help_line = gr.Markdown(task_controls("predict")[0])
            num_known = gr.Slider(1, 15, value=4, step=1, label="num known (predict: first frames; "
                                                                 "interpolate: keyframes)")
            with gr.Row():
                steps = gr.Slider(2, 100, value=25, step=1, label="sampling steps")
                scheduler = gr.Dropdown(["dpm", "ddim", "euler"], value="dpm", label="sampler")
                seed = gr.Number(value=0, precision=0, label="seed")
    button = gr.Button("Run", variant="primary")
    examples = example_rows()
    if examples:
        gr.Examples(examples=examples, inputs=[preview, clip, task], label="examples (held-out procedural clips)",
                    cache_examples=False, run_on_click=False)
    with gr.Row():
        given = gr.Image(type="filepath", label="given to the model (generated part dimmed)", interactive=False)
        result = gr.Image(type="filepath", label="result", interactive=False)
    info = gr.Markdown(label="run")
    download = gr.File(label="download .gif")
    task.change(task_controls, task, [help_line, clip, num_known], queue=False, show_progress="hidden")
    # an upload replaces the example: its preview goes (a GIF upload is shown, other formats are not)
    clip.upload(lambda path: path if path and str(path).lower().endswith(".gif") else None, clip, preview,
                queue=False, show_progress="hidden")
    clip.clear(lambda: None, None, preview, queue=False, show_progress="hidden")
    button.click(run, [clip, task, num_known, steps, scheduler, seed], [given, result, info, download])
