"""Text -> SVG (`genstudio text2svg`): SVGFusion's VP-VAE + Vector-Space DiT on the shared core."""

DEFAULT_MODEL = "svgfusion-icons-S"  # the shipped checkpoint; here so that CLI modules import no torch
MAX_PROMPT_CHARS = 500  # one prompt's length (README: Limits and safety); the CLI checks it before loading
SCHEDULERS = ("ddim", "dpm", "euler", "ddpm")  # the sampling schedulers --scheduler may name
MAX_AUTOGUIDANCE = 10.0  # the largest weight of guidance away from a checkpoint's guide model
