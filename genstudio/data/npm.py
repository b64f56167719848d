"""npm packages as data: install into a scratch folder (scripts disabled), for sources that read them."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .registry import BuildLog, DataError


def npm_install(scratch: Path, packages: list[str], log: BuildLog, name: str = "genstudio-scratch",
                module: bool = False) -> Path:
    """`npm install PACKAGES` into `scratch` (created); returns its node_modules. `module`: the scratch
    package is an ES module (for node scripts written there). DataError with what to do when it fails."""
    scratch.mkdir(parents=True, exist_ok=True)
    package = {"name": name, "private": True, **({"type": "module"} if module else {})}
    (scratch / "package.json").write_text(json.dumps(package))
    log(f"npm install {' '.join(packages)} (scripts disabled)")
    cmd = ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--no-save", *packages]
    r = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
    if r.returncode != 0:
        raise DataError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()[-500:]}\n"
                        "Check the network access to the npm registry, or pass packages_dir= to an "
                        "existing node_modules tree.")
    return scratch / "node_modules"
