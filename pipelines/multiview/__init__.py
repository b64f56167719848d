"""MV-Adapter (huanngzh/MV-Adapter): multi-view consistent generation as a plug-in adapter on a
frozen diffusers UNet. cameras.py (camera sets, Plücker ray maps), attention.py (decoupled
multi-view / reference attention processors and the adapter model), condition.py (camera
condition encoder, noise-schedule shift), official.py (the released adapter's key names)."""

# shipped checkpoint names (here, not in pipeline.py: `genstudio --help` imports the CLI without torch)
DEFAULT_MODEL = "mv-adapter-S"     # the adapter: what identifies the task's checkpoint
DEFAULT_BASE = "mv-base-S"         # the frozen base UNet (+ scheduler) it was trained on
MAX_VIEWS = 16                     # views per call: multi-view attention grows with V (full layout: V^2)
MAX_STEPS = 1000
MAX_PROMPT_CHARS = 500
