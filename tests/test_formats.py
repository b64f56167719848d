"""The core's shared formats stand alone: importing them loads no pipeline (the direction of
knowledge is apps -> pipelines -> genstudio)."""
import json
import subprocess
import sys
from pathlib import Path

FORMATS = ("svg", "svg_safety", "svg_tokenizer", "svg_geometry", "svg_diff", "svg_scene", "svg_refine", "mesh", "video")


def test_formats_import_no_pipeline():
    code = ("import json, sys\n"
            + "".join(f"import genstudio.formats.{name}\n" for name in FORMATS)
            + "print(json.dumps(sorted(m for m in sys.modules if m == 'pipelines' or m.startswith('pipelines.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
