"""Gradio tab: the shared VQ tokenizer's reconstruction."""
from __future__ import annotations

from apps import progress_default, seconds, temp_folder, ui_errors, upload_path


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
    check_work(f"the image ({w}x{h}, run whole)", w * h, WORK_BUDGET, "pixels")
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

    gr.Markdown("Encode an image into discrete SimVQ tokens and decode it back.")
    with gr.Row():
        inp = gr.Image(type="filepath", label="input", image_mode=None)
        out = gr.Image(type="pil", label="reconstruction")
    stats = gr.Markdown(label="tokens and quality")
    download = gr.File(label="download .png")
    gr.Button("Reconstruct", variant="primary").click(run, inp, [out, stats, download], preprocess=False)
