"""Camera sets and per-pixel Plücker ray maps for multi-view generation.

Conventions (the reference's `mesh_utils/camera.py`): world z is up; an orbit camera at azimuth a,
elevation e and radius r sits at r * (cos e cos a, cos e sin a, sin e) and looks at the origin;
camera-to-world matrices are OpenGL style, columns (right, up, -forward, position). Image rows go
down, so the ray through pixel (row j, column i) leaves the camera at
    x = (i + 0.5 - W/2) * pixel,  y = -(j + 0.5 - H/2) * pixel
with pixel = 1 / focal (perspective, focal = H / 2 / tan(fov / 2), fov vertical) or
ortho_scale / H (orthographic: the square image plane is ortho_scale world units tall).

A Plücker map has 6 channels per pixel: the unit ray direction d and its moment o x d (o any
point on the ray, here its origin). Orthographic rays share d and differ in o; perspective rays
share o and differ in d. (The reference's own orthographic "Plücker" embedding is a constant per
view, see `reference_ortho_maps`; it is what the released weights were trained on.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

PROJECTIONS = ("orthographic", "perspective")

# The reference's fixed views (scripts/inference_*_sd*.py): front, front-right, right, back, left,
# front-left, elevation 0, distance 1.8, orthographic with the image plane 1.1 units wide.
REFERENCE_AZIMUTHS = tuple(float(a - 90) for a in (0, 45, 90, 180, 270, 315))
REFERENCE_RADIUS = 1.8
REFERENCE_ORTHO_SCALE = 1.1


# --------------------------------------------------------------------------- matrices

def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: Sequence[float] = (0.0, 0.0, 1.0)
            ) -> torch.Tensor:
    """(V, 3) camera positions -> (V, 4, 4) OpenGL camera-to-world matrices looking at target."""
    eye = torch.as_tensor(eye, dtype=torch.float32).reshape(-1, 3)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=torch.float32).expand_as(eye)
    forward = F.normalize(target - eye, dim=-1)
    up = torch.as_tensor(up, dtype=torch.float32).expand_as(eye)
    right = torch.linalg.cross(forward, up, dim=-1)
    if (right.norm(dim=-1) < 1e-6).any():
        raise ValueError("look_at: a camera looks straight along the up vector (elevation +-90 deg); "
                         "pass another `up` for it")
    right = F.normalize(right, dim=-1)
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.eye(4).repeat(len(eye), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    return c2w


def orbit_positions(azimuths: torch.Tensor, elevations: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Degrees -> (V, 3) positions on a z-up sphere."""
    a, e = torch.deg2rad(azimuths), torch.deg2rad(elevations)
    return radius[:, None] * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], dim=-1)


# --------------------------------------------------------------------------- camera sets

@dataclass
class CameraSet:
    """V cameras of one object: camera-to-world matrices plus one shared projection."""
    c2w: torch.Tensor                      # (V, 4, 4) OpenGL camera-to-world
    projection: str = "orthographic"
    ortho_scale: float = REFERENCE_ORTHO_SCALE   # world units the image spans vertically (orthographic)
    fov: float = 40.0                      # vertical field of view in degrees (perspective)

    def __post_init__(self):
        self.c2w = torch.as_tensor(self.c2w, dtype=torch.float32)
        if self.c2w.ndim == 2:
            self.c2w = self.c2w[None]
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4) or len(self.c2w) == 0:
            raise ValueError(f"cameras: expected (V, 4, 4) camera-to-world matrices, got {tuple(self.c2w.shape)}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"cameras: projection {self.projection!r} is not one of {PROJECTIONS}")
        if self.projection == "orthographic" and not self.ortho_scale > 0:
            raise ValueError(f"cameras: ortho_scale must be > 0, got {self.ortho_scale}")
        if self.projection == "perspective" and not 0 < self.fov < 180:
            raise ValueError(f"cameras: fov must be in (0, 180) degrees, got {self.fov}")

    def __len__(self) -> int:
        return len(self.c2w)

    @property
    def positions(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    @property
    def forward(self) -> torch.Tensor:
        return -self.c2w[:, :3, 2]

    def plucker(self, height: int, width: int | None = None) -> torch.Tensor:
        """(V, 6, H, W) per-pixel rays: channels 0-2 unit direction d, 3-5 moment o x d."""
        return plucker_maps(self, height, width)


def orbit_cameras(azimuths: Sequence[float], elevations: float | Sequence[float] = 0.0,
                  radius: float | Sequence[float] = REFERENCE_RADIUS, projection: str = "orthographic",
                  ortho_scale: float = REFERENCE_ORTHO_SCALE, fov: float = 40.0) -> CameraSet:
    """Cameras on a sphere around the origin; a scalar elevation or radius applies to every view."""
    azimuths = torch.as_tensor([float(a) for a in azimuths], dtype=torch.float32)
    if azimuths.ndim != 1 or len(azimuths) == 0:
        raise ValueError("cameras: azimuths must be a non-empty list of degrees")
    n = len(azimuths)

    def per_view(value, what):
        t = torch.as_tensor(value, dtype=torch.float32).flatten()
        if len(t) == 1:
            return t.expand(n).clone()
        if len(t) != n:
            raise ValueError(f"cameras: {len(t)} {what} for {n} azimuths (give one or one per view)")
        return t

    elevations, radius = per_view(elevations, "elevations"), per_view(radius, "radii")
    if (radius <= 0).any():
        raise ValueError("cameras: radius must be > 0")
    if (elevations.abs() >= 90).any():
        raise ValueError("cameras: elevations must lie strictly between -90 and 90 degrees")
    return CameraSet(look_at(orbit_positions(azimuths, elevations, radius)), projection, ortho_scale, fov)


def evenly_spaced_cameras(num_views: int, elevation: float = 0.0, start_azimuth: float = -90.0, **kwargs
                          ) -> CameraSet:
    """num_views cameras 360/num_views degrees apart, the first one in front (the reference's azimuth -90)."""
    if num_views < 1:
        raise ValueError(f"cameras: num_views must be >= 1, got {num_views}")
    return orbit_cameras([start_azimuth + 360.0 * i / num_views for i in range(num_views)], elevation, **kwargs)


def reference_cameras() -> CameraSet:
    """The reference's 6 fixed orthographic horizontal views (the released adapters' cameras)."""
    return orbit_cameras(REFERENCE_AZIMUTHS, 0.0, REFERENCE_RADIUS, "orthographic", REFERENCE_ORTHO_SCALE)


# --------------------------------------------------------------------------- ray maps

def _image_plane(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre offsets from the image centre in pixels: x right, y up, each (H, W)."""
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    return i + 0.5 - width / 2, -(j + 0.5 - height / 2)


def ray_origins_and_directions(cameras: CameraSet, height: int, width: int | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, H, W, 3) world-space ray origins and unit directions through every pixel centre."""
    width = height if width is None else width
    if height < 1 or width < 1:
        raise ValueError(f"plucker: image size must be >= 1, got {height}x{width}")
    x, y = _image_plane(height, width)
    right, up, back, eye = (cameras.c2w[:, None, None, :3, k] for k in range(4))
    if cameras.projection == "perspective":
        focal = height / 2 / math.tan(math.radians(cameras.fov) / 2)
        directions = F.normalize(x[..., None] / focal * right + y[..., None] / focal * up - back, dim=-1)
        origins = eye.expand_as(directions)
    else:
        pixel = cameras.ortho_scale / height
        origins = eye + x[..., None] * pixel * right + y[..., None] * pixel * up
        directions = (-back).expand_as(origins)
    return origins, directions


def plucker_maps(cameras: CameraSet, height: int, width: int | None = None) -> torch.Tensor:
    """(V, 6, H, W): unit direction d and moment o x d of each pixel's ray."""
    origins, directions = ray_origins_and_directions(cameras, height, width)
    moment = torch.linalg.cross(origins, directions, dim=-1)
    return torch.cat([directions, moment], dim=-1).permute(0, 3, 1, 2).contiguous()


def reference_ortho_maps(cameras: CameraSet, height: int, width: int | None = None) -> torch.Tensor:
    """The reference's orthographic embedding (`get_plucker_embeds_from_cameras_ortho`): per view a
    constant map of (view direction, unit camera position): what the released weights expect."""
    width = height if width is None else width
    per_view = torch.cat([F.normalize(cameras.forward, dim=-1), F.normalize(cameras.positions, dim=-1)], dim=-1)
    return per_view[:, :, None, None].expand(-1, -1, height, width).contiguous()
