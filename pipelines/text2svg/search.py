"""Icon search by words: what a user does instead of generating, and the start of `--init search`.

    search = IconSearch(load_items("train"))       # the training icons of `genstudio data prepare icons`
    search.top(["a rocket"], k=4)                   # [[item, item, item, item]]: nearest captions first

Each icon's caption ("rocket, outline icon: space, launch") and the prompt are embedded with the packaged
MiniLM; the ranking is by cosine similarity. The caption embeddings are cached next to the icons build.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from genstudio.data.registry import dataset_dir


class IconSearch:
    def __init__(self, items: list[dict], root: Path | None = None):
        from genstudio.text import get_text_encoder
        self.items = list(items)
        self.encoder = get_text_encoder()
        texts = [it["text"] for it in self.items]
        key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:12]
        cache = dataset_dir("icons", root) / f"text2svg-search-{key}.npy"
        if cache.exists():
            self.bank = np.load(cache)
            return
        from tqdm.auto import tqdm
        step = 1024  # the first search of a library embeds its captions (~1 min for 25k on 2 cores), then caches them
        self.bank = np.concatenate([self.encoder.encode(texts[i:i + step]).cpu().numpy().astype(np.float32)
                                    for i in tqdm(range(0, len(texts), step), desc="icon search index", leave=False)]
                                   or [np.zeros((0, 384), np.float32)])
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, self.bank)
        tmp.replace(cache)

    def top(self, prompts: list[str], k: int) -> list[list[dict]]:
        """The k icons whose captions are nearest each prompt, nearest first."""
        query = self.encoder.encode(list(prompts)).cpu().numpy()
        order = np.argsort(-(query @ self.bank.T), axis=1)[:, :k]
        return [[self.items[j] for j in row] for row in order]

    @staticmethod
    def read(item: dict) -> str:
        return Path(item["path"]).read_text(encoding="utf-8")
