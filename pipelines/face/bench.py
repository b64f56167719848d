"""`genstudio bench face`: the Vec2Face paper's protocol on our avatar domain, scaled to a CPU.

1. Synthetic training data. Three training sets of the SAME size (identities x per_identity faces):
   * `vec2face`: `new_identities(identities, per_identity)` from the checkpoint (new people);
   * `real`: the first `identities` identities of the real train split, `per_identity` faces each;
   * `single-image + augmentation`: one real face per identity (its first), repeated per_identity
     times: what a user without a generator does (the pose / light augmentation runs at train time
     for all three sets alike).
   A fresh recogniser is trained on each (same preset, steps, batch, lr, augmentation, seed: the
   face-recognizer recipe's model and ArcFace loss) and scored by 10-fold verification accuracy on
   pairs of the real TEST split (identities none of them saw). The checkpoint's own recogniser
   (trained on every real training identity) is a reference row.
2. Identity separation, seen by the checkpoint's recogniser: mean cosine between faces of one
   identity (intra) and of different identities (inter), synthetic and real sets.
3. Attribute control: AttrOP pose edits towards random targets: success rate, iterations, the cap.
4. Images per second of `new_identities` (wall clock, this machine, batch generation).

The model: `model=` (default: the shipped vec2face-avatars-S). `root=` points at another build of the
`faces` source (tests use a small fake build).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genstudio.bench import training_steps

from .data import augment_face, identity_pairs, load_faces

TEST_DATASET = "test identities"


# ---- training sets ----

class FaceArrayDataset:
    """In-memory faces as FaceDataset items: {"image": (3, S, S) float in [-1, 1] (augmented with
    augment_face when `augment`), "identity": int}; the augmentation stream is seeded like FaceDataset's."""

    def __init__(self, images: np.ndarray, labels, augment: bool = True, seed: int | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = np.ascontiguousarray(images), np.asarray(labels, np.int64)
        self.num_identities = len(np.unique(self.labels))
        self.augment, self.seed, self._calls = augment, seed, 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, k: int) -> dict:
        x = torch.from_numpy(self.images[k]).permute(2, 0, 1).float() / 127.5 - 1.0
        if self.augment:
            gen = None
            if self.seed is not None:
                gen = torch.Generator().manual_seed(hash((self.seed, k, self._calls)) & 0x7FFFFFFF)
                self._calls += 1
            x = augment_face(x, generator=gen)
        return {"image": x.clamp(-1, 1), "identity": int(self.labels[k])}


def real_set(images: np.ndarray, items: list[dict], identities: int, per_identity: int,
             single: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The first `identities` identities (build order) with >= per_identity faces: `per_identity`
    faces each, or (single) the first face repeated per_identity times. -> (uint8 images, labels)."""
    rows: dict[str, list[int]] = {}
    for r, it in enumerate(items):
        rows.setdefault(it["identity"], []).append(r)
    chosen = [r for r in rows.values() if len(r) >= per_identity][:identities]
    if len(chosen) < identities:
        raise ValueError(f"the real train split has only {len(chosen)} identities with >= {per_identity} faces; "
                         f"asked for {identities}")
    picked = [([r[0]] * per_identity if single else r[:per_identity]) for r in chosen]
    return (np.stack([np.asarray(images[k]) for ks in picked for k in ks]),
            np.repeat(np.arange(identities), per_identity))


def train_recognizer(images: np.ndarray, labels: np.ndarray, out_dir: Path, preset: str, steps: int,
                     batch_size: int, seed: int):
    """A fresh recogniser trained with the face-recognizer recipe's model and loss on these faces."""
    from genstudio.train import Recipe, parse_config, train
    from .recognizer import FaceRecognizer, RecognizerOptions, arcface_loss, new_recognizer, without_head
    cfg, opts = parse_config({"preset": preset, "steps": steps, "batch_size": min(batch_size, len(images)),
                              "seed": seed, "output_dir": str(out_dir)},
                             RecognizerOptions, recipe="face-recognizer", lr=1e-3, weight_decay=0.01,
                             warmup_steps=min(100, steps // 10), margin_warmup_steps=max(1, min(500, steps // 3)),
                             ema_decay=None, save_every=10 ** 9, log_every=max(1, steps // 10), progress=False)
    dataset = FaceArrayDataset(images, labels, augment=opts.augment, seed=cfg.seed)
    model = new_recognizer(opts, dataset.num_identities)
    summary = train(Recipe(model, dataset, arcface_loss(opts), cfg, name="face-recognizer", options=opts))
    recognizer = without_head(FaceRecognizer.from_pretrained(summary["final"])).eval()
    return recognizer, summary


# ---- measures ----

def separation(vectors: torch.Tensor, labels) -> dict:
    """Mean cosine between faces of one identity (distinct faces) and of different identities."""
    v = F.normalize(vectors.double(), dim=-1)
    labels = torch.as_tensor(np.asarray(labels))
    sims = v @ v.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(v), dtype=torch.bool)
    intra = float(sims[same & off_diagonal].mean())
    inter = float(sims[~same].mean())
    return {"intra_cos": round(intra, 4), "inter_cos": round(inter, 4), "gap": round(intra - inter, 4)}


def attribute_control(pipe, trials: int, max_iters: int, seed: int, max_shift: float = 0.2,
                      min_shift: float = 0.05) -> dict:
    """AttrOP pose edits of `trials` new identities towards their own pose +- U(min_shift, max_shift)."""
    from .attrop import pose_proxy
    rng = np.random.default_rng(seed)
    vectors = pipe.sample_identities(trials, seed=seed)
    met, iterations, seconds, kept, errors = [], [], [], [], []
    for v in vectors:
        with torch.no_grad():
            start = float(pose_proxy(pipe.vec2face(v[None].to(pipe.vec2face.device), mask_ratio=0.0).float().cpu())[0])
        shift = float(rng.uniform(min_shift, max_shift)) * (1 if rng.random() < 0.5 else -1)
        target = float(np.clip(start + shift, -1.0, 1.0))
        t0 = time.perf_counter()
        out = pipe.edit(v, pose=target, max_iters=max_iters)
        seconds.append(time.perf_counter() - t0)
        a = out.metadata["attrop"]
        met.append(bool(a["met"]))
        iterations.append(int(a["iterations"]))
        kept.append(float(a["similarity"]))
        errors.append(abs(a["scores"]["pose"] - target))
    return {"trials": trials, "success_rate": round(float(np.mean(met)), 4),
            "mean_iters": round(float(np.mean(iterations)), 2), "max_iters_seen": int(max(iterations)),
            "iter_cap": int(max_iters), "within_cap": bool(max(iterations) <= max_iters),
            "mean_abs_pose_error": round(float(np.mean(errors)), 4),
            "min_vector_cos": round(float(min(kept)), 4), "sec_per_edit": round(float(np.mean(seconds)), 4)}


def _own_steps(folder: Path):
    """Steps from a summary.json inside `folder` itself (not its parent's: that is Vec2Face's), else "-"."""
    import json
    try:
        return int(json.loads((folder / "summary.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return "-"


# ---- the benchmark ----

def bench_face(report, quick: bool = False, model: str | None = None, identities: int = 200, per_identity: int = 12,
               steps: int = 300, batch_size: int = 64, preset: str = "S", pairs: int = 2000, seed: int = 0,
               attr_trials: int = 16, attr_max_iters: int = 50, root: str | None = None) -> None:
    from .pipeline import Vec2FacePipeline
    from .recognizer import embed_images, verification_accuracy
    if quick:
        identities, per_identity, steps, batch_size, preset = 8, 3, 5, 16, "tiny"
        pairs, attr_trials, attr_max_iters = 50, 2, 5
    identities, per_identity, steps, pairs = int(identities), int(per_identity), int(steps), int(pairs)
    batch_size, seed, attr_trials, attr_max_iters = int(batch_size), int(seed), int(attr_trials), int(attr_max_iters)
    root = Path(root) if root else None
    from genstudio.hub import resolve
    name = model or Vec2FacePipeline.default_model
    folder = Path(resolve(name))
    pipe = Vec2FacePipeline.from_pretrained(name, device="cpu", precision="fp32")
    pipe.set_progress_bar_config(disable=True)

    # 1. the three training sets, one size
    t0 = time.perf_counter()
    synthetic = pipe.new_identities(identities, per_identity=per_identity, seed=seed, progress=False)
    gen_seconds = time.perf_counter() - t0
    train_images, train_items = load_faces("train", root)
    sets = {"vec2face": (np.stack([np.asarray(im.convert("RGB")) for im in synthetic.images]),
                        np.asarray(synthetic.identity, np.int64)),
            "real": real_set(train_images, train_items, identities, per_identity),
            "single-image + augmentation": real_set(train_images, train_items, identities, per_identity, single=True)}
    sizes = {k: len(v[0]) for k, v in sets.items()}
    if len(set(sizes.values())) != 1:
        raise AssertionError(f"training sets of different sizes: {sizes}")

    test_images, _ = load_faces("test", root)
    test_pairs = identity_pairs("test", pairs, seed=0, root=root)
    with tempfile.TemporaryDirectory(prefix="genstudio-bench-face-") as tmp:
        for method, (images, labels) in sets.items():
            t1 = time.perf_counter()
            recognizer, summary = train_recognizer(images, labels, Path(tmp) / method.split()[0], preset, steps,
                                                   batch_size, seed)
            report.add(f"recognizer on {method}", TEST_DATASET,
                       verification_acc=round(verification_accuracy(recognizer, test_images, test_pairs), 4),
                       train_images=len(images), train_identities=int(len(np.unique(labels))),
                       steps=int(summary["steps"]), final_loss=round(float(summary["loss_ema"]), 4),
                       train_seconds=round(time.perf_counter() - t1, 1))
    shipped = pipe.recognizer
    real_ids = len({it["identity"] for it in train_items})
    report.add("shipped recognizer (reference)", TEST_DATASET,
               verification_acc=round(verification_accuracy(shipped, test_images, test_pairs), 4),
               train_images=len(train_items), train_identities=real_ids,
               steps=_own_steps(folder / "recognizer"))

    # 2. identity separation, seen by the checkpoint's recogniser
    for method in ("vec2face", "real"):
        images, labels = sets[method]
        report.add(f"separation: {method}", f"{identities}x{per_identity} train set",
                   **separation(embed_images(shipped, images), labels))

    # 3. attribute control
    report.add("AttrOP pose edit", f"{attr_trials} new identities",
               **attribute_control(pipe, attr_trials, attr_max_iters, seed))

    # 4. speed
    report.add("new_identities speed", f"{identities}x{per_identity} faces", images=len(synthetic.images),
               seconds=round(gen_seconds, 2), images_per_s=round(len(synthetic.images) / max(gen_seconds, 1e-9), 2))

    c = pipe.vec2face.config
    steps_v2f = training_steps(folder)
    report.note(f"model: {name} ({folder}): Vec2Face {sum(p.numel() for p in pipe.vec2face.parameters()) / 1e6:.2f}M "
                f"parameters, {c.vector_dim}-d vectors, {c.image_size}px; "
                f"{f'{steps_v2f} training steps' if steps_v2f else 'training steps: see its model card'}.")
    report.note(f"training sets: {identities} identities x {per_identity} faces = {sizes['real']} images each "
                f"(equal sizes: {sizes}); recogniser preset {preset!r}, {steps} steps, batch "
                f"{min(batch_size, sizes['real'])}, lr 1e-3, train-time pose/scale/light augmentation, seed {seed}, "
                "CPU (the face-recognizer recipe's model and ArcFace loss).")
    report.note(f"verification: {pairs} pairs (half same identity) of the real test split (identities no training "
                "set contains), 10-fold accuracy with the threshold chosen on the other folds; chance = 0.5.")
    report.note("the identity model used for all metrics is the recogniser trained here on DiceBear avatar faces "
                "(the one shipped in the checkpoint's recognizer/ folder), not the paper's ArcFace-R100 on real "
                "faces; faces are 64x64 DiceBear 'Face Generator' avatars (CC BY 4.0), not photographs.")
    report.note("separation: mean cosine between recogniser vectors of distinct faces of one identity (intra) and "
                "of different identities (inter); gap = intra - inter.")
    report.note(f"AttrOP: pose_proxy target = the face's own pose +- U(0.05, 0.2), tolerance 0.05, identity kept by "
                f"projection (vector cos >= 0.8); success = target met within {attr_max_iters} iterations.")
    report.note("speed: wall clock of new_identities (generation plus the recogniser's check of each face) on "
                "this machine's CPU, fp32.")
