"""SIMS (Self-IMproving diffusion models with Synthetic data): negative guidance from a model of
the base model's own samples.

The procedure (`genstudio sims --base CKPT --synthetic-size N --steps K -o OUT`):
1. sample a synthetic set of N items from the base model, with its own sampler;
2. fine-tune a copy of the base denoiser on it for K steps: the auxiliary model, which learns
   where the base model's distribution sits (including its errors);
3. sample with s = (1 + w) s_base - w s_aux, which pushes samples away from the synthetic
   manifold and toward the real one (`genstudio.diffusion.guided_prediction`); or, in the weight-space
   variant, with one model theta = (1 + w) theta_base - w theta_aux (`merge_weights`).

The result is the base checkpoint folder plus `negative_transformer/` (the auxiliary model) and
`sims.json` (how it was made, the default w), loadable by name like any checkpoint.

A pipeline takes part by implementing two methods (the core knows no task):
    pipe.synthetic_dataset(num_items, num_inference_steps, generator, **options) -> torch Dataset
    pipe.finetune_recipe(dataset, train_config) -> genstudio.train.Recipe  (trains a copy of its denoiser)
"""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

SIMS_FILE = "sims.json"
NEGATIVE = "negative_transformer"


def merge_weights(base: torch.nn.Module, aux: torch.nn.Module, w: float) -> torch.nn.Module:
    """The weight-space variant: a copy of `base` with theta = (1 + w) theta_base - w theta_aux."""
    merged = copy.deepcopy(base)
    aux_state = aux.state_dict()
    with torch.no_grad():
        for name, p in merged.state_dict().items():
            if p.is_floating_point():
                p.copy_((1 + w) * p.float() - w * aux_state[name].float())
    return merged


def read_sims(folder: str | Path) -> dict:
    """A SIMS checkpoint's record ({} for an ordinary checkpoint)."""
    path = Path(folder) / SIMS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def train_auxiliary(pipe, synthetic_size: int, steps: int, *, num_inference_steps: int = 25, seed: int = 0,
                    batch_size: int = 64, lr: float = 1e-4, work_dir: str | Path | None = None,
                    progress: bool = True, **synthetic_options) -> tuple[torch.nn.Module, dict]:
    """Steps 1-2: sample `synthetic_size` items from `pipe` and fine-tune a copy of its denoiser
    on them for `steps` steps. Returns (auxiliary model in eval mode, a record of what was done)."""
    from .train import TrainConfig, train
    if synthetic_size < 1 or steps < 1:
        raise ValueError(f"synthetic_size and steps must be >= 1 (got {synthetic_size}, {steps})")
    t0 = time.time()
    generator = torch.Generator().manual_seed(seed)
    dataset = pipe.synthetic_dataset(synthetic_size, num_inference_steps, generator, **synthetic_options)
    sampled = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="sims_", dir=work_dir) as tmp:
        config = TrainConfig(output_dir=tmp, steps=steps, batch_size=min(batch_size, len(dataset)), lr=lr,
                             warmup_steps=0, ema_decay=None, save_every=10**9, log_every=max(steps // 5, 1),
                             seed=seed, progress=progress)
        recipe = pipe.finetune_recipe(dataset, config)
        train(recipe)
        aux = recipe.model.eval()
    record = {"synthetic_size": synthetic_size, "finetune_steps": steps, "sampling_steps": num_inference_steps,
              "lr": lr, "batch_size": config.batch_size, "seed": seed, "synthetic_options": synthetic_options,
              "sample_seconds": round(sampled, 1), "finetune_seconds": round(time.time() - t0 - sampled, 1)}
    return aux, record


def write_sims_checkpoint(base_folder: str | Path, aux: torch.nn.Module, to: str | Path, record: dict,
                          guidance: float, dtype: torch.dtype = torch.float16, base_name: str | None = None) -> Path:
    """Step 3's checkpoint: the base folder + negative_transformer/ + sims.json, written to a
    temporary folder beside `to` and renamed into place (never half a checkpoint)."""
    from .export import save_safetensors, write_folder_atomically

    def write(tmp: Path) -> None:
        shutil.copytree(base_folder, tmp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(NEGATIVE, SIMS_FILE, "README.md"))  # the base's card is not ours
        save_safetensors(copy.deepcopy(aux).to(dtype), tmp / NEGATIVE)
        (tmp / SIMS_FILE).write_text(json.dumps({"method": "SIMS", "guidance": guidance,
                                                 "base": base_name or str(base_folder), **record}, indent=2))

    return write_folder_atomically(to, write)
