"""`genstudio batch JOBS.jsonl -o OUT/`: many generations of any task, sharded across processes.

One job per line of JOBS.jsonl:

    {"id": "logo", "task": "svg", "args": ["logo.png"], "kwargs": {"num_candidates": 4}, "seed": 0}
    {"id": "a-row", "task": "generate", "args": [["A", "a"]], "kwargs": {"num_images_per_class": 4}}
    {"id": "fill", "task": "inpaint", "model": "put-photos-S", "args": ["photo.png", "hole.png"]}

`args`/`kwargs` go to the task's pipeline call (`genstudio.load(task, model)`), `seed` defaults to 0,
`id` (default: the line number) names the output: OUT/<id><suffix> with the task's own format
(`output_suffix` of its pipeline: .svg, .png, .gif, .obj). Every output is written atomically; each
finished job appends one line (id, status, seconds, output, scores, message) to
OUT/results.rank<r>.jsonl, and at the end the main process merges them into OUT/results.jsonl.
A rerun skips the jobs already recorded as done (a kill -9 loses at most the job in progress; none
is done twice). Scale out with accelerate: `accelerate launch --multi_gpu --num_processes 2 -m genstudio.cli batch
...` gives each process every n-th job (one GPU each; with no GPU visible, CPU processes).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = "results.jsonl"


class JobError(ValueError):
    """A malformed JOBS.jsonl (the whole batch is refused before anything runs)."""


def read_jobs(path: str | Path) -> list[dict]:
    jobs, seen = [], set()
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"cannot read the jobs file {path}: {e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            job = json.loads(line)
        except ValueError as e:
            raise JobError(f"{path}:{number}: not JSON ({e})") from None
        if not isinstance(job, dict) or not isinstance(job.get("task"), str):
            raise JobError(f"{path}:{number}: a job is an object with at least \"task\"")
        job = {"id": str(job.get("id", number)), "args": [], "kwargs": {}, "seed": 0, "model": None, **job}
        job["id"] = str(job["id"])
        if not isinstance(job["args"], list) or not isinstance(job["kwargs"], dict):
            raise JobError(f"{path}:{number}: \"args\" must be a list and \"kwargs\" an object")
        if "/" in job["id"] or job["id"].startswith(".") or not job["id"]:
            raise JobError(f"{path}:{number}: id {job['id']!r} must be a plain file name")
        if job["id"] in seen:
            raise JobError(f"{path}:{number}: id {job['id']!r} appears twice")
        seen.add(job["id"])
        jobs.append(job)
    return jobs


def finished_ids(out: Path) -> set[str]:
    """Jobs recorded as done by any rank of an earlier (or this) run."""
    done = set()
    for path in out.glob("results*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a kill: that job runs again
                continue
            if row.get("status") == "done":
                done.add(row["id"])
    return done


def _run_job(job: dict, out: Path, pipelines: dict, device: str, precision: str) -> dict:
    from .pipeline import load, pipeline_classes
    key = (job["task"], job["model"])
    if key not in pipelines:
        if job["task"] not in pipeline_classes():
            raise ValueError(f"unknown task {job['task']!r}; installed: {', '.join(sorted(pipeline_classes()))}")
        pipelines[key] = load(job["task"], job["model"], device=device, precision=precision)
        pipelines[key].set_progress_bar_config(disable=True)
    pipe = pipelines[key]
    result = pipe(*job["args"], **{**job["kwargs"], "seed": job["seed"]})
    if result.failed:
        raise RuntimeError(result.message or "the pipeline failed")
    written = result.save(out / f"{job['id']}{getattr(pipe, 'output_suffix', '.out')}")
    paths = written if isinstance(written, list) else [written]
    scores = getattr(result, "score", None)
    return {"output": [str(Path(p).relative_to(out)) for p in paths],
            "scores": scores if isinstance(scores, dict) else None}


def run_batch_jobs(jobs_file: str | Path, out: str | Path, device: str = "auto", precision: str = "auto",
                   progress: bool = True) -> dict:
    """Run this process's share of the jobs; returns {"done", "skipped", "failed", "rank", "processes"}."""
    from accelerate import PartialState
    from tqdm.auto import tqdm
    jobs = read_jobs(jobs_file)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import torch
    no_accel = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    state = PartialState(cpu=device == "cpu" or no_accel)  # cpu: N launched processes talk over gloo
    if device == "auto" and state.device.type != "cpu":
        device = str(state.device)  # one GPU per process
    mine = jobs[state.process_index::state.num_processes]
    done_before = finished_ids(out)
    todo = [j for j in mine if j["id"] not in done_before]
    counts = {"done": 0, "skipped": len(mine) - len(todo), "failed": 0}
    pipelines: dict = {}
    log = out / f"results.rank{state.process_index}.jsonl"
    with open(log, "a") as f:
        for job in tqdm(todo, desc=f"batch rank {state.process_index}", disable=not progress,
                        position=state.process_index):
            t0 = time.perf_counter()
            row = {"id": job["id"], "task": job["task"], "seed": job["seed"]}
            try:
                row.update(status="done", **_run_job(job, out, pipelines, device, precision))
                counts["done"] += 1
            except Exception as e:  # noqa: BLE001 - one bad job is reported and the batch goes on
                row.update(status="failed", message=str(e).strip().splitlines()[0][:300] if str(e).strip()
                           else type(e).__name__)
                counts["failed"] += 1
            row["seconds"] = round(time.perf_counter() - t0, 3)
            f.write(json.dumps(row) + "\n")
            f.flush()
    state.wait_for_everyone()
    if state.is_main_process:
        merge_results(out)
    return {**counts, "rank": state.process_index, "processes": state.num_processes}


def merge_results(out: Path) -> Path:
    """OUT/results.jsonl: the last record of every job over all ranks and runs (written atomically)."""
    from .render import atomic_path
    rows: dict[str, dict] = {}
    for path in sorted(out.glob("results.rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("status") == "done" or rows.get(row["id"], {}).get("status") != "done":
                rows[row["id"]] = row
    with atomic_path(out / RESULTS) as tmp:
        Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    return out / RESULTS
