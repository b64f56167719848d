"""The contract every task pipeline keeps: one `from_pretrained`, seeds, progress, outputs.

    pipe = SomePipeline.from_pretrained("shipped-name" | "folder" | "org/hub-id",
                                        device="auto", dtype=None, precision="auto")
    out = pipe(inputs..., seed=0)            # or generator=torch.Generator().manual_seed(0)
    out.save("result.ext")                   # atomic; refuses when out.failed
    out.failed, out.message, out.metadata    # metadata: model, seed, steps, seconds, device, precision

A pipeline class sets `task` (its CLI command), `paper`, `default_model` and `checkpoint_classes`
(the config.json `_class_name` / `architectures` it loads) and implements `_from_folder(folder,
dtype, **kwargs)`. Diffusion pipelines subclass diffusers' `DiffusionPipeline` first and this mixin
second, keeping diffusers' `from_pretrained(pretrained_model_name_or_path, torch_dtype=...)`.

`load(task)` finds a task's pipeline class through the entry-point group `genstudio.pipelines`, so
the CLI, the app and Python share one way in: `genstudio.load("svg")`.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from .hub import CheckpointNotFound

SEED_DEFAULT = 0  # every command and pipeline: seed 0 unless told otherwise


class CheckpointMismatch(CheckpointNotFound):
    """A folder holds a checkpoint, but not one of this task."""


# ---------------------------------------------------------------- outputs

@dataclass(kw_only=True)
class PipelineOutput:
    """What every task's output has besides its own fields."""
    failed: bool = False
    message: str = ""
    metadata: dict = field(default_factory=dict)

    def save(self, path) -> Path | list[Path]:
        """Write the result atomically (whole or not at all); ValueError when the model failed."""
        if self.failed:
            raise ValueError(f"nothing to write to {path}: {self.message or 'the pipeline failed'}")
        return self._write(Path(path))

    def _write(self, path: Path):
        raise NotImplementedError(f"{type(self).__name__} does not define how it is saved")


def save_all(writes) -> list[Path]:
    """Several files whole-or-nothing: [(path, write(tmp_path)), ...]. Each is written to a temp
    file beside its target; they are renamed into place only once every one is written, so a
    failure (a full disk, a bad path) leaves none of them."""
    from .render import atomic_path
    with contextlib.ExitStack() as stack:
        for path, write in writes:
            write(stack.enter_context(atomic_path(path)))
    return [Path(p) for p, _ in writes]


# ---------------------------------------------------------------- checkpoints

def checkpoint_classes(folder: str | os.PathLike) -> list[str]:
    """The class names a checkpoint folder declares: a pipeline folder's model_index.json
    `_class_name`, else config.json `_class_name`, `architectures`, `model_type` and its subfolders'
    too (multi-part checkpoints); [] when it declares none."""
    folder = Path(folder)
    try:  # a diffusers pipeline folder is what its model_index.json says, whatever its parts are
        index = json.loads((folder / "model_index.json").read_text())
        if isinstance(index, dict) and isinstance(index.get("_class_name"), str) and index["_class_name"]:
            return [index["_class_name"]]
    except (OSError, ValueError):
        pass
    names: list[str] = []
    for cfg in [folder / "config.json", *sorted(folder.glob("*/config.json"))]:
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            names += [data.get("_class_name"), *(data.get("architectures") or []), data.get("model_type")]
    return [n for n in dict.fromkeys(names) if isinstance(n, str) and n]


def loaded_entry_points(group: str) -> dict:
    """Name -> loaded object for every entry point of `group` that loads (broken ones skipped)."""
    found = {}
    for ep in entry_points(group=group):
        try:
            found[ep.name] = ep.load()
        except Exception:  # an optional pipeline whose extras are missing
            continue
    return found


def pipeline_classes() -> dict[str, type]:
    """Task name -> pipeline class, from the entry-point group `genstudio.pipelines`."""
    return loaded_entry_points("genstudio.pipelines")


def task_of_checkpoint(folder: str | os.PathLike) -> str | None:
    """Which installed task loads this checkpoint folder, by its declared classes (None: unknown)."""
    declared = set(checkpoint_classes(folder))
    for task, cls in pipeline_classes().items():
        if declared & set(getattr(cls, "checkpoint_classes", ())):
            return task
    return None


def load(task: str, model: str | os.PathLike | None = None, device: str = "auto", precision: str = "auto",
         **kwargs):
    """`genstudio.load("svg")`: the task's pipeline on its shipped checkpoint (or `model`).

    Only that task's entry point is loaded, so its import error (e.g. missing extras) shows as is."""
    found = {ep.name: ep for ep in entry_points(group="genstudio.pipelines")}
    if task not in found:
        raise KeyError(f"unknown task {task!r}; installed: {', '.join(sorted(found)) or 'none'}")
    return found[task].load().from_pretrained(model, device=device, precision=precision, **kwargs)


# ---------------------------------------------------------------- the base

class PipelineMixin:
    """Loading, device/precision, seeds and progress shared by every task pipeline."""

    task: str = ""                       # the CLI command, e.g. "svg"
    paper: str = ""                      # for messages, e.g. "StarVector"
    default_model: str = ""              # a shipped checkpoint name
    checkpoint_classes: tuple[str, ...] = ()
    workload: str = "compute"            # "decode" for token-by-token AR models (precision policy)
    output_suffix: str = ".out"          # the file format `genstudio batch` writes (e.g. ".svg")
    compress_component: str | None = None  # DiT pipelines: the attribute `genstudio compress` quantises
    device: str = "cpu"
    name: str | None = None

    # -- loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: str = "auto",
                        dtype=None, precision: str | None = "auto", **kwargs):
        """A shipped checkpoint name, a local folder or a hub id -> a ready pipeline on `device`.
        dtype: the weights' dtype (default fp32; shipped files are fp16 on disk). precision: the
        autocast policy (auto | fp32 | bf16 | fp16, see genstudio.precision)."""
        import torch
        from .device import resolve_device
        from .hub import resolve
        from .precision import resolve_precision
        dev = resolve_device(device)
        chosen = resolve_precision(dev, precision, cls.workload)  # a bad value fails before any loading
        name = name_or_path if name_or_path is not None else cls.default_model
        folder = cls.check_checkpoint(resolve(name))
        with _quiet_hub_progress():
            try:
                pipe = cls._from_folder(folder, dtype=dtype or torch.float32, **kwargs)
            except (FileNotFoundError, OSError, ValueError, KeyError, RuntimeError, TypeError,
                    AttributeError) as e:
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise CheckpointMismatch(f"{folder} could not be loaded as a {cls.paper or cls.__name__} "
                                         f"checkpoint ({first})") from None
        return pipe.ready(dev, chosen, name)

    def ready(self, device, precision, name):
        """The last loading step of every way in: on `device`, with the precision policy's answer, named."""
        pipe = self.to(device) or self
        if not isinstance(getattr(type(pipe), "device", None), property):  # diffusers derives it
            pipe.device = device
        pipe.set_precision(precision)
        pipe.name = str(name)
        return pipe

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs):
        raise NotImplementedError

    @classmethod
    def check_checkpoint(cls, folder: Path) -> Path:
        """Refuse, with a message that says which command uses it, a checkpoint of another task."""
        declared = checkpoint_classes(folder)
        if not cls.checkpoint_classes or not declared or set(declared) & set(cls.checkpoint_classes):
            return folder
        other = task_of_checkpoint(folder)
        kind = declared[0]
        hint = f"; `genstudio {other}` uses it" if other else ""
        raise CheckpointMismatch(f"{folder} is a {kind} checkpoint, not a {cls.paper or cls.__name__} one{hint}")

    # -- `genstudio compress` (DiT pipelines; see genstudio/compress.py)
    def calibration_samples(self, num_samples: int, num_inference_steps: int, generator):
        """Sample `num_samples` outputs from pure noise with the pipeline's own sampler (no data):
        VQ4DiT's calibration records the DiT blocks' inputs meanwhile. Returns the samples."""
        raise NotImplementedError(f"{type(self).__name__} does not support `genstudio compress`")

    # -- device and precision
    precision = None  # a genstudio.precision.Precision once loaded

    def set_precision(self, precision=None) -> None:
        """A Precision as given, or the policy's answer for a name (None = auto) on this pipeline's
        device and workload."""
        from .precision import Precision, resolve_precision
        self.precision = precision if isinstance(precision, Precision) else \
            resolve_precision(str(self.device), precision, self.workload)

    def autocast(self):
        """The autocast context of the pipeline's precision (a no-op for fp32)."""
        from .precision import autocast
        return autocast(self.device, self.precision or "auto")

    # -- seeds
    @staticmethod
    def make_generator(seed: int | None = SEED_DEFAULT, generator=None):
        """(torch.Generator on CPU, the seed it started from). A given generator wins; seed None
        draws a fresh seed, which is returned so the run can be repeated."""
        import torch
        if generator is not None:
            return generator, int(generator.initial_seed())
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") % 2**63  # leaves torch's global RNG alone
        seed = check_seed(seed)
        return torch.Generator().manual_seed(seed), seed

    # -- progress (same names and meaning as diffusers' DiffusionPipeline)
    def set_progress_bar_config(self, **kwargs) -> None:
        self._progress_bar_config = kwargs

    def progress_bar(self, iterable=None, total=None, **kwargs):
        from tqdm.auto import tqdm
        config = {**getattr(self, "_progress_bar_config", {}), **kwargs}
        return tqdm(iterable, total=total, **config)

    def progress_enabled(self, progress: bool | None) -> bool:
        """A call's `progress` wins; None = the pipeline's config (on unless disabled)."""
        if progress is not None:
            return bool(progress)
        return not getattr(self, "_progress_bar_config", {}).get("disable", False)

    # -- outputs
    def metadata(self, seed: int | None, steps: int | None, started: float, **extra) -> dict:
        return {"model": self.name, "task": self.task, "seed": seed, "steps": steps,
                "seconds": round(time.perf_counter() - started, 3), "device": str(self.device),
                "precision": getattr(self.precision, "name", None), **extra}

    def to(self, device):  # pipelines holding plain modules override this
        return self


def check_seed(seed) -> int:
    """A seed torch and numpy accept: an integer in [0, 2**63)."""
    if isinstance(seed, float) and not seed.is_integer():
        raise ValueError(f"seed must be an integer, got {seed!r}")
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"seed must be an integer, got {seed!r}") from None
    if not 0 <= value < 2**63:
        raise ValueError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    return value


@contextlib.contextmanager
def _quiet_hub_progress():
    """No 'Loading weights' bar per load: noise in the CLI."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
