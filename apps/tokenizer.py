"""Gradio tab: the shared VQ tokenizer's reconstruction."""
from __future__ import annotations

from apps import ui_errors, upload_path


@ui_errors
def run(image):
    """An uploaded image (its path, or the raw upload) -> (reconstruction, stats), with the CLI's
    loader and work budget (`genstudio tokenizer reconstruct`)."""
    from genstudio.limits import check_work
    from genstudio.render import load_image
    from genstudio.tokenizer_cli import DEFAULT_MODEL, WORK_BUDGET, reconstruct_image
    path = upload_path(image)
    if path is None:
        raise ValueError("Upload an image first.")
    picture = load_image(path)
    w, h = picture.size
    check_work(f"the image ({w}x{h}, run whole)", w * h, WORK_BUDGET, "pixels")
    return reconstruct_image(picture, DEFAULT_MODEL)


def build_tab():
    import gradio as gr

    gr.Markdown("Encode an image into discrete SimVQ tokens and decode it back.")
    with gr.Row():
        inp = gr.Image(type="filepath", label="input", image_mode=None)
        out = gr.Image(type="pil", label="reconstruction")
    stats = gr.JSON(label="tokens and quality")
    gr.Button("Reconstruct", variant="primary").click(run, inp, [out, stats], preprocess=False)
