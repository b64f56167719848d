import torch

from genstudio.tokenizer import TOKENIZER_CONFIGS, VQTokenizer, evaluate_tokenizer, recipe
from genstudio.train import train


def test_roundtrip_save_load_and_decode_indices(tmp_path):
    torch.manual_seed(0)
    for q in ("simvq", "vq", "vq_ema"):
        m = VQTokenizer(**{**TOKENIZER_CONFIGS["tiny"], "quantizer": q}).eval()
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        out = m(x)
        assert out.sample.shape == x.shape and out.indices.shape == (2, 8, 8)
        # decoding from indices reproduces the forward pass (W(C) applied for SimVQ)
        assert torch.allclose(m.decode_indices(out.indices), out.sample, atol=1e-5)
        m.save_pretrained(tmp_path / q)
        m2 = VQTokenizer.from_pretrained(tmp_path / q).eval()
        for k, v in m.state_dict().items():
            assert torch.equal(m2.state_dict()[k], v), k
        out2 = m2(x)
        assert torch.equal(out2.indices, out.indices) and torch.allclose(out2.sample, out.sample, atol=1e-5)


def test_recipe_trains_and_improves_reconstruction(tmp_path, photos_built):
    r = recipe({"output_dir": str(tmp_path), "steps": 60, "batch_size": 8, "preset": "tiny", "lr": 3e-3,
                "sample_size": 32, "eval_items": 16, "progress": False, "save_every": 1000, "log_every": 10})
    from genstudio.data import load_manifest
    from genstudio.data.photos import PhotoCropDataset
    val = PhotoCropDataset(load_manifest("photos"), size=32, length=16, deterministic=True)
    before = evaluate_tokenizer(r.model.eval(), val)
    r.model.train()
    summary = train(r)
    after = evaluate_tokenizer(VQTokenizer.from_pretrained(tmp_path / "final").eval(), val)
    assert summary["steps"] == 60 and set(after) == {"psnr", "ssim", "utilization", "perplexity"}
    assert after["psnr"] > before["psnr"] + 1.0


def test_reconstruct_tiles_large_images_with_bounded_passes(tiny_tokenizer_dir, monkeypatch):
    """An image up to one tile runs whole (as before tiling); a larger one runs tile by tile, each
    pass no larger than (tile + 2 overlap)^2, and covers the image and its token grid exactly."""
    import numpy as np
    from PIL import Image
    from genstudio.tokenizer import VQTokenizer
    from genstudio.tokenizer_cli import reconstruct_image
    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((28, 42, 3)) * 255).astype(np.uint8))  # cropped to 40x28 (patch 4)
    model = str(tiny_tokenizer_dir)
    whole, stats = reconstruct_image(image, model, device="cpu")  # fits the default tile: one pass
    one_tile, _ = reconstruct_image(image, model, device="cpu", tile=40, overlap=0)
    assert whole.size == (40, 28) and stats["tokens"] == [7, 10]
    assert np.array_equal(np.asarray(whole), np.asarray(one_tile))

    shapes = []
    forward = VQTokenizer.forward

    def spy(self, x):
        shapes.append(tuple(x.shape[-2:]))
        return forward(self, x)
    monkeypatch.setattr(VQTokenizer, "forward", spy)
    # context covering the whole image: every tile sees what the whole pass saw, so the same pixels
    same, same_stats = reconstruct_image(image, model, device="cpu", tile=8, overlap=64)
    assert np.array_equal(np.asarray(same), np.asarray(whole)) and same_stats == stats
    shapes.clear()
    tiled, tiled_stats = reconstruct_image(image, model, device="cpu", tile=6, overlap=3)  # rounded up to 8 and 4
    assert len(shapes) == 4 * 5 and max(h for h, _ in shapes) <= 16 and max(w for _, w in shapes) <= 16
    assert tiled.size == (40, 28) and tiled_stats["tokens"] == [7, 10]


def test_reconstruct_stops_between_tiles_at_the_deadline(tiny_tokenizer_dir):
    import time
    import numpy as np
    import pytest
    from PIL import Image
    from genstudio.limits import TimeLimitExceeded, time_limit
    from genstudio.tokenizer_cli import reconstruct_image
    image = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    with time_limit(0.001):
        time.sleep(0.01)
        with pytest.raises(TimeLimitExceeded, match="--max-seconds"):
            reconstruct_image(image, str(tiny_tokenizer_dir), device="cpu", tile=8)
