"""Self-distillation (pipelines/svg/distill.py): refined SVGs of training images as new targets,
and the starvector recipe's `targets=` option that reads them."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cairosvg")
from genstudio.formats.svg import normalize_svg, rasterize_svg  # noqa: E402
from genstudio.formats.svg_safety import validate_svg  # noqa: E402

LUCIDE = Path(__file__).parent / "fixtures" / "npm_icons" / "lucide-static" / "icons"
ROW_KEYS = {"id", "svg", "ssim", "bytes", "source_bytes", "tokens", "won", "reason", "seconds"}
FAST = dict(max_new_tokens=24, refine_steps=8, max_tokens=1024)  # a tiny model, a few optimiser steps


def icon_items(n=3, split="train"):
    return [{"id": f"lucide/{p.stem}", "svg": p.read_text(), "set": "lucide", "split": split}
            for p in sorted(LUCIDE.glob("*.svg"))[:n]]


@pytest.fixture(scope="module")
def tiny_pipe():
    """An untrained tiny StarVector: its text is garbage, refinement from an empty canvas still draws."""
    import torch
    from genstudio.formats.svg_tokenizer import special_token_ids, train_svg_tokenizer
    from pipelines.svg import starvector as sv
    from pipelines.svg.pipeline import StarVectorPipeline
    texts = [normalize_svg(p.read_text(), size=128, precision=0) for p in sorted(LUCIDE.glob("*.svg"))] * 4
    tok = train_svg_tokenizer(texts, vocab_size=400, min_frequency=1)
    config = sv.StarVectorConfig(**{**sv.STARVECTOR_CONFIGS["tiny"], "vocab_size": len(tok),
                                    **special_token_ids(tok)})
    torch.manual_seed(0)
    return StarVectorPipeline(sv.StarVectorModel(config).eval(), tok, device="cpu", precision="fp32")


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def test_targets_are_valid_lines_resume_and_respect_min_ssim(tiny_pipe, tmp_path):
    from pipelines.svg.distill import build_distill_targets, distill_order, kept_targets
    items = icon_items(3)
    out = tmp_path / "targets.jsonl"
    first = build_distill_targets(tiny_pipe, items, out, max_items=2, min_ssim=0.0, max_bytes_ratio=100.0,
                                  progress=False, **FAST)
    rows = read_rows(out)
    assert first["processed"] == 2 and first["stopped"] == "max_items" and len(rows) == 2
    assert [r["id"] for r in rows] == [it["id"] for it in distill_order(items)][:2]  # the fixed hash order
    for r in rows:
        assert set(r) == ROW_KEYS and r["won"] in ("model", "empty-canvas")
        if r["svg"] is not None:
            assert r["reason"] is None and validate_svg(r["svg"]) == [] and r["tokens"] <= 1024
            assert r["svg"] == normalize_svg(r["svg"], size=128, precision=0)  # a training text already
    assert first["kept"] == sum(r["svg"] is not None for r in rows) >= 1
    assert set(kept_targets(out)) == {r["id"] for r in rows if r["svg"]}

    with open(out, "a") as f:
        f.write('{"id": "torn')  # a run killed mid-line
    again = build_distill_targets(tiny_pipe, items, out, max_items=5, min_ssim=0.0, max_bytes_ratio=100.0,
                                  progress=False, **FAST)
    rows = read_rows(out)
    assert again["processed"] == 1 and again["stopped"] == "done" and again["file_processed"] == 3
    assert sorted(r["id"] for r in rows) == sorted(it["id"] for it in items)  # nothing redone

    strict = tmp_path / "strict.jsonl"
    none = build_distill_targets(tiny_pipe, items[:1], strict, min_ssim=1.01, progress=False, **FAST)
    row, = read_rows(strict)
    assert none["kept"] == 0 and row["svg"] is None and "ssim" in row["reason"]


def test_only_training_items_and_clean_stops(tiny_pipe, tmp_path):
    from pipelines.svg.distill import NOT_TRAINED, build_distill_targets
    with pytest.raises(ValueError, match="training-split"):
        build_distill_targets(tiny_pipe, icon_items(1, split="val"), tmp_path / "t.jsonl", progress=False)
    out = tmp_path / "t.jsonl"
    assert build_distill_targets(tiny_pipe, icon_items(2), out, max_minutes=0, progress=False)["processed"] == 0
    # an item the recipe would drop (over max_tokens) is recorded, not counted, not run
    summary = build_distill_targets(tiny_pipe, icon_items(1), out, max_tokens=4, progress=False)
    row, = read_rows(out)
    assert summary["processed"] == 0 and row["reason"] == NOT_TRAINED and row["svg"] is None


def test_recipe_targets_replace_exactly_the_kept_items(tmp_path):
    from pipelines.svg.distill import DistilledSVGDataset
    from pipelines.svg.train import cached_texts, distilled_texts
    items = icon_items(3)
    texts = cached_texts(items, tmp_path / "texts.jsonl", 16 * 384)
    new = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128"><path d="M10 10L100 10L100 100Z"/></svg>'
    rows = [{"id": items[0]["id"], "svg": new}, {"id": items[1]["id"], "svg": None, "reason": "ssim"},
            {"id": "lucide/not-in-this-split", "svg": new}]
    targets = tmp_path / "targets.jsonl"
    targets.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got_items, got, images = distilled_texts(items, texts, str(targets), 16 * 384)
    assert got_items == items and images == texts
    assert got[0] == normalize_svg(new, size=128, precision=0) != texts[0] and got[1:] == texts[1:]
    only_items, only, only_images = distilled_texts(items, texts, str(targets), 16 * 384, only=True)
    assert [it["id"] for it in only_items] == [items[0]["id"]] and only == got[:1] and only_images == texts[:1]

    from genstudio.formats.svg_tokenizer import train_svg_tokenizer
    tok = train_svg_tokenizer(texts + got, vocab_size=300, min_frequency=1)
    data = DistilledSVGDataset(items, tok, 32, 4096, texts=got, image_texts=texts)
    assert data.texts[0] == got[0]  # the new target is learnt ...
    assert (data.render(0) == rasterize_svg(texts[0], 32)).all()  # ... from the item's own image


def test_recipe_option_errors_and_the_module_entry(tmp_path):
    from pipelines.svg.train import recipe
    with pytest.raises(FileNotFoundError, match="svg-distill"):
        recipe({"targets": str(tmp_path / "missing.jsonl"), "output_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="targets_only needs targets"):
        recipe({"targets_only": True, "output_dir": str(tmp_path / "run")})
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "pipelines.svg.distill", "--model", "no-such-model", "-o",
                        str(tmp_path / "t.jsonl")], capture_output=True, text=True, env=env,
                       cwd=Path(__file__).parents[1], timeout=120)
    assert r.returncode == 1 and "no-such-model" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "t.jsonl").exists()
