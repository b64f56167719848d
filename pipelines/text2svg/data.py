"""SVGFusion's data: captioned icons as SVG matrices, split so that test prompts are never trained on.

Items come from the `icons` source (`genstudio data prepare icons`), restricted to the sets whose
words describe the drawing (shared/DATA.md): tabler, lucide and mdi (tags), phosphor (categories,
tags), twemoji and openmoji (emoji captions). The split is by hash of the *label* (the icon's
name, e.g. "arrow left"), not of the file: the six phosphor weights of "airplane" and the mdi and
tabler icons of the same name all land in one split, so a test prompt is never seen in training.

`TextSVGDataset` gives each icon as a padded matrix (rows = drawing commands, `svg_matrix`), a
caption drawn from three lengths (label; label + kind; label + kind + tags) and, for the VP-VAE's
Rendering Sequence Modeling, a random prefix of the drawing with the render of that prefix.
"""
from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from genstudio.data.registry import DataError, dataset_dir, load_manifest, split_of
from genstudio.formats.svg import rasterize_svg
from genstudio.formats.svg_matrix import WIDTH, UnsupportedSVG, matrix_to_svg, svg_to_matrix

SETS = ("tabler", "lucide", "mdi", "phosphor", "twemoji", "openmoji")  # the sets with words attached


def label_of(item: dict) -> str:
    """The prompt an icon answers: its name in words ('arrow left'), without the set's style."""
    return item["text"].split(",")[0].strip().lower()


def text_split(item: dict) -> str:
    return split_of("text2svg:" + label_of(item))


def captions(item: dict) -> list[str]:
    """Short to long: 'rocket', 'rocket, outline icon', 'rocket, outline icon: space, launch'."""
    text = item["text"]
    head = text.split(":")[0].strip()
    return list(dict.fromkeys([label_of(item), head, text]))


def load_items(split: str, max_rows: int = 64, sets=SETS, root: Path | None = None) -> list[dict]:
    """Icons of `split` with at most `max_rows` drawing commands, each with its matrix ("matrix").

    `sets` may name sets of the `icons` build and of the `iconify` build (`genstudio data prepare iconify`).
    Sets outside SETS only add training icons, and conservatively: an icon of theirs is dropped when its
    label with its first or last word removed is a held-out label, or when its drawing is a held-out icon's.
    Matrices are cached in the icons build folder (text2svg-matrices-*.npz, ~30 s per 25k icons to build once)."""
    from genstudio.data.iconify import ICONIFY_SETS
    base = load_manifest("icons", root=root)
    items = [i for i in base if i["set"] in sets]
    if any(s in ICONIFY_SETS for s in sets):
        items += [i for i in load_manifest("iconify", root=root) if i["set"] in sets]
    if not items:
        raise DataError("no captioned icons: run `genstudio data prepare icons` (see shared/DATA.md)")
    held_out = {i["sha1"] for i in base if i["set"] in SETS and text_split(i) != "train"}
    matrices = _matrices(items, root)
    out = []
    for item in items:
        m = matrices.get(item["id"])
        if m is None or len(m) > max_rows or text_split(item) != split:
            continue
        if item["set"] not in SETS and (split != "train" or _near_held_out(label_of(item))
                                        or item["sha1"] in held_out):
            continue
        out.append({**item, "label": label_of(item), "matrix": m})
    if not out:
        raise DataError(f"no icons in split {split!r} with <= {max_rows} rows")
    return out


def train_sets(names: str) -> tuple[str, ...]:
    """DiTOptions.train_sets -> the icon sets ("" = data.SETS; "+iconify": data.SETS, game-icons and every
    iconify set); each must be a set of the icons or the iconify build."""
    from genstudio.data.iconify import ICONIFY_SETS
    from genstudio.data.icons import ICON_SETS
    sets = tuple(s.strip() for s in names.split(",") if s.strip()) or SETS
    if "+iconify" in sets:
        sets = tuple(dict.fromkeys([s for s in sets if s != "+iconify"] + [*SETS, "game-icons", *ICONIFY_SETS]))
    known = {**ICON_SETS, **ICONIFY_SETS}
    unknown = [s for s in sets if s not in known]
    if unknown:
        raise ValueError(f"unknown icon set(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return sets


def _near_held_out(label: str) -> bool:
    """Is the label one word away (at either end) from a val / test label? ('rocket sharp' when 'rocket' is test)"""
    words = label.split()
    return len(words) > 1 and any(split_of("text2svg:" + " ".join(w)) != "train" for w in (words[1:], words[:-1]))


def _matrices(items: list[dict], root: Path | None) -> dict[str, np.ndarray]:
    key = hashlib.sha1("\n".join(sorted(i["sha1"] for i in items)).encode()).hexdigest()[:12]
    cache = dataset_dir("icons", root) / f"text2svg-matrices-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            ids, rows, flat = list(z["ids"]), z["rows"], z["flat"]
        splits = np.cumsum(rows)[:-1]
        return dict(zip(ids, np.split(flat, splits)))
    out = {}
    for item in items:
        try:
            out[item["id"]] = svg_to_matrix(Path(item["path"]).read_text(encoding="utf-8"))
        except (UnsupportedSVG, OSError):
            continue
    ids = list(out)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids), rows=np.array([len(out[i]) for i in ids]),
             flat=np.concatenate([out[i] for i in ids]).astype(np.float32))
    tmp.replace(cache)
    return out


def pad(matrix: np.ndarray, rows: int) -> np.ndarray:
    """(r, WIDTH) -> (rows, WIDTH): padding rows are all zero (ELEM 0 = end)."""
    out = np.zeros((rows, WIDTH), np.float32)
    out[:len(matrix)] = matrix[:rows]
    return out


def render(matrix: np.ndarray, size: int) -> torch.Tensor:
    """A matrix's drawing as (3, size, size) in [-1, 1] (white canvas)."""
    img = rasterize_svg(matrix_to_svg(matrix), size)
    return torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


class TextSVGDataset(torch.utils.data.Dataset):
    """Items -> {"matrix": (max_rows, WIDTH), "length", "text", "image"?}.

    With `image_size`, the item also has the render of its matrix; with `prefix_prob` > 0, that
    often of the time the matrix is cut to a random prefix of its elements (Rendering Sequence
    Modeling: the render then shows only that prefix). Renders are LRU-cached."""

    def __init__(self, items: list[dict], max_rows: int = 64, image_size: int | None = None,
                 prefix_prob: float = 0.0, cache_size: int = 50000):
        self.items, self.max_rows, self.image_size, self.prefix_prob = items, max_rows, image_size, prefix_prob
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size

    def __len__(self) -> int:
        return len(self.items)

    def _render(self, k: int, rows: int, matrix: np.ndarray) -> torch.Tensor:
        key = (k, rows)
        if key not in self._cache:  # kept as uint8: a quarter of the memory
            self._cache[key] = render(matrix, self.image_size).add(1).mul(127.5).round().to(torch.uint8)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key].float().div(127.5).sub(1)

    def __getitem__(self, k: int) -> dict:
        item = self.items[k]
        m = item["matrix"]
        if self.prefix_prob > 0 and random.random() < self.prefix_prob:
            starts = np.flatnonzero(m[:, 2] == 1)  # NEW: where each element begins
            if len(starts) > 1:
                m = m[:starts[random.randrange(1, len(starts))]]
        out = {"matrix": torch.from_numpy(pad(m, self.max_rows)), "length": len(m),
               "text": random.choice(captions(item))}
        if self.image_size:
            out["image"] = self._render(k, len(m), m)
        return out


def collate(batch: list[dict]) -> dict:
    out = {"matrix": torch.stack([b["matrix"] for b in batch]),
           "length": torch.tensor([b["length"] for b in batch]), "text": [b["text"] for b in batch]}
    if "image" in batch[0]:
        out["image"] = torch.stack([b["image"] for b in batch])
    return out




# ---- Text features ----

class TextTokens:
    """Frozen text-encoder token states of a fixed list of texts, computed once and cached on disk
    (fp16, concatenated; ~0.5 GB and a few CPU minutes for the ~58k captions of the training split).

    `batch(indices)` -> (hidden (B, L, D) float32, mask (B, L)), padded to the longest text."""

    def __init__(self, texts: list[str], encoder: str | None = None, root: Path | None = None,
                 batch_size: int = 128):
        from genstudio.text import get_text_encoder
        self.texts = list(texts)
        key = hashlib.sha1(("\n".join(self.texts) + f"|{encoder}").encode()).hexdigest()[:12]
        cache = dataset_dir("icons", root) / f"text2svg-tokens-{key}.npz"
        if cache.exists():
            with np.load(cache) as z:
                self.flat, self.offsets = z["flat"], z["offsets"]
            return
        te = get_text_encoder(encoder)
        order = sorted(range(len(self.texts)), key=lambda i: len(self.texts[i]))  # little padding
        pieces: list[np.ndarray | None] = [None] * len(self.texts)
        from tqdm.auto import tqdm
        for start in tqdm(range(0, len(order), batch_size), desc="text features", leave=False):
            idx = order[start:start + batch_size]
            enc = te.encode([self.texts[i] for i in idx], return_tokens=True)
            for j, i in enumerate(idx):
                pieces[i] = enc.hidden_states[j, :int(enc.mask[j].sum())].cpu().numpy().astype(np.float16)
        lengths = np.array([len(p) for p in pieces])
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.flat = np.concatenate(pieces)
        tmp = cache.with_suffix(".tmp.npz")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, flat=self.flat, offsets=self.offsets)
        tmp.replace(cache)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.flat[self.offsets[i]:self.offsets[i + 1]] for i in indices]
        length = max(len(r) for r in rows)
        hidden = np.zeros((len(rows), length, self.flat.shape[1]), np.float32)
        mask = np.zeros((len(rows), length), bool)
        for j, r in enumerate(rows):
            hidden[j, :len(r)], mask[j, :len(r)] = r, True
        return torch.from_numpy(hidden), torch.from_numpy(mask)
