"""MV-Adapter model pieces on a tiny diffusers UNet: cameras, Plücker maps, decoupled attention,
camera condition encoder, noise shift, official key names."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.multiview.attention import (MVAdapter, add_mv_adapter, encode_reference, multiview_attention,
                                           remove_mv_adapter, self_attention_names)
from pipelines.multiview.cameras import (REFERENCE_AZIMUTHS, CameraSet, evenly_spaced_cameras, look_at,
                                         orbit_cameras, reference_cameras, reference_ortho_maps)
from pipelines.multiview.condition import (camera_condition, shift_noise_schedule, shifted_alphas_cumprod)
from pipelines.multiview.official import (OfficialKeyError, load_official, load_official_state_dict,
                                          official_to_ours, ours_to_official)

VIEWS = 4


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")).eval()


@pytest.fixture
def unet(tiny_unet):
    return copy.deepcopy(tiny_unet)


def inputs(objects=1, views=VIEWS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(objects * views, 4, 16, 16, generator=g), torch.randn(objects * views, 5, 32, generator=g)


def run(unet, x, text, **kwargs):
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=text, **kwargs).sample


def perturb_out_layers(adapter, kind="mv", seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if f"to_out_{kind}" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


# --------------------------------------------------------------------------- cameras

def test_look_at_orbit_convention():
    cams = orbit_cameras([0.0], 0.0, radius=2.0)
    right, up, back, eye = (cams.c2w[0, :3, k] for k in range(4))
    torch.testing.assert_close(eye, torch.tensor([2.0, 0, 0]))
    torch.testing.assert_close(right, torch.tensor([0.0, 1, 0]))
    torch.testing.assert_close(up, torch.tensor([0.0, 0, 1]))
    torch.testing.assert_close(-back, torch.tensor([-1.0, 0, 0]))  # looks at the origin
    with pytest.raises(ValueError, match="up vector"):
        look_at(torch.tensor([[0.0, 0, 2]]))


@pytest.mark.parametrize("projection", ["orthographic", "perspective"])
def test_plucker_unit_directions_and_orthogonal_moments(projection):
    cams = orbit_cameras([10, 100, 200], [15, -30, 60], radius=[1.5, 2.0, 2.5], projection=projection, fov=50)
    maps = cams.plucker(12, 8)
    assert maps.shape == (3, 6, 12, 8)
    d, m = maps[:, :3], maps[:, 3:]
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3, 12, 8))
    assert (d * m).sum(dim=1).abs().max() < 1e-5
    if projection == "perspective":  # every ray leaves the camera centre: m = eye x d
        eye = cams.positions[:, :, None, None].expand_as(d)
        torch.testing.assert_close(m, torch.linalg.cross(eye, d, dim=1), atol=1e-5, rtol=0)


def test_plucker_known_values():
    # camera on +x looking at the origin: right = +y, up = +z, forward = -x
    persp = orbit_cameras([0.0], 0.0, radius=2.0, projection="perspective", fov=90).plucker(5)
    torch.testing.assert_close(persp[0, :, 2, 2], torch.tensor([-1.0, 0, 0, 0, 0, 0]))  # centre ray: through origin
    # fov 90, 5 px: focal 2.5; pixel (row 2, col 4) is 2 px right -> direction (-1, 0.8, 0) normalised
    d = F.normalize(torch.tensor([-1.0, 0.8, 0.0]), dim=0)
    torch.testing.assert_close(persp[0, :3, 2, 4], d)
    torch.testing.assert_close(persp[0, 3:, 2, 4], torch.linalg.cross(torch.tensor([2.0, 0, 0]), d, dim=0))
    ortho = orbit_cameras([0.0], 0.0, radius=2.0, projection="orthographic", ortho_scale=1.0).plucker(5)
    torch.testing.assert_close(ortho[0, :3], torch.tensor([-1.0, 0, 0])[:, None, None].expand(3, 5, 5))
    # pixel (row 0, col 4): origin (2, 0.4, 0.4), d = -x -> moment o x d = (0, -0.4, 0.4)
    torch.testing.assert_close(ortho[0, 3:, 0, 4], torch.tensor([0.0, -0.4, 0.4]))


def test_reference_preset():
    cams = reference_cameras()
    assert len(cams) == 6 and cams.projection == "orthographic" and cams.ortho_scale == 1.1
    assert REFERENCE_AZIMUTHS == (-90, -45, 0, 90, 180, 225)
    torch.testing.assert_close(cams.positions.norm(dim=-1), torch.full((6,), 1.8))
    assert cams.positions[:, 2].abs().max() < 1e-6  # horizontal
    torch.testing.assert_close(cams.positions[0], torch.tensor([0.0, -1.8, 0]), atol=1e-6, rtol=0)  # front: -y
    ref = reference_ortho_maps(cams, 4)
    p = F.normalize(cams.positions, dim=-1)
    torch.testing.assert_close(ref[:, :, 1, 3], torch.cat([-p, p], dim=-1))
    assert (ref == ref[:, :, :1, :1]).all()  # constant per view


def test_arbitrary_camera_sets():
    cams = evenly_spaced_cameras(3, elevation=30, projection="perspective", fov=35, radius=2.2)
    assert len(cams) == 3 and cams.plucker(8).shape == (3, 6, 8, 8)
    torch.testing.assert_close(torch.rad2deg(torch.asin(cams.positions[:, 2] / 2.2)), torch.full((3,), 30.0))
    one = orbit_cameras([45], [10])
    assert CameraSet(one.c2w[0]).plucker(4).shape == (1, 6, 4, 4)  # a bare matrix
    with pytest.raises(ValueError, match="2 elevations for 3 azimuths"):
        orbit_cameras([0, 90, 180], [0, 10])
    with pytest.raises(ValueError, match="projection"):
        CameraSet(one.c2w, projection="fisheye")


# --------------------------------------------------------------------------- decoupled attention

def test_zero_init_and_mv_scale_zero_leave_base_unchanged(unet):
    x, text = inputs()
    base = run(unet, x, text)
    adapter = add_mv_adapter(unet, VIEWS, use_ref=True, cond_downscale_factor=1)
    assert len(adapter.attention_names) == len(self_attention_names(unet)) == 7
    torch.testing.assert_close(run(unet, x, text), base, atol=0, rtol=0)  # zero-init output layers
    perturb_out_layers(adapter)
    assert (run(unet, x, text) - base).abs().max() > 1e-3
    torch.testing.assert_close(run(unet, x, text, cross_attention_kwargs={"mv_scale": 0.0}), base, atol=0, rtol=0)
    adapter.set_scales(mv_scale=0.0)
    torch.testing.assert_close(run(unet, x, text), base, atol=0, rtol=0)
    adapter.set_scales(mv_scale=1.0)
    adapter.enabled = False
    torch.testing.assert_close(run(unet, x, text), base, atol=0, rtol=0)
    adapter.enabled = True
    remove_mv_adapter(unet)
    torch.testing.assert_close(run(unet, x, text), base, atol=0, rtol=0)


def test_copy_init_takes_base_weights(unet):
    adapter = add_mv_adapter(unet, VIEWS, use_ref=True, cond_downscale_factor=1)
    name = adapter.attention_names[0]
    attn, branches = unet.get_submodule(name), adapter.branches(name)
    for kind in ("mv", "ref"):
        torch.testing.assert_close(getattr(branches, f"to_q_{kind}").weight, attn.to_q.weight)
        torch.testing.assert_close(getattr(branches, f"to_v_{kind}").weight, attn.to_v.weight)
        assert getattr(branches, f"to_out_{kind}")[0].weight.abs().sum() == 0
    assert getattr(branches, "to_q_mv").weight.data_ptr() != attn.to_q.weight.data_ptr()


def test_base_untouched_frozen_and_only_adapter_trains(unet):
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    adapter = add_mv_adapter(unet, VIEWS, cond_downscale_factor=1)
    assert set(unet.state_dict()) == set(before)  # the adapter lives outside the UNet's state dict
    assert not any(p.requires_grad for p in unet.parameters())
    assert all(p.requires_grad for p in adapter.parameters())
    unet.train()
    x, text = inputs()
    cond = camera_condition(evenly_spaced_cameras(VIEWS).plucker(16))
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-3)
    pred = unet(x, 10, encoder_hidden_states=text, down_intrablock_additional_residuals=adapter(cond)).sample
    F.mse_loss(pred, torch.zeros_like(pred)).backward()
    assert all(p.grad is None for p in unet.parameters())
    grads = {n: p.grad for n, p in adapter.named_parameters()}
    assert all(g is not None for n, g in grads.items() if "to_out_mv" in n or "cond_encoder" in n)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "to_out_mv" in n)
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "cond_encoder" in n)
    optimizer.step()
    for k, v in unet.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("layout", ["row", "position", "full"])
def test_multiview_attention_mixes_views_of_one_object_only(unet, layout):
    adapter = add_mv_adapter(unet, VIEWS, mv_layout=layout, cond_downscale_factor=1)
    perturb_out_layers(adapter)
    x, text = inputs(objects=2)
    changed = x.clone()
    changed[1] += 1.0  # view 1 of object 0
    out, out_changed = run(unet, x, text), run(unet, changed, text)
    assert (out[0] - out_changed[0]).abs().max() > 1e-4  # view 0 sees view 1
    torch.testing.assert_close(out[VIEWS:], out_changed[VIEWS:])  # object 1 does not
    adapter.set_scales(mv_scale=0.0)
    torch.testing.assert_close(run(unet, x, text)[0], run(unet, changed, text)[0])


def test_row_layout_matches_reference_row_attention():
    """The reference computes row attention with each view's queries against keys repeated per
    view; ours folds the views into one sequence. Same numbers."""
    torch.manual_seed(0)
    b, v, h, w, heads, d = 2, 3, 4, 5, 2, 4
    q, k, val = (torch.randn(b * v, h * w, heads * d) for _ in range(3))
    ours = multiview_attention(q, k, val, heads, v, "row", (h, w))
    expected = torch.empty_like(ours)
    for obj in range(b):
        for row in range(h):
            keys = torch.cat([k[obj * v + n].view(h, w, heads, d)[row] for n in range(v)])       # (V*w, heads, d)
            vals = torch.cat([val[obj * v + n].view(h, w, heads, d)[row] for n in range(v)])
            for n in range(v):
                qi = q[obj * v + n].view(h, w, heads, d)[row]
                att = torch.softmax(torch.einsum("qhd,khd->hqk", qi, keys) / math.sqrt(d), dim=-1)
                expected[obj * v + n].view(h, w, heads * d)[row] = torch.einsum("hqk,khd->qhd", att, vals).reshape(w, -1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_reference_attention_uses_reference_features(unet):
    adapter = add_mv_adapter(unet, VIEWS, use_ref=True, cond_downscale_factor=1)
    perturb_out_layers(adapter, "ref")
    x, text = inputs()
    ref_a = encode_reference(unet, torch.randn(1, 4, 16, 16), text[:1])
    ref_b = encode_reference(unet, torch.randn(1, 4, 16, 16), text[:1])
    assert set(ref_a) == set(adapter.attention_names) and ref_a[adapter.attention_names[0]].shape == (1, 256, 32)
    out_a = run(unet, x, text, cross_attention_kwargs={"ref_hidden_states": ref_a})
    out_b = run(unet, x, text, cross_attention_kwargs={"ref_hidden_states": ref_b})
    assert (out_a - out_b).abs().max() > 1e-4
    zero = {"ref_hidden_states": ref_a, "ref_scale": 0.0}
    torch.testing.assert_close(run(unet, x, text, cross_attention_kwargs=zero), run(unet, x, text))


def test_adapter_save_load_round_trip(unet, tmp_path):
    adapter = add_mv_adapter(unet, VIEWS, use_ref=True, cond_downscale_factor=1)
    perturb_out_layers(adapter)
    x, text = inputs()
    out = run(unet, x, text)
    adapter.save_pretrained(tmp_path)
    remove_mv_adapter(unet)
    loaded = MVAdapter.from_pretrained(tmp_path)
    add_mv_adapter(unet, VIEWS, adapter=loaded)
    torch.testing.assert_close(run(unet, x, text), out)


# --------------------------------------------------------------------------- condition and noise shift

def test_condition_encoder_features_fit_the_unet(unet):
    adapter = add_mv_adapter(unet, VIEWS, cond_in_channels=12, cond_downscale_factor=2)
    maps = evenly_spaced_cameras(VIEWS, elevation=20).plucker(32)
    cond = camera_condition(maps, position=torch.rand(VIEWS, 3, 32, 32), normal=torch.rand(VIEWS, 3, 32, 32))
    assert cond.shape == (VIEWS, 12, 32, 32)
    features = adapter(cond)
    assert [tuple(f.shape) for f in features] == [(VIEWS, 32, 16, 16), (VIEWS, 64, 8, 8)]
    x, text = inputs()
    with_camera = run(unet, x, text, down_intrablock_additional_residuals=adapter(cond))
    assert with_camera.shape == x.shape and (with_camera - run(unet, x, text)).abs().max() > 1e-4


@pytest.mark.parametrize("mode", ["interpolated", "default"])
def test_noise_shift_lowers_snr_by_the_factor(mode):
    from diffusers import DDPMScheduler
    base = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    shifted = shift_noise_schedule(base, 8.0, mode)
    assert type(shifted) is DDPMScheduler
    abar, abar8 = base.alphas_cumprod.double(), shifted.alphas_cumprod.double()
    assert ((abar8 > 0) & (abar8 < 1)).all() and (abar8[1:] < abar8[:-1]).all()
    ratio = (abar8 / (1 - abar8)) / (abar / (1 - abar))
    weight = torch.linspace(0, 1, 1000, dtype=torch.float64) if mode == "interpolated" else torch.ones(1000)
    torch.testing.assert_close(ratio, 8.0 ** -weight.double(), rtol=2e-3, atol=0)
    torch.testing.assert_close(shifted_alphas_cumprod(base.alphas_cumprod, 1.0), base.alphas_cumprod)


# --------------------------------------------------------------------------- official key names

def official_state_dict(unet, use_ref=False, seed=0):
    """Built the way the reference saves: UNet keys "...attn1.processor.to_*_mv/ref..." + T2IAdapter's own."""
    from diffusers import T2IAdapter
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in unet.attn_processors:
        if not key.endswith("attn1.processor"):
            continue
        dim = unet.get_submodule(key[: -len(".processor")]).to_q.in_features
        for kind in ["mv"] + (["ref"] if use_ref else []):
            for proj in ("to_q", "to_k", "to_v"):
                sd[f"{key}.{proj}_{kind}.weight"] = torch.randn(dim, dim, generator=g)
            sd[f"{key}.to_out_{kind}.0.weight"] = torch.randn(dim, dim, generator=g)
            sd[f"{key}.to_out_{kind}.0.bias"] = torch.randn(dim, generator=g)
    encoder = T2IAdapter(in_channels=6, channels=[32, 64], num_res_blocks=1, downscale_factor=8)
    sd.update({k: torch.randn(v.shape, generator=g) for k, v in encoder.state_dict().items()})
    return sd


def test_official_key_mapping_round_trips(unet):
    official = official_state_dict(unet, use_ref=True)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_mv.weight" in official
    assert "adapter.conv_in.weight" in official
    ours = official_to_ours(official)
    assert "attn.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out_ref.0.bias" in ours
    assert "cond_encoder.adapter.conv_in.weight" in ours
    assert ours_to_official(ours) == official
    adapter = MVAdapter.for_unet(unet, VIEWS, use_ref=True)
    load_official_state_dict(adapter, official)
    exported = ours_to_official(adapter.state_dict())
    assert exported.keys() == official.keys() and all(torch.equal(exported[k], official[k]) for k in official)


def test_official_key_errors_are_one_line(unet):
    official = official_state_dict(unet)  # 7 self-attentions x 5 "_ref" tensors are what an i2mv adapter adds
    with pytest.raises(OfficialKeyError, match="lack 35 of our adapter's tensors") as e:
        load_official_state_dict(MVAdapter.for_unet(unet, VIEWS, use_ref=True), official)  # a t2mv file, i2mv adapter
    assert "\n" not in str(e.value)
    with pytest.raises(OfficialKeyError, match="35 tensors our adapter has no place for"):
        load_official_state_dict(MVAdapter.for_unet(unet, VIEWS), official_state_dict(unet, use_ref=True))
    with pytest.raises(OfficialKeyError, match="neither attention branches nor T2IAdapter"):
        official_to_ours({**official, "conv_in.weight": torch.zeros(1)})
    bad = dict(official)
    key = next(k for k in bad if k.endswith("to_q_mv.weight"))
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(OfficialKeyError, match="other shapes"):
        load_official_state_dict(MVAdapter.for_unet(unet, VIEWS), bad)


def test_load_official_file_installs_on_the_unet(unet, tmp_path):
    from safetensors.torch import save_file
    official = official_state_dict(unet, use_ref=True)
    save_file(official, str(tmp_path / "mvadapter_i2mv_sd21.safetensors"))
    x, text = inputs()
    base = run(unet, x, text)
    adapter = load_official(unet, tmp_path, "i2mv_sd21", num_views=VIEWS)
    key = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_k_mv.weight"
    torch.testing.assert_close(adapter.branches("down_blocks.1.attentions.0.transformer_blocks.0.attn1").to_k_mv.weight,
                               official[key])
    assert (run(unet, x, text) - base).abs().max() > 1e-4  # the loaded (non-zero) branches act
    with pytest.raises(ValueError, match="unknown variant"):
        load_official(unet, tmp_path, "t2mv_sd15")
