"""MV-Adapter (huanngzh/MV-Adapter): multi-view consistent generation as a plug-in adapter on a
frozen diffusers UNet. cameras.py (camera sets, Plücker ray maps), attention.py (decoupled
multi-view / reference attention processors and the adapter model), condition.py (camera
condition encoder, noise-schedule shift), official.py (the released adapter's key names)."""
