"""The released Vec2Face weights' key mapping (pipelines/face/official.py), offline: synthetic state
dicts with the reference's names and shapes (HaiyuWu/Vec2Face model_vec2face.py, im_decoder.py,
models/iresnet.py; written out by hand here, not taken from our modules) at a tiny width, saved as
the released files, loaded through Vec2FacePipeline.from_pretrained; the hub is never touched."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from genstudio.hub import CheckpointNotFound

VECTOR_DIM, WIDTH, GRID = 32, 48, 7          # widths divisible by the released 12 / 16 heads
LEVELS, Z = (32, 32, 64, 64, 64), 32          # 7 -> 112 in four doublings; level 2 -> 1 changes width


# ---------------------------------------------------------------- synthetic official state dicts

def _ln(sd, name, dim):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(dim), torch.randn(dim)


def _linear(sd, name, cout, cin):
    sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.randn(cout, cin), torch.randn(cout)


def _vit_block(sd, name, dim):
    _ln(sd, f"{name}.norm1", dim)
    _linear(sd, f"{name}.attn.qkv", 3 * dim, dim)
    _linear(sd, f"{name}.attn.proj", dim, dim)
    _ln(sd, f"{name}.norm2", dim)
    _linear(sd, f"{name}.mlp.fc1", 4 * dim, dim)
    _linear(sd, f"{name}.mlp.fc2", dim, 4 * dim)


def _vq_resblock(sd, name, cin, cout):
    _ln(sd, f"{name}.norm1", cin)
    sd[f"{name}.conv1.weight"] = torch.randn(cout, cin, 3, 3) * 0.05
    _ln(sd, f"{name}.norm2", cout)
    sd[f"{name}.conv2.weight"] = torch.randn(cout, cout, 3, 3) * 0.05
    if cin != cout:
        sd[f"{name}.nin_shortcut.weight"] = torch.randn(cout, cout, 1, 1) * 0.05


def official_generator_sd(depth: int = 1, decoder_depth: int = 2, res_blocks: int = 1) -> dict:
    """MaskedGenerativeEncoderViT's state dict at a tiny width (im_decoder: taming's Decoder)."""
    torch.manual_seed(0)
    n, sd = GRID * GRID, {}
    sd["token_emb.position_embeddings.weight"] = torch.randn(n + 1, WIDTH)
    _ln(sd, "token_emb.LayerNorm", WIDTH)
    sd["token_emb.position_ids"] = torch.arange(n + 1)[None]
    _linear(sd, "latent_prior_proj_f", WIDTH, VECTOR_DIM)
    _linear(sd, "feature_token", n, 1)
    _linear(sd, "center_token", n, WIDTH)
    _linear(sd, "im_decoder_proj", Z, WIDTH)
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = torch.randn(WIDTH, 3, 16, 16), torch.randn(WIDTH)
    for i in range(depth):
        _vit_block(sd, f"blocks.{i}", WIDTH)
    _ln(sd, "norm", WIDTH)
    _linear(sd, "decoder_embed", WIDTH, WIDTH)
    sd["decoder_pos_embed_learned"] = torch.randn(1, n + 1, WIDTH)
    for i in range(decoder_depth):
        _vit_block(sd, f"decoder_blocks.{i}", WIDTH)
    _ln(sd, "decoder_norm", WIDTH)
    width = LEVELS[-1]
    sd["im_decoder.conv_in.weight"], sd["im_decoder.conv_in.bias"] = torch.randn(width, Z, 3, 3) * 0.05, torch.randn(width)
    for name in ("block_1", "block_2"):
        _vq_resblock(sd, f"im_decoder.mid.{name}", width, width)
    for level in reversed(range(len(LEVELS))):
        for j in range(res_blocks):
            _vq_resblock(sd, f"im_decoder.up.{level}.block.{j}", width, LEVELS[level])
            width = LEVELS[level]
        if level:
            sd[f"im_decoder.up.{level}.upsample.conv.weight"] = torch.randn(width, width, 3, 3) * 0.05
            sd[f"im_decoder.up.{level}.upsample.conv.bias"] = torch.randn(width)
    _ln(sd, "im_decoder.norm_out", width)
    sd["im_decoder.conv_out.weight"], sd["im_decoder.conv_out.bias"] = torch.randn(3, width, 3, 3) * 0.05, torch.randn(3)
    return sd


def _bn(sd, name, dim):
    _ln(sd, name, dim)
    sd[f"{name}.running_mean"], sd[f"{name}.running_var"] = torch.randn(dim), torch.rand(dim) + 0.5
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def official_arcface_sd(channels=(8, 8, 16, 16), layers=(1, 2, 1, 1)) -> dict:
    """insightface iresnet's state dict (112x112 -> VECTOR_DIM) at a tiny width."""
    torch.manual_seed(1)
    sd = {"conv1.weight": torch.randn(channels[0], 3, 3, 3) * 0.1, "prelu.weight": torch.rand(channels[0])}
    _bn(sd, "bn1", channels[0])
    cin = channels[0]
    for k, (cout, count) in enumerate(zip(channels, layers), start=1):
        for i in range(count):
            name, c = f"layer{k}.{i}", (cin if i == 0 else cout)
            _bn(sd, f"{name}.bn1", c)
            sd[f"{name}.conv1.weight"] = torch.randn(cout, c, 3, 3) * 0.1
            _bn(sd, f"{name}.bn2", cout)
            sd[f"{name}.prelu.weight"] = torch.rand(cout)
            sd[f"{name}.conv2.weight"] = torch.randn(cout, cout, 3, 3) * 0.1
            _bn(sd, f"{name}.bn3", cout)
            if i == 0:
                sd[f"{name}.downsample.0.weight"] = torch.randn(cout, c, 1, 1) * 0.1
                _bn(sd, f"{name}.downsample.1", cout)
        cin = cout
    _bn(sd, "bn2", cin)
    _linear(sd, "fc", VECTOR_DIM, cin * 7 * 7)
    _bn(sd, "features", VECTOR_DIM)
    return sd


class _Payload:
    """A pickled object whose unpickling would run code: it must never be unpickled."""
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return "ran"


# ---------------------------------------------------------------- fixtures

@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise ConnectionError("network access in an offline test")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


@pytest.fixture(scope="module")
def generator_sd():
    return official_generator_sd()


@pytest.fixture(scope="module")
def arcface_sd():
    return official_arcface_sd()


def save_release(folder: Path, generator_sd: dict, arcface_sd: dict, extra: dict | None = None) -> Path:
    """The hub's layout: weights/vec2face_generator.pth (the training save dict) and
    weights/arcface-r100-glint360k.pth (a bare state dict)."""
    weights = folder / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    checkpoint = {"model_vec2face": generator_sd, "model_disc": {"main.0.weight": torch.randn(4, 3, 4, 4)},
                  "model_ema": None, "epoch": 3, "scaler": {"scale": 65536.0},
                  "args": argparse.Namespace(model="vec2face_vit_base_patch16", rep_dim=512, lr=4e-5),
                  **(extra or {})}
    torch.save(checkpoint, weights / "vec2face_generator.pth")
    torch.save(arcface_sd, weights / "arcface-r100-glint360k.pth")
    return folder


def load(path, **kwargs):
    from pipelines.face.pipeline import Vec2FacePipeline
    return Vec2FacePipeline.from_pretrained(path, device="cpu", precision="fp32", **kwargs)


# ---------------------------------------------------------------- tests

def test_release_folder_loads_and_parameters_land(tmp_path, generator_sd, arcface_sd):
    from pipelines.face.official import OfficialImageDecoder, OfficialVec2Face
    pipe = load(save_release(tmp_path, generator_sd, arcface_sd))
    model, rec = pipe.vec2face, pipe.recognizer
    assert isinstance(model, OfficialVec2Face) and isinstance(model.im_decoder, OfficialImageDecoder)
    c = model.config
    assert (c.vector_dim, c.image_size, c.grid_size, c.width, c.depth, c.decoder_depth, c.z_channels) == \
        (VECTOR_DIM, 112, GRID, WIDTH, 1, 2, Z)
    assert tuple(c.level_channels) == LEVELS and c.res_blocks == 1 and (c.heads, c.decoder_heads) == (12, 16)
    params = dict(model.state_dict())
    for key in ("latent_prior_proj_f.weight", "feature_token.bias", "token_emb.LayerNorm.weight",
                "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "decoder_blocks.1.attn.proj.weight",
                "decoder_pos_embed_learned", "decoder_norm.bias", "im_decoder_proj.weight",
                "im_decoder.mid.block_2.conv1.weight", "im_decoder.up.1.block.0.nin_shortcut.weight",
                "im_decoder.up.4.upsample.conv.bias", "im_decoder.conv_out.weight"):
        assert torch.equal(params[key], generator_sd[key]), key
    assert not any(k.startswith(("patch_embed", "center_token")) for k in params)  # unused by the reference
    rec_params = rec.state_dict()
    assert rec.config.image_size == 112 and rec.config.embed_dim == VECTOR_DIM
    assert tuple(rec.config.layers) == (1, 2, 1, 1)
    for key in ("conv1.weight", "layer2.1.conv2.weight", "layer3.0.downsample.1.running_var", "fc.weight",
                "features.running_mean", "features.num_batches_tracked"):
        assert torch.equal(rec_params[key], arcface_sd[key]), key
    out = pipe.from_vector(torch.randn(VECTOR_DIM), n=2, seed=0)
    assert [im.size for im in out.images] == [(112, 112)] * 2


def test_image_decoder_computes_as_the_reference(generator_sd):
    """A width-changing block's residual is nin_shortcut(h), h the block's own output (im_decoder.py)."""
    import torch.nn.functional as F
    from pipelines.face.official import OfficialVec2Face, convert_vec2face_state_dict, official_vec2face_config
    sd = convert_vec2face_state_dict(generator_sd)
    model = OfficialVec2Face(**official_vec2face_config(sd))
    model.load_state_dict(sd)
    block, p = model.im_decoder.up[1].block[0], "im_decoder.up.1.block.0."
    x = torch.randn(1, 64, 8, 8)
    h = F.silu(F.group_norm(x, 32, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6))
    h = F.conv2d(h, sd[p + "conv1.weight"], padding=1)
    h = F.conv2d(F.silu(F.group_norm(h, 32, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)),
                 sd[p + "conv2.weight"], padding=1)
    torch.testing.assert_close(block(x), F.conv2d(h, sd[p + "nin_shortcut.weight"]) + h)


def test_safetensors_preferred_and_single_file(tmp_path, generator_sd, arcface_sd):
    save_file({k: v.contiguous() for k, v in generator_sd.items()}, str(tmp_path / "vec2face_generator.safetensors"))
    save_file(arcface_sd, str(tmp_path / "arcface-r100-glint360k.safetensors"))
    (tmp_path / "vec2face_generator.pth").write_bytes(b"not a checkpoint")  # would fail if it were read
    pipe = load(tmp_path)
    assert torch.equal(pipe.vec2face.decoder_embed.weight, generator_sd["decoder_embed.weight"])
    pipe = load(tmp_path / "vec2face_generator.safetensors")  # one file: the ArcFace file is found next to it
    assert torch.equal(pipe.recognizer.fc.weight, arcface_sd["fc.weight"])


def test_missing_key_is_one_line(tmp_path, generator_sd, arcface_sd):
    from genstudio.pipeline import CheckpointMismatch
    broken = {k: v for k, v in generator_sd.items() if k != "blocks.0.mlp.fc2.bias"}
    with pytest.raises(CheckpointMismatch) as e:
        load(save_release(tmp_path, broken, arcface_sd))
    assert "missing" in str(e.value) and "blocks.0.mlp.fc2.bias" in str(e.value) and "\n" not in str(e.value)


def test_wrong_shape_is_one_line(tmp_path, generator_sd, arcface_sd):
    from genstudio.pipeline import CheckpointMismatch
    broken = dict(arcface_sd, **{"layer2.1.conv2.weight": torch.randn(8, 8, 1, 1)})
    with pytest.raises(CheckpointMismatch) as e:
        load(save_release(tmp_path, generator_sd, broken))
    message = str(e.value)
    assert "shape mismatch" in message and "layer2.1.conv2.weight" in message and "\n" not in message


def test_unknown_keys_and_foreign_files_are_refused(tmp_path, generator_sd, arcface_sd):
    from genstudio.pipeline import CheckpointMismatch
    with pytest.raises(CheckpointMismatch, match="unexpected.*blocks.0.attn.q_bias"):
        load(save_release(tmp_path / "a", dict(generator_sd, **{"blocks.0.attn.q_bias": torch.zeros(WIDTH)}),
                          arcface_sd))
    with pytest.raises(CheckpointMismatch, match="not an official Vec2Face generator"):
        load(save_release(tmp_path / "b", arcface_sd, arcface_sd))


def test_pickled_objects_are_refused_never_run(tmp_path, generator_sd, arcface_sd):
    from genstudio.pipeline import CheckpointMismatch
    folder = save_release(tmp_path, generator_sd, arcface_sd, extra={"payload": _Payload()})
    with pytest.raises(CheckpointMismatch) as e:
        load(folder)
    assert "refused" in str(e.value) and "weights_only" in str(e.value) and "\n" not in str(e.value)
    assert not _Payload.ran


def test_hub_id_downloads_only_the_release_files(tmp_path, monkeypatch, generator_sd, arcface_sd):
    import huggingface_hub
    from pipelines.face.official import ARCFACE_FILE, GENERATOR_FILE, OFFICIAL_HUB_ID
    with pytest.raises(CheckpointNotFound) as e:  # the autouse fixture: no network
        load(OFFICIAL_HUB_ID)
    assert "could not be loaded" in str(e.value) and "\n" not in str(e.value)
    folder = save_release(tmp_path, generator_sd, arcface_sd)
    asked = []

    def cached(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(folder / filename)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cached)
    pipe = load(OFFICIAL_HUB_ID)
    assert asked == [(OFFICIAL_HUB_ID, GENERATOR_FILE), (OFFICIAL_HUB_ID, ARCFACE_FILE)]
    assert torch.equal(pipe.vec2face.latent_prior_proj_f.weight, generator_sd["latent_prior_proj_f.weight"])


def test_routing_keeps_our_export_format(tmp_path, generator_sd):
    from pipelines.face.official import convert_arcface_state_dict, is_official
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "config.json").write_text("{}")
    assert not is_official(tmp_path / "ours") and not is_official("vec2face-avatars-S") and not is_official(None)
    assert is_official("BooBooWu/Vec2Face")
    ddp = {f"module.{k}": v for k, v in official_arcface_sd().items()}
    assert "fc.weight" in convert_arcface_state_dict(ddp)
