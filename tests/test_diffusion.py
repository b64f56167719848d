import pytest
import torch

from genstudio.diffusion import (
    DiffusionObjective,
    diffusion_loss,
    drop_learned_sigma,
    guided_prediction,
    make_scheduler,
    min_snr_weights,
    predicted_x0,
    sample,
)
from genstudio.dit import dit_from_name

SHAPE = (2, 3, 8, 8)


def toy_model(x, t, y=None, scale=0.1):
    """A cheap deterministic 'denoiser' whose output depends on x, t and the label."""
    out = scale * x + 1e-4 * t.float().reshape(-1, *[1] * (x.ndim - 1))
    if y is not None:
        out = out + 0.05 * y.float().reshape(-1, *[1] * (x.ndim - 1))
    return out


def half_mask(shape=SHAPE):
    mask = torch.zeros(shape)
    mask[..., :, 4:] = 1.0  # generate the right half, keep the left
    return mask


def randn(shape=SHAPE, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---- Loss ----

def test_min_snr_weights_clip_the_x0_weight_at_gamma():
    sched = make_scheduler("ddpm")
    t = torch.tensor([0, 200, 500, 999])
    abar = sched.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    eps = min_snr_weights(sched, t, 5.0)
    assert torch.allclose(eps * snr, snr.clamp(max=5.0), rtol=1e-5)      # epsilon MSE x SNR = x0 MSE
    assert eps[0] < 0.01 and eps[-1] == pytest.approx(1.0)                  # low noise down-weighted, high noise kept
    assert torch.allclose(min_snr_weights(sched, t, 5.0, "sample"), snr.clamp(max=5.0))
    assert torch.allclose(min_snr_weights(sched, t, 5.0, "v_prediction"), snr.clamp(max=5.0) / (snr + 1))
    with pytest.raises(ValueError):
        min_snr_weights(sched, t, 0.0)


def test_snr_floor_keeps_the_high_noise_steps_weighted():
    sched = make_scheduler("ddpm")
    t = torch.tensor([0, 200, 500, 999])
    abar = sched.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    v = min_snr_weights(sched, t, 5.0, "v_prediction", floor=1.0)
    assert torch.allclose(v * (snr + 1), snr.clamp(min=1.0, max=5.0), rtol=1e-5)   # x0 weight in [1, gamma]
    assert v[-1] == pytest.approx(1.0, abs=1e-3)                                     # Min-SNR alone: ~0 there
    assert min_snr_weights(sched, t, 5.0, "v_prediction")[-1] < 1e-3
    assert torch.equal(min_snr_weights(sched, t[:1], 5.0, floor=1.0), min_snr_weights(sched, t[:1], 5.0))
    with pytest.raises(ValueError, match="floor"):
        min_snr_weights(sched, t, 5.0, floor=6.0)


def test_snr_gamma_weights_each_sample_by_min_snr():
    sched = make_scheduler("ddpm")
    x0, noise, t = randn(), randn(seed=1), torch.tensor([5, 900])
    wrong = lambda x, t: noise + 1.0                                         # the same error at every timestep
    plain = diffusion_loss(wrong, x0, sched, timesteps=t, noise=noise)
    weighted = diffusion_loss(wrong, x0, sched, timesteps=t, noise=noise, snr_gamma=5.0)
    assert plain == pytest.approx(1.0)
    assert weighted == pytest.approx(float(min_snr_weights(sched, t, 5.0).mean()), rel=1e-5)
    assert weighted < 0.6 * plain                                           # the low-noise sample counts for ~0
    with pytest.raises(ValueError, match="mask"):
        diffusion_loss(wrong, x0, sched, mask=half_mask(), snr_gamma=5.0)


def test_predicted_x0_inverts_the_forward_process_for_each_target():
    sched = make_scheduler("ddpm")
    x0, noise, t = randn(), randn(seed=1), torch.tensor([10, 700])
    x_t = sched.add_noise(x0, noise, t)
    assert torch.allclose(predicted_x0(sched, x_t, t, noise), x0, atol=1e-4)
    assert torch.allclose(predicted_x0(sched, x_t, t, sched.get_velocity(x0, noise, t), "v_prediction"), x0, atol=1e-4)
    assert torch.equal(predicted_x0(sched, x_t, t, x0, "sample"), x0)


def test_self_conditioning_trains_on_the_models_own_estimate_for_half_the_batch():
    sched = make_scheduler("ddpm")
    x0, noise, t = randn((8, 3, 4, 4)), randn((8, 3, 4, 4), seed=1), torch.full((8,), 300)
    seen = []

    def model(x, t, x_self_cond):
        seen.append(x_self_cond.clone())
        return 0.5 * x
    diffusion_loss(model, x0, sched, timesteps=t, noise=noise, self_condition=True,
                   generator=torch.Generator().manual_seed(0))
    first, second = seen
    assert torch.equal(first, torch.zeros_like(x0))                          # the estimate comes from zeros
    estimate = predicted_x0(sched, sched.add_noise(x0, noise, t), t, 0.5 * sched.add_noise(x0, noise, t))
    fed = [bool(torch.allclose(s, e)) for s, e in zip(second, estimate)]
    zero = [bool((s == 0).all()) for s in second]
    assert all(f or z for f, z in zip(fed, zero)) and any(fed) and any(zero)
    with pytest.raises(ValueError, match="mask"):
        diffusion_loss(model, x0, sched, mask=half_mask((8, 3, 4, 4)), self_condition=True)


def test_self_conditioned_sampling_feeds_each_steps_guided_estimate_to_the_next():
    sched = make_scheduler("ddim")
    calls = []

    def model(x, t, x_self_cond, y=None):
        calls.append((x.clone(), t.clone(), x_self_cond.clone()))
        return 0.1 * x + 0.01 * x_self_cond + (0 if y is None else 0.05 * y.float().reshape(-1, 1, 1, 1))
    y = torch.tensor([1, 1])
    sample(model, SHAPE, sched, 3, generator=torch.Generator().manual_seed(0), guidance_scale=2.0,
           uncond_kwargs={"y": torch.zeros(2, dtype=torch.long)}, progress=False, self_condition=True, y=y)
    assert len(calls) == 3 and torch.equal(calls[0][2], torch.zeros(4, 3, 8, 8))  # cond + uncond in one batch
    x, t, sc = calls[0]
    out = model(x, t, sc, torch.cat([y, torch.zeros(2, dtype=torch.long)]))
    guided = out[2:] + 2.0 * (out[:2] - out[2:])
    expected = predicted_x0(sched, x[:2], t[:2], guided)
    assert torch.allclose(calls[1][2][:2], expected, atol=1e-5) and torch.equal(calls[1][2][:2], calls[1][2][2:])
    with pytest.raises(ValueError, match="scheduler"):
        sample(model, SHAPE, make_scheduler("euler"), 2, progress=False, self_condition=True)


def test_convert_prediction_between_epsilon_v_and_x0():
    from genstudio.diffusion import convert_prediction
    sched = make_scheduler("ddpm")
    x0, noise, t = randn(), randn(seed=1), torch.tensor([30, 700])
    x_t = sched.add_noise(x0, noise, t)
    v = sched.get_velocity(x0, noise, t)
    assert torch.allclose(convert_prediction(sched, x_t, t, noise, "epsilon", "v_prediction"), v, atol=1e-4)
    assert torch.allclose(convert_prediction(sched, x_t, t, v, "v_prediction", "epsilon"), noise, atol=1e-4)
    assert torch.allclose(convert_prediction(sched, x_t, t, v, "v_prediction", "sample"), x0, atol=1e-4)
    assert convert_prediction(sched, x_t, t, v, "v_prediction", "v_prediction") is v


def test_epsilon_and_v_losses_are_zero_for_the_exact_target():
    sched = make_scheduler("ddpm")
    x0, noise, t = randn(), randn(seed=1), torch.tensor([10, 900])
    assert diffusion_loss(lambda x, t: noise, x0, sched, "epsilon", timesteps=t, noise=noise) == 0
    v = sched.get_velocity(x0, noise, t)
    assert diffusion_loss(lambda x, t: v, x0, sched, "v_prediction", timesteps=t, noise=noise) == 0
    assert diffusion_loss(lambda x, t: noise, x0, sched, "v_prediction", timesteps=t, noise=noise) > 0
    # learn_sigma models output [eps | sigma]; only the first half is scored
    both = torch.cat([noise, torch.full_like(noise, 7.0)], dim=1)
    assert diffusion_loss(lambda x, t: both, x0, sched, timesteps=t, noise=noise) == 0


def test_losses_run_with_random_draws_and_objective():
    sched = make_scheduler("ddpm")
    g = torch.Generator().manual_seed(0)
    for kind in ("epsilon", "v_prediction"):
        loss = diffusion_loss(toy_model, randn(), sched, kind, generator=g)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    objective = DiffusionObjective(sched, "v_prediction")
    a = objective(toy_model, randn(), generator=torch.Generator().manual_seed(5), y=torch.tensor([1, 2]))
    b = objective(toy_model, randn(), generator=torch.Generator().manual_seed(5), y=torch.tensor([1, 2]))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="prediction_type"):
        diffusion_loss(toy_model, randn(), sched, "score")


def test_timestep_range_draws_only_the_experts_interval():
    sched = make_scheduler("ddpm")
    seen = []

    def model(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    diffusion_loss(model, torch.randn(512, 4), sched, generator=torch.Generator().manual_seed(0),
                   timestep_range=(500, 1000))
    assert seen[0].min() >= 500 and seen[0].max() < 1000 and seen[0].float().std() > 100
    for bad in ((500, 1001), (600, 600), (-1, 10)):
        with pytest.raises(ValueError, match="timestep_range"):
            diffusion_loss(model, torch.randn(2, 4), sched, timestep_range=bad)


def test_masked_loss_ignores_known_positions_and_shows_them_clean():
    sched = make_scheduler("ddpm")
    x0, noise, t, mask = randn(), randn(seed=1), torch.tensor([500, 999]), half_mask()
    seen = []
    base = randn(seed=2)

    def model(x, t):
        seen.append(x.clone())
        return base

    def model_changed_at_known(x, t):
        return torch.where(mask.bool(), base, base + 100.0)

    loss = diffusion_loss(model, x0, sched, mask=mask, timesteps=t, noise=noise)
    assert torch.equal(seen[0][..., :4], x0[..., :4])  # known half is clean
    assert not torch.equal(seen[0][..., 4:], x0[..., 4:])  # unknown half is noised
    same = diffusion_loss(model_changed_at_known, x0, sched, mask=mask, timesteps=t, noise=noise)
    assert torch.equal(loss, same)
    # normalised by the number of masked elements: the masked mean of the squared error
    expected = ((base - noise) ** 2)[..., 4:].mean()
    torch.testing.assert_close(loss, expected)
    # ... and a change at an unknown position does change it
    changed = diffusion_loss(lambda x, t: base + 100.0 * mask, x0, sched, mask=mask, timesteps=t, noise=noise)
    assert changed != loss


def test_masked_loss_accepts_broadcast_mask():
    sched = make_scheduler("ddpm")
    mask = half_mask((2, 1, 8, 8))  # one mask for all channels
    loss = diffusion_loss(toy_model, randn(), sched, mask=mask, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="broadcast"):
        diffusion_loss(toy_model, randn(), sched, mask=torch.ones(3, 8, 8, 8))


# ---- Guidance ----

def test_guided_prediction_formulas():
    c, u, n = randn(seed=1), randn(seed=2), randn(seed=3)
    assert guided_prediction(c, u, 1.0) is c
    assert torch.equal(guided_prediction(c, u, 4.0), u + 4.0 * (c - u))
    assert guided_prediction(c, None, 1.0, n, 0.0) is c
    assert torch.equal(guided_prediction(c, None, 1.0, n, 0.5), 1.5 * c - 0.5 * n)
    cfg = u + 3.0 * (c - u)
    assert torch.equal(guided_prediction(c, u, 3.0, n, 2.0), 3.0 * cfg - 2.0 * n)


def run(model=toy_model, name="ddim", steps=3, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return sample(model, SHAPE, make_scheduler(name), num_inference_steps=steps, generator=g, progress=False, **kw)


def test_cfg_scale_one_equals_conditional_only():
    y, null = torch.tensor([1, 2]), torch.tensor([9, 9])
    calls = []

    def model(x, t, y):
        calls.append(y)
        return toy_model(x, t, y)

    cond = run(model, y=y)
    assert torch.equal(run(model, y=y, guidance_scale=1.0, uncond_kwargs={"y": null}), cond)
    assert all(torch.equal(c, y) for c in calls)  # the unconditional branch is never evaluated
    assert not torch.equal(run(model, y=y, guidance_scale=4.0, uncond_kwargs={"y": null}), cond)


def test_cfg_batches_cond_and_uncond_in_one_call():
    y, null = torch.tensor([1, 2]), torch.tensor([9, 9])
    batch_sizes = []

    def model(x, t, y=None):
        batch_sizes.append(x.shape[0])
        return toy_model(x, t, y)

    batched = run(model, y=y, guidance_scale=3.0, uncond_kwargs={"y": null})
    assert batch_sizes == [4, 4, 4]
    batch_sizes.clear()
    # y=None cannot be concatenated with a tensor: two calls per step, same result
    two_calls = run(lambda x, t, y=None: model(x, t, null if y is None else y), y=y, guidance_scale=3.0,
                    uncond_kwargs={"y": None})
    assert batch_sizes == [2, 2] * 3
    torch.testing.assert_close(two_calls, batched)


def spy_on_step(scheduler, record):
    step = scheduler.step
    scheduler.step = lambda out, t, x, **kw: (record.append(out.clone()), step(out, t, x, **kw))[1]
    return scheduler


def test_negative_model_guidance():
    aux_calls = []

    def aux(x, t, **kw):
        aux_calls.append(1)
        return toy_model(x, t, scale=0.3)

    main_only = run()
    assert torch.equal(run(negative_model_fn=aux, negative_guidance=0.0), main_only)
    assert not aux_calls

    inputs, outputs = [], []

    def main(x, t):
        inputs.append((x.clone(), t.clone()))
        return toy_model(x, t)

    sched = spy_on_step(make_scheduler("ddim"), outputs)
    result = sample(main, SHAPE, sched, num_inference_steps=3, negative_model_fn=aux, negative_guidance=0.7,
                    generator=torch.Generator().manual_seed(0), progress=False)
    assert len(outputs) == 3 and not torch.equal(result, main_only)
    for (x, t), used in zip(inputs, outputs):
        assert torch.equal(used, 1.7 * toy_model(x, t) - 0.7 * toy_model(x, t, scale=0.3))


# ---- Sampling ----

@pytest.mark.parametrize("name", ["ddim", "dpm", "euler", "ddpm"])
def test_schedulers_sample_right_shape(name):
    out = run(name=name)
    assert out.shape == SHAPE and torch.isfinite(out).all()


def test_sampling_is_deterministic_under_a_seed():
    assert torch.equal(run(name="dpm", seed=4), run(name="dpm", seed=4))
    assert torch.equal(run(name="ddpm", seed=4), run(name="ddpm", seed=4))  # stochastic steps use the generator
    assert not torch.equal(run(seed=4), run(seed=5))


@pytest.mark.parametrize("name", ["ddim", "dpm", "euler"])
def test_masked_sampling_keeps_known_values_bit_identical(name):
    known, mask = randn(seed=7) * 3, half_mask()
    seen = []

    def model(x, t):
        seen.append(x.clone())
        return toy_model(x, t)

    out = run(model, name=name, known=known, mask=mask)
    assert torch.equal(out[..., :4], known[..., :4])
    assert not torch.equal(out[..., 4:], known[..., 4:])
    assert all(torch.equal(x[..., :4], known[..., :4]) for x in seen)  # the model sees them clean


@pytest.mark.parametrize("name", ["ddim", "dpm", "euler"])
def test_sdedit_starts_from_the_init_at_the_strengths_noise_level(name):
    init = randn(seed=3)
    sched = make_scheduler(name)
    seen = []

    def oracle(x, t):  # the exact noise of a model that knows x0 = init (epsilon prediction; every scheduler
        seen.append((int(t[0]), x.clone()))  # feeds the variance-preserving x_t, Euler after scale_model_input)
        abar = sched.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1)
        return (x - abar.sqrt() * init) / (1 - abar).sqrt()

    out = sample(oracle, SHAPE, sched, 10, generator=torch.Generator().manual_seed(0), progress=False,
                 init=init, strength=0.3)
    sched.set_timesteps(10)
    assert [t for t, _ in seen] == [int(t) for t in sched.timesteps[7:]]    # only the last 3 of 10 steps run
    abar = sched.alphas_cumprod[seen[0][0]]
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen[0][1], abar.sqrt() * init + (1 - abar).sqrt() * noise, atol=1e-4)  # init, noised
    assert torch.allclose(out, init, atol=1e-3)                             # the oracle leads back to the init
    assert not torch.allclose(run(), run(init=init, strength=0.3))


def test_sample_argument_errors():
    with pytest.raises(ValueError, match="strength"):
        run(init=randn(), strength=0.0)
    with pytest.raises(ValueError, match="init has shape"):
        run(init=torch.zeros(1, 3, 8, 8), strength=0.5)
    with pytest.raises(ValueError, match="known and mask"):
        run(known=randn())
    with pytest.raises(ValueError, match="uncond_kwargs"):
        run(guidance_scale=2.0)
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("heun2")
    with pytest.raises(ValueError, match="learn_sigma"):
        drop_learned_sigma(torch.zeros(2, 5, 8, 8), torch.zeros(SHAPE))


def test_tiny_dit_trains_and_samples_with_cfg():
    torch.manual_seed(0)
    model = dit_from_name("DiT-tiny", input_size=8, in_channels=3, num_classes=4, num_frames=2)
    x0 = torch.randn(2, 2, 3, 8, 8)
    loss = DiffusionObjective(make_scheduler("ddpm"))(model, x0, y=torch.tensor([0, 1]),
                                                       generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.final_layer.linear.weight.grad.abs().sum() > 0
    model.eval()
    null = torch.full((2,), model.null_class)
    out = sample(model, x0.shape, make_scheduler("dpm"), num_inference_steps=2, progress=False,
                 generator=torch.Generator().manual_seed(0), y=torch.tensor([0, 1]),
                 guidance_scale=2.0, uncond_kwargs={"y": null})
    assert out.shape == x0.shape and torch.isfinite(out).all()
