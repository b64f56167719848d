"""`genstudio bench text2svg`: SVGFusion on held-out prompts against what a user would do instead.

Prompts are the labels of test-split icons ("rocket", "arrow left"): the split is by label, so no
model saw these words paired with a drawing. In one run, with the same prompts and seeds:

- `svgfusion`: VP-VAE + VS-DiT (the shipped checkpoint; `-o model=A,B` puts several side by side);
- `svgfusion-raw`: the ablation without the VP-VAE (the same DiT trained on raw row features);
- `icon search`: what a user does instead: the training icons whose words (caption) are nearest
  to the prompt in MiniLM space (top-k as the k "samples");
- `search + svgfusion edit S` (`-o edit=0.2,0.3`): each search result redrawn toward the prompt by the
  VS-DiT from its latent noised to strength S (SDEdit, `init_svg=`): retrieval, then variation;
- `test icons`: the real held-out icons of these prompts (not a method: the ceiling).

Metrics, per method (samples = prompts x samples per prompt):
- valid: share of samples that are a valid SVG drawing something;
- align: cosine similarity of the render with its prompt in IconCLIP space; `align_shuffled` the
  same against a random other test prompt (the random-prompt baseline); `R@1`/`R@5`: how often the
  prompt ranks first / in the top 5 of all test prompts for the render;
- FD: Fréchet distance to the renders of all test icons in IconCLIP's image-feature space;
- novelty: 1 - cosine similarity to the nearest training icon (IconCLIP image space);
- diversity: mean 1 - cosine similarity between samples of one prompt;
- paths, commands per SVG; seconds per SVG (wall clock, this machine).
The run also commits `text2svg-gallery.png`: for the first prompts, the held-out icon, the search
result and each model's samples at the last guidance scale, so that anyone can judge by eye.
IconCLIP (`text2svg-clip`) is a small contrastive model trained here on the training split: these
are NOT CLIP scores or FID and compare only with each other.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from genstudio.formats.svg import SVGError, rasterize_svg, svg_stats

from .clip import embed_images, embed_texts, load_clip
from .data import load_items, render, train_sets
from .pipeline import SVGFusionPipeline
from .search import IconSearch

RENDER = 64  # IconCLIP's input size
GALLERY_PROMPTS, CELL, LABEL_WIDTH = 12, 64, 200


def _weights_digest(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for v in module.state_dict().values():
        h.update(v.detach().cpu().float().numpy().tobytes())
    return h.hexdigest()


def _to_input(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images).astype(np.float32) / 127.5 - 1.0)
    return x.permute(0, 3, 1, 2).contiguous()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-8)


def _prompts(test: list[dict], n: int) -> tuple[list[str], dict[str, list[dict]]]:
    by_label: dict[str, list[dict]] = {}
    for it in test:
        by_label.setdefault(it["label"], []).append(it)
    labels = sorted(by_label)
    pick = np.random.default_rng(0).permutation(len(labels))[:n]
    chosen = [labels[i] for i in sorted(pick)]
    return chosen, {label: by_label[label] for label in chosen}


class Scorer:
    """IconCLIP features of the test icons and the training icons, and the metrics of a method."""

    def __init__(self, clip: str, prompts: list[str], test: list[dict], train: list[dict]):
        from genstudio.hub import resolve
        self.model = load_clip(resolve(clip))
        self.prompts = prompts
        self.text = _unit(embed_texts(self.model, prompts))
        self.real = embed_images(self.model, torch.stack([render(it["matrix"], RENDER) for it in test]))
        self.train = _unit(embed_images(self.model, torch.stack([render(it["matrix"], RENDER) for it in train])))

    def __call__(self, svgs: list[str | None], prompt_index: list[int], seconds: float) -> dict:
        from genstudio.metrics import frechet_distance
        blank = np.full((RENDER, RENDER, 3), 255, np.uint8)
        renders = [rasterize_svg(s, RENDER) if s is not None else blank for s in svgs]
        feats = _unit(embed_images(self.model, _to_input(renders)))
        idx = np.asarray(prompt_index)
        sims = feats @ self.text.T                                   # (samples, prompts)
        own = sims[np.arange(len(idx)), idx]
        rng = np.random.default_rng(1)
        other = (idx + rng.integers(1, len(self.prompts), len(idx))) % len(self.prompts)
        rank = (sims > own[:, None]).sum(1)                          # 0 = the own prompt ranks first
        novelty = 1 - (feats @ self.train.T).max(1)
        diversity = []
        for p in np.unique(idx):
            f = feats[idx == p]
            if len(f) > 1:
                s = f @ f.T
                diversity.append(float((1 - s[~np.eye(len(f), dtype=bool)]).mean()))
        stats = [svg_stats(s) for s in svgs if s is not None]
        valid = [s is not None for s in svgs]
        return {"valid": float(np.mean(valid)), "align": float(own.mean()),
                "align_shuffled": float(sims[np.arange(len(idx)), other].mean()),
                "R@1": float((rank == 0).mean()), "R@5": float((rank < 5).mean()),
                "FD": frechet_distance(self.real, feats) if len(feats) > 2 else float("nan"),
                "novelty": float(novelty.mean()), "diversity": float(np.mean(diversity)) if diversity else 0.0,
                "paths": float(np.mean([s["paths"] for s in stats])) if stats else 0.0,
                "commands": float(np.mean([s["commands"] for s in stats])) if stats else 0.0,
                "s_per_svg": seconds / max(len(svgs), 1)}


def _generate(pipe: SVGFusionPipeline, prompts: list[str], samples: int, steps: int, guidance: float,
              seed: int, candidates: int = 1) -> tuple[list, list[int], float]:
    svgs, index = [], []
    t0 = time.perf_counter()
    for k, prompt in enumerate(prompts):
        out = pipe(prompt, num_samples=samples, guidance_scale=guidance, num_inference_steps=steps,
                   seed=seed + k, progress=False, candidates=candidates)
        svgs += out.svgs
        index += [k] * samples
    return svgs, index, time.perf_counter() - t0


def _edit(pipe: SVGFusionPipeline, prompts: list[str], found: list[str], samples: int, steps: int, guidance: float,
          seed: int, strength: float) -> tuple[list, list[int], float]:
    """Each prompt's k-th search result redrawn toward the prompt (SDEdit at `strength`)."""
    svgs, index = [], []
    t0 = time.perf_counter()
    for k, prompt in enumerate(prompts):
        out = pipe([prompt] * samples, num_samples=1, guidance_scale=guidance, num_inference_steps=steps,
                   seed=seed + k, progress=False, init_svg=found[k * samples:(k + 1) * samples], strength=strength)
        svgs += out.svgs
        index += [k] * samples
    return svgs, index, time.perf_counter() - t0


def _search(prompts: list[str], train: list[dict], samples: int) -> tuple[list, list[int], float]:
    """The nearest training icons by MiniLM similarity of the prompt to each icon's caption (`IconSearch`)."""
    search = IconSearch(train)
    t0 = time.perf_counter()
    found = search.top(prompts, samples)
    svgs = [search.read(it) for row in found for it in row]
    index = [k for k in range(len(prompts)) for _ in range(samples)]
    return svgs, index, time.perf_counter() - t0


def gallery(prompts: list[str], columns: list[tuple[str, list, list[int], int]]):
    """A contact sheet: one row per prompt (its text, then per column up to `n` renders of that prompt's SVGs);
    columns are (title, svgs, prompt index of each svg, n). None / unrenderable SVGs are blank cells."""
    from PIL import Image, ImageDraw
    width = LABEL_WIDTH + sum(n for *_, n in columns) * CELL + 4 * len(columns)
    sheet = Image.new("RGB", (width, CELL // 2 + len(prompts) * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    x = LABEL_WIDTH
    for title, svgs, index, n in columns:
        draw.text((x + 2, 4), title[:(n * CELL) // 6], fill="black")
        for k in range(len(prompts)):
            mine = [svg for svg, i in zip(svgs, index) if i == k][:n]
            for j, svg in enumerate(mine):
                try:
                    cell = Image.fromarray(rasterize_svg(svg, CELL)) if svg else None
                except SVGError:  # a sample that does not render stays a blank cell
                    cell = None
                if cell is not None:
                    sheet.paste(cell, (x + j * CELL, CELL // 2 + k * CELL))
        x += n * CELL + 4
        draw.line([(x - 2, 0), (x - 2, sheet.height)], fill=(200, 200, 200))
    for k, prompt in enumerate(prompts):
        draw.text((4, CELL // 2 + k * CELL + CELL // 2 - 6), prompt[:LABEL_WIDTH // 6], fill="black")
    return sheet


@torch.no_grad()
def vae_reconstruction(pipe: SVGFusionPipeline, items: list[dict]) -> dict:
    """How well the VP-VAE's latent (posterior mean) gives back held-out icons: the ceiling of any sample."""
    from genstudio.formats import svg_matrix as sm
    from genstudio.metrics import ssim
    from .data import pad
    vae, rows = pipe.vae, pipe.vae.config.max_rows
    items = [it for it in items if len(it["matrix"]) <= rows]
    matrix = torch.from_numpy(np.stack([pad(it["matrix"], rows) for it in items]))
    image = torch.stack([render(it["matrix"], vae.config.image_size) for it in items])
    mu, _ = vae.encode(matrix.to(vae.dtype), image.to(vae.dtype))
    decoded = vae.decode_matrix(mu).numpy()
    scores, same_cmds = [], []
    for it, m in zip(items, decoded):
        svg = pipe.to_svg(m)
        a = rasterize_svg(open(it["path"], encoding="utf-8").read(), RENDER)
        b = rasterize_svg(svg, RENDER) if svg else np.full_like(a, 255)
        scores.append(ssim(a, b))
        n = len(it["matrix"])
        same_cmds.append(bool((np.round(m[:n, sm.CMD]) == it["matrix"][:, sm.CMD]).all() and m[n:n + 1, sm.ELEM].round().sum() == 0))
    return {"render_ssim": float(np.mean(scores)), "exact_commands": float(np.mean(same_cmds))}


def bench_text2svg(report, quick: bool = False, model: str = "svgfusion-icons-S", raw_model: str | None = None,
                   clip: str = "text2svg-clip", prompts: int = 64, samples: int = 4, steps: int = 50,
                   guidance="1,3", seed: int = 0, train_bank: int = 8000, split: str = "test",
                   search_sets: str = "", candidates: str = "1", edit: str = "") -> None:
    """See the module docstring. `raw_model`: the ablation's checkpoint (skipped when None). `split="val"`: tune
    on val prompts (the test prompts stay for the committed table). `search_sets` (e.g. "+iconify", as the DiT's
    train_sets): one more icon-search row over that larger training library (what a user with it would do).
    `candidates` (e.g. "1,4"): rows that draw that many times more samples and keep the ones the VS-DiT itself
    rates most about the prompt (SVGFusionPipeline.self_scores). `edit` (e.g. "0.2,0.3"): rows that redraw each
    icon-search result toward its prompt at these SDEdit strengths (first model, last guidance scale)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be val or test, not {split!r}")
    if quick:
        prompts, samples, steps, train_bank = 6, 2, 5, 300
    guidances = [float(g) for g in (guidance.split(",") if isinstance(guidance, str) else
                                    (guidance if isinstance(guidance, (list, tuple)) else [guidance]))]
    test = load_items(split)
    train = load_items("train")
    chosen, by_label = _prompts(test, prompts)
    bank = [train[i] for i in np.random.default_rng(0).permutation(len(train))[:train_bank]]
    scorer = Scorer(clip, chosen, [it for label in chosen for it in by_label[label]], bank)
    dataset = f"{split} prompts ({len(chosen)})"

    # The real icons of each prompt (up to `samples`): the ceiling.
    real = [(k, it) for k, label in enumerate(chosen) for it in by_label[label][:samples]]
    real_svgs = [open(it["path"], encoding="utf-8").read() for _, it in real]
    report.add(f"{split} icons (ceiling)", dataset, **scorer(real_svgs, [k for k, _ in real], 0.0))
    svgs, index, seconds = _search(chosen, bank, samples)
    found = svgs
    report.add("icon search (MiniLM)", dataset, **scorer(svgs, index, seconds))
    if search_sets:
        library = load_items("train", sets=train_sets(search_sets))
        wide = [library[i] for i in np.random.default_rng(0).permutation(len(library))[:train_bank]]
        report.add(f"icon search (MiniLM, {search_sets})", dataset, **scorer(*_search(chosen, wide, samples)))
    columns = [("held-out", real_svgs, [k for k, _ in real], 1), ("search", svgs, index, 1)]
    models = [m for m in str(model).split(",") if m]  # several: candidates side by side, same prompts and seeds
    named = [("svgfusion" if len(models) == 1 else f"svgfusion {Path(m).name}", m) for m in models]
    vae_done = set()
    for name, path in named + [("svgfusion-raw", raw_model)]:
        if path is None:
            continue
        pipe = SVGFusionPipeline.from_pretrained(path, device="cpu")
        vae_key = None if pipe.vae is None else _weights_digest(pipe.vae)
        if vae_key is not None and vae_key not in vae_done:  # one row per distinct VP-VAE
            vae_done.add(vae_key)
            report.add("VP-VAE reconstruction", f"{split} icons ({min(len(test), 256)})",
                       **vae_reconstruction(pipe, test[:256]))
        for g in guidances:
            for c in [int(c) for c in str(candidates).split(",")]:
                label = f"{name} cfg{g:g}" + (f" best-of-{c}" if c > 1 else "")
                svgs, index, seconds = _generate(pipe, chosen, samples, steps, g, seed, c)
                report.add(label, dataset, **scorer(svgs, index, seconds))
        columns.append((label, svgs, index, samples))
        for strength in [float(v) for v in str(edit).split(",") if v] if path == models[0] else []:
            label = f"search + {name} edit {strength:g} cfg{guidances[-1]:g}"
            svgs, index, seconds = _edit(pipe, chosen, found, samples, steps, guidances[-1], seed, strength)
            report.add(label, dataset, **scorer(svgs, index, seconds))
            columns.append((label, svgs, index, samples))
    report.figure("gallery", gallery(chosen[:GALLERY_PROMPTS], columns),
                  f"Gallery: the first {min(GALLERY_PROMPTS, len(chosen))} held-out prompts; per row the held-out icon, the icon "
                  "search's first result and each model's samples (same seeds as the table, last guidance scale).")
    report.note("IconCLIP (`text2svg-clip`, trained here on the training split) is the feature space of align, "
                "R@k, FD, novelty and diversity: these are NOT CLIP scores or FID.")
    report.note(f"{len(chosen)} held-out prompts (labels of {split}-split icons; the split is by label), {samples} "
                f"samples each, DDIM {steps} steps; icon search and novelty use {len(bank)} training icons.")
    report.note("align_shuffled is the random-prompt baseline: the same renders against a random other test prompt.")
