"""VAT tokenizer: token counts per scale, encode -> bytes -> decode, the variational layer and its
ablation, save/load, one recipe step, marching cubes. Tiny models only, offline."""
import math

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
from pipelines.shape.vat import (VAT_CONFIGS, VATTokenizer, bytes_to_tokens, default_scales,  # noqa: E402
                                 mesh_from_occupancy, tokens_to_bytes)


def tiny(**overrides) -> VATTokenizer:
    torch.manual_seed(0)
    return VATTokenizer(**{**VAT_CONFIGS["tiny"], **overrides}).eval()


def sphere_points(batch: int = 2, count: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    normals = torch.nn.functional.normalize(torch.randn(batch, count, 3, generator=g), dim=-1)
    return normals * 0.8, normals


def test_token_counts_grow_per_scale():
    assert default_scales(8) == [1, 2, 4, 8] and default_scales(6) == [1, 2, 4, 6] and default_scales(1) == [1]
    model = tiny()
    points, normals = sphere_points()
    enc = model.encode(points, normals)
    assert [tuple(i.shape) for i in enc.indices] == [(2, 1), (2, 2), (2, 4), (2, 8)]
    assert enc.quantized.shape == (2, 8, VAT_CONFIGS["tiny"]["latent_dim"])
    single = tiny(scales=[8])                                   # the single-scale ablation: plain VQ
    assert [tuple(i.shape) for i in single.encode(points, normals).indices] == [(2, 8)]
    with pytest.raises(ValueError, match="scales must grow"):
        tiny(scales=[1, 4])


def test_encode_bytes_decode_round_trip():
    model = tiny()
    points, normals = sphere_points()
    enc = model.encode(points, normals)
    data = tokens_to_bytes([i[1] for i in enc.indices], model.config.codebook_size)
    bits = math.ceil(math.log2(model.config.codebook_size))
    assert len(data) == 5 + math.ceil(sum(model.scales) * bits / 8) == model.bytes_per_shape
    back = bytes_to_tokens(data, model.scales)
    assert all(torch.equal(a[1:], b) for a, b in zip(enc.indices, back))
    triplane = model.decode(back)
    C, S = model.config.triplane_channels, model.config.triplane_size
    assert triplane.shape == (1, 3, C, S, S)
    assert torch.allclose(triplane, model.decode(enc.quantized[1:]), atol=1e-5)   # indices == dequantised tokens
    assert model.decode(back[:2]).shape == triplane.shape                          # a coarse prefix decodes too
    queries = torch.rand(1, 10, 3) * 2 - 1
    assert model.occupancy(triplane, queries).shape == (1, 10)
    with pytest.raises(ValueError, match="need"):
        bytes_to_tokens(data, [1, 2, 4])
    with pytest.raises(ValueError, match="header"):
        bytes_to_tokens(b"xx" + data[2:], model.scales)
    with pytest.raises(ValueError, match="must lie in"):
        tokens_to_bytes([torch.tensor([32])], 32)
    # the "B" preset: 511 indices at 8 bits -> the paper's 512-byte budget (+ our 5-byte header)
    assert sum(default_scales(256)) == 511


def test_kl_is_zero_without_the_variational_layer():
    points, normals = sphere_points()
    queries = torch.rand(2, 16, 3) * 2 - 1
    plain = tiny(variational=False)
    out = plain(points, queries, normals, sample=True)
    assert plain.encode(points, normals).logvar is None and out.kl.item() == 0.0
    variational = tiny()
    out = variational(points, queries, normals)
    assert out.kl.item() > 0 and torch.isfinite(out.logits).all() and out.vq_loss.item() >= 0
    # inference encodes the posterior mean: deterministic; training samples
    a, b = variational.encode(points, normals), variational.encode(points, normals)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(variational.encode(points, normals, sample=True).latents, a.latents)


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny()
    points, normals = sphere_points()
    queries = torch.rand(2, 16, 3) * 2 - 1
    model.save_pretrained(tmp_path / "vat")
    loaded = VATTokenizer.from_pretrained(tmp_path / "vat").eval()
    assert loaded.scales == model.scales and loaded.config.variational
    with torch.no_grad():
        a, b = model(points, queries, normals), loaded(points, queries, normals)
    assert torch.equal(a.logits, b.logits) and all(torch.equal(x, y) for x, y in zip(a.indices, b.indices))


@pytest.mark.parametrize("kind", ["sincos", "learned"])
def test_decoder_query_kinds_save_load_and_older_configs_read_as_sincos(tmp_path, kind):
    import json
    model = tiny(decoder_queries=kind)
    assert VAT_CONFIGS["S"].get("decoder_queries", "sincos") == "sincos"  # presets build the shipped layout
    side = model.config.triplane_size // 2
    assert model.plane_embed.shape == ((1, 3, side * side, 32) if kind == "learned" else (1, 3, 1, 32))
    model.save_pretrained(tmp_path / "vat")
    config = tmp_path / "vat" / "config.json"
    if kind == "sincos":  # a checkpoint written before the option existed
        data = json.loads(config.read_text())
        del data["decoder_queries"]
        config.write_text(json.dumps(data))
    loaded = VATTokenizer.from_pretrained(tmp_path / "vat")
    assert loaded.config.decoder_queries == kind and torch.equal(loaded.plane_embed, model.plane_embed)
    with pytest.raises(ValueError, match="decoder_queries"):
        tiny(decoder_queries="grid")


def test_one_recipe_step_gives_a_finite_loss(tmp_path):
    from genstudio.data import prepare
    from genstudio.train import train
    from pipelines.shape.train import vat_recipe
    prepare("shapes", force=True, quiet=True, sources="primitives", primitives=7, points=96, near=64, uniform=64)
    r = vat_recipe({"preset": "tiny", "steps": 1, "batch_size": 2, "num_points": 48, "num_queries": 32,
                    "eval_items": 2, "output_dir": str(tmp_path / "run"), "progress": False, "mixed_precision": "no"})
    batch = {k: torch.stack([r.dataset[i][k] for i in range(2)]) for k in ("points", "queries", "occupancy")}
    loss, logs = r.loss_fn(r.model, batch)
    assert torch.isfinite(loss) and loss.requires_grad and set(logs) >= {"bce", "kl", "vq_loss"}
    summary = train(r)
    assert summary["steps"] == 1 and 0 <= summary["val_iou"] <= 1
    assert summary["bytes_per_shape"] == r.model.bytes_per_shape
    assert VATTokenizer.from_pretrained(summary["final"]).config.num_tokens == 8
    with pytest.raises(ValueError, match="unknown vat option"):
        vat_recipe({"preset": "tiny", "colour": 1})


def test_unquantised_forward_decodes_the_continuous_latents():
    model = tiny()
    points, normals = sphere_points()
    queries = torch.rand(2, 16, 3) * 2 - 1
    with torch.no_grad():
        out = model(points, queries, normals, sample=False, quantize=False)
        mean, _ = model.posterior(points, normals)
        direct = model.occupancy(model.decode(mean), queries)
    assert out.indices == [] and float(out.vq_loss) == 0 and torch.equal(out.logits, direct)


def test_warmup_then_codebook_from_data_then_commitment_ramp(tmp_path):
    from genstudio.data import prepare
    from pipelines.shape.train import vat_recipe
    prepare("shapes", force=True, quiet=True, sources="primitives", primitives=7, points=96, near=64, uniform=64)
    r = vat_recipe({"preset": "tiny", "steps": 1, "batch_size": 2, "num_points": 48, "num_queries": 32,
                    "eval_items": 2, "output_dir": str(tmp_path / "run"), "progress": False, "mixed_precision": "no",
                    "ae_warmup_steps": 3, "commitment_ramp_steps": 4, "logvar_init": -8.0})
    m, latent = r.model, r.model.config.latent_dim
    assert torch.all(m.to_moments.bias[latent:] == -8.0)
    batch = {k: torch.stack([r.dataset[i][k] for i in range(2)]) for k in ("points", "queries", "occupancy")}
    start = m.quantizer.quantizer.embedding.weight.clone()
    loss, logs = r.loss_fn(m, batch, step=1)                   # warm-up: no quantiser, no KL
    assert logs["vq_loss"] == 0 and torch.equal(m.quantizer.quantizer.embedding.weight, start)
    r.loss_fn(m, batch, step=3)                                # the switch: codes from this batch's latents
    assert not torch.equal(m.quantizer.quantizer.embedding.weight, start)
    assert m.quantizer.quantizer.beta == 0.0
    loss, logs = r.loss_fn(m, batch, step=5)
    assert m.quantizer.quantizer.beta == pytest.approx(0.25 * 2 / 4) and logs["vq_loss"] >= 0 and torch.isfinite(loss)


def test_init_from_continues_a_run_and_refuses_another_architecture(tmp_path):
    from genstudio.data import prepare
    from pipelines.shape.train import vat_recipe
    prepare("shapes", force=True, quiet=True, sources="primitives", primitives=7, points=96, near=64, uniform=64)
    base = {"preset": "tiny", "steps": 1, "batch_size": 2, "num_points": 48, "num_queries": 32, "eval_items": 2,
            "progress": False, "mixed_precision": "no"}
    source = tiny()
    with torch.no_grad():
        source.quantizer.quantizer.embedding.weight.normal_()
    source.save_pretrained(tmp_path / "src")
    r = vat_recipe({**base, "output_dir": str(tmp_path / "run"), "init_from": str(tmp_path / "src")})
    assert torch.equal(r.model.quantizer.quantizer.embedding.weight, source.quantizer.quantizer.embedding.weight)
    assert r.options.init_from == str((tmp_path / "src").resolve())
    with pytest.raises(ValueError, match="vat init_from"):
        vat_recipe({**base, "output_dir": str(tmp_path / "run2"), "init_from": str(tmp_path / "src"),
                    "decoder_queries": "learned"})


def test_marching_cubes_on_a_sphere_occupancy_gives_a_closed_mesh():
    axis = np.linspace(-1, 1, 32)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    occupancy = (np.sqrt(x**2 + y**2 + (z - 0.2) ** 2) < 0.6).astype(np.float32)
    mesh = mesh_from_occupancy(occupancy)
    assert len(mesh.faces) > 100 and mesh.is_watertight
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.1)      # normals outward: positive volume
    assert np.allclose(mesh.centroid, [0, 0, 0.2], atol=0.03)                  # axes in [x, y, z] order
    with pytest.raises(ValueError, match="no surface"):
        mesh_from_occupancy(np.zeros((8, 8, 8)))
    model = tiny()
    grid = model.occupancy_grid(model.decode(model.encode(*sphere_points(1)).quantized), resolution=12)
    assert grid.shape == (1, 12, 12, 12) and torch.isfinite(grid).all()


def test_cli_encodes_a_mesh_to_bytes_and_decodes_them(tmp_path):
    from typer.testing import CliRunner
    from pipelines.shape.cli import shape
    model = tiny()
    model.save_pretrained(tmp_path / "vat")
    mesh_file = tmp_path / "ball.obj"
    trimesh.creation.icosphere(2).export(mesh_file)
    original = mesh_file.read_bytes()
    runner = CliRunner()
    result = runner.invoke(shape, ["encode", "-i", str(mesh_file), "-m", str(tmp_path / "vat"), "--points", "64"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ball.vat").stat().st_size == model.bytes_per_shape
    result = runner.invoke(shape, ["decode", "-i", str(tmp_path / "ball.vat"), "-m", str(tmp_path / "vat"),
                                   "--resolution", "12", "-o", str(tmp_path / "out.ply")])
    # an untrained model may decode an empty shape: either a mesh or a clear message, never a traceback
    if result.exit_code == 0:
        assert "#F=" in result.output and trimesh.load(tmp_path / "out.ply").faces.shape[0] > 0
    else:
        assert result.exit_code == 2 and "empty" in result.output and not (tmp_path / "out.ply").exists()
    assert not list(tmp_path.glob("*.partial"))
    again = runner.invoke(shape, ["encode", "-i", str(mesh_file), "-m", str(tmp_path / "vat")])
    assert again.exit_code == 2 and "--overwrite" in again.output                  # nothing is replaced silently
    clash = runner.invoke(shape, ["decode", "-i", str(tmp_path / "ball.vat"), "-m", str(tmp_path / "vat"),
                                  "-o", str(mesh_file)])
    assert clash.exit_code == 2 and mesh_file.read_bytes() == original                # the input mesh is kept
    bad = runner.invoke(shape, ["encode", "-i", str(tmp_path / "missing.obj"), "-m", str(tmp_path / "vat")])
    assert bad.exit_code == 2 and "does not exist" in bad.output
