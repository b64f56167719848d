"""`genstudio bench speed` in quick mode: the rows and ratio columns exist (no time is asserted)."""
import json

import pytest
import torch

from genstudio.bench import run_benchmark


def test_speed_quick_writes_ratio_rows(tmp_path):
    jp, mp = run_benchmark("speed", out_dir=tmp_path, quick=True)
    data = json.loads(jp.read_text())
    rows = data["results"]
    datasets = {r["dataset"] for r in rows}
    for prefix in ("DiT train", "DiT sample", "LM generate"):
        assert any(d.startswith(prefix) for d in datasets), prefix
    ours = [r for r in rows if r["method"] in ("genstudio DiT", "genstudio PrefixLM.generate")]
    assert ours and all(r["time_ratio"] > 0 and r["baseline"] != "-" for r in ours)
    assert {r["precision"] for r in rows} >= {"fp32"}
    for r in rows:
        assert r["seconds"] > 0 and r["throughput"] > 0 and r["unit"]
    table = mp.read_text()
    assert "time_ratio" in table and "| genstudio DiT |" in table
    assert any("max |ours - theirs|" in n for n in data["notes"])


def test_diffusers_copy_computes_the_same_function():
    from genstudio.bench_speed import _perturb_, diffusers_dit_like
    from genstudio.dit import DiT
    torch.manual_seed(0)
    ours = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=5,
               learn_sigma=True).eval()
    _perturb_(ours)
    theirs = diffusers_dit_like(ours).eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 4])
    with torch.no_grad():
        a, b = ours(x, t, y), theirs(x, timestep=t, class_labels=y).sample
    assert a.abs().mean() > 1e-3
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_video_dit_has_no_diffusers_counterpart():
    from genstudio.bench_speed import diffusers_dit_like
    from genstudio.dit import DiT
    video = DiT(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1, num_heads=2, num_classes=0,
                num_frames=4)
    with pytest.raises(ValueError, match="class-conditional image DiT"):
        diffusers_dit_like(video)
