"""Gradio tab: image -> SVG code with StarVector (best-of-N), rendered beside the input."""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors, upload_path

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "svg"


def example_images() -> list[str]:
    """The input icons (not the demo's committed side-by-side comparison)."""
    return sorted(str(p) for p in EXAMPLES.glob("*.png") if not p.stem.endswith("_comparison"))


def convert(image, candidates: int = 1, seed: int | None = 0, refine: bool = True, refine_steps: int | None = None,
            model: str | None = None, progress=progress_default()):
    """Image (an uploaded file's path, or a PIL image) -> (rendering, svg code, summary, path of a
    downloadable .svg). Raises on failure. An upload goes through the CLI's loader (pixel budget,
    unreadable/degenerate files) before the model loads.
    `refine`: fit the best candidate's numbers, and one drawing from an empty canvas, to the image."""
    from pipelines.svg.pipeline import DEFAULT_MODEL, REFINE_STEPS
    from genstudio.render import load_image, write_text
    if not hasattr(image, "size"):
        image = upload_path(image)
        if image is None:
            raise ValueError("Upload an image or pick an example first.")
        image = load_image(image)
    pipe = load_pipeline("svg", model or DEFAULT_MODEL, progress,
                         "generating and refining…" if refine else "generating…")
    out = pipe(image, num_candidates=int(candidates), seed=None if seed is None else int(seed), refine=bool(refine),
               refine_steps=int(refine_steps or REFINE_STEPS), progress=True)
    if out.failed:
        raise ValueError(f"{out.message}. Try more candidates or another seed.")
    path = temp_folder("svg") / "genstudio.svg"
    write_text(path, out.svg)
    return out.image, out.svg, summary(out), str(path)


def summary(out) -> str:
    """The result in 1-3 plain sentences, e.g. "7 paths, 803 bytes, 98.9 % similar to your image (SSIM), 1.9 s"."""
    import re
    paths = len(re.findall(r"<(?:path|rect|circle|ellipse|line|polyline|polygon)\b", out.svg))
    size = len(out.svg.encode())
    text = (f"{paths} shape{'s' * (paths != 1)}, {size} bytes, {100 * out.score['ssim']:.1f} % similar to your image "
            f"(SSIM), {seconds(out.metadata.get('seconds', 0.0))}.")
    n = out.metadata.get("candidates", len(out.candidates))
    winner = out.metadata.get("winner")
    origin = {"model": "the model's drawing", "empty-canvas": "a drawing fitted from an empty canvas"}.get(winner)
    if n > 1 or origin:
        text += f" Best of {n} candidate{'s' * (n != 1)}" + (f": {origin} won." if origin else ".")
    return text


def build_tab():
    import gradio as gr
    from pipelines.svg.pipeline import REFINE_STEPS

    run = ui_errors(convert)

    gr.Markdown("Image → SVG code with **StarVector**: the model writes SVG (best of N candidates, "
                "scored by SSIM against your image). Works best on icons, logos and glyphs.")
    with gr.Row():
        inp = gr.Image(type="filepath", label="input image", image_mode=None)
        rendering = gr.Image(type="pil", label="SVG rendering", interactive=False)
    with gr.Row():
        candidates = gr.Slider(1, 16, value=1, step=1, label="candidates (best-of-N; 1 = greedy)")
        seed = gr.Number(value=0, precision=0, label="seed")
    with gr.Row():
        refine = gr.Checkbox(value=True, label="refine (fit the numbers to the image; also try an empty canvas)")
        refine_steps = gr.Slider(10, 400, value=REFINE_STEPS, step=10, label="refinement steps")
    button = gr.Button("Convert to SVG", variant="primary")
    examples = example_images()
    if examples:
        gr.Examples(examples=[[e] for e in examples], inputs=[inp], label="examples (held-out test icons)",
                    cache_examples=False, run_on_click=False)
    with gr.Row():
        code = gr.Code(label="SVG code", language="html")
        with gr.Column():
            score = gr.Markdown(label="result")
            download = gr.File(label="download .svg")
    # refinement steps only matter when refining
    refine.change(lambda on: gr.update(interactive=bool(on)), refine, refine_steps, queue=False, show_progress="hidden")
    # preprocess=False: Gradio decodes nothing; the upload's path goes to the CLI's loader (convert)
    button.click(run, [inp, candidates, seed, refine, refine_steps], [rendering, code, score, download],
                 preprocess=False)
