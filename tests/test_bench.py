import json

import pytest

from genstudio.bench import Report, run_benchmark


def test_report_writes_json_and_markdown_with_ratios(tmp_path):
    r = Report("demo", tmp_path)
    r.add("baseline", "set-a", ssim=0.5, seconds=2.0)
    r.add("ours", "set-a", ssim=0.75, seconds=1.0)
    r.compare("baseline")
    jp, mp = r.write()
    data = json.loads(jp.read_text())
    assert data["task"] == "demo" and data["machine"]["torch"]
    ours = next(x for x in data["results"] if x["method"] == "ours")
    assert ours["ssim/baseline"] == 1.5 and ours["seconds/baseline"] == 0.5
    md = mp.read_text()
    assert md.startswith("# Benchmark: demo") and "| set-a | ours |" in md


def test_unknown_benchmark_lists_available(tmp_path):
    with pytest.raises(KeyError, match="vq"):
        run_benchmark("nope", tmp_path)


def test_dit_benchmark_quick(tmp_path):
    from genstudio.precision import resolve_precision
    jp, _ = run_benchmark("dit", tmp_path, quick=True)
    rows = json.loads(jp.read_text())["results"]
    train_rows = [r for r in rows if r["method"].startswith("DiT train")]
    auto = resolve_precision("cpu").name  # fp32 alone where bf16 is emulated; fp32 and bf16 where it is native
    assert [r["precision"] for r in train_rows] == sorted({"fp32", auto}, key=["fp32", "bf16"].index)
    peak = next(r for r in rows if r["method"] == "matmul 2048^3")
    for r in train_rows:  # MFU is against the peak of the row's own precision, so it is a share
        assert r["steps_per_s"] > 0 and 0 < r["mfu"] < 1 and peak[f"{r['precision']}_gflops"] > 0
    assert {r["method"] for r in rows} >= {"sample ddim", "sample dpm"}


def test_masked_metrics():
    import numpy as np
    from genstudio.metrics import l1, mse, psnr
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[:2] = 255
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert mse(a, b) == 0.5 and mse(a, b, mask) == 1.0 and mse(a, b, ~mask) == 0.0
    assert l1(a, b, mask) == 1.0 and psnr(a, a) == float("inf")


def test_training_steps_reads_the_summary_next_to_a_checkpoint(tmp_path):
    from genstudio.bench import training_steps
    (tmp_path / "run" / "final").mkdir(parents=True)
    assert training_steps(tmp_path / "run" / "final") is None
    (tmp_path / "run" / "summary.json").write_text('{"steps": 950}')
    assert training_steps(tmp_path / "run" / "final") == 950
    (tmp_path / "run" / "summary.json").write_text("not json")
    assert training_steps(tmp_path / "run" / "final") is None
