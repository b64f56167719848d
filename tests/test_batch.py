"""`genstudio batch`: job files, one output per job (atomic), results.jsonl, resume after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_runner import run_genstudio
from genstudio.batch import JobError, read_jobs

ROOT = Path(__file__).resolve().parent.parent


def write_jobs(path: Path, jobs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    return path


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("text, match", [('{"task": "svg"\n', "not JSON"), ('["svg"]\n', "at least"),
                                         ('{"task": "svg", "id": "a/b"}\n', "plain file name"),
                                         ('{"task": "svg", "id": "x"}\n{"task": "svg", "id": "x"}\n', "twice"),
                                         ('{"task": "svg", "args": "logo.png"}\n', "must be a list")])
def test_malformed_job_files_are_refused_before_anything_runs(tmp_path, text, match):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(text)
    with pytest.raises(JobError, match=match):
        read_jobs(jobs)
    r = run_genstudio("batch", jobs, "-o", tmp_path / "out")
    assert r.returncode == 1 and match in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_batch_runs_every_task_records_failures_and_skips_finished_jobs(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"id": "glyphs", "task": "generate", "args": [["A", "b"]], "kwargs": {"num_inference_steps": 2}},
        {"id": "clip", "task": "video", "args": ["generate"], "kwargs": {"num_inference_steps": 2}, "seed": 3},
        {"id": "bad", "task": "generate", "args": [["#"]]},
        {"task": "nope"},
    ])
    out = tmp_path / "out"
    r = run_genstudio("batch", jobs, "-o", out, "--device", "cpu", "--precision", "fp32")
    assert r.returncode == 1 and "2 done, 0 skipped, 2 failed" in r.stderr and "Traceback" not in r.stderr
    rows = {row["id"]: row for row in results(out)}
    assert rows["glyphs"]["status"] == "done" and (out / "glyphs.png").stat().st_size > 0
    assert rows["clip"]["output"] == ["clip.gif"] and rows["clip"]["seed"] == 3
    assert rows["bad"]["status"] == "failed" and "unknown class" in rows["bad"]["message"]
    assert rows["4"]["status"] == "failed" and "unknown task 'nope'" in rows["4"]["message"]
    before = (out / "glyphs.png").stat().st_mtime_ns
    r = run_genstudio("batch", jobs, "-o", out, "--device", "cpu", "--precision", "fp32")
    assert "0 done, 2 skipped, 2 failed" in r.stderr
    assert (out / "glyphs.png").stat().st_mtime_ns == before and len(results(out)) == 4


def test_kill_9_loses_nothing_finished_and_a_rerun_does_only_the_rest(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", [
        {"id": f"job{i}", "task": "generate", "args": [["A", "g", "7"]],
         "kwargs": {"num_images_per_class": 4, "num_inference_steps": 10}, "seed": i} for i in range(6)])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "genstudio.cli", "batch", str(jobs), "-o", str(out), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "results.rank0.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the batch finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = [json.loads(line)["id"] for line in log.read_text().splitlines() if line.strip()]
    assert finished and all((out / f"{i}.png").stat().st_size > 0 for i in finished)
    stamps = {i: (out / f"{i}.png").stat().st_mtime_ns for i in finished}
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{6 - len(finished)} done, {len(finished)} skipped, 0 failed" in rerun.stderr
    assert sorted(row["id"] for row in results(out)) == [f"job{i}" for i in range(6)]  # each job once
    assert all((out / f"{i}.png").stat().st_mtime_ns == t for i, t in stamps.items())  # not redone
    assert sorted(p.name for p in out.glob("*.png")) == [f"job{i}.png" for i in range(6)]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
