"""Gradio tabs, one module per task (entry points `genstudio.apps`)."""
from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

KEEP_DOWNLOADS_S = 3600  # a tab's download folder lives this long (Gradio serves its own copy), then goes
_DOWNLOADS: Path | None = None


def ui_errors(fn):
    """Wrap a tab's callback so any failure reaches the UI as one clear message, never a traceback,
    and never a server path: an upload's temporary path becomes its file's name (`hide_paths`)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import gradio as gr
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            message = str(getattr(e, "message", e))
            clean = hide_paths(message, (args, kwargs))
            if clean == message:
                raise
            raise gr.Error(clean) from None
        except Exception as e:
            raise gr.Error(hide_paths(str(e), (args, kwargs))) from None
    return wrapped


def _upload_paths(value, found: set) -> set:
    """Every path-like string in a callback's arguments (paths, FileData dicts/objects, editor dicts)."""
    if isinstance(value, str):
        if os.path.isabs(value):  # an upload's path; never a prompt or other text
            found.add(value)
    elif hasattr(value, "__fspath__"):
        found.add(os.fspath(value))
    elif isinstance(value, dict):
        for item in value.values():
            _upload_paths(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _upload_paths(item, found)
    elif isinstance(getattr(value, "path", None), str):
        found.add(value.path)
    return found


def _temp_roots() -> list[str]:
    """Where Gradio keeps uploads (its own rule: GRADIO_TEMP_DIR, else <temp>/gradio), as given and resolved."""
    root = os.environ.get("GRADIO_TEMP_DIR") or os.path.join(tempfile.gettempdir(), "gradio")
    return sorted({root.rstrip(os.sep), os.path.realpath(root).rstrip(os.sep)}, key=len, reverse=True)


def hide_paths(message: str, arguments=()) -> str:
    """`message` with each upload's temporary path (the callback's `arguments`, as given or
    resolved) and any other path under Gradio's temp folder replaced by the file's base name:
    '/tmp/gradio/3f2a…/photo.png is not a readable image' -> 'photo.png is not a readable image'."""
    paths = set()
    for path in _upload_paths(arguments, set()):
        paths.update({path, os.path.realpath(path)})
    for path in sorted(paths, key=len, reverse=True):  # longest first: a path never leaves a prefix behind
        name = os.path.basename(path.rstrip(os.sep))
        if name and path != name:
            message = message.replace(path, name)
    for root in _temp_roots():  # paths of Gradio's that were not arguments (no spaces in what is matched)
        message = re.sub(re.escape(root) + r"(?:" + re.escape(os.sep) + r"[^\s'\"" + re.escape(os.sep) + r"]+)+",
                         lambda m: os.path.basename(m.group(0)), message)
    return message


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
    """A fresh folder for a tab's downloads, inside one folder per process that is removed at exit;
    folders older than `KEEP_DOWNLOADS_S` go first, so a long-running app does not fill the disk."""
    global _DOWNLOADS
    if _DOWNLOADS is None or not _DOWNLOADS.is_dir():
        _DOWNLOADS = Path(tempfile.mkdtemp(prefix="genstudio-app-"))
        atexit.register(shutil.rmtree, _DOWNLOADS, True)
    cutoff = time.time() - KEEP_DOWNLOADS_S
    for old in _DOWNLOADS.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{task}-", dir=_DOWNLOADS))


def seconds(value: float) -> str:
    return f"{value:.1f} s"
