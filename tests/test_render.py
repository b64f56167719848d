"""Image loading: the pixel budget, degenerate sizes, 16-bit and float images, unreadable files."""
import numpy as np
import pytest
from PIL import Image

from genstudio.render import InputError, load_image


def test_over_budget_images_are_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200), "white").save(path)
    monkeypatch.setenv("GENSTUDIO_MAX_PIXELS", "50000")
    with pytest.raises(InputError, match=r"300x200 \(0.1 megapixels\); the limit is 0.05 megapixels"):
        load_image(path)
    monkeypatch.setenv("GENSTUDIO_MAX_PIXELS", "60000")
    assert load_image(path).size == (300, 200)


def test_degenerate_and_unreadable_images(tmp_path):
    tiny = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(tiny)
    with pytest.raises(InputError, match="1x1 pixels: too small"):
        load_image(tiny)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError, match="not a readable image"):
        load_image(broken)


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    a = np.asarray(load_image(path))
    assert a.dtype == np.uint8 and a[0, 0, 0] == 0 and a[0, -1, 0] == 255
    assert 100 < a[0, 32, 0] < 155 and (a[..., 0] == 255).mean() < 0.05  # a gradient, not 99 % white
    f = tmp_path / "float.tif"
    Image.fromarray(np.tile(np.linspace(0, 1, 32, dtype=np.float32), (4, 1)), "F").save(f)
    b = np.asarray(load_image(f, "L"))
    assert b[0, 0] == 0 and b[0, -1] == 255


def test_load_image_follows_exif_orientation(tmp_path):
    """A phone photo stored sideways with an EXIF rotation loads the right way up (CLI and app alike)."""
    from PIL import Image

    from genstudio.render import load_image
    wide = Image.new("RGB", (40, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    wide.save(tmp_path / "sideways.jpg", exif=exif)
    assert load_image(tmp_path / "sideways.jpg").size == (20, 40)
