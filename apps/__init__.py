"""Gradio tabs, one module per task (entry points `genstudio.apps`)."""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path


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


_LOADED: set = set()  # (task, model) pairs that `pipeline` has loaded (its cache says only how many)


@functools.lru_cache(maxsize=4)
def pipeline(task: str, model: str | None = None):
    """The task's pipeline, loaded once per (task, model) for every tab (genstudio.load)."""
    from genstudio.pipeline import load
    loaded = load(task, model)
    _LOADED.add((task, model))
    return loaded


class _NoProgress:
    """Stands in for gr.Progress where Gradio is not installed."""
    def __call__(self, *args, **kwargs):
        return None

    def tqdm(self, iterable, *args, **kwargs):
        return iterable


def progress_default():
    """A callback's `progress=` default: Gradio injects a live gr.Progress (which also shows the
    pipelines' tqdm bars, step k of n); a direct call gets one that does nothing."""
    try:
        import gradio as gr
    except ImportError:  # pragma: no cover - the tabs need gradio anyway
        return _NoProgress()
    return gr.Progress(track_tqdm=True)


def load_pipeline(task: str, model: str | None, progress=None, then: str = "generating…"):
    """`pipeline(task, model)`, saying "loading the model…" first when it is not loaded yet, then `then`."""
    report = progress if progress is not None else _NoProgress()
    if (task, model) not in _LOADED or pipeline.cache_info().currsize == 0:
        report(None, desc="loading the model…")
    pipe = pipeline(task, model)
    report(None, desc=then)
    return pipe


def temp_folder(task: str) -> Path:
    """A fresh folder for a tab's downloads."""
    return Path(tempfile.mkdtemp(prefix=f"genstudio-{task}-"))


def seconds(value: float) -> str:
    return f"{value:.1f} s"
