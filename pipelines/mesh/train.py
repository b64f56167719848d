"""`genstudio train meshanything`: MeshAnything on the `meshes` source (pybullet random_urdfs).

    genstudio train meshanything --set preset=S --set max_minutes=25 --output-dir runs/meshanything-S

Options (besides TrainConfig's, `MeshAnythingOptions`): preset (tiny/S), tokenization ("amt" = V2, default; "v1" = face
VQ codes), max_faces (meshes with more quantised faces are left out; default: the preset's),
num_points (the preset's), augment (true), eval_items (32), vq_warmup (V1 only: optimizer steps
during which only the face VQ trains before the LM joins, 300; counted by the trainer, so it resumes),
extra_sources (false; true adds the `meshes-extra` source's train/val meshes: pybullet_data objects and
robots, dm_control, pyvista, decimated at several densities; the test split stays the urdf one).

Sequences are `BOS tokens EOS` after the point prefix; meshes whose un-augmented sequence does not
fit in the decoder's positions are left out. Batches group meshes of similar length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from genstudio.data import DataError, load_manifest, prepare
from genstudio.train import Recipe, parse_config

from .data import MeshDataset, collate_meshes
from .meshanything import MESHANYTHING_CONFIGS, MeshAnythingModel, meshanything_config
from .tokenize import BOS, EOS, PAD


def load_items(split: str, max_faces: int, max_tokens: int, source: str = "meshes") -> list[dict]:
    """Items of one split of `source` that fit: at most `max_faces` faces, at most `max_tokens` AMT tokens."""
    from . import data  # noqa: F401  (registers the sources)
    prepare(source, quiet=True)
    return [it for it in load_manifest(source, split) if it["faces"] <= max_faces and it["tokens"] <= max_tokens]


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


@dataclass
class MeshAnythingOptions:
    """`genstudio train meshanything` options (besides TrainConfig's)."""
    preset: str = "S"                                # a MESHANYTHING_CONFIGS name
    tokenization: Literal["amt", "v1"] = "amt"       # "amt" = V2's adjacent mesh tokens; "v1" = face VQ codes
    max_faces: Optional[int] = None                  # meshes with more quantised faces are left out; None: the preset's
    num_points: Optional[int] = None                 # points per cloud; None: the preset's
    augment: bool = True                             # per-axis scale and a rotation about y of training meshes
    eval_items: int = 32                             # validation meshes scored at each save
    vq_warmup: int = 300                             # V1 only: optimizer steps during which only the face VQ trains
    extra_sources: bool = False                      # also train on the `meshes-extra` source (train/val splits)
    init_from: Optional[str] = None                  # continue from these weights (run, checkpoint or export; same preset)


def recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, MeshAnythingOptions, recipe="meshanything", output_dir="runs/meshanything",
                                   steps=3000, batch_size=8, lr=5e-4, warmup_steps=100, weight_decay=0.01,
                                   save_every=250)
    preset, tokenization = opts.preset, opts.tokenization
    if preset not in MESHANYTHING_CONFIGS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(MESHANYTHING_CONFIGS)}")
    overrides = {k: getattr(opts, k) for k in ("max_faces", "num_points") if getattr(opts, k) is not None}
    augment, eval_items, vq_warmup = opts.augment, opts.eval_items, opts.vq_warmup

    config = meshanything_config(preset, tokenization=tokenization, **overrides)
    model = MeshAnythingModel(config)
    if opts.init_from:
        from genstudio.export import init_weights
        opts.init_from = init_weights(model, opts.init_from, "meshanything init_from")  # absolute: recorded in train_config.json
    # what fits after the prefix: AMT tokens + EOS, or V1's codes (a fixed number per face) + EOS
    budget = model.token_budget() - 1
    max_faces = config.max_faces if tokenization == "amt" else min(config.max_faces, budget // config.tokens_per_face)
    max_tokens = budget if tokenization == "amt" else 10**9
    sources = ["meshes", "meshes-extra"] if opts.extra_sources else ["meshes"]
    train_items = [it for source in sources for it in load_items("train", max_faces, max_tokens, source)]
    val_items = [it for source in sources for it in load_items("val", max_faces, max_tokens, source)] \
        or train_items[:eval_items]
    if not train_items:
        raise DataError(f"no training meshes with <= {max_faces} faces and <= {budget} tokens")
    train_set = MeshDataset(train_items, tokenization, config.num_points, augment=augment,
                            max_tokens=budget + 2, max_faces=max_faces, seed=train_cfg.seed)
    val_set = MeshDataset(val_items, tokenization, config.num_points, augment=False)
    print(f"[meshanything] preset {preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), "
          f"{tokenization}, train {len(train_set)} meshes, val {len(val_set)} ({' + '.join(sources)}), "
          f"<= {config.max_faces} faces")

    def loss_fn(m, batch, step: int = 0):
        if tokenization == "amt":
            out = m(batch["points"], batch["input_ids"], batch["attention_mask"], batch["labels"])
            return out.loss
        vq = m.face_vq(batch["faces"], batch["face_mask"])
        logs = {"vq_loss": vq["loss"].item(), "vq_accuracy": vq["accuracy"].item()}
        if step < vq_warmup:  # the trainer's step (optimizer steps done), so a resumed run continues the warm-up
            return vq["loss"], logs
        ids, mask, labels = v1_batch_tokens(m, batch["faces"], batch["face_mask"], vq["indices"].detach())
        lm = m(batch["points"], ids, mask, labels).loss
        return vq["loss"] + lm, {**logs, "lm_loss": lm.item()}

    return Recipe(model, train_set, loss_fn, train_cfg, collate_fn=collate_meshes,
                  eval_fn=lambda m: evaluate(m, val_set, eval_items),
                  lengths=[it["tokens"] for it in train_items], extra={"val_set": val_set},
                  name="meshanything", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) weights in `dtype`."""
    from genstudio.export import export_model
    export_model(MeshAnythingModel, run_dir, to, dtype, load_kwargs={"dtype": torch.float32})

