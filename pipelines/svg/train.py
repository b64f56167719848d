"""`genstudio train starvector`: StarVector on npm icons + font glyphs.

    genstudio train starvector --set preset=S --set max_tokens=384 --output-dir runs/starvector

Options (`StarVectorOptions`, besides TrainConfig's): preset (tiny/S/1b), sets (icon sets, comma-separated; default all
but the colour-emoji sets, whose SVGs are long), glyphs (true), max_tokens (384: longer SVGs are
dropped), vocab_size (2048), image_size (the preset's), eval_items (32), eval_max_new_tokens,
shapes (0: how many synthetic primitive drawings, `synthetic_shape_svgs`, to mix into the train
split), max_shapes (3: primitives per drawing), vision_lr_scale (1: LR factor of the image encoder
and adapter; keep 1: at 8 a small model stopped reading its image, see
benchmarks/results/starvector_grounding.md), init_from (a StarVector checkpoint,
folder or shipped name, to start from: its weights, config and tokenizer; preset, image_size and
vocab_size are then ignored), reinit_vision (false: with init_from, start the image encoder and adapter
afresh and keep only the LM, e.g. after a run whose vision side learnt to ignore the image),
curriculum_warm / curriculum_ramp (0 / 0: with `shapes`, train on the drawings alone for
curriculum_warm steps, then bring the icons and glyphs in over curriculum_ramp steps until they make
up 1 - shapes_share of every batch; shapes_share defaults to 0.25. Without it a small model learns to
ignore its image, see benchmarks/results/starvector_grounding.md. curriculum_ramp=1 alone keeps that
final mix from the second batch on: how `make train-starvector` continues a curriculum run with init_from),
targets (a targets file of `genstudio svg-distill`, pipelines/svg/distill.py: every train item whose id has a
kept SVG there learns that SVG, normalised like every text, from its own input image; other items and the
val split are unchanged; the run prints how many texts were replaced), targets_only (false: train on the
replaced items alone).

The BPE tokenizer is trained on the train split's texts once and kept in output_dir/tokenizer, so
a resumed run reuses it; training texts are cached in output_dir/texts.jsonl. The tokenizer is
attached to the model, whose save_pretrained writes it into every checkpoint-*/ and final/.
"""
from __future__ import annotations

import functools
import json
import math
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from genstudio.data import DataError, load_manifest, prepare
from genstudio.formats.svg_tokenizer import special_token_ids, train_svg_tokenizer
from genstudio.train import CurriculumBatchSampler, Recipe, parse_config

from .data import SVGImageDataset, collate_svg, synthetic_shape_items, training_texts
from .starvector import STARVECTOR_CONFIGS, StarVectorModel, load_starvector, starvector_config

LONG_SETS = ("twemoji", "openmoji")  # colour emoji: many paths, mostly over any CPU token budget
TEXT_SIZE, TEXT_PRECISION = 128, 0


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]


def load_items(split: str, sets=None, glyphs: bool = True) -> list[dict]:
    """Icon items of `sets` (default: all but LONG_SETS) plus glyph items, of one split."""
    from . import data  # noqa: F401  (registers the glyphs source)
    prepare("icons", quiet=True)
    icons = load_manifest("icons", split)
    wanted = _as_list(sets)
    if wanted is None:
        wanted = sorted({it["set"] for it in load_manifest("icons")} - set(LONG_SETS))
    unknown = set(wanted) - {it["set"] for it in load_manifest("icons")}
    if unknown:
        raise DataError(f"unknown icon set(s) {sorted(unknown)} in the icons dataset")
    items = [it for it in icons if it["set"] in wanted]
    if glyphs:
        prepare("glyphs", quiet=True)
        items += load_manifest("glyphs", split)
    return items


def cached_texts(items: list[dict], cache: Path, max_chars: int) -> list[str | None]:
    """Training texts of `items`, computed once per id and kept in a JSONL file."""
    known: dict[str, str | None] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            known[row["id"]] = row["text"]
    todo = [it for it in items if it["id"] not in known]
    if todo:
        svgs = [it["svg"] if "svg" in it else Path(it["path"]).read_text(encoding="utf-8") for it in todo]
        texts = training_texts(svgs, TEXT_SIZE, TEXT_PRECISION, max_chars=max_chars)
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "a", encoding="utf-8") as f:
            for it, text in zip(todo, texts):
                known[it["id"]] = text
                f.write(json.dumps({"id": it["id"], "text": text}) + "\n")
    return [known[it["id"]] for it in items]


def distilled_texts(items: list[dict], texts: list[str | None], targets: str, max_chars: int,
                    only: bool = False) -> tuple[list[dict], list[str | None], list[str | None]]:
    """(items, texts, image texts) with a `genstudio svg-distill` file's kept SVGs as the texts of
    the train items they name; the image texts are the items' own (their input images stay).
    `only`: the replaced items alone."""
    from .distill import apply_targets
    new_texts, replaced = apply_targets(items, texts, targets, max_chars)
    print(f"[starvector] targets {targets}: replaced {sum(replaced)} of {len(items)} training texts"
          + (" (training on those alone)" if only else ""))
    if only:
        if not any(replaced):
            raise DataError(f"targets_only: {targets} replaces none of this run's training texts")
        keep = [k for k, r in enumerate(replaced) if r]
        return [items[k] for k in keep], [new_texts[k] for k in keep], [texts[k] for k in keep]
    return items, new_texts, list(texts)


def load_or_train_tokenizer(folder: Path, texts: list[str], vocab_size: int):
    from transformers import PreTrainedTokenizerFast
    if (folder / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_svg_tokenizer(texts, vocab_size=vocab_size)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    return tokenizer


def is_valid_svg(text: str) -> bool:
    """Well-formed XML with an <svg> root (no DTD: generated text is never expanded)."""
    if "<!" in text:
        return False
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return False
    return root.tag.rsplit("}", 1)[-1] == "svg"


@torch.no_grad()
def evaluate_starvector(model: StarVectorModel, dataset: SVGImageDataset, max_items: int = 32,
                        num_generate: int = 4, max_new_tokens: int = 384, batch_size: int = 8) -> dict:
    """Token loss / perplexity on up to `max_items` items spread over the set; `image_gain`: how much
    the loss rises when each SVG is paired with another item's image (0 = the image is ignored);
    valid-SVG rate of greedy generations."""
    n = min(max_items, len(dataset))
    picks = [round(i * (len(dataset) - 1) / max(n - 1, 1)) for i in range(n)]
    total, total_shuffled, count = 0.0, 0.0, 0
    for start in range(0, n, batch_size):
        batch = dataset.collate([dataset[i] for i in picks[start:start + batch_size]])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        tokens = int((batch["labels"] != -100).sum())
        loss = float(model(**batch).loss)
        total += loss * tokens
        if len(batch["pixel_values"]) > 1:  # a batch of one has no other image to pair with
            loss = float(model(**dict(batch, pixel_values=batch["pixel_values"].roll(1, 0))).loss)
        total_shuffled += loss * tokens
        count += tokens
    loss, loss_shuffled = total / max(count, 1), total_shuffled / max(count, 1)
    metrics = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "image_gain": loss_shuffled - loss}
    if num_generate > 0:
        images = torch.stack([dataset[i]["pixel_values"] for i in picks[:num_generate]])
        svgs = [c[0] for c in model.generate_svg(images, dataset.tokenizer, max_new_tokens=max_new_tokens,
                                                 do_sample=False)]
        metrics.update(valid_svg_rate=sum(map(is_valid_svg, svgs)) / len(svgs),
                       generated_chars=sum(map(len, svgs)) / len(svgs))
    return metrics


@dataclass
class StarVectorOptions:
    """`genstudio train starvector` options (besides TrainConfig's); the module docstring says more."""
    preset: str = "S"                        # a STARVECTOR_CONFIGS name: tiny / S / 1b
    sets: Optional[tuple[str, ...]] = None   # icon sets ("a,b"); None: all but LONG_SETS; "": none
    glyphs: bool = True                      # also train on font glyphs
    max_tokens: int = 384                    # longer SVGs are dropped
    vocab_size: int = 2048                   # BPE vocabulary of a new tokenizer
    image_size: Optional[int] = None         # None: the preset's
    eval_items: int = 32                     # validation items scored at each save
    eval_max_new_tokens: Optional[int] = None  # generation length at evaluation; None: max_tokens
    shapes: int = 0                          # synthetic primitive drawings mixed into the train split
    max_shapes: int = 3                      # primitives per drawing
    vision_lr_scale: float = 1.0             # LR factor of the image encoder and adapter (keep 1, see the docstring)
    init_from: Optional[str] = None          # a StarVector checkpoint (folder or shipped name) to start from
    reinit_vision: bool = False              # with init_from: a fresh image encoder and adapter, the LM kept
    curriculum_warm: int = 0                 # steps on the drawings alone (needs shapes)
    curriculum_ramp: int = 0                 # steps over which icons and glyphs come in
    shapes_share: float = 0.25               # the drawings' final share of every batch (curriculum)
    targets: Optional[str] = None            # a `genstudio svg-distill` targets file: distilled train texts
    targets_only: bool = False               # with targets: train on the replaced items alone


def recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, StarVectorOptions, recipe="starvector", output_dir="runs/starvector",
                                   steps=4000, batch_size=16, lr=5e-4, warmup_steps=200, weight_decay=0.01,
                                   save_every=500)
    preset = opts.preset
    if preset not in STARVECTOR_CONFIGS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(STARVECTOR_CONFIGS)}")
    sets, glyphs = opts.sets, opts.glyphs
    max_tokens, vocab_size = opts.max_tokens, opts.vocab_size
    image_size = opts.image_size if opts.image_size is not None else STARVECTOR_CONFIGS[preset].get("image_size", 64)
    eval_items = opts.eval_items
    eval_new_tokens = opts.eval_max_new_tokens if opts.eval_max_new_tokens is not None else max_tokens
    num_shapes, init_from = opts.shapes, opts.init_from
    max_shapes, vision_lr_scale = opts.max_shapes, opts.vision_lr_scale
    reinit_vision = opts.reinit_vision
    warm, ramp = opts.curriculum_warm, opts.curriculum_ramp
    shapes_share = opts.shapes_share
    if reinit_vision and init_from is None:
        raise ValueError("reinit_vision needs init_from (a fresh model's vision side is new already)")
    curriculum = warm > 0 or ramp > 0
    if curriculum and num_shapes <= 0:
        raise ValueError("curriculum_warm/curriculum_ramp need synthetic drawings: set shapes=N")
    if not 0.0 <= shapes_share <= 1.0:
        raise ValueError(f"shapes_share must be in [0, 1], got {shapes_share}")
    if opts.targets is not None and not Path(opts.targets).is_file():
        raise FileNotFoundError(f"targets file {opts.targets} does not exist (write it with `genstudio svg-distill`)")
    if opts.targets_only and opts.targets is None:
        raise ValueError("targets_only needs targets (a `genstudio svg-distill` file)")
    if opts.targets_only and curriculum:
        raise ValueError("targets_only trains on distilled items alone: it takes no curriculum_warm/curriculum_ramp")

    out = Path(train_cfg.output_dir)
    max_chars = 16 * max_tokens  # see SVGImageDataset: longer sources cannot fit in max_tokens
    train_items = load_items("train", sets, glyphs)
    train_items += synthetic_shape_items(num_shapes, train_cfg.seed, max_shapes)
    val_items = load_items("val", sets, glyphs)
    if not val_items:  # a shapes-only run (sets="", glyphs=false) is validated on unseen drawings
        val_items = (synthetic_shape_items(eval_items if num_shapes else 0, train_cfg.seed + 10_000, max_shapes)
                     or train_items[:eval_items])
    train_texts = cached_texts(train_items, out / "texts.jsonl", max_chars)
    val_texts = cached_texts(val_items, out / "texts.jsonl", max_chars)
    image_texts = None
    if opts.targets is not None:
        train_items, train_texts, image_texts = distilled_texts(train_items, train_texts, opts.targets, max_chars,
                                                                opts.targets_only)
    if init_from is not None:
        model, tokenizer = load_starvector(init_from)
        model.train()
        image_size = model.config.image_size
        if reinit_vision:
            model.reset_vision()
    else:
        tokenizer = load_or_train_tokenizer(out / "tokenizer", [t for t in train_texts if t], vocab_size)
        config = starvector_config(preset, vocab_size=len(tokenizer), image_size=image_size,
                                   max_length_train=max_tokens, **special_token_ids(tokenizer))
        model = StarVectorModel(config)
        model.svg_tokenizer = tokenizer  # saved into every checkpoint by save_pretrained

    if image_texts is not None:
        from .distill import DistilledSVGDataset
        train_set = DistilledSVGDataset(train_items, tokenizer, image_size, max_tokens, TEXT_SIZE, TEXT_PRECISION,
                                        texts=train_texts, image_texts=image_texts)
    else:
        train_set = SVGImageDataset(train_items, tokenizer, image_size, max_tokens, TEXT_SIZE, TEXT_PRECISION,
                                    texts=train_texts)
    val_set = SVGImageDataset(val_items, tokenizer, image_size, max_tokens, TEXT_SIZE, TEXT_PRECISION,
                              texts=val_texts)
    batch_sampler = None
    if curriculum:
        is_shape = [it.get("set") == "shapes" for it in train_set.items]
        batch_sampler = CurriculumBatchSampler(
            [i for i, s in enumerate(is_shape) if s], [i for i, s in enumerate(is_shape) if not s],
            train_cfg.batch_size, warm * train_cfg.grad_accum, ramp * train_cfg.grad_accum, 1.0 - shapes_share,
            seed=train_cfg.seed)
    print(f"[starvector] train {len(train_set)} items (dropped {dict(train_set.dropped)}), val {len(val_set)}, "
          f"vocab {len(tokenizer)}")

    shapes_val = None
    if num_shapes and val_set.items[0].get("set") != "shapes":  # also watch the drawings' image gain
        shapes_val = SVGImageDataset(synthetic_shape_items(eval_items, train_cfg.seed + 10_000, max_shapes), tokenizer,
                                     image_size, max_tokens, TEXT_SIZE, TEXT_PRECISION)

    def eval_fn(m):
        metrics = evaluate_starvector(m, val_set, eval_items, max_new_tokens=eval_new_tokens)
        if shapes_val is not None:
            metrics["shapes_image_gain"] = evaluate_starvector(m, shapes_val, eval_items, num_generate=0)["image_gain"]
        return metrics

    def loss_fn(m, batch):
        return m(**batch).loss

    return Recipe(model, train_set, loss_fn, train_cfg,
                  collate_fn=functools.partial(collate_svg, pad_token_id=tokenizer.pad_token_id),
                  eval_fn=eval_fn,
                  lengths=[len(t) for t in train_set.token_ids], batch_sampler=batch_sampler,
                  extra={"tokenizer": tokenizer, "val_set": val_set},
                  lr_multipliers={"image_encoder.": vision_lr_scale, "image_projection.": vision_lr_scale},
                  name="starvector", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) weights in `dtype`, with the
    SVG tokenizer saved beside them (StarVectorModel.save_pretrained writes it)."""
    from genstudio.export import export_model
    export_model(StarVectorModel, run_dir, to, dtype, load_kwargs={"dtype": torch.float32})
