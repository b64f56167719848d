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


def upload_path(value) -> str | None:
    """The file path of an upload as a callback gets it: a path, or (with `preprocess=False`, so
    that Gradio decodes nothing itself) the raw FileData dict/object. Every tab then hands the path
    to the same loader as the CLI, so an upload meets the same checks and budgets."""
    if value is None or isinstance(value, str):
        return value or None
    if hasattr(value, "__fspath__"):
        return str(value)
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    if not path:
        raise ValueError("the upload did not arrive as a file; upload it again")
    return str(path)


@functools.lru_cache(maxsize=4)
def pipeline(task: str, model: str | None = None):
    """The task's pipeline, loaded once per (task, model) for every tab (genstudio.load)."""
    from genstudio.pipeline import load
    return load(task, model)
