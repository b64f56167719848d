"""Recipes of the Vec2Face pipeline, in the order they run:

    genstudio train face-recognizer --output-dir runs/face-recognizer     # ArcFace on the training identities
    genstudio train vec2face --set recognizer='"runs/face-recognizer"' --output-dir runs/vec2face

`face-recognizer` trains the identity model with the ArcFace loss over the training split's
identities (the margin ramps up from 0 over `margin_warmup_steps`: from scratch, the full 0.5 rad
margin at step 0 stalls a small network) and is scored by 10-fold verification accuracy on pairs of
held-out (val) identities. `vec2face` freezes that recogniser; each training face's input vector is
the recogniser's vector of that (augmented) face, as in the paper, and the face is the target. It is
scored on val faces: the identity similarity between the recogniser's vector of the generated face and
the input vector (with the similarity to other faces' vectors beside it) and the pixel MSE.

Exports: the recogniser without its ArcFace class weights; Vec2Face with the recogniser it was
trained against in `recognizer/` (the pipeline needs both: `from_image` embeds a face first).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from genstudio.train import Recipe, parse_config

from .data import FaceDataset, identity_pairs, load_faces
from .recognizer import (RECOGNIZER_CONFIGS, FaceRecognizer, embed_images, load_recognizer, to_input,
                         verification_accuracy, without_head)
from .vec2face import VEC2FACE_CONFIGS, Vec2Face, vec2face_loss


# ---------------------------------------------------------------- recogniser

@dataclass
class RecognizerOptions:
    preset: str = "S"                  # RECOGNIZER_CONFIGS: tiny / S / M
    embed_dim: int = 128               # the identity vector's size (the paper's ArcFace: 512)
    arcface_scale: float = 32.0
    arcface_margin: float = 0.5
    margin_warmup_steps: int = 500     # the margin grows linearly from 0 to arcface_margin
    dropout: float = 0.0
    augment: bool = True               # pose / scale / light jitter (FaceDataset)
    val_pairs: int = 2000


def recognizer_recipe(cfg: dict) -> Recipe:
    # No EMA: BatchNorm's running statistics are not averaged with the weights, so EMA weights
    # would be scored with the live model's statistics.
    train_cfg, opts = parse_config(cfg, RecognizerOptions, recipe="face-recognizer", output_dir="runs/face-recognizer",
                                   steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, weight_decay=0.01,
                                   ema_decay=None, save_every=500)
    if opts.preset not in RECOGNIZER_CONFIGS:
        raise ValueError(f"face-recognizer preset {opts.preset!r}: one of {', '.join(RECOGNIZER_CONFIGS)}")
    dataset = FaceDataset("train", augment=opts.augment, seed=train_cfg.seed)
    model = FaceRecognizer(**{**RECOGNIZER_CONFIGS[opts.preset], "embed_dim": opts.embed_dim, "dropout": opts.dropout,
                              "num_classes": dataset.num_identities, "arcface_scale": opts.arcface_scale,
                              "arcface_margin": opts.arcface_margin})
    print(f"[face-recognizer] {opts.preset}: {_millions(model, exclude='head.')}M parameters (+ ArcFace head "
          f"{model.head.weight.numel() / 1e6:.2f}M over {dataset.num_identities} identities), {len(dataset)} faces")
    val_images, _ = load_faces("val")
    val_pairs = identity_pairs("val", opts.val_pairs, seed=0)

    def loss_fn(m, batch, step):
        margin = opts.arcface_margin * min(1.0, step / max(opts.margin_warmup_steps, 1))
        embedding, _ = m.forward_features(batch["image"])
        logits = m.head(embedding, batch["identity"], margin)
        loss = F.cross_entropy(logits, batch["identity"])
        return loss, {"accuracy": float((logits.argmax(1) == batch["identity"]).float().mean()), "margin": margin}

    @torch.no_grad()
    def evaluate(m):
        return {"val_verification_accuracy": verification_accuracy(m, val_images, val_pairs)}

    return Recipe(model, dataset, loss_fn, train_cfg, eval_fn=evaluate, name="face-recognizer", options=opts)


def export_recognizer(run_dir, to, dtype: torch.dtype) -> None:
    """The recogniser alone: the ArcFace class weights (one per training avatar) are dropped."""
    from genstudio.export import run_weights, save_safetensors
    save_safetensors(without_head(FaceRecognizer.from_pretrained(run_weights(run_dir))).to(dtype), to)


# ---------------------------------------------------------------- Vec2Face

@dataclass
class Vec2FaceOptions:
    recognizer: str = "runs/face-recognizer"   # a face-recognizer run, one of its checkpoints, or an export
    preset: str = "S"                          # VEC2FACE_CONFIGS: tiny / S
    dropout: float = 0.1
    pixel_weight: float = 1.0
    ssim_weight: float = 0.5
    identity_weight: float = 0.5
    perceptual_weight: float = 0.5
    augment: bool = True
    eval_images: int = 256                     # val faces scored at each save


def vec2face_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, Vec2FaceOptions, recipe="vec2face", output_dir="runs/vec2face", steps=20000,
                                   batch_size=64, lr=3e-4, warmup_steps=500, weight_decay=0.05, save_every=1000)
    if opts.preset not in VEC2FACE_CONFIGS:
        raise ValueError(f"vec2face preset {opts.preset!r}: one of {', '.join(VEC2FACE_CONFIGS)}")
    opts.recognizer = str(Path(opts.recognizer).resolve())  # recorded in train_config.json for the export
    recognizer = load_recognizer(opts.recognizer)
    dataset = FaceDataset("train", augment=opts.augment, seed=train_cfg.seed)
    model = Vec2Face(**{**VEC2FACE_CONFIGS[opts.preset], "vector_dim": recognizer.config.embed_dim,
                        "image_size": recognizer.config.image_size, "dropout": opts.dropout})
    print(f"[vec2face] {opts.preset}: {_millions(model)}M parameters; frozen recogniser {_millions(recognizer)}M "
          f"({recognizer.config.embed_dim}-d) from {opts.recognizer}; {len(dataset)} faces")
    weights = dict(pixel_weight=opts.pixel_weight, ssim_weight=opts.ssim_weight,
                   identity_weight=opts.identity_weight, perceptual_weight=opts.perceptual_weight)

    def loss_fn(m, batch):
        image = batch["image"]
        if recognizer.device != image.device:
            recognizer.to(image.device)
        return vec2face_loss(m, recognizer, image, **weights)

    val_images, _ = load_faces("val")
    val = to_input(val_images[:opts.eval_images])

    @torch.no_grad()
    def evaluate(m):
        recognizer.to(m.device)
        vectors = embed_images(recognizer, val).to(m.device)
        g = torch.Generator().manual_seed(0)
        generated = torch.cat([m(vectors[i:i + 64], generator=g) for i in range(0, len(vectors), 64)])
        out_vectors = embed_images(recognizer, generated.cpu()).to(m.device)
        same = F.cosine_similarity(out_vectors, vectors, dim=-1)
        other = F.cosine_similarity(out_vectors, vectors.roll(1, 0), dim=-1)  # a different face's vector
        return {"val_identity_similarity": float(same.mean()), "val_other_similarity": float(other.mean()),
                "val_mse": float(((generated.cpu() - val) / 2).pow(2).mean())}  # in [0, 1] pixel units

    return Recipe(model, dataset, loss_fn, train_cfg, eval_fn=evaluate, name="vec2face", options=opts)


def export_vec2face(run_dir, to, dtype: torch.dtype) -> None:
    """Vec2Face at `to`, the recogniser it was trained against at `to`/recognizer."""
    from genstudio.export import run_record, run_weights, save_safetensors
    to = Path(to)
    save_safetensors(Vec2Face.from_pretrained(run_weights(run_dir)).to(dtype), to)
    recognizer = run_record(run_dir)["options"]["recognizer"]
    save_safetensors(load_recognizer(recognizer).to(dtype), to / "recognizer")


def _millions(model: torch.nn.Module, exclude: str | None = None) -> str:
    n = sum(p.numel() for name, p in model.named_parameters() if not (exclude and name.startswith(exclude)))
    return f"{n / 1e6:.2f}"


recognizer_recipe.export = export_recognizer  # genstudio export finds each recipe's exporter here
vec2face_recipe.export = export_vec2face
