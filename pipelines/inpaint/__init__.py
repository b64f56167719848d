"""PUT pluralistic image inpainting."""
