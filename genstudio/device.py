"""Device and seed helpers shared by the CLI, pipelines and the app."""
from __future__ import annotations

import contextlib
import threading


def resolve_device(name: str | None = "auto") -> str:
    """'auto' -> cuda, then mps, then cpu; anything else is checked and returned."""
    import torch
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but this torch build sees no CUDA GPU "
                         "(install a CUDA build of torch, see the README, or use --device cpu)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for, but MPS is not available here")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return name


_THREADS_LOCK = threading.Lock()
_threads_depth = 0
_threads_saved: int | None = None


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run the block with `n` torch intra-op threads (None/0: leave the setting alone).

    For token-by-token decoding of a small model each op is tiny, and threads that wait on one another
    cost far more than they save: MeshAnything-XS on 2 cores with the other one busy decodes in 3 s with
    one thread and 90 s with two. torch's thread count is process-wide, so only the outermost call on the
    main thread sets and restores it; other threads (the Gradio app's workers) leave it alone."""
    import torch
    global _threads_depth, _threads_saved
    if not n or threading.current_thread() is not threading.main_thread():
        yield
        return
    with _THREADS_LOCK:
        _threads_depth += 1
        if _threads_depth == 1:
            _threads_saved = torch.get_num_threads()
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_depth -= 1
            if _threads_depth == 0:
                torch.set_num_threads(_threads_saved)
                _threads_saved = None
