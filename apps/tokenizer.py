"""Gradio tab: the shared VQ tokenizer's reconstruction."""
from __future__ import annotations

from apps import progress_default, seconds, temp_folder, ui_errors, upload_path

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example_images() -> list[str]:
    """Pictures shipped for the other tabs (never a mask, never the demo's comparison)."""
    candidates = [EXAMPLES / "astronaut.png", EXAMPLES / "svg" / "rocket.png", EXAMPLES / "inpaint" / "green.png"]
    return [str(p) for p in candidates if p.exists()]


@ui_errors
def run(image, progress=progress_default()):
    """An uploaded image (its path, or the raw upload) -> (reconstruction, summary, path of the
    reconstruction as a downloadable .png), with the CLI's loader and work budget
    (`genstudio tokenizer reconstruct`)."""
    import time
    from genstudio.limits import check_work
    from genstudio.render import load_image
    from genstudio.tokenizer_cli import DEFAULT_MODEL, WORK_BUDGET, reconstruct_image
    path = upload_path(image)
    if path is None:
        raise ValueError("Upload an image first.")
    picture = load_image(path)
    w, h = picture.size
    check_work(f"the image ({w}x{h})", w * h, WORK_BUDGET, "pixels")
    progress(None, desc="loading the tokenizer, encoding and decoding…")
    started = time.perf_counter()
    rec, stats = reconstruct_image(picture, DEFAULT_MODEL)
    path = temp_folder("tokenizer") / "reconstruction.png"
    rec.save(path)
    rows, cols = stats["tokens"][:2]
    text = (f"{rows}×{cols} = {rows * cols} tokens ({stats['codes_used']} different codes) for {rec.width}×{rec.height} "
            f"pixels. The reconstruction is {100 * stats['ssim']:.1f} % similar to your image (SSIM), PSNR "
            f"{stats['psnr']:.1f} dB, {seconds(time.perf_counter() - started)}.")
    return rec, text, str(path)


def build_tab():
    import gradio as gr

    gr.Markdown("The shared **SimVQ** image tokenizer: encode an image into discrete tokens and decode it back, "
                "to see what the token-based models can represent.")
    with gr.Row():
        inp = gr.Image(type="filepath", label="input", image_mode=None)
        out = gr.Image(type="pil", label="reconstruction", interactive=False)
    examples = example_images()
    if examples:
        gr.Examples(examples=[[e] for e in examples], inputs=[inp], label="examples",
                    cache_examples=False, run_on_click=False)
    stats = gr.Markdown(label="tokens and quality")
    download = gr.File(label="download .png")
    gr.Button("Reconstruct", variant="primary").click(run, inp, [out, stats, download], preprocess=False)
