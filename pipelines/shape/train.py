"""`genstudio train vat`: the VAT tokenizer on the `shapes` source.

    genstudio data prepare shapes
    genstudio train vat --set preset=S --output-dir runs/vat-S
    genstudio train vat --set preset=S --set variational=false --output-dir runs/vat-S-novar    # ablation
    genstudio train vat --set preset=S --set single_scale=true --output-dir runs/vat-S-vq       # ablation

Loss: binary cross-entropy of the occupancy logits at the queries (half near the surface, half uniform)
+ kl_weight * KL (the variational layer) + the residual quantiser's commitment/codebook loss.
Evaluation (EMA weights, at each save): occupancy IoU at the val shapes' stored queries, the codebook
perplexity, and the bytes one shape's tokens take.

Options (besides TrainConfig's, `VATOptions`): preset (tiny/S/B), variational, single_scale,
quantizer_kind (vq / vq_ema / simvq), decoder_queries (sincos / learned), kl_weight, num_points, num_queries,
eval_items, ae_warmup_steps, commitment_ramp_steps, logvar_init, init_from (see VATOptions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from genstudio.data import DataError
from genstudio.train import Recipe, parse_config

from .data import ShapeDataset, load_items
from .vat import VATTokenizer, vat_config


@dataclass
class VATOptions:
    """`genstudio train vat` options (besides TrainConfig's)."""
    preset: str = "S"                      # a VAT_CONFIGS name
    variational: bool = True               # False: the ablation without the Gaussian layer (no KL)
    single_scale: bool = False             # True: one scale of num_tokens tokens (plain VQ) instead of 1, 2, 4, ...
    quantizer_kind: str = "vq"             # vq | vq_ema | simvq (the core's quantisers)
    decoder_queries: str = "sincos"        # sincos (shipped) | learned (per-cell queries: learns shapes sooner)
    kl_weight: float = 1e-3
    num_points: int = 512                  # surface points per shape fed to the encoder (2048: 6x the CPU time per step)
    num_queries: int = 2048                # occupancy queries per shape (half near the surface)
    eval_items: int = 32                   # val shapes scored at each save
    num_tokens: Optional[int] = None       # override the preset's token count
    # Against latent collapse (the commitment term pulls every latent onto the near-zero initial codes within
    # ~30 steps, and the decoder then learns a mean shape): decode the continuous posterior mean for the first
    # `ae_warmup_steps`, then initialise the codebook from the latents (`MultiScaleResidualVQ.init_codebook`)
    # and ramp the commitment from 0 over `commitment_ramp_steps`. 0 / 0: the shipped recipe.
    ae_warmup_steps: int = 0
    commitment_ramp_steps: int = 0
    logvar_init: Optional[float] = None    # initial log-variance of the posterior (e.g. -8: start nearly noise-free)
    init_from: Optional[str] = None        # continue from a vat run / checkpoint / export (same preset and options)


def vat_loss(model: VATTokenizer, batch: dict, kl_weight: float, step: int = 0, ae_warmup_steps: int = 0,
             commitment_ramp_steps: int = 0):
    """BCE + kl_weight x KL + VQ loss; during the warm-up (step < ae_warmup_steps) BCE alone on the decoded
    posterior mean. At step == ae_warmup_steps the codebook is initialised from this batch's latents."""
    vat = getattr(model, "module", model)
    points, queries = batch["points"], batch["queries"]
    warm = step < ae_warmup_steps
    if ae_warmup_steps and step == ae_warmup_steps:
        vat.quantizer.init_codebook(vat.posterior(points)[0])
    if commitment_ramp_steps:
        vat.quantizer.quantizer.beta = vat.config.commitment * min(1.0, max(0, step - ae_warmup_steps) / commitment_ramp_steps)
    out = model(points, queries, sample=False if warm else None, quantize=not warm)
    bce = F.binary_cross_entropy_with_logits(out.logits.float(), batch["occupancy"].float())
    loss = bce + (0.0 if warm else kl_weight) * out.kl + out.vq_loss
    return loss, {"bce": bce.item(), "kl": out.kl.item(), "vq_loss": out.vq_loss.item(),
                  "perplexity": out.perplexity.item()}


@torch.no_grad()
def occupancy_iou(model: VATTokenizer, dataset: ShapeDataset, max_items: int = 32, batch_size: int = 8) -> dict:
    """Mean IoU of predicted (logit > 0) vs labelled occupancy over the val shapes' queries, with the
    posterior mean encoded (no sampling), plus the BCE and the codebook perplexity."""
    was_training = model.training
    model.eval()
    ious, bces, perplexities = [], [], []
    n = min(max_items, len(dataset))
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        batch = {k: torch.stack([it[k] for it in items]).to(model.device) for k in ("points", "queries", "occupancy")}
        out = model(batch["points"], batch["queries"], sample=False)
        pred, label = out.logits.float() > 0, batch["occupancy"] > 0.5
        union = (pred | label).sum(1).clamp(min=1)
        ious += ((pred & label).sum(1) / union).tolist()
        bces.append(float(F.binary_cross_entropy_with_logits(out.logits.float(), batch["occupancy"].float())))
        perplexities.append(float(out.perplexity))
    model.train(was_training)
    return {"val_iou": sum(ious) / max(len(ious), 1), "val_bce": sum(bces) / max(len(bces), 1),
            "val_perplexity": sum(perplexities) / max(len(perplexities), 1), "bytes_per_shape": model.bytes_per_shape}


def vat_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, VATOptions, recipe="vat", output_dir="runs/vat", steps=20000, batch_size=16,
                                   lr=3e-4, warmup_steps=500, weight_decay=0.01, save_every=1000)
    overrides = {"variational": opts.variational, "quantizer_kind": opts.quantizer_kind,
                 "decoder_queries": opts.decoder_queries}
    if opts.num_tokens is not None:
        overrides["num_tokens"] = opts.num_tokens
    config = vat_config(opts.preset, **overrides)
    if opts.single_scale:
        config["scales"] = [config["num_tokens"]]
    model = VATTokenizer(**config)
    if opts.logvar_init is not None and config.get("variational", True):
        with torch.no_grad():
            model.to_moments.bias[config["latent_dim"]:] = opts.logvar_init
    if opts.init_from:  # its codebook is already trained: no warm-up or ramp needed
        from genstudio.export import init_weights
        opts.init_from = init_weights(model, opts.init_from, "vat init_from")
    train_items = load_items("train")
    if not train_items:
        raise DataError("no training shapes; run `genstudio data prepare shapes`")
    val_items = load_items("val") or train_items[:opts.eval_items]
    train_set = ShapeDataset(train_items, opts.num_points, opts.num_queries, deterministic=False, seed=train_cfg.seed)
    val_set = ShapeDataset(val_items, opts.num_points, opts.num_queries, deterministic=True)
    print(f"[vat] preset {opts.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
          f"scales {model.scales}, {model.bytes_per_shape} bytes/shape, train {len(train_set)} shapes, val {len(val_set)}")
    kl_weight, eval_items = opts.kl_weight, opts.eval_items
    warmup, ramp = opts.ae_warmup_steps, opts.commitment_ramp_steps

    def loss_fn(m, batch, step=0):
        return vat_loss(m, batch, kl_weight, step, warmup, ramp)
    return Recipe(model, train_set, loss_fn, train_cfg,
                  eval_fn=lambda m: occupancy_iou(m, val_set, eval_items), extra={"val_set": val_set},
                  name="vat", options=opts)


def export(run_dir, to, dtype: torch.dtype) -> None:
    """`genstudio export RUN --to checkpoints/NAME`: the run's final (EMA) weights in `dtype`."""
    from genstudio.export import export_model
    export_model(VATTokenizer, run_dir, to, dtype, load_kwargs={"dtype": torch.float32})


vat_recipe.export = export  # genstudio export finds each recipe's exporter here
