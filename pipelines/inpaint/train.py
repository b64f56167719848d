"""`genstudio train put`: the two PUT stages on random photo crops with random masks.

Stage 1 (`--set stage=vqvae`) trains the P-VQVAE; stage 2 (`--set stage=transformer
--set vqvae=runs/put-vqvae-S`) trains the UQ-Transformer on the frozen P-VQVAE. Options: `PUTOptions`.
`make train-put` runs both and assembles checkpoints/put-photos-S with
`genstudio export runs/put-transformer-S --to checkpoints/put-photos-S` (the transformer run
remembers its P-VQVAE).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F

from genstudio.metrics import psnr

from .masks import random_hole_mask
from .put import PUT_CONFIGS, PatchVQVAE, UnquantizedTransformer, patch_known_mask, save_put, transformer_loss


class MaskedPhotoDataset(torch.utils.data.Dataset):
    """Photo crops with two independent random hole masks, as float `known` maps (1 = known):
    `known` guides the decoder, `erase` (all known half of the time) is what the encoder sees.
    With probability `no_reference_prob` the decoder gets no known pixels at all (as the
    reference's zero_mask): it must then rebuild the image from the tokens alone, which keeps
    the known codebook informative instead of collapsing onto the reference path. With
    probability `grey_prob` the crop is made greyscale (the mean of its channels): photo sets mix
    colour and greyscale pictures, and a model that rarely sees the latter fills them badly."""

    def __init__(self, crops, ratio=(0.1, 0.6), erase_prob: float = 0.5, no_reference_prob: float = 0.0,
                 deterministic: bool = False, seed: int = 0, grey_prob: float = 0.0):
        self.crops, self.ratio, self.erase_prob = crops, ratio, erase_prob
        self.no_reference_prob, self.grey_prob = no_reference_prob, grey_prob
        self.deterministic, self.seed = deterministic, seed

    def __len__(self):
        return len(self.crops)

    def __getitem__(self, k):
        image = self.crops[k]["image"]
        rng = np.random.default_rng((self.seed, k, 7)) if self.deterministic else np.random.default_rng()
        h, w = image.shape[-2:]
        if self.grey_prob and rng.random() < self.grey_prob:
            image = image.mean(0, keepdim=True).expand_as(image).contiguous()
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


@torch.no_grad()
def sampled_hole_features(vqvae, transformer, image, known, top_k: int = 50, oracle_share: float = 0.0):
    """What the decoder gets at inference, in one shot: quantised features of the fully known
    patches, and in every patch with missing pixels a known-codebook token *sampled* from the
    transformer's top-k (one pass, all positions at once: a cheaper, slightly noisier stand-in for
    the pipeline's confidence-ordered sampling). `oracle_share` of the images keep the complete
    image's true tokens in the holes instead. Returns (quantised features (B, D, h, w), tokens)."""
    features = vqvae.encode(image, known)
    patch_known = patch_known_mask(known, vqvae.patch_size)
    logits = transformer(features.permute(0, 2, 3, 1)).float()
    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
    probs = logits.masked_fill(logits < kth, float("-inf")).softmax(-1)
    drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(patch_known.shape)
    tokens = torch.where(patch_known, vqvae.quantize(features, known).indices, drawn)
    if oracle_share > 0:
        oracle = torch.rand(image.shape[0], 1, 1, device=image.device) < oracle_share
        tokens = torch.where(oracle & ~patch_known, vqvae.quantize(vqvae.encode(image)).indices, tokens)
    return vqvae.vq.decode_indices(tokens).permute(0, 3, 1, 2).to(image.dtype), tokens


def vqvae_loss(model, batch, hole_weight: float = 2.0, gradient_weight: float = 1.0, transformer=None,
               top_k: int = 50, oracle_share: float = 0.25, pixel_loss: str = "l1"):
    """L1 (+ `hole_weight` x on holes) + image-gradient L1 + VQ loss. With `transformer` (a
    decoder_only run), the decoder is trained on what it meets at inference: tokens sampled from
    that transformer in the holes (`sampled_hole_features`), so it learns how far to trust them.
    `pixel_loss="mse"`: squared error in place of L1 (its optimum is the mean of what the tokens
    leave open; L1's is the median); "psnr": log10 of each image's squared error, averaged over
    images (the mean per-image PSNR the benchmark reports; plain MSE lets hard images dominate and
    pays for them with noise on easy, smooth ones)."""
    image, known = batch["image"], batch["known"]
    if transformer is None:
        out = model(image, known, batch["erase"])
    else:
        quantized, _ = sampled_hole_features(model, transformer, image, known, top_k, oracle_share)
        out = {"reconstruction": model.decoder(quantized, image * known, known),
               "vq_loss": torch.zeros((), device=image.device), "perplexity": torch.zeros(())}
    rec = out["reconstruction"].float()
    hole, err = 1 - known, (rec - image).abs() if pixel_loss == "l1" else (rec - image) ** 2
    if pixel_loss == "psnr":  # per image, in log space: every image's PSNR counts alike, as in the benchmark
        per_image = err.mean((1, 2, 3)) + hole_weight * (hole * err).sum((1, 2, 3)) / (3 * hole.sum((1, 2, 3)) + 1)
        pixel = torch.log10(per_image + 1e-5).mean()
    else:
        pixel = err.mean() + hole_weight * (hole * err).sum() / (3 * hole.sum() + 1)
    loss = pixel + out["vq_loss"] + (gradient_weight * image_gradient_l1(rec, image) if gradient_weight else 0.0)
    return loss, {pixel_loss: pixel.item(), "vq": out["vq_loss"].item(), "perplexity": out["perplexity"].item()}


def _eval_batches(dataset, batch_size: int, device):
    """(image, known) batches of a MaskedPhotoDataset, in order, on `device`."""
    for i in range(0, len(dataset), batch_size):
        items = [dataset[k] for k in range(i, min(i + batch_size, len(dataset)))]
        yield (torch.stack([it["image"] for it in items]).to(device),
               torch.stack([it["known"] for it in items]).to(device))


@torch.no_grad()
def evaluate_vqvae(model, dataset, transformer=None, batch_size: int = 32) -> dict:
    """Hole PSNR when the decoder gets the complete image's known-codebook tokens: the ceiling
    the transformer can reach with perfect token predictions. With `transformer`, also the hole
    PSNR with tokens sampled from it in one shot (seeded), closer to what inference gets. A decoder
    on a reference fill also reports the fill alone (`hole_psnr_reference`: what a zero residual
    scores), and every score again over the items with holes under 25 % of the image (`_small`)."""
    from .put import REFERENCE_FILL_FNS
    model.eval()
    scores, sampled, reference, small, used = [], [], [], [], set()
    fill = REFERENCE_FILL_FNS.get(model.config.reference_fill)
    device = next(model.parameters()).device

    def hole_psnr(rec, image, known) -> list[float]:
        return [psnr((r + 1) / 2, (x + 1) / 2, mask=np.broadcast_to(k < 0.5, r.shape))
                for r, x, k in zip(rec.float().cpu().numpy(), image.cpu().numpy(), known.cpu().numpy())]

    with torch.random.fork_rng(devices=[]):  # seeded sampling, without touching the training's RNG
        torch.manual_seed(0)
        for image, known in _eval_batches(dataset, batch_size, device):
            tokens = model.quantize(model.encode(image)).indices
            used.update(tokens.unique().tolist())
            scores += hole_psnr(model.decode_tokens(tokens, image * known, known), image, known)
            small += (known.mean((1, 2, 3)) > 0.75).tolist()
            if fill is not None:
                reference += hole_psnr(fill(image * known, known), image, known)
            if transformer is not None:
                _, drawn = sampled_hole_features(model, transformer.to(device), image, known)
                sampled += hole_psnr(model.decode_tokens(drawn, image * known, known), image, known)
    model.train()
    metrics = {"code_utilization": len(used) / model.config.codebook_size_known}
    small = np.array(small, bool)
    for name, values in (("oracle_tokens", scores), ("sampled_tokens", sampled), ("reference", reference)):
        if values:
            metrics[f"hole_psnr_{name}"] = float(np.mean(values))
            if small.any():
                metrics[f"hole_psnr_{name}_small"] = float(np.mean(np.array(values)[small]))
    return metrics


@torch.no_grad()
def evaluate_transformer(model, vqvae, dataset, batch_size: int = 32) -> dict:
    model.eval()
    losses, accs = [], []
    device = next(model.parameters()).device
    for image, known in _eval_batches(dataset, batch_size, device):
        loss, acc = transformer_loss(model, vqvae.to(device), image, known, random_quantize=0.0)
        losses.append(float(loss))
        accs.append(acc)
    model.train()
    return {"val_ce": float(np.mean(losses)), "val_token_accuracy": float(np.mean(accs))}


def _datasets(size: int, eval_items: int, ratio, no_reference_prob: float = 0.0, grey_prob: float = 0.0):
    from genstudio.data import load_manifest, prepare
    from genstudio.data.photos import PhotoCropDataset
    prepare("photos", quiet=True)
    train = MaskedPhotoDataset(PhotoCropDataset(load_manifest("photos", "train"), size=size, length=100_000), ratio,
                               no_reference_prob=no_reference_prob, grey_prob=grey_prob)
    val = MaskedPhotoDataset(PhotoCropDataset(load_manifest("photos", "val"), size=size, length=eval_items,
                                              deterministic=True, seed=1234), ratio, deterministic=True, seed=1234)
    return train, val


STAGE_DEFAULTS = {  # TrainConfig defaults of each stage
    "vqvae": dict(output_dir="runs/put-vqvae-S", steps=1500, batch_size=16, lr=5e-4, ema_decay=None, warmup_steps=100),
    "transformer": dict(output_dir="runs/put-transformer-S", steps=2000, batch_size=16, lr=5e-4, weight_decay=0.01,
                        betas=(0.9, 0.95), ema_decay=0.999, warmup_steps=200),
}


@dataclass
class PUTOptions:
    """`genstudio train put` options (besides TrainConfig's)."""
    stage: Literal["vqvae", "transformer"] = "vqvae"   # which of the two models this run trains
    preset: str = "S"                                  # a PUT_CONFIGS name
    vqvae: Optional[str] = None        # transformer stage: the trained P-VQVAE (its run folder or weights folder)
    mask_ratio: tuple[float, float] = (0.1, 0.6)       # hole area range of the random training masks
    eval_items: int = 128                              # fixed validation crops scored at each save
    no_reference_prob: float = 0.3     # vqvae stage: share of items whose decoder sees no known pixels
    random_quantize: float = 0.3       # transformer stage: share of input features replaced by their code
    init_from: Optional[str] = None    # vqvae stage: start from this P-VQVAE (run or weights folder; same shapes)
    decoder_only: bool = False         # vqvae stage: freeze encoder + codebooks, so a transformer trained on
                                       # `init_from`'s tokens still fits (then export with --set transformer=...)
    transformer: Optional[str] = None  # decoder_only: train the decoder on tokens sampled from this transformer
    oracle_share: float = 0.25         # ... except this share of images, which keep their true tokens
    pixel_loss: Literal["l1", "mse", "psnr"] = "l1"  # vqvae stage: l1 | mse | psnr (log10 of each image's MSE)
    gradient_weight: float = 1.0       # vqvae stage: weight of the image-gradient L1 term
    hole_weight: float = 2.0           # vqvae stage: extra weight of the hole pixels' error (known ones are pasted back)
    grey_prob: float = 0.0             # share of training crops made greyscale (both stages)
    vqvae_kwargs: dict = field(default_factory=dict)        # PatchVQVAE arguments over the preset's
    transformer_kwargs: dict = field(default_factory=dict)  # UnquantizedTransformer arguments over the preset's


def recipe(cfg: dict):
    """`genstudio train put --set stage=vqvae|transformer --set preset=S ...`"""
    from genstudio.export import run_weights
    from genstudio.train import Recipe, parse_config
    stage = str(cfg.get("stage", "vqvae"))
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f"stage must be 'vqvae' or 'transformer', got {stage!r}")
    train_cfg, opts = parse_config(cfg, PUTOptions, recipe="put", **STAGE_DEFAULTS[stage])
    if opts.preset not in PUT_CONFIGS:
        raise ValueError(f"unknown preset {opts.preset!r}: expected one of {', '.join(PUT_CONFIGS)}")
    preset = PUT_CONFIGS[opts.preset]
    if opts.pixel_loss not in ("l1", "mse", "psnr"):
        raise ValueError(f"pixel_loss must be 'l1', 'mse' or 'psnr', got {opts.pixel_loss!r}")
    if opts.stage == "vqvae":
        model = PatchVQVAE(**{**preset["vqvae"], **opts.vqvae_kwargs})
        if opts.init_from:
            from genstudio.export import init_weights
            # absolute: recorded in train_config.json; refinement blocks the source lacks start as the identity
            opts.init_from = init_weights(model, opts.init_from, "put init_from", new=("decoder.refine.",))
            if model.config.reference_fill != PatchVQVAE.load_config(run_weights(opts.init_from)).get("reference_fill", "zeros"):
                # A new reference path: its residual output starts at zero (the fill itself), not at
                # the old decoder's full image.
                torch.nn.init.zeros_(model.decoder.proj_out.weight)
                torch.nn.init.zeros_(model.decoder.proj_out.bias)
        if opts.decoder_only:
            if not opts.init_from:
                raise ValueError("decoder_only needs init_from: the frozen encoder and codebooks come from it")
            model.encoder.requires_grad_(False)
            model.vq.requires_grad_(False)
        train_set, val_set = _datasets(model.config.sample_size, opts.eval_items, opts.mask_ratio, opts.no_reference_prob,
                                       opts.grey_prob)
        sampler, loss_kwargs = None, {"pixel_loss": opts.pixel_loss, "gradient_weight": opts.gradient_weight,
                                        "hole_weight": opts.hole_weight}

        def loss_fn(m, batch):
            return vqvae_loss(m, batch, **loss_kwargs)
        if opts.transformer:
            if not opts.decoder_only:
                raise ValueError("transformer (sampled training tokens) needs decoder_only: its tokens must stay valid")
            sampler = UnquantizedTransformer.from_pretrained(run_weights(opts.transformer)).eval().requires_grad_(False)

            def loss_fn(m, batch):
                return vqvae_loss(m, batch, transformer=sampler.to(batch["image"].device), oracle_share=opts.oracle_share,
                                  **loss_kwargs)
        return Recipe(model, train_set, loss_fn, train_cfg,
                      eval_fn=lambda m: evaluate_vqvae(m, val_set, sampler), name="put", options=opts)

    if opts.vqvae is None:
        raise ValueError("stage 'transformer' needs the trained P-VQVAE: --set vqvae=runs/put-vqvae-S")
    vqvae = PatchVQVAE.from_pretrained(run_weights(opts.vqvae)).eval().requires_grad_(False)
    model = UnquantizedTransformer(feature_dim=vqvae.config.latent_dim, num_tokens=vqvae.config.codebook_size_known,
                                   **{**preset["transformer"], **opts.transformer_kwargs})
    train_set, val_set = _datasets(vqvae.config.sample_size, opts.eval_items, opts.mask_ratio, grey_prob=opts.grey_prob)

    def loss_fn(m, batch):
        loss, acc = transformer_loss(m, vqvae.to(batch["image"].device), batch["image"], batch["known"],
                                     random_quantize=opts.random_quantize)
        return loss, {"token_accuracy": acc}

    return Recipe(model, train_set, loss_fn, train_cfg, eval_fn=lambda m: evaluate_transformer(m, vqvae, val_set),
                  extra={"vqvae": vqvae}, name="put", options=opts)


def export(run_dir, to, dtype: torch.dtype, vqvae: str | None = None, transformer: str | None = None) -> None:
    """`genstudio export runs/put-transformer-S --to checkpoints/NAME`: both stages -> vqvae/ + transformer/.

    The transformer run remembers its P-VQVAE (its `vqvae` option); `--set vqvae=RUN` overrides it.
    A `decoder_only` P-VQVAE run exports with the transformer of the model it started from:
    `genstudio export runs/put-vqvae-H --to ... --set transformer=checkpoints/put-photos-S/transformer`.
    """
    from genstudio.export import run_record, run_weights
    options = run_record(run_dir).get("options") or {}
    if options.get("stage") == "vqvae":
        if not (options.get("decoder_only") and transformer):
            raise ValueError(f"{run_dir} trained the P-VQVAE stage: export the transformer run, which names its "
                             "P-VQVAE (or, for a decoder_only run, pass --set transformer=THE_TRANSFORMER)")
        save_put(PatchVQVAE.from_pretrained(run_weights(run_dir)),
                 UnquantizedTransformer.from_pretrained(run_weights(transformer)), to, dtype=dtype)
        return
    vqvae = vqvae or options.get("vqvae")
    if not vqvae:
        raise ValueError(f"{run_dir} does not name its P-VQVAE: pass --set vqvae=RUN")
    save_put(PatchVQVAE.from_pretrained(run_weights(vqvae)), UnquantizedTransformer.from_pretrained(run_weights(run_dir)),
             to, dtype=dtype)


__all__ = ["MaskedPhotoDataset", "PUTOptions", "recipe", "export", "vqvae_loss", "evaluate_vqvae", "evaluate_transformer",
           "patch_known_mask"]

