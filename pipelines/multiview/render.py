"""A small CPU z-buffer rasteriser (numpy) for multi-view training data: no OpenGL needed.

`render_mesh(vertices, faces, cameras, size)` draws a triangle mesh from every camera of a
`cameras.CameraSet` with the same conventions (OpenGL camera-to-world, image rows going down,
pixel centres at (i + 0.5 - W/2) * pixel, orthographic `ortho_scale` or perspective vertical `fov`),
so a rendered pixel lies on the ray `cameras.ray_origins_and_directions` gives for it.

Per view: `rgb` (H, W, 3) in [0, 1] over a white background (Lambert: ambient + diffuse * max(0, n.l)
times the flat object colour), `alpha` (H, W) pixel coverage, `mask` (alpha >= 0.5), `position`
(H, W, 3) world coordinates and `normal` (H, W, 3) unit world normals of the visible surface (0 on
the background), `depth` (H, W) distance along the view axis (inf on the background).

HOW: every triangle is projected, the pixels of its bounding box are tested against its edges
(barycentrics) all at once, and for each pixel the nearest fragment wins (a sort, not a loop).
Perspective views interpolate with perspective-correct barycentrics. `supersample` s renders at
s x size and box-filters down (anti-aliased edges, fractional alpha). Normals are smooth (vertex
normals) unless a corner's vertex normal is more than `crease_deg` from its face normal (cube edges
stay sharp); they are flipped toward the camera, so meshes with inconsistent winding still shade.
"""
from __future__ import annotations

import math

import numpy as np

from .cameras import CameraSet

BACKGROUND = 1.0


def face_corner_normals(vertices: np.ndarray, faces: np.ndarray, crease_deg: float = 35.0) -> np.ndarray:
    """(F, 3, 3) normals at each face corner: the area-weighted vertex normal, or the face normal
    where they differ by more than `crease_deg`."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face_n = cross / np.maximum(np.linalg.norm(cross, axis=-1, keepdims=True), 1e-12)
    vert_n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vert_n, faces[:, k], cross)
    vert_n /= np.maximum(np.linalg.norm(vert_n, axis=-1, keepdims=True), 1e-12)
    corner = vert_n[faces]
    sharp = (corner * face_n[:, None]).sum(-1) < math.cos(math.radians(crease_deg))
    corner[sharp] = np.broadcast_to(face_n[:, None], corner.shape)[sharp]
    return corner


def _project(points: np.ndarray, c2w: np.ndarray, projection: str, size: int, ortho_scale: float, fov: float):
    """World points (N, 3) -> continuous pixel coords (col, row) with pixel centres at integers, and depth."""
    right, up, back, eye = (c2w[:3, k] for k in range(4))
    rel = points - eye
    x, y, depth = rel @ right, rel @ up, -(rel @ back)
    if projection == "perspective":
        focal = size / 2 / math.tan(math.radians(fov) / 2)
        safe = np.where(depth > 1e-6, depth, 1e-6)
        px, py = x / safe * focal, y / safe * focal
    else:
        pixel = ortho_scale / size
        px, py = x / pixel, y / pixel
    return px + size / 2 - 0.5, -py + size / 2 - 0.5, depth


def rasterize(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, projection: str, size: int,
              ortho_scale: float, fov: float):
    """One view -> (pixel index, face index, perspective-correct barycentrics (P, 3)) of the visible fragments."""
    col, row, depth = _project(vertices, c2w, projection, size, ortho_scale, fov)
    tri_c, tri_r, tri_d = col[faces], row[faces], depth[faces]            # (F, 3)
    keep = (tri_d > 1e-4).all(1)                                           # drop triangles behind the camera
    lo_c = np.clip(np.ceil(tri_c.min(1)), 0, size).astype(np.int64)
    hi_c = np.clip(np.floor(tri_c.max(1)), -1, size - 1).astype(np.int64)
    lo_r = np.clip(np.ceil(tri_r.min(1)), 0, size).astype(np.int64)
    hi_r = np.clip(np.floor(tri_r.max(1)), -1, size - 1).astype(np.int64)
    w, h = hi_c - lo_c + 1, hi_r - lo_r + 1
    keep &= (w > 0) & (h > 0)
    idx = np.nonzero(keep)[0]
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0)
    w, h = w[idx], h[idx]
    counts = w * h
    face = np.repeat(idx, counts)                                          # one row per (face, bbox pixel)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    wf = np.repeat(w, counts)
    pc = lo_c[face] + local % wf
    pr = lo_r[face] + local // wf
    (c0, c1, c2), (r0, r1, r2) = tri_c[face].T, tri_r[face].T
    area = (c1 - c0) * (r2 - r0) - (c2 - c0) * (r1 - r0)
    ok = np.abs(area) > 1e-12
    area = np.where(ok, area, 1.0)
    b1 = ((pc - c0) * (r2 - r0) - (c2 - c0) * (pr - r0)) / area
    b2 = ((c1 - c0) * (pr - r0) - (pc - c0) * (r1 - r0)) / area
    b0 = 1 - b1 - b2
    eps = -1e-9
    inside = ok & (b0 >= eps) & (b1 >= eps) & (b2 >= eps)
    face, pc, pr = face[inside], pc[inside], pr[inside]
    bary = np.stack([b0[inside], b1[inside], b2[inside]], 1)
    d = tri_d[face]
    if projection == "perspective":  # interpolate 1/depth linearly on screen, attributes with weights b_i / d_i
        bary = bary / d
        inv = bary.sum(1, keepdims=True)
        bary, frag_depth = bary / inv, 1 / inv[:, 0]
    else:
        frag_depth = (bary * d).sum(1)
    pixel = pr * size + pc
    order = np.lexsort((frag_depth, pixel))                                # by pixel, nearest first
    pixel, first = np.unique(pixel[order], return_index=True)
    pick = order[first]
    return pixel, face[pick], bary[pick], frag_depth[pick]


def _downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return image.reshape(h // factor, factor, w // factor, factor, *image.shape[2:]).mean(axis=(1, 3))


def render_view(vertices: np.ndarray, faces: np.ndarray, c2w: np.ndarray, projection: str = "orthographic",
                size: int = 64, ortho_scale: float = 1.1, fov: float = 40.0, color=(0.8, 0.2, 0.2),
                light=(0.3, -0.5, 0.8), ambient: float = 0.35, supersample: int = 1,
                corner_normals: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One view of a mesh (see the module docstring for the outputs)."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    c2w = np.asarray(c2w, np.float64)
    s = int(supersample)
    big = size * s
    if corner_normals is None:
        corner_normals = face_corner_normals(vertices, faces)
    pixel, face, bary, depth = rasterize(vertices, faces, c2w, projection, big, ortho_scale, fov)
    position = np.einsum("pk,pkc->pc", bary, vertices[faces[face]])
    normal = np.einsum("pk,pkc->pc", bary, corner_normals[face])
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    to_camera = (c2w[:3, 3] - position) if projection == "perspective" else np.broadcast_to(c2w[:3, 2], position.shape)
    flip = (normal * to_camera).sum(-1) < 0
    normal[flip] *= -1
    light = np.asarray(light, np.float64)
    light = light / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * np.clip(normal @ light, 0, None)
    frag_rgb = np.clip(shade[:, None] * np.asarray(color, np.float64)[None], 0, 1)

    def canvas(values, fill, channels):
        out = np.full((big * big, channels), fill, np.float64)
        out[pixel] = values.reshape(len(pixel), channels)
        return out.reshape(big, big, channels)

    coverage = canvas(np.ones(len(pixel)), 0.0, 1)[..., 0]
    rgb = canvas(frag_rgb, BACKGROUND, 3)
    pos, nor = canvas(position, 0.0, 3), canvas(normal, 0.0, 3)
    dep = canvas(depth, np.inf, 1)[..., 0]
    alpha = _downsample(coverage, s)
    out = {"rgb": _downsample(rgb, s), "alpha": alpha, "mask": alpha >= 0.5}
    if s == 1:
        out.update(position=pos, normal=nor, depth=dep)
    else:  # geometry: the mean over the covered samples of each pixel (the nearest sample's depth)
        weight = np.maximum(_downsample(coverage, s), 1e-12)[..., None]
        out["position"] = np.where(alpha[..., None] > 0, _downsample(pos, s) / weight, 0.0)
        n = _downsample(nor, s)
        out["normal"] = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        out["depth"] = dep.reshape(size, s, size, s).min(axis=(1, 3))
    return out


def render_mesh(vertices: np.ndarray, faces: np.ndarray, cameras: CameraSet, size: int = 64, **kwargs
                ) -> dict[str, np.ndarray]:
    """Every view of `cameras` -> the outputs of `render_view` stacked on a leading (V,) axis."""
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"render: expected vertices (N, 3) and triangle faces (F, 3), got "
                         f"{vertices.shape} and {faces.shape}")
    if size < 1:
        raise ValueError(f"render: size must be >= 1, got {size}")
    kwargs.setdefault("corner_normals", face_corner_normals(vertices, faces))
    views = [render_view(vertices, faces, c2w.numpy(), cameras.projection, size, cameras.ortho_scale,
                         cameras.fov, **kwargs) for c2w in cameras.c2w]
    return {key: np.stack([v[key] for v in views]) for key in views[0]}
