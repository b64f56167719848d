"""Surface fit of a generated mesh to the input (our addition, not in MeshAnything).

The decoder writes vertices on a 128-bin grid from a 32-latent summary of the input, so its meshes
have the right kind of topology but drift from the input's surface. `fit_to_points` keeps the faces
(connectivity and count: the mesh stays the model's) and moves the vertices by gradient descent on
the squared Chamfer distance between the mesh's area-sampled surface and the input points, with a
Laplacian term that keeps each vertex's offset from its neighbours' mean near the generated one
(so the fit moves pieces rather than crumpling them). Scale-free: it runs in the target's unit box.
Nearest neighbours come from KD-trees (scipy) without gradient, and the loss is written on those pairs:
the same value and gradient as the min over a dense distance matrix, at a fraction of its cost.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from genstudio.limits import check_time

MAX_FIT_STEPS = 2000


def _laplacian(faces: torch.Tensor, num_vertices: int):
    """x -> x minus the mean of each vertex's edge neighbours (uniform weights)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])
    degree = torch.zeros(num_vertices).index_add_(0, edges[:, 0], torch.ones(len(edges))).clamp_min(1)

    def apply(x):
        return x - torch.zeros_like(x).index_add_(0, edges[:, 0], x[edges[:, 1]]) / degree[:, None]
    return apply


@torch.no_grad()
def _area_weights(triangles: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]).norm(dim=1)


def fit_to_points(vertices: np.ndarray, faces: np.ndarray, target: np.ndarray, steps: int = 150, lr: float = 3e-3,
                  smoothness: float = 0.1, samples: int = 2048, seed: int = 0) -> np.ndarray:
    """(V, 3) vertices moved so the surface of (vertices, faces) fits the (N, 3) `target` points;
    faces unchanged. `steps` Adam steps of `lr` (in units of the target's bounding box), each on
    `samples` surface points and as many target points; `smoothness` weighs the Laplacian term."""
    if not 0 <= steps <= MAX_FIT_STEPS:
        raise ValueError(f"fit steps must be between 0 and {MAX_FIT_STEPS}, got {steps}")
    vertices = np.asarray(vertices, np.float64)
    if steps == 0 or len(faces) == 0 or len(target) == 0:
        return vertices
    lo, hi = target.min(0), target.max(0)
    center, scale = (lo + hi) / 2, max(float((hi - lo).max()), 1e-9)
    g = torch.Generator().manual_seed(int(seed) % 2**63)
    start = torch.from_numpy((vertices - center) / scale).float()
    face_index = torch.from_numpy(np.asarray(faces, np.int64))
    points = torch.from_numpy((np.asarray(target, np.float64) - center) / scale).float()
    laplacian = _laplacian(face_index, len(start))
    rest = laplacian(start)
    moved = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([moved], lr=lr)
    for _ in range(int(steps)):
        check_time()  # --max-seconds
        triangles = moved[face_index]
        area = _area_weights(triangles)
        if not torch.isfinite(area).all() or area.sum() <= 0:
            break
        pick = torch.multinomial(area, samples, replacement=True, generator=g)
        uv = torch.rand(samples, 2, generator=g)
        uv = torch.where(uv.sum(1, keepdim=True) > 1, 1 - uv, uv)  # uniform on the triangle
        t = triangles[pick]
        surface = t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])
        near = points[torch.randint(len(points), (samples,), generator=g)]
        to_near = torch.from_numpy(cKDTree(near.numpy()).query(surface.detach().numpy())[1])
        to_surface = torch.from_numpy(cKDTree(surface.detach().numpy()).query(near.numpy())[1])
        loss = ((surface - near[to_near]).pow(2).sum(1).mean() + (near - surface[to_surface]).pow(2).sum(1).mean()
                + smoothness * (laplacian(moved) - rest).pow(2).sum(1).mean())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return moved.detach().double().numpy() * scale + center


__all__ = ["fit_to_points", "MAX_FIT_STEPS"]
