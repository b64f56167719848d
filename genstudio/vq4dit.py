"""VQ4DiT weights: codebooks, bit-packed indices, the layers that run them, and the compressed checkpoint.

VQ4DiT (Deng et al., "VQ4DiT: Efficient Post-Training Vector Quantization for Diffusion
Transformers", AAAI 2025) splits every linear weight of the DiT blocks into sub-vectors of
dimension d (consecutive input columns of one output row) and replaces each one by a codeword of
a per-layer codebook of K entries: log2(K) / d bits per weight plus a small fp16 codebook.

    bits per weight  sub-vector d  codebook K   (the reference repo's 2- and 3-bit settings;
    2                4             256           4-bit keeps d = 2 with a 256-entry codebook)
    3                2             64
    4                2             256

Only the linear layers inside the DiT blocks are quantised (attention qkv/proj, MLP fc1/fc2, the
adaLN modulation and every other nn.Linear of a block); the embedders, the final layer and the
norms stay fp16, as in the reference (it ignores x/t/y_embedder and final_layer). K is clamped to
the largest power of two <= sub-vectors / 4 for small layers, as the reference does (from "And
the bit goes down").

This module holds what loading needs (no calibration): bit packing, k-means, the per-layer
quantisers (`VQWeight`, `RTNWeight`), `SoftVQLinear` (the calibration-time layer with candidate
assignments), `VQLinear` (a runtime layer that gathers codewords on every call), and
`save_compressed` / `load_model`. Calibration and `genstudio compress` are in genstudio/compress.py.

Checkpoint layout: the model folder keeps its config.json (so `_class_name` still identifies the
model) with an added `quantization_config`; the safetensors file keeps every other tensor under
its own name in fp16, and a quantised layer's `NAME.weight` is replaced by

    vq4dit / kmeans   NAME.weight_codebook (K, d) fp16, NAME.weight_packed uint8
    rtn               NAME.weight_scale (out,) fp16, NAME.weight_zero (out,) uint8, NAME.weight_packed uint8

`NAME.weight_packed` is a little-endian bit stream (value i occupies bits [i*b, (i+1)*b), least
significant bit first, b = the layer's `index_bits`). VQ: the values are codeword indices in
row-major (out, in/d) order and weight[o, j*d:(j+1)*d] = codebook[index[o, j]]. RTN: the values
are levels q in row-major (out, in) order and weight[o, i] = (q - zero[o]) * scale[o].

Loading (`load_model`) dequantises into ordinary nn.Linear weights by default: on CPU that ran
faster than gathering codewords on every call (docs/VQ4DiT.md has the numbers); `mode="gather"`
keeps only codebooks + indices in memory (`VQLinear`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .limits import check_time

VQ_SETTINGS = {2: (4, 256), 3: (2, 64), 4: (2, 256)}  # bits per weight -> (sub-vector dim d, codebook size K)
METHODS = ("vq4dit", "kmeans", "rtn")
LOAD_MODES = ("dequantize", "gather")
DEFAULT_LOAD_MODE = "dequantize"  # faster on CPU than gathering per call (docs/VQ4DiT.md)
PACKING = ("little-endian bit stream: value i occupies bits [i*b, (i+1)*b), least significant bit first, "
           "b = index_bits. vq4dit/kmeans: codeword indices in row-major (out, in/d) order, "
           "weight[o, j*d:(j+1)*d] = weight_codebook[index[o, j]]. rtn: levels q in row-major (out, in) order, "
           "weight[o, i] = (q - weight_zero[o]) * weight_scale[o].")


# ---------------------------------------------------------------- bit packing

def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Integers in [0, 2**bits) (any shape) -> uint8 (ceil(n * bits / 8),), little-endian bit stream."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    v = values.detach().reshape(-1).cpu().to(torch.int64).numpy()
    if v.size and (v.min() < 0 or v.max() >= 1 << bits):
        raise ValueError(f"values must lie in [0, {1 << bits}) to pack at {bits} bits, got [{v.min()}, {v.max()}]")
    planes = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The inverse of `pack_bits`: the first `count` values, int64 (count,)."""
    data = packed.detach().reshape(-1).cpu().numpy().astype(np.uint8)
    if data.size * 8 < count * bits:
        raise ValueError(f"{data.size} packed bytes hold fewer than {count} values of {bits} bits")
    planes = np.unpackbits(data, count=count * bits, bitorder="little").reshape(count, bits)
    return torch.from_numpy((planes.astype(np.int64) << np.arange(bits)).sum(axis=1))


# ---------------------------------------------------------------- k-means

def _chunks(n: int, size: int = 65536):
    return [(s, min(n, s + size)) for s in range(0, n, size)]


@torch.no_grad()
def nearest_codewords(x: torch.Tensor, codebook: torch.Tensor, count: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` nearest codewords of each row of x (N, d): (distances (N, count), indices (N, count)),
    nearest first, Euclidean, float32, in chunks (a DiT-XL layer has millions of sub-vectors)."""
    x, codebook = x.float(), codebook.float()
    norms = codebook.pow(2).sum(-1)
    dists, idx = [], []
    for s, e in _chunks(len(x)):
        d2 = (x[s:e].pow(2).sum(-1, keepdim=True) + norms[None] - 2.0 * x[s:e] @ codebook.t()).clamp_min(0)
        top = d2.topk(count, dim=1, largest=False)
        dists.append(top.values.sqrt())
        idx.append(top.indices)
    return torch.cat(dists), torch.cat(idx)


@torch.no_grad()
def kmeans(x: torch.Tensor, k: int, iters: int = 50, generator: torch.Generator | None = None, tol: float = 1e-3,
           max_points_per_code: int = 1024):
    """Plain k-means with k-means++ seeding: x (N, d) -> (codebook (k, d) float32, indices (N,) long),
    each index the nearest codeword of the returned codebook. Stops after `iters` updates or once
    fewer than `tol` of the points change cluster; empty clusters are re-seeded with the worst-fitted
    points. Layers with more than `max_points_per_code` * k sub-vectors (DiT-XL sizes) fit on a
    random subset of that size, then assign every point."""
    x = x.float()
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} (the number of vectors), got k={k}")

    def assign(points, cb):  # argmin ||c||^2 - 2 x.c (||x||^2 is constant per row); addmm is the fastest on CPU
        norms = cb.pow(2).sum(-1)[None]
        return torch.cat([torch.addmm(norms, points[s:e], cb.t(), alpha=-2).argmin(1)
                          for s, e in _chunks(len(points))])

    fit = x
    if n > max_points_per_code * k:
        fit = x[torch.randperm(n, generator=generator)[:max_points_per_code * k].to(x.device)]
    m = len(fit)
    first = int(torch.randint(m, (1,), generator=generator))
    codebook = [fit[first]]
    dist = (fit - fit[first]).pow(2).sum(1)
    for _ in range(1, k):
        total = float(dist.sum())
        probs = dist / total if total > 0 else torch.full_like(dist, 1.0 / m)
        pick = int(torch.multinomial(probs.cpu(), 1, generator=generator))  # a CPU generator, wherever x is
        codebook.append(fit[pick])
        dist = torch.minimum(dist, (fit - fit[pick]).pow(2).sum(1))
    codebook = torch.stack(codebook)
    indices = assign(fit, codebook)
    for _ in range(iters):
        check_time()  # --max-seconds (genstudio compress)
        sums = torch.zeros_like(codebook).index_add_(0, indices, fit)
        counts = torch.bincount(indices, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        codebook = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], codebook)
        if len(empty):  # re-seed with the points farthest from their codeword
            error = (fit - codebook[indices]).pow(2).sum(1)
            codebook[empty] = fit[error.topk(len(empty)).indices]
        new = assign(fit, codebook)
        changed = int((new != indices).sum())
        indices = new
        if changed <= tol * m and not len(empty):
            break
    return codebook, (indices if fit is x else assign(x, codebook))


def codebook_size_for(num_subvectors: int, k: int) -> int:
    """The reference's clamp: min(k, the largest power of two <= sub-vectors / 4), at least 1."""
    stable = num_subvectors / 4
    return max(1, min(k, 2 ** int(math.floor(math.log2(stable))) if stable >= 1 else 1))


# ---------------------------------------------------------------- which layers

def dit_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks of a DiT-like model, in order: genstudio.dit blocks (outermost ones),
    else the children of a ModuleList named `blocks` / `transformer_blocks`."""
    from .dit import DiTBlock
    found = []
    for name, module in model.named_modules():
        if isinstance(module, DiTBlock) and not any(name.startswith(f"{outer}.") for outer, _ in found):
            found.append((name, module))
    if not found:
        for name, module in model.named_modules():
            if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("blocks", "transformer_blocks"):
                found = [(f"{name}.{i}", child) for i, child in enumerate(module)]
                break
    return found


def block_linears(block: nn.Module, prefix: str, subvector_dim: int = 1) -> dict[str, nn.Linear]:
    """Every nn.Linear of one block (full names) whose input size splits into sub-vectors of `subvector_dim`."""
    return {f"{prefix}.{name}": m for name, m in block.named_modules()
            if isinstance(m, nn.Linear) and m.in_features % subvector_dim == 0}


# ---------------------------------------------------------------- per-layer quantisers

@dataclass
class VQWeight:
    """A vector-quantised weight: codebook (K, d) and indices (out, in / d) long."""
    codebook: torch.Tensor
    indices: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.indices.shape[0], self.indices.shape[1] * self.codebook.shape[1]

    @property
    def index_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook.shape[0])))

    def dequantize(self) -> torch.Tensor:
        return F.embedding(self.indices, self.codebook).reshape(self.shape)

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight_codebook": self.codebook.detach().half().contiguous(),
                f"{name}.weight_packed": pack_bits(self.indices, self.index_bits)}

    def info(self) -> dict:
        k, d = self.codebook.shape
        return {"shape": list(self.shape), "subvector_dim": d, "codebook_size": k, "index_bits": self.index_bits}

    @classmethod
    def from_tensors(cls, name: str, info: dict, state: dict) -> "VQWeight":
        out, inp = info["shape"]
        d = info["subvector_dim"]
        codebook = state.pop(f"{name}.weight_codebook").float()
        indices = unpack_bits(state.pop(f"{name}.weight_packed"), info["index_bits"], out * inp // d)
        if int(indices.max()) >= len(codebook):
            raise ValueError(f"{name}: an index exceeds the codebook size {len(codebook)}")
        return cls(codebook, indices.reshape(out, inp // d))

    @classmethod
    def fit(cls, weight: torch.Tensor, subvector_dim: int, codebook_size: int, iters: int = 50,
            generator: torch.Generator | None = None) -> "VQWeight":
        """k-means initialisation (the `kmeans` baseline, and VQ4DiT's starting point)."""
        out, inp = weight.shape
        vectors = weight.detach().float().reshape(-1, subvector_dim)
        k = codebook_size_for(len(vectors), codebook_size)
        codebook, indices = kmeans(vectors, k, iters, generator)
        return cls(codebook, indices.reshape(out, inp // subvector_dim))


@dataclass
class RTNWeight:
    """Round-to-nearest uniform, asymmetric, one scale and zero point per output channel."""
    levels: torch.Tensor  # (out, in) long in [0, 2**bits)
    scale: torch.Tensor   # (out,) float (fp16-representable)
    zero: torch.Tensor    # (out,) long in [0, 2**bits)
    bits: int

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.levels.shape)

    def dequantize(self) -> torch.Tensor:
        return (self.levels - self.zero[:, None]).float() * self.scale.float()[:, None]

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight_scale": self.scale.half().contiguous(), f"{name}.weight_zero": self.zero.to(torch.uint8),
                f"{name}.weight_packed": pack_bits(self.levels, self.bits)}

    def info(self) -> dict:
        return {"shape": list(self.shape), "index_bits": self.bits, "scheme": "asymmetric per output channel"}

    @classmethod
    def from_tensors(cls, name: str, info: dict, state: dict) -> "RTNWeight":
        out, inp = info["shape"]
        levels = unpack_bits(state.pop(f"{name}.weight_packed"), info["index_bits"], out * inp).reshape(out, inp)
        return cls(levels, state.pop(f"{name}.weight_scale").float(), state.pop(f"{name}.weight_zero").long(),
                   info["index_bits"])

    @classmethod
    def fit(cls, weight: torch.Tensor, bits: int) -> "RTNWeight":
        w = weight.detach().float()
        top = (1 << bits) - 1
        low, high = w.min(dim=1).values, w.max(dim=1).values
        scale = ((high - low) / top).clamp_min(1e-8).half().float()  # the scale as stored
        zero = torch.round(-low / scale).clamp(0, top)
        levels = torch.clamp(torch.round(w / scale[:, None]) + zero[:, None], 0, top)
        return cls(levels.long(), scale, zero.long(), bits)


QUANTIZERS = {"vq4dit": VQWeight, "kmeans": VQWeight, "rtn": RTNWeight}


# ---------------------------------------------------------------- layers

class SoftVQLinear(nn.Module):
    """VQ4DiT's calibration-time linear layer. Each sub-vector keeps its `candidates` nearest
    codewords and learnable logits; the weight is the softmax-weighted average of the candidates
    (the paper's "ratios"), so both the codebook and the assignment get gradients. `harden()`
    gives every sub-vector its most likely candidate; from then on only the codebook (and bias) learn."""

    def __init__(self, init: VQWeight, weight: torch.Tensor, bias: torch.Tensor | None, candidates: int = 2):
        super().__init__()
        self.out_features, self.in_features = init.shape
        k, self.subvector_dim = init.codebook.shape
        count = max(1, min(candidates, k))
        vectors = weight.detach().float().reshape(-1, self.subvector_dim)
        dist, cand = nearest_codewords(vectors, init.codebook, count)
        # Initial ratios from the distances (the reference's rule): log(d_far / d_i), 0 for the farthest.
        logits = torch.log(dist[:, -1:] / (dist + 1e-5)).clamp_min(0)
        logits[:, -1] = 0
        self.codebook = nn.Parameter(init.codebook.detach().float().clone())
        self.register_buffer("candidates", cand)
        self.logits = nn.Parameter(logits)
        self.bias = nn.Parameter(bias.detach().float().clone()) if bias is not None else None
        self.hard = False
        self._last_probabilities = None

    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    def chosen(self) -> torch.Tensor:
        """(N,) the index of each sub-vector's most likely candidate codeword."""
        return self.candidates.gather(1, self.logits.argmax(1, keepdim=True)).squeeze(1)

    def regularizer(self) -> torch.Tensor:
        """sum_i p_i (1 - p_i), averaged over sub-vectors: 0 when every assignment is one-hot. Reuses
        the ratios of the last soft forward (same step, same graph) when there is one."""
        p = self._last_probabilities if self._last_probabilities is not None else self.probabilities()
        return (p * (1 - p)).sum(-1).mean()

    def harden(self) -> None:
        self.hard = True
        self.logits.requires_grad_(False)

    def weight(self) -> torch.Tensor:
        self._last_probabilities = None
        if self.hard:
            w = self.codebook[self.chosen()]
        else:
            self._last_probabilities = p = self.probabilities()
            w = (p.unsqueeze(-1) * self.codebook[self.candidates]).sum(1)
        return w.reshape(self.out_features, self.in_features)

    def forward(self, x):
        return F.linear(x, self.weight().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def to_vq_weight(self) -> VQWeight:
        return VQWeight(self.codebook.detach().clone(), self.chosen().reshape(self.out_features, -1))


class VQLinear(nn.Module):
    """A linear layer that keeps only a codebook (K, d) and indices (out, in / d) and gathers its
    weight on every call: a quarter to an eighth of fp16's memory for the weight, at the cost of
    one gather per call."""

    def __init__(self, q: VQWeight, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.register_buffer("codebook", q.codebook.detach().float().clone())
        self.register_buffer("indices", q.indices.to(torch.int32))
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @property
    def weight(self) -> torch.Tensor:
        return self.codebook[self.indices].reshape(self.out_features, self.in_features)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        k, d = self.codebook.shape
        return f"in_features={self.in_features}, out_features={self.out_features}, codebook={k}x{d}"


# ---------------------------------------------------------------- files

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


def quantization_config(folder: str | os.PathLike) -> dict | None:
    """The `quantization_config` of a model folder's config.json (None: an ordinary checkpoint)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    qc = config.get("quantization_config") if isinstance(config, dict) else None
    return qc if isinstance(qc, dict) and qc.get("method") in METHODS else None


def save_compressed(model: nn.Module, layers: dict, folder: str | os.PathLike, config: dict, qconfig: dict) -> Path:
    """Write `model` with its quantised `layers` ({name: VQWeight | RTNWeight}) into `folder`:
    config.json (`config`, the source's, plus `quantization_config`) and one safetensors file."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu().contiguous() for k, v in model.state_dict().items()}
    for name, q in layers.items():
        state.pop(f"{name}.weight")
        state.update({k: v.cpu() for k, v in q.tensors(name).items()})
    qconfig = {**qconfig, "layers": {name: q.info() for name, q in layers.items()}, "packing": PACKING}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "quantization": qconfig["method"]})
    config = {k: v for k, v in config.items() if k != "quantization_config"}
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": qconfig}, indent=2) + "\n")
    return folder


def load_model(model_cls, folder: str | os.PathLike, torch_dtype: torch.dtype | None = None, mode: str | None = None):
    """Any pipeline's one way to load its model: a compressed checkpoint (config.json with a
    `quantization_config` written by `genstudio compress`) is restored into a runnable `model_cls`;
    anything else goes to `model_cls.from_pretrained(folder, torch_dtype=torch_dtype)` unchanged.

    mode: "dequantize" (default: plain nn.Linear weights, fastest on CPU) or "gather" (VQ layers
    keep codebook + indices and gather per call; vq4dit/kmeans checkpoints only)."""
    folder = Path(folder)
    qc = quantization_config(folder)
    if qc is None:
        return model_cls.from_pretrained(folder, torch_dtype=torch_dtype)
    from .hub import load_safetensors_folder
    mode = mode or DEFAULT_LOAD_MODE
    if mode not in LOAD_MODES:
        raise ValueError(f"unknown load mode {mode!r}; choose from {', '.join(LOAD_MODES)}")
    config = json.loads((folder / "config.json").read_text())
    model = model_cls.from_config({k: v for k, v in config.items() if k != "quantization_config"})
    state = load_safetensors_folder(folder)
    quantizer = QUANTIZERS[qc["method"]]
    weights = {}
    for name, info in qc["layers"].items():
        try:
            weights[name] = quantizer.from_tensors(name, info, state)
        except KeyError as e:
            raise KeyError(f"{folder}: compressed layer {name} lacks its tensor {e.args[0]}") from None
        state[f"{name}.weight"] = weights[name].dequantize()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise KeyError(f"{folder} does not match {model_cls.__name__}: missing {sorted(missing)[:5]}, "
                       f"unexpected {sorted(unexpected)[:5]}")
    if mode == "gather":
        if quantizer is not VQWeight:
            raise ValueError(f"mode 'gather' needs a vector-quantised checkpoint; {folder} is {qc['method']}")
        for name, q in weights.items():
            parent, _, child = name.rpartition(".")
            linear = model.get_submodule(name)
            setattr(model.get_submodule(parent), child, VQLinear(q, linear.bias))
    if torch_dtype is not None:  # nn.Module.to: ModelMixin.to warns about fp32 modules on every dtype cast
        model = nn.Module.to(model, torch_dtype)
    model.compressed = {k: v for k, v in qc.items() if k != "layers"}  # what `genstudio compress` recorded
    return model.eval()
