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
