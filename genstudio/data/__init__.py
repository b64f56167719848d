"""Offline data sources: cached deterministic builds with hash-based splits."""
from .registry import (DataError, SOURCES, cache_root, dataset_dir, list_sources, load_manifest,
                       prepare, register_source, split_of)

__all__ = ["DataError", "SOURCES", "cache_root", "dataset_dir", "list_sources", "load_manifest",
           "prepare", "register_source", "split_of"]
