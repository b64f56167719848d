import pytest
import torch

from genstudio.text import TextEncoder, TextEncoderNotFound, TokenEncoding, get_text_encoder


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return get_text_encoder()


def test_minilm_loads_offline_frozen_384d(encoder):
    assert encoder.dim == 384
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.model.training
    emb = encoder.encode(["a red circle", "two blue squares"])
    assert emb.shape == (2, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    raw = encoder.encode(["a red circle"], normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(1))
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=-1), emb[:1])


def test_similar_sentences_are_closer(encoder):
    red, crimson, stocks = encoder.encode(["a red circle", "a crimson round shape", "stock market report"])
    assert red @ crimson > red @ stocks + 0.1
    assert red @ crimson > crimson @ stocks + 0.1


def test_cache_hit_returns_identical_tensor(encoder):
    encoder.clear_cache()
    first = encoder.encode(["an owl icon", "a paper plane"])
    assert "an owl icon" in encoder._cache
    again = encoder.encode(["a paper plane", "an owl icon", "an owl icon"])
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0]) and torch.equal(again[2], first[0])


def test_batch_order_and_batch_size_independence():
    encoder = TextEncoder(cache_size=0)  # no cache, so every call really runs the model
    texts = ["a house with a chimney", "cat", "a very long description of a small green frog on a lily pad", "sun"]
    forward = encoder.encode(texts)
    backward = encoder.encode(texts[::-1])
    one_by_one = encoder.encode(texts, batch_size=1)
    torch.testing.assert_close(backward.flip(0), forward, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(one_by_one, forward, atol=1e-5, rtol=1e-4)
    assert not encoder._cache


def test_return_tokens_matches_pooled(encoder):
    texts = ["a star", "a yellow star with five points"]
    enc = encoder.encode(texts, return_tokens=True, batch_size=1)
    assert isinstance(enc, TokenEncoding)
    assert enc.hidden_states.shape[:2] == enc.mask.shape and enc.hidden_states.shape[-1] == 384
    assert enc.mask[0].sum() < enc.mask[1].sum() and enc.mask[1].all()
    torch.testing.assert_close(enc.pooled, encoder.encode(texts), atol=1e-5, rtol=1e-4)
    # ordinary tensors: usable as conditioning for a module that is being trained
    layer = torch.nn.Linear(384, 4)
    layer(enc.hidden_states).sum().backward()
    layer(encoder.encode(texts)).sum().backward()


def test_singleton_and_input_checks(encoder):
    assert get_text_encoder() is encoder
    assert encoder.encode("one string").shape == (1, 384)
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode([1, 2])


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TextEncoderNotFound, match=r"(?s)no-such-org/no-such-encoder.*offline"):
        TextEncoder("no-such-org/no-such-encoder")
    with pytest.raises(TextEncoderNotFound, match=r"(?s)not-a-model.*offline"):
        TextEncoder("not-a-model")


def test_local_folder_loads(tmp_path, encoder):
    encoder.model.save_pretrained(tmp_path)
    encoder.tokenizer.save_pretrained(tmp_path)
    local = TextEncoder(tmp_path)
    torch.testing.assert_close(local.encode(["a red circle"]), encoder.encode(["a red circle"]))


def test_pruned_encoder_round_trip_keeps_the_states_and_refuses_other_tokens(tmp_path, encoder):
    from genstudio.text import restore_pruned_encoder, write_pruned_encoder
    texts = ["a red rocket", "arrow left, outline icon: direction"]
    counts = write_pruned_encoder(tmp_path / "pruned", texts)
    assert counts["vocab"] == encoder.tokenizer.vocab_size and 5 < counts["tokens"] < 50
    size = sum(f.stat().st_size for f in (tmp_path / "pruned").iterdir())
    assert size < 0.4 * (encoder.tokenizer.vocab_size * 384 * 4 + 11e6 * 4)     # fp16, 30 of 30 k embeddings
    restored = TextEncoder(restore_pruned_encoder(tmp_path / "pruned", tmp_path / "restored"))
    a, b = encoder.encode(texts, return_tokens=True), restored.encode(texts, return_tokens=True)
    real = a.mask.bool()
    assert torch.equal(a.mask, b.mask)
    assert (a.hidden_states - b.hidden_states)[real].abs().max() < 0.02       # fp16 weights, fp32 compute
    assert torch.isnan(restored.encode(["zebra xylophone"], return_tokens=True).hidden_states).any()
