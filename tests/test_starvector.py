"""StarVector: SVG tokenizer, preprocessing, glyph source, dataset, model, official-weight converter, recipe."""
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("cairosvg")
pytest.importorskip("svgelements")

from genstudio.data import SOURCES, load_manifest, prepare  # noqa: E402
from genstudio.formats.svg import normalize_svg, rasterize_svg  # noqa: E402
from genstudio.formats.svg_tokenizer import SPECIAL_TOKENS, special_token_ids, train_svg_tokenizer  # noqa: E402
from pipelines.svg.data import (CLIP_MEAN, CLIP_STD, SVGImageDataset, font_files, preprocess_image,  # noqa: E402
                                svg_to_training_text)
from pipelines.svg.starvector import (StarVectorModel, convert_official_starvector_state_dict,  # noqa: E402
                                      load_starvector, starvector_config)

FIXTURE = Path(__file__).parent / "fixtures" / "npm_icons"
ICONS = sorted(p for p in FIXTURE.rglob("*.svg") if p.name not in ("broken.svg", "shield.svg"))


@pytest.fixture(scope="module")
def icon_items() -> list[dict]:
    return [{"id": p.stem, "svg": normalize_svg(p.read_text())} for p in ICONS]


@pytest.fixture(scope="module")
def tokenizer(icon_items):
    return train_svg_tokenizer([svg_to_training_text(it["svg"]) for it in icon_items], vocab_size=320)


@pytest.fixture(scope="module")
def dataset(icon_items, tokenizer):
    return SVGImageDataset(icon_items, tokenizer, image_size=32, max_tokens=2000)


def tiny_model(tokenizer, seed=0, **overrides) -> StarVectorModel:
    torch.manual_seed(seed)
    model = StarVectorModel(starvector_config("tiny", vocab_size=len(tokenizer), **special_token_ids(tokenizer),
                                              **overrides))
    model.svg_tokenizer = tokenizer
    return model.eval()


# ---- tokenizer, preprocessing, training text ----

def test_tokenizer_round_trip_is_exact_and_keeps_specials(tokenizer, icon_items):
    assert tokenizer.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)
    texts = [svg_to_training_text(it["svg"]) for it in icon_items] + [
        "  two  spaces , then . and\ttabs\nnewlines\r\n", "ünïcödé ✓ 中文 \x00\x7f", "",
        "<svg-start><svg viewBox=\"0 0 1 1\"/></svg><svg-end>[PAD]<|endoftext|>"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    ids = tokenizer("<svg-start><svg<svg-end>", add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<svg-start>") and ids[-1] == 3
    assert special_token_ids(tokenizer) == dict(eos_token_id=0, pad_token_id=1, svg_start_token_id=2,
                                                svg_end_token_id=3, image_start_token_id=4)


def test_training_text_is_small_and_integer(icon_items):
    text = svg_to_training_text(icon_items[0]["svg"])
    assert text.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 128 128"')
    assert text.endswith("</svg>") and not re.search(r"\d\.\d", text)
    assert len(text) < len(icon_items[0]["svg"])


def unnormalise(x: torch.Tensor) -> np.ndarray:
    return (x * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)).permute(1, 2, 0).numpy()


def test_preprocess_flattens_alpha_and_pads_white():
    rgba = np.zeros((10, 20, 4), np.uint8)      # 20 wide, 10 high
    rgba[:, 10:] = (255, 0, 0, 255)             # right half opaque red, left half transparent black
    x = preprocess_image(Image.fromarray(rgba, "RGBA"), 20)
    assert x.shape == (3, 20, 20) and x.dtype == torch.float32
    img = unnormalise(x)
    assert np.allclose(img[:5], 1, atol=1e-5) and np.allclose(img[15:], 1, atol=1e-5)  # white bands, centred
    assert np.allclose(img[5:15, :10], 1, atol=1e-5)                                  # alpha -> white
    assert np.allclose(img[5:15, 10:], (1, 0, 0), atol=1e-5)
    small = preprocess_image(Image.fromarray(rgba, "RGBA").convert("LA"), 8)
    assert small.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="no pixels"):
        preprocess_image(Image.new("RGB", (0, 5)), 8)


# ---- glyph source ----

def test_glyph_source_builds_and_renders(tmp_path):
    pytest.importorskip("fontTools")
    if not font_files():
        pytest.skip("no DejaVu / matplotlib fonts on this machine")
    assert "glyphs" in SOURCES
    font = font_files()[0][0].stem
    prepare("glyphs", root=tmp_path, fonts=font, limit=6, quiet=True, force=True)
    items = load_manifest("glyphs", root=tmp_path)
    assert len(items) == 6 and len({it["sha1"] for it in items}) == 6
    first = items[0]
    assert first["char"] == "!" and first["text"].startswith("glyph '!' (U+0021) from ")
    assert first["licence"] and first["split"] in ("train", "val", "test")
    for it in items:
        svg = Path(it["path"]).read_text()
        assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 256 256"')
        img = rasterize_svg(svg, 32)
        assert img.min() < 128 and img.max() == 255  # black glyph on white


# ---- dataset ----

def test_dataset_drops_long_items_and_collates(icon_items, tokenizer):
    lengths = sorted(len(tokenizer(svg_to_training_text(it["svg"]))["input_ids"]) + 2 for it in icon_items)
    limit = lengths[len(lengths) // 2]
    ds = SVGImageDataset(icon_items, tokenizer, image_size=32, max_tokens=limit)
    assert len(ds) + ds.dropped["too_long"] == len(icon_items) and ds.dropped["too_long"] > 0
    rows = [ds[i] for i in range(len(ds))]
    assert all(len(r["input_ids"]) <= limit for r in rows)
    assert rows[0]["pixel_values"].shape == (3, 32, 32)
    batch = ds.collate(rows)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert batch["pixel_values"].shape == (len(rows), 3, 32, 32)
    assert (mask.sum(1) == torch.tensor([len(r["input_ids"]) for r in rows])).all() and (mask == 0).any()
    assert (labels[mask == 0] == -100).all() and (ids[mask == 0] == tokenizer.pad_token_id).all()
    assert torch.equal(labels[mask == 1], ids[mask == 1])
    assert (ids[:, 0] == 2).all() and all(ids[i, mask[i].sum() - 1] == 3 for i in range(len(rows)))


def test_dataset_image_is_the_rendering_of_the_target(dataset):
    img = unnormalise(dataset[0]["pixel_values"])
    target = rasterize_svg(dataset.texts[0], 32).astype(np.float32) / 255
    assert np.abs(img - target).max() < 1e-5


# ---- model ----

def test_forward_loss_is_finite_and_trains_every_part(dataset, tokenizer):
    model = tiny_model(tokenizer).train()
    batch = dataset.collate([dataset[0], dataset[1]])
    out = model(**batch)
    assert out.logits.shape == (2, model.config.num_visual_tokens + batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (model.image_encoder, model.image_projection, model.svg_transformer):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_loss_counts_svg_tokens_only(dataset, tokenizer):
    model = tiny_model(tokenizer)
    batch = dataset.collate([dataset[i] for i in range(3)])
    with torch.no_grad():
        out = model(**batch)
        scrambled = dict(batch, input_ids=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7))
        assert torch.equal(model(**scrambled).loss, out.loss)  # what sits on the pads does not matter
        prefix = model.config.num_visual_tokens
        logits = out.logits[:, prefix - 1:-1].float()   # position P-1+i predicts SVG token i
        manual = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   batch["labels"].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, manual, atol=1e-5)


def test_generate_svg_starts_with_svg_and_respects_max_new_tokens(dataset, tokenizer, monkeypatch):
    model = tiny_model(tokenizer)
    images = torch.stack([dataset[i]["pixel_values"] for i in range(2)])
    seen = []
    real = model.svg_transformer.generate

    def spy(*args, **kwargs):
        tokens = real(*args, **kwargs)
        seen.append(tokens)
        return tokens

    monkeypatch.setattr(model.svg_transformer, "generate", spy)
    out = model.generate_svg(images, tokenizer, num_candidates=3, max_new_tokens=5, seed=1)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    assert all(s.startswith("<svg") for c in out for s in c)
    assert seen[0].shape[0] == 6 and seen[0].shape[1] <= 5
    assert model.generate_svg(images, tokenizer, num_candidates=3, max_new_tokens=5, seed=1) == out
    assert len(model.generate_svg(images[0], max_new_tokens=3)[0]) == 1  # one image, greedy, attached tokenizer


def test_generate_svg_cuts_after_the_closing_tag(dataset, tokenizer, monkeypatch):
    model = tiny_model(tokenizer)
    tail = tokenizer(' width="1"/></svg>', add_special_tokens=False)["input_ids"] + [3] + \
        tokenizer("junk", add_special_tokens=False)["input_ids"]
    monkeypatch.setattr(model.svg_transformer, "generate", lambda *a, **k: torch.tensor([tail]))
    assert model.generate_svg(dataset[0]["pixel_values"][None]) == [['<svg width="1"/></svg>']]


def test_save_and_load_round_trip_with_tokenizer(dataset, tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "tokenizer.json").exists() and list((tmp_path / "ckpt").glob("*.safetensors"))
    loaded, tok = load_starvector(tmp_path / "ckpt")
    batch = dataset.collate([dataset[0], dataset[1]])
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-6)
    text = dataset.texts[0]
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"] and len(tok) == len(tokenizer)
    assert loaded.generate_svg(batch["pixel_values"], max_new_tokens=4) == \
        model.generate_svg(batch["pixel_values"], max_new_tokens=4)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        (tmp_path / "bare").mkdir()
        (tmp_path / "bare" / "config.json").write_text("{}")
        load_starvector(tmp_path / "bare")


# ---- official weights ----

def to_official(sd: dict) -> dict:
    """Our keys -> the reference's (StarVectorForCausalLM.model ...), written out from its module names."""
    patch = "embeddings.patch_embedding.weight"
    vision = next(k for k in sd if k.endswith(patch))[:-len(patch)]
    vit = "model.image_encoder.visual_encoder."
    names = {"embeddings.patch_embedding.weight": "conv1.weight", "embeddings.class_embedding": "class_embedding",
             "embeddings.position_embedding.weight": "positional_embedding",
             "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias"}
    layer_names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}
    out, qkv = {}, {}
    for key, value in sd.items():
        if key.startswith("svg_transformer.lm."):
            if not key.endswith("lm_head.weight"):  # tied to wte: the official files may leave it out
                out["model.svg_transformer.transformer." + key[len("svg_transformer.lm."):]] = value
        elif key.startswith("image_projection."):
            out["model." + key] = value
        elif key.startswith(vision + "post_layernorm."):
            out["model.image_encoder.ln_vision." + key.rsplit(".", 1)[1]] = value
        elif key.startswith(vision):
            rest = key[len(vision):]
            if rest in names:
                out[vit + names[rest]] = value
                continue
            m = re.match(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", rest)
            i, module, kind = m.groups()
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((i, kind), {})[module[-6]] = value
            else:
                out[f"{vit}transformer.resblocks.{i}.{layer_names[module]}.{kind}"] = value
        else:
            raise AssertionError(f"unmapped key {key}")
    for (i, kind), parts in qkv.items():
        out[f"{vit}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def test_official_checkpoint_converts_and_loads(dataset, tokenizer, tmp_path):
    from safetensors.torch import save_file
    model = tiny_model(tokenizer, vision_num_heads=1, adapter_norm="batch_norm")
    with torch.no_grad():
        model.image_projection.norm.running_mean.normal_()
        model.image_projection.norm.running_var.uniform_(0.5, 2.0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # no parameter keeps an init value by chance
    official = to_official(model.state_dict())
    assert "model.image_projection.norm.running_mean" in official
    assert convert_official_starvector_state_dict(official).keys() == model.state_dict().keys()

    folder = tmp_path / "starvector-1b-im2svg"
    folder.mkdir()
    half = len(official) // 2  # two shards, as published
    keys = sorted(official)
    save_file({k: official[k].contiguous() for k in keys[:half]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({k: official[k].contiguous() for k in keys[half:]}, str(folder / "model-00002-of-00002.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "starvector", "image_encoder_type": "clip",
                                                    "starcoder_model_name": "bigcode/starcoderbase-1b",
                                                    "num_attention_heads": 2}))
    tokenizer.save_pretrained(folder)
    loaded = StarVectorModel.from_official(str(folder)).eval()
    assert loaded.config.adapter_norm == "batch_norm" and loaded.config.prompt_with_svg_start is False
    batch = dataset.collate([dataset[0], dataset[1]])
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-5)
    assert loaded.generate_svg(batch["pixel_values"], max_new_tokens=3)[0][0].startswith("<svg")

    with pytest.raises(ValueError, match="no StarVectorModel counterpart"):
        convert_official_starvector_state_dict({**official, "model.extra.weight": torch.zeros(1)})
    (folder / "config.json").write_text(json.dumps({"image_encoder_type": "siglip_384"}))
    with pytest.raises(NotImplementedError, match="siglip_384"):
        StarVectorModel.from_official(str(folder))


def test_official_checkpoint_with_missing_weights_is_a_clear_error(tokenizer, tmp_path):
    from safetensors.torch import save_file
    official = to_official(tiny_model(tokenizer, vision_num_heads=1).state_dict())
    official.pop("model.image_encoder.visual_encoder.transformer.resblocks.0.ln_2.weight")
    save_file({k: v.contiguous() for k, v in official.items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 2}))
    with pytest.raises(ValueError, match="missing .*layer_norm2.weight"):
        StarVectorModel.from_official(str(tmp_path))


# ---- recipe ----

@pytest.fixture
def icons_dataset(tmp_path, monkeypatch):
    """The icons source built from the fixture tree (it stands in for npm) in a scratch data folder."""
    import genstudio.data.icons  # noqa: F401  (registers the icons source)
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(SOURCES["icons"], "requires", ())
    prepare("icons", packages_dir=FIXTURE, quiet=True)


def test_recipe_trains_and_ships_the_tokenizer(tmp_path, icons_dataset):
    from genstudio.train import train
    from pipelines.svg.train import is_valid_svg, recipe
    glyphs = bool(font_files()) and importlib.util.find_spec("fontTools") is not None
    if glyphs:
        prepare("glyphs", fonts=font_files()[0][0].stem, limit=24, quiet=True)
    cfg = dict(preset="tiny", output_dir=str(tmp_path / "run"), steps=10, batch_size=4, save_every=5,
               log_every=5, vocab_size=300, max_tokens=400, eval_items=4, eval_max_new_tokens=8,
               glyphs=glyphs, mixed_precision="no", progress=False)
    summary = train(recipe(cfg))
    assert summary["steps"] == 10 and np.isfinite(summary["loss"])
    assert 0.0 <= summary["valid_svg_rate"] <= 1.0 and np.isfinite(summary["val_loss"])
    for folder in ("final", "checkpoint-10", "checkpoint-5"):
        assert (tmp_path / "run" / folder / "tokenizer.json").exists(), folder
    model, tok = load_starvector(tmp_path / "run" / "final")
    assert model.config.image_size == 32 and len(tok) == model.config.vocab_size
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()  # reused by a resumed run
    assert is_valid_svg('<svg xmlns="http://www.w3.org/2000/svg"><path d="M0 0"/></svg>')
    assert not is_valid_svg("<svg><path") and not is_valid_svg('<!DOCTYPE svg [<!ENTITY a "b">]><svg/>')


def test_recipe_warm_starts_from_a_checkpoint_and_mixes_in_shapes(tmp_path, icons_dataset):
    from genstudio.train import train
    from pipelines.svg.train import recipe
    tok = train_svg_tokenizer([svg_to_training_text(p.read_text()) for p in ICONS], vocab_size=320)
    start = tiny_model(tok)
    start.save_pretrained(tmp_path / "start")
    cfg = dict(output_dir=str(tmp_path / "run"), init_from=str(tmp_path / "start"), shapes=12, max_shapes=2,
               vision_lr_scale=4, steps=4, batch_size=4, save_every=4, log_every=2, max_tokens=400,
               eval_items=4, eval_max_new_tokens=8, glyphs=False, mixed_precision="no", progress=False,
               ema_decay=None)
    r = recipe(cfg)
    assert sum(it.get("set") == "shapes" for it in r.dataset.items) == 12
    assert r.model.svg_tokenizer.get_vocab() == tok.get_vocab()  # the checkpoint's tokenizer, not a new one
    before = {k: v.clone() for k, v in r.model.state_dict().items()}
    summary = train(r)
    assert np.isfinite(summary["val_loss"]) and np.isfinite(summary["image_gain"])
    model, _ = load_starvector(tmp_path / "run" / "final")
    after = model.state_dict()
    assert model.config.vocab_size == start.config.vocab_size
    assert any(not torch.allclose(before[k], after[k].float()) for k in before)  # it trained
    assert not (tmp_path / "run" / "tokenizer").exists()


def test_export_ships_the_weights_in_fp16_with_the_tokenizer(tmp_path):
    from genstudio.export import export_run
    tok = train_svg_tokenizer([svg_to_training_text(p.read_text()) for p in ICONS], vocab_size=320)
    tiny_model(tok).save_pretrained(tmp_path / "run" / "final")
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"recipe": "starvector", "options": {}}))
    out = export_run(tmp_path / "run", tmp_path / "starvector-tiny", dtype="fp16")
    model, exported_tok = load_starvector(out)
    assert exported_tok.get_vocab() == tok.get_vocab()
    from safetensors.torch import load_file
    stored = load_file(next(out.glob("*.safetensors")))
    trained = tiny_model(tok).state_dict()
    assert {v.dtype for v in stored.values()} == {torch.float16}
    assert all(torch.equal(v, trained[k].half()) for k, v in stored.items())


def test_recipe_shapes_only_with_a_fresh_vision_side(tmp_path, icons_dataset):
    from pipelines.svg.train import recipe
    tok = train_svg_tokenizer([svg_to_training_text(p.read_text()) for p in ICONS], vocab_size=320)
    start = tiny_model(tok)
    start.save_pretrained(tmp_path / "start")
    cfg = dict(output_dir=str(tmp_path / "run"), init_from=str(tmp_path / "start"), reinit_vision=True, sets="",
               glyphs=False, shapes=10, max_shapes=1, eval_items=6, steps=1, max_tokens=400, progress=False)
    r = recipe(cfg)
    assert {it["set"] for it in r.dataset.items} == {"shapes"}
    val = r.extra["val_set"]
    assert len(val) == 6 and not {it["id"] for it in val.items} & {it["id"] for it in r.dataset.items}
    new, old = r.model.state_dict(), start.state_dict()
    vision = [k for k in old if k.startswith(("image_encoder.", "image_projection.")) and "weight" in k]
    assert vision and all(not torch.equal(new[k], old[k]) for k in vision if old[k].std() > 0)
    assert all(torch.equal(new[k], old[k]) for k in old if k.startswith("svg_transformer."))
    with pytest.raises(ValueError, match="init_from"):
        recipe(dict(cfg, init_from=None))


def test_recipe_curriculum_starts_on_drawings_and_brings_icons_in(tmp_path, icons_dataset):
    from genstudio.train import train
    from pipelines.svg.train import recipe
    cfg = dict(preset="tiny", output_dir=str(tmp_path / "run"), shapes=16, max_shapes=1, curriculum_warm=2,
               curriculum_ramp=2, shapes_share=0.5, steps=6, batch_size=4, save_every=6, log_every=3,
               vocab_size=300, max_tokens=400, eval_items=4, eval_max_new_tokens=8, glyphs=False,
               mixed_precision="no", progress=False, ema_decay=None)
    r = recipe(cfg)
    shapes = {i for i, it in enumerate(r.dataset.items) if it["set"] == "shapes"}
    batches = iter(r.batch_sampler)
    first = [next(batches) for _ in range(3)]
    assert all(i in shapes for b in first for i in b)  # warm-up: drawings alone
    assert r.batch_sampler.share(4) == r.batch_sampler.share(100) == 0.5
    summary = train(r)
    assert np.isfinite(summary["val_loss"])
    if r.extra["val_set"].items[0]["set"] != "shapes":  # icons in val: the drawings' gain is reported beside
        assert np.isfinite(summary["shapes_image_gain"])
    with pytest.raises(ValueError, match="shapes=N"):
        recipe(dict(cfg, shapes=0))


def test_synthetic_shapes_are_seeded_valid_and_need_the_image():
    from pipelines.svg.data import synthetic_shape_svgs
    a, b = synthetic_shape_svgs(20, seed=3, max_shapes=2), synthetic_shape_svgs(20, seed=4, max_shapes=2)
    assert a == synthetic_shape_svgs(20, seed=3, max_shapes=2) and a != b
    texts = [svg_to_training_text(s) for s in a]
    assert all(t.count("<path") in (1, 2) for t in texts)
    images = [rasterize_svg(t, 32) for t in texts]
    assert all(img.min() < 128 for img in images)  # every drawing puts ink on the canvas
    # different drawings give different images: the code is only recoverable by looking
    assert len({img.tobytes() for img in images}) == len(images)
