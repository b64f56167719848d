"""The one training loop every recipe calls (accelerate: devices, mixed precision, DDP).

A *recipe* (entry-point group `genstudio.recipes`) is a callable `recipe(config: dict) -> Recipe`:
the model, the dataset and a loss function. `train(recipe)` then handles what every model needs:
the precision genstudio.precision picks for the device (`mixed_precision="auto"`: bf16 autocast
only where the hardware runs bf16 natively, else fp32), gradient accumulation and clipping, warmup + cosine LR,
EMA weights, periodic `save_pretrained` checkpoints, resume after a kill, tqdm progress,
metrics to JSONL (and TensorBoard when installed), and data parallelism through
`accelerate launch --num_processes N`.

A recipe reads its flat config with `parse_config(cfg, ItsOptions, recipe=NAME, **defaults)`: its own
options are a dataclass, values take the field types and an unknown key is an error. State a loss
needs across steps comes from the trainer (`loss_fn(model, batch, step=...)`), never from a closure,
so it resumes. The run's train_config.json records the recipe's name and options, which is how
`genstudio export` (genstudio/export.py) finds the recipe module's `export(run_dir, to, dtype)`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from .limits import TimeLimitExceeded, check_time


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    steps: int = 1000
    batch_size: int = 32              # per process
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 0
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    mixed_precision: str = "auto"     # auto | fp32 | bf16 | fp16 (GPU only); "no" = fp32. auto: genstudio.precision
    ema_decay: float | None = 0.999   # None: no EMA
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 20
    seed: int = 0
    num_workers: int = 0
    cpu: bool = False                 # force CPU even when a GPU is present
    max_minutes: float | None = None  # stop early (and save) after this much wall time
    progress: bool = True


@dataclass
class Recipe:
    model: torch.nn.Module            # a ModelMixin / PreTrainedModel (has save_pretrained)
    dataset: Dataset
    # (model, batch) -> loss or (loss, {name: float}). A loss_fn with a `step` parameter also gets
    # step=the optimizer steps done so far, which resumes with the run (schedules need no closure state).
    loss_fn: Callable[..., Any]
    config: TrainConfig
    collate_fn: Callable | None = None
    eval_fn: Callable[[torch.nn.Module], dict] | None = None  # run on EMA weights at each save
    lengths: list[int] | None = None  # per-item sequence lengths: batches are grouped by length
    batch_sampler: torch.utils.data.Sampler | None = None  # overrides `lengths` (e.g. CurriculumBatchSampler)
    extra: dict = field(default_factory=dict)
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> LR factor
    name: str | None = None           # the recipe's entry-point name: recorded so `genstudio export` finds its exporter
    options: Any = None               # the recipe's typed options (a dataclass): recorded in train_config.json


class TensorDictDataset(Dataset):
    """Equal-length tensors as a dataset of dicts: `TensorDictDataset(latent=z, label=y)[i]` is
    {"latent": z[i], "label": y[i]} (the batch layout recipes' loss functions read)."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors of different lengths: { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict:
        return {k: t[i] for k, t in self.tensors.items()}


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of items of similar length (less padding for sequence models).

    Each epoch: shuffle, cut into mega-batches of `group` batches, sort each by length, split
    into batches and shuffle the batch order. Deterministic given the seed and epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, group: int = 64, seed: int = 0):
        self.lengths, self.batch_size, self.group, self.seed, self.epoch = list(lengths), batch_size, group, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = self.batch_size * self.group
        batches = []
        for i in range(0, len(order), mega):
            chunk = sorted(order[i:i + mega], key=lambda k: self.lengths[k])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk) - self.batch_size + 1, self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield batches[b]


class CurriculumBatchSampler(torch.utils.data.Sampler):
    """Batches that move from one pool of items to another on a schedule (curriculum mixing).

    Batch b draws each of its items from `late` with probability
    share(b) = final_share * clamp((b - warm) / ramp, 0, 1), else from `early`: `warm` batches of
    `early` alone, then the share of `late` grows linearly over `ramp` batches and stays at
    `final_share` (< 1 keeps `early` items in every batch). Items are drawn at random with
    replacement; batch b depends only on (seed, b), so a resumed run continues the schedule
    (`start_at`). One epoch = one pass worth of batches over both pools.
    """

    def __init__(self, early: list[int], late: list[int], batch_size: int, warm: int, ramp: int,
                 final_share: float, seed: int = 0):
        if not early or (final_share > 0 and not late):
            raise ValueError("CurriculumBatchSampler needs items in both pools")
        self.early, self.late, self.batch_size = list(early), list(late), batch_size
        self.warm, self.ramp, self.final_share, self.seed, self.position = warm, max(ramp, 1), final_share, seed, 0

    def share(self, b: int) -> float:
        return self.final_share * min(1.0, max(0.0, (b - self.warm) / self.ramp))

    def start_at(self, batch: int) -> None:
        self.position = batch

    def __len__(self) -> int:
        return (len(self.early) + len(self.late)) // self.batch_size

    def __iter__(self):
        for _ in range(len(self)):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.position)
            late = (torch.rand(self.batch_size, generator=g) < self.share(self.position)).tolist()
            picks = torch.rand(self.batch_size, generator=g).tolist()
            self.position += 1
            yield [self.late[int(u * len(self.late))] if is_late else self.early[int(u * len(self.early))]
                   for is_late, u in zip(late, picks)]


# ---------------------------------------------------------------- typed recipe configs
def parse_config(cfg: dict, options_cls: type | None = None, *, recipe: str = "recipe", **defaults) -> tuple[TrainConfig, Any]:
    """A flat config (JSON/YAML file, `--set KEY=VALUE`) -> (TrainConfig, an `options_cls` instance).

    Every key names a TrainConfig field or a field of the recipe's options dataclass, else a
    ValueError names the closest valid key and lists them all. Values are coerced to the field's
    type: "3" -> 3, "true" -> True, [0.9, 0.95] or "0.9,0.95" -> (0.9, 0.95), '{"a": 1}' -> {"a": 1},
    "none" -> None for Optional fields. `defaults` are the recipe's own defaults for either kind of
    field; `cfg` wins over them. `recipe` names the recipe in error messages.
    """
    train_fields = _field_types(TrainConfig)
    option_fields = _field_types(options_cls) if options_cls is not None else {}
    if set(train_fields) & set(option_fields):
        raise TypeError(f"{options_cls.__name__} redefines TrainConfig field(s) {sorted(set(train_fields) & set(option_fields))}")
    valid = {**train_fields, **option_fields}
    merged = {**defaults, **cfg}
    unknown = [k for k in merged if k not in valid]
    if unknown:
        import difflib
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        own = f"{recipe} options: {', '.join(option_fields) or 'none'}; " if options_cls is not None else ""
        raise ValueError(f"unknown {recipe} option{'s' if len(unknown) > 1 else ''} {', '.join(hints)}. "
                         f"Valid keys: {own}trainer options: {', '.join(train_fields)}")
    values = {}
    for key, value in merged.items():
        try:
            values[key] = _coerce(value, valid[key])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{recipe} option {key!r}: {e}") from None
    train_cfg = TrainConfig(**{k: v for k, v in values.items() if k in train_fields})
    options = options_cls(**{k: v for k, v in values.items() if k in option_fields}) if options_cls is not None else None
    return train_cfg, options


def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's init fields -> their resolved types (string annotations evaluated)."""
    import typing
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _type_name(tp) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _coerce(value, tp):
    """`value` (from JSON or the command line) as type `tp`; ValueError when it cannot be one."""
    import types
    import typing
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
            return None
        for arm in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arm)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value.strip()):
                return choice
        raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {value!r}")
    if value is None:
        raise ValueError(f"expected {_type_name(tp)}, got None")
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, (float, str)) and not isinstance(value, bool):
            try:
                number = float(value)
            except ValueError:
                number = None
            if number is not None and number.is_integer():
                return int(number)
    elif tp is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif tp in (tuple, list) or origin in (tuple, list):
        items = [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            kind = origin or tp
            if not args:
                return kind(items)
            if kind is tuple and args[-1] is not Ellipsis:
                if len(items) != len(args):
                    raise ValueError(f"expected {len(args)} values ({_type_name(tp)}), got {value!r}")
                return tuple(_coerce(v, a) for v, a in zip(items, args))
            return kind(_coerce(v, args[0]) for v in items)
    elif tp is dict or origin is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError(f"expected a JSON object, got {value!r}") from None
        if isinstance(value, dict):
            if not args:
                return dict(value)
            return {_coerce(k, args[0]): _coerce(v, args[1]) for k, v in value.items()}
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ValueError(f"expected {_type_name(tp)}, got {value!r}")


def options_dict(options) -> dict | None:
    """A recipe's options dataclass -> a JSON-ready dict (None stays None)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else options


def _infinite(loader: DataLoader, start_batch: int = 0):
    """Endless batches; a resumed run starts at batch `start_batch` of the same sequence (the epoch
    it was in, minus the batches already seen), so a deterministic sampler continues its order."""
    from accelerate import skip_first_batches
    per_epoch = max(len(loader), 1)
    epoch, skip = divmod(start_batch, per_epoch)
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        sampler = getattr(loader, "batch_sampler", None)
        for s in (sampler, getattr(sampler, "batch_sampler", None)):  # accelerate may wrap it
            if isinstance(s, LengthGroupedBatchSampler):
                s.set_epoch(epoch)
        yield from (skip_first_batches(loader, skip) if skip else loader)
        epoch, skip = epoch + 1, 0


def _unwrap(accelerator, model):
    return accelerator.unwrap_model(model)


def _save_model(accelerator, model, ema, path: Path) -> None:
    """save_pretrained with EMA weights swapped in; written to a temp folder, then renamed."""
    if not accelerator.is_main_process:
        return
    m = _unwrap(accelerator, model)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if ema is not None:
        ema.store(m.parameters())
        ema.copy_to(m.parameters())
    try:
        m.save_pretrained(tmp, safe_serialization=True) if _accepts_safe(m) else m.save_pretrained(tmp)
    finally:
        if ema is not None:
            ema.restore(m.parameters())
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _accepts_safe(model) -> bool:
    import inspect
    return "safe_serialization" in inspect.signature(model.save_pretrained).parameters


def _param_groups(model: torch.nn.Module, lr: float, multipliers: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by learning rate: a name starting with a key of `multipliers`
    trains at lr * that factor (the first matching key wins), every other one at lr."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            factor = next((f for prefix, f in multipliers.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(factor, []).append(p)
    unknown = [k for k in multipliers if not any(n.startswith(k) for n, _ in model.named_parameters())]
    if unknown:
        raise ValueError(f"lr_multipliers name no parameter: {unknown}")
    return [{"params": ps, "lr": lr * f} for f, ps in groups.items()]


def train(recipe: Recipe) -> dict:
    """Train `recipe.model`; returns a summary dict (steps, final loss, paths, throughput)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    cfg = recipe.config
    out = Path(cfg.output_dir)
    _reset_single_process_state()
    # cpu=True also when no accelerator exists: accelerate then runs multi-process CPU (gloo) DDP.
    no_accel = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    precision = train_precision(cfg.mixed_precision, _train_device(cfg.cpu or no_accel))
    accelerator = Accelerator(mixed_precision=precision.accelerate_name, cpu=cfg.cpu or no_accel,
                              gradient_accumulation_steps=cfg.grad_accum)
    accelerator.print(f"precision: {precision.name} ({precision.reason})")
    set_seed(cfg.seed, device_specific=True)
    model = recipe.model
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.lr, recipe.lr_multipliers), lr=cfg.lr, betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lr_sched = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, max(cfg.steps, 1))
    common = dict(num_workers=cfg.num_workers, collate_fn=recipe.collate_fn, persistent_workers=cfg.num_workers > 0)
    if recipe.batch_sampler is not None:
        loader = DataLoader(recipe.dataset, batch_sampler=recipe.batch_sampler, **common)
    elif recipe.lengths is not None:
        sampler = LengthGroupedBatchSampler(recipe.lengths, cfg.batch_size, seed=cfg.seed)
        loader = DataLoader(recipe.dataset, batch_sampler=sampler, **common)
    else:
        loader = DataLoader(recipe.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True, **common)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75) \
        if cfg.ema_decay else None
    model, optimizer, loader, lr_sched = accelerator.prepare(model, optimizer, loader, lr_sched)
    if ema is not None:
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)

    state_dir, step = out / "state", 0
    if (state_dir / "train_state.json").exists():  # resume after a kill
        accelerator.load_state(str(state_dir))
        step = json.loads((state_dir / "train_state.json").read_text())["step"]
        accelerator.print(f"resumed from {state_dir} at step {step}")
        if hasattr(recipe.batch_sampler, "start_at"):  # a scheduled sampler continues where it was
            recipe.batch_sampler.start_at(step * cfg.grad_accum * accelerator.num_processes)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        # what `genstudio export` reads: which recipe made the run, and its options
        record = {"recipe": recipe.name, **dataclasses.asdict(cfg), "options": options_dict(recipe.options)}
        (out / "train_config.json").write_text(json.dumps(record, indent=2))
    writer = _tensorboard(out) if accelerator.is_main_process else None

    def save_state(step: int) -> None:
        tmp = out / "state.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()  # every rank's RNG file is written before the rename
        if accelerator.is_main_process:
            (tmp / "train_state.json").write_text(json.dumps({"step": step}))
            shutil.rmtree(state_dir, ignore_errors=True)
            tmp.rename(state_dir)
        accelerator.wait_for_everyone()

    def save_checkpoint(step: int, name: str) -> dict:
        _save_model(accelerator, model, ema, out / name)
        metrics = {}
        if recipe.eval_fn is not None and accelerator.is_main_process:
            m = _unwrap(accelerator, model)
            if ema is not None:
                ema.store(m.parameters()); ema.copy_to(m.parameters())
            try:
                m.eval(); metrics = recipe.eval_fn(m); m.train()
            finally:
                if ema is not None:
                    ema.restore(m.parameters())
            _log(out, {"step": step, **{f"eval/{k}": v for k, v in metrics.items()}}, writer)
        if accelerator.is_main_process:
            ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
            for old in ckpts[:-cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        return metrics

    import inspect
    takes_step = "step" in inspect.signature(recipe.loss_fn).parameters
    # A scheduled sampler (start_at) continues by itself; any other resumes at the batch it reached.
    batches = _infinite(loader, 0 if hasattr(recipe.batch_sampler, "start_at") else step * cfg.grad_accum)
    bar = tqdm(total=cfg.steps, initial=step, disable=not (cfg.progress and accelerator.is_main_process),
               desc=f"train {out.name}", dynamic_ncols=True)
    t0, t_log, samples, loss_avg, last = time.time(), time.time(), 0, None, {}
    model.train()
    while step < cfg.steps:
        try:
            check_time()  # a caller's --max-seconds (genstudio sims): stop, nothing saved; `train` uses max_minutes
        except TimeLimitExceeded:
            bar.close()  # its last line before the caller's message, not after it
            raise
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            with accelerator.accumulate(model), accelerator.autocast():
                res = recipe.loss_fn(model, batch, step=step) if takes_step else recipe.loss_fn(model, batch)
                loss, logs = res if isinstance(res, tuple) else (res, {})
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.grad_clip:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step(); lr_sched.step(); optimizer.zero_grad(set_to_none=True)
            samples += cfg.batch_size * accelerator.num_processes
        step += 1
        if ema is not None:
            ema.step(_unwrap(accelerator, model).parameters())
        lv = float(loss.detach())
        loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.time() - t_log
            last = {"step": step, "loss": lv, "loss_ema": loss_avg, "lr": lr_sched.get_last_lr()[0],
                    "samples_per_s": samples / max(dt, 1e-9), **{k: float(v) for k, v in logs.items()}}
            t_log, samples = time.time(), 0
            if accelerator.is_main_process:
                _log(out, last, writer)
        timed_out = cfg.max_minutes is not None and (time.time() - t0) > 60 * cfg.max_minutes
        if step % cfg.save_every == 0 or step == cfg.steps or timed_out:
            save_state(step)
            save_checkpoint(step, f"checkpoint-{step}")
        if timed_out:
            accelerator.print(f"stopping at step {step}: the time limit ({60 * cfg.max_minutes:g} s, max_minutes) was "
                              f"reached; saved {out / f'checkpoint-{step}'} (resume to continue)")
            break
    bar.close()
    final_metrics = save_checkpoint(step, "final")
    accelerator.wait_for_everyone()
    if writer is not None:
        writer.close()
    summary = {"steps": step, "loss": last.get("loss"), "loss_ema": loss_avg, "seconds": round(time.time() - t0, 1),
               "final": str(out / "final"), "processes": accelerator.num_processes,
               "precision": precision.name, "precision_reason": precision.reason, **final_metrics}
    init_from = getattr(recipe.options, "init_from", None)
    if init_from:  # a continued run: the steps behind its starting weights, so model cards count them all
        from .bench import training_steps
        summary["init_from"], summary["init_steps"] = init_from, training_steps(init_from) or 0
    if accelerator.is_main_process:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _train_device(cpu: bool) -> str:
    """The device accelerate will train on (what the precision policy is asked about)."""
    if cpu:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "mps"


def train_precision(mixed_precision: str | None, device: str):
    """TrainConfig.mixed_precision (auto | fp32 | bf16 | fp16; "no" = fp32) -> a policy Precision."""
    from .precision import PRECISIONS, resolve_precision
    name = {"no": "fp32"}.get(str(mixed_precision or "auto").lower(), str(mixed_precision or "auto").lower())
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision={mixed_precision!r} is unknown: use one of {', '.join(PRECISIONS)} "
                         "('no' is read as fp32)")
    return resolve_precision(device, name)


def _reset_single_process_state() -> None:
    """Let one process run several trainings with different precisions (tests, benchmarks).

    accelerate keeps a process-wide singleton; it is only safe to drop when not distributed.
    """
    from accelerate.state import AcceleratorState, DistributedType
    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.NO:
        AcceleratorState._reset_state()


def _log(out: Path, row: dict, writer) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                writer.add_scalar(k, v, row["step"])


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out / "tb"))
    except Exception:  # tensorboard not installed: JSONL only
        return None


def recipe_entry_point(name: str):
    """The entry point of recipe `name` (group `genstudio.recipes`); KeyError listing the installed ones."""
    from importlib.metadata import entry_points
    eps = {ep.name: ep for ep in entry_points(group="genstudio.recipes")}
    if name not in eps:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(sorted(eps)) or 'none'}")
    return eps[name]


def load_recipe(name: str):
    """Find a recipe by entry-point name (group `genstudio.recipes`)."""
    return recipe_entry_point(name).load()
