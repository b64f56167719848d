"""The one precision policy: bf16 only where the device does it natively, else fp32.

    from genstudio.precision import resolve_precision, autocast
    p = resolve_precision("cpu")          # Precision(name="bf16" | "fp32", dtype, reason)
    with autocast("cpu", p):              # a no-op for fp32
        ...

Why a policy: on a CPU without AVX-512 BF16 or AMX, torch emulates bf16 and a bf16 matmul runs
10-300x slower than fp32 (measured: 0.3 GFLOP/s vs 100 on an AVX2 EPYC). So `auto` means

- CUDA: bf16 where the GPU supports it, else fp16;
- CPU: bf16 when the processor has AMX or AVX-512 BF16 (asked of torch, then of /proc/cpuinfo);
  when neither answer is available, a one-off micro-benchmark (bf16 vs fp32 matmul) decides and
  its verdict is cached per machine in ~/.cache/genstudio/precision.json;
- MPS and anything else: fp32;
- and on a CPU, batch-1 autoregressive decoding (StarVector, MeshAnything: `workload="decode"`)
  stays fp32 even where bf16 is native: autocast re-casts every weight at every token, which made
  both pipelines ~1.6x slower than fp32 (benchmarks/results/speed.md).
`GENSTUDIO_CPU_BF16=0|1` overrides the CPU detection (for a machine it gets wrong, or to try the
other path: with `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` an AVX-512 machine behaves like
an AVX2-only one).

Inference (every pipeline) and training (`genstudio.train`) both ask this module; an explicit
`fp32` / `bf16` / `fp16` is honoured as given (fp16 autocast on CPU is refused: no CPU kernel
makes it fast).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
WORKLOADS = ("compute", "decode")


@dataclass(frozen=True)
class Precision:
    name: str          # "fp32" | "bf16" | "fp16"
    reason: str        # one line: why this was chosen

    @property
    def dtype(self):
        """The autocast dtype, or None for plain fp32."""
        import torch
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def accelerate_name(self) -> str:
        """accelerate's `mixed_precision` value."""
        return {"fp32": "no"}.get(self.name, self.name)


# ---------------------------------------------------------------- CPU capability

def _cpuinfo_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_bf16_native() -> tuple[bool | None, str]:
    """(True/False, how it was found), or (None, why unsure) when nothing could tell."""
    import torch
    forced = os.environ.get("GENSTUDIO_CPU_BF16", "").strip().lower()
    if forced in ("0", "1", "false", "true", "no", "yes"):  # an escape hatch where detection is wrong
        return forced in ("1", "true", "yes"), f"GENSTUDIO_CPU_BF16={forced}"
    probes = [(getattr(torch.cpu, "_is_amx_tile_supported", None), "AMX"),
              (getattr(torch.cpu, "_is_avx512_bf16_supported", None), "AVX-512 BF16")]
    answered = False
    for probe, label in probes:
        if probe is None:
            continue
        try:
            if probe():
                return True, f"the CPU has {label} (torch)"
            answered = True
        except Exception:  # a private torch API: its absence or failure only means 'ask elsewhere'
            continue
    flags = _cpuinfo_flags()
    if flags is not None:
        for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16")):
            if flag in flags:
                return True, f"the CPU has {label} (/proc/cpuinfo)"
    if flags is not None or answered:
        return False, f"the CPU has neither AMX nor AVX-512 BF16 ({torch.backends.cpu.get_cpu_capability()}): bf16 is emulated"
    return None, "the CPU's bf16 support could not be read"


def _cache_file() -> Path:
    root = os.environ.get("GENSTUDIO_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genstudio")
    return Path(root) / "precision.json"


def _machine_key() -> str:
    import torch
    return f"{platform.machine()}|{platform.processor() or platform.node()}|{torch.__version__}|" \
           f"{torch.backends.cpu.get_cpu_capability()}"


def matmul_speed_ratio(n: int = 512, repeats: int = 3) -> float:
    """bf16 / fp32 matmul throughput on this CPU (> 1: bf16 is faster). About 0.1-2 s."""
    import torch
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def best(a, b):
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)
    return best(a32, b32) / max(best(a16, b16), 1e-9)


def measured_cpu_bf16() -> tuple[bool, str]:
    """The micro-benchmark's verdict, cached per machine (processor, torch version)."""
    path, key = _cache_file(), _machine_key()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        cache[key] = round(matmul_speed_ratio(), 3)
        try:
            from .render import atomic_path  # unique temp file + os.replace: concurrent runs cannot clash
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(cache, indent=1))
        except OSError:
            pass  # a read-only home: measure again next time
    ratio = cache[key]
    return ratio > 1.0, f"measured bf16 at {ratio:g}x fp32 matmul speed on this CPU"


# ---------------------------------------------------------------- the policy

@functools.lru_cache(maxsize=None)
def _auto(device: str, workload: str = "compute") -> Precision:
    import torch
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "the GPU supports bf16")
        return Precision("fp16", "the GPU has no bf16: fp16 autocast")
    if device == "cpu":
        native, why = cpu_bf16_native()
        if native is None:
            native, why = measured_cpu_bf16()
        if native and workload == "decode":
            return Precision("fp32", f"{why}, but batch-1 token-by-token decoding runs faster in fp32 "
                                     "(autocast re-casts every weight at every token; benchmarks/results/speed.md)")
        return Precision("bf16" if native else "fp32", why)
    return Precision("fp32", f"{device}: fp32 (no autocast policy for this device)")


def resolve_precision(device: str = "cpu", requested: str | None = "auto", workload: str = "compute") -> Precision:
    """`requested` (auto | fp32 | bf16 | fp16; None = auto) on `device` -> Precision.
    The device is a resolved one ('cpu', 'cuda', 'cuda:1', 'mps'). `workload`: "compute" (training,
    diffusion, batched work) or "decode" (small autoregressive models, one token at a time: on a
    CPU `auto` keeps these in fp32, where they measured faster even with native bf16)."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: use one of {', '.join(WORKLOADS)}")
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    device = str(device)
    if requested == "auto":
        return _auto(device, workload)
    if requested == "fp16" and not device.startswith("cuda"):
        raise ValueError(f"--precision fp16 needs a CUDA GPU (device is {device}); use auto, fp32 or bf16")
    if requested == "bf16" and device == "cpu":
        native, _ = cpu_bf16_native()
        note = "" if native else " (this CPU emulates bf16: expect it to be much slower than fp32)"
        return Precision("bf16", "asked for" + note)
    return Precision(requested, "asked for")


def autocast(device: str, precision: Precision | str | None = "auto"):
    """The autocast context for `precision` on `device` (nullcontext for fp32)."""
    import torch
    p = precision if isinstance(precision, Precision) else resolve_precision(device, precision)
    if p.dtype is None:
        return contextlib.nullcontext()
    kind = "cuda" if str(device).startswith("cuda") else str(device).split(":")[0]
    return torch.autocast(kind, dtype=p.dtype)
