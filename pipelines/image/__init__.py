"""Class-conditional latent DiT images (`genstudio generate`): the DiT core's own pipeline and SIMS's testbed."""

DEFAULT_MODEL = "dit-glyphs-S"  # the shipped checkpoint; here so that CLI modules import no torch
