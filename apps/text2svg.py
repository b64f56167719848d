"""Gradio tab: text -> SVG with SVGFusion (a gallery of rendered samples, each SVG downloadable).

The model loads on the first run, so the tab builds without it.
"""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors

MAX_SAMPLES, MAX_CANDIDATES = 16, 4  # per click: the tab stays responsive on a CPU
EXAMPLE_PROMPTS = ["a rocket", "house", "arrow left", "smiling face"]


def run_text2svg(prompt: str, num: int = 4, guidance: float = 3.0, steps: int = 50, seed: int | None = 0,
                 candidates: int = 1, model: str | None = None, init_file: str | None = None,
                 strength: float = 0.2, progress=progress_default()):
    """(gallery of (render, caption), summary, the valid SVG files for download). init_file: an SVG to make
    variations of (redrawn toward the prompt at `strength`)."""
    from pathlib import Path

    from genstudio.formats.svg import MAX_INPUT_BYTES
    from pipelines.text2svg import DEFAULT_MODEL
    from pipelines.text2svg.cli import read_text_file
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("Type what to draw, e.g. 'a rocket'.")
    if int(num) > MAX_SAMPLES or not 1 <= int(candidates) <= MAX_CANDIDATES:
        raise ValueError(f"At most {MAX_SAMPLES} samples and {MAX_CANDIDATES} candidates per sample per run here.")
    init = read_text_file(Path(init_file), "init SVG", MAX_INPUT_BYTES) if init_file else None
    pipe = load_pipeline("text2svg", model or DEFAULT_MODEL, progress)
    out = pipe(prompt, num_samples=int(num), guidance_scale=float(guidance), num_inference_steps=int(steps),
               seed=None if seed is None else int(seed), candidates=int(candidates), progress=True,
               init_svg=init, strength=float(strength))
    if out.failed:
        raise ValueError(out.message)
    folder = temp_folder("text2svg")
    files = [p for p in out.save(folder) if p.suffix == ".svg"]
    gallery = [(im, f"sample {k}" + ("" if svg else " (drew nothing)"))
               for k, (im, svg) in enumerate(zip(out.images, out.svgs))]
    text = (f"{sum(out.valid)} of {len(out.svgs)} samples drew something, "
            f"{seconds(out.seconds)} ({out.metadata['steps']} steps, guidance {float(guidance):g}"
            + (f", variations of the uploaded SVG at strength {float(strength):g}" if init else "") + ").")
    return gallery, text, [str(p) for p in files]


def build_tab():
    import gradio as gr

    run = ui_errors(run_text2svg)
    gr.Markdown("Text → SVG icons with **SVGFusion** (a diffusion transformer writes the drawing commands from "
                "your words; small model trained here on ~24k captioned icons). Short prompts work best.")
    with gr.Row():
        prompt = gr.Textbox(value="a rocket", label="prompt")
        model = gr.Textbox(value="svgfusion-icons-S", label="model (checkpoint name or folder)")
    with gr.Row():
        num = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="samples")
        guidance = gr.Slider(1.0, 10.0, value=3.0, step=0.5, label="guidance (1 = off)")
        steps = gr.Slider(5, 200, value=50, step=5, label="sampling steps")
        seed = gr.Number(value=0, precision=0, label="seed")
        candidates = gr.Slider(1, MAX_CANDIDATES, value=1, step=1, label="candidates per sample (keeps the best by the model's own score)")
    with gr.Row():
        init = gr.File(label="optional: an SVG to make variations of (at most 64 drawing commands)",
                       file_types=[".svg"], type="filepath")
        strength = gr.Slider(0.05, 1.0, value=0.2, step=0.05, label="variation strength (with an SVG; 1 ignores it)")
    button = gr.Button("Draw", variant="primary")
    gr.Examples(examples=[[e] for e in EXAMPLE_PROMPTS], inputs=[prompt], label="examples (short prompts)",
                cache_examples=False, run_on_click=False)
    gallery = gr.Gallery(label="samples (rendered SVGs)", columns=4, height="auto")
    info = gr.Markdown(label="run")
    files = gr.File(label="download .svg", file_count="multiple")
    button.click(run, [prompt, num, guidance, steps, seed, candidates, model, init, strength], [gallery, info, files])
