"""File formats that more than one pipeline reads or writes, one module per format.

- `svg`: safe parsing, the canonical normal form, rasterising, size statistics (`SVGError`).
- `svg_safety`: turning raw model output into a safe standalone SVG (repair, validate, sanitise).
- `svg_tokenizer`: the byte-level BPE over SVG text and its special tokens.
- `svg_geometry`: `Scene` and `Shape`, SVG elements whose numbers are tensors, outlines as cubics.
- `svg_diff`: a differentiable SVG rasteriser in pure PyTorch (`render`).
- `svg_scene`: SVG text <-> `Scene`, primitives kept (`scene_from_svg`, `scene_to_svg`).
- `svg_refine`: fit an SVG's numbers (and add/prune shapes) to an image (`refine_svg`).
- `mesh`: reading meshes and point clouds (.obj/.ply/.glb/.stl/.off/.npy), writing meshes.
- `video`: reading and writing videos (GIF, MP4, ..., folders of frames).

Nothing here imports a pipeline; the modules are imported one by one (no eager imports here).
"""
