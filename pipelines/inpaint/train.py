"""`genstudio train put`: the two PUT stages on random photo crops with random masks.

Stage 1 (`--set stage='"vqvae"'`) trains the P-VQVAE; stage 2 (`--set stage='"transformer"'
--set vqvae='"runs/put-vqvae-S"'`) trains the UQ-Transformer on the frozen P-VQVAE.
`make train-put` runs both and assembles checkpoints/put-photos-S.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from genstudio.metrics import psnr

from .masks import random_hole_mask
from .put import PUT_CONFIGS, PatchVQVAE, UnquantizedTransformer, patch_known_mask, transformer_loss


class MaskedPhotoDataset(torch.utils.data.Dataset):
    """Photo crops with two independent random hole masks, as float `known` maps (1 = known):
    `known` guides the decoder, `erase` (all known half of the time) is what the encoder sees.
    With probability `no_reference_prob` the decoder gets no known pixels at all (as the
    reference's zero_mask): it must then rebuild the image from the tokens alone, which keeps
    the known codebook informative instead of collapsing onto the reference path."""

    def __init__(self, crops, ratio=(0.1, 0.6), erase_prob: float = 0.5, no_reference_prob: float = 0.0,
                 deterministic: bool = False, seed: int = 0):
        self.crops, self.ratio, self.erase_prob = crops, ratio, erase_prob
        self.no_reference_prob = no_reference_prob
        self.deterministic, self.seed = deterministic, seed

    def __len__(self):
        return len(self.crops)

    def __getitem__(self, k):
        image = self.crops[k]["image"]
        rng = np.random.default_rng((self.seed, k, 7)) if self.deterministic else np.random.default_rng()
        h, w = image.shape[-2:]
        known = ~random_hole_mask(h, w, self.ratio, rng)
        if rng.random() < self.no_reference_prob:
            known[:] = False
        erase = ~random_hole_mask(h, w, self.ratio, rng) if rng.random() < self.erase_prob else np.ones((h, w), bool)
        as_map = lambda m: torch.from_numpy(m.astype(np.float32))[None]  # noqa: E731
        return {"image": image, "known": as_map(known), "erase": as_map(erase)}


def image_gradient_l1(a, b):
    """L1 between horizontal and vertical finite differences (sharper than pixel L1 alone)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return F.l1_loss(dx(a), dx(b)) + F.l1_loss(dy(a), dy(b))


def vqvae_loss(model, batch, hole_weight: float = 2.0, gradient_weight: float = 1.0):
    image, known = batch["image"], batch["known"]
    out = model(image, known, batch["erase"])
    rec = out["reconstruction"].float()
    hole = 1 - known
    l1 = F.l1_loss(rec, image) + hole_weight * (hole * (rec - image).abs()).sum() / (3 * hole.sum() + 1)
    loss = l1 + gradient_weight * image_gradient_l1(rec, image) + out["vq_loss"]
    return loss, {"l1": l1.item(), "vq": out["vq_loss"].item(), "perplexity": out["perplexity"].item()}


@torch.no_grad()
def evaluate_vqvae(model, dataset, batch_size: int = 32) -> dict:
    """Hole PSNR when the decoder gets the complete image's known-codebook tokens: the ceiling
    the transformer can reach with perfect token predictions."""
    model.eval()
    scores, used = [], set()
    device = next(model.parameters()).device
    for i in range(0, len(dataset), batch_size):
        items = [dataset[k] for k in range(i, min(i + batch_size, len(dataset)))]
        image = torch.stack([it["image"] for it in items]).to(device)
        known = torch.stack([it["known"] for it in items]).to(device)
        tokens = model.quantize(model.encode(image)).indices
        used.update(tokens.unique().tolist())
        rec = model.decode_tokens(tokens, image * known, known).float()
        for r, x, k in zip(rec.cpu().numpy(), image.cpu().numpy(), known.cpu().numpy()):
            scores.append(psnr((r + 1) / 2, (x + 1) / 2, mask=np.broadcast_to(k < 0.5, r.shape)))
    model.train()
    return {"hole_psnr_oracle_tokens": float(np.mean(scores)),
            "code_utilization": len(used) / model.config.codebook_size_known}


@torch.no_grad()
def evaluate_transformer(model, vqvae, dataset, batch_size: int = 32) -> dict:
    model.eval()
    losses, accs = [], []
    device = next(model.parameters()).device
    for i in range(0, len(dataset), batch_size):
        items = [dataset[k] for k in range(i, min(i + batch_size, len(dataset)))]
        image = torch.stack([it["image"] for it in items]).to(device)
        known = torch.stack([it["known"] for it in items]).to(device)
        loss, acc = transformer_loss(model, vqvae.to(device), image, known, random_quantize=0.0)
        losses.append(float(loss))
        accs.append(acc)
    model.train()
    return {"val_ce": float(np.mean(losses)), "val_token_accuracy": float(np.mean(accs))}


def _datasets(size: int, eval_items: int, ratio, no_reference_prob: float = 0.0):
    from genstudio.data import load_manifest, prepare
    from genstudio.data.photos import PhotoCropDataset
    prepare("photos", quiet=True)
    train = MaskedPhotoDataset(PhotoCropDataset(load_manifest("photos", "train"), size=size, length=100_000), ratio,
                               no_reference_prob=no_reference_prob)
    val = MaskedPhotoDataset(PhotoCropDataset(load_manifest("photos", "val"), size=size, length=eval_items,
                                              deterministic=True, seed=1234), ratio, deterministic=True, seed=1234)
    return train, val


def recipe(cfg: dict):
    """`genstudio train put --set stage='"vqvae"'|'"transformer"' --set preset='"S"' ...`"""
    from genstudio.train import Recipe, split_config
    stage = cfg.get("stage", "vqvae")
    defaults = {"vqvae": {"output_dir": "runs/put-vqvae-S", "steps": 1500, "batch_size": 16, "lr": 5e-4,
                          "ema_decay": None, "warmup_steps": 100},
                "transformer": {"output_dir": "runs/put-transformer-S", "steps": 2000, "batch_size": 16,
                                "lr": 5e-4, "weight_decay": 0.01, "betas": (0.9, 0.95), "ema_decay": 0.999,
                                "warmup_steps": 200}}
    if stage not in defaults:
        raise ValueError(f"stage must be 'vqvae' or 'transformer', got {stage!r}")
    train_cfg, opts = split_config({**defaults[stage], **cfg})
    preset = PUT_CONFIGS[opts.get("preset", "S")]
    ratio = tuple(opts.get("mask_ratio", (0.1, 0.6)))
    if stage == "vqvae":
        model = PatchVQVAE(**{**preset["vqvae"], **opts.get("vqvae_kwargs", {})})
        train_set, val_set = _datasets(model.config.sample_size, int(opts.get("eval_items", 128)), ratio,
                                       float(opts.get("no_reference_prob", 0.3)))
        return Recipe(model, train_set, vqvae_loss, train_cfg, eval_fn=lambda m: evaluate_vqvae(m, val_set))

    if "vqvae" not in opts:
        raise ValueError("stage 'transformer' needs the trained P-VQVAE: --set vqvae='\"runs/put-vqvae-S\"'")
    vqvae = PatchVQVAE.from_pretrained(opts["vqvae"]).eval().requires_grad_(False)
    model = UnquantizedTransformer(feature_dim=vqvae.config.latent_dim, num_tokens=vqvae.config.codebook_size_known,
                                   **{**preset["transformer"], **opts.get("transformer_kwargs", {})})
    train_set, val_set = _datasets(vqvae.config.sample_size, int(opts.get("eval_items", 128)), ratio)
    random_quantize = float(opts.get("random_quantize", 0.3))

    def loss_fn(m, batch):
        loss, acc = transformer_loss(m, vqvae.to(batch["image"].device), batch["image"], batch["known"],
                                     random_quantize=random_quantize)
        return loss, {"token_accuracy": acc}

    return Recipe(model, train_set, loss_fn, train_cfg, eval_fn=lambda m: evaluate_transformer(m, vqvae, val_set),
                  extra={"vqvae": vqvae})


__all__ = ["MaskedPhotoDataset", "recipe", "vqvae_loss", "evaluate_vqvae", "evaluate_transformer",
           "patch_known_mask"]


def export_checkpoint(vqvae_dir, transformer_dir, out_dir) -> None:
    """Both trained stages -> one shippable fp16 folder (vqvae/ + transformer/)."""
    from .pipeline import PUTInpaintPipeline
    pipe = PUTInpaintPipeline(PatchVQVAE.from_pretrained(vqvae_dir), UnquantizedTransformer.from_pretrained(transformer_dir),
                              device="cpu")
    pipe.save_pretrained(out_dir, dtype=torch.float16)


if __name__ == "__main__":  # python -m pipelines.inpaint.train VQVAE_DIR TRANSFORMER_DIR OUT_DIR
    import sys
    export_checkpoint(*sys.argv[1:4])
