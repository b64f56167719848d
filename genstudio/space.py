"""`genstudio space export DIR`: a folder that is a working Hugging Face Space (Gradio SDK).

It holds the package (genstudio/, pipelines/, apps/, pyproject.toml), the shipped checkpoints and
examples, and what a Space needs besides:
- README.md with the Space front matter (sdk gradio at the installed version, app_file app.py);
- app.py, the entry point: the same app as `genstudio app` (every tab comes from the entry points
  of the installed package, so the Space installs itself: requirements.txt says `.[extras]`);
- requirements.txt; .gitattributes sending the weights (*.safetensors) to Git LFS.
Push it with `git init && git lfs install && git add . && git commit && git push` to a Space repo.
"""
from __future__ import annotations

import shutil
from pathlib import Path

PARTS = ("genstudio", "pipelines", "apps", "checkpoints", "examples", "pyproject.toml", "LICENSE")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "*.egg-info")
EXTRAS = "svg,app,3d,inpaint,video"

APP = '''"""Hugging Face Space entry point: the genstudio Gradio app (one tab per installed task)."""
from apps.app import build_app

demo = build_app()

if __name__ == "__main__":
    demo.launch()
'''


def repo_root() -> Path:
    """The source tree this package runs from (an editable install or a checkout)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").exists() or not (root / "apps").is_dir():
        raise FileNotFoundError(f"{root} is not a genstudio source tree (no pyproject.toml / apps/): "
                                "export the Space from a checkout of the repository")
    return root


def front_matter(gradio_version: str) -> str:
    return "\n".join([
        "---", "title: genstudio", "emoji: 🎨", "colorFrom: indigo", "colorTo: pink", "sdk: gradio",
        f"sdk_version: {gradio_version}", "app_file: app.py", "pinned: false", "license: apache-2.0",
        "short_description: Image to SVG, glyph DiT, inpainting, video and meshes on one small CPU suite", "---", ""])


def export_space(to: str | Path, overwrite: bool = False) -> Path:
    """Write the Space folder `to` (atomically: whole or not at all)."""
    import gradio

    from .export import write_folder_atomically
    to, root = Path(to), repo_root()
    if to.exists() and not overwrite:
        raise FileExistsError(f"{to} exists: pass --overwrite to replace it")
    if to.resolve() == root or root in to.resolve().parents:
        raise ValueError(f"{to} lies inside the source tree {root}: export the Space somewhere else")

    def write(tmp: Path) -> None:
        for part in PARTS:
            source = root / part
            if source.is_dir():
                shutil.copytree(source, tmp / part, ignore=IGNORE)
            elif source.is_file():
                shutil.copy2(source, tmp / part)
        readme = (root / "README.md").read_text()
        (tmp / "README.md").write_text(front_matter(gradio.__version__) + "\n" + readme)
        (tmp / "app.py").write_text(APP)
        (tmp / "requirements.txt").write_text(f".[{EXTRAS}]\n")
        (tmp / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                            "*.gif filter=lfs diff=lfs merge=lfs -text\n")

    return write_folder_atomically(to, write)
