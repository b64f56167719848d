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
