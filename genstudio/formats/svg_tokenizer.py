"""The SVG tokenizer: a byte-level BPE over SVG text (any text round-trips exactly) with the special
tokens of the StarVector reference code (`<svg-start>`, `<svg-end>`, `<image-start>`,
`<caption-start>`, StarCoder's `<|endoftext|>` and the `[PAD]` the reference adds).

Saved tokenizers are plain `tokenizer.json` + `tokenizer_config.json` (no Python class paths):
`AutoTokenizer.from_pretrained(folder)` loads them without this module.
"""
from __future__ import annotations

EOS_TOKEN = "<|endoftext|>"      # StarCoder's end of text
PAD_TOKEN = "[PAD]"              # what the reference adds to StarCoder's tokenizer
SVG_START_TOKEN = "<svg-start>"
SVG_END_TOKEN = "<svg-end>"
IMAGE_START_TOKEN = "<image-start>"
CAPTION_START_TOKEN = "<caption-start>"
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, SVG_START_TOKEN, SVG_END_TOKEN, IMAGE_START_TOKEN, CAPTION_START_TOKEN)


def train_svg_tokenizer(texts, vocab_size: int = 2048, min_frequency: int = 2):
    """Byte-level BPE over SVG texts -> `PreTrainedTokenizerFast` (ids 0-5 are SPECIAL_TOKENS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} cannot hold the 256 bytes and {len(SPECIAL_TOKENS)} special tokens")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_svg_tokenizer(tok)


def wrap_svg_tokenizer(tok):
    """A `tokenizers.Tokenizer` holding SPECIAL_TOKENS -> `PreTrainedTokenizerFast` that knows their roles."""
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        additional_special_tokens=[SVG_START_TOKEN, SVG_END_TOKEN, IMAGE_START_TOKEN, CAPTION_START_TOKEN],
        clean_up_tokenization_spaces=False)  # the clean-up would rewrite " ." and break round trips


def special_token_ids(tokenizer) -> dict[str, int]:
    """The special-token ids a model config needs (StarVectorConfig's names), looked up in `tokenizer`."""
    names = dict(eos_token_id=EOS_TOKEN, pad_token_id=PAD_TOKEN, svg_start_token_id=SVG_START_TOKEN,
                 svg_end_token_id=SVG_END_TOKEN, image_start_token_id=IMAGE_START_TOKEN)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in names.items()}
    missing = [names[k] for k, v in ids.items() if v is None or v == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    return ids
