"""Gradio tab: a dense mesh -> an artist-like mesh with MeshAnything, both in 3D viewers."""
from __future__ import annotations

from apps import load_pipeline, progress_default, seconds, temp_folder, ui_errors

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "mesh"


def example_meshes() -> tuple[list[str], list[str]]:
    """(paths of the example .obj files, a readable label for each: "test object 828 · 120 faces")."""
    paths = sorted(EXAMPLES.glob("*.obj"))
    labels = []
    for path in paths:
        faces = sum(1 for line in path.read_text(errors="replace").splitlines() if line.startswith("f "))
        name = path.stem.replace("urdf_", "test object ").replace("_", " ")
        labels.append(f"{name} · {faces} faces")
    return [str(p) for p in paths], labels


def convert(mesh_path, max_faces: int | None = None, seed: int | None = 0, marching_cubes: bool = True,
            candidates: int | None = None, fit: bool = True, model: str | None = None,
            progress=progress_default()) -> tuple[str, str, list[str]]:
    """A mesh file -> (path of the output .glb, summary, paths of the downloads: .glb and .obj).
    Raises ValueError on failure."""
    from genstudio.formats.mesh import load_mesh_input
    from pipelines.mesh.pipeline import DEFAULT_MODEL
    if not mesh_path:
        raise ValueError("Upload a mesh or pick an example first.")
    source = load_mesh_input(mesh_path)
    pipe = load_pipeline("mesh", model or DEFAULT_MODEL, progress, "generating the mesh face by face…")
    out = pipe(source, max_faces=int(max_faces) if max_faces else None, seed=0 if seed is None else int(seed),
               marching_cubes=bool(marching_cubes), progress=True,
               num_candidates=int(candidates) if candidates else None, fit_steps=None if fit else 0)
    if out.failed:
        raise ValueError(f"{out.message}. Try another seed or turn on marching cubes.")
    folder = temp_folder("mesh")
    path, obj = folder / "meshanything.glb", folder / "meshanything.obj"
    out.save(path)
    out.save(obj)
    text = (f"{out.num_faces} faces and {out.num_vertices} vertices (the input had {out.input_faces} faces), "
            f"{seconds(out.seconds)}.")
    if out.message:
        text += f" {out.message.rstrip('.')}."
    return str(path), text, [str(path), str(obj)]


def build_tab():
    import gradio as gr

    run = ui_errors(convert)

    gr.Markdown("Dense mesh → artist-like mesh with **MeshAnything** (V2, Adjacent Mesh Tokenization): the model "
                "reads points sampled on your surface and writes a compact triangle mesh face by face. "
                "Objects should be +Y up; keep *marching cubes* on unless the input is already a dense scan.")
    with gr.Row():
        inp = gr.Model3D(label="input mesh (.obj / .glb / .ply / .stl)")
        out = gr.Model3D(label="MeshAnything output", interactive=False)
    with gr.Row():
        max_faces = gr.Slider(16, 800, value=400, step=16, label="max faces")
        seed = gr.Number(value=0, precision=0, label="seed")
        marching_cubes = gr.Checkbox(value=True, label="remesh with marching cubes first")
        candidates = gr.Slider(1, 8, value=4, step=1, label="draws (the one nearest your shape is kept)")
        fit = gr.Checkbox(value=True, label="fit the vertices to your surface (faces unchanged)")
    button = gr.Button("Generate mesh", variant="primary")
    examples, labels = example_meshes()
    if examples:
        gr.Examples(examples=[[e] for e in examples], inputs=[inp], example_labels=labels,
                    label="examples (held-out procedural objects, never seen in training)",
                    cache_examples=False, run_on_click=False)
    info = gr.Markdown(label="face counts")
    download = gr.File(label="download .glb / .obj", file_count="multiple")
    button.click(run, [inp, max_faces, seed, marching_cubes, candidates, fit], [out, info, download])
