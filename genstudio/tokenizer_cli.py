"""`genstudio tokenizer reconstruct`: encode an image to VQ tokens and decode it back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import DeviceOpt, NoLimitOpt, PrecisionOpt

app = typer.Typer(help="The shared VQ image tokenizer (SimVQ): reconstruct images through its tokens.",
                  no_args_is_help=True)
DEFAULT_MODEL = "tokenizer-simvq-photos"
WORK_BUDGET = 4_000_000  # pixels run at once: about half a GB of activations per megapixel


def reconstruct_image(image, model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto"):
    """PIL image -> (reconstruction PIL, stats dict), the whole image at once (fully convolutional)."""
    import numpy as np
    import torch
    from PIL import Image
    from .device import resolve_device
    from .hub import resolve
    from .metrics import psnr, ssim
    from .precision import autocast
    from .render import to_tensor, to_uint8
    from .tokenizer import VQTokenizer
    dev = resolve_device(device)
    tok = VQTokenizer.from_pretrained(resolve(model)).to(dev).eval()
    f = tok.downsample_factor
    w, h = image.size
    if w < f or h < f:
        raise ValueError(f"image is {w}x{h}; the tokenizer needs at least {f}x{f} pixels")
    w2, h2 = (w // f) * f, (h // f) * f  # fully convolutional: any multiple of the downsample factor
    image = image.crop((0, 0, w2, h2))
    x = to_tensor(image)[None].to(dev)
    with torch.inference_mode(), autocast(dev, precision):  # VQ assignment itself stays fp32 (vq.py)
        out = tok(x)
    rec = to_uint8(out.sample[0])
    orig = np.asarray(image)
    used = int(out.indices.unique().numel())
    return Image.fromarray(rec), {"tokens": list(out.indices.shape[1:]), "codes_used": used,
                                  "psnr": round(psnr(rec, orig), 2), "ssim": round(ssim(rec, orig), 4)}


@app.command()
def reconstruct(ctx: typer.Context,
                image: Path = typer.Option(..., "--image", "-i", help="Input image (PNG/JPEG/...)."),
                output: Path = typer.Option(Path("outputs/reconstruction.png"), "--output", "-o"),
                model: str = typer.Option(DEFAULT_MODEL, help="Checkpoint name, folder or hub id."),
                no_limit: NoLimitOpt = False, device: DeviceOpt = None, precision: PrecisionOpt = None):
    """Encode IMAGE to discrete tokens and decode it back; print PSNR/SSIM and the token grid."""
    from .cli_common import check_writable, console, run_options
    from .limits import check_work
    from .render import load_image, save_image
    run = run_options(ctx, device, None, precision)
    check_writable(output)
    picture = load_image(image)
    w, h = picture.size
    check_work(f"{image} ({w}x{h}, run whole)", w * h, WORK_BUDGET, "pixels", no_limit)
    rec, stats = reconstruct_image(picture, model, run.device, run.precision)
    save_image(output, rec)
    console.print(f"[green]wrote[/green] {output}  tokens={stats['tokens'][0]}x{stats['tokens'][1]} "
                  f"codes used={stats['codes_used']} PSNR={stats['psnr']} dB SSIM={stats['ssim']}")
