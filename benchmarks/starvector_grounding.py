"""Does a small StarVector learn to read its image? A fast ablation on synthetic drawings.

    .venv/bin/python benchmarks/starvector_grounding.py NAME [key=value ...]

Trains a ~0.9M-parameter StarVector (the shipped checkpoint's tokenizer, a small ViT and LM) on
`synthetic_shape_svgs` drawings, whose coordinates cannot be guessed without the image, and prints
every 100 steps the validation loss on 64 unseen drawings and the image gain (loss with each SVG
paired with another drawing's image minus the loss; 0 = the image is ignored). Keys (defaults in
DEFAULTS): lr, vlr (LR factor of the image encoder + adapter), norm (adapter_norm), max_shapes,
icons (share of batches drawn from the icon/glyph train split instead of drawings), warm (steps on
drawings alone before any icon), ramp (steps over which the icon share grows from 0 to `icons`),
mix (1: mix icons and drawings inside every batch instead of whole batches), precision (auto | fp32 |
bf16: autocast through genstudio.precision; auto = bf16 only where the CPU runs it natively), steps, ...
Results of the runs behind the StarVector recipe: benchmarks/results/starvector_grounding.md.
The loop is written out here (not genstudio.train) on purpose: fixed-rate evaluation, icon mixing
per batch or per item and no EMA/length grouping, exactly as the committed numbers were measured
(in bf16, on a CPU with AVX-512 BF16, which is what `precision=auto` picks there).
"""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from genstudio.formats.svg_tokenizer import special_token_ids  # noqa: E402
from pipelines.svg.data import SVGImageDataset, collate_svg, synthetic_shape_items  # noqa: E402
from pipelines.svg.starvector import StarVectorModel, load_starvector, starvector_config  # noqa: E402
from pipelines.svg.train import (TEXT_PRECISION, TEXT_SIZE, cached_texts, evaluate_starvector,  # noqa: E402
                                 load_items)
from genstudio.precision import autocast, resolve_precision  # noqa: E402

DEFAULTS = dict(steps=1000, lr=1e-3, vlr=1.0, batch_size=16, max_shapes=1, drawings=6000, hidden=128, layers=2,
                vision_hidden=96, vision_layers=2, norm="layer_norm", icons=0.0, warm=0, ramp=0, mix=0,
                eval_every=100, seed=0, precision="auto")


def parse(argv: list[str]) -> dict:
    opts = dict(DEFAULTS)
    for kv in argv:
        key, _, value = kv.partition("=")
        if key not in opts:
            raise SystemExit(f"unknown option {key!r}: expected one of {', '.join(opts)}")
        opts[key] = value if isinstance(opts[key], str) else type(opts[key])(value)
    return opts


def drawings(tokenizer, n: int, seed: int, max_shapes: int) -> SVGImageDataset:
    return SVGImageDataset(synthetic_shape_items(n, seed, max_shapes), tokenizer, 64, 256, TEXT_SIZE, TEXT_PRECISION)


def main(name: str, opts: dict) -> None:
    torch.manual_seed(opts["seed"])
    rng = random.Random(opts["seed"])
    tokenizer = load_starvector("starvector-icons-S")[1]
    config = starvector_config(
        "S", vocab_size=len(tokenizer), vision_hidden_size=opts["vision_hidden"],
        vision_num_layers=opts["vision_layers"], vision_num_heads=max(1, opts["vision_hidden"] // 64),
        adapter_norm=opts["norm"], max_length_train=256, **special_token_ids(tokenizer),
        lm_overrides=dict(hidden=opts["hidden"], layers=opts["layers"], heads=max(1, opts["hidden"] // 64),
                          positions=512, multi_query=True))
    model = StarVectorModel(config).train()
    train_set = drawings(tokenizer, opts["drawings"], opts["seed"] + 1, opts["max_shapes"])
    val_set = drawings(tokenizer, 64, opts["seed"] + 999, opts["max_shapes"])
    icon_set = icon_val = None
    if opts["icons"] > 0:
        cache = Path("runs/starvector-grounding/texts.jsonl")
        items, val_items = load_items("train"), load_items("val")
        icon_set = SVGImageDataset(items, tokenizer, 64, 256, TEXT_SIZE, TEXT_PRECISION,
                                   texts=cached_texts(items, cache, 16 * 256))
        icon_val = SVGImageDataset(val_items, tokenizer, 64, 256, TEXT_SIZE, TEXT_PRECISION,
                                   texts=cached_texts(val_items, cache, 16 * 256))
    vision = ("image_encoder.", "image_projection.")
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith(vision)], "lr": opts["lr"]},
              {"params": [p for n, p in model.named_parameters() if n.startswith(vision)],
               "lr": opts["lr"] * opts["vlr"]}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    base = [g["lr"] for g in groups]
    precision = resolve_precision("cpu", opts["precision"])
    print(f"{name}: {opts}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"precision {precision.name} ({precision.reason})", flush=True)
    start = time.time()
    for step in range(1, opts["steps"] + 1):
        scale = min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * step / opts["steps"]))
        for group, lr in zip(optimizer.param_groups, base):
            group["lr"] = lr * scale
        share = opts["icons"] * min(1.0, max(0, step - opts["warm"]) / max(opts["ramp"], 1))
        if opts["mix"]:
            sources = [icon_set if rng.random() < share else train_set for _ in range(opts["batch_size"])]
        else:
            sources = [icon_set if rng.random() < share else train_set] * opts["batch_size"]
        batch = collate_svg([s[rng.randrange(len(s))] for s in sources], tokenizer.pad_token_id)
        with autocast("cpu", precision):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if step % opts["eval_every"] == 0 or step == opts["steps"]:
            model.eval()
            with autocast("cpu", precision):
                r = evaluate_starvector(model, val_set, 64, num_generate=1, max_new_tokens=64)
                icons = evaluate_starvector(model, icon_val, 64, num_generate=1, max_new_tokens=64) \
                    if icon_val is not None else None
            model.train()
            extra = f", icons val loss {icons['val_loss']:.3f} gain {icons['image_gain']:.3f}" if icons else ""
            print(f"{name} step {step}: train loss {loss.item():.3f}, val loss {r['val_loss']:.3f}, "
                  f"image gain {r['image_gain']:.3f}{extra} (share {share:.2f}, {time.time() - start:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    main(sys.argv[1], parse(sys.argv[2:]))
