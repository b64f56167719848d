"""Gradio tab: the shared VQ tokenizer's reconstruction."""
from __future__ import annotations

from apps import ui_errors


def build_tab():
    import gradio as gr
    from genstudio.tokenizer_cli import DEFAULT_MODEL, reconstruct_image

    @ui_errors
    def run(image):
        if image is None:
            raise gr.Error("Upload an image first.")
        return reconstruct_image(image.convert("RGB"), DEFAULT_MODEL)

    gr.Markdown("Encode an image into discrete SimVQ tokens and decode it back.")
    with gr.Row():
        inp = gr.Image(type="pil", label="input")
        out = gr.Image(type="pil", label="reconstruction")
    stats = gr.JSON(label="tokens and quality")
    gr.Button("Reconstruct", variant="primary").click(run, inp, [out, stats])
