"""G3PT: the block-causal cross-scale mask, logits per scale, causality, sampling (counts, range, seed),
CFG, the interpolation ablation, save/load, one recipe step, and decoding samples through a tiny VAT.
Tiny models only, offline."""
import numpy as np
import pytest
import torch

from pipelines.shape.g3pt import G3PT, ShapeCondition, block_causal_mask, g3pt_config, vat_settings
from pipelines.shape.vat import VAT_CONFIGS, VATTokenizer, mesh_from_occupancy

SCALES = [1, 2, 4, 8]
CODES = 32


def tiny_vat() -> VATTokenizer:
    torch.manual_seed(0)
    return VATTokenizer(**VAT_CONFIGS["tiny"]).eval()


def tiny_g3pt(**overrides) -> G3PT:
    torch.manual_seed(0)
    config = g3pt_config("tiny", codebook_size=CODES, scales=SCALES, num_classes=3, context_dim=6)
    return G3PT(**{**config, **overrides}).eval()


def random_indices(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CODES, (batch, s), generator=g) for s in SCALES]


def condition(batch: int = 2) -> ShapeCondition:
    g = torch.Generator().manual_seed(1)
    return ShapeCondition(labels=torch.arange(batch) % 3, text_states=torch.randn(batch, 4, 6, generator=g),
                          text_mask=torch.tensor([[1, 1, 1, 0]] * batch))


def test_block_causal_mask_lets_a_scale_see_only_earlier_scales_and_its_own_queries():
    scales = [1, 2, 4]
    mask = block_causal_mask(scales, num_token_scales=2)          # tokens of scales 0, 1; queries of 0, 1, 2
    assert mask.shape == (1 + 2 + 1 + 2 + 4,) * 2
    t0, t1 = slice(0, 1), slice(1, 3)
    q0, q1, q2 = slice(3, 4), slice(4, 6), slice(6, 10)
    assert mask[t0, t0].all() and not mask[t0, t1].any()                      # tokens: block-causal
    assert mask[t1, t0].all() and mask[t1, t1].all()
    assert not mask[:3, 3:].any()                                             # no token sees a query
    assert mask[q0, q0].all() and not mask[q0, :3].any()                      # scale 0: its queries alone
    assert mask[q1, t0].all() and not mask[q1, t1].any() and mask[q1, q1].all()
    assert mask[q2, t0].all() and mask[q2, t1].all() and mask[q2, q2].all()
    assert not mask[q1, q0].any() and not mask[q2, q1].any() and not mask[q1, q2].any()
    var = block_causal_mask(scales, 2, cross_scale=False)                     # the ablation: VAR's blocks
    levels = torch.tensor([0, 1, 1, 2, 2, 2, 2])
    assert torch.equal(var, levels[None, :] <= levels[:, None])


def test_logits_per_scale_and_causality():
    model = tiny_g3pt()
    indices, cond = random_indices(), condition()
    logits = model(indices, cond)
    assert [tuple(x.shape) for x in logits] == [(2, s, CODES) for s in SCALES]
    assert [len(model(indices[:k], cond, batch_size=2)) for k in range(4)] == [1, 2, 3, 4]
    # changing scale 2's tokens leaves the logits of scales 0..2 alone and changes scale 3's
    changed = [i.clone() for i in indices]
    changed[2] = (changed[2] + 1) % CODES
    again = model(changed, cond)
    for k in range(3):
        assert torch.allclose(logits[k], again[k], atol=1e-6), k
    assert not torch.allclose(logits[3], again[3])
    # the prefix path (generation) gives the same logits as teacher forcing
    assert torch.allclose(model(indices[:2], cond)[-1], logits[2], atol=1e-5)
    # the last scale's tokens are targets only
    changed[3] = (changed[3] + 1) % CODES
    assert torch.allclose(model(changed, cond)[3], again[3], atol=1e-6)
    with pytest.raises(ValueError, match="scale 1 holds 2 tokens"):
        model([indices[0], indices[2]], cond)


def test_condition_matters_and_cfg_at_guidance_one_is_the_conditional_path():
    model = tiny_g3pt()
    indices, cond = random_indices(), condition()
    conditional = model(indices[:2], cond)[-1]
    null = model(indices[:2], cond, drop_condition=torch.ones(2, dtype=torch.bool))[-1]
    assert not torch.allclose(conditional, null)
    assert torch.allclose(model.guided_logits(indices[:2], cond, 1.0), conditional, atol=1e-6)
    # the doubled-batch CFG path at g = 1 reduces to the conditional logits too
    g2 = model.guided_logits(indices[:2], cond, 2.0)
    assert torch.allclose(g2, null + 2.0 * (conditional - null), atol=1e-5)
    assert torch.allclose(model.guided_logits(indices[:2], cond, 1.0 + 1e-9), conditional, atol=1e-5)
    # dropping the text alone masks it: a null-condition row equals a row with neither class nor text
    bare = model(indices[:2], ShapeCondition(labels=torch.full((2,), 3)))[-1]
    assert torch.allclose(bare, null, atol=1e-6)
    with pytest.raises(ValueError, match="class labels"):
        model(indices[:1], ShapeCondition(labels=torch.tensor([0, 7])))


def test_generate_counts_range_and_seed():
    model = tiny_g3pt()
    cond = condition(3)

    def sample(seed, **kw):
        return model.generate(cond, generator=torch.Generator().manual_seed(seed), **kw)

    a = sample(0, guidance_scale=2.0, temperature=1.0, top_k=8)
    assert [tuple(x.shape) for x in a] == [(3, s) for s in SCALES]
    assert all(x.dtype == torch.long and x.min() >= 0 and x.max() < CODES for x in a)
    b = sample(0, guidance_scale=2.0, temperature=1.0, top_k=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = sample(1, guidance_scale=2.0, temperature=1.0, top_k=8)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    greedy = model.generate(cond, temperature=0)
    assert all(torch.equal(x, y) for x, y in zip(greedy, model.generate(cond, temperature=0)))
    top1 = sample(5, top_k=1)
    assert all(torch.equal(x, y) for x, y in zip(top1, greedy))
    assert [tuple(x.shape) for x in model.generate(num_samples=2)] == [(2, s) for s in SCALES]   # unconditional
    with pytest.raises(ValueError, match="num_samples"):
        model.generate(cond, num_samples=2)


def test_interpolation_ablation_runs_and_is_causal():
    model = tiny_g3pt(cross_scale=False)
    assert model.queries.shape == (1, 32)                                    # only the start block is learned
    indices, cond = random_indices(), condition()
    logits = model(indices, cond)
    assert [tuple(x.shape) for x in logits] == [(2, s, CODES) for s in SCALES]
    changed = [i.clone() for i in indices]
    changed[1] = (changed[1] + 1) % CODES
    again = model(changed, cond)
    assert torch.allclose(logits[0], again[0], atol=1e-6) and torch.allclose(logits[1], again[1], atol=1e-6)
    assert not torch.allclose(logits[2], again[2])
    out = model.generate(cond, guidance_scale=1.5, generator=torch.Generator().manual_seed(0))
    assert [tuple(x.shape) for x in out] == [(2, s) for s in SCALES]


def test_save_and_load_give_identical_outputs(tmp_path):
    model = tiny_g3pt(class_names=["a", "b", "c"])
    model.save_pretrained(tmp_path / "g3pt")
    loaded = G3PT.from_pretrained(tmp_path / "g3pt").eval()
    assert loaded.scales == SCALES and loaded.config.class_names == ["a", "b", "c"]
    indices, cond = random_indices(), condition()
    assert all(torch.equal(x, y) for x, y in zip(model(indices, cond), loaded(indices, cond)))
    gen = [model.generate(cond, generator=torch.Generator().manual_seed(3)) for model in (model, loaded)]
    assert all(torch.equal(x, y) for x, y in zip(*gen))


def test_generated_indices_decode_through_the_vat():
    vat = tiny_vat()
    model = G3PT(**g3pt_config("tiny", **vat_settings(vat), num_classes=2)).eval()
    assert model.scales == vat.scales
    indices = model.generate(ShapeCondition(labels=torch.tensor([0, 1])), guidance_scale=3.0,
                             generator=torch.Generator().manual_seed(0))
    triplane = vat.decode(indices)
    grid = torch.sigmoid(vat.occupancy_grid(triplane, resolution=10))
    assert grid.shape == (2, 10, 10, 10) and torch.isfinite(grid).all()
    for g in grid:
        # an untrained VAT decodes a near-constant occupancy (no 0.5 crossing): mesh its median level set
        level = 0.5 if g.max() > 0.5 > g.min() else float(g.median())
        mesh = mesh_from_occupancy(g, level=level)
        assert len(mesh.faces) > 0 and np.isfinite(mesh.vertices).all()
        assert (np.abs(mesh.vertices) <= 1 + 2 / 9 + 1e-4).all()                # the grid + its closing pad


def test_one_recipe_step_gives_a_finite_loss(tmp_path):
    from genstudio.data import prepare
    from genstudio.train import train
    from pipelines.shape.g3pt_train import g3pt_recipe
    prepare("shapes", force=True, quiet=True, sources="primitives", primitives=7, points=96, near=64, uniform=64)
    tiny_vat().save_pretrained(tmp_path / "vat")
    cfg = {"vat": str(tmp_path / "vat"), "preset": "tiny", "condition": "class+text", "steps": 1, "batch_size": 2,
           "num_points": 48, "eval_items": 4, "output_dir": str(tmp_path / "run"), "progress": False,
           "mixed_precision": "no"}
    r = g3pt_recipe(cfg)
    assert r.model.config.context_dim == 384 and r.model.config.num_classes == 8
    from pipelines.shape.data import load_items
    assert len(r.dataset) == 4 * len(load_items("train"))                       # encode_draws=4 point draws
    assert len(r.extra["val_set"]) == len(load_items("val") or load_items("train")[:4])   # val: one draw
    assert len(list((tmp_path / "run").glob("vat-tokens-*.npz"))) >= 1           # encoded once, cached
    batch = {k: torch.stack([r.dataset[i][k] for i in range(2)]) for k in ("indices", "label")}
    assert batch["indices"].shape == (2, sum(VAT_CONFIGS["tiny"]["num_tokens"] >> k for k in range(4)))
    loss, logs = r.loss_fn(r.model, batch)
    assert torch.isfinite(loss) and loss.requires_grad and 0 <= logs["accuracy"] <= 1
    summary = train(r)
    assert summary["steps"] == 1 and np.isfinite(summary["val_loss"]) and 0 <= summary["val_accuracy"] <= 1
    assert G3PT.from_pretrained(summary["final"]).scales == [1, 2, 4, 8]
    cached = sorted((tmp_path / "run").glob("vat-tokens-*.npz"))
    r2 = g3pt_recipe({**cfg, "condition": "class", "output_dir": str(tmp_path / "run")})   # reads the cache
    assert sorted((tmp_path / "run").glob("vat-tokens-*.npz")) == cached and r2.model.config.context_dim == 0
    with pytest.raises(ValueError, match="unknown g3pt option"):
        g3pt_recipe({"vat": str(tmp_path / "vat"), "colour": 1})
    with pytest.raises(ValueError, match="trained VAT"):
        g3pt_recipe({"preset": "tiny", "output_dir": str(tmp_path / "other")})


def test_a_few_steps_fit_the_tokens_of_two_classes():
    """Gradients reach the queries and the condition: teacher-forced cross-entropy falls fast on 2 shapes."""
    model = tiny_g3pt(cond_dropout=0.0).train()
    indices = random_indices(batch=2, seed=4)
    targets = torch.cat(indices, 1)
    cond = ShapeCondition(labels=torch.tensor([0, 1]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        logits = torch.cat(model(indices, cond), 1)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CODES), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert model.queries.grad is not None and model.queries.grad.abs().sum() > 0
    assert losses[-1] < 0.5 * losses[0]
    # the class alone tells the two first-scale tokens apart (scale 0 sees no tokens)
    first = model.eval().generate(cond, temperature=0)[0]
    assert torch.equal(first, indices[0])
