"""VDT: video diffusion transformers via mask modelling (prediction, interpolation, completion, animation)."""
