"""SVGFusion (text -> SVG): the SVG matrix, the VP-VAE, the VS-DiT, the pipeline, the CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import run_genstudio
from genstudio.formats import svg_matrix as sm
from genstudio.formats.svg import SVGError, normalize_svg, rasterize_svg

FIXTURE = Path(__file__).parent / "fixtures" / "npm_icons"
SQUARE = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256" width="256" height="256">'
          '<path d="M10 10L200 10L200 200Z" fill="#ff0000"/>'
          '<path d="M20 30Q40 50 60 70C1 2 3 4 5 6A10 20 30 1 0 100 100Z" fill="none" stroke="#00ff00" '
          'stroke-width="4.5" stroke-linecap="round" stroke-linejoin="bevel" opacity="0.5"/></svg>')


# ---------------------------------------------------------------- the matrix

def test_matrix_round_trip_is_exact_on_the_fixture_icons():
    files = sorted(FIXTURE.rglob("*.svg"))
    assert len(files) >= 10
    exact = 0
    for f in files:
        try:
            norm = normalize_svg(f.read_text(encoding="utf-8"))
        except SVGError:
            continue
        m = sm.svg_to_matrix(norm)
        assert m.shape[1] == sm.WIDTH and m.dtype == np.float32
        assert sm.matrix_to_svg(m) == norm, f.name
        exact += 1
    assert exact >= 10


def test_matrix_rows_hold_commands_paint_and_elements():
    m = sm.svg_to_matrix(SQUARE)
    assert sm.matrix_to_svg(m) == SQUARE
    assert [sm.COMMANDS[int(c)] for c in m[:, sm.CMD]] == list("MLLZ") + list("MQCAZ")
    assert m[:, sm.NEW].tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert m[0, sm.ELEM] == 1 and m[4, sm.ELEM] == 2                 # fill / stroke
    assert m[3, sm.END].tolist() == [10, 10]                         # Z ends at the subpath start
    assert m[2, sm.START].tolist() == [200, 10]                      # start = the pen before
    arc = m[7]
    assert arc[sm.C1].tolist() == [10, 20] and arc[sm.C2].tolist() == [30, 2]  # rx ry, rotation, 2*large+sweep
    assert m[4, sm.STROKE_WIDTH] == pytest.approx(4.5) and m[4, sm.OPACITY] == pytest.approx(0.5)


def test_matrix_refuses_what_it_cannot_hold():
    dashed = SQUARE.replace('opacity="0.5"', 'stroke-dasharray="4 2"')
    with pytest.raises(sm.UnsupportedSVG, match="dasharray"):
        sm.svg_to_matrix(dashed)
    with pytest.raises(sm.UnsupportedSVG, match="normalised"):
        sm.svg_to_matrix('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><circle r="3"/></svg>')


def test_noisy_matrices_always_give_a_parseable_svg():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.normal(0, 1, (12, sm.WIDTH)).astype(np.float32)
        m[:, sm.ELEM] = rng.integers(0, 4, 12)
        m[:, sm.CMD] = rng.normal(2.5, 3, 12)
        m[:, sm.COORDS] = rng.normal(128, 500, (12, 8))
        svg = sm.matrix_to_svg(m)
        try:
            normalize_svg(svg)
        except SVGError:
            pass  # nothing visible is allowed; anything else is not
        rasterize_svg(svg, 32)


# ---------------------------------------------------------------- data

def test_the_split_is_by_label_so_test_prompts_are_never_trained_on():
    from pipelines.text2svg.data import captions, label_of, text_split
    a = {"text": "rocket, outline icon: space, launch", "set": "tabler"}
    b = {"text": "Rocket, bold icon: travel", "set": "phosphor"}
    assert label_of(a) == label_of(b) == "rocket" and text_split(a) == text_split(b)
    assert captions(a) == ["rocket", "rocket, outline icon", "rocket, outline icon: space, launch"]
    splits = {text_split({"text": f"icon {k}, icon"}) for k in range(200)}
    assert splits == {"train", "val", "test"}


# ---------------------------------------------------------------- models

def _matrices(rows: int = 16) -> torch.Tensor:
    from pipelines.text2svg.data import pad
    m = sm.svg_to_matrix(SQUARE)
    shifted = m.copy()
    shifted[:, sm.COORDS] = np.where(shifted[:, sm.COORDS] != 0, shifted[:, sm.COORDS] + 20, 0)
    return torch.from_numpy(np.stack([pad(m, rows), pad(shifted, rows), pad(m[:4], rows), pad(m[4:], rows)]))


def test_row_codec_round_trip():
    from pipelines.text2svg.svgfusion import RowCodec
    x = _matrices()
    feats = RowCodec.encode(x)
    assert feats.shape == (4, 16, RowCodec.features) and feats.abs().max() <= 2
    assert torch.allclose(RowCodec.decode(feats), x, atol=1e-4)


def tiny_vae():
    from pipelines.text2svg.svgfusion import VPVAE
    torch.manual_seed(0)
    return VPVAE(max_rows=16, latent_dim=4, hidden_size=32, num_heads=2, encoder_layers=1, decoder_layers=1,
                 image_size=32, pixel_channels=8)


def test_vae_learns_and_saves(tmp_path):
    from pipelines.text2svg.data import render
    from pipelines.text2svg.svgfusion import VPVAE, vae_loss
    vae = tiny_vae()
    x = _matrices()
    images = torch.stack([render(m.numpy()[:int((m[:, 0] > 0).sum())], 32) for m in x])
    batch = {"matrix": x, "image": images}
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    first = None
    for _ in range(40):
        loss, logs = vae_loss(vae, batch)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(float(loss)) and float(loss) < 0.5 * first
    assert set(logs) >= {"ce", "mse", "kl", "cmd_acc"}
    vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    again = VPVAE.from_pretrained(tmp_path / "vae").eval()
    with torch.no_grad():
        a = vae.decode(vae.encode(x, images)[0])
        b = again.decode(again.encode(x, images)[0])
    assert torch.equal(a, b)


def _wake(module: torch.nn.Module, seed: int = 0) -> None:
    """DiT's zero-initialised gates make a fresh model ignore its input and text: give every weight noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def build_tiny_pipeline(folder: Path, raw: bool = False, self_condition: bool = False) -> Path:
    from genstudio.diffusion import make_scheduler
    from pipelines.text2svg.svgfusion import RowCodec, make_vsdit
    from pipelines.text2svg.train import write_model_index
    vae = None if raw else tiny_vae()
    channels = RowCodec.features if raw else vae.config.latent_dim
    dit = make_vsdit("tiny", channels, 16, self_condition=self_condition)
    _wake(dit)
    dit.save_pretrained(folder / "transformer")
    if vae is not None:
        vae.save_pretrained(folder / "vae")
    make_scheduler("ddim").save_pretrained(folder / "scheduler")
    write_model_index(folder, latent="raw" if raw else "vae", max_rows=16, text_encoder="minilm")
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("svgfusion") / "svgfusion-tiny")


def test_dit_save_load(tiny_folder, tmp_path):
    from genstudio.dit import DiT
    dit = DiT.from_pretrained(tiny_folder / "transformer").eval()
    x, t = torch.randn(2, dit.in_channels, 16, 1), torch.tensor([10, 500])
    ctx, mask = torch.randn(2, 5, 384), torch.ones(2, 5, dtype=torch.bool)
    dit.save_pretrained(tmp_path / "again")
    again = DiT.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert torch.equal(dit(x, t, context=ctx, context_mask=mask), again(x, t, context=ctx, context_mask=mask))
        # text matters, and a fully masked context is the unconditional (CFG null) input
        assert not torch.allclose(dit(x, t, context=ctx, context_mask=mask), dit(x, t))
        assert torch.allclose(dit(x, t, context=ctx, context_mask=~mask), dit(x, t), atol=1e-6)


def test_pipeline_seeds_guidance_and_outputs(tiny_folder, tmp_path):
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    pipe = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    kw = dict(num_samples=2, num_inference_steps=3, progress=False)
    a, b = pipe("a rocket", seed=1, **kw), pipe("a rocket", seed=1, **kw)
    assert a.svgs == b.svgs and len(a.svgs) == 2 and a.prompts == ["a rocket"] * 2
    assert a.metadata["seed"] == 1 and a.metadata["task"] == "text2svg" and a.metadata["latent"] == "vae"
    for s in a.svgs:
        assert s is None or normalize_svg(s) == s  # valid and already sanitised
    # guidance changes the sample (same noise)
    x1 = pipe.decode(_sample(pipe, 1.0))
    x3 = pipe.decode(_sample(pipe, 4.0))
    assert not np.allclose(x1, x3)
    if not a.failed:
        written = a.save(tmp_path / "out")
        assert written and all(p.stat().st_size > 0 for p in written)
    with pytest.raises(Exception, match="non-empty"):
        pipe("  ", **kw)
    with pytest.raises(Exception, match="guidance_scale"):
        pipe("x", guidance_scale=0.5, **kw)


def test_candidates_keep_the_best_the_dit_itself_rates(tiny_folder, monkeypatch):
    from genstudio.diffusion import denoising_errors
    from pipelines.text2svg.pipeline import RERANK_TIMESTEPS, SVGFusionPipeline
    pipe = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    kw = dict(num_inference_steps=3, progress=False, seed=2)
    plain = pipe("a rocket", num_samples=6, **kw)                    # six draws, in drawing order
    seen = []
    scorer = pipe.self_scores
    monkeypatch.setattr(pipe, "self_scores", lambda *a, **k: seen.extend(scorer(*a, **k)) or list(seen))
    best = pipe("a rocket", num_samples=2, candidates=3, **kw)      # the same six draws; the best two kept
    assert plain.scores is None and len(seen) == 6 and best.metadata["candidates"] == 3
    assert best.prompts == ["a rocket"] * 2 and set(best.svgs) <= set(plain.svgs)
    order = sorted(range(6), key=lambda j: (plain.svgs[j] is None, -seen[j]))
    assert best.svgs == [plain.svgs[j] for j in order[:2]] and best.scores == [seen[j] for j in order[:2]]
    monkeypatch.undo()
    # the score is the drop of the DiT's denoising error when it reads the prompt (seeded noises, shared by the batch)
    context, mask = pipe.encode_prompts(["a rocket"] * 2)
    t = pipe.transformer
    x = torch.randn(2, t.in_channels, 16, 1, generator=torch.Generator().manual_seed(0))
    errors = [denoising_errors(t, x, pipe.scheduler, RERANK_TIMESTEPS, generator=torch.Generator().manual_seed(0),
                               context=context, context_mask=m) for m in (mask, torch.zeros_like(mask))]
    assert pipe.self_scores(x, ["a rocket"] * 2) == pytest.approx((errors[1] - errors[0]).tolist(), rel=1e-4, abs=1e-7)
    assert errors[0][0] != errors[0][1]                              # two latents, two scores
    with pytest.raises(Exception, match="candidates"):
        pipe("a rocket", num_samples=1, candidates=99, **kw)


def test_init_svg_variations_start_from_its_latent(tiny_folder, monkeypatch):
    from genstudio.diffusion import sample
    from pipelines.text2svg import pipeline as module
    pipe = module.SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    x = pipe.encode([SQUARE])
    assert x.shape == (1, pipe.transformer.in_channels, 16, 1)
    matrix = torch.from_numpy(sm.svg_to_matrix(normalize_svg(SQUARE)))  # sanitised first
    from pipelines.text2svg.data import pad, render
    with torch.no_grad():
        mean, _ = pipe.vae.encode(torch.from_numpy(pad(matrix.numpy(), 16))[None],
                                  render(matrix.numpy(), pipe.vae.config.image_size)[None])
    assert torch.allclose(x.squeeze(-1).transpose(1, 2), mean * pipe.vae.config.scaling_factor, atol=1e-5)
    calls = []
    monkeypatch.setattr(module, "sample", lambda *a, **k: calls.append(k) or sample(*a, **k))
    kw = dict(num_samples=2, num_inference_steps=4, progress=False, seed=3)
    out = pipe(["a rocket", "a house"], init_svg=SQUARE, strength=0.5, **kw)
    assert len(out.svgs) == 4 and out.metadata["strength"] == 0.5
    init = calls[0]["init"]
    assert init.shape[0] == 4 and all(torch.allclose(i, x[0]) for i in init) and calls[0]["strength"] == 0.5
    again = pipe(["a rocket", "a house"], init_svg=SQUARE, strength=0.5, **kw)
    assert again.svgs == out.svgs and pipe(["a rocket", "a house"], **kw).metadata.get("strength") is None
    other = SQUARE.replace("#ff0000", "#0000ff")
    pipe(["a rocket", "a house"], init_svg=[SQUARE, other], strength=0.5, **kw)
    assert torch.allclose(calls[-1]["init"][0], x[0]) and not torch.allclose(calls[-1]["init"][2], x[0])
    busy = SQUARE.replace("</svg>", '<path d="M1 1' + "L9 9" * 20 + 'Z" fill="#000000"/></svg>')
    for bad, message in ((busy, "at most 16"), ("<svg><script>", "not a usable SVG"), ("", "usable")):
        with pytest.raises(Exception, match=message):
            pipe("a rocket", init_svg=bad, **kw)
    with pytest.raises(Exception, match="strength"):
        pipe("a rocket", init_svg=SQUARE, strength=0.0, **kw)
    with pytest.raises(Exception, match="one per prompt"):
        pipe(["a", "b", "c"], init_svg=[SQUARE, SQUARE], **kw)


def _with_second_dit(tiny_folder: Path, folder: Path, component: str, seed: int, **index) -> Path:
    """A copy of the tiny pipeline with another (woken) VS-DiT as `component` and `index` in model_index.json."""
    import shutil
    from genstudio.dit import DiT
    shutil.copytree(tiny_folder, folder)
    second = DiT.from_pretrained(folder / "transformer")
    _wake(second, seed=seed)
    second.save_pretrained(folder / component)
    old = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**old, **index}))
    return folder


def test_a_high_noise_expert_takes_the_steps_above_its_boundary(tiny_folder, tmp_path, monkeypatch):
    from genstudio.diffusion import convert_prediction
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    folder = _with_second_dit(tiny_folder, tmp_path / "experts", "transformer_high", 5, expert_boundary=500,
                              high_prediction_type="v_prediction")
    pipe = SVGFusionPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    plain = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    assert pipe.transformer_high is not None and plain.transformer_high is None and pipe.expert_boundary == 500
    low, high = pipe.transformer, pipe.transformer_high
    x, t = torch.randn(2, low.in_channels, 16, 1), torch.tensor([700, 100])
    with torch.no_grad():
        out = pipe.denoiser()(x, t)
        assert torch.allclose(out[1:], low(x, t)[1:], atol=1e-6)                    # below: the first DiT as is
        assert torch.allclose(out[:1], convert_prediction(pipe.scheduler, x, t, high(x, t), "v_prediction",
                                                          "epsilon")[:1], atol=1e-5)  # above: the expert, as epsilon
    seen = []
    forward = high.forward
    monkeypatch.setattr(high, "forward", lambda x, t, **kw: (seen.append(int(t[0])), forward(x, t, **kw))[1])
    pipe("a rocket", num_samples=1, num_inference_steps=4, seed=0, progress=False)
    steps = pipe._scheduler(None)
    steps.set_timesteps(4)
    assert seen == [int(v) for v in steps.timesteps if v >= 500] and len(seen) == 2  # CFG: cond + uncond in one call


def test_autoguidance_guides_away_from_the_weaker_model(tiny_folder, tmp_path, monkeypatch):
    from genstudio.render import InputError
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    folder = _with_second_dit(tiny_folder, tmp_path / "guided", "transformer_guide", 7, autoguidance=1.5,
                              guide_input_scale=2.0)
    pipe = SVGFusionPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    plain = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    assert pipe.autoguidance == 1.5 and plain.autoguidance == 0.0 and plain.transformer_guide is None
    kw = dict(num_samples=2, num_inference_steps=3, seed=0, progress=False)
    off, base = pipe("a rocket", autoguidance=0, **kw), plain("a rocket", **kw)
    assert off.svgs == base.svgs and off.metadata["autoguidance"] == 0.0  # w = 0: the plain model, bit for bit
    seen, main = [], []
    g_forward, m_forward = pipe.transformer_guide.forward, pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer_guide, "forward",
                        lambda x, t, **k: (seen.append((x.clone(), k["context_mask"].any())), g_forward(x, t, **k))[1])
    monkeypatch.setattr(pipe.transformer, "forward", lambda x, t, **k: (main.append(x.clone()), m_forward(x, t, **k))[1])
    on = pipe("a rocket", **kw)
    assert on.metadata["autoguidance"] == 1.5 and len(seen) == 3  # one guide call a step, with the prompt
    assert all(has_prompt for _, has_prompt in seen)
    assert torch.allclose(seen[0][0], 2.0 * main[0][:2])  # the guide reads the latent in its own scale
    latents = []
    monkeypatch.setattr(pipe, "decode", lambda x: (latents.append(x), SVGFusionPipeline.decode(pipe, x))[1])
    pipe("a rocket", autoguidance=0, **kw), pipe("a rocket", **kw)
    assert not torch.allclose(latents[0], latents[1])  # guided sampling moves the samples
    for bad in (-1.0, 11.0):
        with pytest.raises(InputError, match="autoguidance must be"):
            pipe("a rocket", autoguidance=bad, **kw)
    with pytest.raises(InputError, match="has none"):
        plain("a rocket", autoguidance=1.0, **kw)


def test_export_adds_a_second_run_as_the_high_noise_expert(tiny_folder, tmp_path):
    from genstudio.dit import DiT
    from genstudio.export import export_run
    from pipelines.text2svg.pipeline import SVGFusionPipeline

    def fake_run(name, seed, prediction_type, scale=0.8):
        run = tmp_path / name
        dit = DiT.from_pretrained(tiny_folder / "transformer")
        _wake(dit, seed=seed)
        dit.save_pretrained(run / "final")
        (run / "train_config.json").write_text(json.dumps({"recipe": "svgfusion-dit",
                                                           "options": {"prediction_type": prediction_type}}))
        (run / "latent_stats.json").write_text(json.dumps({"vae": str(tiny_folder), "scaling_factor": scale,
                                                           "max_rows": 16}))
        return run

    low, high = fake_run("low", 1, "epsilon"), fake_run("high", 2, "v_prediction")
    out = export_run(low, tmp_path / "experts", dtype="fp32", high=str(high), expert_boundary=600)
    pipe = SVGFusionPipeline.from_pretrained(out, device="cpu", precision="fp32")
    assert pipe.expert_boundary == 600 and pipe.high_prediction_type == "v_prediction"
    assert pipe.scheduler.config.prediction_type == "epsilon" and pipe.vae.config.scaling_factor == 0.8
    x, t = torch.randn(2, pipe.transformer.in_channels, 16, 1), torch.tensor([700, 100])
    with torch.no_grad():
        assert torch.equal(pipe.transformer_high(x, t), DiT.from_pretrained(high / "final").eval()(x, t))
        assert torch.equal(pipe.transformer(x, t), DiT.from_pretrained(low / "final").eval()(x, t))
    assert SVGFusionPipeline.from_pretrained(export_run(low, tmp_path / "plain", dtype="fp32"),
                                             device="cpu").transformer_high is None
    other = fake_run("other", 3, "epsilon", scale=0.5)
    with pytest.raises(ValueError, match="other latents"):
        export_run(low, tmp_path / "bad", dtype="fp32", high=str(other))
    with pytest.raises(ValueError, match="expert_boundary"):
        export_run(low, tmp_path / "bad", dtype="fp32", high=str(high), expert_boundary=1000)
    # a model soup: each expert the weight average of two runs (same latents, architecture, prediction type)
    low2, high2 = fake_run("low2", 4, "epsilon"), fake_run("high2", 5, "v_prediction")
    soup = SVGFusionPipeline.from_pretrained(
        export_run(low, tmp_path / "soup", dtype="fp32", average=str(low2), high=str(high), high_average=str(high2)),
        device="cpu", precision="fp32")
    for model, a, b in ((soup.transformer, low, low2), (soup.transformer_high, high, high2)):
        wa, wb = (DiT.from_pretrained(r / "final").state_dict() for r in (a, b))
        assert all(torch.allclose(w, (wa[k] + wb[k]) / 2) for k, w in model.state_dict().items())
        assert not torch.equal(wa["final_layer.linear.weight"], wb["final_layer.linear.weight"])
    with pytest.raises(ValueError, match="prediction type"):
        export_run(low, tmp_path / "bad", dtype="fp32", average=str(high))
    with pytest.raises(ValueError, match="other latents"):
        export_run(low, tmp_path / "bad", dtype="fp32", average=str(other))
    # autoguidance: a weaker checkpoint on the same VP-VAE, copied as transformer_guide/
    guided = SVGFusionPipeline.from_pretrained(export_run(low, tmp_path / "guided", dtype="fp32", guide=str(tiny_folder),
                                                          autoguidance="1.5"), device="cpu", precision="fp32")
    original = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    assert guided.autoguidance == 1.5
    assert guided.guide_input_scale == pytest.approx(original.vae.config.scaling_factor / 0.8)
    with torch.no_grad():
        assert torch.equal(guided.transformer_guide(x, t), original.transformer(x, t))
    import shutil
    from pipelines.text2svg.svgfusion import VPVAE
    shutil.copytree(tiny_folder, tmp_path / "other-vae")
    vae = VPVAE.from_pretrained(tiny_folder / "vae")
    _wake(vae, seed=9)
    vae.save_pretrained(tmp_path / "other-vae" / "vae")
    for options, message in (({"guide": str(tmp_path / "nothing")}, "not an SVGFusion checkpoint"),
                             ({"guide": str(tmp_path / "other-vae")}, "another VP-VAE"),
                             ({"guide": str(tmp_path / "guided"), "autoguidance": "0"}, "autoguidance"),
                             ({"guide": str(tmp_path / "experts")}, None)):  # the same VP-VAE: accepted
        if message is None:
            export_run(low, tmp_path / "ok", dtype="fp32", **options)
            continue
        with pytest.raises(ValueError, match=message):
            export_run(low, tmp_path / "bad", dtype="fp32", **options)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="high_average needs high"):
        export_run(low, tmp_path / "bad", dtype="fp32", high_average=str(high2))
    assert not (tmp_path / "bad").exists()


def _sample(pipe, guidance: float) -> torch.Tensor:
    from genstudio.diffusion import sample
    context, mask = pipe.encode_prompts(["a rocket"])
    t = pipe.transformer
    cfg = dict(guidance_scale=guidance, uncond_kwargs={"context_mask": torch.zeros_like(mask)}) if guidance != 1 else {}
    return sample(t, (1, t.in_channels, 16, 1), pipe._scheduler(None), 3, generator=torch.Generator().manual_seed(0),
                  progress=False, context=context, context_mask=mask, **cfg)


def test_self_conditioned_pipeline_feeds_its_estimates(tmp_path, monkeypatch):
    from pipelines.text2svg import pipeline as module
    folder = build_tiny_pipeline(tmp_path / "sc", self_condition=True)
    pipe = module.SVGFusionPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    seen = []
    forward = pipe.transformer.forward
    monkeypatch.setattr(pipe.transformer, "forward", lambda x, t, **kw: (seen.append(kw["x_self_cond"]), forward(x, t, **kw))[1])
    a = pipe("a rocket", num_samples=2, num_inference_steps=3, seed=1, progress=False)
    b = pipe("a rocket", num_samples=2, num_inference_steps=3, seed=1, progress=False)
    assert a.svgs == b.svgs and len(seen) == 6
    assert not seen[0].any() and seen[1].abs().sum() > 0                     # zeros first, then the estimate


def test_raw_ablation_pipeline_loads_and_runs(tmp_path):
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    folder = build_tiny_pipeline(tmp_path / "raw", raw=True)
    pipe = SVGFusionPipeline.from_pretrained(folder, device="cpu", precision="fp32")
    assert pipe.vae is None
    out = pipe(["a", "b"], num_samples=1, num_inference_steps=2, seed=0, progress=False)
    assert len(out.svgs) == 2 and out.metadata["latent"] == "raw"


def test_other_checkpoints_are_refused(tiny_folder):
    from genstudio.pipeline import CheckpointMismatch, checkpoint_classes
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    assert checkpoint_classes(tiny_folder) == ["SVGFusionPipeline"]
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "SVGFusionPipeline"
    from genstudio.hub import checkpoints_dir
    with pytest.raises(CheckpointMismatch, match="genstudio generate"):
        SVGFusionPipeline.from_pretrained(checkpoints_dir() / "dit-glyphs-S", device="cpu")


# ---------------------------------------------------------------- CLI

def test_cli_one_prompt_a_file_and_a_prompts_file(tiny_folder, tmp_path):
    r = run_genstudio("text2svg", "a rocket", "-m", tiny_folder, "-n", "2", "-s", "2", "-o", tmp_path / "out")
    assert r.returncode in (0, 1), r.stderr
    if r.returncode == 0:
        assert "wrote" in r.stdout + r.stderr and list((tmp_path / "out").glob("a-rocket_*.svg"))
    else:  # an untrained model may draw nothing: a one-line error, nothing written
        assert "Traceback" not in r.stderr + r.stdout and not list((tmp_path / "out").glob("*.svg"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# icons\na house\n\nstar\n")
    r = run_genstudio("text2svg", "--prompts", prompts, "-m", tiny_folder, "-n", "1", "-s", "2", "-c", "2",
                      "-o", tmp_path / "many")
    assert "Traceback" not in r.stderr + r.stdout
    assert "a-house" in " ".join(p.name for p in (tmp_path / "many").iterdir()) or r.returncode == 1
    assert len(list((tmp_path / "many").glob("*/*.svg"))) <= 2      # --candidates keeps -n per prompt
    (tmp_path / "init.svg").write_text(SQUARE)
    r = run_genstudio("text2svg", "a rocket", "--init", tmp_path / "init.svg", "--strength", "0.5", "-m", tiny_folder,
                      "-n", "1", "-s", "4", "-o", tmp_path / "var.svg")
    assert "Traceback" not in r.stderr + r.stdout and (r.returncode == 0) == (tmp_path / "var.svg").exists()


def test_cli_bad_input_is_one_line_and_nonzero(tiny_folder, tmp_path):
    binary, busy = tmp_path / "binary.svg", tmp_path / "busy.svg"
    binary.write_bytes(b"\xff\xfe\x00<svg")
    busy.write_text(SQUARE.replace("</svg>", '<path d="M1 1' + "L9 9" * 20 + 'Z" fill="#000000"/></svg>'))
    for args in (["text2svg", "-m", tiny_folder],                                   # no prompt
                 ["text2svg", "x", "--prompts", tmp_path / "missing.txt", "-m", tiny_folder],
                 ["text2svg", "x", "-o", tmp_path / "x.png", "-m", tiny_folder],
                 ["text2svg", "x", "-n", "256", "-s", "1000", "-m", tiny_folder],  # over the work budget
                 ["text2svg", "x", "-m", tmp_path / "nothing-here"],
                 ["text2svg", "x", "--init", tmp_path / "missing.svg", "-m", tiny_folder],
                 ["text2svg", "x", "--init", binary, "-m", tiny_folder],
                 ["text2svg", "x", "--init", busy, "-m", tiny_folder, "-o", tmp_path / "never"],
                 ["text2svg", "x", "--autoguidance", "1", "-m", tiny_folder, "-o", tmp_path / "never"],  # no guide
                 ["text2svg", "x", "--init", "search", "-m", tiny_folder, "-o", tmp_path / "never"]):  # no icons data
        r = run_genstudio(*args)
        assert r.returncode != 0, args
        assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "never").exists()                         # refused before anything is written


# ---------------------------------------------------------------- benchmark pieces

def test_bench_scorer_and_icon_search_on_tiny_items(tmp_path, tiny_folder):
    from pipelines.text2svg.bench import Scorer, _edit, _search
    from pipelines.text2svg.pipeline import SVGFusionPipeline
    from pipelines.text2svg.clip import IconCLIP
    torch.manual_seed(0)
    IconCLIP(embed_dim=16, channels=8).save_pretrained(tmp_path / "clip")
    shapes = {"red square": SQUARE,
              "blue circle": SQUARE.replace("#ff0000", "#0000ff").replace("M10 10L200 10L200 200Z", "M20 20L60 200L200 60Z"),
              "green line": SQUARE.replace('fill="#ff0000"', 'fill="#00ff00"')}
    items = []
    for k, (text, svg) in enumerate(shapes.items()):
        path = tmp_path / f"{k}.svg"
        path.write_text(svg)
        items.append({"text": f"{text}, icon", "label": text, "path": str(path), "matrix": sm.svg_to_matrix(svg)})
    prompts = list(shapes)
    scorer = Scorer(str(tmp_path / "clip"), prompts, items, items)
    real = scorer(list(shapes.values()), [0, 1, 2], 1.5)
    assert real["valid"] == 1.0 and real["s_per_svg"] == 0.5 and 0 <= real["R@1"] <= real["R@5"] == 1.0
    assert real["novelty"] == pytest.approx(0.0, abs=1e-5)       # the training icons themselves
    blank = scorer([None, None, None], [0, 1, 2], 0.0)
    assert blank["valid"] == 0.0 and blank["paths"] == 0.0
    svgs, index, _ = _search(["red square"], items, 2)
    assert index == [0, 0] and svgs[0] == SQUARE                # the caption that matches the prompt comes first
    from pipelines.text2svg.search import IconSearch
    search = IconSearch(items, root=tmp_path)
    assert [it["label"] for it in search.top(["blue circle", "a red square"], 1)[0]] == ["blue circle"]
    assert len(list(tmp_path.glob("icons/text2svg-search-*.npy"))) == 1             # cached, and reused:
    assert np.array_equal(IconSearch(items, root=tmp_path).bank, search.bank)
    pipe = SVGFusionPipeline.from_pretrained(tiny_folder, device="cpu", precision="fp32")
    seen = []
    encode = pipe.encode
    pipe.encode = lambda texts: seen.append(list(texts)) or encode(texts)
    edited, index, _ = _edit(pipe, ["red square", "blue circle"], svgs * 2, 2, 4, 3.0, 0, 0.5)
    assert index == [0, 0, 1, 1] and len(edited) == 4 and seen == [svgs, svgs]  # each sample from its own result


def test_bench_gallery_is_written_with_the_table(tmp_path):
    """One row per prompt, each column's renders of that prompt in place; blank cells for None / broken SVGs."""
    from genstudio.bench import Report
    from pipelines.text2svg.bench import CELL, LABEL_WIDTH, gallery
    sheet = gallery(["a", "b"], [("real", [SQUARE, None], [0, 1], 1), ("model", [None, "<svg", SQUARE, SQUARE], [0, 0, 1, 1], 2)])
    assert sheet.size == (LABEL_WIDTH + 3 * CELL + 8, CELL // 2 + 2 * CELL)
    pixels = np.asarray(sheet)
    cell = lambda col, row: pixels[CELL // 2 + row * CELL:CELL // 2 + (row + 1) * CELL, col:col + CELL]
    assert (cell(LABEL_WIDTH, 0) != 255).any() and (cell(LABEL_WIDTH, 1) == 255).all()          # real: a, then None
    model = LABEL_WIDTH + CELL + 4
    assert (cell(model, 0) == 255).all() and (cell(model, 1) != 255).any() and (cell(model + CELL, 1) != 255).any()
    report = Report("t2s", tmp_path)
    report.add("x", a=1.0)
    report.figure("gallery", sheet, "Gallery: two prompts.")
    _, md = report.write()
    assert (tmp_path / "t2s-gallery.png").is_file() and "![gallery](t2s-gallery.png)" in md.read_text()


def test_latent_table_round_trip_and_the_dit_recipe_on_it(tmp_path):
    """What a GPU box gets instead of the icons and the VAE: quantised posteriors + captions, enough for the recipe."""
    from pipelines.text2svg.data import DataError
    from pipelines.text2svg.train import dit_recipe, encode_latents, read_latent_table, write_latent_table
    tiny_vae().save_pretrained(tmp_path / "vae")
    x = _matrices()
    items = [{"matrix": m.numpy()[:int((m[:, 0] > 0).sum())], "text": f"shape {k}, icon: tag{k}"}
             for k, m in enumerate(x)]
    assert write_latent_table(tmp_path / "t.npz", tmp_path / "vae", items, items[:2]) == {"train": 4, "val": 2}
    table = read_latent_table(tmp_path / "t.npz")
    from pipelines.text2svg.train import load_vae
    mean, std = encode_latents(load_vae(tmp_path / "vae"), items, 16)
    step = (mean.amax((0, 1)) - mean.amin((0, 1))) / 255
    assert ((table["mean"] - mean).abs() <= step / 2 + 1e-6).all()          # 8 bits per channel
    assert torch.allclose(table["std"], std, rtol=0.03)
    assert table["captions"][1] == ["shape 1", "shape 1, icon", "shape 1, icon: tag1"] and len(table["val_captions"]) == 2
    recipe = dit_recipe({"vae": str(tmp_path / "vae"), "latent_table": str(tmp_path / "t.npz"), "preset": "tiny",
                         "output_dir": str(tmp_path / "run"), "batch_size": 2})
    batch = recipe.collate_fn([recipe.dataset[i] for i in range(2)])
    loss = recipe.loss_fn(recipe.model, batch)
    loss = loss[0] if isinstance(loss, tuple) else loss
    assert torch.isfinite(loss) and set(recipe.eval_fn(recipe.model)) == {"val_loss", "val_loss_no_text"}
    with pytest.raises(ValueError, match="iconify_share"):
        dit_recipe({"vae": str(tmp_path / "vae"), "latent_table": str(tmp_path / "t.npz"), "iconify_share": 0.5})
    with pytest.raises(ValueError, match="t_min"):
        dit_recipe({"vae": str(tmp_path / "vae"), "latent_table": str(tmp_path / "t.npz"), "t_min": 500, "t_max": 500})
    # a self-conditioned VS-DiT started from that one: widened input, the same function at the start
    recipe.model.save_pretrained(tmp_path / "dit")
    sc = dit_recipe({"vae": str(tmp_path / "vae"), "latent_table": str(tmp_path / "t.npz"), "preset": "tiny",
                     "output_dir": str(tmp_path / "run-sc"), "batch_size": 2, "self_condition": True,
                     "init_from": str(tmp_path / "dit")})
    assert sc.model.config.self_condition and sc.model.x_embedder.proj.weight.shape[1] == 8
    x, t = batch["latent"], torch.tensor([5, 600])
    with torch.no_grad():
        assert torch.allclose(sc.model.eval()(x, t, x_self_cond=torch.randn_like(x)), recipe.model.eval()(x, t), atol=1e-6)
    loss = sc.loss_fn(sc.model.train(), batch)
    assert torch.isfinite(loss[0] if isinstance(loss, tuple) else loss)
    assert set(sc.eval_fn(sc.model)) == {"val_loss", "val_loss_no_text", "val_loss_self_cond"}
    (tmp_path / "bad.npz").write_bytes(b"not a table")
    with pytest.raises(DataError, match="not a latent table"):
        read_latent_table(tmp_path / "bad.npz")


def test_train_sets_default_to_the_captioned_sets_and_reject_unknown_ones():
    from pipelines.text2svg.data import SETS
    from pipelines.text2svg.data import train_sets
    assert train_sets("") == SETS
    assert train_sets("tabler, game-icons") == ("tabler", "game-icons")
    assert {"tabler", "game-icons", "fluent", "noto"} <= set(train_sets("+iconify"))
    with pytest.raises(ValueError, match="unknown icon set"):
        train_sets("tabler,nope")


def test_extra_sets_add_only_training_icons_far_from_held_out_labels(tmp_path, no_npm_check):
    """'rocket' is a val label: fluent's rocket stays out of training, and so does 'rocket launch' (one word
    away); 'anchor' and 'bar' come in, and never into val / test, which stay on the six captioned sets."""
    from genstudio.data import prepare
    from genstudio.data.registry import split_of
    from pipelines.text2svg.data import load_items
    assert split_of("text2svg:rocket") == "val" and split_of("text2svg:rocket launch") == "train"
    prepare("icons", root=tmp_path, packages_dir=FIXTURE, quiet=True, sets="tabler")
    prepare("iconify", root=tmp_path, packages_dir=FIXTURE, quiet=True, sets="fluent")
    train = {it["id"] for it in load_items("train", sets=("tabler", "fluent"), root=tmp_path)}
    assert {"fluent/anchor-24-filled", "fluent/bar-24-regular"} <= train
    assert not {"fluent/rocket-24-filled", "fluent/rocket-launch-24-regular"} & train
    for split in ("val", "test"):
        try:
            held = load_items(split, sets=("tabler", "fluent"), root=tmp_path)
        except Exception:  # the tiny fixture may hold no icon of this split
            held = []
        assert all(it["set"] == "tabler" for it in held)


def test_the_gpu_box_scripts_parse():
    """scripts/gpu-*.sh run only on a lent GPU box (dry-run there by hand); here at least bash must parse them."""
    import subprocess
    scripts = sorted((Path(__file__).parents[1] / "scripts").glob("gpu-*.sh"))
    assert len(scripts) >= 4
    for script in scripts:
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, f"{script.name}: {r.stderr}"


def test_app_tab_makes_variations_of_an_uploaded_svg(tiny_folder, tmp_path):
    gr = pytest.importorskip("gradio")
    from apps import ui_errors
    from apps.text2svg import run_text2svg
    run = ui_errors(run_text2svg)
    (tmp_path / "init.svg").write_text(SQUARE)
    (tmp_path / "bad.svg").write_bytes(b"\x00\xff not svg")
    try:
        _, text, _ = run("a rocket", 2, 3.0, 3, 0, 1, str(tiny_folder), str(tmp_path / "init.svg"), 0.5)
        assert "variations of the uploaded SVG at strength 0.5" in text
    except gr.Error as e:  # an untrained model may draw nothing: then that, in one line
        assert "drew anything" in str(e)
    for bad, message in (("bad.svg", "not UTF-8|not a usable SVG"), ("missing.svg", "does not exist")):
        with pytest.raises(gr.Error, match=message):
            run("a rocket", 1, 3.0, 3, 0, 1, str(tiny_folder), str(tmp_path / bad), 0.5)
