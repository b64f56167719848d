"""VAT (variational tokenizer: shape -> a few hundred bytes of multi-scale tokens) and, later, G3PT."""
