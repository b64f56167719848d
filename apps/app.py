"""genstudio's Gradio app (also the Hugging Face Space entry point: `python apps/app.py`).

One tab per installed pipeline, found through the entry-point group `genstudio.apps`; a tab
whose pipeline fails to load shows why instead of breaking the app.
"""
from __future__ import annotations

import functools
import os
from importlib.metadata import entry_points

TITLE = "genstudio"
INTRO = ("**genstudio** — a generative vision suite: image→SVG, class-conditional glyphs (DiT), inpainting, "
         "video, artist meshes and an image tokenizer, one tab each. Every tab runs a small checkpoint trained "
         "by the project on a CPU; the README says how to load full-size official weights.")


# Tabs in the order a newcomer cares about (flagship first), named for the task; an entry point
# not listed here keeps its own name and comes after these, alphabetically.
TAB_LABELS = {
    "svg": "Image → SVG",
    "text2svg": "Text → SVG",
    "generate": "Glyphs (DiT)",
    "inpaint": "Inpaint",
    "video": "Video",
    "mesh": "Mesh → artist mesh",
    "face": "Faces (Vec2Face)",
    "shape": "Text → 3D shape",
    "multiview": "Multi-view (MV-Adapter)",
    "tokenizer": "Tokenizer (VQ)",
}
MAX_UPLOAD_MB = 20     # per uploaded file; GENSTUDIO_MAX_UPLOAD_MB changes it (the loaders' budgets still apply)
CONCURRENCY_LIMIT = 1  # runs at once: one model run uses the whole CPU/GPU
MAX_QUEUE = 16         # waiting runs beyond this are refused ("queue full") instead of piling up


def max_upload_bytes() -> int:
    value = os.environ.get("GENSTUDIO_MAX_UPLOAD_MB", "").strip()
    try:
        mb = float(value) if value else MAX_UPLOAD_MB
    except ValueError:
        mb = MAX_UPLOAD_MB
    return int((mb if mb > 0 else MAX_UPLOAD_MB) * 1_000_000)


def ordered_tabs(eps) -> list:
    """Entry points in TAB_LABELS order, then the unknown ones by name."""
    known = list(TAB_LABELS)
    return sorted(eps, key=lambda ep: (known.index(ep.name) if ep.name in known else len(known), ep.name))


def tab_label(name: str) -> str:
    return TAB_LABELS.get(name, name)


def launch(demo, *args, **kwargs):
    """`demo.launch` with the app's safety defaults: the upload limit, and 127.0.0.1 unless told
    otherwise (Gradio's own default, which GRADIO_SERVER_NAME changes, e.g. on a Space)."""
    kwargs.setdefault("max_file_size", max_upload_bytes())
    return type(demo).launch(demo, *args, **kwargs)


def build_app():
    import gradio as gr
    tabs = ordered_tabs(entry_points(group="genstudio.apps"))
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            for ep in tabs:
                with gr.Tab(tab_label(ep.name)):
                    try:
                        ep.load()()
                    except Exception as e:  # show the problem in the tab, keep the others working
                        gr.Markdown(f"**{tab_label(ep.name)} is unavailable**: {type(e).__name__}: {e}")
    demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=MAX_QUEUE)
    demo.max_file_size = max_upload_bytes()  # also set by launch(); here so that the config shows it
    demo.launch = functools.partial(launch, demo)  # every launcher (CLI, Space, tests) gets the limits
    return demo


if __name__ == "__main__":  # Hugging Face Space: `app_file: apps/app.py`
    build_app().launch()
