"""File formats that more than one pipeline reads or writes, one module per format.

- `svg`: safe parsing, the canonical normal form, rasterising, size statistics (`SVGError`).
- `svg_safety`: turning raw model output into a safe standalone SVG (repair, validate, sanitise).
- `svg_tokenizer`: the byte-level BPE over SVG text and its special tokens.
- `mesh`: reading meshes and point clouds (.obj/.ply/.glb/.stl/.off/.npy), writing meshes.
- `video`: reading and writing videos (GIF, MP4, ..., folders of frames).

Nothing here imports a pipeline; the modules are imported one by one (no eager imports here).
"""
