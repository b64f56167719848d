"""Benchmark harness: `genstudio bench TASK` runs a task's benchmark against its baselines in
one process and writes `benchmarks/results/TASK.json` and `TASK.md`.

A benchmark (entry-point group `genstudio.benchmarks`) is `fn(report: Report, quick: bool) -> None`:
it calls `report.add(method, dataset, **metrics)` for each result and optionally
`report.compare(reference=...)` to record ratios against a baseline.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import threading
import time
from pathlib import Path


def machine_info() -> dict:
    import torch
    info = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu": _cpu_name(), "cores": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    try:
        from importlib.metadata import version
        info["genstudio"] = version("genstudio")
        for pkg in ("diffusers", "transformers", "accelerate"):
            info[pkg] = version(pkg)
    except Exception:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_peak_flops(dtype_name: str = "bfloat16", n: int = 2048, repeats: int = 5) -> float:
    """Measured dense matmul FLOP/s on this machine (the denominator of model FLOPs utilisation)."""
    import torch
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def training_steps(folder) -> int | None:
    """Steps recorded by `genstudio train` next to a checkpoint (summary.json), if any; for a run
    continued from other weights (`init_from`), the steps behind those weights are included."""
    folder = Path(folder)
    for f in (folder / "summary.json", folder.parent / "summary.json"):
        try:
            summary = json.loads(f.read_text())
        except (ValueError, OSError):
            continue
        if summary.get("steps"):
            return int(summary["steps"]) + int(summary.get("init_steps") or 0)
    return None


def evenly_spaced(items: list[dict], k: int, key: str = "id") -> list[dict]:
    """`k` items spread evenly over `items` sorted by `key` (all of them when there are no more
    than `k`): a fixed, representative subset of a test split whatever its size."""
    import numpy as np
    items = sorted(items, key=lambda it: it[key])
    if len(items) <= k:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


class Report:
    def __init__(self, task: str, out_dir: str | os.PathLike = "benchmarks/results"):
        self.task, self.out_dir = task, Path(out_dir)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.figures: dict = {}       # name -> PIL image, written as TASK-NAME.png next to the table
        self.meta = machine_info()
        self.t0 = time.time()

    def add(self, method: str, dataset: str = "-", **metrics) -> dict:
        row = {"dataset": dataset, "method": method, **{k: _clean(v) for k, v in metrics.items()}}
        self.rows.append(row)
        print(f"[bench {self.task}] {dataset:>14} {method:<24} " +
              "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()), flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def figure(self, name: str, image, caption: str) -> None:
        """A picture to commit with the table (TASK-NAME.png, linked from the markdown under `caption`)."""
        self.figures[name] = (image, caption)

    def compare(self, reference: str, metrics: list[str] | None = None) -> None:
        """Add `ratio_to_<reference>` columns: each row's metric / the reference row's (same dataset)."""
        for row in self.rows:
            ref = next((r for r in self.rows if r["dataset"] == row["dataset"] and r["method"] == reference), None)
            if ref is None or row is ref:
                continue
            for k in metrics or [k for k in row if k not in ("dataset", "method")]:
                a, b = row.get(k), ref.get(k)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b not in (0, None):
                    row[f"{k}/{reference}"] = round(a / b, 4)

    def write(self) -> tuple[Path, Path]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.meta["seconds"] = round(time.time() - self.t0, 1)
        data = {"task": self.task, "machine": self.meta, "results": self.rows, "notes": self.notes}
        jp, mp = self.out_dir / f"{self.task}.json", self.out_dir / f"{self.task}.md"
        tmp = jp.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, jp)
        for name, (image, _) in self.figures.items():
            path = self.out_dir / f"{self.task}-{name}.png"
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp, format="PNG", optimize=True)
            os.replace(tmp, path)
        tmp = mp.with_suffix(".md.tmp")
        tmp.write_text(self.markdown())
        os.replace(tmp, mp)
        return jp, mp

    def markdown(self) -> str:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        m = self.meta
        lines = [f"# Benchmark: {self.task}", "",
                 f"{m['date']} · {m['cpu']} ({m['cores']} cores) · torch {m['torch']}"
                 + (f" · {m['cuda']}" if m.get("cuda") else "") + f" · {m.get('seconds', '?')} s", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        for name, (_, caption) in self.figures.items():
            lines += ["", f"{caption}", "", f"![{name}]({self.task}-{name}.png)"]
        return "\n".join(lines) + "\n"


def _clean(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_benchmark(task: str, out_dir="benchmarks/results", quick: bool = False, **options) -> tuple[Path, Path]:
    from importlib.metadata import entry_points
    eps = {ep.name: ep for ep in entry_points(group="genstudio.benchmarks")}
    if task not in eps:
        raise KeyError(f"unknown benchmark {task!r}; available: {', '.join(sorted(eps)) or 'none'}")
    report = Report(task, out_dir)
    if options:
        report.note("options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    eps[task].load()(report, quick=quick, **options)
    return report.write()


class PeakMemory:
    """Peak resident memory (MB) above the level at entry, sampled by a thread every `every` s;
    on CUDA, torch's peak allocated memory is used instead."""

    def __init__(self, every: float = 0.002, cuda: bool = False):
        self.every, self.cuda, self.mb = every, cuda, 0.0

    def __enter__(self):
        import psutil
        proc = psutil.Process()
        self.base = self.peak = proc.memory_info().rss
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(self.every):
                self.peak = max(self.peak, proc.memory_info().rss)
        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        if self.cuda:
            import torch
            torch.cuda.reset_peak_memory_stats()
            self._cuda_base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        import psutil
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)
        self.mb = (self.peak - self.base) / 2**20
        if self.cuda:
            import torch
            self.mb = (torch.cuda.max_memory_allocated() - self._cuda_base) / 2**20
        return False
