import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cli_runner import run_genstudio

FIXTURES = Path(__file__).parent / "fixtures"


def run(*args, env=None):
    return run_genstudio(*args, env=env)


def test_the_installed_entry_point_runs_as_a_process():
    r = subprocess.run([sys.executable, "-m", "genstudio.cli", "--precision", "fp8", "info"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "fp8" in r.stderr and "Traceback" not in r.stderr


def test_help_lists_core_and_task_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("data", "train", "export", "bench", "app", "info", "tokenizer"):
        assert cmd in r.stdout, cmd
    assert "unavailable" not in r.stderr


def test_info_and_data_list():
    r = run("info")
    assert r.returncode == 0 and "torch" in r.stdout and "tokenizer" in r.stdout
    r = run("data", "list")
    assert r.returncode == 0 and "photos" in r.stdout


def test_reconstruct_writes_output(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "rec.png"
    r = run("--device", "cpu", "tokenizer", "reconstruct", "--image", str(FIXTURES / "coffee_128.png"),
            "-o", str(out), "--model", str(tiny_tokenizer_dir))
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (128, 128) and "PSNR" in r.stderr


def test_bad_inputs_give_clear_errors_and_no_output(tmp_path, tiny_tokenizer_dir):
    out = tmp_path / "rec.png"
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cases = [
        (["--image", str(tmp_path / "missing.png")], "does not exist"),
        (["--image", str(corrupt)], "not a readable image"),
        (["--image", str(FIXTURES / "coffee_128.png"), "--model", "no-such-checkpoint"], "neither a local folder"),
    ]
    for args, msg in cases:
        if "--model" not in args:
            args = args + ["--model", str(tiny_tokenizer_dir)]
        r = run("tokenizer", "reconstruct", *args, "-o", str(out))
        assert r.returncode != 0
        assert msg in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".rec*"))
    import torch
    r = run("--device", "cuda", "info")
    if torch.cuda.is_available():
        assert r.returncode == 0 and torch.cuda.get_device_name(0) in r.stdout
    else:  # asking for a GPU that is not there is a clear one-line error, not a silent CPU run
        assert r.returncode != 0 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_train_command_runs_a_recipe(tmp_path, photos_built):
    r = run("train", "tokenizer", "--set", "steps=2", "--set", "preset=\"tiny\"", "--set", "batch_size=2",
            "--set", "sample_size=16", "--set", "eval_items=4", "--output-dir", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "run" / "final" / "config.json").exists()
