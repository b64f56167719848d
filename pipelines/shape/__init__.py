"""VAT (variational tokenizer: shape -> a few hundred bytes of multi-scale tokens) and G3PT (text/class -> shape)."""
DEFAULT_MODEL = "shape-S"  # checkpoints/shape-S: vat/ + g3pt/ (pipeline.py says how a folder is read)
