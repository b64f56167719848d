"""`genstudio space export`: the exported folder is a Gradio Space whose app has every installed tab."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cli_runner import run_genstudio

pytest.importorskip("gradio")

PROBE = """
import json, sys
sys.path.insert(0, {space!r})
import app, apps
from importlib.metadata import entry_points
labels = [c["props"].get("label") for c in app.demo.config["components"] if c.get("type") == "tabitem"]
text = json.dumps(app.demo.config)
print(json.dumps({{"apps_from": apps.__file__, "labels": labels, "unavailable": "is unavailable" in text,
                  "tasks": sorted(ep.name for ep in entry_points(group="genstudio.apps"))}}))
"""


def test_exported_space_boots_with_every_tab(tmp_path):
    space = tmp_path / "space"
    r = run_genstudio("space", "export", space)
    assert r.returncode == 0, r.stderr
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert (space / "requirements.txt").read_text().startswith(".[")  # the Space installs the package itself
    assert "*.safetensors filter=lfs" in (space / ".gitattributes").read_text()
    assert (space / "checkpoints" / "starvector-icons-S" / "config.json").exists()
    assert not list(space.rglob("__pycache__"))
    # the Space's own app.py and apps/ (not this checkout's) build one tab per installed task
    probe = subprocess.run([sys.executable, "-c", PROBE.format(space=str(space))], cwd=space, capture_output=True,
                           text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    assert info["apps_from"].startswith(str(space)) and not info["unavailable"]
    assert len(info["labels"]) == len(info["tasks"]) >= 6 and info["labels"][0] == "Image → SVG"
    r = run_genstudio("space", "export", space)
    assert r.returncode != 0 and "exists" in r.stderr and "Traceback" not in r.stderr
