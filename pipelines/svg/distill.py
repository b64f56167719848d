"""Self-distillation: the pipeline's refined SVGs on training images become training targets.

    genstudio svg-distill --model starvector-icons-S -o runs/distill/targets.jsonl --max-items 600 --max-minutes 30
    genstudio train starvector --set init_from='"starvector-icons-S"' \\
        --set targets='"runs/distill/targets.jsonl"' --set steps=600 --output-dir runs/distill/train

One round: `build_distill_targets` runs the pipeline with its defaults (generation, then the
differentiable refinement of the best model candidate and of an empty canvas) on training-split
items only, each rendered from its training text (the normalised source SVG) on white. A refined
SVG becomes that item's new target when, re-normalised the way the recipe normalises texts
(128 viewBox, integer coordinates), it is a valid SVG, its rendering scores SSIM >= `min_ssim`
against the input, it is at most `max_bytes_ratio` x the item's own text and it fits `max_tokens`
(with <svg-start>/<svg-end>) in the model's tokenizer. Otherwise the item keeps its original
target. The recipe's `targets=` option reads the file (`apply_targets`); the new weights are
kept only if the benchmark of the model alone (`ours-greedy`, `ours-best-of-N`: no refinement)
improves.

The file has one JSON line per processed item, written and flushed as it goes:
{"id", "svg" (the new target, or null), "ssim", "bytes", "source_bytes", "tokens", "won"
("model" | "empty-canvas": which refined candidate the pipeline chose), "reason" (why nothing was
kept, or null), "seconds"}. A rerun skips the ids already there (resumable); items are taken in
a fixed hash order of their ids, so a run stopped by `max_items` / `max_minutes` is a fair sample
of every set. Items whose own text is no training item (invalid, or over `max_tokens`) are
written with a reason and not counted: the round replaces targets, it adds no items.

Inputs are rendered at RENDER_SIZE (128 px, the benchmark's and the refinement's resolution) by
the rasteriser that renders training images; the model sees it resized to its own image size as
in the benchmark.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from genstudio.formats.svg import SVGError, rasterize_svg
from genstudio.formats.svg_safety import validate_svg

from .data import SVGImageDataset, svg_to_training_text, training_texts
from .train import TEXT_PRECISION, TEXT_SIZE

RENDER_SIZE = 128  # = the benchmark's SIZE and the pipeline's REFINE_SIZE


# ---- The targets file ----

def distill_order(items: Sequence[dict], seed: int = 0) -> list[dict]:
    """Items in a fixed pseudo-random order (hash of seed and id): any prefix samples every set."""
    return sorted(items, key=lambda it: hashlib.sha1(f"{seed}:{it['id']}".encode("utf-8")).hexdigest())


def read_targets(path: str | Path) -> dict[str, dict]:
    """{id: row} of a targets file; a torn last line (a killed run) is ignored."""
    rows: dict[str, dict] = {}
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows[row["id"]] = row
    return rows


def kept_targets(path: str | Path) -> dict[str, str]:
    """{id: new target SVG} of the rows that kept one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"targets file {path} does not exist (write it with `genstudio svg-distill`)")
    return {i: row["svg"] for i, row in read_targets(path).items() if row.get("svg")}


def _source_svg(item: dict) -> str:
    return item["svg"] if "svg" in item else Path(item["path"]).read_text(encoding="utf-8")


def apply_targets(items: Sequence[dict], texts: Sequence[str | None], path: str | Path,
                  max_chars: int | None = None) -> tuple[list[str | None], list[bool]]:
    """The recipe's training texts with distilled targets in: `texts` (aligned with `items`, the
    train split) where an item's id has a kept SVG in `path` becomes that SVG, normalised like
    every training text; others stay. Returns (texts, replaced flags). Ids of the file that are
    not among `items` (val/test, other sets) are ignored."""
    targets = kept_targets(path)
    out, replaced = list(texts), [False] * len(items)
    for k, item in enumerate(items):
        svg = targets.get(item["id"])
        if svg is None:
            continue
        text = training_texts([svg], TEXT_SIZE, TEXT_PRECISION, max_chars=max_chars)[0]
        if text is not None:
            out[k], replaced[k] = text, True
    return out, replaced


class DistilledSVGDataset(SVGImageDataset):
    """SVGImageDataset whose images come from `image_texts` (the items' own training texts), not
    from the targets: a distilled item pairs the input the model was shown with the refined SVG.
    Items without an image text (their source was no training text) show their target's rendering."""

    def __init__(self, items, tokenizer, image_size, max_tokens, text_size=128, precision=0, texts=None,
                 image_texts: Sequence[str | None] | None = None, **kwargs):
        super().__init__(items, tokenizer, image_size, max_tokens, text_size, precision, texts=texts, **kwargs)
        by_id = {it["id"]: t for it, t in zip(items, image_texts or [])}
        self.image_texts = [by_id.get(it["id"]) or text for it, text in zip(self.items, self.texts)]

    def image_text(self, k: int) -> str:
        return self.image_texts[k]


# ---- Building targets ----

def judge_target(svg: str, source_text: str, reference: np.ndarray, tokenizer, max_tokens: int,
                 min_ssim: float, max_bytes_ratio: float) -> tuple[dict, str | None]:
    """A pipeline output as a training target: ({"svg", "ssim", "bytes", "tokens"}, None) when it
    passes every test, else (the measures so far, why not)."""
    from genstudio.metrics import ssim
    row = {"svg": None, "ssim": None, "bytes": None, "tokens": None}
    try:
        text = svg_to_training_text(svg, TEXT_SIZE, TEXT_PRECISION)
        problems = validate_svg(text)
        if problems:
            return row, f"invalid: {problems[0]}"
        rendered = rasterize_svg(text, reference.shape[0])
    except SVGError as e:
        return row, f"invalid: {e}"
    row.update(ssim=round(ssim(rendered, reference), 5), bytes=len(text.encode("utf-8")),
               tokens=len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 2)
    if row["ssim"] < min_ssim:
        return row, f"ssim {row['ssim']:.4f} < {min_ssim}"
    source_bytes = len(source_text.encode("utf-8"))
    if row["bytes"] > max_bytes_ratio * source_bytes:
        return row, f"{row['bytes']} bytes > {max_bytes_ratio} x {source_bytes}"
    if row["tokens"] > max_tokens:
        return row, f"{row['tokens']} tokens > {max_tokens}"
    row["svg"] = text
    return row, None


def build_distill_targets(model, items: Sequence[dict], out_jsonl: str | Path, max_items: Optional[int] = None,
                          max_minutes: Optional[float] = None, min_ssim: float = 0.9, max_bytes_ratio: float = 1.5,
                          seed: int = 0, max_tokens: Optional[int] = None, model_wins_only: bool = False,
                          device: str = "auto", precision: str | None = None, progress: bool = True,
                          **pipeline_kwargs) -> dict:
    """Run the pipeline (refinement on, its defaults unless `pipeline_kwargs` say otherwise) on
    training items in `distill_order`, append one row per item to `out_jsonl` (see the module doc)
    and return the summary {"processed", "kept", "mean_ssim", "mean_ssim_kept", "model_won",
    "file_processed", "file_kept", "stopped"}. `model`: a StarVectorPipeline, or a checkpoint
    name/folder. `max_tokens`: default the model's max_length_train. `model_wins_only`: keep only
    targets where the refined model candidate (not the empty canvas) won."""
    from tqdm.auto import tqdm
    from .pipeline import StarVectorPipeline

    bad = sorted({it.get("split") for it in items if it.get("split", "train") != "train"})
    if bad:
        raise ValueError(f"distillation takes training-split items only (got split {', '.join(map(str, bad))})")
    if max_bytes_ratio <= 0 or (max_items is not None and max_items < 0):
        raise ValueError(f"max_bytes_ratio must be > 0 and max_items >= 0 (got {max_bytes_ratio}, {max_items})")
    pipe = model if isinstance(model, StarVectorPipeline) else \
        StarVectorPipeline.from_pretrained(str(model), device=device, precision=precision)
    max_tokens = int(max_tokens or getattr(pipe.model.config, "max_length_train", 0) or 256)
    out_jsonl = Path(out_jsonl)
    out_jsonl.parent.mkdir(parents=True, exist_ok=True)
    done = read_targets(out_jsonl)
    todo = [it for it in distill_order(items, seed) if it["id"] not in done]
    deadline = None if max_minutes is None else time.monotonic() + 60 * max_minutes
    rows: list[dict] = []
    stopped = "done"
    if out_jsonl.exists() and out_jsonl.stat().st_size and not out_jsonl.read_bytes().endswith(b"\n"):
        with open(out_jsonl, "a", encoding="utf-8") as f:  # a torn last line stays alone on its line
            f.write("\n")
    bar = tqdm(total=max_items if max_items is not None else len(todo), desc="distill targets", unit="item",
               disable=not progress)
    with open(out_jsonl, "a", encoding="utf-8") as f, bar:
        for item in todo:
            if max_items is not None and len(rows) >= max_items:
                stopped = "max_items"
                break
            if deadline is not None and time.monotonic() >= deadline:
                stopped = "max_minutes"
                break
            row = distill_item(pipe, item, max_tokens, min_ssim, max_bytes_ratio, seed, model_wins_only,
                               **pipeline_kwargs)
            f.write(json.dumps(row) + "\n")
            f.flush()
            if row.get("reason") == NOT_TRAINED:
                continue
            rows.append(row)
            bar.update()
            bar.set_postfix(kept=sum(r["svg"] is not None for r in rows))
    every = [r for r in read_targets(out_jsonl).values() if r.get("reason") != NOT_TRAINED]
    summary = {"processed": len(rows), "kept": sum(r["svg"] is not None for r in rows),
               "mean_ssim": _mean(r["ssim"] for r in rows),
               "mean_ssim_kept": _mean(r["ssim"] for r in rows if r["svg"] is not None),
               "model_won": sum(r["won"] == "model" for r in rows),
               "file_processed": len(every), "file_kept": sum(bool(r.get("svg")) for r in every),
               "stopped": stopped}
    print(f"[svg-distill] kept {summary['kept']} / {summary['processed']} processed (mean SSIM "
          f"{summary['mean_ssim']}, kept {summary['mean_ssim_kept']}; the model's candidate won "
          f"{summary['model_won']}); {out_jsonl}: {summary['file_kept']} / {summary['file_processed']}; "
          f"stopped: {stopped}", flush=True)
    return summary


NOT_TRAINED = "its own text is no training item (invalid, or over max_tokens)"


def distill_item(pipe, item: dict, max_tokens: int, min_ssim: float, max_bytes_ratio: float, seed: int = 0,
                 model_wins_only: bool = False, **pipeline_kwargs) -> dict:
    """One item's row of the targets file."""
    from PIL import Image
    started = time.perf_counter()
    row = {"id": item["id"], "svg": None, "ssim": None, "bytes": None, "source_bytes": None, "tokens": None,
           "won": None, "reason": None}
    source_text = training_texts([_source_svg(item)], TEXT_SIZE, TEXT_PRECISION, max_chars=16 * max_tokens)[0]
    if source_text is None or len(pipe.tokenizer(source_text, add_special_tokens=False)["input_ids"]) + 2 > max_tokens:
        return dict(row, reason=NOT_TRAINED, seconds=round(time.perf_counter() - started, 3))
    row["source_bytes"] = len(source_text.encode("utf-8"))
    reference = rasterize_svg(source_text, RENDER_SIZE)
    try:
        out = pipe(Image.fromarray(reference), seed=seed, progress=False, **pipeline_kwargs)
    except (SVGError, ValueError, RuntimeError) as e:
        return dict(row, reason=f"pipeline: {e}", seconds=round(time.perf_counter() - started, 3))
    row["won"] = out.metadata.get("winner")
    if out.failed:
        row["reason"] = f"pipeline: {out.message}"
    else:
        judged, row["reason"] = judge_target(out.svg, source_text, reference, pipe.tokenizer, max_tokens,
                                             min_ssim, max_bytes_ratio)
        row.update(judged)
        if row["reason"] is None and model_wins_only and row["won"] != "model":
            row["svg"], row["reason"] = None, f"the {row['won']} candidate won (model_wins_only)"
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


if __name__ == "__main__":  # python -m pipelines.svg.distill ... (the same options as `genstudio svg-distill`)
    import sys
    import typer
    from .cli import svg_distill
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(svg_distill)
    try:
        app(standalone_mode=False)
    except Exception as e:  # noqa: BLE001 - one clear line, as `genstudio` prints
        if hasattr(e, "show") and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
