import pytest
import torch

from genstudio.dit import (
    DIT_CONFIGS,
    DiT,
    DiTBlock,
    SpatioTemporalBlock,
    TimestepEmbedder,
    convert_facebook_dit_state_dict,
    dit_from_name,
    sincos_2d,
)

SIZE, CH = 8, 4  # 8x8 latents, patch 2 -> 16 tokens


def tiny(**kw):
    torch.manual_seed(0)
    return dit_from_name("DiT-tiny", **{"input_size": SIZE, "in_channels": CH, **kw})


def perturb(model, scale=0.05):
    """Move every parameter off its init so zero-initialised paths carry signal."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def inputs(batch=2, frames=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, CH, SIZE, SIZE) if frames is None else (batch, frames, CH, SIZE, SIZE)
    return torch.randn(shape, generator=g), torch.tensor([3, 700][:batch])


# ---- Zero initialisation ----

@pytest.mark.parametrize("context_dim", [None, 12])
def test_blocks_are_identity_at_init(context_dim):
    model = tiny(num_classes=0, context_dim=context_dim)
    x, c = torch.randn(2, 16, 64), torch.randn(2, 64)
    context = torch.randn(2, 5, 12) if context_dim else None
    for block in model.blocks:
        assert isinstance(block, DiTBlock)
        assert torch.equal(block(x, c, context), x)


@pytest.mark.parametrize("context_dim", [None, 12])
def test_spatiotemporal_block_is_identity_at_init(context_dim):
    model = tiny(num_classes=0, context_dim=context_dim, num_frames=3)
    x, c = torch.randn(2, 3, 16, 64), torch.randn(2, 64)
    context = torch.randn(2, 5, 12) if context_dim else None
    for block in model.blocks:
        assert isinstance(block, SpatioTemporalBlock)
        assert torch.equal(block(x, c, context), x)


def test_block_not_identity_once_trained():
    model = perturb(tiny(num_classes=0, context_dim=12))
    x = torch.randn(2, 16, 64)
    assert not torch.allclose(model.blocks[0](x, torch.randn(2, 64), torch.randn(2, 5, 12)), x)


@pytest.mark.parametrize(
    "kw", [dict(num_classes=0), dict(num_classes=10), dict(num_classes=0, context_dim=12), dict(num_frames=3)]
)
def test_dit_outputs_zeros_at_init(kw):
    model = tiny(**kw).eval()
    x, t = inputs(frames=kw.get("num_frames"))
    ctx = dict(context=torch.randn(2, 5, 12)) if "context_dim" in kw else {}
    out = model(x, t, **ctx)
    assert out.shape[:-3] == x.shape[:-3] and out.shape[-3] == 2 * CH
    assert torch.count_nonzero(out) == 0


# ---- Shapes and conditioning ----

def test_image_shapes_and_learn_sigma():
    x, t = inputs()
    assert perturb(tiny(num_classes=0))(x, t).shape == (2, 2 * CH, SIZE, SIZE)
    assert perturb(tiny(num_classes=0, learn_sigma=False))(x, t).shape == x.shape


def test_class_conditioning_changes_output_and_null_class():
    model = perturb(tiny(num_classes=10))
    x, t = inputs()
    a = model(x, t, y=torch.tensor([1, 2]))
    b = model(x, t, y=torch.tensor([5, 6]))
    assert a.shape == (2, 2 * CH, SIZE, SIZE) and not torch.allclose(a, b)
    null = torch.full((2,), model.null_class)
    assert torch.equal(model(x, t, y=null), model(x, t))  # y=None means the null class


def test_text_conditioning_and_mask():
    model = perturb(tiny(num_classes=0, context_dim=12))
    x, t = inputs()
    context = torch.randn(2, 5, 12)
    out = model(x, t, context=context)
    assert out.shape == (2, 2 * CH, SIZE, SIZE)
    assert not torch.allclose(out, model(x, t))
    # Padding tokens are ignored...
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = context.clone()
    padded[0, 3:] = 100.0
    torch.testing.assert_close(model(x, t, context=padded, context_mask=mask), model(x, t, context=context, context_mask=mask))
    # ...and a fully masked context is exactly the unconditional (no-context) case.
    torch.testing.assert_close(model(x, t, context=context, context_mask=torch.zeros(2, 5)), model(x, t))


def test_video_shapes_and_temporal_mixing():
    model = perturb(tiny(num_classes=10, num_frames=4))
    x, t = inputs(frames=4)
    y = torch.tensor([1, 2])
    out = model(x, t, y=y)
    assert out.shape == (2, 4, 2 * CH, SIZE, SIZE)
    assert model(x[:, :2], t, y=y).shape == (2, 2, 2 * CH, SIZE, SIZE)  # fewer frames is fine
    changed = x.clone()
    changed[:, 0] += 1.0
    assert not torch.allclose(model(changed, t, y=y)[:, 1:], out[:, 1:])  # frames talk to each other
    with pytest.raises(ValueError, match="frames"):
        model(torch.randn(1, 5, CH, SIZE, SIZE), t[:1])


def test_bad_input_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.randn(2, CH, SIZE + 2, SIZE), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        tiny(num_classes=0)(torch.randn(1, CH, SIZE, SIZE), torch.tensor([1]), y=torch.tensor([0]))


def test_named_configs():
    assert set(DIT_CONFIGS) == {"DiT-tiny", "DiT-S", "DiT-B", "DiT-L", "DiT-XL"}
    model = dit_from_name("DiT-tiny/4", input_size=8, in_channels=3)
    assert model.config.patch_size == 4 and model.config.hidden_size == 64 and model.pos_embed.shape == (1, 4, 64)
    with pytest.raises(ValueError, match="unknown DiT config"):
        dit_from_name("DiT-XXL")


# ---- Fixed embeddings match the reference formulas ----

def test_pos_embed_matches_mae_reference():
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    ref = get_2d_sincos_pos_embed(64, 4, base_size=4)  # base_size = grid: plain MAE/DiT grid
    torch.testing.assert_close(sincos_2d(64, 4), torch.as_tensor(ref).float())
    torch.testing.assert_close(tiny().pos_embed[0], torch.as_tensor(ref).float())


def test_timestep_embedding_matches_dit_reference():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0.0, 17.0, 999.0])
    ref = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)  # [cos | sin]
    torch.testing.assert_close(TimestepEmbedder.timestep_embedding(t, 256), ref)


# ---- Serialisation and official checkpoints ----

def test_save_pretrained_round_trip(tmp_path):
    model = perturb(tiny(num_classes=10, context_dim=12))
    x, t = inputs()
    kw = dict(y=torch.tensor([1, 2]), context=torch.randn(2, 5, 12))
    model.save_pretrained(tmp_path)
    loaded = DiT.from_pretrained(tmp_path).eval()
    assert torch.equal(model(x, t, **kw), loaded(x, t, **kw))


def facebook_layout(model):
    """What facebookresearch/DiT's torch.save(model.state_dict()) holds for the same weights."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["pos_embed"] = model.pos_embed.clone()  # a (frozen) nn.Parameter there
    return sd


def test_facebook_checkpoint_loads_into_fresh_model(tmp_path):
    model = perturb(tiny(num_classes=10))
    path = tmp_path / "DiT-tiny-2-16x16.pt"
    torch.save(facebook_layout(model), path)
    loaded = DiT.from_facebook_checkpoint(path)  # config inferred from shapes
    assert loaded.config.num_classes == 10 and loaded.config.input_size == SIZE and loaded.config.learn_sigma
    x, t = inputs()
    y = torch.tensor([4, 10])  # 10 = null class
    assert torch.equal(model(x, t, y=y), loaded(x, t, y=y))
    # training checkpoints ({"model", "ema", ...}) load their EMA weights
    loaded = DiT.from_facebook_checkpoint({"model": {}, "ema": facebook_layout(model), "opt": {}})
    assert torch.equal(model(x, t, y=y), loaded(x, t, y=y))


def test_facebook_converter_is_identity_except_pos_embed():
    model = tiny(num_classes=10)
    fb = facebook_layout(model)
    converted = convert_facebook_dit_state_dict(fb, pos_embed=model.pos_embed)
    assert set(converted) == set(fb) - {"pos_embed"} == set(model.state_dict())
    with pytest.raises(ValueError, match="input_size"):
        convert_facebook_dit_state_dict(fb, pos_embed=tiny(input_size=16).pos_embed)


def test_facebook_checkpoint_missing_key_is_a_clear_error():
    fb = facebook_layout(tiny(num_classes=10))
    del fb["blocks.1.attn.qkv.weight"]
    with pytest.raises(KeyError, match=r"missing keys \(1\).*blocks\.1\.attn\.qkv\.weight"):
        DiT.from_facebook_checkpoint(fb)
    fb = facebook_layout(tiny(num_classes=10))
    fb["blocks.0.attn.extra"] = torch.zeros(1)
    with pytest.raises(KeyError, match=r"unexpected keys \(1\).*blocks\.0\.attn\.extra"):
        DiT.from_facebook_checkpoint(fb)


# ---- Precision and training ----

def test_bf16_autocast_forward():
    model = perturb(tiny(num_classes=10, context_dim=12, num_frames=2))
    x, t = inputs(frames=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y=torch.tensor([1, 2]), context=torch.randn(2, 3, 12))
    assert out.shape == (2, 2, 2 * CH, SIZE, SIZE) and out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def grads(model, x, t, **kw):
    model.zero_grad()
    model(x, t, **kw).square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_flows_and_checkpointing_matches():
    model = perturb(tiny(num_classes=10, context_dim=12)).train()
    x, t = inputs()
    kw = dict(y=torch.tensor([1, 2]), context=torch.randn(2, 5, 12))
    torch.manual_seed(3)  # train mode: label/context dropout draws from the global RNG
    plain = grads(model, x, t, **kw)
    assert set(plain) == {n for n, _ in model.named_parameters()}
    assert all(g.abs().sum() > 0 for n, g in plain.items() if "embedding_table" not in n)
    model.enable_gradient_checkpointing()
    torch.manual_seed(3)
    checkpointed = grads(model, x, t, **kw)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], msg=name)


def test_zero_init_model_still_receives_gradient():
    model = tiny(num_classes=10).train()
    x, t = inputs()
    out = model(x, t, y=torch.tensor([1, 2]))
    (out - torch.randn_like(out)).square().mean().backward()  # an MSE against a target, as in training
    assert model.final_layer.linear.weight.grad.abs().sum() > 0
    assert model.final_layer.adaLN_modulation[-1].weight.grad.abs().sum() == 0  # opens on the next step


def test_self_conditioned_dit_reads_the_estimate_and_widens_an_old_model():
    from genstudio.dit import widen_input
    torch.manual_seed(0)
    old = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=0,
              learn_sigma=False).eval()
    new = DiT(**{**old.config, "self_condition": True}).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    new.load_state_dict(widen_input(old.state_dict(), new))
    x, t, sc = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(new(x, t), old(x, t), atol=1e-6)                  # zero weights on the estimate
        assert torch.allclose(new(x, t, x_self_cond=sc), old(x, t), atol=1e-6)
        new.x_embedder.proj.weight[:, 4:].normal_()
        assert not torch.allclose(new(x, t, x_self_cond=sc), new(x, t))        # now it reads the estimate
        assert torch.equal(new(x, t), new(x, t, x_self_cond=torch.zeros_like(x)))
    with pytest.raises(ValueError, match="self-conditioning"):
        old(x, t, x_self_cond=sc)
    with pytest.raises(ValueError, match="x_self_cond"):
        new(x, t, x_self_cond=sc[:, :2])


def test_load_trunk_moves_the_blocks_to_another_latent_width_only_when_asked():
    from genstudio.dit import load_trunk
    torch.manual_seed(0)
    old = DiT(input_size=(8, 1), patch_size=1, in_channels=16, hidden_size=32, depth=2, num_heads=2, num_classes=0,
              learn_sigma=False)
    new = DiT(**{**old.config, "in_channels": 8})
    before = {k: v.clone() for k, v in new.state_dict().items()}
    with pytest.raises(ValueError, match="x_embedder.proj.weight"):
        load_trunk(new, old.state_dict())
    assert all(torch.equal(v, before[k]) for k, v in new.state_dict().items())   # refused: nothing loaded
    fresh = load_trunk(new, old.state_dict(), partial=True)
    assert fresh == ["final_layer.linear.bias", "final_layer.linear.weight", "x_embedder.proj.weight"]
    assert torch.equal(new.blocks[1].attn.qkv.weight, old.blocks[1].attn.qkv.weight)
    assert all(torch.equal(new.state_dict()[k], before[k]) for k in fresh)
    assert load_trunk(DiT(**old.config), old.state_dict()) == []
