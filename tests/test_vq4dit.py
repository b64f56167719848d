"""VQ4DiT weight compression (genstudio/vq4dit.py, genstudio/compress.py, `genstudio compress`)."""
from __future__ import annotations

import json

import pytest
import torch

from genstudio.compress import BlockRecorder, CalibrationOptions, calibrate_block
from genstudio.dit import DiT
from genstudio.vq4dit import (RTNWeight, SoftVQLinear, VQLinear, VQWeight, block_linears, dit_blocks, load_model,
                              pack_bits, quantization_config, save_compressed, unpack_bits)
from pipelines.video.vdt import VDT, VDT_CONFIGS


def _open_gates(model, std=0.05):
    """adaLN-Zero makes an untouched DiT the identity; random gates make the blocks do something."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0, std)
    return model.eval()


def tiny_vdt(seed=0) -> VDT:
    torch.manual_seed(seed)
    return _open_gates(VDT(sample_size=8, num_frames=4, **{**VDT_CONFIGS["tiny"], "hidden_size": 32}))


@pytest.fixture(scope="module")
def tiny_vdt_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "vdt-tiny"
    tiny_vdt().save_pretrained(folder)
    (folder / "README.md").write_text("tiny test VDT")
    return folder


# ---- packing ----

@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("count", [1, 7, 13, 1001])
def test_pack_unpack_round_trips(bits, count):
    values = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(bits * count))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (count * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, count), values)


def test_packing_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        pack_bits(torch.tensor([0, 4]), 2)
    with pytest.raises(ValueError, match="fewer than"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 3, 3)


# ---- candidate assignments ----

def test_soft_assignment_takes_the_candidate_with_the_largest_weight():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    weight = torch.tensor([[0.1, 0.0, 0.9, 0.8]])  # sub-vectors near codewords 0 and 3
    init = VQWeight(codebook, torch.tensor([[0, 3]]))
    layer = SoftVQLinear(init, weight, None, candidates=2)
    assert layer.candidates[:, 0].tolist() == [0, 3]  # nearest first
    assert (layer.probabilities()[:, 0] > 0.5).all()  # the initial ratios favour the nearest codeword
    with torch.no_grad():
        layer.logits.copy_(torch.tensor([[0.2, 1.5], [3.0, -1.0]]))
    assert layer.chosen().tolist() == [layer.candidates[0, 1].item(), 3]
    soft = layer.weight()
    layer.harden()
    hard = layer.weight()
    assert not torch.equal(soft, hard)
    assert torch.equal(hard.reshape(-1, 2), codebook[layer.chosen()])
    assert torch.equal(layer.to_vq_weight().indices, layer.chosen().reshape(1, 2))
    assert layer.regularizer() > 0


def tiny_dit() -> DiT:
    torch.manual_seed(0)
    return _open_gates(DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                           num_classes=10, learn_sigma=False), std=0.1)


def test_calibration_lowers_the_block_error_below_kmeans():
    model = tiny_dit()
    (name, block), _ = dit_blocks(model)
    recorder = BlockRecorder([block])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in (900, 500, 100):
            model(torch.randn(2, 4, 8, 8, generator=generator), torch.full((2,), t),
                  torch.randint(0, 10, (2,), generator=generator))
    recorder.remove()
    inits = {n: VQWeight.fit(m.weight, 4, 256, 10, torch.Generator().manual_seed(1))
             for n, m in block_linears(block, name, 4).items()}
    assert len(inits) == 5  # qkv, proj, fc1, fc2, adaLN
    opts = CalibrationOptions(iters=40, batch=2)
    weights, biases, stats, _ = calibrate_block(block, name, inits, recorder.inputs[0], recorder.outputs[0], opts,
                                                torch.Generator().manual_seed(0))
    assert stats["calibrated_mse"] < stats["kmeans_mse"] and stats["kept"] == "vq4dit"
    assert set(weights) == set(inits) and all(weights[n].indices.shape == inits[n].indices.shape for n in inits)


# ---- save -> load ----

def test_compressed_checkpoint_round_trips_and_both_load_modes_agree(tmp_path):
    model = tiny_vdt()
    layers = {n: VQWeight.fit(m.weight, 4, 256, 5, torch.Generator().manual_seed(0))
              for name, block in dit_blocks(model) for n, m in block_linears(block, name, 4).items()}
    config = dict(model.config, _class_name="VDT")
    save_compressed(model, layers, tmp_path / "vq", config, {"method": "kmeans", "bits": 2})
    assert quantization_config(tmp_path / "vq")["layers"]["dit.blocks.0.attn.qkv"]["shape"] == [96, 32]
    assert json.loads((tmp_path / "vq" / "config.json").read_text())["_class_name"] == "VDT"

    dequantized = load_model(VDT, tmp_path / "vq", torch.float32)
    gathered = load_model(VDT, tmp_path / "vq", torch.float32, mode="gather")
    assert isinstance(gathered.dit.blocks[0].mlp.fc1, VQLinear)
    assert isinstance(dequantized.dit.blocks[0].mlp.fc1, torch.nn.Linear)
    expected = layers["dit.blocks.1.mlp.fc2"].dequantize()
    assert torch.allclose(dequantized.dit.blocks[1].mlp.fc2.weight, expected, atol=1e-3)  # fp16 codebooks
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([10, 700])
    with torch.no_grad():
        a, b = dequantized(x, t), gathered(x, t)
    assert torch.allclose(a, b, atol=1e-6)
    # embedders and the final layer are kept (fp16 on disk)
    assert torch.allclose(dequantized.dit.final_layer.linear.weight, model.dit.final_layer.linear.weight, atol=1e-3)

    rtn = {n: RTNWeight.fit(m.weight, 3) for name, block in dit_blocks(model) for n, m in block_linears(block, name).items()}
    save_compressed(model, rtn, tmp_path / "rtn", config, {"method": "rtn", "bits": 3})
    loaded = load_model(VDT, tmp_path / "rtn", torch.float32)
    w = model.dit.blocks[0].attn.proj.weight
    assert torch.allclose(loaded.dit.blocks[0].attn.proj.weight, rtn["dit.blocks.0.attn.proj"].dequantize())
    assert (loaded.dit.blocks[0].attn.proj.weight - w).abs().max() <= rtn["dit.blocks.0.attn.proj"].scale.max()
    with pytest.raises(ValueError, match="gather"):
        load_model(VDT, tmp_path / "rtn", mode="gather")


def test_an_ordinary_checkpoint_loads_as_before(tiny_vdt_dir):
    model = load_model(VDT, tiny_vdt_dir, torch.float32)
    assert quantization_config(tiny_vdt_dir) is None
    assert torch.equal(model.dit.blocks[0].attn.qkv.weight, tiny_vdt().dit.blocks[0].attn.qkv.weight)


# ---- the command ----

def run_cli(*args):
    from cli_runner import run_genstudio
    return run_genstudio(*args, env={"GENSTUDIO_DEBUG": ""})


def test_cli_compresses_a_vdt_that_its_pipeline_loads_and_runs(tiny_vdt_dir, tmp_path):
    from genstudio.pipeline import checkpoint_classes
    from pipelines.video.pipeline import VDTPipeline
    out = tmp_path / "vdt-tiny-vq2"
    r = run_cli("compress", tiny_vdt_dir, "--method", "vq4dit", "--bits", "2", "-o", out, "--samples", "2",
                "--steps", "2", "--iters", "3", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "compressed" in r.stderr and "vq4dit 2-bit" in r.stderr
    assert checkpoint_classes(out) == ["VDT"] and (out / "README.md").exists()
    qc = quantization_config(out)
    assert qc["bits"] == 2 and qc["subvector_dim"] == 4 and len(qc["calibration"]["blocks"]) == 2
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    pipe = VDTPipeline.from_pretrained(out, device="cpu", precision="fp32")
    result = pipe("generate", num_inference_steps=2, seed=0, progress=False)
    assert result.frames.shape == (4, 8, 8, 3) and result.nfe == 2
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    assert size < 0.5 * sum(p.stat().st_size for p in tiny_vdt_dir.glob("*.safetensors"))


def test_cli_baselines_write_the_same_format(tiny_vdt_dir, tmp_path):
    from pipelines.video.pipeline import VDTPipeline
    for method, bits in (("rtn", 3), ("kmeans", 4)):
        out = tmp_path / f"vdt-tiny-{method}{bits}"
        r = run_cli("compress", tiny_vdt_dir, "--method", method, "--bits", str(bits), "-o", out)
        assert r.returncode == 0, r.stderr
        qc = quantization_config(out)
        assert (qc["method"], qc["bits"]) == (method, bits) and "calibration" not in qc
        pipe = VDTPipeline.from_pretrained(out, device="cpu")
        assert pipe("generate", num_inference_steps=2, progress=False).frames.shape == (4, 8, 8, 3)


def _one_error(r, why):
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and why in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_cli_errors_are_one_line(tiny_vdt_dir, tiny_tokenizer_dir, tmp_path):
    _one_error(run_cli("compress", tmp_path / "missing", "-o", tmp_path / "x"), "neither a local folder")
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    _one_error(run_cli("compress", tiny_vdt_dir, "-o", existing), "exists: pass --overwrite")
    _one_error(run_cli("compress", tiny_vdt_dir, "-o", existing, "--overwrite"), "not a checkpoint folder")
    assert (existing / "notes.txt").read_text() == "keep me"
    _one_error(run_cli("compress", tiny_tokenizer_dir, "-o", tmp_path / "y"), "not a checkpoint of an installed pipeline")
    _one_error(run_cli("compress", "put-photos-S", "-o", tmp_path / "y"), "needs a DiT pipeline")
    _one_error(run_cli("compress", tiny_vdt_dir, "--bits", "5", "-o", tmp_path / "z"), "--bits 5")
    _one_error(run_cli("compress", tiny_vdt_dir, "--method", "gptq", "-o", tmp_path / "z"), "--method 'gptq'")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_bench_compress_quick_runs_every_method(tiny_vdt_dir, tmp_path):
    from genstudio.bench import Report
    from genstudio.bench_compress import bench_compress, default_checkpoints
    assert "vdt-physics-M" in default_checkpoints()  # found through the pipeline's compress protocol
    report = Report("compress", tmp_path)
    bench_compress(report, quick=True, checkpoints=str(tiny_vdt_dir))
    rows = {r["method"]: r for r in report.rows}
    assert list(rows) == ["fp16", "int8-dynamic", "rtn", "kmeans", "vq4dit", "vq4dit (gather)"]
    assert rows["fp16"]["ssim_vs_fp"] == 1 and 0 < rows["vq4dit"]["ssim_vs_fp"] <= 1
    assert rows["vq4dit"]["size_mb"] < rows["fp16"]["size_mb"] / 2 and rows["vq4dit"]["compress_s"] > 0
    assert rows["vq4dit (gather)"]["max_abs_diff_vs_dequantized"] < 1e-5
    assert rows["vq4dit (gather)"]["weights_mb_ram"] < rows["vq4dit"]["weights_mb_ram"]
    json_path, md_path = report.write()
    assert "vq4dit (gather)" in md_path.read_text()
