"""MeshAnything (V1 and V2): point cloud with normals -> artist-like triangle mesh."""
