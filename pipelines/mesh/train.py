"""`genstudio train meshanything`: MeshAnything on the `meshes` source (pybullet random_urdfs).

    genstudio train meshanything --set preset=S --set max_minutes=25 --output-dir runs/meshanything-S

Options (besides TrainConfig's): preset (tiny/S), tokenization ("amt" = V2, default; "v1" = face
VQ codes), max_faces (meshes with more quantised faces are left out; default: the preset's),
num_points (the preset's), augment (true), eval_items (32), vq_warmup (V1 only: steps during which
only the face VQ trains before the LM joins, 300).

Sequences are `BOS tokens EOS` after the point prefix; meshes whose un-augmented sequence does not
fit in the decoder's positions are left out. Batches group meshes of similar length.
"""
from __future__ import annotations

import math

import torch

from genstudio.data import DataError, load_manifest, prepare
from genstudio.train import Recipe, split_config

from .data import MeshDataset, collate_meshes
from .meshanything import MESHANYTHING_CONFIGS, MeshAnythingModel, meshanything_config
from .tokenize import BOS, EOS, PAD


def _as_bool(value) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def load_items(split: str, max_faces: int, max_tokens: int) -> list[dict]:
    """Items of one split that fit: at most `max_faces` faces, at most `max_tokens` AMT tokens."""
    from . import data  # noqa: F401  (registers the source)
    prepare("meshes", quiet=True)
    return [it for it in load_manifest("meshes", split) if it["faces"] <= max_faces and it["tokens"] <= max_tokens]


def v1_batch_tokens(model: MeshAnythingModel, faces: torch.Tensor, face_mask: torch.Tensor, indices: torch.Tensor):
    """Face VQ codes (B, F, 3, Q) -> padded `BOS codes EOS` rows, attention mask and labels."""
    per_face = model.config.tokens_per_face
    codes = model.face_vq.indices_to_tokens(indices)                  # (B, F * per_face)
    counts = face_mask.sum(1) * per_face
    ids = torch.full((len(faces), codes.shape[1] + 2), PAD, dtype=torch.long, device=faces.device)
    ids[:, 0] = BOS
    ids[:, 1:-1] = codes
    keep = torch.arange(ids.shape[1], device=ids.device)[None] <= counts[:, None]
    ids = ids.masked_fill(~keep, PAD)
    ids[torch.arange(len(ids)), counts + 1] = EOS
    mask = (torch.arange(ids.shape[1], device=ids.device)[None] <= counts[:, None] + 1).long()
    return ids, mask, ids.masked_fill(mask == 0, -100)


def token_metrics(out, labels_in_layout: torch.Tensor) -> tuple[float, int, int]:
    """(summed loss, correct, counted) over target tokens of a PrefixLM output."""
    logits, target = out.logits[:, :-1].float(), labels_in_layout[:, 1:]
    valid = target != -100
    loss = torch.nn.functional.cross_entropy(logits[valid], target[valid], reduction="sum")
    correct = (logits.argmax(-1)[valid] == target[valid]).sum()
    return float(loss), int(correct), int(valid.sum())


@torch.no_grad()
def evaluate(model: MeshAnythingModel, dataset: MeshDataset, max_items: int = 32, batch_size: int = 4) -> dict:
    """Teacher-forced token loss / perplexity / accuracy on up to `max_items` val meshes (no augmentation);
    for V1 also the face VQ's coordinate accuracy."""
    total, correct, count, vq_acc = 0.0, 0, 0, []
    n = min(max_items, len(dataset))
    for start in range(0, n, batch_size):
        batch = collate_meshes([dataset[i] for i in range(start, min(n, start + batch_size))])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if model.config.tokenization == "v1":
            vq = model.face_vq(batch["faces"], batch["face_mask"])
            vq_acc.append(float(vq["accuracy"]))
            ids, mask, labels = v1_batch_tokens(model, batch["faces"], batch["face_mask"], vq["indices"])
            batch.update(input_ids=ids, attention_mask=mask, labels=labels)
        out = model(batch["points"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        s, c, k = token_metrics(out, out.labels)
        total, correct, count = total + s, correct + c, count + k
    loss = total / max(count, 1)
    metrics = {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50.0)), "val_token_accuracy": correct / max(count, 1)}
    if vq_acc:
        metrics["val_vq_coordinate_accuracy"] = sum(vq_acc) / len(vq_acc)
    return metrics


def recipe(cfg: dict) -> Recipe:
    train_cfg, opts = split_config({"output_dir": "runs/meshanything", "steps": 3000, "batch_size": 8, "lr": 5e-4,
                                    "warmup_steps": 100, "weight_decay": 0.01, "save_every": 250, **cfg})
    preset = opts.pop("preset", "S")
    if preset not in MESHANYTHING_CONFIGS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(MESHANYTHING_CONFIGS)}")
    tokenization = opts.pop("tokenization", "amt")
    overrides = {k: int(opts.pop(k)) for k in ("max_faces", "num_points") if k in opts}
    augment, eval_items = _as_bool(opts.pop("augment", True)), int(opts.pop("eval_items", 32))
    vq_warmup = int(opts.pop("vq_warmup", 300))
    if opts:
        raise ValueError(f"unknown meshanything option(s): {', '.join(sorted(opts))}")

    config = meshanything_config(preset, tokenization=tokenization, **overrides)
    model = MeshAnythingModel(config)
    # what fits after the prefix: AMT tokens + EOS, or V1's codes (a fixed number per face) + EOS
    budget = model.token_budget() - 1
    max_faces = config.max_faces if tokenization == "amt" else min(config.max_faces, budget // config.tokens_per_face)
    max_tokens = budget if tokenization == "amt" else 10**9
    train_items = load_items("train", max_faces, max_tokens)
    val_items = load_items("val", max_faces, max_tokens) or train_items[:eval_items]
    if not train_items:
        raise DataError(f"no training meshes with <= {max_faces} faces and <= {budget} tokens")
    train_set = MeshDataset(train_items, tokenization, config.num_points, augment=augment,
                            max_tokens=budget + 2, max_faces=max_faces, seed=train_cfg.seed)
    val_set = MeshDataset(val_items, tokenization, config.num_points, augment=False)
    print(f"[meshanything] preset {preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"{tokenization}, train {len(train_set)} meshes, val {len(val_set)}, <= {config.max_faces} faces")

    step = {"n": 0}

    def loss_fn(m, batch):
        if tokenization == "amt":
            out = m(batch["points"], batch["input_ids"], batch["attention_mask"], batch["labels"])
            return out.loss
        step["n"] += 1
        vq = m.face_vq(batch["faces"], batch["face_mask"])
        logs = {"vq_loss": vq["loss"].item(), "vq_accuracy": vq["accuracy"].item()}
        if step["n"] <= vq_warmup:
            return vq["loss"], logs
        ids, mask, labels = v1_batch_tokens(m, batch["faces"], batch["face_mask"], vq["indices"].detach())
        lm = m(batch["points"], ids, mask, labels).loss
        return vq["loss"] + lm, {**logs, "lm_loss": lm.item()}

    return Recipe(model, train_set, loss_fn, train_cfg, collate_fn=collate_meshes,
                  eval_fn=lambda m: evaluate(m, val_set, eval_items),
                  lengths=[it["tokens"] for it in train_items], extra={"val_set": val_set})


def export_checkpoint(run_dir, out_dir) -> None:
    """A finished run (its final/ EMA weights and summary.json) -> one shippable fp16 folder."""
    import json
    import shutil
    from pathlib import Path
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model = MeshAnythingModel.from_pretrained(run_dir / "final", dtype=torch.float32)
    model.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    (out_dir / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "final"}, indent=2))
    shutil.copy(run_dir / "train_config.json", out_dir / "train_config.json")


if __name__ == "__main__":  # python -m pipelines.mesh.train RUN_DIR OUT_DIR
    import sys
    export_checkpoint(*sys.argv[1:3])
