"""`genstudio tokenizer reconstruct`: encode an image to VQ tokens and decode it back."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .cli_common import DeviceOpt, MaxSecondsOpt, NoLimitOpt, PrecisionOpt

app = typer.Typer(help="The shared VQ image tokenizer (SimVQ): reconstruct images through its tokens.",
                  no_args_is_help=True)
DEFAULT_MODEL = "tokenizer-simvq-photos"
WORK_BUDGET = 4_000_000  # pixels per image (a time budget: memory is bounded by the tile)
TILE = 1024    # pixels per tile side: an image up to TILE x TILE runs whole, a larger one tile by tile
OVERLAP = 64   # context pixels around each tile (encoded and decoded, then cut off): no visible seams


def _tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, context start, context end) along one side: cores of `tile` that
    cover [0, length), each with up to `overlap` pixels of context on both sides."""
    return [(a, min(a + tile, length), max(0, a - overlap), min(length, a + tile + overlap))
            for a in range(0, length, tile)]


def reconstruct_image(image, model: str = DEFAULT_MODEL, device: str = "auto", precision: str = "auto",
                      tile: int = TILE, overlap: int = OVERLAP):
    """PIL image -> (reconstruction PIL, stats dict). The tokenizer is fully convolutional: an
    image up to `tile` x `tile` pixels runs whole; a larger one runs tile by tile, each tile with
    `overlap` pixels of context on every side (encoded and decoded with it, then cut off), so
    memory stays that of one (tile + 2 overlap)^2 pass and tiles meet without seams (each token
    is that of the whole-image pass up to the encoder's reach past `overlap`). Tile and overlap
    are rounded up to multiples of the downsample factor, so tokens never straddle tiles.
    `--max-seconds` (genstudio.limits.check_time) is checked between tiles."""
    import numpy as np
    import torch
    from PIL import Image
    from .device import resolve_device
    from .hub import resolve
    from .limits import check_time
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
    tile, overlap = -(-max(tile, 1) // f) * f, -(-max(overlap, 0) // f) * f
    if w2 <= tile and h2 <= tile:  # one tile: the whole image at once
        x = to_tensor(image)[None].to(dev)
        with torch.inference_mode(), autocast(dev, precision):  # VQ assignment itself stays fp32 (vq.py)
            out = tok(x)
        rec, indices = to_uint8(out.sample[0]), out.indices[0].cpu()
    else:
        pixels = np.asarray(image)
        rec = np.zeros_like(pixels)
        indices = torch.zeros((h2 // f, w2 // f), dtype=torch.long)
        for y0, y1, cy0, cy1 in _tiles(h2, tile, overlap):
            for x0, x1, cx0, cx1 in _tiles(w2, tile, overlap):
                check_time()
                x = to_tensor(Image.fromarray(pixels[cy0:cy1, cx0:cx1]))[None].to(dev)
                with torch.inference_mode(), autocast(dev, precision):
                    out = tok(x)
                rec[y0:y1, x0:x1] = to_uint8(out.sample[0])[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
                indices[y0 // f:y1 // f, x0 // f:x1 // f] = \
                    out.indices[0, (y0 - cy0) // f:(y1 - cy0) // f, (x0 - cx0) // f:(x1 - cx0) // f].cpu()
                del out, x
    check_time()  # past --max-seconds: nothing is written
    orig = np.asarray(image)
    used = int(indices.unique().numel())
    return Image.fromarray(rec), {"tokens": list(indices.shape), "codes_used": used,
                                  "psnr": round(psnr(rec, orig), 2), "ssim": round(ssim(rec, orig), 4)}


@app.command()
def reconstruct(ctx: typer.Context,
                image: Path = typer.Option(..., "--image", "-i", help="Input image (PNG/JPEG/...)."),
                output: Path = typer.Option(Path("outputs/reconstruction.png"), "--output", "-o"),
                model: str = typer.Option(DEFAULT_MODEL, help="Checkpoint name, folder or hub id."),
                max_seconds: MaxSecondsOpt = None, no_limit: NoLimitOpt = False, device: DeviceOpt = None,
                precision: PrecisionOpt = None):
    """Encode IMAGE to discrete tokens and decode it back; print PSNR/SSIM and the token grid."""
    from .cli_common import check_writable, console, limit_time, run_options
    from .limits import check_work
    from .render import load_image, save_image
    run = run_options(ctx, device, None, precision)
    limit_time(ctx, max_seconds)
    check_writable(output)
    picture = load_image(image)
    w, h = picture.size
    check_work(f"{image} ({w}x{h})", w * h, WORK_BUDGET, "pixels", no_limit)
    rec, stats = reconstruct_image(picture, model, run.device, run.precision)
    save_image(output, rec)
    console.print(f"[green]wrote[/green] {output}  tokens={stats['tokens'][0]}x{stats['tokens'][1]} "
                  f"codes used={stats['codes_used']} PSNR={stats['psnr']} dB SSIM={stats['ssim']}")
