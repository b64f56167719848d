"""Image -> SVG code (StarVector): the model, its SVG tokenizer and data, the training recipe."""
