"""Gradio tab: 3D shapes with VAT + G3PT: a mesh squeezed into a few hundred bytes (and back), and
shapes generated from a prompt or a class.

The model loads on the first run, so the tab builds without it (and says so when it is missing).
"""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors, upload_path

PROMPTS = ["a torus", "a sphere", "a cone", "a box", "a capsule"]
MAX_SHAPES = 4             # per click: one viewer each, and the tab stays responsive on a CPU
MAX_SCALES = 12            # the slider's top; the pipeline refuses more than the model has
RESOLUTION = 64            # marching-cubes grid side: fine enough to see, quick on a CPU
NO_CLASS = "(none: use the prompt)"


def shape_classes() -> list[str]:
    """The classes of the shipped data (what the shipped generator was trained on); the pipeline checks
    the loaded model's own list."""
    from pipelines.shape.data import SHAPE_CLASSES
    return list(SHAPE_CLASSES)


def run_reconstruct(mesh, scales_kept: int = MAX_SCALES, seed: int | None = 0, model: str | None = None,
                    progress=progress_default()) -> tuple[str, str, list[str]]:
    """An uploaded mesh -> (path of its reconstruction .glb, summary with the bytes, downloads: .glb and .vat).
    `scales_kept` beyond the model's scales means all of them."""
    from pipelines.shape import DEFAULT_MODEL
    path = upload_path(mesh)
    if path is None:
        raise ValueError("Upload a mesh (.obj / .glb / .ply / .stl / .off) first.")
    pipe = load_pipeline("shape", model or DEFAULT_MODEL, progress, "encoding and decoding…")
    kept = min(max(int(scales_kept), 1), pipe.num_scales)
    out = pipe.reconstruct(path, scales_kept=kept, resolution=RESOLUTION, seed=0 if seed is None else int(seed))
    if out.failed:
        raise ValueError(f"{out.message}. Keep more scales.")
    folder = temp_folder("shape")
    glb, tokens = folder / "reconstruction.glb", folder / "tokens.vat"
    out.save(glb)
    tokens.write_bytes(out.tokens[0])  # a fresh temp folder: nothing to overwrite, nothing half-written is served
    meta = out.metadata
    text = (f"{meta['scales_kept']} of {pipe.num_scales} scales = {meta['tokens_kept']} tokens = "
            f"**{meta['bytes_kept']} bytes** (all scales: {meta['bytes_total']} bytes), {seconds(out.seconds)}.")
    return str(glb), text, [str(glb), str(tokens)]


def run_generate(prompt: str | None = None, class_name: str | None = None, num: int = 2, seed: int | None = 0,
                 guidance: float = 1.0, model: str | None = None, progress=progress_default()):
    """A prompt and/or class -> (MAX_SHAPES viewer values: .glb paths or None, summary, downloads)."""
    from pipelines.shape import DEFAULT_MODEL
    prompt = (prompt or "").strip() or None
    class_name = None if class_name in (None, "", NO_CLASS) else class_name
    if prompt is None and class_name is None:
        raise ValueError("Type a prompt or pick a class.")
    if not 1 <= int(num) <= MAX_SHAPES:
        raise ValueError(f"Between 1 and {MAX_SHAPES} shapes per run here.")
    pipe = load_pipeline("shape", model or DEFAULT_MODEL, progress, "generating scale by scale…")
    out = pipe(prompt, class_name=class_name, num_samples=int(num), guidance_scale=float(guidance),
               seed=None if seed is None else int(seed), resolution=RESOLUTION, progress=True)
    if out.failed:
        raise ValueError(f"{out.message}.")
    out.file_format = ".glb"
    files = [str(p) for p in out.save(temp_folder("shape"))]
    meshes = [f for f in files if f.endswith(".glb")]
    viewers = (meshes + [None] * MAX_SHAPES)[:MAX_SHAPES]
    text = (f"{len(meshes)} shape{'s' if len(meshes) != 1 else ''}, {out.num_bytes[0]} bytes of tokens each, "
            f"seed {out.metadata['seed']}, {seconds(out.seconds)}.")
    if out.message:
        text += f" {out.message.rstrip('.')}."
    return (*viewers, text, files)


def build_tab():
    import gradio as gr

    reconstruct, generate = ui_errors(run_reconstruct), ui_errors(run_generate)
    gr.Markdown("3D shapes with **VAT + G3PT**: squeeze a mesh into a few hundred bytes of coarse-to-fine tokens "
                "and see what each scale adds, or generate shapes from a prompt or a class.")
    # generation first: its button is the tab's main action (and what its examples fill)
    with gr.Row():
        prompt = gr.Textbox(value="a torus", label="prompt")
        class_name = gr.Dropdown([NO_CLASS, *shape_classes()], value=NO_CLASS, label="or a class")
        num = gr.Slider(1, MAX_SHAPES, value=2, step=1, label="shapes")
        guidance = gr.Slider(1.0, 10.0, value=1.0, step=0.5, label="guidance")
    with gr.Row():
        seed = gr.Number(value=0, precision=0, label="seed")
        model = gr.Textbox(value="shape-S", label="model (checkpoint name or folder)")
    gr.Examples(examples=[[p] for p in PROMPTS], inputs=[prompt], label="prompts",
                cache_examples=False, run_on_click=False)
    button = gr.Button("Generate shapes", variant="primary")
    with gr.Row():
        viewers = [gr.Model3D(label=f"shape {i + 1}", interactive=False) for i in range(MAX_SHAPES)]
    info = gr.Markdown(label="run")
    files = gr.File(label="download .glb / .vat", file_count="multiple")
    gr.Markdown("**Your mesh in a few bytes**: upload a mesh, then slide to keep fewer scales (coarser, fewer bytes).")
    with gr.Row():
        mesh = gr.Model3D(label="your mesh (.obj / .glb / .ply / .stl)")
        rebuilt = gr.Model3D(label="decoded from the tokens", interactive=False)
    with gr.Row():
        scales = gr.Slider(1, MAX_SCALES, value=MAX_SCALES, step=1, label="scales kept (coarse → fine)")
        encode = gr.Button("Encode → decode")
    rebuilt_info = gr.Markdown(label="bytes")
    rebuilt_files = gr.File(label="reconstruction files (.glb / .vat)", file_count="multiple")  # one "download" per tab: the browser test finds it

    def click_reconstruct(mesh, scales, seed, model, progress=gr.Progress(track_tqdm=True)):
        return reconstruct(mesh, scales, seed, model, progress=progress)

    def click_generate(prompt, class_name, num, seed, guidance, model, progress=gr.Progress(track_tqdm=True)):
        return generate(prompt, class_name, num, seed, guidance, model, progress=progress)

    encode.click(click_reconstruct, [mesh, scales, seed, model], [rebuilt, rebuilt_info, rebuilt_files])

    def slide(mesh, scales, seed, model, progress=gr.Progress(track_tqdm=True)):
        if mesh is None:  # moving the slider before an upload is not an error worth a pop-up
            return gr.update(), gr.update(), gr.update()
        return reconstruct(mesh, scales, seed, model, progress=progress)

    scales.release(slide, [mesh, scales, seed, model], [rebuilt, rebuilt_info, rebuilt_files])
    button.click(click_generate, [prompt, class_name, num, seed, guidance, model], [*viewers, info, files])
