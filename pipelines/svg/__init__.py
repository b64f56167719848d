"""Image -> SVG code (StarVector): the model, its SVG tokenizer and data, the training recipe."""

DEFAULT_MODEL = "starvector-icons-S"  # the shipped checkpoint; here so that CLI modules import no torch
