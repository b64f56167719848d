"""Gradio tab: faces from identity vectors with Vec2Face (variations of a face, new identities, bounded edits).

The model loads on the first run, so the tab builds without it.
"""
from __future__ import annotations

from pathlib import Path

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors, upload_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "face"

MAX_FACES = 32       # per click: the tab stays responsive on a CPU
MAX_EDIT_ITERS = 100


def run_face(face=None, new_identity: bool = False, num: int = 8, std: float = 0.3, pose: float | None = None,
             expression: float | None = None, max_iters: int = 50, seed: int | None = 0, model: str | None = None,
             progress=progress_default()):
    """(gallery of (face, caption), summary, the faces as downloadable PNGs). `face`: an uploaded
    image (path or FileData), used unless `new_identity`; pose / expression (None = leave) edit the
    identity first (AttrOP, at most `max_iters` model calls), then `num` variations of the result."""
    from pipelines.face import DEFAULT_MODEL
    path = upload_path(face)
    if not new_identity and path is None:
        raise ValueError("Upload a face, or press “new identity”.")
    if not 1 <= int(num) <= MAX_FACES:
        raise ValueError(f"Between 1 and {MAX_FACES} faces per run here.")
    pipe = load_pipeline("face", model or DEFAULT_MODEL, progress)
    seed = None if seed is None else int(seed)
    vector = pipe.sample_identities(1, seed=seed)[0] if new_identity else pipe.embed(path)[0]
    notes = ["a new identity" if new_identity else "the uploaded face's identity"]
    gallery = []
    if pose is not None or expression is not None:
        edited = pipe.edit(vector, pose=pose, expression=expression, max_iters=min(int(max_iters), MAX_EDIT_ITERS),
                           seed=seed)
        info = edited.metadata["attrop"]
        gallery.append((edited.images[0], "edited (std 0)"))
        notes.append(", ".join(f"{k} {info['start_scores'][k]:.2f} → {v:.2f}" for k, v in info["scores"].items()) +
                     f" ({'met' if info['met'] else 'not met'} after {info['iterations']} iterations, "
                     f"vector cos {info['similarity']:.2f})")
        vector = edited.vectors[0]
    out = pipe.from_vector(vector, n=int(num), std=float(std), seed=seed, progress=True)
    gallery += [(im, f"cos {s:.2f}") for im, s in zip(out.images, out.identity_similarity)]
    folder = temp_folder("face")
    files = out.save(folder)
    mean = sum(out.identity_similarity) / len(out.identity_similarity)
    text = (f"{len(out.images)} faces of {'; '.join(notes)}: std {float(std):g}, mean recogniser similarity "
            f"{mean:.2f}, {seconds(out.seconds)}.")
    return gallery, text, [str(p) for p in files]


def build_tab():
    import gradio as gr

    run = ui_errors(run_face)
    gr.Markdown("Identity vector → faces with **Vec2Face**: upload a face (its recogniser vector is the identity) "
                "or make a new one, and get variations of the same person. The shipped model knows "
                "**DiceBear avatar faces (64×64), not photos**.")
    with gr.Row():
        face = gr.Image(type="filepath", label="face image", image_mode=None)
        with gr.Column():
            model = gr.Textbox(value="vec2face-avatars-S", label="model (checkpoint name or folder)")
            seed = gr.Number(value=0, precision=0, label="seed")
    examples = sorted(str(p) for p in EXAMPLES.glob("*.png"))
    if examples:
        gr.Examples(examples=[[e] for e in examples], inputs=[face], label="examples (held-out test avatars)",
                    cache_examples=False, run_on_click=False)
    with gr.Row():
        num = gr.Slider(1, MAX_FACES, value=8, step=1, label="faces (n)")
        std = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="variation (std)")
    with gr.Row():
        use_pose = gr.Checkbox(value=False, label="edit pose")
        pose = gr.Slider(-0.5, 0.5, value=0.0, step=0.05, label="pose (face centre, left − / right +)")
        use_expression = gr.Checkbox(value=False, label="edit expression")
        expression = gr.Slider(0.0, 1.0, value=0.3, step=0.05, label="expression (mouth contrast)")
        max_iters = gr.Slider(1, MAX_EDIT_ITERS, value=50, step=1, label="edit iterations (cap)")
    with gr.Row():
        variations = gr.Button("Variations of the face", variant="primary")
        new_identity = gr.Button("New identity")
    gallery = gr.Gallery(label="faces (caption: recogniser similarity to the identity)", columns=8, height="auto")
    info = gr.Markdown(label="run")
    files = gr.File(label="download .png", file_count="multiple")

    def go(is_new):
        def click(face, num, std, use_pose, pose, use_expression, expression, max_iters, seed, model,
                  progress=gr.Progress(track_tqdm=True)):
            return run(face, is_new, num, std, pose if use_pose else None, expression if use_expression else None,
                       max_iters, seed, model, progress=progress)
        return click

    inputs = [face, num, std, use_pose, pose, use_expression, expression, max_iters, seed, model]
    variations.click(go(False), inputs, [gallery, info, files])
    new_identity.click(go(True), inputs, [gallery, info, files])
