"""`genstudio compress CHECKPOINT --method vq4dit --bits 2 -o OUT`: post-training weight compression of a DiT.

Methods (all store the same packed format, genstudio/vq4dit.py):
  vq4dit  VQ4DiT: k-means codebooks, then zero-data block-wise calibration of codebooks and
          candidate assignments (below)
  kmeans  the same codebooks and nearest-codeword assignments, no calibration (baseline)
  rtn     round-to-nearest uniform per output channel at the same bits (baseline)

VQ4DiT calibration, zero-data and block-wise:
1. The full-precision pipeline samples from pure noise with its own sampler
   (`pipe.calibration_samples`); forward hooks record every DiT block's inputs (hidden states,
   conditioning c, any other argument) and outputs at every sampled timestep.
2. Block by block (a tqdm bar): each linear layer of the block gets a k-means codebook and, per
   sub-vector, its `candidates` nearest codewords with softmax ratios (`SoftVQLinear`). Codebooks,
   ratios and biases are trained with RMSprop (as the reference) so that the quantised block's
   output matches the FP block's (MSE, normalised by the k-means initialisation's), plus a
   regulariser sum_i p_i (1 - p_i) whose weight ramps up so that each ratio vector ends near
   one-hot. Then every sub-vector takes its most likely candidate and the codebooks (and biases)
   are tuned further with hard assignments. A block whose calibrated error is not below its
   k-means error keeps k-means.
3. The quantised block's own outputs feed the next block (when the model chains blocks), so a
   block also learns to absorb the error of those before it.

The pipeline protocol (the core imports no pipeline): a pipeline class opts in with
    compress_component = "transformer"     # the attribute holding the DiT; its checkpoint subfolder, if any
    def calibration_samples(self, num_samples, num_inference_steps, generator) -> Tensor
which samples from pure noise with the pipeline's own sampler (VDT: generation, then prediction
and interpolation of what it generated). `genstudio.vq4dit.load_model` loads the result.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .limits import check_time

from .vq4dit import (METHODS, VQ_SETTINGS, RTNWeight, SoftVQLinear, VQWeight, block_linears, dit_blocks,
                     quantization_config, save_compressed)


@dataclass
class CalibrationOptions:
    """VQ4DiT calibration settings (defaults sized for minutes on a CPU; the paper runs far longer)."""
    samples: int = 8            # clips / images sampled from pure noise
    steps: int = 10             # sampler steps per sample: every step is one recorded input per block
    iters: int = 100            # optimisation steps per block
    batch: int = 2              # samples per optimisation step
    candidates: int = 2         # candidate codewords per sub-vector (the reference keeps 2)
    soft_fraction: float = 0.75  # share of `iters` with soft ratios; the rest tunes codebooks with hard assignments
    lr_codebook: float = 1e-3
    lr_logits: float = 5e-2     # the reference's ratio learning rate
    lr_bias: float = 1e-4       # the reference's bias learning rate
    reg_weight: float = 1.0     # final weight of the one-hot regulariser
    kmeans_iters: int = 25
    eval_items: int = 16        # recorded inputs used to score a block before / after calibration


# ---------------------------------------------------------------- recording block inputs

class BlockRecorder:
    """Forward hooks that keep each block's (args, kwargs) and output, detached, per call."""

    def __init__(self, blocks: list[nn.Module]):
        self.inputs = [[] for _ in blocks]
        self.outputs = [[] for _ in blocks]
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._pre(i), with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._post(i)))

    def _pre(self, i):
        def hook(module, args, kwargs):
            self.inputs[i].append((tuple(_detach(a) for a in args), {k: _detach(v) for k, v in kwargs.items()}))
        return hook

    def _post(self, i):
        def hook(module, args, output):
            self.outputs[i].append(_detach(output))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _detach(value):
    return value.detach() if torch.is_tensor(value) else value


def _rows(entry) -> int:
    """The batch size of a recorded call: the first dimension of its first tensor argument."""
    args, kwargs = entry
    first = next((v for v in (*args, *kwargs.values()) if torch.is_tensor(v) and v.ndim), None)
    if first is None:
        raise ValueError("a DiT block was called without a tensor argument; cannot calibrate it")
    return first.shape[0]


def _take(entries: list, picks: list[tuple[int, int]]):
    """Concatenate rows `picks` = [(entry, row), ...] of recorded calls into one call's (args, kwargs).
    Tensors whose first dimension is the call's batch are sliced; everything else is taken as is."""
    def pick(values_of):
        first = values_of(entries[picks[0][0]])
        out = []
        for j, value in enumerate(first):
            if torch.is_tensor(value) and value.ndim and value.shape[0] == _rows(entries[picks[0][0]]):
                out.append(torch.cat([values_of(entries[e])[j][r:r + 1] for e, r in picks]))
            else:
                out.append(value)
        return out
    args = pick(lambda entry: entry[0])
    keys = list(entries[picks[0][0]][1])
    kwargs = dict(zip(keys, pick(lambda entry: [entry[1][k] for k in keys])))
    return tuple(args), kwargs


def _take_output(outputs: list, picks):
    return torch.cat([outputs[e][r:r + 1] for e, r in picks])


# ---------------------------------------------------------------- calibrating one block

def _swap_in_soft_layers(block: nn.Module, prefix: str, inits: dict, candidates: int) -> dict[str, SoftVQLinear]:
    soft = {}
    for name, init in inits.items():
        relative = name[len(prefix) + 1:]
        parent, _, child = relative.rpartition(".")
        linear = block.get_submodule(relative)
        soft[name] = SoftVQLinear(init, linear.weight, linear.bias, candidates)
        setattr(block.get_submodule(parent) if parent else block, child, soft[name])
    return soft


@torch.no_grad()
def _block_mse(block, entries, targets, picks, batch) -> float:
    total = 0.0
    for s in range(0, len(picks), batch):
        chunk = picks[s:s + batch]
        args, kwargs = _take(entries, chunk)
        total += F.mse_loss(block(*args, **kwargs).float(), _take_output(targets, chunk).float()).item() * len(chunk)
    return total / max(1, len(picks))


def calibrate_block(block: nn.Module, prefix: str, inits: dict[str, VQWeight], entries: list, targets: list,
                    opts: CalibrationOptions, generator: torch.Generator):
    """VQ4DiT on one block: returns ({layer: VQWeight}, {layer: bias}, stats, the calibrated block
    (None when k-means was kept)). `entries` are the block's recorded calls (inputs, possibly from
    the quantised blocks before it), `targets` the FP block's outputs for the same calls."""
    qblock = copy.deepcopy(block).float().train(False)
    for p in qblock.parameters():
        p.requires_grad_(False)
    soft = _swap_in_soft_layers(qblock, prefix, inits, opts.candidates)
    items = [(e, r) for e in range(len(entries)) for r in range(_rows(entries[e]))]
    order = torch.randperm(len(items), generator=generator).tolist()
    scored = [items[i] for i in order[:opts.eval_items]]

    def set_hard(flag):
        for layer in soft.values():
            layer.hard = flag

    set_hard(True)  # hard + the initial ratios = nearest codeword = the k-means weight
    init_mse = _block_mse(qblock, entries, targets, scored, opts.batch)
    set_hard(False)
    for layer in soft.values():
        layer.codebook.requires_grad_(True)
        if layer.bias is not None:
            layer.bias.requires_grad_(True)
    groups = [{"params": [m.codebook for m in soft.values()], "lr": opts.lr_codebook},
              {"params": [m.logits for m in soft.values()], "lr": opts.lr_logits}]
    biases = [m.bias for m in soft.values() if m.bias is not None]
    if biases:
        groups.append({"params": biases, "lr": opts.lr_bias})
    optimizer = torch.optim.RMSprop(groups, alpha=0.9)
    soft_iters = int(round(opts.iters * opts.soft_fraction))
    scale = max(init_mse, 1e-12)
    with torch.enable_grad():
        for step in range(opts.iters):
            check_time()  # --max-seconds
            if step == soft_iters:
                for layer in soft.values():
                    layer.harden()
            chunk = [items[i] for i in torch.randint(len(items), (min(opts.batch, len(items)),),
                                                     generator=generator).tolist()]
            args, kwargs = _take(entries, chunk)
            loss = F.mse_loss(qblock(*args, **kwargs).float(), _take_output(targets, chunk).float()) / scale
            if step < soft_iters:
                ramp = opts.reg_weight * (step + 1) / max(1, soft_iters)
                loss = loss + ramp * torch.stack([m.regularizer() for m in soft.values()]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for layer in soft.values():
        layer.harden()
    final_mse = _block_mse(qblock, entries, targets, scored, opts.batch)
    kept = final_mse < init_mse
    stats = {"block": prefix, "kmeans_mse": init_mse, "calibrated_mse": final_mse, "kept": "vq4dit" if kept else "kmeans",
             "changed_assignments": sum(int((m.chosen() != m.candidates[:, 0]).sum()) for m in soft.values())}
    if not kept:  # calibration did not help on the scored inputs: keep the k-means initialisation
        originals = dict(block.named_modules())
        return dict(inits), {n: _bias(originals[n[len(prefix) + 1:]]) for n in inits}, stats, None
    return ({n: m.to_vq_weight() for n, m in soft.items()},
            {n: None if m.bias is None else m.bias.detach().clone() for n, m in soft.items()}, stats, qblock)


def _bias(linear):
    return None if linear.bias is None else linear.bias.detach().clone()


# ---------------------------------------------------------------- the whole model

def compress_model(pipe, method: str = "vq4dit", bits: int = 2, opts: CalibrationOptions | None = None,
                   seed: int = 0, progress: bool = True, kmeans_cache: dict | None = None) -> tuple[dict, dict]:
    """Quantise the linear layers of the DiT blocks of `getattr(pipe, pipe.compress_component)`:
    returns ({layer: VQWeight | RTNWeight}, stats). The model keeps its FP weights (only biases
    change, by calibration); `genstudio.vq4dit.save_compressed` writes the two together.
    `kmeans_cache` (a dict) shares k-means codebooks between the kmeans and vq4dit methods of one
    model (the benchmark runs both); stats["kmeans_seconds"] counts only k-means computed here."""
    from tqdm.auto import tqdm
    opts = opts or CalibrationOptions()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if bits not in VQ_SETTINGS:
        raise ValueError(f"--bits must be one of {', '.join(map(str, VQ_SETTINGS))}, got {bits}")
    model = getattr(pipe, pipe.compress_component)
    blocks = dit_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no DiT blocks to quantise")
    d, k = VQ_SETTINGS[bits]
    started = time.perf_counter()
    stats: dict = {"method": method, "bits": bits, "kmeans_seconds": 0.0}
    if method == "rtn":
        layers = {n: RTNWeight.fit(m.weight, bits) for name, b in blocks for n, m in block_linears(b, name).items()}
        stats["seconds"] = round(time.perf_counter() - started, 2)
        return layers, stats

    def kmeans_init(block_name, block, index):
        inits = {}
        for j, (n, m) in enumerate(block_linears(block, block_name, d).items()):
            key = (n, d, k, opts.kmeans_iters, seed)
            if kmeans_cache is None or key not in kmeans_cache:
                t = time.perf_counter()
                fitted = VQWeight.fit(m.weight, d, k, opts.kmeans_iters,
                                      torch.Generator().manual_seed(seed * 1000003 + index * 101 + j))
                stats["kmeans_seconds"] += time.perf_counter() - t
                if kmeans_cache is None:
                    inits[n] = fitted
                    continue
                kmeans_cache[key] = fitted
            inits[n] = VQWeight(kmeans_cache[key].codebook.clone(), kmeans_cache[key].indices.clone())
        return inits

    if method == "kmeans":
        layers = {}
        for i, (name, block) in enumerate(tqdm(blocks, desc="k-means", disable=not progress)):
            layers.update(kmeans_init(name, block, i))
        stats["seconds"] = round(time.perf_counter() - started, 2)
        return layers, stats

    # vq4dit: 1. record block inputs from the FP pipeline's own sampling
    modules = [b for _, b in blocks]
    recorder = BlockRecorder(modules)
    try:
        pipe.calibration_samples(opts.samples, opts.steps, torch.Generator().manual_seed(seed))
    finally:
        recorder.remove()
    if not recorder.inputs[0]:
        raise RuntimeError("calibration sampling never called the DiT blocks")
    stats["sampling_seconds"] = round(time.perf_counter() - started, 2)
    # 2. block by block, on the quantised prefix's own outputs where blocks chain
    generator = torch.Generator().manual_seed(seed)
    layers, per_block = {}, []
    student = recorder.inputs[0]
    for i, (name, block) in enumerate(tqdm(blocks, desc="VQ4DiT calibration", unit="block", disable=not progress)):
        inits = kmeans_init(name, block, i)
        weights, biases, block_stats, qblock = calibrate_block(block, name, inits, student, recorder.outputs[i],
                                                               opts, generator)
        layers.update(weights)
        per_block.append(block_stats)
        for n, bias in biases.items():
            if bias is not None:
                block.get_submodule(n[len(name) + 1:]).bias.data.copy_(bias)
        if i + 1 < len(blocks):
            student = _next_inputs(recorder, i, student, qblock if qblock is not None else _hard_block(block, name, inits))
    stats.update(seconds=round(time.perf_counter() - started, 2), blocks=per_block, options=asdict(opts),
                 kmeans_seconds=round(stats["kmeans_seconds"], 2))
    return layers, stats


def _hard_block(block, prefix, weights: dict[str, VQWeight]):
    q = copy.deepcopy(block).float()
    with torch.no_grad():
        for n, w in weights.items():
            q.get_submodule(n[len(prefix) + 1:]).weight.copy_(w.dequantize())
    return q


@torch.no_grad()
def _next_inputs(recorder: BlockRecorder, i: int, student: list, qblock) -> list:
    """Block i+1's calls with the quantised block i's outputs as hidden states, when block i+1
    takes block i's output as its first argument (the DiT loop); else the FP inputs."""
    fp_next, fp_out = recorder.inputs[i + 1], recorder.outputs[i]
    chained = len(fp_next) == len(fp_out) and all(
        a[0] and torch.is_tensor(a[0][0]) and torch.is_tensor(o) and a[0][0].data_ptr() == o.data_ptr()
        and a[0][0].shape == o.shape for a, o in zip(fp_next, fp_out))
    if not chained:
        return fp_next
    out = []
    for (args, kwargs), (next_args, next_kwargs) in zip(student, fp_next):
        out.append(((qblock(*args, **kwargs).detach(), *next_args[1:]), next_kwargs))
    return out


# ---------------------------------------------------------------- checkpoint in, checkpoint out

@dataclass
class CompressResult:
    output: Path
    method: str
    bits: int
    seconds: float
    size_mb: float
    source_size_mb: float
    stats: dict = field(default_factory=dict)


def weights_size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors")) / 1e6


def compress_checkpoint(checkpoint, output, method: str = "vq4dit", bits: int = 2,
                        opts: CalibrationOptions | None = None, seed: int = 0, overwrite: bool = False,
                        device: str = "cpu", progress: bool = True, kmeans_cache: dict | None = None) -> CompressResult:
    """Compress the DiT of `checkpoint` (a name, folder or hub id) into the new folder `output`,
    written to a temporary folder beside it and renamed into place."""
    from .export import _replaceable, write_folder_atomically
    from .hub import resolve
    from .pipeline import PipelineMixin, checkpoint_classes, pipeline_classes, task_of_checkpoint
    output = Path(output)
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: choose from {', '.join(METHODS)}")
    if bits not in VQ_SETTINGS:
        raise ValueError(f"--bits {bits}: choose from {', '.join(map(str, VQ_SETTINGS))}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists: pass --overwrite to replace it")
    if output.exists() and not _replaceable(output):
        raise ValueError(f"{output} exists and is not a checkpoint folder: --overwrite only replaces a checkpoint")
    folder = resolve(checkpoint)
    task = task_of_checkpoint(folder)
    if task is None:
        declared = ", ".join(checkpoint_classes(folder)) or "no model class"
        raise ValueError(f"{folder} is not a checkpoint of an installed pipeline (it declares {declared})")
    cls = pipeline_classes()[task]
    component = getattr(cls, "compress_component", None)
    if not component or getattr(cls, "calibration_samples", None) is PipelineMixin.calibration_samples:
        raise ValueError(f"{folder} is a {task} ({cls.paper or cls.__name__}) checkpoint; `genstudio compress` "
                         "needs a DiT pipeline that offers calibration_samples")
    model_dir = folder / component if (folder / component / "config.json").is_file() else folder
    if quantization_config(model_dir) is not None:
        raise ValueError(f"{folder} is already compressed ({quantization_config(model_dir)['method']}): "
                         "compress the full-precision checkpoint")
    if output.resolve() == folder.resolve() or folder.resolve() in output.resolve().parents:
        raise ValueError(f"-o {output} lies inside the checkpoint {folder}: write to a folder of its own")
    pipe = cls.from_pretrained(folder, device=device, precision="fp32")
    pipe.set_progress_bar_config(disable=True)
    started = time.perf_counter()
    layers, stats = compress_model(pipe, method, bits, opts, seed, progress, kmeans_cache)
    seconds = time.perf_counter() - started
    model = getattr(pipe, component)
    config = json.loads((model_dir / "config.json").read_text())
    d, k = VQ_SETTINGS[bits]
    qconfig = {"quant_method": method, "method": method, "bits": bits, "source": str(checkpoint), "seed": seed,
               "quantized": "every nn.Linear inside the DiT blocks; embedders, final layer and norms stay fp16",
               "seconds": round(seconds, 2)}
    if method != "rtn":
        qconfig.update(subvector_dim=d, codebook_size=k)
    if method == "vq4dit":
        qconfig["calibration"] = {key: stats[key] for key in ("options", "blocks", "sampling_seconds")}
    write_folder_atomically(output, lambda tmp: _write(tmp, folder, model_dir, model, layers, config, qconfig))
    return CompressResult(output, method, bits, round(seconds, 2),
                          round(weights_size_mb(output / model_dir.relative_to(folder)), 4),
                          round(weights_size_mb(model_dir), 4), stats)


def _write(tmp: Path, folder: Path, model_dir: Path, model, layers, config, qconfig) -> None:
    relative = model_dir.relative_to(folder)
    for path in folder.iterdir():  # the other parts and records (a VAE, summary.json, ...); not the card
        if path.name == "README.md" or path == model_dir or (relative == Path(".") and
                                                             (path.suffix == ".safetensors" or path.name == "config.json")):
            continue
        (shutil.copytree if path.is_dir() else shutil.copy2)(path, tmp / path.name)
    save_compressed(model, layers, tmp / relative, config, qconfig)
    bits, method = qconfig["bits"], qconfig["method"]
    layout = (f"sub-vectors of {qconfig['subvector_dim']} weights, codebooks of up to {qconfig['codebook_size']} "
              "fp16 codewords per layer" if method != "rtn" else "uniform levels, one fp16 scale per output channel")
    (tmp / "README.md").write_text(
        f"# {qconfig['source']} compressed with {method}, {bits} bits per weight\n\n"
        f"Made by `genstudio compress {qconfig['source']} --method {method} --bits {bits}` in {qconfig['seconds']} s: "
        f"{qconfig['quantized']}; {layout}. Load it like the original (`from_pretrained` of its pipeline); "
        "config.json's `quantization_config` says how the weights are packed. See docs/VQ4DiT.md.\n")
