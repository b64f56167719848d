"""Gradio tabs, one module per task (entry points `genstudio.apps`)."""
from __future__ import annotations

import functools


def ui_errors(fn):
    """Wrap a tab's callback so any failure reaches the UI as one clear message, never a traceback."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import gradio as gr
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise gr.Error(str(e)) from None
    return wrapped


@functools.lru_cache(maxsize=4)
def pipeline(task: str, model: str | None = None):
    """The task's pipeline, loaded once per (task, model) for every tab (genstudio.load)."""
    from genstudio.pipeline import load
    return load(task, model)
