"""Text -> SVG (`genstudio text2svg`): SVGFusion's VP-VAE + Vector-Space DiT on the shared core."""

DEFAULT_MODEL = "svgfusion-icons-S"  # the shipped checkpoint; here so that CLI modules import no torch
