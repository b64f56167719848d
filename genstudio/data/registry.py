"""A small registry of offline data sources with cached, deterministic builds.

A *source* knows how to build itself into a cache folder from things installed on this
machine (npm packages, Debian packages, files shipped inside Python wheels). A build writes
`manifest.jsonl` (one item per line: id, path, split, licence, source-specific metadata)
and `info.json` (counts, bytes, licences). Splits come from a hash of the item id, so the
same item lands in the same split on every machine and in every build.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """A data source cannot be built or read (missing tool, missing build, bad input)."""


def cache_root() -> Path:
    """Where built datasets live: $GENSTUDIO_DATA, else ~/.cache/genstudio/data."""
    env = os.environ.get("GENSTUDIO_DATA")
    return Path(env) if env else Path.home() / ".cache" / "genstudio" / "data"


def split_of(item_id: str, val: float = 0.05, test: float = 0.05) -> str:
    """Deterministic split by hash of the id: independent of order, machine and build."""
    h = int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") / 2**64
    if h < test:
        return "test"
    if h < test + val:
        return "val"
    return "train"


@dataclass
class Source:
    name: str
    description: str
    build: Callable[[Path, "BuildLog"], Iterator[dict]]
    licence: str = "see items"
    requires: tuple[str, ...] = ()  # external tools, checked before building


@dataclass
class BuildLog:
    """What a build prints: what it fetches and how much."""
    quiet: bool = False
    lines: list[str] = field(default_factory=list)

    def __call__(self, msg: str) -> None:
        self.lines.append(msg)
        if not self.quiet:
            print(f"[data] {msg}", flush=True)


SOURCES: dict[str, Source] = {}


def register_source(name: str, description: str, licence: str = "see items", requires: tuple[str, ...] = ()):
    def wrap(fn):
        SOURCES[name] = Source(name, description, fn, licence, requires)
        return fn
    return wrap


def _register_all() -> None:
    """Built-in sources, plus those pipelines declare in the entry-point group `genstudio.datasources`
    (importing the module registers its sources; the core never imports a pipeline by name)."""
    from importlib.metadata import entry_points
    from . import sources  # noqa: F401
    for ep in entry_points(group="genstudio.datasources"):
        if ep.name not in SOURCES:
            try:
                ep.load()
            except ImportError:  # an optional pipeline whose extras are missing
                pass


def _source(name: str) -> Source:
    _register_all()
    if name not in SOURCES:
        raise DataError(f"unknown data source {name!r}; available: {', '.join(sorted(SOURCES))}")
    return SOURCES[name]


def list_sources() -> list[dict]:
    _register_all()
    rows = []
    for name, src in sorted(SOURCES.items()):
        info = dataset_dir(name) / "info.json"
        built = json.loads(info.read_text()) if info.exists() else None
        rows.append({"name": name, "description": src.description, "licence": src.licence,
                     "built": built is not None, "items": built["items"] if built else 0,
                     "path": str(dataset_dir(name))})
    return rows


def dataset_dir(name: str, root: Path | None = None) -> Path:
    return (root or cache_root()) / name


def prepare(name: str, root: Path | None = None, force: bool = False, quiet: bool = False, **options) -> Path:
    """Build source `name` into the cache (idempotent: an existing build is kept unless force)."""
    src = _source(name)
    out = dataset_dir(name, root)
    log = BuildLog(quiet=quiet)
    if (out / "info.json").exists() and not force:
        log(f"{name}: already built at {out} (use --force to rebuild)")
        return out
    for tool in src.requires:
        if shutil.which(tool) is None:
            raise DataError(f"building {name!r} needs the command {tool!r}, which is not installed "
                            f"(install it with apt-get, e.g. `apt-get install -y {tool}`)")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.time()
    counts = {s: 0 for s in SPLITS}
    licences: dict[str, int] = {}
    seen: set[str] = set()
    with open(tmp / "manifest.jsonl", "w") as f:
        for item in src.build(tmp, log, **options):
            if item["id"] in seen:  # dedupe by id (sources dedupe content by hashing into the id)
                continue
            seen.add(item["id"])
            item.setdefault("split", split_of(item["id"]))
            item.setdefault("licence", src.licence)
            counts[item["split"]] += 1
            licences[item["licence"]] = licences.get(item["licence"], 0) + 1
            f.write(json.dumps(item) + "\n")
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    info = {"name": name, "items": sum(counts.values()), "splits": counts, "licences": licences,
            "bytes": size, "seconds": round(time.time() - t0, 1)}
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a build is published whole or not at all
    log(f"{name}: {info['items']} items ({counts}), {size / 1e6:.1f} MB in {info['seconds']} s -> {out}")
    return out


def load_manifest(name: str, split: str | None = None, root: Path | None = None) -> list[dict]:
    """Items of a built dataset (optionally one split); paths are made absolute."""
    d = dataset_dir(name, root)
    path = d / "manifest.jsonl"
    if not path.exists():
        raise DataError(f"dataset {name!r} is not built at {d}; run `genstudio data prepare {name}`")
    items = []
    with open(path) as f:
        for line in f:
            item = json.loads(line)
            if split is None or item["split"] == split:
                if "path" in item:
                    item["path"] = str(d / item["path"])
                items.append(item)
    return items


def copy_build(name: str, out: str | Path, select: Callable[[dict], bool],
               write: Callable[[Path, Path], None] | None = None, root: Path | None = None) -> list[dict]:
    """Copy the items of a built dataset that `select(item)` keeps to `out`/`name` (a data root of its own, e.g.
    to carry the training data to a GPU box): the manifest, info.json and each item's file, through
    `write(src, dst)` (default: a plain copy; a slimming writer may drop arrays). Returns the items copied."""
    src, dst = dataset_dir(name, root), Path(out) / name
    shutil.rmtree(dst, ignore_errors=True)
    items = [it for it in load_manifest(name, None, root) if select(it)]
    for it in items:
        it["path"] = str(Path(it["path"]).relative_to(src))
        (dst / it["path"]).parent.mkdir(parents=True, exist_ok=True)
        (write or shutil.copy)(src / it["path"], dst / it["path"])
    (dst / "manifest.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    shutil.copy(src / "info.json", dst / "info.json")
    return items
