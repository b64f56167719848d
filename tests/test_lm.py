import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessor

from genstudio.lm import (ARCHS, LM_CONFIGS, PrefixLM, VisualAdapter, build_causal_lm, count_parameters,
                          lm_config)

VOCAB = 40
HIDDEN = LM_CONFIGS["tiny"]["hidden"]


def tiny_prefix_lm(arch="llama", seed=0, **overrides) -> PrefixLM:
    torch.manual_seed(seed)
    return PrefixLM(build_causal_lm(arch, VOCAB, "tiny", **overrides)).eval()


class Script(LogitsProcessor):
    """Forces row b to emit scripts[b][n] at its n-th new token."""

    def __init__(self, scripts):
        self.scripts = scripts

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]
        forced = torch.full_like(scores, float("-inf"))
        for row, script in enumerate(self.scripts):
            forced[row, script[min(step, len(script) - 1)]] = 0.0
        return forced


# ---- building ----

@pytest.mark.parametrize("arch", ARCHS)
def test_build_each_arch_tiny(arch):
    model = tiny_prefix_lm(arch)
    assert model.hidden_size == HIDDEN
    assert model.lm.config.vocab_size == VOCAB
    assert model.lm.config._attn_implementation == "sdpa"
    ids = torch.randint(0, VOCAB, (2, 5))
    out = model(torch.randn(2, 3, HIDDEN), ids)
    assert out.logits.shape == (2, 8, VOCAB)
    assert torch.isfinite(out.loss)
    total = count_parameters(model)
    model.lm.get_input_embeddings().requires_grad_(False)
    assert total - count_parameters(model, trainable_only=True) == VOCAB * HIDDEN


def test_overrides_take_generic_and_native_names():
    cfg = lm_config("gpt_bigcode", VOCAB, "tiny", layers=3, multi_query=False)
    assert cfg.n_layer == 3 and cfg.multi_query is False and cfg.n_embd == HIDDEN
    cfg = lm_config("opt", VOCAB, "small", hidden=128)
    assert cfg.hidden_size == cfg.word_embed_proj_dim == 128 and cfg.ffn_dim == 512


def test_bad_arch_size_and_heads_are_clear_errors():
    with pytest.raises(ValueError, match="unknown LM architecture 'mamba'"):
        build_causal_lm("mamba", VOCAB)
    with pytest.raises(ValueError, match="unknown LM size"):
        build_causal_lm("gpt2", VOCAB, "huge")
    with pytest.raises(ValueError, match="divisible"):
        build_causal_lm("gpt2", VOCAB, hidden=66, heads=4)


# ---- loss ----

def test_loss_equals_manual_ce_on_target_tokens_only():
    model = tiny_prefix_lm("gpt2")
    prefix = torch.randn(2, 3, HIDDEN)
    ids = torch.randint(1, VOCAB, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = model(prefix, ids, attention_mask=mask)
    assert (out.labels[:, :3] == -100).all()
    assert (out.labels[1, 3 + 3:] == -100).all()
    # Manual: logits at P-1+t predict token t, for real tokens only.
    losses = []
    for b in range(2):
        for t in range(int(mask[b].sum())):
            losses.append(F.cross_entropy(out.logits[b, 3 - 1 + t].float()[None], ids[b, t][None]))
    torch.testing.assert_close(out.loss, torch.stack(losses).mean())


def test_loss_ignores_pad_tokens_and_explicit_ignore_labels():
    model = tiny_prefix_lm("llama")
    prefix = torch.randn(2, 4, HIDDEN)
    ids = torch.randint(1, VOCAB, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    loss = model(prefix, ids, attention_mask=mask).loss
    other = ids.clone()
    other[1, 4:] = torch.tensor([7, 9])  # different garbage under the pads
    torch.testing.assert_close(model(prefix, other, attention_mask=mask).loss, loss)
    # ...while changing a real token does change it, so the check above can fail.
    other[1, 2] = (ids[1, 2] + 1) % VOCAB
    assert not torch.allclose(model(prefix, other, attention_mask=mask).loss, loss)
    # -100 labels drop positions from the loss
    labels = ids.clone()
    labels[:, :2] = -100
    assert not torch.allclose(model(prefix, ids, attention_mask=mask, labels=labels).loss, loss)


def test_left_and_right_padding_give_the_same_loss():
    model = tiny_prefix_lm("opt")
    prefix = torch.randn(2, 2, HIDDEN)
    ids = torch.randint(1, VOCAB, (2, 5))
    right_mask = torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])
    left_ids = ids.clone()
    left_ids[1] = torch.cat([ids[1, 3:], ids[1, :3]])  # the three real tokens moved to the end
    left_mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    right = model(prefix, ids, attention_mask=right_mask).loss
    left = model(prefix, left_ids, attention_mask=left_mask).loss
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)


def test_prefix_conditions_the_loss():
    model = tiny_prefix_lm("gpt_bigcode")
    ids = torch.randint(0, VOCAB, (1, 6))
    a = model(torch.randn(1, 3, HIDDEN), ids).loss
    b = model(torch.randn(1, 3, HIDDEN), ids).loss
    assert not torch.allclose(a, b)


# ---- generation ----

def greedy_without_cache(model: PrefixLM, prefix, ids, steps):
    out = ids
    for _ in range(steps):
        logits = model(prefix, out).logits
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return out[:, ids.shape[1]:]


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_generation_equals_no_cache_greedy(arch):
    model = tiny_prefix_lm(arch, seed=1)
    prefix = torch.randn(2, 3, HIDDEN)
    start = torch.tensor([[5], [6]])
    cached = model.generate(prefix, start, max_new_tokens=8, stop_token_ids=[])
    assert cached.shape == (2, 8)
    torch.testing.assert_close(cached, greedy_without_cache(model, prefix, start, 8))


def test_left_padded_batch_matches_single_rows():
    model = tiny_prefix_lm("llama", seed=2)
    prefix = torch.randn(2, 3, HIDDEN)
    starts = [torch.tensor([[4, 8, 9]]), torch.tensor([[5]])]
    singles = [model.generate(prefix[i:i + 1], s, max_new_tokens=6, stop_token_ids=[]) for i, s in enumerate(starts)]
    batch = torch.tensor([[4, 8, 9], [0, 0, 5]])
    mask = torch.tensor([[1, 1, 1], [0, 0, 1]])
    batched = model.generate(prefix, batch, attention_mask=mask, max_new_tokens=6, stop_token_ids=[])
    torch.testing.assert_close(batched, torch.cat(singles))


def test_sampling_is_seeded_and_leaves_global_rng_alone():
    model = tiny_prefix_lm("gpt2")
    prefix = torch.randn(2, 2, HIDDEN)
    state = torch.get_rng_state()
    kw = dict(max_new_tokens=24, do_sample=True, temperature=2.0, stop_token_ids=[])
    a = model.generate(prefix, seed=0, **kw)
    b = model.generate(prefix, seed=0, **kw)
    c = model.generate(prefix, seed=1, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(model.generate(prefix, generator=g1, **kw), model.generate(prefix, generator=g2, **kw))


def test_num_return_sequences_and_top_k_one_is_greedy():
    model = tiny_prefix_lm("llama")
    prefix = torch.randn(2, 2, HIDDEN)
    out = model.generate(prefix, max_new_tokens=5, do_sample=True, top_k=1, num_return_sequences=3,
                         seed=0, stop_token_ids=[])
    assert out.shape == (6, 5)
    greedy = model.generate(prefix, max_new_tokens=5, stop_token_ids=[])
    torch.testing.assert_close(out, greedy.repeat_interleave(3, 0))


def test_stop_token_forced_by_lm_head_bias_stops_immediately():
    model = tiny_prefix_lm("gpt2")
    bias = torch.zeros(VOCAB)
    bias[7] = 1e4
    model.lm.lm_head.bias = nn.Parameter(bias)
    out, lengths = model.generate(torch.randn(3, 2, HIDDEN), max_new_tokens=10, stop_token_ids=[7],
                                  return_lengths=True)
    assert out.tolist() == [[7]] * 3 and lengths.tolist() == [1] * 3
    # without the stop id, it runs to max_new_tokens
    assert model.generate(torch.randn(1, 2, HIDDEN), max_new_tokens=10, stop_token_ids=[]).shape == (1, 10)


def test_stop_token_trims_each_row_and_pads():
    model = tiny_prefix_lm("opt")
    script = Script([[3, 4, 9, 5, 5, 5], [3, 4, 5, 6, 9, 5]])
    out, lengths = model.generate(torch.randn(2, 2, HIDDEN), max_new_tokens=6, stop_token_ids=9,
                                  logits_processor=script, pad_token_id=0, return_lengths=True)
    assert out.tolist() == [[3, 4, 9, 0, 0], [3, 4, 5, 6, 9]]
    assert lengths.tolist() == [3, 5]
    # a plain callable works as a logits processor too
    out = model.generate(torch.randn(2, 2, HIDDEN), max_new_tokens=6, stop_token_ids=[],
                         logits_processor=lambda ids, scores: script(ids, scores))
    assert out.tolist() == script.scripts


def _tiny_tokenizer():
    """A character-level BPE whose merges build a few SVG-ish words (StopStringCriteria needs a
    tokenizer that can encode any text and decode tokens back to strings)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"<pad>": 0}
    vocab.update({c: i + 1 for i, c in enumerate(sorted(set("abcdefghijklmnopqrstuvwxyz<>/ ")))})
    merges = []
    for word in ["<svg>", "rect", "circle", "</", "svg>", "path", "fill"]:
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                vocab[word[:end]] = len(vocab)
                merges.append((word[:end - 1], word[end - 1]))
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<pad>"))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>"), vocab


def test_stop_string_spanning_two_tokens():
    tokenizer, vocab = _tiny_tokenizer()
    model = PrefixLM(build_causal_lm("gpt_bigcode", len(vocab))).eval()
    v = vocab
    script = Script([[v["rect"], v["circle"], v["</"], v["svg>"], v["path"], v["path"]],
                     [v["rect"], v["fill"], v["path"], v["path"], v["path"], v["path"]]])
    out, lengths = model.generate(torch.randn(2, 1, HIDDEN), torch.tensor([[v["<svg>"]]] * 2), max_new_tokens=6,
                                  stop_sequences=["</svg>"], tokenizer=tokenizer, stop_token_ids=[],
                                  logits_processor=script, pad_token_id=0, return_lengths=True)
    assert lengths.tolist() == [4, 6]
    assert out[0, :4].tolist() == script.scripts[0][:4] and out[0, 4:].tolist() == [0, 0]
    assert out[1].tolist() == script.scripts[1]
    with pytest.raises(ValueError, match="tokenizer"):
        model.generate(torch.randn(1, 1, HIDDEN), stop_sequences=["</svg>"])


def test_progress_bar_does_not_change_output():
    model = tiny_prefix_lm("llama")
    prefix = torch.randn(1, 2, HIDDEN)
    kw = dict(max_new_tokens=4, stop_token_ids=[])
    assert torch.equal(model.generate(prefix, progress=True, **kw), model.generate(prefix, **kw))


# ---- adapter, save/load ----

def test_visual_adapter_shapes():
    adapter = VisualAdapter(32, HIDDEN, dropout=0.1).eval()
    out = adapter(torch.randn(2, 7, 32))
    assert out.shape == (2, 7, HIDDEN)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
    upstream = VisualAdapter(32, HIDDEN, query_length=7)
    assert upstream(torch.randn(2, 7, 32)).shape == (2, 7, HIDDEN)
    assert set(upstream.state_dict()) == {"c_fc.weight", "c_fc.bias", "c_proj.weight", "c_proj.bias",
                                          "norm.weight", "norm.bias"}


@pytest.mark.parametrize("arch", ["gpt_bigcode", "opt"])
def test_save_pretrained_round_trip(arch, tmp_path):
    model = tiny_prefix_lm(arch, seed=4)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and list(tmp_path.glob("*.safetensors"))
    loaded = PrefixLM.from_pretrained(tmp_path).eval()
    assert type(loaded.lm) is type(model.lm)
    prefix, ids = torch.randn(1, 2, HIDDEN), torch.randint(0, VOCAB, (1, 4))
    torch.testing.assert_close(loaded(prefix, ids).logits, model(prefix, ids).logits)
