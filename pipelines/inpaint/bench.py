"""`genstudio bench inpaint`: PUT vs cv2.inpaint (TELEA, NS) and skimage biharmonic (and
`harmonic-fill`, the classical fill a harmonic-reference P-VQVAE decodes on top of: PUT's row
minus that row is what the model adds).

Held-out photo crops (the photos source's test split; fixed crops and fixed masks per seed), one
mask-ratio bucket at a time (10-20, 20-40, 40-60 %). Metrics: PSNR and L1 on the hole, SSIM on
the whole image (per-image PSNR capped at 60 dB), diversity (mean pairwise L1 between `samples` completions, on the hole; 0 for
the deterministic baselines) and seconds per image (one completion). Every method's known
pixels are checked to be unchanged. `ceiling=True` (the default) adds a row that is not a method:
PUT's P-VQVAE decoding the *complete* image's tokens (it sees the hidden pixels through them), the
most any transformer could get out of this decoder.
"""
from __future__ import annotations

import itertools
import os
import time

import numpy as np

from genstudio.metrics import l1, psnr, ssim

from .masks import RATIO_BUCKETS, random_hole_mask

MODEL_ENV = "GENSTUDIO_INPAINT_MODEL"
PSNR_CAP = 60.0  # a hole filled exactly (flat regions) would make the mean infinite


def cv2_inpaint(image: np.ndarray, hole: np.ndarray, method: str) -> np.ndarray:
    import cv2
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    out = cv2.inpaint(bgr, hole.astype(np.uint8) * 255, 3, flag)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def harmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The multigrid harmonic fill a `reference_fill="harmonic"` P-VQVAE decodes on top of."""
    import torch
    from .put import harmonic_fill
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    known = torch.from_numpy(~hole)[None, None].float()
    out = harmonic_fill(x * known, known)[0].permute(1, 2, 0).numpy()
    out = ((out + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return np.where(hole[..., None], out, image)


def biharmonic(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic
    out = inpaint_biharmonic(image.astype(np.float64) / 255, hole, channel_axis=-1)
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def test_set(per_bucket: int, size: int, seed: int = 0):
    """{bucket: [(image uint8 HxWx3, hole bool HxW)]} from the photos test split."""
    from genstudio.data import load_manifest, prepare
    from genstudio.data.photos import PhotoCropDataset
    prepare("photos", quiet=True)
    crops = PhotoCropDataset(load_manifest("photos", "test"), size=size, length=per_bucket * len(RATIO_BUCKETS),
                             deterministic=True, seed=4321 + seed)
    out, k = {}, 0
    for b, (name, ratio) in enumerate(RATIO_BUCKETS.items()):
        items = []
        for i in range(per_bucket):
            img = ((crops[k]["image"].numpy().transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
            hole = random_hole_mask(size, size, ratio, np.random.default_rng((seed, b, i)))
            items.append((img, hole))
            k += 1
        out[name] = items
    return out


def oracle_tokens_fill(pipe, image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The P-VQVAE's decode of the complete image's own known-codebook tokens, at the model's size
    (the image must already be that size); known pixels pasted back. A ceiling, not a method."""
    import torch
    vqvae = pipe.vqvae
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(pipe.device) / 127.5 - 1
    known = torch.from_numpy(~hole)[None, None].float().to(pipe.device)
    with torch.no_grad(), pipe.autocast():
        x, known = x.to(vqvae.dtype), known.to(vqvae.dtype)
        tokens = vqvae.quantize(vqvae.encode(x)).indices
        out = vqvae.decode_tokens(tokens, x * known, known)[0].float().permute(1, 2, 0).cpu().numpy()
    out = ((out + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return np.where(hole[..., None], out, image)


def _scores(result: np.ndarray, image: np.ndarray, hole: np.ndarray) -> dict:
    if not np.array_equal(result[~hole], image[~hole]):
        raise AssertionError("a method changed known pixels")
    a, b, m = result / 255.0, image / 255.0, np.broadcast_to(hole[..., None], image.shape)
    return {"psnr_hole": min(psnr(a, b, mask=m), PSNR_CAP), "l1_hole": l1(a, b, mask=m), "ssim": ssim(a, b)}


def bench_inpaint(report, quick: bool = False, per_bucket: int = 40, samples: int = 4, size: int | None = None,
                  model: str | None = None, top_k: int = 50, tokens_per_step: int = 4, seed: int = 0,
                  ceiling: bool = True, validation_masks: int | None = None) -> None:
    from PIL import Image
    from tqdm.auto import tqdm
    if quick:
        per_bucket, samples = 2, 2
    methods = {"cv2-telea": lambda im, h: [cv2_inpaint(im, h, "telea")],
               "cv2-ns": lambda im, h: [cv2_inpaint(im, h, "ns")],
               "skimage-biharmonic": lambda im, h: [biharmonic(im, h)],
               "harmonic-fill": lambda im, h: [harmonic(im, h)]}
    model = model or os.environ.get(MODEL_ENV) or "put-photos-S"
    try:
        from .pipeline import PUTInpaintPipeline
        pipe = PUTInpaintPipeline.from_pretrained(model)
        size = size or pipe.vqvae.config.sample_size

        def ours(im, h, validation=validation_masks):
            out = pipe(Image.fromarray(im), h, num_samples=samples, top_k=top_k, tokens_per_step=tokens_per_step,
                       seed=seed, validation_masks=validation)
            return [np.asarray(x) for x in out.images]
        methods[f"PUT (ours, top-{top_k})"] = ours
        if pipe.vqvae.config.reference_fill != "zeros" and validation_masks != 0:
            methods["PUT without validation (ablation)"] = lambda im, h: ours(im, h, 0)
            report.note("PUT without validation (ablation): the same samples with the decoder's residual kept whole "
                        "(`validation_masks=0`); ours weighs it by how well it fills extra holes over known pixels")
        if ceiling:
            methods["PUT oracle tokens (ceiling)"] = lambda im, h: [oracle_tokens_fill(pipe, im, h)]
            report.note("PUT oracle tokens (ceiling) is not a method: the decoder gets the complete image's tokens "
                        "(the hidden pixels leak through them), the most a perfect transformer could reach")
        n = sum(p.numel() for m in (pipe.vqvae, pipe.transformer) for p in m.parameters())
        report.note(f"ours: {model} ({n / 1e6:.1f}M params, {pipe.device}); scores use sample 0 of {samples}, "
                    f"diversity uses all {samples}; seconds = one call producing all {samples} samples / {samples}")
    except (FileNotFoundError, ValueError, ImportError) as e:
        report.note(f"ours skipped: {e}")
    size = size or 128
    data = test_set(per_bucket, size, seed)
    report.note(f"{per_bucket} held-out {size}x{size} crops per bucket (photos test split), stroke+box masks; "
                "PSNR/L1 on the hole, SSIM on the whole image; known pixels asserted unchanged for every method")
    for bucket, items in data.items():
        for name, fn in methods.items():
            rows, div, secs = [], [], []
            for img, hole in tqdm(items, desc=f"{bucket} {name}", leave=False):
                t0 = time.perf_counter()
                results = fn(img, hole)
                secs.append((time.perf_counter() - t0) / len(results))
                rows.append(_scores(results[0], img, hole))
                for r in results[1:]:
                    _scores(r, img, hole)
                m = np.broadcast_to(hole[..., None], img.shape)
                pairs = list(itertools.combinations(results, 2))
                div.append(np.mean([l1(a / 255.0, b / 255.0, mask=m) for a, b in pairs]) if pairs else 0.0)
            report.add(name, bucket, **{k: float(np.mean([r[k] for r in rows])) for k in rows[0]},
                       diversity_l1=float(np.mean(div)), sec_per_image=float(np.mean(secs)), images=len(items))
