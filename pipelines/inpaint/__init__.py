"""PUT pluralistic image inpainting."""

DEFAULT_MODEL = "put-photos-S"  # the shipped checkpoint; here so that CLI modules import no torch
