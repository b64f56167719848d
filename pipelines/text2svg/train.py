"""SVGFusion's recipes, in the order they run:

    genstudio train text2svg-clip --output-dir runs/text2svg-clip        # the benchmark's feature space
    genstudio train svgfusion-vae --output-dir runs/svgfusion-vae        # VP-VAE
    genstudio train svgfusion-dit --set vae='"runs/svgfusion-vae"' --output-dir runs/svgfusion-dit
    genstudio train svgfusion-dit --set vae='"raw"' --output-dir runs/svgfusion-raw   # ablation: no VP-VAE

`svgfusion-dit` encodes every training icon once with the frozen VP-VAE (posterior mean and std;
full drawings with their renders), computes the MiniLM token states of every caption once (cached
on disk), then trains the VS-DiT with text dropout (classifier-free guidance). Its export writes
a whole pipeline folder: transformer/ (DiT), vae/ (with the measured scaling factor; absent for
the raw ablation), scheduler/, model_index.json.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from genstudio.diffusion import diffusion_loss, make_scheduler
from genstudio.data.registry import DataError
from genstudio.dit import DiT, load_trunk
from genstudio.train import Recipe, parse_config

from . import MAX_AUTOGUIDANCE
from .clip import IconCLIP, embed_images, embed_texts
from .data import TextSVGDataset, TextTokens, captions, collate, label_of, load_items, pad, render, train_sets
from .svgfusion import VPVAE, RowCodec, make_vsdit, reconstruction_loss, to_dit, vae_loss

LATENT_STATS = "latent_stats.json"


# ---------------------------------------------------------------- VP-VAE

@dataclass
class VAEOptions:
    max_rows: int = 64
    latent_dim: int = 16
    hidden_size: int = 128
    num_heads: int = 4
    encoder_layers: int = 3
    decoder_layers: int = 3
    image_size: int = 64
    kl_weight: float = 1e-4
    prefix_prob: float = 0.5          # Rendering Sequence Modeling: share of training items cut to a prefix


def val_batch(max_rows: int, image_size: int | None, n: int = 256) -> dict:
    items = load_items("val", max_rows)
    items = [items[i] for i in np.random.default_rng(0).permutation(len(items))[:n]]
    return collate([TextSVGDataset(items, max_rows, image_size)[i] for i in range(len(items))])


def vae_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, VAEOptions, recipe="svgfusion-vae", output_dir="runs/svgfusion-vae",
                                   steps=3000, batch_size=32, lr=5e-4, warmup_steps=100, save_every=500,
                                   weight_decay=0.01)
    items = load_items("train", opts.max_rows)
    model = VPVAE(max_rows=opts.max_rows, latent_dim=opts.latent_dim, hidden_size=opts.hidden_size,
                  num_heads=opts.num_heads, encoder_layers=opts.encoder_layers, decoder_layers=opts.decoder_layers,
                  image_size=opts.image_size, kl_weight=opts.kl_weight)
    print(f"[svgfusion-vae] {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{len(items)} training icons of <= {opts.max_rows} rows")
    val = val_batch(opts.max_rows, opts.image_size)

    @torch.no_grad()
    def evaluate(m):
        mu, _ = m.encode(val["matrix"].to(m.device), val["image"].to(m.device))
        _, logs = reconstruction_loss(m.decode(mu).float(), val["matrix"].to(m.device))
        return {f"val_{k}": v for k, v in logs.items()}

    dataset = TextSVGDataset(items, opts.max_rows, opts.image_size, prefix_prob=opts.prefix_prob)
    return Recipe(model, dataset, vae_loss, train_cfg, collate_fn=collate, eval_fn=evaluate,
                  name="svgfusion-vae", options=opts)


def export_vae(run_dir, to, dtype: torch.dtype) -> None:
    from genstudio.export import export_model
    export_model(VPVAE, run_dir, to, dtype)


def load_vae(path: str | Path) -> VPVAE:
    """A VP-VAE from a run (its final/ EMA weights), a checkpoint folder or a pipeline folder's vae/."""
    from genstudio.export import run_weights
    path = Path(path)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    return VPVAE.from_pretrained(run_weights(path)).float().eval()


# ---------------------------------------------------------------- VS-DiT

@dataclass
class DiTOptions:
    vae: str = "runs/svgfusion-vae"   # a svgfusion-vae run or folder; "raw": the ablation on row features
    preset: str = "S"                 # tiny / XS / S / M / B (VSDIT_CONFIGS)
    max_rows: int = 64
    text_dropout: float = 0.1         # caption dropout for classifier-free guidance
    prediction_type: str = "epsilon"
    text_encoder: str = "minilm"
    init_from: Optional[str] = None   # start from these VS-DiT weights (a run, its checkpoint-N, or a pipeline folder)
    latent_table: Optional[str] = None  # precomputed latents + captions (write_latent_table) instead of icons + VAE
    train_sets: str = ""              # comma-separated icon sets to train on ("" = data.SETS); val stays on data.SETS
    snr_gamma: float = 0.0            # > 0: Min-SNR-gamma loss weighting (genstudio.diffusion.min_snr_weights)
    snr_floor: float = 0.0            # with snr_gamma: the least x0 weight of a step (high noise; for v prediction)
    self_condition: bool = False      # the DiT also reads its previous x0 estimate (Analog Bits; not in the paper)
    init_partial: bool = False        # init_from a DiT of another latent width: its trunk; the in/out layers start fresh
    iconify_share: float = 0.0        # > 0: each batch draws this share from the iconify sets (0: uniform over icons)
    scaling_factor: float = 0.0       # > 0: use this latent scale (e.g. init_from's, when its data grows); 0: 1 / std
    t_min: int = 0                    # train (and validate) only on timesteps in [t_min, t_max): an expert denoiser
    t_max: int = 1000                 # for that interval (eDiff-I; the checkpoint's expert_boundary splits them)


@torch.no_grad()
def encode_latents(vae: VPVAE | None, items: list[dict], max_rows: int, batch: int = 256):
    """(mean, std) per icon, each (N, rows, C): the VP-VAE posterior of the full drawing with its
    render, or (raw ablation, vae None) the row features with std 0."""
    means, stds = [], []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        matrix = torch.from_numpy(np.stack([pad(it["matrix"], max_rows) for it in chunk]))
        if vae is None:
            mean = RowCodec.encode(matrix)
            std = torch.zeros_like(mean)
        else:
            image = torch.stack([render(it["matrix"], vae.config.image_size) for it in chunk])
            mean, logvar = vae.encode(matrix, image)
            std = (0.5 * logvar).exp()
        means.append(mean.float())
        stds.append(std.float())
    return torch.cat(means), torch.cat(stds)


class LatentCaptions(Dataset):
    """Precomputed posteriors (a fresh latent sample per access) with a random caption's index."""

    def __init__(self, mean, std, caption_ids: list[list[int]], scaling_factor: float):
        self.mean, self.std, self.caption_ids, self.scale = mean, std, caption_ids, scaling_factor

    def __len__(self) -> int:
        return len(self.caption_ids)

    def __getitem__(self, i: int) -> dict:
        z = self.mean[i] + self.std[i] * torch.randn_like(self.std[i])
        return {"latent": to_dit(z[None])[0] * self.scale, "text_id": random.choice(self.caption_ids[i])}


def _caption_table(items: list[dict] | list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Distinct texts and, per icon, the indices of its captions (icons as items or as caption lists)."""
    texts: dict[str, int] = {}
    ids = [[texts.setdefault(c, len(texts)) for c in (it if isinstance(it, list) else captions(it))] for it in items]
    return list(texts), ids


VAL_ICONS = 512


def _quantise(x: torch.Tensor) -> dict:
    """Per-channel (last dim) uint8 quantisation: the value's code, the channel's low end and step."""
    lo, hi = x.amin(dim=tuple(range(x.dim() - 1))), x.amax(dim=tuple(range(x.dim() - 1)))
    step = (hi - lo).clamp(min=1e-8) / 255
    return {"q": ((x - lo) / step).round().clamp(0, 255).to(torch.uint8).numpy(), "lo": lo.numpy(),
            "step": step.numpy()}


def _dequantise(z, name: str) -> torch.Tensor:
    return torch.from_numpy(z[f"{name}_q"].astype(np.float32) * z[f"{name}_step"] + z[f"{name}_lo"])


def write_latent_table(path: str | Path, vae: str | Path, train: list[dict] | None = None,
                       val: list[dict] | None = None) -> dict:
    """What `svgfusion-dit` needs of the icons and of the VP-VAE, in a file small enough to carry to a GPU box
    that has neither (`--set latent_table=...`): each training icon's posterior mean and log-std, quantised to
    8 bits per channel (the rounding error, <= half a step (~0.02 of the latent's std of ~1.1), is well under
    the posterior's own std, median 0.58 on val), their captions, and the first VAL_ICONS val icons' means
    (float16) and captions; `train` / `val`: other items (with "matrix" and "text"). Returns the counts."""
    model = load_vae(vae)
    train = load_items("train", model.config.max_rows) if train is None else train
    val = load_items("val", model.config.max_rows)[:VAL_ICONS] if val is None else val
    mean, std = encode_latents(model, train, model.config.max_rows)
    val_mean, _ = encode_latents(model, val, model.config.max_rows)
    qm, qs = _quantise(mean), _quantise(std.log())
    meta = {"captions": [captions(it) for it in train], "val_captions": [captions(it) for it in val],
            "vae": str(Path(vae).resolve()), "max_rows": model.config.max_rows}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, mean_q=qm["q"], mean_lo=qm["lo"], mean_step=qm["step"], logstd_q=qs["q"],
                        logstd_lo=qs["lo"], logstd_step=qs["step"], val_mean=val_mean.half().numpy(),
                        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    return {"train": len(train), "val": len(val)}


def read_latent_table(path: str | Path) -> dict:
    """`write_latent_table`'s file -> {mean, std, val_mean, captions, val_captions, max_rows}."""
    try:
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes())
            return {"mean": _dequantise(z, "mean"), "std": _dequantise(z, "logstd").exp(),
                    "val_mean": torch.from_numpy(z["val_mean"].astype(np.float32)), **meta}
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path} is not a latent table (write_latent_table): {e}") from None


def dit_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, DiTOptions, recipe="svgfusion-dit", output_dir="runs/svgfusion-dit",
                                   steps=4000, batch_size=64, lr=3e-4, warmup_steps=200, save_every=500,
                                   weight_decay=0.0)
    raw = opts.vae == "raw"
    if opts.latent_table and raw:
        raise ValueError("latent_table holds VP-VAE latents: it cannot train the raw-row ablation (vae='raw')")
    if opts.latent_table and opts.iconify_share:
        raise ValueError("iconify_share needs the icons (a latent table does not record each icon's set)")
    if not 0 <= opts.t_min < opts.t_max <= 1000:
        raise ValueError(f"t_min {opts.t_min} / t_max {opts.t_max}: need 0 <= t_min < t_max <= 1000")
    sampler = None
    if opts.latent_table:  # a GPU box: no icons, no renderer; the VAE folder is only exported
        table = read_latent_table(opts.latent_table)
        max_rows, mean, std, train_captions = table["max_rows"], table["mean"], table["std"], table["captions"]
        val_mean, val_captions = table["val_mean"], table["val_captions"]
    else:
        vae = None if raw else load_vae(opts.vae)
        max_rows = opts.max_rows if raw else vae.config.max_rows
        items = load_items("train", max_rows, sets=train_sets(opts.train_sets))
        mean, std = encode_latents(vae, items, max_rows)
        val_items = load_items("val", max_rows)[:VAL_ICONS]
        val_mean, _ = encode_latents(vae, val_items, max_rows)
        train_captions, val_captions = [captions(it) for it in items], [captions(it) for it in val_items]
        if opts.iconify_share:
            from genstudio.data.iconify import ICONIFY_SETS
            from genstudio.train import CurriculumBatchSampler
            extra = [i for i, it in enumerate(items) if it["set"] in ICONIFY_SETS]
            base = [i for i, it in enumerate(items) if it["set"] not in ICONIFY_SETS]
            sampler = CurriculumBatchSampler(base, extra, train_cfg.batch_size, warm=0, ramp=1,
                                             final_share=opts.iconify_share, seed=train_cfg.seed)
            print(f"[svgfusion-dit] batches: {opts.iconify_share:.0%} from {len(extra)} iconify icons, "
                  f"the rest from {len(base)} others")
    scaling_factor = 1.0 if raw else float(opts.scaling_factor or 1.0 / mean.std())
    if not raw and opts.scaling_factor:
        print(f"[svgfusion-dit] scaling factor {opts.scaling_factor} (this data's own: {float(1.0 / mean.std()):.3f})")
    texts, caption_ids = _caption_table(train_captions)
    tokens = TextTokens(texts, None if opts.text_encoder == "minilm" else opts.text_encoder)
    out = Path(train_cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / LATENT_STATS).write_text(json.dumps({"vae": "raw" if raw else str(Path(opts.vae).resolve()),
                                                "scaling_factor": scaling_factor, "max_rows": max_rows}))
    model = make_vsdit(opts.preset, mean.shape[-1], max_rows, tokens.flat.shape[1], opts.text_dropout,
                       opts.self_condition)
    if opts.init_from:
        from genstudio.export import run_weights
        source = Path(opts.init_from)
        source = source / "transformer" if (source / "transformer" / "config.json").exists() else run_weights(source)
        try:
            fresh = load_trunk(model, DiT.from_pretrained(source).float().state_dict(), opts.init_partial)
        except ValueError as err:
            raise ValueError(f"init_from {opts.init_from}: {err}; --set init_partial=true starts them fresh") from None
        if fresh:
            print(f"[svgfusion-dit] init_from {opts.init_from}: trunk only; fresh {', '.join(fresh)}")
    print(f"[svgfusion-dit] {opts.preset}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters on "
          f"{'raw rows' if raw else 'VP-VAE latents'} ({mean.shape[-1]}x{max_rows}), {len(mean)} icons, "
          f"{len(texts)} captions, scaling factor {scaling_factor:.3f}")
    scheduler = make_scheduler("ddpm", prediction_type=opts.prediction_type)

    val_texts, val_ids = _caption_table(val_captions)
    val_tokens = TextTokens(val_texts, None if opts.text_encoder == "minilm" else opts.text_encoder)
    val_context, val_mask = val_tokens.batch([ids[-1] for ids in val_ids])
    g = torch.Generator().manual_seed(0)
    val_t = torch.randint(opts.t_min, opts.t_max, (len(val_mean),), generator=g)
    val_x0 = to_dit(val_mean) * scaling_factor
    val_noise = torch.randn(val_x0.shape, generator=g)

    @torch.no_grad()
    def evaluate(m):
        d = m.device
        cond = diffusion_loss(m, val_x0.to(d), scheduler, opts.prediction_type, timesteps=val_t.to(d),
                              noise=val_noise.to(d), context=val_context.to(d), context_mask=val_mask.to(d))
        uncond = diffusion_loss(m, val_x0.to(d), scheduler, opts.prediction_type, timesteps=val_t.to(d),
                                noise=val_noise.to(d))
        logs = {"val_loss": float(cond), "val_loss_no_text": float(uncond)}
        if opts.self_condition:  # half of the items get the model's own first estimate
            logs["val_loss_self_cond"] = float(diffusion_loss(
                m, val_x0.to(d), scheduler, opts.prediction_type, timesteps=val_t.to(d), noise=val_noise.to(d),
                self_condition=True, generator=torch.Generator(d).manual_seed(0), context=val_context.to(d),
                context_mask=val_mask.to(d)))
        return logs

    def collate_fn(batch):
        context, mask = tokens.batch([b["text_id"] for b in batch])
        return {"latent": torch.stack([b["latent"] for b in batch]), "context": context, "context_mask": mask}

    def loss_fn(m, batch):
        return diffusion_loss(m, batch["latent"], scheduler, opts.prediction_type, snr_gamma=opts.snr_gamma,
                              snr_floor=opts.snr_floor, self_condition=opts.self_condition,
                              timestep_range=(opts.t_min, opts.t_max), context=batch["context"].to(m.dtype),
                              context_mask=batch["context_mask"])

    return Recipe(model, LatentCaptions(mean, std, caption_ids, scaling_factor), loss_fn, train_cfg,
                  collate_fn=collate_fn, batch_sampler=sampler, eval_fn=evaluate, name="svgfusion-dit", options=opts)


def write_model_index(folder: Path, **extra) -> None:
    index = {"_class_name": "SVGFusionPipeline", **extra}
    (Path(folder) / "model_index.json").write_text(json.dumps(index, indent=2))


def _same_latents(run_dir, other, what: str) -> None:
    a, b = (json.loads((Path(r) / LATENT_STATS).read_text()) for r in (run_dir, other))
    if (a["vae"] == "raw") != (b["vae"] == "raw") or a["max_rows"] != b["max_rows"] \
            or abs(a["scaling_factor"] - b["scaling_factor"]) > 1e-6:
        raise ValueError(f"{what}={other} was trained on other latents than {run_dir} ({LATENT_STATS} differ)")


def _prediction_type(run) -> str:
    from genstudio.export import run_record
    return (run_record(run).get("options") or {}).get("prediction_type", "epsilon")


def _dit(run, average: str | None, what: str) -> DiT:
    """The run's VS-DiT; with `average`, the uniform average of its weights and those of a second run of the
    same architecture, latents and prediction type (a model soup, Wortsman et al. 2022: two fine-tunings of one
    model)."""
    from genstudio.export import run_weights
    model = DiT.from_pretrained(run_weights(run))
    if average is None:
        return model
    _same_latents(run, average, what)
    other = DiT.from_pretrained(run_weights(average))
    def arch(m):
        return {k: v for k, v in m.config.items() if not k.startswith("_")}
    if arch(other) != arch(model) or _prediction_type(average) != _prediction_type(run):
        raise ValueError(f"{what}={average}: another VS-DiT architecture or prediction type than {run}")
    theirs = other.state_dict()
    model.load_state_dict({k: (v.float() + theirs[k].float()) / 2 for k, v in model.state_dict().items()})
    return model


def _guide(folder, vae: VPVAE, scaling_factor: float, prediction_type: str, like: DiT) -> tuple[Path, float]:
    """A weaker SVGFusion checkpoint folder to guide away from (autoguidance): its transformer/ (plain or
    compressed by `genstudio compress`) and the factor from this export's latent scale to the one it was trained
    on. It must share the VP-VAE's weights, the sampler's prediction type and the latent grid."""
    from genstudio.vq4dit import load_model
    folder = Path(folder)
    try:
        index = json.loads((folder / "model_index.json").read_text())
        theirs = VPVAE.from_pretrained(folder / "vae")
        model = load_model(DiT, folder / "transformer")
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"guide={folder}: not an SVGFusion checkpoint folder ({e})") from None
    ours = vae.state_dict()
    if index.get("_class_name") != "SVGFusionPipeline" or set(theirs.state_dict()) != set(ours) or not all(
            torch.allclose(v.float(), ours[k].float(), atol=1e-3) for k, v in theirs.state_dict().items()):
        raise ValueError(f"guide={folder}: another VP-VAE than this run's (a guide must share its latents)")
    if sched.get("prediction_type", "epsilon") != prediction_type:
        raise ValueError(f"guide={folder}: predicts {sched.get('prediction_type')}, this run {prediction_type}")
    if (model.in_channels, tuple(model.grid_size)) != (like.in_channels, tuple(like.grid_size)):
        raise ValueError(f"guide={folder}: another latent grid than this run's")
    return folder / "transformer", theirs.config.scaling_factor / scaling_factor


def export_dit(run_dir, to, dtype: torch.dtype, high: str | None = None, expert_boundary: int = 500,
               average: str | None = None, high_average: str | None = None, guide: str | None = None,
               autoguidance: float = 1.0) -> None:
    """A whole pipeline folder: the run's VS-DiT + the VP-VAE it was trained on (with its scaling factor).
    `high` (`--set high=RUN`): a second svgfusion-dit run on the same latents, written as the high-noise expert
    `transformer_high/` that takes the sampler's steps at t >= `expert_boundary` (eDiff-I, Balaji et al. 2022).
    `average` / `high_average` (`--set average=RUN`): write the weight average of that run and the (high) run.
    `guide` (`--set guide=FOLDER`): a weaker, earlier SVGFusion checkpoint on the same VP-VAE, copied as
    `transformer_guide/`: sampling is guided away from it with weight `autoguidance` (Karras et al. 2024)."""
    import shutil
    from genstudio.export import run_record, save_safetensors
    stats = json.loads((Path(run_dir) / LATENT_STATS).read_text())
    options = run_record(run_dir).get("options") or {}
    to = Path(to)
    extra = {}
    if high_average is not None and high is None:
        raise ValueError("high_average needs high=RUN (the run it is averaged with)")
    if high is not None:
        _same_latents(run_dir, high, "high")
        if not 0 < int(expert_boundary) < 1000:
            raise ValueError(f"expert_boundary {expert_boundary}: need 0 < boundary < 1000")
        extra = {"expert_boundary": int(expert_boundary), "high_prediction_type": _prediction_type(high)}
        save_safetensors(_dit(high, high_average, "high_average").to(dtype), to / "transformer_high")
    low = _dit(run_dir, average, "average")
    save_safetensors(low.to(dtype), to / "transformer")
    prediction_type = options.get("prediction_type", "epsilon")
    if guide is not None and stats["vae"] == "raw":
        raise ValueError("guide=FOLDER needs a run on VP-VAE latents")
    if stats["vae"] != "raw":
        vae = load_vae(stats["vae"])
        vae.register_to_config(scaling_factor=stats["scaling_factor"])
        if guide is not None:
            if not 0 < float(autoguidance) <= MAX_AUTOGUIDANCE:
                raise ValueError(f"autoguidance {autoguidance}: need 0 < w <= {MAX_AUTOGUIDANCE:g}")
            source, scale = _guide(guide, vae, stats["scaling_factor"], prediction_type, low)
            shutil.copytree(source, to / "transformer_guide")
            extra.update(autoguidance=float(autoguidance), guide_input_scale=scale)
        save_safetensors(vae.to(dtype), to / "vae")
    make_scheduler("ddim", prediction_type=prediction_type).save_pretrained(to / "scheduler")
    write_model_index(to, latent="raw" if stats["vae"] == "raw" else "vae", max_rows=stats["max_rows"],
                      text_encoder=options.get("text_encoder", "minilm"), **extra)


# ---------------------------------------------------------------- IconCLIP (the benchmark's feature space)

def clip_loss(model: IconCLIP, batch: dict):
    """Symmetric InfoNCE over the batch; returns (loss, {"accuracy": image->text top-1}).

    Captions are drawn at random (label; label + kind; + tags), so two icons of one batch can carry
    the same text ("rocket" for the phosphor and the tabler rocket). Calling one of them a negative
    of the other's image would push apart pairs that are in fact matches, so every pair whose texts
    are identical counts as a positive: each row's (and column's) loss is -log of the softmax mass
    on all its positives (multi-positive InfoNCE: plain InfoNCE when captions are distinct, 0 at
    best), and top-1 is right when it lands on any of them.
    """
    from genstudio.text import get_text_encoder
    p = next(model.parameters())
    texts = list(batch["text"])
    text_emb = get_text_encoder().encode(texts).to(p.device, p.dtype)
    logits = model(batch["image"].to(p.device), text_emb).float()          # (B, B): image i vs text j
    ids = {t: k for k, t in enumerate(dict.fromkeys(texts))}
    tid = torch.tensor([ids[t] for t in texts], device=logits.device)
    positive = (tid[:, None] == tid[None, :]).float()                      # symmetric, diagonal = 1
    negative_inf = torch.finfo(logits.dtype).min

    def multi_positive(lg):  # -log sum_{j positive} softmax(lg)_ij, averaged over the rows
        return (lg.logsumexp(1) - lg.masked_fill(positive == 0, negative_inf).logsumexp(1)).mean()

    loss_i, loss_t = multi_positive(logits), multi_positive(logits.t())
    accuracy = positive.gather(1, logits.argmax(1, keepdim=True)).mean()
    return (loss_i + loss_t) / 2, {"accuracy": float(accuracy)}


# ---------------------------------------------------------------- recipe

@dataclass
class CLIPOptions:
    embed_dim: int = 128
    channels: int = 32
    image_size: int = 64
    max_rows: int = 64


EVAL_ICONS = 1000


def clip_recipe(cfg: dict) -> Recipe:
    train_cfg, opts = parse_config(cfg, CLIPOptions, recipe="text2svg-clip", output_dir="runs/text2svg-clip",
                                   steps=3000, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=None,
                                   save_every=500, weight_decay=0.01)
    from genstudio.text import get_text_encoder
    dataset = TextSVGDataset(load_items("train", opts.max_rows), opts.max_rows, image_size=opts.image_size)
    val = load_items("val", opts.max_rows)
    if len(val) > EVAL_ICONS:  # an even, deterministic spread over the split
        val = [val[int(k)] for k in np.linspace(0, len(val) - 1, EVAL_ICONS).round()]
    labels = sorted({label_of(item) for item in val})
    label_index = {label: k for k, label in enumerate(labels)}
    truth = torch.tensor([label_index[label_of(item)] for item in val])
    model = IconCLIP(text_dim=get_text_encoder().dim, embed_dim=opts.embed_dim, channels=opts.channels,
                     image_size=opts.image_size)
    cache: dict = {}

    @torch.no_grad()
    def evaluate(m):
        """Image -> label retrieval on (up to EVAL_ICONS) val icons: rank their distinct labels for each icon."""
        if "images" not in cache:  # rendered once, at the first evaluation
            cache["images"] = torch.stack([render(item["matrix"], opts.image_size) for item in val])
        image_f = torch.from_numpy(embed_images(m, cache["images"]))
        label_f = torch.from_numpy(embed_texts(m, labels))
        ranks = (image_f @ label_f.t()).argsort(1, descending=True)
        hit = ranks == truth[:, None]
        return {"val_top1": float(hit[:, :1].any(1).float().mean()), "val_top5": float(hit[:, :5].any(1).float().mean()),
                "val_icons": len(val), "val_labels": len(labels)}

    return Recipe(model, dataset, clip_loss, train_cfg, collate_fn=collate, eval_fn=evaluate,
                  name="text2svg-clip", options=opts)


def export_clip(run_dir, to, dtype: torch.dtype) -> None:
    from genstudio.export import export_model
    export_model(IconCLIP, run_dir, to, dtype)


clip_recipe.export = export_clip


vae_recipe.export = export_vae  # genstudio export finds each recipe's exporter here
dit_recipe.export = export_dit
