"""Checkpoint names -> a local folder: `checkpoints/<name>`, a local path, or a hub id.

Shipped checkpoints live in the repository's `checkpoints/` folder (HF layout: config.json,
*.safetensors, README.md model card). A hub id is fetched with huggingface_hub when online and
looked up in the local HF cache when HF_HUB_OFFLINE=1; either way a miss is a clear error that
lists what is available here.
"""
from __future__ import annotations

import os
from pathlib import Path


class CheckpointNotFound(FileNotFoundError):
    pass


def checkpoints_dir() -> Path:
    """$GENSTUDIO_CHECKPOINTS, else the `checkpoints/` folder next to the installed package."""
    env = os.environ.get("GENSTUDIO_CHECKPOINTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "checkpoints"


def available() -> list[str]:
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _has_config(p))


def _has_config(folder: Path) -> bool:
    """A checkpoint folder: its own config, or a multi-part one (vqvae/, transformer/ ...)."""
    return any(folder.glob("*.json")) or any(folder.glob("*/config.json"))


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve(name_or_path: str | os.PathLike, subfolder: str | None = None) -> Path:
    """Return the local folder holding the checkpoint `name_or_path`.

    Order: an existing local path; a shipped checkpoint name; a hub id ("org/name").
    """
    p = Path(name_or_path).expanduser()
    if p.exists():
        return _check(p, subfolder)
    shipped = checkpoints_dir() / str(name_or_path)
    if shipped.is_dir():
        return _check(shipped, subfolder)
    name = str(name_or_path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
            folder = snapshot_download(name, local_files_only=is_offline(),
                                       allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.md",
                                                       f"{subfolder}/*" if subfolder else "*.json"])
            return _check(Path(folder), subfolder)
        except Exception as e:  # network down, offline, unknown repo, gated repo...
            why = "the machine is offline (HF_HUB_OFFLINE=1) and it is not in the local HF cache" \
                if is_offline() else f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            raise CheckpointNotFound(f"checkpoint {name!r} could not be loaded: {why}. "
                                     f"{_available_msg()}") from None
    raise CheckpointNotFound(f"checkpoint {name!r} is neither a local folder nor a shipped checkpoint "
                             f"nor a hub id (org/name). {_available_msg()}")


def _check(folder: Path, subfolder: str | None) -> Path:
    folder = folder / subfolder if subfolder else folder
    if not folder.is_dir():
        raise CheckpointNotFound(f"{folder} is not a folder")
    if not _has_config(folder):
        raise CheckpointNotFound(f"{folder} has no config.json: not a checkpoint folder")
    if any(folder.glob("*.bin")) and not any(folder.glob("*.safetensors")):
        raise CheckpointNotFound(f"{folder} holds only pickle weights (*.bin); genstudio loads safetensors only")
    return folder


def _available_msg() -> str:
    names = available()
    return f"Shipped checkpoints: {', '.join(names)}." if names else \
        f"No shipped checkpoints were found in {checkpoints_dir()}."


def load_safetensors_folder(folder: str | os.PathLike) -> dict:
    """Every *.safetensors shard of a folder merged into one state dict (pickle weights are refused)."""
    from safetensors.torch import load_file
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights (pickle weights are not loaded)")
    state: dict = {}
    for f in files:
        state.update(load_file(str(f)))
    return state
