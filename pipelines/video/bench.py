"""`genstudio bench video`: VDT against the simple baselines people actually use.

Datasets: held-out procedural clips (balls, digits; seeds disjoint from training and from the
recipe's evaluation) and, when the `clips` source is built (`genstudio data prepare clips`),
real clips from Debian opencv-doc, which the model never trains on.

Tasks and baselines:
* predict: the first `num_known` frames are given, the rest generated. Baselines: copy the last
  given frame; linear extrapolation of the last two given frames.
* interpolate: 4 evenly spaced keyframes given (first and last included). Baseline: linear
  blending between the neighbouring keyframes.

Metrics per generated frame (pixels in [0, 1]; given frames are excluded, being exact by
construction): MSE, PSNR (capped at 60 dB per frame), SSIM; averaged over frames and clips.
Seconds per clip (batched sampling, divided by the batch) and NFE (model calls per clip).
Ours runs at several step counts with DPM-Solver++ and DDIM to show what few-step samplers keep.

The model: `model=` or $GENSTUDIO_BENCH_VIDEO_MODEL (default: the shipped vdt-physics-M); a
missing checkpoint skips "ours" with a note and still measures the baselines.
"""
from __future__ import annotations

import os
import time

import numpy as np

from genstudio.bench import training_steps

from . import DEFAULT_MODEL
from .data import BENCH_SEED, clip_batch, square_resize

MODEL_ENV = "GENSTUDIO_BENCH_VIDEO_MODEL"
PSNR_CAP = 60.0


# ---- Baselines (uint8 clips (T, H, W, 3); `known` = sorted indices of the given frames) ----

def copy_last_frame(clip: np.ndarray, known: list[int]) -> np.ndarray:
    """Each frame repeats the latest given frame before it (the first given one before that)."""
    out = clip.copy()
    for t in range(len(clip)):
        if t not in known:
            before = [k for k in known if k < t]
            out[t] = clip[before[-1] if before else known[0]]
    return out


def linear_extrapolation(clip: np.ndarray, known: list[int]) -> np.ndarray:
    """Constant per-pixel velocity from the last two given frames (copy when only one is given)."""
    if len(known) < 2:
        return copy_last_frame(clip, known)
    a, b = known[-2], known[-1]
    x = clip.astype(np.float64)
    velocity = (x[b] - x[a]) / (b - a)
    out = x.copy()
    for t in range(len(clip)):
        if t not in known:
            out[t] = x[b] + (t - b) * velocity
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def linear_blend(clip: np.ndarray, known: list[int]) -> np.ndarray:
    """Cross-fade between the given frames around each missing one; copy the nearest outside them."""
    x = clip.astype(np.float64)
    out = x.copy()
    for t in range(len(clip)):
        if t in known:
            continue
        before, after = [k for k in known if k < t], [k for k in known if k > t]
        if before and after:
            a, b = before[-1], after[0]
            w = (t - a) / (b - a)
            out[t] = (1 - w) * x[a] + w * x[b]
        else:
            out[t] = x[before[-1] if before else after[0]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ---- Measuring ----

def frame_scores(result: np.ndarray, target: np.ndarray, frames: list[int]) -> dict:
    """Mean MSE / PSNR / SSIM over `frames` of one clip."""
    from genstudio.metrics import mse, psnr, ssim
    rows = [(mse(result[t], target[t]), min(psnr(result[t], target[t]), PSNR_CAP), ssim(result[t], target[t]))
            for t in frames]
    m = np.mean(rows, axis=0)
    return {"mse": float(m[0]), "psnr": float(m[1]), "ssim": float(m[2])}


def summarise(scores: list[dict], seconds: float, nfe: int) -> dict:
    return {"n": len(scores), "mse": round(float(np.mean([s["mse"] for s in scores])), 5),
            "psnr": round(float(np.mean([s["psnr"] for s in scores])), 2),
            "ssim": round(float(np.mean([s["ssim"] for s in scores])), 4),
            "sec_per_clip": round(seconds, 5), "nfe": nfe}


def known_frames(task: str, frames: int, num_known: int) -> list[int]:
    from .vdt import interpolation_frames
    return list(range(num_known)) if task == "predict" else interpolation_frames(frames, 4)


def run_ours(model, clips: np.ndarray, known: list[int], steps: int, scheduler: str, batch: int = 8,
             seed: int = 0) -> tuple[np.ndarray, float, int]:
    """Sample the non-given frames of every clip; returns (uint8 clips, seconds per clip, NFE per clip)."""
    import torch
    from .data import to_uint8_video, uint8_to_video
    from .sampling import sample_clips
    T, H, W = clips.shape[1:4]
    outputs, seconds, nfe = [], 0.0, 0
    for start in range(0, len(clips), batch):
        chunk = clips[start:start + batch]
        x0 = torch.stack([uint8_to_video(c) for c in chunk])
        generate = torch.ones(len(chunk), T, 1, H, W, dtype=torch.bool)
        generate[:, known] = False
        t0 = time.perf_counter()
        x, nfe = sample_clips(model, torch.where(generate, 0.0, x0), generate, steps, scheduler,
                              torch.Generator().manual_seed(seed + start), progress=False)
        seconds += time.perf_counter() - t0
        outputs += [to_uint8_video(c) for c in x]
    return np.stack(outputs), seconds / len(clips), nfe


def load_datasets(count: int, frames: int, size: int, report) -> dict[str, np.ndarray]:
    """{name: uint8 (N, T, H, W, 3)}: held-out balls and digits, and the real clips when built."""
    from genstudio.data import DataError
    from .data import load_real_clips
    sets = {"balls": clip_batch(BENCH_SEED, count, frames, size, kinds=("balls",)),
            "digits": clip_batch(BENCH_SEED + 1, count, frames, size, kinds=("digits",))}
    try:
        real = [clip for _, clip in load_real_clips(max_clips=count)]
        real = [c[:frames] for c in real if len(c) >= frames]
        if real:
            sets["opencv-clips"] = np.stack([np.stack([square_resize(f, size) for f in c]) for c in real])
        else:
            report.note(f"opencv-clips: the built clips source has no clip of {frames} frames: skipped")
    except DataError:
        report.note("opencv-clips: the real-clip source is not built here (`genstudio data prepare clips`): skipped")
    return sets


def _model_note(model, name: str) -> str:
    from genstudio.hub import resolve
    folder = resolve(name)
    steps = training_steps(folder)
    c = model.config
    params = sum(p.numel() for p in model.parameters())
    return (f"ours = VDT checkpoint {name!r} ({folder}): {params / 1e6:.2f}M parameters, depth {c.depth}, "
            f"width {c.hidden_size}, patch {c.patch_size}, {c.num_frames}x{c.sample_size}x{c.sample_size} clips, "
            f"{c.prediction_type}; {f'{steps} training steps' if steps else 'training steps: see its model card'}.")


# ---- The benchmark ----

def bench_video(report, quick: bool = False, model: str | None = None, clips: int = 24, steps=(10, 25, 50),
                schedulers=("dpm", "ddim"), num_known: int = 4, batch: int = 8, seed: int = 0,
                device: str = "auto") -> None:
    """Ours vs copy-last / linear extrapolation (predict) and linear blending (interpolate); see the module doc."""
    if quick:
        clips, steps, schedulers = 2, (2,), ("dpm",)
    steps = [int(s) for s in (steps.split(",") if isinstance(steps, str) else
                              [steps] if isinstance(steps, int) else steps)]  # `-o steps=10` arrives as an int
    schedulers = schedulers.split(",") if isinstance(schedulers, str) else tuple(schedulers)
    name = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    vdt, frames, size = None, 16, 32
    try:
        from .pipeline import VDTPipeline
        vdt = VDTPipeline.from_pretrained(name, device=device).transformer
        frames, size = vdt.config.num_frames, vdt.config.sample_size
        report.note(_model_note(vdt, name))
    except (FileNotFoundError, ValueError, ImportError) as e:
        report.note(f"ours skipped: {e}")
    if not 1 <= num_known < frames:
        raise ValueError(f"num_known must be in [1, {frames - 1}], got {num_known}")

    baselines = {"predict": {"copy-last-frame": copy_last_frame, "linear-extrapolation": linear_extrapolation},
                 "interpolate": {"linear-blend": linear_blend}}
    for dataset, data in load_datasets(clips, frames, size, report).items():
        for task, methods in baselines.items():
            known = known_frames(task, frames, num_known)
            generated = [t for t in range(frames) if t not in known]
            where = f"{dataset}/{task}"
            for method, fn in methods.items():
                t0 = time.perf_counter()
                results = [fn(c, known) for c in data]
                seconds = (time.perf_counter() - t0) / len(data)
                report.add(method, where, **summarise([frame_scores(r, c, generated) for r, c in zip(results, data)],
                                                      seconds, 0))
            if vdt is None:
                continue
            for scheduler in schedulers:
                for n_steps in steps:
                    results, seconds, nfe = run_ours(vdt, data, known, n_steps, scheduler, batch, seed)
                    scores = [frame_scores(r, c, generated) for r, c in zip(results, data)]
                    report.add(f"ours-{scheduler}-{n_steps}", where, **summarise(scores, seconds, nfe))
    report.compare("copy-last-frame", ["mse"])  # ratios < 1: better than the baseline of the task
    report.compare("linear-blend", ["mse"])
    report.note(f"predict: first {num_known} of {frames} frames given; interpolate: frames "
                f"{known_frames('interpolate', frames, num_known)} given. Scores over generated frames only, "
                f"pixels in [0, 1], {size}x{size} RGB; PSNR capped at {PSNR_CAP:g} dB per frame. Procedural clips: "
                f"seeds {BENCH_SEED} (balls) and {BENCH_SEED + 1} (digits), never used in training. ours: seed "
                f"{seed}, batches of {batch} clips; sec_per_clip = batch time / batch size; nfe = model calls per "
                "clip (DPM-Solver++ 2M and DDIM: one per step).")


# ---- `genstudio bench compress`: a compressed VDT against the full-precision one ----

def _generate_clips(model, count: int, steps: int, seed: int) -> np.ndarray:
    """`count` clips generated from pure noise (nothing given), uint8 (N, T, H, W, 3)."""
    import torch
    from .data import to_uint8_video
    from .sampling import sample_clips
    T, C, H, W = model.sample_shape
    x, _ = sample_clips(model, torch.zeros(count, T, C, H, W), torch.ones(count, T, 1, H, W, dtype=torch.bool), steps,
                        "dpm", torch.Generator().manual_seed(seed), progress=False)
    return np.stack([to_uint8_video(c) for c in x])


def compressed_quality(pipe, reference, cache: dict, quick: bool = False, clips: int = 4, steps: int = 10,
                       num_known: int = 4, seed: int = 0) -> dict:
    """Entry point `genstudio.compress_evals` (video). `clips` held-out balls and `clips` digits clips
    (the `bench video` sets), predict task (first `num_known` frames given), DPM-Solver++ `steps`:
    mse / ssim against the true frames; psnr_vs_fp / ssim_vs_fp against what the full-precision
    `reference` makes of the same clips with the same seed; gen_psnr_vs_fp / gen_ssim_vs_fp for
    `clips` clips generated from pure noise with the same seed. `cache` keeps the reference's outputs."""
    if quick:
        clips, steps = 1, 2
    model = pipe.transformer
    T, _, size, _ = model.sample_shape
    num_known = min(num_known, max(1, T // 2))  # a short (test) model still generates frames
    data = np.concatenate([clip_batch(BENCH_SEED, clips, T, size, kinds=("balls",)),
                           clip_batch(BENCH_SEED + 1, clips, T, size, kinds=("digits",))])
    known = known_frames("predict", T, num_known)
    generated = [t for t in range(T) if t not in known]
    key = (clips, steps, num_known, seed)
    if key not in cache:
        cache[key] = (run_ours(reference.transformer, data, known, steps, "dpm", len(data), seed)[0],
                      _generate_clips(reference.transformer, clips, steps, seed))
    reference_predicted, reference_generated = cache[key]
    predicted, seconds, nfe = run_ours(model, data, known, steps, "dpm", len(data), seed)
    generated_clips = _generate_clips(model, clips, steps, seed)
    truth = [frame_scores(p, c, generated) for p, c in zip(predicted, data)]
    same_seed = [frame_scores(p, r, generated) for p, r in zip(predicted, reference_predicted)]
    from_noise = [frame_scores(g, r, list(range(T))) for g, r in zip(generated_clips, reference_generated)]

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))
    return {"mse": round(mean(truth, "mse"), 5), "ssim": round(mean(truth, "ssim"), 4),
            "psnr_vs_fp": round(mean(same_seed, "psnr"), 2), "ssim_vs_fp": round(mean(same_seed, "ssim"), 4),
            "gen_psnr_vs_fp": round(mean(from_noise, "psnr"), 2), "gen_ssim_vs_fp": round(mean(from_noise, "ssim"), 4),
            "sec_per_clip": round(seconds, 4), "nfe": nfe}
