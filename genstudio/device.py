"""Device and seed helpers shared by the CLI, pipelines and the app."""
from __future__ import annotations


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

