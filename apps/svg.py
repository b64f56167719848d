"""Gradio tab: image -> SVG code with StarVector (best-of-N), rendered beside the input."""
from __future__ import annotations

from apps import pipeline, ui_errors, upload_path

import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "svg"


def example_images() -> list[str]:
    """The input icons (not the demo's committed side-by-side comparison)."""
    return sorted(str(p) for p in EXAMPLES.glob("*.png") if not p.stem.endswith("_comparison"))


def convert(image, candidates: int = 1, seed: int | None = 0, refine: bool = True, refine_steps: int | None = None,
            model: str | None = None):
    """Image (an uploaded file's path, or a PIL image) -> (rendering, svg code, score dict, path of a
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
    out = pipeline("svg", model or DEFAULT_MODEL)(image, num_candidates=int(candidates),
                                            seed=None if seed is None else int(seed), refine=bool(refine),
                                            refine_steps=int(refine_steps or REFINE_STEPS))
    if out.failed:
        raise ValueError(f"{out.message}. Try more candidates or another seed.")
    path = Path(tempfile.mkdtemp(prefix="genstudio-svg-")) / "genstudio.svg"
    write_text(path, out.svg)
    score = {**out.score, "candidates": out.metadata.get("candidates", len(out.candidates)), "chosen": out.best,
             "winner": out.metadata.get("winner"), "note": out.message}
    return out.image, out.svg, score, str(path)


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
        gr.Examples(examples=[[e] for e in examples], inputs=[inp], label="examples (held-out test icons)")
    with gr.Row():
        code = gr.Code(label="SVG code", language="html")
        with gr.Column():
            score = gr.JSON(label="score")
            download = gr.File(label="download .svg")
    # preprocess=False: Gradio decodes nothing; the upload's path goes to the CLI's loader (convert)
    button.click(run, [inp, candidates, seed, refine, refine_steps], [rendering, code, score, download],
                 preprocess=False)
