"""Recipes of the Vec2Face pipeline, in the order they run:

    genstudio train face-recognizer --output-dir runs/face-recognizer     # ArcFace on the training identities
    genstudio train vec2face --set recognizer='"runs/face-recognizer"' --output-dir runs/vec2face

and, optionally, a fine-tuning with the adversarial (PatchGAN) term from the shipped checkpoint:

    genstudio train vec2face --set recognizer='"checkpoints/vec2face-avatars-S/recognizer"' \
        --set init_from='"checkpoints/vec2face-avatars-S"' --set adversarial_weight=0.1 \
        --set steps=1000 --output-dir runs/vec2face-gan

`face-recognizer` trains the identity model with the ArcFace loss over the training split's
identities (the margin ramps up from 0 over `margin_warmup_steps`: from scratch, the full 0.5 rad
margin at step 0 stalls a small network) and is scored by 10-fold verification accuracy on pairs of
held-out (val) identities. `vec2face` freezes that recogniser; each training face's input vector is
the recogniser's vector of that (augmented) face, as in the paper, and the face is the target. It is
scored on val faces: the identity similarity between the recogniser's vector of the generated face and
the input vector (with the similarity to other faces' vectors beside it) and the pixel MSE.

`adversarial_weight` > 0 adds the reference's GAN term (VQGAN-style): a PatchGAN discriminator with
the hinge loss, switched on at `adversarial_start`, scaled by VQGAN's adaptive weight (the ratio of
the reconstruction and adversarial gradient norms at the image decoder's last layer) unless
`adaptive_weight=false`. Without it the generator averages what the identity vector does not fix
(hair, mouth, background) into blurry "mean faces". `init_from` starts the generator from a vec2face
run, checkpoint or export (the shipped checkpoints/vec2face-avatars-S).

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
from .recognizer import (RECOGNIZER_CONFIGS, FaceRecognizer, RecognizerOptions, arcface_loss, embed_images,
                         load_recognizer, new_recognizer, to_input, verification_accuracy, without_head)
from .vec2face import (VEC2FACE_CONFIGS, PatchDiscriminator, Vec2Face, adaptive_weight, generator_adversarial_loss,
                       hinge_d_loss, last_layer, vec2face_loss)


# ---------------------------------------------------------------- recogniser

def recognizer_recipe(cfg: dict) -> Recipe:
    # No EMA: BatchNorm's running statistics are not averaged with the weights, so EMA weights
    # would be scored with the live model's statistics.
    train_cfg, opts = parse_config(cfg, RecognizerOptions, recipe="face-recognizer", output_dir="runs/face-recognizer",
                                   steps=3000, batch_size=128, lr=1e-3, warmup_steps=100, weight_decay=0.01,
                                   ema_decay=None, save_every=500)
    if opts.preset not in RECOGNIZER_CONFIGS:
        raise ValueError(f"face-recognizer preset {opts.preset!r}: one of {', '.join(RECOGNIZER_CONFIGS)}")
    dataset = FaceDataset("train", augment=opts.augment, seed=train_cfg.seed)
    model = new_recognizer(opts, dataset.num_identities)
    print(f"[face-recognizer] {opts.preset}: {_millions(model, exclude='head.')}M parameters (+ ArcFace head "
          f"{model.head.weight.numel() / 1e6:.2f}M over {dataset.num_identities} identities), {len(dataset)} faces")
    val_images, _ = load_faces("val")
    val_pairs = identity_pairs("val", opts.val_pairs, seed=0)

    @torch.no_grad()
    def evaluate(m):
        return {"val_verification_accuracy": verification_accuracy(m, val_images, val_pairs)}

    return Recipe(model, dataset, arcface_loss(opts), train_cfg, eval_fn=evaluate, name="face-recognizer",
                  options=opts)


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
    adversarial_weight: float = 0.0            # the PatchGAN term's weight; 0 = off (no discriminator)
    adversarial_start: int = 0                 # the step at which the discriminator and the GAN term start
    disc_lr: float = 1e-4                      # the discriminator's AdamW (betas 0.5, 0.9)
    adaptive_weight: bool = True               # VQGAN's gradient-norm balance at the decoder's last layer
    init_from: str | None = None               # a vec2face run, checkpoint or export to start the generator from


def vec2face_recipe(cfg: dict) -> Recipe:
    """The Vec2Face recipe. With `adversarial_weight` > 0 the recipe also owns a PatchDiscriminator
    and its optimiser (`recipe.extra["adversary"]`), updated inside loss_fn, never part of the trained
    or exported model. The trainer has no hook for extra state, so the discriminator and its optimiser
    are written to <output_dir>/discriminator.pt at each save (from eval_fn) and read back when the run
    resumes; a run killed between saves resumes the discriminator from the last save, like the model."""
    train_cfg, opts = parse_config(cfg, Vec2FaceOptions, recipe="vec2face", output_dir="runs/vec2face", steps=20000,
                                   batch_size=64, lr=3e-4, warmup_steps=500, weight_decay=0.05, save_every=1000)
    if opts.preset not in VEC2FACE_CONFIGS:
        raise ValueError(f"vec2face preset {opts.preset!r}: one of {', '.join(VEC2FACE_CONFIGS)}")
    if opts.adversarial_weight < 0 or opts.adversarial_start < 0:
        raise ValueError("vec2face: adversarial_weight and adversarial_start must be >= 0")
    opts.recognizer = str(Path(opts.recognizer).resolve())  # recorded in train_config.json for the export
    recognizer = load_recognizer(opts.recognizer)
    dataset = FaceDataset("train", augment=opts.augment, seed=train_cfg.seed)
    model = Vec2Face(**{**VEC2FACE_CONFIGS[opts.preset], "vector_dim": recognizer.config.embed_dim,
                        "image_size": recognizer.config.image_size, "dropout": opts.dropout})
    if opts.init_from:
        opts.init_from = str(Path(opts.init_from).resolve())  # recorded in train_config.json
        init_generator(model, opts.init_from)
    print(f"[vec2face] {opts.preset}: {_millions(model)}M parameters"
          f"{f' (from {opts.init_from})' if opts.init_from else ''}; frozen recogniser {_millions(recognizer)}M "
          f"({recognizer.config.embed_dim}-d) from {opts.recognizer}; {len(dataset)} faces")
    weights = dict(pixel_weight=opts.pixel_weight, ssim_weight=opts.ssim_weight,
                   identity_weight=opts.identity_weight, perceptual_weight=opts.perceptual_weight)
    state_file = Path(train_cfg.output_dir) / "discriminator.pt"
    adversary = None
    if opts.adversarial_weight > 0:
        resume = (Path(train_cfg.output_dir) / "state" / "train_state.json").exists() and state_file.exists()
        adversary = Adversary(opts, state_file if resume else None)
        print(f"[vec2face] adversarial term: weight {opts.adversarial_weight:g} from step {opts.adversarial_start}"
              f"{' (adaptive)' if opts.adaptive_weight else ''}; discriminator {_millions(adversary.disc)}M"
              f"{' resumed from ' + str(state_file) if resume else ''}")

    def loss_fn(m, batch, step):
        image = batch["image"]
        if recognizer.device != image.device:
            recognizer.to(image.device)
        if adversary is None:
            return vec2face_loss(m, recognizer, image, **weights)
        return adversary.loss(m, recognizer, image, step, weights)

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
        if adversary is not None:
            adversary.save(state_file)
        return {"val_identity_similarity": float(same.mean()), "val_other_similarity": float(other.mean()),
                "val_mse": float(((generated.cpu() - val) / 2).pow(2).mean())}  # in [0, 1] pixel units

    return Recipe(model, dataset, loss_fn, train_cfg, eval_fn=evaluate, name="vec2face", options=opts,
                  extra={"adversary": adversary})


def init_generator(model: Vec2Face, path: str | Path) -> None:
    """Load the weights of a vec2face run / checkpoint / export into `model` (strict: same architecture)."""
    from genstudio.export import init_weights
    init_weights(model, path, "vec2face init_from")


class Adversary:
    """The GAN side of the vec2face recipe (VQGAN / taming-transformers' loss at our scale): a
    PatchDiscriminator and its AdamW (betas 0.5, 0.9), both made on the model's device at first use.

    `loss` runs the generator once; from `adversarial_start` on it updates the discriminator on
    real vs the detached output (hinge loss, fp32, outside autocast) and adds
    weight * -mean D(output) to the reconstruction loss, where weight = adversarial_weight (times
    VQGAN's adaptive weight when `adaptive_weight`). The discriminator is frozen while it scores the
    output for the generator, so the trainer's backward leaves it no gradients."""

    def __init__(self, opts: Vec2FaceOptions, resume_from: Path | None = None):
        self.opts = opts
        self.disc = PatchDiscriminator()
        self.opt: torch.optim.Optimizer | None = None
        self.pending = torch.load(resume_from, map_location="cpu") if resume_from is not None else None
        if self.pending is not None:
            self.disc.load_state_dict(self.pending["discriminator"])

    def _ready(self, device: torch.device) -> None:
        if next(self.disc.parameters()).device != device:
            self.disc.to(device)
        if self.opt is None:  # after the move: the optimiser's state then lives on the same device
            self.opt = torch.optim.AdamW(self.disc.parameters(), lr=self.opts.disc_lr, betas=(0.5, 0.9),
                                         weight_decay=0.0)
            if self.pending is not None and self.pending.get("optimizer") is not None:
                self.opt.load_state_dict(self.pending["optimizer"])
            self.pending = None

    def loss(self, model, recognizer, image: torch.Tensor, step: int, weights: dict) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            vector = recognizer(image)
        output = model(vector)
        rec_loss, logs = vec2face_loss(model, recognizer, image, vector, output=output, **weights)
        if step < self.opts.adversarial_start:  # adopt_weight: no GAN term (and no D update) yet
            return rec_loss, {**logs, "d_loss": 0.0, "g_adv": 0.0, "adv_weight": 0.0}
        self._ready(image.device)
        device_type = image.device.type
        with torch.autocast(device_type, enabled=False):
            self.disc.train()
            self.disc.requires_grad_(True)
            d_loss = hinge_d_loss(self.disc(image.float()), self.disc(output.detach().float()))
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
            self.disc.requires_grad_(False)  # gradients reach the generator's output, not D
            try:
                g_adv = generator_adversarial_loss(self.disc(output.float()))
            finally:
                self.disc.requires_grad_(True)
        weight = torch.tensor(self.opts.adversarial_weight, device=image.device)
        if self.opts.adaptive_weight and model.training:
            weight = weight * adaptive_weight(rec_loss, g_adv, last_layer(model))
        loss = rec_loss + weight * g_adv
        return loss, {**logs, "d_loss": float(d_loss.detach()), "g_adv": float(g_adv.detach()),
                      "adv_weight": float(weight)}

    def save(self, path: Path) -> None:
        """The discriminator and its optimiser, for a resumed run (written whole, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"discriminator": self.disc.state_dict(),
                    "optimizer": self.opt.state_dict() if self.opt is not None else None}, tmp)
        tmp.replace(path)


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
