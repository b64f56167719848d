"""`genstudio bench multiview`: image-to-multiview quality and cross-view consistency on held-out objects.

Data: the TEST split of the `multiview` source (rendered here by data.py: never trained on), `objects` of them
evenly spaced by id. Per object, two camera sets (the "dataset" column):
- `reference-6`: its 6 stored reference views (orthographic, elevation 0, the released adapter's cameras);
- `unseen-4`: 4 of its stored random orbit views (picked by `seed`; the object's own projection, orthographic
  or perspective, elevation -15..45 deg): cameras no method was sampled at as a fixed set.
Every method gets the same conditioning: the object's front reference render (view 0, as MultiViewDataset's
"reference" gives training) and its caption, and the same seed per object (seed + object index).

Methods:
- `mv-adapter`: the pipeline as shipped (image + caption, cameras' Plücker maps, CFG `guidance`);
- `mv-adapter-no-mv`: the same with the multi-view attention branch off (`set_scales(mv_scale=0)`: the ablation);
- `base-per-view`: what a user without the adapter does: the frozen base UNet alone (adapter processors
  disabled, no camera residuals, no reference image: the base has no image input), text-to-image per view with
  the view named in the prompt ("a red box, front view"), sampled with the base's own (unshifted) schedule;
- `copy-reference`: the conditioning image at every view (a floor for PSNR/SSIM: view 0 of reference-6 is it);
- `true-renders`: the ground truth itself (consistency only: the score's ceiling for these cameras).

Metrics per (method, camera set), averaged over objects: PSNR (from the mean squared error over all views of an
object, pixels in [0, 1]; pooled so that an exact view does not make it infinite), SSIM (skimage, per view,
channel_axis, data_range 1), `consistency` (below) with `foreground` (the mean share of foreground pixels per
view: a frame-filling output would score a high consistency, so read the two together), seconds and peak memory
per object (RSS above the level
before the object, sampled by a thread; torch's peak allocated memory on CUDA).

CONSISTENCY (`silhouette_consistency`): foreground = pixels whose colour differs from the white background by
more than FOREGROUND_THRESHOLD in some channel (values in [0, 1]). For each view k, a visual hull is carved
on a `grid`^3 voxel grid over the unit cube the objects are normalised into ([-0.5, 0.5]^3, data.py's
normalize_unit_cube) from the silhouettes of all OTHER views with the known cameras (a voxel stays when its
centre projects inside every other silhouette; a centre that falls outside an image is not carved by it), then
rendered into view k by marching each pixel's ray (cameras.ray_origins_and_directions) at half-voxel steps;
the score is the IoU of that hull silhouette with view k's own, averaged over k. A view whose silhouette and
hull silhouette are both empty scores 0 (a blank output is not rewarded).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from PIL import Image

from .cameras import CameraSet, ray_origins_and_directions
from .data import NUM_REFERENCE, load_object, object_cameras
from .render import _project

FOREGROUND_THRESHOLD = 0.08   # max channel distance from white, [0, 1] units
UNIT_EXTENT = 0.5             # objects lie in [-0.5, 0.5]^3 (normalize_unit_cube)
UNSEEN_VIEWS = 4
METHODS = ("mv-adapter", "mv-adapter-no-mv", "base-per-view", "copy-reference", "true-renders")


# ---------------------------------------------------------------- silhouettes and the visual hull

def silhouettes(images: np.ndarray, threshold: float = FOREGROUND_THRESHOLD) -> np.ndarray:
    """(V, H, W, 3) uint8 (or float in [0, 1]) over white -> (V, H, W) bool foreground."""
    a = np.asarray(images)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    return (1.0 - a).max(-1) > threshold


def _grid_points(grid: int) -> np.ndarray:
    axis = np.linspace(-UNIT_EXTENT, UNIT_EXTENT, grid)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)


def _inside(points: np.ndarray, mask: np.ndarray, c2w: np.ndarray, cameras: CameraSet) -> np.ndarray:
    """Whether each world point projects inside `mask` (H, W); points outside the image count as inside
    (the view holds no evidence against them)."""
    size = mask.shape[0]
    col, row, depth = _project(points, c2w, cameras.projection, size, cameras.ortho_scale, cameras.fov)
    c, r = np.rint(col).astype(np.int64), np.rint(row).astype(np.int64)
    seen = (c >= 0) & (c < size) & (r >= 0) & (r < size) & (depth > 0)
    out = np.ones(len(points), bool)
    out[seen] = mask[r[seen], c[seen]]
    return out


def _hull_silhouette(occupied: np.ndarray, grid: int, origins: np.ndarray, directions: np.ndarray,
                     distance: float) -> np.ndarray:
    """(H, W) pixels whose ray passes through an occupied voxel (nearest-voxel lookup at half-voxel steps)."""
    spacing = 2 * UNIT_EXTENT / (grid - 1)
    reach = math.sqrt(3) * (UNIT_EXTENT + spacing)
    t = np.arange(max(distance - reach, 0.0), distance + reach, spacing / 2)
    h, w = origins.shape[:2]
    hit = np.zeros(h * w, bool)
    o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    for chunk in np.array_split(t, max(1, len(t) // 32)):   # bounded memory: 32 steps at a time
        p = o[:, None] + chunk[None, :, None] * d[:, None]
        idx = np.rint((p + UNIT_EXTENT) / spacing).astype(np.int64)
        ok = ((idx >= 0) & (idx < grid)).all(-1)
        flat = np.where(ok, (idx[..., 0] * grid + idx[..., 1]) * grid + idx[..., 2], 0)
        hit |= (occupied[flat] & ok).any(1)
    return hit.reshape(h, w)


def silhouette_consistency(images: np.ndarray, cameras: CameraSet, grid: int = 48,
                           threshold: float = FOREGROUND_THRESHOLD, per_view: bool = False):
    """Mean over views k of IoU(silhouette k, the visual hull of the other views seen from k); see the module doc.
    `images` (V, H, W, 3) over white, rendered with `cameras` (V views, square images)."""
    masks = silhouettes(images, threshold)
    views, size = masks.shape[0], masks.shape[1]
    if views != len(cameras) or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"consistency: {views} images of {masks.shape[1:]} for {len(cameras)} cameras (square images)")
    if views < 2:
        raise ValueError("consistency: needs at least 2 views")
    points = _grid_points(grid)
    c2w = cameras.c2w.double().numpy()
    inside = np.stack([_inside(points, masks[j], c2w[j], cameras) for j in range(views)])
    origins, directions = (t.double().numpy() for t in ray_origins_and_directions(cameras, size))
    scores = []
    for k in range(views):
        occupied = np.delete(inside, k, axis=0).all(0)
        hull = _hull_silhouette(occupied, grid, origins[k], directions[k], float(np.linalg.norm(c2w[k, :3, 3])))
        union = (hull | masks[k]).sum()
        scores.append(float((hull & masks[k]).sum() / union) if union else 0.0)
    return scores if per_view else float(np.mean(scores))


# ---------------------------------------------------------------- measuring (PeakMemory: genstudio.bench)

def image_metrics(generated: np.ndarray, truth: np.ndarray) -> dict:
    """(V, H, W, 3) uint8 each -> PSNR of the pooled MSE over the views, mean per-view SSIM."""
    from genstudio.metrics import mse, ssim
    err = float(np.mean([mse(g, t) for g, t in zip(generated, truth)]))
    return {"psnr": 10 * math.log10(1.0 / max(err, 1e-10)),
            "ssim": float(np.mean([ssim(g, t) for g, t in zip(generated, truth)]))}


def resize_views(images, size: int) -> np.ndarray:
    """PIL images or (V, H, W, 3) uint8 -> (V, size, size, 3) uint8 (bicubic where the size differs)."""
    out = []
    for im in images:
        im = im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im))
        im = im.convert("RGB")
        out.append(np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)))
    return np.stack(out)


# ---------------------------------------------------------------- the base model per view

def view_name(azimuth: float, elevation: float) -> str:
    """A prompt's name for a view: azimuth in degrees from the front (90 = the object's right side)."""
    if elevation >= 60:
        return "top view"
    if elevation <= -60:
        return "bottom view"
    names = ("front view", "front right view", "right side view", "back right view", "back view",
             "back left view", "left side view", "front left view")
    return names[int(round((azimuth % 360) / 45)) % 8]


@torch.no_grad()
def sample_base_per_view(pipe, prompts: list[str], steps: int, guidance: float, seed: int) -> list[Image.Image]:
    """The frozen base UNet alone (adapter processors disabled: exactly the base; no camera residuals, no
    reference image), one prompt per view, batched; CFG against the empty caption as the base was trained;
    the base's own schedule (no SNR shift), DDIM with trailing spacing as the pipeline samples."""
    from genstudio.diffusion import SCHEDULERS
    from genstudio.render import to_uint8
    sampler = SCHEDULERS["ddim"].from_config(pipe.scheduler.config, timestep_spacing="trailing")
    generator, _ = pipe.make_generator(seed)
    unet, views = pipe.unet, len(prompts)
    was = pipe.adapter.enabled
    pipe.adapter.enabled = False
    try:
        with pipe.autocast():
            states, masks = pipe.encode_text([""] + list(prompts))
            guided = guidance != 1.0
            if guided:
                states = torch.cat([states[:1].expand(views, -1, -1), states[1:]])
                masks = torch.cat([masks[:1].expand(views, -1), masks[1:]])
            else:
                states, masks = states[1:], masks[1:]
            shape = (views, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
            x = torch.randn(shape, generator=generator).to(unet.device, unet.dtype) * sampler.init_noise_sigma
            sampler.set_timesteps(int(steps), device=unet.device)
            for t in sampler.timesteps:
                model_in = sampler.scale_model_input(x, t)
                batch = torch.cat([model_in, model_in]) if guided else model_in
                eps = unet(batch, t, encoder_hidden_states=states, encoder_attention_mask=masks).sample
                if guided:
                    uncond, cond = eps.chunk(2)
                    eps = uncond + guidance * (cond - uncond)
                x = sampler.step(eps, t, x, generator=generator).prev_sample
            pixels = pipe._decode(x, one_at_a_time=False)
    finally:
        pipe.adapter.enabled = was
    return [Image.fromarray(a) for a in to_uint8(pixels)]


# ---------------------------------------------------------------- the benchmark

def camera_sets(data: dict, object_seed) -> dict[str, tuple[np.ndarray, CameraSet]]:
    """name -> (stored view indices, their CameraSet)."""
    sets = {"reference-6": np.arange(NUM_REFERENCE)}
    random_views = len(data["c2w"]) - NUM_REFERENCE
    if random_views >= 2:
        pick = np.random.default_rng(object_seed).choice(random_views, min(UNSEEN_VIEWS, random_views), replace=False)
        sets[f"unseen-{min(UNSEEN_VIEWS, random_views)}"] = NUM_REFERENCE + np.sort(pick)
    return {name: (index, object_cameras(data, index)) for name, index in sets.items()}


def _generate(method: str, pipe, caption: str, reference: Image.Image, cameras: CameraSet, steps: int,
              guidance: float, seed: int, use_image: bool):
    if method == "base-per-view":
        _, azimuths, elevations = pipe.make_cameras(None, None, 0.0, cameras, cameras.projection)
        prompts = [f"{caption}, {view_name(a, e)}" for a, e in zip(azimuths, elevations)]
        return sample_base_per_view(pipe, prompts, steps, guidance, seed)
    previous = pipe.adapter.mv_scale
    if method == "mv-adapter-no-mv":
        pipe.adapter.set_scales(mv_scale=0.0)
    try:
        return pipe(prompt=caption, image=reference if use_image else None, cameras=cameras,
                    num_inference_steps=steps, guidance_scale=guidance, seed=seed, progress=False).images
    finally:
        pipe.adapter.set_scales(mv_scale=previous)


def bench_multiview(report, quick: bool = False, model: str = "mv-adapter-S", base: str | None = None,
                    objects: int = 24, steps: int = 30, guidance: float = 3.0, seed: int = 0, size: int | None = None,
                    grid: int = 48, device: str = "auto", precision: str = "auto") -> None:
    """MV-Adapter vs the base per view vs the no-multi-view ablation on held-out objects; see the module doc."""
    from genstudio.bench import PeakMemory, evenly_spaced, training_steps
    from genstudio.data import DataError, load_manifest
    from genstudio.hub import resolve
    from .pipeline import MVAdapterPipeline
    objects, steps, guidance, seed, grid = int(objects), int(steps), float(guidance), int(seed), int(grid)
    if quick:
        objects, steps = min(objects, 2), min(steps, 4)
    items = load_manifest("multiview", "test")
    if not items:
        raise DataError("the multiview source has no test objects; build it with `genstudio data prepare multiview`")
    chosen = evenly_spaced(items, objects)

    pipe = MVAdapterPipeline.from_pretrained(base, model, device=device, precision=precision)
    use_image = "ref" in pipe.adapter.branches(pipe.adapter.attention_names[0]).kinds
    cuda = str(pipe.unet.device).startswith("cuda")

    # warm-up (untimed): lazy loads (text encoder, kernels) are not charged to the first object's row
    first = load_object(chosen[0]["path"])
    warm_cameras = object_cameras(first, np.arange(NUM_REFERENCE))
    for method in ("mv-adapter", "base-per-view"):
        _generate(method, pipe, chosen[0]["caption"], Image.fromarray(first["rgb"][0]), warm_cameras, 1, guidance,
                  seed, use_image)

    results: dict[tuple[str, str], list[dict]] = {}
    for n, item in enumerate(chosen):
        data = load_object(item["path"])
        stored = data["rgb"].shape[1]
        eval_size = int(size) if size else stored
        reference = Image.fromarray(data["rgb"][0])
        for set_name, (index, cameras) in camera_sets(data, (seed, n)).items():
            truth = resize_views(data["rgb"][index], eval_size)
            for method in METHODS:
                row: dict = {}
                with PeakMemory(cuda=cuda) as memory:
                    t0 = time.perf_counter()
                    if method == "true-renders":
                        views = truth
                    elif method == "copy-reference":
                        views = resize_views([reference] * len(index), eval_size)
                    else:
                        views = resize_views(_generate(method, pipe, item["caption"], reference, cameras, steps,
                                                       guidance, seed + n, use_image), eval_size)
                    row["sec_per_object"] = time.perf_counter() - t0
                row["peak_mb"] = memory.mb
                if method != "true-renders":
                    row.update(image_metrics(views, truth))
                row["consistency"] = silhouette_consistency(views, cameras, grid)
                row["foreground"] = float(silhouettes(views).mean())
                results.setdefault((set_name, method), []).append(row)

    for (set_name, method), rows in results.items():
        metrics = {}
        for key in ("psnr", "ssim", "consistency", "foreground", "sec_per_object"):
            if key in rows[0]:
                metrics[key] = round(float(np.mean([r[key] for r in rows])), 4)
        metrics["peak_mb"] = round(float(max(r["peak_mb"] for r in rows)), 1)
        report.add(method, set_name, objects=len(rows), **metrics)

    # ---- notes
    adapter_dir, base_dir = resolve(model), None
    try:
        from . import DEFAULT_BASE
        base_dir = resolve(base if base is not None else DEFAULT_BASE)
    except Exception:
        pass
    for label, given, folder in (("adapter", model, adapter_dir), ("base", base or "the default", base_dir)):
        if folder is not None:
            trained = training_steps(folder)
            report.note(f"{label}: {given} ({folder})" + (f", {trained} training steps" if trained else "") + ".")
    classes: dict[str, int] = {}
    for it in chosen:
        classes[it.get("label", "?")] = classes.get(it.get("label", "?"), 0) + 1
    report.note(f"Data: {len(chosen)} of the {len(items)} TEST-split objects of the `multiview` source (evenly spaced by "
                f"id; {classes}), rendered here by data.py's CPU rasteriser over white. Camera sets: reference-6 = the "
                "6 stored reference views (orthographic, elevation 0); unseen-4 = 4 of the object's stored random orbit "
                f"views picked with seed ({seed}, object index) (its own projection; elevation -15..45 deg). Metrics at "
                f"{'the stored render size' if not size else f'{size} px'} (generated views resized bicubic).")
    report.note(f"Conditioning (all methods): the front reference render (view 0) and the caption; seed {seed} + object "
                f"index; {steps} steps, CFG {guidance}, DDIM (trailing). mv-adapter: "
                + ("image + caption" if use_image else "caption only (this adapter has no reference branch)")
                + " with the target cameras; mv-adapter-no-mv: the same with mv_scale = 0 (the multi-view attention "
                "branch off, reference branch and camera residuals kept).")
    report.note("base-per-view: the frozen base UNet alone (adapter disabled, no camera condition) sampled text-to-image "
                "per view with the base's own unshifted schedule, the view named in the prompt ('<caption>, front view' / "
                "'front right view' / 'right side view' / 'back view' / ... / 'top view', from the camera's azimuth from "
                "the front, 90 = the object's right side, and elevation); it has no image input, so it never sees the "
                "reference render. copy-reference: the conditioning image at every view (PSNR/SSIM floor; on reference-6 "
                "its view 0 is exact). true-renders: the ground truth (consistency ceiling).")
    report.note(f"PSNR: from the mean squared error over all views of an object (pixels in [0, 1]), averaged over "
                "objects; SSIM: skimage (channel_axis, data_range 1) per view, averaged. consistency: per view k, IoU of "
                f"its silhouette (a pixel is foreground when some channel differs from white by > {FOREGROUND_THRESHOLD}) "
                f"with the visual hull of the OTHER views ({grid}^3 voxels over [-0.5, 0.5]^3, voxel centres carved by "
                "projection with the known cameras, centres outside an image not carved) rendered into view k by ray "
                "marching; mean over views and objects; a view with no foreground in either scores 0. The score only asks that "
                "the silhouettes agree: an output that fills the frame scores high, so read it with `foreground` (the mean "
                "share of foreground pixels per view; compare true-renders'). sec_per_object "
                "and peak_mb: generation of one object's views (" + ("torch peak allocated on CUDA" if cuda else
                "RSS above the level before it, sampled every 5 ms; the max over objects") + f"), on {pipe.unet.device}, "
                "after an untimed 1-step warm-up.")
