"""`genstudio bench sims`: does negative guidance from a model of its own samples (SIMS) improve a
class-conditional DiT over the base model, with and without classifier-free guidance, at equal
sampling cost? And does it keep a self-consuming training loop from drifting?

Metrics (every row the same number of generated images, the same seeds):
- FD: Fréchet distance to real training glyphs in the feature space of `glyph-classifier`, a CNN
  trained here on real glyphs (NOT Inception: not comparable with published FIDs);
- precision / recall (k = 3 nearest neighbours, Kynkäänniemi et al.) in the same space;
- accuracy: how often that classifier reads the requested character;
- nfe: network evaluations per image (CFG's batched cond + uncond counts 2, SIMS's auxiliary 1).
The row "real: held-out fonts" scores real glyphs of fonts no model saw: the floor a model can
reasonably reach with this many images.
"""
from __future__ import annotations

import copy
import tempfile
import time

import numpy as np
import torch

from genstudio.sims import train_auxiliary
from genstudio.train import TrainConfig, train

from .classifier import GlyphClassifier, classify
from .data import CLASSES, load_glyph_classes
from .pipeline import DiTImagePipeline


class Scorer:
    """Classifier features of the real training glyphs, and the metrics of a set of images."""

    def __init__(self, classifier: str = "glyph-classifier"):
        from genstudio.hub import resolve
        self.model = GlyphClassifier.from_pretrained(resolve(classifier), torch_dtype=torch.float32).eval()
        real, _ = load_glyph_classes("train", plain_only=True)
        self.real, _ = classify(self.model, real)

    def __call__(self, images: np.ndarray, labels) -> dict:
        from genstudio.metrics import frechet_distance, precision_recall
        feats, preds = classify(self.model, images)
        precision, recall = precision_recall(self.real, feats)
        return {"fd": frechet_distance(self.real, feats), "precision": precision, "recall": recall,
                "accuracy": float((preds == np.asarray(labels)).mean())}


def ink(out) -> np.ndarray:
    """The pipeline's PIL images (black ink on white) -> uint8 (N, 32, 32) ink on black, as the data."""
    return 255 - np.stack([np.asarray(im.convert("L")) for im in out.images])


def bench_sims(report, quick: bool = False, model: str = "dit-glyphs-S", sims_model: str = "dit-glyphs-S-sims",
               per_class: int = 6, steps: int = 20, cfg: float = 2.0, sims_w=(0.5, 1.0, 2.0), sims_cfg_w=(1.0,),
               weight_w=(0.25, 0.5), generations: int = 3, loop_size: int = 620, loop_steps: int = 150,
               noise_seeds: int = 3, seed: int = 0, device: str = "cpu", precision: str = "auto") -> None:
    """Base vs CFG vs SIMS (guidance and weight-space) and the self-consuming loop; see the module doc."""
    sims_w = [float(w) for w in (sims_w.split(",") if isinstance(sims_w, str) else sims_w)]
    weight_w = [float(w) for w in (weight_w.split(",") if isinstance(weight_w, str) else weight_w)]
    sims_cfg_w = [float(w) for w in (sims_cfg_w.split(",") if isinstance(sims_cfg_w, str) else sims_cfg_w)]
    if quick:
        per_class, steps, sims_w, sims_cfg_w, weight_w, generations, loop_size, loop_steps = 1, 2, [1.0], [1.0], [0.5], 1, 62, 2
        noise_seeds = 0
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    score = Scorer()
    labels = [c for c in range(len(CLASSES)) for _ in range(per_class)]
    test_images, test_labels = load_glyph_classes("test", plain_only=True)
    pick = np.random.default_rng(seed).permutation(len(test_labels))[:len(labels)]
    report.add("real: held-out fonts", "glyphs", **score(test_images[pick], test_labels[pick]), nfe=0)

    pipe = DiTImagePipeline.from_pretrained(sims_model, device=device, precision=precision)
    pipe.set_progress_bar_config(disable=True)
    base = pipe.transformer

    def run(name, *, guidance=1.0, w=0.0, mode="guidance", n_steps=steps, dataset="glyphs", row_seed=seed, **extra):
        t0 = time.perf_counter()
        out = pipe(labels, guidance_scale=guidance, sims_guidance=w, sims_mode=mode, num_inference_steps=n_steps,
                   seed=row_seed, progress=False)
        seconds = (time.perf_counter() - t0) / len(labels)
        return report.add(name, dataset, **score(ink(out), out.labels), nfe=out.nfe, steps=n_steps, cfg=guidance,
                          w=w, s_per_image=round(seconds, 4), **extra)

    # 1. base, CFG, SIMS: one sampler (DDIM), the same seeds
    run("base")
    for k in range(1, noise_seeds + 1):  # how much FD moves with the seed alone: the scale of a real difference
        run(f"base, seed {seed + k}", row_seed=seed + k)
    run(f"base, 2x steps", n_steps=2 * steps)           # the cost of SIMS or CFG spent on steps instead
    run(f"base + CFG {cfg:g}", guidance=cfg)
    for w in sims_w:
        run(f"SIMS w={w:g}", w=w)
    for w in sims_cfg_w:
        run(f"SIMS w={w:g} + CFG {cfg:g}", guidance=cfg, w=w)
    for w in weight_w:
        run(f"SIMS weights w={w:g}", w=w, mode="weights")
    for w in weight_w[:1]:
        run(f"SIMS weights w={w:g} + CFG {cfg:g}", guidance=cfg, w=w, mode="weights")
    report.compare("base", ["fd"])

    # 2. the self-consuming loop: each generation fine-tunes the previous model on its own samples
    #    (plain: sampled without guidance; SIMS: sampled with SIMS guidance w=1 away from an auxiliary
    #    model fine-tuned on the same model's plain samples)
    loop_w = 1.0
    for chain in ("plain", "SIMS"):
        current = copy.deepcopy(base)
        for g in range(1, generations + 1):
            pipe.transformer, pipe.negative_transformer = current, None
            w = 0.0
            if chain == "SIMS":
                aux, _ = train_auxiliary(pipe, loop_size, loop_steps, num_inference_steps=steps, seed=seed + g,
                                         progress=False)
                pipe.negative_transformer, w = aux, loop_w
            dataset = pipe.synthetic_dataset(loop_size, steps, torch.Generator().manual_seed(seed + 100 + g),
                                             sims_guidance=w)
            with tempfile.TemporaryDirectory(prefix="sims_loop_") as tmp:
                recipe = pipe.finetune_recipe(dataset, TrainConfig(
                    output_dir=tmp, steps=loop_steps, batch_size=64, lr=1e-4, warmup_steps=0, ema_decay=None,
                    save_every=10**9, log_every=max(loop_steps // 5, 1), seed=seed + g, progress=False))
                train(recipe)
            current = recipe.model.eval()
            pipe.transformer, pipe.negative_transformer = current, None
            run(f"loop {chain}: generation {g}", dataset="self-consuming", generation=g)
    pipe.transformer = base
    report.note("FD, precision, recall and accuracy are measured with `glyph-classifier`, a CNN trained here on real "
                "glyphs of the training fonts (not Inception: not comparable with published FIDs); reference = "
                f"plain renders of the {len(score.real)} training glyphs; {len(labels)} generated images per row "
                f"({per_class} per class), DDIM, seed {seed}, sampling precision {pipe.precision.name}.")
    report.note(f"models: base = transformer/ of {sims_model} (= {model}); SIMS auxiliary = its "
                "negative_transformer/ (see its sims.json).")
    report.note(f"self-consuming loop: {generations} generations; each fine-tunes the previous model for {loop_steps} "
                f"steps on {loop_size} of its own samples (plain chain: no guidance; SIMS chain: SIMS w={loop_w:g} "
                "away from an auxiliary fine-tuned on that generation's plain samples); rows score each generation "
                "sampled without guidance.")



def compressed_quality(pipe, reference, cache: dict, quick: bool = False, per_class: int = 2, steps: int = 20,
                       cfg: float = 2.0, seed: int = 0) -> dict:
    """Entry point `genstudio.compress_evals` (generate): `per_class` images of each class with CFG
    `cfg`, DDIM `steps`, the same seed for every model: fd / accuracy in `glyph-classifier`'s space
    (trained here; not FID) and ssim_vs_fp, the mean SSIM of each image against what the
    full-precision `reference` draws with the same seed. `cache` keeps the scorer and the reference's images."""
    from genstudio.metrics import ssim
    if quick:
        per_class, steps = 1, 2
    labels = [c for c in range(pipe.transformer.num_classes) for _ in range(per_class)]

    def draw(p):
        p.set_progress_bar_config(disable=True)
        t0 = time.perf_counter()
        out = p(labels, guidance_scale=cfg, num_inference_steps=steps, seed=seed, progress=False)
        return ink(out), (time.perf_counter() - t0) / len(labels), out.nfe

    if "scorer" not in cache:
        cache["scorer"] = Scorer()
    key = (per_class, steps, cfg, seed)
    if key not in cache:
        cache[key] = draw(reference)[0]
    images, seconds, nfe = draw(pipe)
    scores = cache["scorer"](images, labels)
    same_seed = float(np.mean([ssim(a, b) for a, b in zip(images, cache[key])]))
    return {"fd": round(scores["fd"], 3), "accuracy": round(scores["accuracy"], 4), "ssim_vs_fp": round(same_seed, 4),
            "sec_per_image": round(seconds, 4), "nfe": nfe}


def bench_batch(report, quick: bool = False, jobs: int = 16, per_job: int = 8, steps: int = 25,
                processes=(1, 2), model: str = "dit-glyphs-S") -> None:
    """`genstudio bench batch`: `genstudio batch` throughput with 1 and N processes (accelerate
    launch --multi_gpu with no GPU visible: N CPU processes), on `jobs` generate jobs of
    `per_job` glyphs x `steps` DDIM steps each, every process with 1 thread."""
    import json
    import os
    import subprocess
    import sys
    processes = [int(p) for p in (processes.split(",") if isinstance(processes, str) else
                                  [processes] if isinstance(processes, int) else processes)]
    if quick:
        jobs, per_job, steps, processes = 2, 1, 2, [1]
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        job_file = os.path.join(tmp, "jobs.jsonl")
        with open(job_file, "w") as f:
            for i in range(jobs):
                f.write(json.dumps({"id": f"j{i}", "task": "generate", "model": model, "args": [[CLASSES[i % 62]]],
                                    "kwargs": {"num_images_per_class": per_job, "num_inference_steps": steps},
                                    "seed": i}) + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        for n in processes:
            out = os.path.join(tmp, f"out{n}")
            cli = ["-m", "genstudio.cli", "batch", job_file, "-o", out, "--device", "cpu"]
            cmd = [sys.executable, *cli] if n == 1 else \
                [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                 "--main_process_port", "29531", *cli]  # no GPU visible: N CPU processes (gloo)
            t0 = time.perf_counter()
            run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            rows = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))] \
                if run.returncode == 0 else []
            done = sum(r["status"] == "done" for r in rows)
            report.add(f"{n} process{'es' if n > 1 else ''}", "generate jobs", jobs=jobs, done=done,
                       seconds=round(seconds, 1), jobs_per_s=round(done / seconds, 3),
                       job_seconds_sum=round(sum(r["seconds"] for r in rows), 1),
                       error=None if run.returncode == 0 else run.stderr.strip().splitlines()[-1][:200])
    report.compare("1 process", ["jobs_per_s"])
    report.note(f"{jobs} jobs of {per_job} glyphs x {steps} DDIM steps (CFG 2) with {model}; wall time includes each "
                "process's start-up and model load; 1 torch thread per process; CPU processes via accelerate launch --multi_gpu with no GPU visible (gloo).")
