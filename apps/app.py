"""genstudio's Gradio app (also the Hugging Face Space entry point: `python apps/app.py`).

One tab per installed pipeline, found through the entry-point group `genstudio.apps`; a tab
whose pipeline fails to load shows why instead of breaking the app.
"""
from __future__ import annotations

from importlib.metadata import entry_points

TITLE = "genstudio"
INTRO = ("**genstudio** — a generative vision suite: image→SVG, text→SVG, 3D, video, inpainting, faces. "
         "Every tab runs a small checkpoint trained by the project; see the README for full-size weights.")


def build_app():
    import gradio as gr
    tabs = sorted(entry_points(group="genstudio.apps"), key=lambda ep: ep.name)
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tabs():
            for ep in tabs:
                with gr.Tab(ep.name):
                    try:
                        ep.load()()
                    except Exception as e:  # show the problem in the tab, keep the others working
                        gr.Markdown(f"**{ep.name} is unavailable**: {type(e).__name__}: {e}")
    return demo


if __name__ == "__main__":  # Hugging Face Space: `app_file: apps/app.py`
    build_app().launch()
