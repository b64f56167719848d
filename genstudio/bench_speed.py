"""`genstudio bench speed`: how fast genstudio is on this CPU, as ratios measured in one run.

1. DiT vs diffusers' `DiTTransformer2DModel` at the same config (our weights copied into theirs):
   training step (forward + backward + AdamW) and 20-step DPM-Solver++ sampling, fp32 and the
   precision policy's `auto` (a bf16 row only where `auto` picks bf16).
2. `PrefixLM.generate` (KV cache, as StarVector uses it) vs plain transformers `generate` on the
   same LM weights, same prefix embeddings (`inputs_embeds`), same number of greedy tokens.
3. Every shipped pipeline at the CLI's default settings, fp32 vs `auto`: per-item latency and
   peak memory, each (pipeline, precision) in a fresh subprocess.
4. A torch.profiler pass over each pipeline's default path: top ops by self CPU time (notes).
Plus `threads`: the same decode and sampling with 1 thread vs torch's default (all cores).

Everything runs with `threads=1` unless told otherwise (`genstudio bench speed -o threads=0` = torch's default): on a
2-core machine shared with a training, every OpenMP barrier of a 2-thread op waits for the busy
core and small ops get 5-10x slower (the `threads` rows measure it). Times are medians of interleaved repeats (the machines are shared and noisy); every comparison
is a ratio of two measurements taken back to back (`time_ratio` = this row / its `baseline` row,
< 1 means faster). Nothing here is asserted in a test.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _median(xs) -> float:
    return float(statistics.median(xs))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each fn, calling them in turn (a, b, a, b, ...) after warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        keys = list(fns) if i % 2 == 0 else list(reversed(fns))  # alternate who goes first
        for k in keys:
            times[k].append(_timed(fns[k]))
    return {k: _median(v) for k, v in times.items()}


def _add_pair(report, dataset: str, ours: tuple[str, float], theirs: tuple[str, float], precision: str,
              work: float, unit: str, **extra) -> None:
    """Two rows: the baseline and ours with time_ratio = ours / baseline (< 1: ours is faster)."""
    (name_ours, s_ours), (name_ref, s_ref) = ours, theirs
    report.add(name_ref, dataset, precision=precision, seconds=round(s_ref, 4),
               throughput=round(work / s_ref, 2), unit=unit, baseline="-", **extra)
    report.add(name_ours, dataset, precision=precision, seconds=round(s_ours, 4),
               throughput=round(work / s_ours, 2), unit=unit, baseline=name_ref,
               time_ratio=round(s_ours / s_ref, 3), **extra)


def _precisions() -> list:
    """fp32, plus the policy's auto pick when that is not fp32."""
    from .precision import resolve_precision
    fp32, auto = resolve_precision("cpu", "fp32"), resolve_precision("cpu", "auto")
    return [fp32] if auto.name == "fp32" else [fp32, auto]


# ---------------------------------------------------------------- 1. DiT vs diffusers

def diffusers_dit_like(model):
    """diffusers' `DiTTransformer2DModel` with the same shape as our `DiT`, our weights copied in.

    diffusers keeps one timestep+label embedder per block (DiT shares one): ours goes into each.
    q/k/v are split from timm's fused `qkv`; the adaLN chunk order (shift, scale, gate x2) and the
    final layer's (shift, scale) agree. Their sinusoidal timestep uses a frequency shift of 1; it
    is set to DiT's 0 so the two compute the same function (checked by `max_abs_diff`)."""
    from diffusers import DiTTransformer2DModel
    c = model.config
    if c.num_frames != 1 or c.context_dim is not None or c.num_classes <= 0:
        raise ValueError("only a class-conditional image DiT has a diffusers counterpart")
    hidden, heads = c.hidden_size, c.num_heads
    theirs = DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=c.in_channels,
        out_channels=model.out_channels, num_layers=c.depth, sample_size=c.input_size, patch_size=c.patch_size,
        num_embeds_ada_norm=c.num_classes, norm_eps=1e-6)
    if int(c.mlp_ratio * hidden) != theirs.transformer_blocks[0].ff.net[2].in_features:
        raise ValueError("diffusers' DiT has a 4x MLP; this DiT's mlp_ratio differs")
    ours = model.state_dict()
    sd = {"pos_embed.proj.weight": ours["x_embedder.proj.weight"], "pos_embed.proj.bias": ours["x_embedder.proj.bias"],
          "proj_out_1.weight": ours["final_layer.adaLN_modulation.1.weight"],
          "proj_out_1.bias": ours["final_layer.adaLN_modulation.1.bias"],
          "proj_out_2.weight": ours["final_layer.linear.weight"], "proj_out_2.bias": ours["final_layer.linear.bias"]}
    for i in range(c.depth):
        b, d = f"blocks.{i}.", f"transformer_blocks.{i}."
        for j in (1, 2):
            for kind in ("weight", "bias"):
                sd[f"{d}norm1.emb.timestep_embedder.linear_{j}.{kind}"] = ours[f"t_embedder.mlp.{2 * j - 2}.{kind}"]
        sd[f"{d}norm1.emb.class_embedder.embedding_table.weight"] = ours["y_embedder.embedding_table.weight"]
        for kind in ("weight", "bias"):
            q, k, v = ours[f"{b}attn.qkv.{kind}"].chunk(3, dim=0)
            sd.update({f"{d}attn1.to_q.{kind}": q, f"{d}attn1.to_k.{kind}": k, f"{d}attn1.to_v.{kind}": v,
                       f"{d}norm1.linear.{kind}": ours[f"{b}adaLN_modulation.1.{kind}"],
                       f"{d}attn1.to_out.0.{kind}": ours[f"{b}attn.proj.{kind}"],
                       f"{d}ff.net.0.proj.{kind}": ours[f"{b}mlp.fc1.{kind}"],
                       f"{d}ff.net.2.{kind}": ours[f"{b}mlp.fc2.{kind}"]})
    theirs.load_state_dict({k: v.clone() for k, v in sd.items()}, strict=True)
    for block in theirs.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return theirs


def _perturb_(model, seed: int = 0, std: float = 0.02) -> None:
    """Open DiT's zero-initialised gates so the outputs (and the equivalence check) mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.add_(torch.randn(p.shape, generator=g) * std)


def bench_dit_vs_diffusers(report, quick: bool = False) -> None:
    from .diffusion import diffusion_loss, make_scheduler, sample
    from .dit import DiT
    from .precision import autocast
    # DiT-S width and heads, 6 of its 12 layers, 16x16 latents (128 px images): 64 tokens.
    cfg = dict(input_size=16, patch_size=2, in_channels=4, hidden_size=384, depth=6, num_heads=6,
               num_classes=10, learn_sigma=False)
    batch, sample_batch, steps, repeats = 8, 4, 20, 5
    if quick:
        cfg.update(input_size=8, hidden_size=64, depth=2, num_heads=2)
        batch, sample_batch, steps, repeats = 2, 2, 3, 2
    torch.manual_seed(0)
    ours = DiT(**cfg)
    _perturb_(ours)
    theirs = diffusers_dit_like(ours)
    tag = f"d{cfg['hidden_size']}xL{cfg['depth']} {cfg['input_size']}px/p{cfg['patch_size']}"
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))

    def theirs_fn(x, t, y=None):
        return theirs(x, timestep=t, class_labels=y).sample

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, cfg["in_channels"], cfg["input_size"], cfg["input_size"], generator=g)
    y = torch.randint(0, cfg["num_classes"], (batch,), generator=g)
    with torch.no_grad():
        ours.eval(), theirs.eval()
        t = torch.randint(0, 1000, (batch,), generator=g)
        diff = (ours(x0, t, y) - theirs_fn(x0, t, y)).abs().max().item()
    report.note(f"DiT vs diffusers: {tag}, {n_ours / 1e6:.2f}M params (diffusers' copy {n_theirs / 1e6:.2f}M: "
                f"one timestep+label embedder per block); same weights, max |ours - theirs| = {diff:.2e} (fp32).")
    sched = make_scheduler("ddpm")
    for p in _precisions():
        # (a) training step: same loss code, same data and timesteps, AdamW on each model's own parameters.
        ours.train(), theirs.train()
        opts = {m: torch.optim.AdamW(m.parameters(), lr=1e-5) for m in (ours, theirs)}

        def train_step(model, fn):
            gen = torch.Generator().manual_seed(1)
            with autocast("cpu", p):
                loss = diffusion_loss(fn, x0, sched, generator=gen, y=y)
            loss.backward()
            opts[model].step()
            opts[model].zero_grad(set_to_none=True)

        med = _interleaved({"ours": lambda: train_step(ours, ours), "theirs": lambda: train_step(theirs, theirs_fn)},
                           repeats=repeats, warmup=2)
        _add_pair(report, f"DiT train {tag} B={batch}", ("genstudio DiT", med["ours"]),
                  ("diffusers DiTTransformer2DModel", med["theirs"]), p.name, batch, "img/s")
        # (b) sampling: 20 DPM-Solver++ steps through genstudio.diffusion.sample, each model in turn.
        ours.eval(), theirs.eval()
        shape = (sample_batch, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
        labels = torch.arange(sample_batch) % cfg["num_classes"]

        def run_sample(fn):  # no_grad as the pipelines: under inference_mode autocast re-casts weights every call
            with torch.no_grad(), autocast("cpu", p):
                sample(fn, shape, make_scheduler("dpm"), num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(0), progress=False, y=labels)

        med = _interleaved({"ours": lambda: run_sample(ours), "theirs": lambda: run_sample(theirs_fn)},
                           repeats=max(2, repeats - 2), warmup=1)
        _add_pair(report, f"DiT sample {tag} dpm{steps} B={sample_batch}", ("genstudio DiT", med["ours"]),
                  ("diffusers DiTTransformer2DModel", med["theirs"]), p.name, sample_batch, "img/s")
        del opts


# ---------------------------------------------------------------- 2. PrefixLM.generate vs plain generate

def _starvector_lm(folder: Path):
    """The shipped StarVector's causal LM (plain transformers model, its own weights) and tokenizer,
    read from the checkpoint files with core code only; None when the checkpoint is not there."""
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast
    from .lm import build_causal_lm
    try:
        cfg = json.loads((folder / "config.json").read_text())
        weights = load_file(folder / "model.safetensors")
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    except (OSError, ValueError):
        return None
    lm = build_causal_lm(cfg["lm_arch"], cfg["vocab_size"], cfg["lm_size"], **cfg.get("lm_overrides", {}))
    prefix = "svg_transformer.lm."
    state = {k[len(prefix):]: v.float() for k, v in weights.items() if k.startswith(prefix)}
    missing, unexpected = lm.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head may be tied to wte
        raise ValueError(f"{folder}: LM weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    lm.tie_weights()
    visual = (cfg["image_size"] // cfg["patch_size"]) ** 2 + int(cfg.get("use_cls_token", False))
    prompt = [cfg["svg_start_token_id"]] + tokenizer("<svg", add_special_tokens=False)["input_ids"]
    stops = [cfg["svg_end_token_id"], cfg["eos_token_id"]]
    return lm.eval(), tokenizer, visual, prompt, stops, cfg["pad_token_id"]


def bench_lm_generate(report, quick: bool = False, checkpoint: str | Path | None = None) -> None:
    from transformers import GenerationConfig
    from .lm import PrefixLM, build_causal_lm
    from .precision import autocast
    new_tokens, repeats = (8, 2) if quick else (128, 4)
    loaded = _starvector_lm(Path(checkpoint or REPO / "checkpoints" / "starvector-icons-S"))
    if loaded is not None:
        lm, tokenizer, visual, prompt, stops, pad = loaded
        what = "shipped starvector-icons-S LM"
    else:  # no checkpoint: the same architecture and size, random weights
        lm = build_causal_lm("gpt_bigcode", 1144, "tiny", hidden=256, layers=6, heads=4, multi_query=True,
                             positions=1024).eval()
        tokenizer, visual, prompt, stops, pad, what = None, 65, [2, 10, 11], [3, 0], 1, "StarVector-S-shaped LM (random)"
    c = lm.config
    tag = f"{c.model_type} d{c.hidden_size}xL{c.num_hidden_layers}, prefix {visual}+{len(prompt)}, {new_tokens} new"
    wrapped = PrefixLM(lm)
    g = torch.Generator().manual_seed(0)
    prefix = torch.randn(1, visual, c.hidden_size, generator=g)  # visual tokens are layer-normed: ~N(0, 1)
    prompt_ids = torch.tensor([prompt])
    embeds = torch.cat([prefix, lm.get_input_embeddings()(prompt_ids).detach()], 1)
    # No stop token: both run exactly new_tokens steps (checked below).
    plain_config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                    eos_token_id=None, pad_token_id=pad, use_cache=True)
    counts = {}

    def ours(p, **kw):
        with torch.inference_mode(), autocast("cpu", p):
            counts["ours"] = wrapped.generate(prefix, prompt_ids, max_new_tokens=new_tokens, stop_token_ids=[],
                                              pad_token_id=pad, **kw).shape[1]

    def ours_starvector(p):  # exactly as StarVectorModel.generate_svg calls it: stop tokens and "</svg>"
        with torch.inference_mode(), autocast("cpu", p):
            _, lengths = wrapped.generate(prefix, prompt_ids, max_new_tokens=new_tokens, stop_token_ids=stops,
                                          stop_sequences=["</svg>"], tokenizer=tokenizer, pad_token_id=pad,
                                          return_lengths=True)
        counts["starvector"] = int(lengths.max())

    def plain(p):
        with torch.inference_mode(), autocast("cpu", p):
            out = lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                              generation_config=plain_config)
        counts["plain"] = out.shape[1]

    for p in _precisions():
        fns = {"ours": lambda: ours(p), "plain": lambda: plain(p)}
        if tokenizer is not None:
            fns["starvector"] = lambda: ours_starvector(p)
        med = _interleaved(fns, repeats=repeats, warmup=1)
        if counts["ours"] != counts["plain"]:
            report.note(f"LM generate ({p.name}): token counts differ (ours {counts['ours']}, plain {counts['plain']}); "
                        "tokens/s uses each one's own count")
        report.add("transformers generate", f"LM generate {tag}", precision=p.name, seconds=round(med["plain"], 4),
                   throughput=round(counts["plain"] / med["plain"], 1), unit="tok/s", baseline="-")
        tps_plain = counts["plain"] / med["plain"]
        rows = [("genstudio PrefixLM.generate", "ours")]
        if "starvector" in med:
            rows.append(("PrefixLM.generate + StarVector stops", "starvector"))
        for name, key in rows:
            tps = counts[key] / med[key]
            report.add(name, f"LM generate {tag}", precision=p.name, seconds=round(med[key], 4),
                       throughput=round(tps, 1), unit="tok/s", baseline="transformers generate",
                       time_ratio=round(tps_plain / tps, 3))
    report.note(f"LM generate: {what}; greedy, batch 1, KV cache, the same prefix embeddings (random, one image's "
                f"worth) via inputs_embeds for plain `generate`. time_ratio here is per generated token. "
                "'+ StarVector stops' adds the stop tokens and the '</svg>' stop string the SVG pipeline uses "
                "(it may stop early; tokens/s counts what it generated).")


# ---------------------------------------------------------------- threads: few vs torch's default

def bench_threads(report, quick: bool, few: int, default: int) -> None:
    """The same greedy decode and the same DiT sampling with `few` threads vs torch's default
    (= the cores). On a shared machine a busy core stalls every OpenMP barrier of the default."""
    from transformers import GenerationConfig
    from .diffusion import make_scheduler, sample
    from .dit import DiT
    from .lm import build_causal_lm
    if few >= default:
        report.note(f"threads: torch's default is already {default}; no comparison")
        return
    lm = build_causal_lm("gpt_bigcode", 1144, "tiny", hidden=256, layers=6, heads=4, multi_query=True,
                         positions=1024).eval()
    new = 8 if quick else 48
    embeds = torch.randn(1, 68, 256, generator=torch.Generator().manual_seed(0))
    config = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None,
                              pad_token_id=1)
    dit = DiT(input_size=8 if quick else 16, patch_size=2, in_channels=4, hidden_size=64 if quick else 384,
              depth=2 if quick else 6, num_heads=2 if quick else 6, num_classes=10, learn_sigma=False).eval()
    shape = (2, 4, dit.config.input_size, dit.config.input_size)

    def with_threads(n, fn):
        def run():
            torch.set_num_threads(n)
            try:
                with torch.inference_mode():
                    fn()
            finally:
                torch.set_num_threads(default)
        return run

    cases = {
        f"LM generate {new} tok (StarVector-S LM shape, fp32)": (
            lambda: lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(1, 68, dtype=torch.long),
                                generation_config=config), new, "tok/s"),
        f"DiT sample dpm10 B=2 (d{dit.config.hidden_size}xL{dit.config.depth}, fp32)": (
            lambda: sample(dit, shape, make_scheduler("dpm"), num_inference_steps=10,
                           generator=torch.Generator().manual_seed(0), progress=False,
                           y=torch.zeros(2, dtype=torch.long)), 2, "img/s"),
    }
    for name, (fn, work, unit) in cases.items():
        med = _interleaved({"few": with_threads(few, fn), "default": with_threads(default, fn)},
                           repeats=2 if quick else 3, warmup=1)
        _add_pair(report, f"threads: {name}", (f"{few} thread(s)", med["few"]),
                  (f"{default} threads (torch default)", med["default"]), "fp32", work, unit)


# ---------------------------------------------------------------- 3. + 4. the pipelines, fp32 vs auto

# The CLI's defaults for each task on one shipped example (paths relative to the repository root).
PIPELINE_CASES: dict[str, dict] = {
    "svg": dict(model="starvector-icons-S", args=["examples/svg/rocket.png"], kwargs={"seed": 0},
                what="rocket.png, 1 candidate (greedy), the model's token budget"),
    "inpaint": dict(model="put-photos-S", args=["examples/inpaint/rocket.png", "examples/inpaint/rocket_mask.png"],
                    kwargs={"num_samples": 4, "seed": 0}, what="rocket.png + mask, 4 samples, top-k 50, 4 tokens/step"),
    "video": dict(model="vdt-physics-S", args=[], kwargs={"task": "predict", "frames": "examples/video/balls.gif",
                                                          "num_inference_steps": 25, "scheduler": "dpm", "seed": 0,
                                                          "progress": False},
                  what="balls.gif, predict, 25 DPM-Solver++ steps"),
    # The profiler keeps every op event: thousands of decoding steps grow it to gigabytes, so the
    # mesh profile decodes fewer faces (the ops per step are the same).
    "mesh": dict(model="meshanything-urdf-XS", args=["examples/mesh/urdf_407.obj"], kwargs={"seed": 0},
                 profile_kwargs={"max_faces": 40}, what="urdf_407.obj, greedy, the checkpoint's max_faces"),
}


def _proc_status_mb(field: str) -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM belongs to the address space, so it starts afresh at
    exec; getrusage's ru_maxrss does not (a child would report its parent's peak when larger)."""
    peak = _proc_status_mb("VmHWM")
    if peak == peak:  # not NaN
        return peak
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # KiB on Linux, bytes on macOS


def _top_ops(prof, wall_s: float, n: int = 3) -> dict:
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    top = [dict(op=e.key, self_s=round(e.self_cpu_time_total / 1e6, 3), calls=e.count,
                share=round(e.self_cpu_time_total / 1e6 / max(wall_s, 1e-9), 3)) for e in events[:n]]
    # Wall time not spent inside any torch op: Python, tokenizers, numpy, PIL, trimesh...
    return dict(top=top, op_s=round(total, 3), wall_s=round(wall_s, 3),
                outside_ops_share=round(max(0.0, 1 - total / max(wall_s, 1e-9)), 3))


def run_pipeline_case(task: str, precision: str, repeats: int = 1, profile: bool = False,
                      slow_item_s: float = 8.0) -> dict:
    """In this process (meant to be a fresh one): load the shipped checkpoint, run the CLI's default
    item once cold, `repeats` more times warm, read peak RSS; then optionally profile one more run."""
    from importlib.metadata import entry_points
    case = PIPELINE_CASES[task]
    found = [ep for ep in entry_points(group="genstudio.pipelines") if ep.name == task]
    if not found:
        raise KeyError(f"no pipeline registered for {task!r} (entry-point group genstudio.pipelines)")
    classes = {task: found[0].load()}  # only this one: importing every pipeline costs seconds and RSS
    os.chdir(REPO)
    rss0 = _rss_mb()
    t = time.perf_counter()
    pipe = classes[task].from_pretrained(case["model"], device="cpu", precision=precision)
    load_s = time.perf_counter() - t
    rss_loaded = _rss_mb()

    outputs = []

    def item():
        outputs[:] = [pipe(*case["args"], **case["kwargs"])]

    first_s = _timed(item)
    if first_s > slow_item_s:  # a slow item is its own warm-up: time it once more at most
        repeats = min(repeats, 1 if first_s < 3 * slow_item_s else 0)
    warm = [_timed(item) for _ in range(repeats)]
    result = dict(task=task, precision=getattr(getattr(pipe, "precision", None), "name", precision),
                  load_s=round(load_s, 3), first_s=round(first_s, 3),
                  latency_s=round(_median(warm) if warm else first_s, 3), repeats=len(warm),
                  rss_before_load_mb=round(rss0, 1), rss_loaded_mb=round(rss_loaded, 1),
                  peak_rss_mb=round(_peak_rss_mb(), 1), threads=torch.get_num_threads(),
                  message=str(getattr(outputs[0], "message", "") or "")[:200])
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        kwargs = {**case["kwargs"], **case.get("profile_kwargs", {})}
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            wall = _timed(lambda: pipe(*case["args"], **kwargs))
        result["profile"] = _top_ops(prof, wall)
        result["profile"]["overrides"] = case.get("profile_kwargs", {})
    return result


def _child(task: str, precision: str, repeats: int, profile: bool, threads: int, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "genstudio.bench_speed", "--task", task, "--precision", precision,
           "--repeats", str(repeats), "--threads", str(threads)] + (["--profile"] if profile else [])
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return dict(error=f"exit {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def bench_pipelines(report, quick: bool = False, tasks=None, threads: int = 1, repeats: int = 1,
                    profile: bool = True, timeout: float = 300) -> None:
    from .precision import resolve_precision
    tasks = list(tasks or PIPELINE_CASES)
    if quick:  # the shipped checkpoints take minutes: quick mode only says it skipped them
        report.note("quick: pipeline rows skipped (run `genstudio bench speed` for them)")
        return
    auto = resolve_precision("cpu", "auto")
    for task in tasks:
        if not (REPO / "checkpoints" / PIPELINE_CASES[task]["model"]).is_dir():
            report.note(f"pipeline {task}: checkpoints/{PIPELINE_CASES[task]['model']} missing, skipped")
            continue
        rows = {}
        for precision in (["fp32"] if auto.name == "fp32" else ["fp32", "auto"]):
            r = _child(task, precision, repeats, profile and precision == "auto" or (profile and auto.name == "fp32"),
                       threads, timeout)
            if "error" in r:
                report.note(f"pipeline {task} ({precision}): {r['error']}")
                continue
            rows[precision] = r
            label = "auto" if precision == "auto" else "fp32"
            extra = {}
            if precision == "auto" and "fp32" in rows:
                f = rows["fp32"]
                extra = dict(time_ratio=round(r["latency_s"] / f["latency_s"], 3),
                             mem_ratio=round(r["peak_rss_mb"] / f["peak_rss_mb"], 3))
            report.add(f"{task} {label} ({r['precision']})", f"pipeline {task}", precision=r["precision"],
                       seconds=r["latency_s"], throughput=round(1 / r["latency_s"], 3), unit="item/s",
                       baseline="-" if precision == "fp32" else f"{task} fp32 (fp32)", **extra,
                       first_s=r["first_s"], load_s=r["load_s"], peak_rss_mb=r["peak_rss_mb"],
                       load_rss_mb=round(r["rss_loaded_mb"] - r["rss_before_load_mb"], 1))
            if r.get("message"):
                report.note(f"pipeline {task} ({r['precision']}) said: {r['message']}")
            prof = r.get("profile")
            if prof:
                tops = "; ".join(f"`{t['op']}` {t['self_s']:.2f} s ({100 * t['share']:.0f}% of wall, {t['calls']} calls)"
                                 for t in prof["top"])
                changed = "".join(f", {k}={v}" for k, v in prof.get("overrides", {}).items())
                report.note(f"profile {task} ({r['precision']}, one item{changed}, {prof['wall_s']:.1f} s wall): top self-CPU "
                            f"ops: {tops}; outside torch ops (Python, tokenizer, numpy, I/O): "
                            f"{100 * prof['outside_ops_share']:.0f}% of wall.")
        report.note(f"pipeline {task}: {PIPELINE_CASES[task]['model']}, {PIPELINE_CASES[task]['what']}; "
                    "each precision in a fresh subprocess; seconds = median warm item "
                    f"({repeats} after one cold item, first_s); peak_rss_mb = the subprocess's peak RSS (VmHWM).")


# ---------------------------------------------------------------- the benchmark

def bench_speed(report, quick: bool = False, threads: int = 1, sections: str = "dit,lm,threads,pipelines",
                pipelines: str | None = None, repeats: int = 1, profile: bool = True) -> None:
    """`genstudio bench speed`: see the module docstring. `threads` (0 = torch's default) applies to
    every section; `sections` picks some of dit, lm, threads, pipelines; `pipelines` a comma list."""
    from .precision import resolve_precision
    auto = resolve_precision("cpu", "auto")
    before = torch.get_num_threads()
    threads = int(threads)
    report.note(f"precision policy: auto = {auto.name} ({auto.reason}); torch threads = "
                f"{threads or before} of {os.cpu_count()} cores; quick = {quick}.")
    wanted = [s.strip() for s in str(sections).split(",") if s.strip()]
    profile = str(profile).strip().lower() not in ("0", "false", "no", "off")  # `-o profile=false` is a string
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        if "dit" in wanted:
            bench_dit_vs_diffusers(report, quick)
        if "lm" in wanted:
            bench_lm_generate(report, quick)
        if "threads" in wanted:
            torch.set_num_threads(before)
            bench_threads(report, quick, threads or 1, before)
            if threads > 0:
                torch.set_num_threads(threads)
        if "pipelines" in wanted:
            tasks = [t.strip() for t in pipelines.split(",")] if pipelines else None
            bench_pipelines(report, quick, tasks=tasks, threads=threads, repeats=int(repeats), profile=profile)
    finally:
        torch.set_num_threads(before)


def _main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description="one pipeline case of `genstudio bench speed`, in this process")
    ap.add_argument("--task", required=True, choices=sorted(PIPELINE_CASES))
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(json.dumps(run_pipeline_case(a.task, a.precision, a.repeats, a.profile)), flush=True)


if __name__ == "__main__":
    _main()
