"""Gradio tab: paint a hole on an image (or upload a mask, white = hole), get N PUT completions side by side."""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors, upload_path

from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "inpaint"


def editor_to_image_and_hole(value):
    """ImageEditor value -> (RGB PIL image, (H, W) bool hole): the hole is every painted pixel.
    Uploaded files (paths, or raw FileData with `preprocess=False`) go through the CLI's loader:
    the picture meets the pixel budget, a layer is decoded only when its size is the picture's."""
    from PIL import Image
    if not value or value.get("background") is None:
        raise ValueError("Upload an image (or pick an example) and paint over the region to fill.")
    background = _editor_image(value["background"])
    hole = np.zeros(background.size[::-1], bool)
    for layer in value.get("layers") or []:
        layer = _editor_layer(layer, background.size)
        if layer is not None:
            hole |= np.asarray(layer.convert("RGBA").getchannel("A")) > 0
    from genstudio.render import flatten_alpha
    return flatten_alpha(background), hole


def _editor_image(value):
    from PIL import Image
    from genstudio.render import load_image
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return Image.fromarray(value)
    return load_image(upload_path(value), "RGBA")


def _editor_layer(value, size):
    """A painted layer at the picture's size, or None (another size: not this picture's paint)."""
    from PIL import Image
    from genstudio.render import InputError
    if isinstance(value, (Image.Image, np.ndarray)):
        layer = value if isinstance(value, Image.Image) else Image.fromarray(np.asarray(value))
        return layer if layer.size == size else None
    path = upload_path(value)
    try:
        with Image.open(path) as layer:
            if layer.size != size:  # read from the header: nothing bigger than the picture is decoded
                return None
            return layer.convert("RGBA")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"the painted mask is not a readable image ({type(e).__name__}: {e})") from None


def load_mask(value, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """An uploaded mask (path or raw FileData; white = hole, or the painted/transparent part of a mask
    with alpha, as the CLI's `--mask`) -> ((H, W) bool hole at the picture's `size`, a note for the
    summary). A mask of another size is resized to the picture's (nearest neighbour) and the note says so."""
    from PIL import Image
    from genstudio.render import InputError, load_image
    path = upload_path(value)
    try:
        mask = load_image(path, "RGBA")  # the CLI's loader: unreadable, degenerate, over-budget files refused
    except InputError as e:
        raise InputError(f"the uploaded mask: {e}") from None
    alpha = mask.getchannel("A")
    mask = alpha if alpha.getextrema()[0] < 255 else mask.convert("L")  # transparent paint = hole (as --mask)
    note = ""
    if mask.size != size:
        note = (f"The mask ({mask.size[0]}×{mask.size[1]}) was resized to the picture's size "
                f"({size[0]}×{size[1]}).")
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask) > 127, note


def inpaint(value, num_samples: int = 4, seed: int | None = 0, top_k: int = 50, model: str | None = None,
            mask=None, progress=progress_default()):
    """Editor value (and optionally an uploaded `mask`, white = hole, which then wins over the brush)
    -> (list of completions, the hole as an image, summary, paths of the completions as downloadable
    .png files). Raises on bad input."""
    from PIL import Image
    from genstudio.render import InputError
    from pipelines.inpaint.pipeline import DEFAULT_MODEL
    if mask is not None and upload_path(mask) is not None:
        if not value or value.get("background") is None:
            raise ValueError("Upload the image to inpaint too (the mask only says where the hole is).")
        image, painted = editor_to_image_and_hole(value)
        hole, note = load_mask(mask, image.size)
        if not hole.any():
            raise InputError("the uploaded mask has no hole (white = region to fill): nothing to inpaint")
        if painted.any():
            note = (note + " " if note else "") + "The uploaded mask was used; the brush strokes were ignored."
    else:
        image, hole = editor_to_image_and_hole(value)
        note = ""
    pipe = load_pipeline("inpaint", model or DEFAULT_MODEL, progress)
    out = pipe(image, hole, num_samples=int(num_samples), top_k=int(top_k), seed=None if seed is None else int(seed),
               progress=True)
    masked = np.asarray(image).copy()
    masked[hole] = 255
    folder = temp_folder("inpaint")
    files = []
    for k, completion in enumerate(out.images, 1):
        completion.save(folder / f"inpaint-{k}.png")
        files.append(str(folder / f"inpaint-{k}.png"))
    n, (w, h) = len(out.images), out.work_size
    text = (f"{n} completion{'s' * (n != 1)} of a hole covering {100 * out.info['hole_ratio']:.1f} % of the picture, "
            f"{out.info.get('sampling_steps', '?')} sampling steps at {w}×{h} px, "
            f"{seconds(out.metadata.get('seconds', 0.0))}. Known pixels are kept exactly.")
    if "residual_weight" in out.info:
        text += (f" The decoder's residual over its classical fill was kept at weight {out.info['residual_weight']:g}, "
                 f"chosen on {out.info['validation_masks']} extra holes over known pixels.")
    if note:
        text += " " + note
    return out.images, Image.fromarray(masked), text, files


def run_tab(value, mask, num_samples: int = 4, seed: int | None = 0, top_k: int = 50, progress=progress_default()):
    """The tab's callback: `inpaint` with the inputs in the order the tab gives them."""
    return inpaint(value, num_samples, seed, top_k, mask=mask, progress=progress)


def example_pairs() -> list[list[str]]:
    """[picture, its mask] for every example picture that has a `<stem>_mask.png` (a mask is never
    offered as the picture to inpaint)."""
    pictures = sorted(p for p in EXAMPLES.glob("*.png") if not p.stem.endswith("_mask"))
    return [[str(p), str(p.with_name(f"{p.stem}_mask.png"))] for p in pictures
            if p.with_name(f"{p.stem}_mask.png").exists()]


def build_tab():
    import gradio as gr

    run = ui_errors(run_tab)

    gr.Markdown("Pluralistic inpainting with **PUT**: paint over what should be replaced, or upload a mask "
                "(white = hole; an uploaded mask wins over the brush), and get N different completions. "
                "Known pixels are kept exactly.")
    with gr.Row():
        editor = gr.ImageEditor(type="filepath", label="image: paint the hole", image_mode="RGBA",
                                brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed", default_size=12),
                                transforms=())
        with gr.Column():
            mask = gr.Image(type="filepath", label="or upload a mask (white = hole; resized to the image if needed)",
                            image_mode=None, height=200)
            masked = gr.Image(type="pil", label="input with hole", interactive=False)
            info = gr.Markdown(label="info")
            download = gr.File(label="download .png", file_count="multiple")
    with gr.Row():
        n = gr.Slider(1, 8, value=4, step=1, label="samples")
        seed = gr.Number(value=0, precision=0, label="seed")
        top_k = gr.Slider(1, 512, value=50, step=1, label="top-k")
    button = gr.Button("Inpaint", variant="primary")
    examples = example_pairs()
    if examples:
        gr.Examples(examples=examples, inputs=[editor, mask], label="examples (held-out test crops with their masks)",
                    cache_examples=False, run_on_click=False)
    gallery = gr.Gallery(label="completions", columns=4, height="auto")
    # preprocess=False: Gradio decodes nothing; the files go to the CLI's loader (editor_to_image_and_hole)
    button.click(run, [editor, mask, n, seed, top_k], [gallery, masked, info, download], preprocess=False)
