"""Gradio tab: class-conditional images from the latent DiT, with classifier-free and SIMS guidance.

The model loads on the first run, so the tab builds without it.
"""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors

MAX_IMAGES = 64  # per click: the tab stays responsive on a CPU
EXAMPLE_CLASSES = ["A g 7", "0 1 2 3 4 5 6 7 8 9", "H e l l o", "a b c x y z"]


def run_generate(classes: str, num: int = 4, guidance: float = 2.0, sims: float = 0.0, steps: int = 25,
                 seed: int | None = 0, model: str | None = None, progress=progress_default()):
    """(grid image, summary, path of the grid as a downloadable .png). `classes`: characters or
    numbers separated by spaces or commas."""
    from pipelines.image.pipeline import DEFAULT_MODEL
    labels = [c for c in classes.replace(",", " ").split() if c]
    if not labels:
        raise ValueError("Type one or more classes, e.g. A g 7.")
    if len(labels) * int(num) > MAX_IMAGES:
        raise ValueError(f"At most {MAX_IMAGES} images per run here ({len(labels)} classes x {int(num)}).")
    pipe = load_pipeline("generate", model or DEFAULT_MODEL, progress)
    if sims and pipe.negative_transformer is None:
        raise ValueError("This model has no SIMS auxiliary model: pick the -sims checkpoint or set SIMS to 0.")
    out = pipe(labels, num_images_per_class=int(num), guidance_scale=float(guidance), sims_guidance=float(sims),
               num_inference_steps=int(steps), seed=None if seed is None else int(seed), progress=True)
    grid = out.grid()
    grid = grid.resize((grid.width * 3, grid.height * 3), 0)  # 32 px glyphs are too small to see
    path = temp_folder("generate") / "glyphs.png"
    grid.save(path)
    n = len(out.images)
    text = (f"{n} image{'s' * (n != 1)} ({len(labels)} class{'es' * (len(labels) != 1)} × {int(num)}), "
            f"{out.nfe} model evaluations per image, {seconds(out.seconds)}.")
    return grid, text, str(path)


def build_tab():
    import gradio as gr

    run = ui_errors(run_generate)
    gr.Markdown("Class-conditional **DiT** (diffusion transformer on VAE latents): type characters (0-9, A-Z, "
                "a-z) and get glyphs in fonts the model invents. **CFG** (classifier-free guidance) sharpens the "
                "class; **SIMS** pushes samples away from what the model's own samples look like "
                "(checkpoint dit-glyphs-S-sims).")
    with gr.Row():
        classes = gr.Textbox(value="A g 7", label="classes (characters, space separated)")
        model = gr.Dropdown(["dit-glyphs-S", "dit-glyphs-S-sims"], value="dit-glyphs-S-sims", label="model")
    with gr.Row():
        num = gr.Slider(1, 16, value=4, step=1, label="images per class")
        guidance = gr.Slider(1.0, 6.0, value=2.0, step=0.25, label="CFG scale (1 = off)")
        sims = gr.Slider(0.0, 3.0, value=0.0, step=0.25, label="SIMS w (0 = off)")
        steps = gr.Slider(2, 100, value=25, step=1, label="sampling steps")
        seed = gr.Number(value=0, precision=0, label="seed")
    button = gr.Button("Generate", variant="primary")
    gr.Examples(examples=[[e] for e in EXAMPLE_CLASSES], inputs=[classes], label="examples (classes to draw)",
                cache_examples=False, run_on_click=False)
    # SIMS needs the -sims checkpoint's auxiliary model: off (and set to 0) for the plain one
    model.change(lambda name: gr.update(interactive=name.endswith("-sims")) if name.endswith("-sims")
                 else gr.update(interactive=False, value=0.0), model, sims, queue=False, show_progress="hidden")
    grid = gr.Image(type="pil", label="one row per class", interactive=False)
    info = gr.Markdown(label="run")
    download = gr.File(label="download .png")
    button.click(run, [classes, num, guidance, sims, steps, seed, model], [grid, info, download])
