"""Gradio tab: consistent views of one object from a prompt and/or a front image with MV-Adapter.

The model loads on the first run, so the tab builds without it (a missing checkpoint is a message).
"""
from __future__ import annotations

from pathlib import Path

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors, upload_path

MAX_TAB_VIEWS = 8     # per click: the tab stays responsive on a CPU
MAX_TAB_STEPS = 100
EXAMPLES = [["a red box", 6, 0], ["a blue sphere", 4, 20], ["a green torus", 6, 10]]
IMAGES = Path(__file__).resolve().parent.parent / "examples" / "multiview"
# front views of held-out test objects (examples/multiview/LICENSES.md) with their captions
IMAGE_EXAMPLES = [("a cyan torus", "torus_front.png"), ("a blue object", "object_front.png")]


def image_examples() -> list[list]:
    return [[prompt, str(IMAGES / name), 6, 0] for prompt, name in IMAGE_EXAMPLES if (IMAGES / name).is_file()]


def run_multiview(prompt: str = "", image=None, num_views: int = 6, elevation: float = 0.0, steps: int = 30,
                  seed: int | None = 0, model: str | None = None, progress=progress_default()):
    """(gallery of (view, azimuth caption), summary, the grid + views as downloadable PNGs)."""
    from pipelines.multiview import DEFAULT_MODEL
    path = upload_path(image)
    prompt = (prompt or "").strip()
    if not prompt and path is None:
        raise ValueError("Type a prompt or upload a front view of the object.")
    if not 1 <= int(num_views) <= MAX_TAB_VIEWS:
        raise ValueError(f"Between 1 and {MAX_TAB_VIEWS} views per run here.")
    if not 1 <= int(steps) <= MAX_TAB_STEPS:
        raise ValueError(f"Between 1 and {MAX_TAB_STEPS} sampling steps here.")
    pipe = load_pipeline("multiview", model or DEFAULT_MODEL, progress)
    out = pipe(prompt or None, image=path, num_views=int(num_views), elevation=float(elevation),
               num_inference_steps=int(steps), seed=None if seed is None else int(seed), progress=True)
    folder = temp_folder("multiview")
    files = out.save(folder)
    gallery = [(im, f"azimuth {a:g}°") for im, a in zip(out.images, out.azimuths)]
    text = (f"{len(out.images)} views of {out.metadata['conditioning']} at elevation {float(elevation):g}°, "
            f"{int(steps)} steps, {seconds(out.seconds)}.")
    return gallery, text, [str(p) for p in files]


def build_tab():
    import gradio as gr

    from pipelines.multiview import DEFAULT_MODEL
    run = ui_errors(run_multiview)
    gr.Markdown("Prompt or front image → **consistent views** of one object with **MV-Adapter** "
                "(the shipped model knows small coloured primitives rendered at 64×64).")
    with gr.Row():
        prompt = gr.Textbox(value="", label="prompt", placeholder="a red box")
        image = gr.Image(type="filepath", label="front view (optional)", image_mode=None)
    with gr.Row():
        num_views = gr.Slider(1, MAX_TAB_VIEWS, value=6, step=1, label="views")
        elevation = gr.Slider(-45, 60, value=0, step=5, label="elevation (°)")
        steps = gr.Slider(1, MAX_TAB_STEPS, value=30, step=1, label="sampling steps")
        seed = gr.Number(value=0, precision=0, label="seed")
        model = gr.Textbox(value=DEFAULT_MODEL, label="adapter (checkpoint name or folder)")
    # one set of examples: prompts alone, and front views of held-out test objects with their captions
    gr.Examples(examples=[[p, None, v, e] for p, v, e in EXAMPLES] + image_examples(),
                inputs=[prompt, image, num_views, elevation], label="examples (prompt, or front view + caption)",
                cache_examples=False, run_on_click=False)
    button = gr.Button("Generate views", variant="primary")
    gallery = gr.Gallery(label="views (caption: azimuth from the front)", columns=6, height="auto")
    info = gr.Markdown(label="run")
    files = gr.File(label="download .png", file_count="multiple")

    def click(prompt, image, num_views, elevation, steps, seed, model, progress=gr.Progress(track_tqdm=True)):
        return run(prompt, image, num_views, elevation, steps, seed, model, progress=progress)

    button.click(click, [prompt, image, num_views, elevation, steps, seed, model], [gallery, info, files])
