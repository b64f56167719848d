"""Gradio tab: a dense mesh -> an artist-like mesh with MeshAnything, both in 3D viewers."""
from __future__ import annotations

from apps import pipeline, ui_errors

import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "mesh"


def convert(mesh_path, max_faces: int | None = None, seed: int | None = 0, marching_cubes: bool = True,
            model: str | None = None) -> tuple[str, dict]:
    """A mesh file -> (path of the output .glb, {faces, vertices, ...}). Raises ValueError on failure."""
    from genstudio.formats.mesh import load_mesh_input
    from pipelines.mesh.pipeline import DEFAULT_MODEL
    if not mesh_path:
        raise ValueError("Upload a mesh or pick an example first.")
    source = load_mesh_input(mesh_path)
    out = pipeline("mesh", model or DEFAULT_MODEL)(source, max_faces=int(max_faces) if max_faces else None, seed=0 if seed is None else int(seed),
                                            marching_cubes=bool(marching_cubes))
    if out.failed:
        raise ValueError(f"{out.message}. Try another seed or turn on marching cubes.")
    path = Path(tempfile.mkdtemp(prefix="genstudio-mesh-")) / "meshanything.glb"
    out.save(path)
    info = {"input faces": out.input_faces, "output faces": out.num_faces, "output vertices": out.num_vertices,
            "seconds": round(out.seconds, 2), "note": out.message}
    return str(path), info


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
    button = gr.Button("Generate mesh", variant="primary")
    examples = sorted(str(p) for p in EXAMPLES.glob("*.obj"))
    if examples:
        gr.Examples(examples=[[e] for e in examples], inputs=[inp], label="examples (held-out test objects)")
    info = gr.JSON(label="face counts")
    button.click(run, [inp, max_faces, seed, marching_cubes], [out, info])
