"""`genstudio bench compress`: VQ4DiT against the simple weight-compression baselines, per DiT checkpoint.

For every checkpoint (`checkpoints=a,b`; default: the shipped checkpoint of every installed
pipeline that supports `genstudio compress`, i.e. has `compress_component` and
`calibration_samples`, and registers a quality evaluator) and every bit width (`bits=2,3,4`), in one run:

* fp16: the checkpoint as shipped (the reference every quality metric compares with);
* int8-dynamic: torch.ao.quantization.quantize_dynamic on the nn.Linear layers of the DiT blocks
  (8-bit weights, activations quantised on the fly); its size is the serialised state dict;
* rtn / kmeans / vq4dit at each bit width, written with `genstudio compress` to a temporary folder
  and loaded back through the pipeline's own `from_pretrained` (dequantised, the default);
* vq4dit (gather): the same VQ4DiT checkpoint run with `VQLinear` (codewords gathered per call).

Columns: file size (MB of safetensors), compress_s (k-means + calibration), weights_mb_ram (what
the model's state dict takes in memory as loaded), fwd_ms (one model forward, median
of 5, per sample), then the task's quality metrics from its evaluator (entry-point group
`genstudio.compress_evals`; the video one: prediction MSE / SSIM on held-out clips, similarity to
the fp16 model's outputs with the same seed, seconds per clip).
"""
from __future__ import annotations

import copy
import io
import tempfile
import time
import warnings
from pathlib import Path

import torch


def compress_evaluators() -> dict:
    from .pipeline import loaded_entry_points
    return loaded_entry_points("genstudio.compress_evals")


def compressible_pipelines() -> dict[str, type]:
    """Task -> pipeline class, for every installed pipeline that `genstudio compress` supports."""
    from .pipeline import PipelineMixin, pipeline_classes
    return {task: cls for task, cls in sorted(pipeline_classes().items())
            if getattr(cls, "compress_component", None) and cls.default_model
            and getattr(cls, "calibration_samples", None) is not PipelineMixin.calibration_samples}


def default_checkpoints() -> list[str]:
    """The shipped checkpoint of every compressible pipeline that registers a quality evaluator
    (`genstudio.compress_evals`); others run with `-o checkpoints=NAME` (sizes and speed only)."""
    evaluators = compress_evaluators()
    return [cls.default_model for task, cls in compressible_pipelines().items() if task in evaluators]


def _as_list(value, cast=str) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [cast(v) for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [cast(value)]
    return [cast(v) for v in value]


def _memory_mb(model) -> float:
    """What the model's weights take in memory: every tensor of its state dict (packed int8 ones too)."""
    def size(value) -> int:
        if torch.is_tensor(value):
            return value.numel() * value.element_size()
        return sum(size(v) for v in value) if isinstance(value, (tuple, list)) else 0
    return sum(size(v) for v in model.state_dict().values()) / 1e6


@torch.no_grad()
def _output(model, example):
    """The model's output for `example` (x, t); None when the model wants other arguments (e.g. labels)."""
    try:
        return model(*example)
    except (TypeError, ValueError, RuntimeError):
        return None


@torch.no_grad()
def _forward_ms(model, example, repeats: int = 5) -> float | None:
    """Median milliseconds of one forward per sample on `example`; None when the model wants other arguments."""
    if _output(model, example) is None:
        return None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(*example)
        times.append(time.perf_counter() - t)
    return round(sorted(times)[len(times) // 2] * 1000 / example[0].shape[0], 2)


def _example_inputs(model, batch: int = 2):
    """A batch for one forward: (x, t) shaped like the model's samples (VDT: sample_shape; DiT: config)."""
    generator = torch.Generator().manual_seed(0)
    shape = getattr(model, "sample_shape", None)
    if shape is None:
        c = model.config
        shape = (c.in_channels, c.input_size, c.input_size)
    x = torch.randn(batch, *shape, generator=generator)
    return x, torch.full((batch,), 500)


def _int8_dynamic(model):
    """torch's dynamic int8 on the nn.Linear layers of the DiT blocks (the layers the other methods
    quantise; the timestep embedder reads `.weight.dtype`, which a DynamicQuantizedLinear lacks)."""
    from .vq4dit import block_linears, dit_blocks
    model = copy.deepcopy(model).float()
    names = {n for name, block in dit_blocks(model) for n in block_linears(block, name)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        quantized = torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
        buffer = io.BytesIO()
        torch.save(quantized.state_dict(), buffer)
    return quantized, buffer.tell() / 1e6


def bench_compress(report, quick: bool = False, checkpoints=None, bits=(2, 3, 4), methods=("rtn", "kmeans", "vq4dit"),
                   samples: int = 8, steps: int = 10, iters: int = 60, seed: int = 0, **eval_options) -> None:
    """See the module doc. `eval_options` go to the task's evaluator (video: clips, steps, num_known).
    iters=60 (the command's default is 100) keeps three calibrations within a few minutes on 1 CPU thread."""
    from .compress import CalibrationOptions, compress_checkpoint, weights_size_mb
    from .hub import checkpoints_dir, resolve
    from .pipeline import pipeline_classes, task_of_checkpoint
    from .vq4dit import load_model
    if quick:
        bits, samples, steps, iters = (2,), 2, 2, 4
    names = _as_list(checkpoints)
    if not names:  # the defaults that are here (a pipeline may be installed before its checkpoint ships)
        names = default_checkpoints()
        missing = [n for n in names if not (checkpoints_dir() / n).is_dir()]
        names = [n for n in names if n not in missing]
        if missing:
            report.note(f"not here, skipped: {', '.join(missing)}")
        unscored = [cls.default_model for cls in compressible_pipelines().values()
                    if cls.default_model not in names + missing]
        if unscored:
            report.note(f"no quality evaluator (genstudio.compress_evals), not run by default: {', '.join(unscored)} "
                        "(add `-o checkpoints=NAME` for its sizes and speed)")
    bits = _as_list(bits, int)
    methods = _as_list(methods)
    opts = CalibrationOptions(samples=samples, steps=steps, iters=iters)
    evaluators = compress_evaluators()
    for name in names:
        folder = resolve(name)
        task = task_of_checkpoint(folder)
        if task is None:
            report.note(f"{name}: no installed pipeline loads it: skipped")
            continue
        cls = pipeline_classes()[task]
        component = cls.compress_component
        evaluate = evaluators.get(task)
        if evaluate is None:
            report.note(f"{name}: the {task} pipeline registers no genstudio.compress_evals entry: sizes and speed only")
        reference = cls.from_pretrained(folder, device="cpu", precision="fp32")
        reference.set_progress_bar_config(disable=True)
        example = _example_inputs(getattr(reference, component))
        cache: dict = {}

        def add(method, width, pipe, size_mb, seconds, quality=True, **extra):
            model = getattr(pipe, component)
            metrics = evaluate(pipe, reference, cache, quick=quick, **eval_options) if evaluate and quality else {}
            report.add(method, name, bits=width, size_mb=round(size_mb, 3), compress_s=round(seconds, 1),
                       weights_mb_ram=round(_memory_mb(model), 2), fwd_ms=_forward_ms(model, example), **extra,
                       **metrics)

        model_dir = folder / component if (folder / component / "config.json").is_file() else folder
        add("fp16", 16, reference, weights_size_mb(model_dir), 0.0)
        int8, int8_mb = _int8_dynamic(getattr(reference, component))
        pipe = cls.from_pretrained(folder, device="cpu", precision="fp32")
        pipe.set_progress_bar_config(disable=True)
        setattr(pipe, component, int8)
        add("int8-dynamic", 8, pipe, int8_mb, 0.0)
        kmeans_cache: dict = {}  # kmeans and vq4dit start from the same codebooks: computed once per bit width
        with tempfile.TemporaryDirectory(prefix="bench_compress_") as tmp:
            for width in bits:
                shared_kmeans_s = 0.0
                for method in methods:
                    out = Path(tmp) / f"{method}-{width}"
                    result = compress_checkpoint(folder, out, method, width, opts, seed=seed, progress=not quick,
                                                 kmeans_cache=kmeans_cache)
                    own_kmeans_s = result.stats.get("kmeans_seconds", 0.0)
                    shared_kmeans_s = max(shared_kmeans_s, own_kmeans_s)
                    seconds = result.seconds + (shared_kmeans_s if method != "rtn" and not own_kmeans_s else 0.0)
                    pipe = cls.from_pretrained(out, device="cpu", precision="fp32")
                    pipe.set_progress_bar_config(disable=True)
                    add(method, width, pipe, result.size_mb, seconds)
                    if method == "vq4dit":  # the same weights run by VQLinear: only speed and memory differ
                        out_dir = out / component if (out / component / "config.json").is_file() else out
                        dequantized = getattr(pipe, component)
                        gathered = load_model(type(dequantized), out_dir, mode="gather")
                        a, b = _output(gathered, example), _output(dequantized, example)
                        diff = None if a is None or b is None else (a - b).abs().max().item()
                        setattr(pipe, component, gathered)
                        add("vq4dit (gather)", width, pipe, result.size_mb, seconds, quality=False,
                            max_abs_diff_vs_dequantized=diff)
    report.note("fp16 = the shipped checkpoint (fp16 on disk, run in fp32): every *_vs_fp metric compares with it "
                "(same clips, same seed). rtn = uniform round-to-nearest, asymmetric, per output channel; kmeans = "
                "VQ with k-means codebooks and nearest-codeword assignments, no calibration; vq4dit = the same "
                "codebooks calibrated with candidate assignments (zero-data, block-wise). 2 bits: d=4, K=256; 3 bits: "
                "d=2, K=64; 4 bits: d=2, K=256; rtn/kmeans/vq4dit quantise the linear layers of the DiT blocks, "
                "embedders/final layer/norms stay fp16. int8-dynamic = torch's quantize_dynamic on the same layers (8-bit "
                "per-tensor weights, activations quantised per call). size_mb: the safetensors file (int8: torch.save of its state "
                "dict). weights_mb_ram: the state dict's tensors as loaded (dequantised = fp32 dense; gather = fp32 "
                "codebooks + int32 indices; int8 = packed int8 weights). fwd_ms: one forward per sample, median of 5, 1 thread if "
                "OMP_NUM_THREADS=1; compress_s = k-means (+ calibration sampling and calibration for vq4dit); the k-means codebooks "
                "are computed once per bit width and shared by the kmeans and vq4dit rows, and both rows count that time.")
    report.note(f"vq4dit calibration: {samples} samples x {steps} steps from pure noise, {iters} RMSprop steps per "
                f"block (`genstudio compress` defaults to 100), seed {seed}. vq4dit (gather) rows: the same checkpoint "
                "loaded with mode='gather' (identical outputs, see max_abs_diff_vs_dequantized); only speed and memory "
                "are measured.")
