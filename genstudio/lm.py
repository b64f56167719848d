"""Prefix-conditioned causal language models on top of `transformers`.

StarVector (image tokens -> GPTBigCode), MeshAnything (shape tokens -> OPT) and PUT all condition
a decoder-only LM by putting a few embedding vectors *before* the token embeddings. This file
builds such LMs from named size presets, trains them with a loss that only counts target tokens,
and generates from them with transformers' `generate` (KV cache, sampling, stopping criteria).

Layout used everywhere: `[prefix (P) | tokens (T)]`; logits at position i predict position i+1,
so the last prefix position predicts the first token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (AutoConfig, AutoModelForCausalLM, GenerationConfig, LogitsProcessor,
                          LogitsProcessorList, PretrainedConfig, PreTrainedModel, StoppingCriteria,
                          StoppingCriteriaList, StopStringCriteria)

from .limits import check_time, time_limited

IGNORE_INDEX = -100

# ---- Configs ----

# Generic size keys; `_ARCH_KEYS` maps them onto each architecture's own config names.
LM_CONFIGS: dict[str, dict] = {
    "tiny": dict(hidden=64, layers=2, heads=2, positions=512),
    "small": dict(hidden=512, layers=8, heads=8, positions=2048),
    "350m": dict(hidden=1024, layers=24, heads=16, positions=2048),  # OPT-350M size (MeshAnything)
    "1b": dict(hidden=2048, layers=24, heads=16, positions=8192),    # StarCoderBase-1B size (StarVector-1B)
}

_GPT2_KEYS = dict(hidden=("n_embd",), layers=("n_layer",), heads=("n_head",), positions=("n_positions",),
                  ffn=("n_inner",), dropout=("resid_pdrop", "embd_pdrop", "attn_pdrop"))
_ARCH_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": _GPT2_KEYS,
    "gpt_bigcode": _GPT2_KEYS,
    "llama": dict(hidden=("hidden_size",), layers=("num_hidden_layers",), heads=("num_attention_heads",),
                  positions=("max_position_embeddings",), ffn=("intermediate_size",),
                  dropout=("attention_dropout",)),
    # word_embed_proj_dim == hidden_size skips OPT's project_in/out; override it to get them.
    "opt": dict(hidden=("hidden_size", "word_embed_proj_dim"), layers=("num_hidden_layers",),
                heads=("num_attention_heads",), positions=("max_position_embeddings",), ffn=("ffn_dim",),
                dropout=("dropout", "attention_dropout")),
}
ARCHS = tuple(_ARCH_KEYS)


def _default_ffn(arch: str, hidden: int) -> int:
    if arch == "llama":  # SwiGLU keeps the parameter count of a 4x MLP with ~8/3 x
        return 32 * -(-(8 * hidden // 3) // 32)
    return 4 * hidden


def lm_config(arch: str, vocab_size: int, size: str = "tiny", **overrides) -> PretrainedConfig:
    """A transformers config for `arch` at preset `size`; overrides take generic keys
    (hidden, layers, heads, positions, ffn, dropout) or the architecture's own names."""
    if arch not in _ARCH_KEYS:
        raise ValueError(f"unknown LM architecture {arch!r}: expected one of {', '.join(ARCHS)}")
    if size not in LM_CONFIGS:
        raise ValueError(f"unknown LM size {size!r}: expected one of {', '.join(LM_CONFIGS)}")
    generic = {**LM_CONFIGS[size], **{k: overrides.pop(k) for k in list(overrides) if k in _ARCH_KEYS[arch]}}
    generic.setdefault("ffn", _default_ffn(arch, generic["hidden"]))
    if generic["hidden"] % generic["heads"]:
        raise ValueError(f"hidden size {generic['hidden']} is not divisible by {generic['heads']} heads")
    kwargs: dict = {}
    for key, value in generic.items():
        for name in _ARCH_KEYS[arch][key]:
            kwargs[name] = value
    # The architectures' defaults (GPT-2's 50256, OPT's 1/2) would point outside a small vocabulary.
    kwargs.update(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    kwargs.update(overrides)
    return AutoConfig.for_model(arch, vocab_size=vocab_size, **kwargs)


def build_causal_lm(arch: str, vocab_size: int, size: str = "tiny", *, attn_implementation: str = "sdpa",
                    dtype: torch.dtype | None = None, **config_overrides) -> PreTrainedModel:
    """A freshly initialised HF causal LM (`GPTBigCodeForCausalLM`, `LlamaForCausalLM`, ...)."""
    config = lm_config(arch, vocab_size, size, **config_overrides)
    kwargs = {"attn_implementation": attn_implementation}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return AutoModelForCausalLM.from_config(config, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---- Batching ----

def pad_token_rows(rows: Sequence[torch.Tensor], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Token rows of different lengths -> right-padded `input_ids`, `attention_mask` (1 = token) and
    `labels` (the ids, IGNORE_INDEX on the pads), each (B, longest row)."""
    longest = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
        attention_mask[i, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "labels": input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)}


# ---- Adapter ----

class VisualAdapter(nn.Module):
    """StarVector's adapter from encoder features to LM embeddings:
    dropout -> Linear(d, 2d) -> Swish -> Linear(2d, d_lm) -> LayerNorm.

    Module names (`c_fc`, `c_proj`, `norm`) follow the official code so its state dict loads.
    The official adapter normalises over (query_length, d_lm) jointly; pass `query_length` to get
    that, leave it None for the usual per-token LayerNorm.
    """

    def __init__(self, in_dim: int, lm_dim: int, dropout: float = 0.1, query_length: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.c_fc = nn.Linear(in_dim, 2 * in_dim)
        self.act = nn.SiLU()
        self.c_proj = nn.Linear(2 * in_dim, lm_dim)
        self.norm = nn.LayerNorm([query_length, lm_dim] if query_length else lm_dim)
        for linear in (self.c_fc, self.c_proj):  # glorot, as upstream
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, P, in_dim) -> (B, P, lm_dim)
        return self.norm(self.c_proj(self.act(self.c_fc(self.dropout(features)))))


# ---- Generation helpers ----

class _StopRecorder(StoppingCriteria):
    """Wraps stop-string criteria and remembers how many new tokens each row had when it first stopped.
    The `eos_token_id` attribute makes `generate` pad rows that are already done."""

    def __init__(self, criteria: Sequence[StoppingCriteria], eos_token_id: list[int]):
        self.criteria = list(criteria)
        self.eos_token_id = eos_token_id
        self.stopped_at: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criterion in self.criteria:
            done |= criterion(input_ids, scores, **kwargs)
        if self.stopped_at is None:
            self.stopped_at = torch.full_like(done, -1, dtype=torch.long)
        first = done & (self.stopped_at < 0)
        self.stopped_at[first] = input_ids.shape[1]
        return done


class _Progress(StoppingCriteria):
    def __init__(self, total: int):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=total, desc="generating", unit="tok")

    def __call__(self, input_ids, scores, **kwargs):
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _Deadline(StoppingCriteria):
    """--max-seconds: raises TimeLimitExceeded between tokens once the deadline has passed."""

    def __call__(self, input_ids, scores, **kwargs):
        check_time()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class _CallableProcessor(LogitsProcessor):
    def __init__(self, fn: Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]):
        self.fn = fn

    def __call__(self, input_ids, scores):
        return self.fn(input_ids, scores)


def _as_processor_list(logits_processor) -> LogitsProcessorList:
    if logits_processor is None:
        return LogitsProcessorList()
    if callable(logits_processor) and not isinstance(logits_processor, (list, tuple)):
        logits_processor = [logits_processor]
    return LogitsProcessorList(p if isinstance(p, LogitsProcessor) else _CallableProcessor(p)
                               for p in logits_processor)


def _align(mask: torch.Tensor, side: str) -> torch.Tensor | None:
    """Permutation that moves pads to `side` keeping the order of real positions; None if already so.

    Pads between prefix and tokens (left-padded tokens, short prefixes) would otherwise sit between
    a position and the one it must predict."""
    key = mask.to(torch.int8) if side == "left" else 1 - mask.to(torch.int8)
    if (key[:, 1:] >= key[:, :-1]).all():
        return None
    return torch.sort(key, dim=1, stable=True).indices


def _gather(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return x.gather(1, order.view(*order.shape, *[1] * (x.dim() - 2)).expand_as(x))


def _seed_from(seed: int | None, generator: torch.Generator | None) -> int | None:
    if seed is None and generator is not None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return seed


# ---- Prefix LM ----

@dataclass
class PrefixLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor       # (B, P+T, V), right-padded layout: logits[:, i] predicts labels[:, i+1]
    labels: torch.Tensor       # (B, P+T) targets in the same layout, -100 where not trained


class PrefixLM(nn.Module):
    """Any HF causal LM conditioned on a prefix of embedding vectors (image/shape/text tokens)."""

    def __init__(self, lm: PreTrainedModel):
        super().__init__()
        self.lm = lm

    @classmethod
    def from_config(cls, arch: str, vocab_size: int, size: str = "tiny", **overrides) -> "PrefixLM":
        return cls(build_causal_lm(arch, vocab_size, size, **overrides))

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> "PrefixLM":
        return cls(AutoModelForCausalLM.from_pretrained(path, **kwargs))

    def save_pretrained(self, path, **kwargs) -> None:
        self.lm.save_pretrained(path, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.lm.get_input_embeddings().embedding_dim

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def embed_inputs(self, prefix_embeds: torch.Tensor | None, input_ids: torch.LongTensor | None,
                     attention_mask: torch.Tensor | None = None, prefix_mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Concatenate `[prefix | token embeddings]`; returns (embeds, mask (B, P+T), P)."""
        parts, masks = [], []
        embedding = self.lm.get_input_embeddings()
        device = embedding.weight.device
        if prefix_embeds is not None:
            if prefix_embeds.dim() != 3 or prefix_embeds.shape[-1] != self.hidden_size:
                raise ValueError(f"prefix_embeds must be (B, P, {self.hidden_size}), got {tuple(prefix_embeds.shape)}")
            parts.append(prefix_embeds.to(device=device, dtype=embedding.weight.dtype))
            masks.append(prefix_mask if prefix_mask is not None else
                         torch.ones(prefix_embeds.shape[:2], dtype=torch.long, device=device))
        if input_ids is not None:
            input_ids = input_ids.to(device)
            parts.append(embedding(input_ids))
            masks.append(attention_mask if attention_mask is not None else torch.ones_like(input_ids))
        if not parts:
            raise ValueError("give prefix_embeds, input_ids or both")
        batch = {p.shape[0] for p in parts}
        if len(batch) > 1:
            raise ValueError(f"prefix_embeds and input_ids disagree on batch size: {sorted(batch)}")
        prefix_len = prefix_embeds.shape[1] if prefix_embeds is not None else 0
        return torch.cat(parts, 1), torch.cat([m.to(device, torch.long) for m in masks], 1), prefix_len

    def forward(self, prefix_embeds: torch.Tensor | None, input_ids: torch.LongTensor,
                attention_mask: torch.Tensor | None = None, labels: torch.LongTensor | None = None,
                prefix_mask: torch.Tensor | None = None) -> PrefixLMOutput:
        """Teacher-forced pass; the loss counts only (non-pad, non -100) token targets.

        `labels` follow HF's convention: aligned with `input_ids` (not shifted), -100 = ignore.
        Without labels, `input_ids` are the targets. Right padding is the layout used as is; any other
        (left-padded tokens, short prefixes under `prefix_mask`) is first packed into it, and the
        returned `logits`/`labels` are in that packed layout, where logits[:, i] predicts labels[:, i+1].
        """
        embeds, mask, prefix_len = self.embed_inputs(prefix_embeds, input_ids, attention_mask, prefix_mask)
        targets = (input_ids if labels is None else labels).to(mask.device)
        targets = targets.masked_fill(mask[:, prefix_len:] == 0, IGNORE_INDEX)
        targets = F.pad(targets, (prefix_len, 0), value=IGNORE_INDEX)
        order = _align(mask, "right")
        if order is not None:
            embeds, mask, targets = _gather(embeds, order), _gather(mask, order), _gather(targets, order)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
        shift_logits, shift_targets = logits[:, :-1].float(), targets[:, 1:]
        loss = None
        if (shift_targets != IGNORE_INDEX).any():
            loss = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return PrefixLMOutput(loss=loss, logits=logits, labels=targets)

    @torch.no_grad()
    def generate(self, prefix_embeds: torch.Tensor | None = None, input_ids: torch.LongTensor | None = None, *,
                 attention_mask: torch.Tensor | None = None, prefix_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 256, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, stop_sequences: list[str] | None = None,
                 tokenizer=None, stop_token_ids: Sequence[int] | int | None = None,
                 num_return_sequences: int = 1, seed: int | None = None,
                 generator: torch.Generator | None = None, logits_processor=None,
                 pad_token_id: int | None = None, progress: bool = False, return_lengths: bool = False,
                 **generate_kwargs):
        """Continue `[prefix | input_ids]` and return only the new tokens, (B*num_return_sequences, N).

        Rows are cut right after their stop (a stop token, or the token completing a stop string;
        the stop itself is kept) and padded with `pad_token_id`; N is the longest row.
        `stop_token_ids=None` uses the model's eos; `[]` turns stop tokens off.
        `logits_processor` (a LogitsProcessor, a callable `(ids, scores) -> scores`, or a list) sees
        the tokens generated so far, (B, n), not the prompt — e.g. to mask invalid tokens.
        `seed`/`generator` make sampling reproducible without touching the global RNG.
        """
        if stop_sequences and tokenizer is None:
            raise ValueError("stop_sequences need the tokenizer that maps token ids to text")
        if isinstance(stop_token_ids, int):
            stop_token_ids = [stop_token_ids]
        if stop_token_ids is None:
            eos = self.lm.generation_config.eos_token_id
            stop_token_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        stop_token_ids = [int(t) for t in stop_token_ids]
        if pad_token_id is None:
            pad_token_id = self.lm.generation_config.pad_token_id
            pad_token_id = pad_token_id if pad_token_id is not None else (stop_token_ids or [0])[0]

        embeds, mask, _ = self.embed_inputs(prefix_embeds, input_ids, attention_mask, prefix_mask)
        order = _align(mask, "left")
        if order is not None:
            embeds, mask = _gather(embeds, order), _gather(mask, order)

        string_criteria = [StopStringCriteria(tokenizer, list(stop_sequences))] if stop_sequences else []
        recorder = _StopRecorder(string_criteria, stop_token_ids)
        # stop tokens need no callback (generate stops on eos_token_id; rows are cut below); the
        # recorder runs per token only for stop strings (measured: 4-7 % of a small LM's decode)
        criteria = StoppingCriteriaList([recorder] if string_criteria else [])
        if time_limited():
            criteria.append(_Deadline())
        if progress:
            criteria.append(_Progress(max_new_tokens))
        sampling = dict(temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else {}
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                  num_return_sequences=num_return_sequences, eos_token_id=stop_token_ids,
                                  pad_token_id=pad_token_id, use_cache=True, **sampling)

        seed = _seed_from(seed, generator)
        devices = [embeds.device.index or 0] if embeds.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            tokens = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config,
                                      stopping_criteria=criteria,
                                      logits_processor=_as_processor_list(logits_processor), **generate_kwargs)
        if progress:
            criteria[-1].bar.close()

        lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
        if stop_token_ids:
            is_stop = torch.isin(tokens, torch.tensor(stop_token_ids, device=tokens.device))
            first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, lengths)
            lengths = torch.minimum(lengths, first)
        if recorder.stopped_at is not None:
            by_string = recorder.stopped_at.to(tokens.device)
            lengths = torch.where(by_string > 0, torch.minimum(lengths, by_string), lengths)
        keep = torch.arange(tokens.shape[1], device=tokens.device)[None] < lengths[:, None]
        tokens = tokens.masked_fill(~keep, pad_token_id)[:, : int(lengths.max()) if len(lengths) else 0]
        return (tokens, lengths) if return_lengths else tokens
