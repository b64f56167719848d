"""Video I/O with clear errors and atomic writes.

Frames are uint8 arrays (T, H, W, 3). GIF goes through Pillow (exact colours up to its
256-colour palette per frame); MP4/AVI/MOV/... through the ffmpeg binary that imageio-ffmpeg
ships (no system ffmpeg needed). A folder of numbered images is a video too.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from genstudio.limits import max_frames as frame_budget
from genstudio.render import InputError, atomic_path, load_image, max_pixels

VIDEO_SUFFIXES = (".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
OUTPUT_SUFFIXES = (".gif", ".mp4")  # what write_video writes


def _natural_key(path: Path):
    """frame2.png before frame10.png."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", path.name)]


def _gif_frames(path: Path):
    """GIF frames as RGB arrays, each repeated by its duration over the shortest one: Pillow merges
    identical consecutive frames into one longer frame when writing, and this undoes it. Two
    passes (durations, then frames) so that one frame at a time is held, and a reader that needs
    only the first frames decodes only those the second time."""
    from PIL import ImageSequence
    with Image.open(path) as im:
        _check_budget(path, *im.size, im.n_frames)
        durations = [frame.info.get("duration") or 0 for frame in ImageSequence.Iterator(im)]
        positive = [d for d in durations if d > 0]
        base = min(positive) if positive else 0
        repeats = [max(1, round(d / base)) if base else 1 for d in durations]
        _check_budget(path, *im.size, sum(repeats))  # 10 ms and 60 s frames: 6,000 frames
        for frame, n in zip(ImageSequence.Iterator(im), repeats):
            rgb = np.asarray(frame.convert("RGB"))
            for _ in range(n):
                yield rgb


def _check_budget(path: Path, width: int, height: int, count: int | None) -> None:
    """Refuse frames under 2x2 or over the pixel budget, and more than the frame budget (`count`
    None: not known yet), before the frames are decoded."""
    if min(width, height) < 2:
        raise InputError(f"{path} has {width}x{height} frames: too small to work on")
    if width * height > max_pixels():
        raise InputError(f"{path} has {width}x{height} frames; the limit is {max_pixels() / 1e6:g} megapixels "
                         "per frame (set GENSTUDIO_MAX_PIXELS to raise it)")
    if count is not None and count > frame_budget():
        raise InputError(f"{path} has {count} frames; the limit is {frame_budget()} "
                         "(set GENSTUDIO_MAX_FRAMES to raise it)")


def _ffmpeg_frames(path: Path):
    """The frames as stored: `-fps_mode passthrough` stops ffmpeg from duplicating frames to fill a
    constant-rate timeline (opencv-doc's tree.avi: 68 stored frames, 449 at constant rate)."""
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    meta = next(reader)
    w, h = meta["size"]
    _check_budget(path, w, h, None)
    try:
        for buf in reader:
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        reader.close()


def iter_video_frames(path):
    """Yield the frames (H, W, 3) uint8 of a GIF / MP4 / AVI / ... file or a folder of images,
    one at a time (long videos never sit in memory whole). Raises InputError on a bad input."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"video {p} does not exist")
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
        if not files:
            raise InputError(f"{p} holds no frames (expected {', '.join(FRAME_SUFFIXES)} images)")
        for f in files:
            yield np.asarray(load_image(f))
        return
    suffix = p.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise InputError(f"{p} is not a video: expected one of {', '.join(VIDEO_SUFFIXES)} or a folder of frames")
    try:
        yield from (_gif_frames(p) if suffix == ".gif" else _ffmpeg_frames(p))
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"{p} has frames over the limit of {max_pixels() / 1e6:g} megapixels "
                         "(set GENSTUDIO_MAX_PIXELS to raise it)") from None
    except (OSError, RuntimeError, ValueError, SyntaxError, StopIteration) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputError(f"{p} is not a readable video ({type(e).__name__}: {first})") from None


def read_video(path, max_frames: int | None = None) -> np.ndarray:
    """A video file or folder of frames -> uint8 (T, H, W, 3); at most `max_frames` frames are
    decoded. Raises InputError for a missing, corrupt or empty video, or one over the frame budget
    (`genstudio.limits.max_frames`; streaming with `iter_video_frames` has none but a GIF's)."""
    frames = []
    for frame in iter_video_frames(path):
        if len(frames) >= frame_budget():
            raise InputError(f"{path} has more than {frame_budget()} frames, the limit "
                             "(set GENSTUDIO_MAX_FRAMES to raise it)")
        if frames and frame.shape != frames[0].shape:
            raise InputError(f"{path}: frame {len(frames)} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the first is {frames[0].shape[1]}x{frames[0].shape[0]}; frames must share a size")
        frames.append(frame)
        if max_frames is not None and len(frames) >= max_frames:
            break
    if not frames:
        raise InputError(f"{path} holds no frames (an empty or corrupt video)")
    return np.stack(frames)


def video_frames_uint8(frames) -> np.ndarray:
    """(T, H, W), (T, H, W, 1|3|4) uint8 or float [0, 1] -> (T, H, W, 3) uint8."""
    a = np.asarray(frames)
    if a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4) or a.shape[0] == 0:
        raise InputError(f"video frames have shape {a.shape}; expected (T, H, W, 3) with T >= 1")
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.ascontiguousarray(a[..., :3])


def write_video(path, frames, fps: float = 8.0) -> Path:
    """Write frames (T, H, W, 3) as .gif (looping) or .mp4 (H.264, crf 12), atomically."""
    a = video_frames_uint8(frames)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in a]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                           duration=max(20, round(1000 / fps)), optimize=False)
        return path
    if suffix == ".mp4":
        import imageio_ffmpeg
        h, w = a.shape[1:3]
        if h % 2 or w % 2:  # yuv420p needs even sides: pad by repeating the last row/column
            a = np.pad(a, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        with atomic_path(path) as tmp:
            writer = imageio_ffmpeg.write_frames(str(tmp), (a.shape[2], a.shape[1]), fps=fps, codec="libx264",
                                                 pix_fmt_out="yuv420p", macro_block_size=1,
                                                 output_params=["-crf", "12"])
            writer.send(None)
            for frame in a:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
        return path
    raise InputError(f"cannot write {path}: unknown video extension (use .gif or .mp4)")
