"""Benchmarks of the shared core: `genstudio bench vq` and `genstudio bench dit`."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch


# ---------------------------------------------------------------- SimVQ vs. vanilla VQ
def bench_vq(report, quick: bool = False, steps: int = 1200, sizes=(1024, 8192), runs_dir: str | None = None) -> None:
    """Same tokenizer, same data, same steps: only the quantiser differs (vq, simvq; vq_ema at the largest size).

    Trained on photo crops (train split), scored on 512 fixed crops of the held-out test photos.
    """
    from .data import load_manifest, prepare
    from .data.photos import PhotoCropDataset
    from .tokenizer import evaluate_tokenizer, recipe
    from .train import train
    if quick:
        steps, sizes = 20, (64,)
    model_kw = dict(channels=96, num_res_blocks=2) if not quick else dict(preset="tiny")
    prepare("photos", quiet=True)
    test = PhotoCropDataset(load_manifest("photos", "test"), size=64, length=64 if quick else 512,
                            deterministic=True, seed=7)
    root = Path(runs_dir or tempfile.mkdtemp(prefix="bench_vq_"))
    for size in sizes:
        kinds = ("vq", "simvq") + (("vq_ema",) if size == max(sizes) and not quick else ())
        for kind in kinds:
            out = root / f"{kind}-{size}"
            cfg = dict(output_dir=str(out), steps=steps, batch_size=32, lr=2e-4, save_every=10**9,
                       log_every=100, quantizer=kind, codebook_size=size, sample_size=64, seed=0,
                       progress=False, eval_items=64, **model_kw)
            t = time.time()
            r = recipe(cfg)
            r.eval_fn = None
            summary = train(r)
            seconds = time.time() - t
            model = r.model.eval()
            m = evaluate_tokenizer(model, test)
            report.add(kind, f"K={size}", utilization=round(m["utilization"], 4), perplexity=round(m["perplexity"], 1),
                       psnr=round(m["psnr"], 2), ssim=round(m["ssim"], 4), train_loss=round(summary["loss_ema"], 4),
                       steps=steps, train_s=round(seconds, 1), precision=summary["precision"])
    report.compare("vq", ["utilization", "perplexity", "psnr", "ssim"])
    report.note(f"Tokenizer: patch-4 conv encoder/decoder (channels 96, 2 res blocks), 64x64 photo crops "
                f"(skimage, sklearn, Debian wallpapers; train split), {steps} steps x batch 32, AdamW 2e-4, "
                "precision per row (the trainer's auto policy); "
                "codebook dim 32. Scored on 512 fixed crops of the test-split photos. Utilisation = share of codes "
                "used at least once on those crops (131,072 tokens).")


# ---------------------------------------------------------------- DiT training speed: fp32 vs the policy's precision
def _dit_train_flops(model, batch: int, tokens: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3x forward) for a DiT."""
    c = model.config
    d, layers = c.hidden_size, c.depth
    per_token_layer = 24 * d * d * (1 + (c.mlp_ratio - 4) / 6) + 4 * tokens * d  # qkv+proj+mlp, attention
    patch = 2 * tokens * (c.in_channels * c.patch_size**2) * d * 2  # embed + final layer
    return 3 * batch * (layers * tokens * per_token_layer + patch)


def bench_dit(report, quick: bool = False, steps: int = 10, bf16: bool = False) -> None:
    """Train a DiT-S-shaped model in fp32 and in the precision policy's choice; steps/s, speed-up, MFU;
    few-step sampling. Where the policy picks fp32 (bf16 emulated) the bf16 row is skipped: `bf16=true` adds it."""
    from .bench import matmul_peak_flops
    from .diffusion import diffusion_loss, make_scheduler, sample
    from .dit import DiT
    from .precision import autocast, resolve_precision
    cfg = dict(input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=6, num_heads=6,
               num_classes=10, learn_sigma=False)
    batch = 32
    if quick:
        cfg.update(hidden_size=64, depth=2, num_heads=2, input_size=8)
        steps, batch = 2, 4
    tokens = (cfg["input_size"] // cfg["patch_size"]) ** 2
    auto = resolve_precision("cpu", "auto")
    report.note(f"precision policy on this CPU: {auto.name} ({auto.reason}).")
    precisions = ["fp32"] + ([auto.name] if auto.name != "fp32" else []) \
        + (["bf16"] if _truthy(bf16) and auto.name != "bf16" else [])
    # MFU is measured against the matmul peak of the precision each row runs in.
    peaks = {name: matmul_peak_flops({"fp32": "float32", "bf16": "bfloat16"}[name]) for name in precisions}
    report.add("matmul 2048^3", "peak", **{f"{name}_gflops": round(peak / 1e9, 1) for name, peak in peaks.items()})
    sched = make_scheduler("ddpm")
    rates = {}
    for name in precisions:
        precision = resolve_precision("cpu", name)
        torch.manual_seed(0)
        model = DiT(**cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x0 = torch.randn(batch, 4, cfg["input_size"], cfg["input_size"])
        y = torch.randint(0, 10, (batch,))
        times = []
        for i in range(steps + 2):
            t = time.perf_counter()
            with autocast("cpu", precision):
                loss = diffusion_loss(model, x0, sched, y=y)
            loss.backward()
            opt.step(); opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        step_s = sorted(times[2:])[len(times[2:]) // 2]  # median after 2 warm-up steps
        flops = _dit_train_flops(model, batch, tokens)
        rates[name] = 1 / step_s
        report.add(f"DiT train {name}", f"d{cfg['hidden_size']}xL{cfg['depth']} T={tokens} B={batch}",
                   precision=name, steps_per_s=round(1 / step_s, 3), sec_per_step=round(step_s, 3),
                   model_tflops=round(flops / step_s / 1e12, 3), mfu=round(flops / step_s / peaks[name], 4))
    if "bf16" in rates:
        report.note(f"bf16 autocast speed-up over fp32 for DiT training: {rates['bf16'] / rates['fp32']:.2f}x.")
    report.note("MFU = model FLOPs (fwd+bwd = 3x fwd, linear layers + attention) / the measured 2048^3 matmul peak "
                "of the row's own precision (fp32 peak for the fp32 row, bf16 peak for the bf16 row).")
    # Few-step sampling: what DDIM / DPM-Solver keep vs. many DDPM steps (speed only; quality needs a trained model).
    model = DiT(**cfg).eval()
    for name, n in (("ddpm", 20 if quick else 250), ("ddim", 5 if quick else 50), ("dpm", 3 if quick else 20)):
        s = make_scheduler(name)
        t = time.perf_counter()
        with torch.inference_mode(), autocast("cpu", auto):
            sample(model, (8, 4, cfg["input_size"], cfg["input_size"]), s, num_inference_steps=n,
                   generator=torch.Generator().manual_seed(0), progress=False, y=torch.zeros(8, dtype=torch.long))
        report.add(f"sample {name}", f"batch 8 {auto.name}", nfe=n, seconds=round(time.perf_counter() - t, 2))


def _truthy(value) -> bool:
    """A benchmark option from `--option KEY=VALUE` (JSON-parsed: true/1, or a string such as "yes")."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")
