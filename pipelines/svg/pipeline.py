"""Image -> SVG inference: `StarVectorPipeline.from_pretrained(...)(image)` -> `SVGOutput`.

    pipe = StarVectorPipeline.from_pretrained("starvector-icons-S")
    out = pipe("logo.png", num_candidates=8, seed=0)
    out.save("logo.svg")            # out.svg, out.image (its rendering), out.score {"ssim", "mse"}

Best-of-N: the model writes N candidates (greedy for N=1, sampling for N>1 unless `do_sample`
says otherwise); each is repaired into a standalone SVG, sanitised if it holds anything unsafe,
rendered at the model's resolution and compared with the preprocessed input (SSIM, then MSE,
on the image flattened on white). With `refine=True` (the default) the `refine_top_k` best
usable candidates have their numbers fitted to the input by the differentiable rasteriser (the
model keeps the structure: primitives, order, colours; genstudio.formats.svg_refine), and one more
candidate is refined from an empty canvas (`empty_canvas=True`: a model-free vectoriser, so a
model that writes nothing usable still yields a drawing). Refined candidates are rescored at
REFINE_SIZE px from their rounded text; a longer text must earn its bytes (SSIM_PER_DOUBLING
SSIM per doubling of its length), and of those within SSIM_TOLERANCE of the best, the shortest wins
(`out.metadata["winner"]`: "model" or "empty-canvas"). The best is returned with
width/height set to the input's size. When no candidate yields a drawing, `failed` is True and
`message` says why: an empty `<svg/>` is never returned.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from genstudio.formats.svg import SVGError, rasterize_svg, svg_stats
from genstudio.formats.svg_safety import (is_unsafe, repair_svg, sanitize_svg, set_root_attributes, validate_svg,
                                           viewbox_of)
from genstudio.formats.svg_refine import score_images
from genstudio.pipeline import SEED_DEFAULT, PipelineMixin, PipelineOutput
from genstudio.render import InputError, flatten_alpha, load_image, pad_square, write_text

from . import DEFAULT_MODEL, REFINE_SECONDS, REFINE_STEPS, REFINE_TOP_K
MAX_RENDER_SIDE = 1024
REFINE_SIZE = 128  # refinement fits and scores at this resolution (the model sees image_size)
SSIM_PER_DOUBLING = 0.01  # of refined candidates, one twice as long must score this much higher to win


@dataclass
class SVGCandidate:
    raw: str                      # the decoded model text, as generated
    svg: str | None = None        # standalone SVG in the model's viewBox; None when unusable
    score: dict = field(default_factory=dict)  # {"ssim", "mse"} against the input
    repaired: bool = False        # truncated or malformed text was closed/fixed
    sanitized: bool = False       # unsafe content (scripts, rasters, external refs) was removed
    error: str | None = None      # why the candidate is unusable
    refined: bool = False         # `svg` is the refined text; `unrefined` the model's
    unrefined: str | None = None
    origin: str = "model"         # "model", or "empty-canvas" (refinement from nothing)


@dataclass
class SVGOutput(PipelineOutput):
    svg: str | None               # the chosen SVG, sized to the input; None when failed
    image: Image.Image | None     # its rendering at the input's aspect
    score: dict                   # {"ssim", "mse"} of the chosen candidate at the model's resolution
                                  # (at REFINE_SIZE when refined)
    candidates: list[SVGCandidate]
    best: int | None = None       # index of the chosen candidate
    repaired: bool = False
    size: tuple[int, int] = (0, 0)  # the input's width, height
    source: str | None = None     # the input's path, when it came from a file

    def _write(self, path: Path) -> Path:
        if not self.svg:
            raise ValueError(f"no SVG to write to {path}: {self.message}")
        return write_text(path, self.svg)


# ---- Image helpers ----

def square_on_white(image: Image.Image, size: int) -> np.ndarray:
    """The model's view of an image, as uint8 HxWx3: flattened, padded square (centred), resized."""
    square = pad_square(flatten_alpha(image))
    return np.asarray(square.resize((size, size), Image.BICUBIC), dtype=np.uint8)


def render_at_aspect(svg_square: str, width: int, height: int) -> Image.Image:
    """Render a square-viewBox SVG cropped to width:height (the inverse of the centred padding)."""
    side = max(width, height)
    scale = min(1.0, MAX_RENDER_SIDE / side)
    n = max(1, round(side * scale))
    full = Image.fromarray(rasterize_svg(svg_square, n))
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (n - w) // 2, (n - h) // 2
    return full.crop((left, top, left + w, top + h))


def _default_preprocess(image: Image.Image, size: int):
    from .data import preprocess_image
    return preprocess_image(image, size)


# ---- The pipeline ----

class StarVectorPipeline(PipelineMixin):
    task, paper, default_model = "svg", "StarVector", DEFAULT_MODEL
    output_suffix = ".svg"  # what `genstudio batch` writes
    checkpoint_classes = ("StarVectorModel", "genstudio-starvector")
    workload = "decode"

    def __init__(self, model, tokenizer, device: str = "cpu", precision=None, preprocess: Callable | None = None):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.set_precision(precision)
        self.preprocess = preprocess or _default_preprocess
        self.image_size = int(model.config.image_size)

    @classmethod
    def _from_folder(cls, folder: Path, dtype, **kwargs) -> "StarVectorPipeline":
        from .starvector import load_starvector
        model, tokenizer = load_starvector(folder)
        return cls(model.to(dtype).eval(), tokenizer, **kwargs)

    def to(self, device) -> "StarVectorPipeline":
        self.model.to(device)
        return self

    # 1. inputs
    def _load(self, image) -> tuple[Image.Image, str | None]:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image), str(image)
        if isinstance(image, Image.Image):
            return flatten_alpha(image), None
        if isinstance(image, np.ndarray):
            return flatten_alpha(Image.fromarray(image)), None
        raise InputError(f"expected an image path or a PIL image, got {type(image).__name__}")

    # 2. generation
    def token_budget(self) -> int | None:
        """Most SVG tokens that fit in the LM's positions after the visual tokens and the prompt."""
        lm_config = getattr(getattr(getattr(self.model, "svg_transformer", None), "lm", None), "config", None)
        positions = getattr(lm_config, "n_positions", None) or getattr(lm_config, "max_position_embeddings", None)
        if not positions:
            return None
        prompt = len(self.model.prompt_ids(self.tokenizer)) if hasattr(self.model, "prompt_ids") else 0
        return int(positions) - int(getattr(self.model.config, "num_visual_tokens", 0)) - prompt

    def _generate(self, image: Image.Image, num_candidates: int, **gen) -> list[str]:
        import torch
        pixel_values = self.preprocess(image, self.image_size)[None].to(self.device)
        with torch.inference_mode(), self.autocast():
            texts = self.model.generate_svg(pixel_values, self.tokenizer, num_candidates=num_candidates, **gen)
        return list(texts[0])

    # 3. each candidate: repair, sanitise, render, score
    def score_candidate(self, text: str, reference: np.ndarray) -> SVGCandidate:
        cand = SVGCandidate(raw=text)
        try:
            svg, cand.repaired = repair_svg(text)
            problems = validate_svg(svg)
            if is_unsafe(problems):
                vb = viewbox_of(svg)
                svg, cand.sanitized = sanitize_svg(svg, size=round(vb[2]) if vb else self.image_size), True
                problems = validate_svg(svg)
            if problems:
                raise SVGError(problems[0])
            rendered = rasterize_svg(svg, self.image_size)
        except SVGError as e:
            cand.error = str(e)
            return cand
        if (rendered >= 250).all():
            cand.error = "the SVG draws nothing visible (its rendering is blank)"
            return cand
        cand.svg, cand.score = svg, score_images(rendered, reference)
        return cand

    def __call__(self, image, num_candidates: int = 1, temperature: float = 0.8, top_p: float = 0.95,
                 top_k: int = 0, max_new_tokens: int | None = None, seed: int | None = SEED_DEFAULT,
                 do_sample: bool | None = None, generator=None, refine: bool = True,
                 refine_steps: int = REFINE_STEPS, max_paths: int = 32, refine_seconds: float = REFINE_SECONDS,
                 refine_top_k: int = REFINE_TOP_K, empty_canvas: bool = True,
                 progress: bool | None = None) -> SVGOutput:
        """One image (path, PIL or HxWx3 array) -> SVGOutput. Raises InputError for a bad image.
        Sampling (N > 1) is seeded by `seed` (default 0; None draws one) or `generator`'s seed.
        `refine`: fit the `refine_top_k` best candidates' numbers to the image, plus one candidate
        from an empty canvas when `empty_canvas` (`refine_steps` optimiser steps each, at most
        `max_paths` shapes, `refine_seconds` for all of them together). `refine=False` is plain
        best-of-N on the model's text."""
        if num_candidates < 1:
            raise InputError(f"num_candidates must be >= 1 (got {num_candidates})")
        if refine and (refine_steps < 0 or max_paths < 1 or refine_top_k < 0):
            raise InputError(f"refine_steps and refine_top_k must be >= 0 and max_paths >= 1 "
                             f"(got {refine_steps}, {refine_top_k}, {max_paths})")
        started = time.perf_counter()
        _, seed = self.make_generator(seed, generator)
        image, source = self._load(image)
        reference = square_on_white(image, self.image_size)
        gen = dict(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
                   do_sample=num_candidates > 1 if do_sample is None else do_sample)
        budget = self.token_budget()
        if budget is not None:  # default: the whole context; past it the position table ends
            gen["max_new_tokens"] = min(max_new_tokens or budget, budget)
        elif max_new_tokens is not None:
            gen["max_new_tokens"] = max_new_tokens
        texts = self._generate(image, num_candidates, **gen)
        candidates = [self.score_candidate(t, reference) for t in texts]
        refining = refine and refine_steps > 0
        if refining:
            if empty_canvas:
                candidates.append(SVGCandidate(raw="", origin="empty-canvas"))
            self.refine_candidates(candidates, image, refine_steps, max_paths, refine_seconds, progress,
                                   top_k=refine_top_k)
        out = self._choose(candidates, image.size, source, refined_only=refining)
        out.metadata = self.metadata(seed, None, started, candidates=num_candidates,
                                     max_new_tokens=gen.get("max_new_tokens"),
                                     refine_steps=refine_steps if refine else 0,
                                     refine_top_k=refine_top_k if refining else 0,
                                     empty_canvas=bool(refining and empty_canvas),
                                     winner=None if out.best is None else candidates[out.best].origin)
        return out

    # 3b. refinement: the model's structure, numbers fitted by the differentiable rasteriser
    def refine_candidates(self, candidates: list[SVGCandidate], image: Image.Image, steps: int, max_paths: int,
                          seconds: float, progress: bool | None = None, top_k: int | None = None) -> None:
        """Refine, in place, the `top_k` (None: all) usable model candidates with the highest
        scores and every "empty-canvas" candidate (from nothing); a refined candidate's score
        becomes its text's at REFINE_SIZE px, so best-of-N compares refined with refined. Never
        worse than the model's text: refinement returns the input when nothing it tried scored
        higher."""
        from genstudio.formats.svg_refine import refine_svg, score_svg
        ranked = sorted((c for c in candidates if c.svg is not None and c.origin == "model"),
                        key=lambda c: (-c.score["ssim"], c.score["mse"]))
        usable = ranked[:top_k] + [c for c in candidates if c.origin == "empty-canvas"]
        if not usable:
            return
        target = square_on_white(image, REFINE_SIZE)
        bar = self.progress_bar(total=steps * len(usable), desc="refine SVG", unit="step", leave=False,
                                disable=not self.progress_enabled(progress))
        with bar:
            for cand in usable:
                try:
                    result = refine_svg(cand.svg, target, steps=steps, max_paths=max_paths, size=REFINE_SIZE,
                                        time_limit=seconds / len(usable), callback=lambda _: bar.update())
                except SVGError as e:
                    if cand.svg is None:  # the empty canvas found nothing to draw (a blank input)
                        cand.error = f"refinement from an empty canvas: {e}"
                    else:
                        cand.score, cand.refined, cand.unrefined = score_svg(cand.svg, target), True, cand.svg
                    continue
                cand.unrefined, cand.svg, cand.score, cand.refined = cand.svg, result.svg, result.score, True

    # 4. best-of-N and the final, sized SVG
    def _choose(self, candidates: list[SVGCandidate], size: tuple[int, int], source: str | None,
                refined_only: bool = False) -> SVGOutput:
        usable = [i for i, c in enumerate(candidates) if c.svg is not None]
        if refined_only and any(candidates[i].refined for i in usable):  # scored at REFINE_SIZE: like with like
            usable = [i for i in usable if candidates[i].refined]
        if not usable:
            reasons = "; ".join(dict.fromkeys(c.error or "unknown" for c in candidates))
            return SVGOutput(None, None, {}, candidates, failed=True, size=size, source=source,
                             message=f"no usable SVG ({len(candidates)} candidate"
                                     f"{'s' if len(candidates) != 1 else ''}: {reasons})")
        best = max(usable, key=lambda i: (candidates[i].score["ssim"], -candidates[i].score["mse"]))
        if candidates[best].refined:  # refined candidates often tie: of the close ones, the shortest
            from genstudio.formats.svg_refine import SSIM_TOLERANCE
            # a longer text must earn its bytes: SSIM_PER_DOUBLING more SSIM per doubling of length
            value = {i: candidates[i].score["ssim"] - SSIM_PER_DOUBLING * math.log2(len(candidates[i].svg))
                     for i in usable}
            floor = max(value.values()) - SSIM_TOLERANCE
            best = min((i for i in usable if value[i] >= floor), key=lambda i: len(candidates[i].svg))
        cand = candidates[best]
        w, h = size
        svg = set_root_attributes(cand.svg, width=str(w), height=str(h),
                                  preserveAspectRatio="xMidYMid slice" if w != h else None)
        stats = svg_stats(svg)
        proposals = sum(c.origin == "model" for c in candidates)
        notes = [f"best of {proposals}" if proposals > 1 else f"{proposals} model candidate"]
        if len(candidates) > proposals:
            notes[0] += " + an empty canvas"
        if cand.repaired:
            notes.append("repaired a truncated/malformed output")
        if cand.sanitized:
            notes.append("removed unsafe content")
        if cand.origin == "empty-canvas":
            notes.append("refinement from an empty canvas won")
        elif cand.refined:
            notes.append("refined" if cand.svg != cand.unrefined else "refinement kept the model's SVG")
        return SVGOutput(svg, render_at_aspect(cand.svg, w, h), dict(cand.score, paths=stats["paths"],
                         bytes=stats["bytes"]), candidates, best=best, repaired=cand.repaired, size=size,
                         source=source, message=", ".join(notes))

    def batch(self, images: Sequence, progress: bool | None = None, **kwargs) -> list[SVGOutput]:
        """Several images with a progress bar. A bad input does not stop the batch: its output is
        `failed` with the reason in `message` (same seed for every image: results do not depend on
        the order)."""
        outputs = []
        for image in self.progress_bar(images, desc="image -> SVG", unit="image",
                                       disable=not self.progress_enabled(progress)):
            try:
                outputs.append(self(image, **kwargs))
            except (InputError, SVGError) as e:
                src = str(image) if isinstance(image, (str, os.PathLike)) else None
                outputs.append(SVGOutput(None, None, {}, [], failed=True, message=str(e), source=src))
        return outputs
