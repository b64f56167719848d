"""MeshAnything (V1 and V2): point cloud with normals -> artist-like triangle mesh."""

DEFAULT_MODEL = "meshanything-urdf-XS"  # the shipped checkpoint; here so that CLI modules import no torch
