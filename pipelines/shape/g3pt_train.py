"""`genstudio train g3pt`: the G3PT generator on the token indices of a trained VAT.

    genstudio train vat --set preset=S --output-dir runs/vat-S
    genstudio train g3pt --set vat=runs/vat-S --set preset=S --output-dir runs/g3pt-S
    genstudio train g3pt --set vat=runs/vat-S --set condition=class+text --output-dir runs/g3pt-S-text
    genstudio train g3pt --set vat=runs/vat-S --set cross_scale=false --output-dir runs/g3pt-S-interp  # ablation

Every shape of the `shapes` source is encoded ONCE by the frozen VAT (posterior mean, a fixed draw of
surface points) into its per-scale indices, cached in the run folder (`vat-tokens-<key>.npz`, the key
hashing the VAT's weights, the items and the point count). G3PT then learns them with cross-entropy over
all scales at once (teacher forcing), conditioned on the class label and/or a prompt made from the class
name ("a torus") through the packaged MiniLM (the core's `genstudio.text`; the 8 prompts are encoded once
at start-up). The condition is dropped with probability `cond_dropout` (0.1) for classifier-free guidance.
Evaluation (EMA weights, at each save): val cross-entropy and token accuracy with the condition, the finest
scale's accuracy, and the val cross-entropy under the null condition (how much the condition tells).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genstudio.data import DataError
from genstudio.train import Recipe, TensorDictDataset, parse_config

from .data import SHAPE_CLASSES, ShapeDataset
from .g3pt import CLASS_PROMPTS, G3PT, ShapeCondition, encode_prompts, g3pt_config, vat_settings  # noqa: F401
from .data import load_items
from .vat import VATTokenizer

CONDITIONS = ("class", "text", "class+text", "none")


@dataclass
class G3PTOptions:
    """`genstudio train g3pt` options (besides TrainConfig's)."""
    vat: str = ""                          # a trained VAT: a run folder (its final/) or a checkpoint folder
    preset: str = "S"                      # a G3PT_CONFIGS name
    condition: str = "class"               # class | text | class+text | none
    cross_scale: bool = True               # False: the ablation with interpolated inputs instead of queries
    cond_dropout: float = 0.1              # label/caption dropout for classifier-free guidance
    text_encoder: str = "minilm"           # the frozen encoder of the class prompts
    num_points: int = 512                  # surface points per shape fed to the VAT encoder (as VAT was trained)
    encode_draws: int = 4                  # train shapes encoded from this many point draws (token augmentation)
    encode_batch: int = 32
    eval_items: int = 256                  # val shapes scored at each save


# ---------------------------------------------------------------- VAT tokens, encoded once

def _vat_key(folder: Path, items: list[dict], num_points: int, draws: int = 1) -> str:
    h = hashlib.sha1()
    for f in sorted(folder.glob("*.safetensors")) + [folder / "config.json"]:
        h.update(f.read_bytes())
    h.update(json.dumps([[it["id"], it["path"]] for it in items]).encode())
    h.update(str(num_points if draws == 1 else (num_points, draws)).encode())
    return h.hexdigest()[:12]


@torch.no_grad()
def encode_items(vat: VATTokenizer, items: list[dict], num_points: int, batch_size: int = 32,
                 draws: int = 1) -> np.ndarray:
    """Each item's VAT indices, every scale concatenated coarse first -> (M * draws, sum(scales)) int32,
    draw-major. Draw d samples other surface points (seed d): the same shape, slightly different tokens,
    which is how a few thousand shapes give the generator more than one sequence each."""
    rows = []
    for draw in range(draws):
        dataset = ShapeDataset(items, num_points, num_queries=2, deterministic=True, seed=draw)
        for start in range(0, len(dataset), batch_size):
            points = torch.stack([dataset[i]["points"] for i in range(start, min(len(dataset), start + batch_size))])
            enc = vat.encode(points.to(vat.device))                 # posterior mean: the shape's one code
            rows.append(torch.cat(enc.indices, 1).cpu().int())
    return torch.cat(rows).numpy()


def cached_tokens(vat: VATTokenizer, vat_folder: Path, items: list[dict], num_points: int, out: Path,
                  batch_size: int = 32, draws: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices (M * draws, sum(scales)) long, labels (M * draws,) long) for `items`, from `out` when
    encoded before."""
    cache = out / f"vat-tokens-{_vat_key(vat_folder, items, num_points, draws)}.npz"
    if cache.exists():
        with np.load(cache) as z:
            indices, labels = z["indices"], z["labels"]
    else:
        indices = encode_items(vat, items, num_points, batch_size, draws)
        labels = np.tile(np.array([SHAPE_CLASSES.index(it["label"]) for it in items], dtype=np.int64), draws)
        out.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, indices=indices, labels=labels)
        tmp.replace(cache)
    return torch.from_numpy(indices.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- loss and evaluation

class Conditioner:
    """Class labels (B,) -> the ShapeCondition of `mode` (prompt states looked up per class)."""

    def __init__(self, mode: str, text_encoder: str | None = None):
        if mode not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {mode!r}")
        self.mode = mode
        self.states = self.mask = None
        if "text" in mode:
            self.states, self.mask = encode_prompts([CLASS_PROMPTS[c] for c in SHAPE_CLASSES], text_encoder)

    @property
    def context_dim(self) -> int:
        return 0 if self.states is None else self.states.shape[-1]

    def __call__(self, labels: torch.Tensor) -> ShapeCondition:
        c = ShapeCondition()
        if "class" in self.mode:
            c.labels = labels
        if self.states is not None:
            rows = labels.cpu()
            c.text_states, c.text_mask = self.states[rows].to(labels.device), self.mask[rows].to(labels.device)
        return c


def g3pt_loss(model: G3PT, batch: dict, conditioner: Conditioner, drop: torch.Tensor | None = None):
    core = getattr(model, "module", model)        # attributes from the bare model; the call goes through DDP
    indices = batch["indices"].to(core.device)
    targets = list(indices.split(core.scales, 1))
    logits = torch.cat(model(targets, conditioner(batch["label"].to(core.device)), drop), 1).float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), indices.reshape(-1))
    correct = logits.argmax(-1) == indices
    return loss, {"accuracy": correct.float().mean().item(),
                  "accuracy_finest": correct[:, -core.scales[-1]:].float().mean().item()}


@torch.no_grad()
def evaluate(model: G3PT, dataset: TensorDictDataset, conditioner: Conditioner, max_items: int = 256,
             batch_size: int = 64) -> dict:
    """Val cross-entropy and token accuracy (conditional), the finest scale's accuracy, and the
    cross-entropy under the null condition."""
    was_training = model.training
    model.eval()
    totals = {"val_loss": 0.0, "val_accuracy": 0.0, "val_accuracy_finest": 0.0, "val_loss_no_cond": 0.0}
    n = min(max_items, len(dataset))
    for start in range(0, n, batch_size):
        batch = dataset[slice(start, min(n, start + batch_size))]
        weight = len(batch["label"]) / n
        loss, logs = g3pt_loss(model, batch, conditioner)
        uncond, _ = g3pt_loss(model, batch, conditioner, drop=torch.ones(len(batch["label"]), dtype=torch.bool))
        totals["val_loss"] += weight * float(loss)
        totals["val_accuracy"] += weight * logs["accuracy"]
        totals["val_accuracy_finest"] += weight * logs["accuracy_finest"]
        totals["val_loss_no_cond"] += weight * float(uncond)
    model.train(was_training)
    return totals


# ---------------------------------------------------------------- the recipe

def load_vat(path: str, device: str = "cpu") -> tuple[VATTokenizer, Path]:
    from genstudio.export import run_weights
    if not path:
        raise ValueError("g3pt needs a trained VAT: --set vat=<a `genstudio train vat` run folder or checkpoint>")
    folder = run_weights(path)
    return VATTokenizer.from_pretrained(folder).to(device).eval().requires_grad_(False), folder


def g3pt_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, G3PTOptions, recipe="g3pt", output_dir="runs/g3pt", steps=50000,
                                   batch_size=64, lr=3e-4, warmup_steps=1000, weight_decay=0.05, save_every=2000)
    conditioner = Conditioner(opts.condition, None if opts.text_encoder == "minilm" else opts.text_encoder)
    device = "cuda" if torch.cuda.is_available() and not train_cfg.cpu else "cpu"
    vat, vat_folder = load_vat(opts.vat, device)
    train_items = load_items("train")
    if not train_items:
        raise DataError("no training shapes; run `genstudio data prepare shapes`")
    val_items = load_items("val") or train_items[:opts.eval_items]
    out = Path(train_cfg.output_dir)
    train_idx, train_labels = cached_tokens(vat, vat_folder, train_items, opts.num_points, out, opts.encode_batch,
                                            max(1, opts.encode_draws))
    val_idx, val_labels = cached_tokens(vat, vat_folder, val_items, opts.num_points, out, opts.encode_batch)
    settings = vat_settings(vat)
    del vat
    with_classes = "class" in opts.condition
    model = G3PT(**g3pt_config(opts.preset, **settings, num_classes=len(SHAPE_CLASSES) if with_classes else 0,
        context_dim=conditioner.context_dim, cond_dropout=opts.cond_dropout, cross_scale=opts.cross_scale,
        class_names=list(SHAPE_CLASSES) if with_classes else None))
    train_set = TensorDictDataset(indices=train_idx, label=train_labels)
    val_set = TensorDictDataset(indices=val_idx, label=val_labels)
    print(f"[g3pt] preset {opts.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
          f"scales {model.scales}, codebook {model.config.codebook_size}, condition {opts.condition}, "
          f"cross_scale {opts.cross_scale}, train {len(train_set)} shapes, val {len(val_set)}")
    eval_items = opts.eval_items
    return Recipe(model, train_set, lambda m, batch: g3pt_loss(m, batch, conditioner), train_cfg,
                  eval_fn=lambda m: evaluate(m, val_set, conditioner, eval_items),
                  extra={"val_set": val_set, "conditioner": conditioner, "vat_folder": str(vat_folder)},
                  name="g3pt", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) weights in `dtype`."""
    from genstudio.export import export_model
    export_model(G3PT, run_dir, to, dtype, load_kwargs={"dtype": torch.float32})


g3pt_recipe.export = export
