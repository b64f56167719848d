"""VDT: video diffusion transformers via mask modelling (prediction, interpolation, completion, animation)."""

DEFAULT_MODEL = "vdt-physics-M"  # the shipped checkpoint; here so that CLI modules import no torch
TASKS = ("generate", "predict", "backward", "interpolate", "complete", "animate")
