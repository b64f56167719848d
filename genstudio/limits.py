"""Budgets: how much input a loader accepts, how much work a command starts, how long it may run.

Input budgets (a default each, changed by an environment variable; README "Limits and safety"):

    pixels per image        16,000,000   GENSTUDIO_MAX_PIXELS         (genstudio.render)
    frames per video         1,000       GENSTUDIO_MAX_FRAMES
    points / faces per mesh  2,000,000   GENSTUDIO_MAX_MESH_ELEMENTS
    bytes per mesh or .npy   256 MB      GENSTUDIO_MAX_INPUT_BYTES

Work budgets: a command that can be asked for a lot of work (`generate`: images x steps,
`inpaint`: samples x pixels at the model's working size, `svg`: candidates x SVG tokens and
refined candidates x refinement steps, `video`: frames x pixels x steps, `mesh`: mesh tokens for
--max-faces, `tokenizer reconstruct`: pixels, run in tiles) estimates it before it starts and refuses a request over its default budget unless
`--no-limit` is given (`check_work`, exit code 2). Other options have ranges that fit the models.

Time: `--max-seconds` sets a deadline (`time_limit`) that the sampling loops check between steps
and tokens (`check_time`); past it they raise TimeLimitExceeded and, since every output is
written only once whole, nothing partial is left.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import time

from .render import InputError

MAX_FRAMES = 1_000
MAX_MESH_ELEMENTS = 2_000_000
MAX_INPUT_BYTES = 256_000_000


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip().replace("_", "")
    return int(value) if value.isdigit() and int(value) > 0 else default


def max_frames() -> int:
    return _env_int("GENSTUDIO_MAX_FRAMES", MAX_FRAMES)


def max_mesh_elements() -> int:
    return _env_int("GENSTUDIO_MAX_MESH_ELEMENTS", MAX_MESH_ELEMENTS)


def max_input_bytes() -> int:
    return _env_int("GENSTUDIO_MAX_INPUT_BYTES", MAX_INPUT_BYTES)


def check_file_size(path, what: str = "input") -> None:
    """Refuse a file over the byte budget before anything reads it."""
    size, limit = os.path.getsize(path), max_input_bytes()
    if size > limit:
        raise InputError(f"{what} {path} is {size / 1e6:.1f} MB; the limit is {limit / 1e6:g} MB "
                         "(set GENSTUDIO_MAX_INPUT_BYTES to raise it)")


# ---------------------------------------------------------------- work

class UsageError(InputError):
    """A request the command line can change: an option the model cannot honour, or work over a
    default budget. The CLI exits with code 2 (usage), as for an option out of its range."""
    exit_code = 2


def check_work(what: str, estimate: float, budget: float, unit: str, no_limit: bool = False) -> None:
    """Refuse `estimate` units of work over `budget` unless the user said --no-limit."""
    if estimate > budget and not no_limit:
        raise UsageError(f"{what} is about {estimate:,.0f} {unit}, over the default budget of {budget:,.0f}; "
                         "ask for less, or pass --no-limit to run it anyway (--max-seconds still bounds the time)")


# ---------------------------------------------------------------- time

class TimeLimitExceeded(RuntimeError):
    """The run passed its --max-seconds deadline; raised between steps, before anything is written."""


_deadline: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("deadline", default=None)


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Within the block, `check_time()` raises once `seconds` have passed (None: no limit)."""
    token = _deadline.set((time.monotonic() + seconds, seconds) if seconds else _deadline.get())
    try:
        yield
    finally:
        _deadline.reset(token)


def time_limited() -> bool:
    return _deadline.get() is not None


def check_time() -> None:
    """Called between sampling steps / generated tokens: raise past the current deadline."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline[0]:
        raise TimeLimitExceeded(f"stopped at the --max-seconds limit ({deadline[1]:g} s); nothing was written")
