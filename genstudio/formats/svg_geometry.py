"""The scene the differentiable rasteriser (svg_diff) draws: SVG elements whose numbers are tensors.

A `Shape` keeps its element's own parameters in one flat tensor (a path's or polygon's points; a
rect's x, y, w, h[, rx, ry]; a circle's cx, cy, r; an ellipse's cx, cy, rx, ry), plus its paint
(colours and opacities as tensors; fill rule, caps, joins as strings). Its outline is a list of
cubic Béziers LINEAR in those parameters, so a constant matrix maps parameters to control points:
lines and quadratics are exact degree-elevated cubics, corners of rounded rects and circles are
kappa quarter-arcs (arcs in paths were converted to cubics when the SVG was read). A `Scene` is
the shapes in painter's order on a width x height canvas. Text I/O: svg_scene.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

KAPPA = 4 * (math.sqrt(2) - 1) / 3  # cubic control distance of a quarter circle
SHAPE_KINDS = ("path", "rect", "circle", "ellipse", "polygon", "polyline", "line")


# ---- The scene ----

@dataclass
class Shape:
    """One SVG element. `params` is a flat tensor whose layout `kind` defines:
    path/polygon/polyline/line: x0, y0, x1, y1, ... (the points); rect: x, y, w, h[, rx, ry];
    circle: cx, cy, r; ellipse: cx, cy, rx, ry. A path's `commands` index its points:
    ("M", i), ("L", i), ("Q", i, j), ("C", i, j, k), ("Z",).
    Paint: `fill` / `stroke` are rgb tensors in [0, 1] or None (no paint)."""
    kind: str
    params: torch.Tensor
    commands: list[tuple] = field(default_factory=list)
    fill: torch.Tensor | None = None
    fill_opacity: torch.Tensor | None = None
    fill_rule: str = "nonzero"
    stroke: torch.Tensor | None = None
    stroke_opacity: torch.Tensor | None = None
    stroke_width: torch.Tensor | None = None
    linecap: str = "butt"
    linejoin: str = "miter"
    _basis: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.kind not in SHAPE_KINDS:
            raise ValueError(f"unknown shape kind {self.kind!r} (expected one of {SHAPE_KINDS})")

    def geometry_parameters(self) -> list[torch.Tensor]:
        return [self.params] + ([self.stroke_width] if self.stroke is not None and self.stroke_width is not None
                                else [])

    def paint_parameters(self) -> list[torch.Tensor]:
        out = []
        if self.fill is not None:
            out += [self.fill, self.fill_opacity]
        if self.stroke is not None:
            out += [self.stroke, self.stroke_opacity]
        return [t for t in out if t is not None]

    def outline(self) -> tuple[torch.Tensor, np.ndarray]:
        """(basis (n*8, P) float64, info (n, 5) int: in_fill, in_stroke, cap_start, cap_end,
        subpath) for the n cubics of the outline; cached until `invalidate()` (after a structure edit)."""
        if self._basis is None:
            matrix, flags = _outline_basis(self)
            self._basis = (torch.from_numpy(matrix), flags)
        return self._basis

    def invalidate(self) -> None:
        self._basis = None


@dataclass
class Scene:
    """Shapes in painter's order on a `width` x `height` canvas (the viewBox, origin at 0, 0)."""
    width: float
    height: float
    shapes: list[Shape] = field(default_factory=list)

    def geometry_parameters(self) -> list[torch.Tensor]:
        return [t for s in self.shapes for t in s.geometry_parameters()]

    def paint_parameters(self) -> list[torch.Tensor]:
        return [t for s in self.shapes for t in s.paint_parameters()]

    def parameters(self) -> list[torch.Tensor]:
        return self.geometry_parameters() + self.paint_parameters()

    def requires_grad_(self, flag: bool = True) -> "Scene":
        for t in self.parameters():
            t.requires_grad_(flag)
        return self

    def clamp_(self) -> "Scene":
        """Keep parameters valid after an optimiser step: colours and opacities in [0, 1], radii,
        sizes and stroke widths >= 0."""
        with torch.no_grad():
            for s in self.shapes:
                for t in s.paint_parameters():
                    t.clamp_(0.0, 1.0)
                if s.stroke_width is not None:
                    s.stroke_width.clamp_(min=0.0)
                if s.kind == "rect":
                    s.params[2:].clamp_(min=0.0)
                    if s.params.numel() == 6:  # rx <= w/2, ry <= h/2
                        s.params[4] = torch.minimum(s.params[4], s.params[2] / 2)
                        s.params[5] = torch.minimum(s.params[5], s.params[3] / 2)
                elif s.kind in ("circle", "ellipse"):
                    s.params[2:].clamp_(min=0.0)
        return self


# ---- Outlines as linear maps from parameters to cubic control points ----

class _Lin:
    """Linear expressions over a shape's P parameters: a 2D point is a (2, P) matrix."""

    def __init__(self, n_params: int):
        self.n = n_params

    def var(self, ix: int, iy: int) -> np.ndarray:
        m = np.zeros((2, self.n))
        m[0, ix], m[1, iy] = 1.0, 1.0
        return m

    def point(self, terms_x: dict[int, float], terms_y: dict[int, float]) -> np.ndarray:
        m = np.zeros((2, self.n))
        for i, c in terms_x.items():
            m[0, i] += c
        for i, c in terms_y.items():
            m[1, i] += c
        return m


def _line(a, b):
    return [a, (2 * a + b) / 3, (a + 2 * b) / 3, b]


def _quad(a, q, b):
    return [a, (a + 2 * q) / 3, (2 * q + b) / 3, b]


def _quarter(a, corner, b):
    """Cubic for a quarter ellipse from a to b whose tangents meet at `corner`."""
    return [a, a + KAPPA * (corner - a), b + KAPPA * (corner - b), b]


def _outline_basis(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """(basis (n*8, P), info (n, 5) int: in_fill, in_stroke, cap_start, cap_end, subpath id)."""
    n_params = int(shape.params.numel())
    lin = _Lin(n_params)
    cubics: list[list[np.ndarray]] = []
    info: list[list[int]] = []
    subpath = 0

    def add(cubic, fill=True, stroke=True):
        cubics.append(cubic)
        info.append([fill, stroke, False, False, subpath])

    def closed_loop(segments):
        for cubic in segments:
            add(cubic)

    def lines(points, closed):
        return [_line(points[k], points[(k + 1) % len(points)]) for k in range(len(points) - (not closed))]

    kind = shape.kind
    if kind == "path":
        pts = [lin.var(2 * i, 2 * i + 1) for i in range(n_params // 2)]
        drawn: list[int] = []  # the current subpath's drawn segments
        start = current = None

        def end_subpath(closed: bool):
            nonlocal subpath
            if drawn and not closed:
                add(_line(pts[current], pts[start]), stroke=False)  # SVG fills open subpaths as closed
                info[drawn[0]][2], info[drawn[-1]][3] = True, True
            if drawn:
                subpath += 1
            drawn.clear()

        for cmd in shape.commands:
            op = cmd[0]
            if op == "M":
                end_subpath(False)
                start = current = cmd[1]
                continue
            if op == "Z":
                if current is not None and drawn:
                    add(_line(pts[current], pts[start]))
                    end_subpath(True)
                current = start
                continue
            if current is None:
                raise ValueError("path data must start with M")
            if op == "L":
                add(_line(pts[current], pts[cmd[1]]))
            elif op == "Q":
                add(_quad(pts[current], pts[cmd[1]], pts[cmd[2]]))
            elif op == "C":
                add([pts[current], pts[cmd[1]], pts[cmd[2]], pts[cmd[3]]])
            else:
                raise ValueError(f"unknown path command {op!r}")
            drawn.append(len(cubics) - 1)
            current = cmd[-1]
        end_subpath(False)
    elif kind in ("polygon", "polyline", "line"):
        pts = [lin.var(2 * i, 2 * i + 1) for i in range(n_params // 2)]
        if kind == "polygon":
            closed_loop(lines(pts, True))
        elif len(pts) >= 2:
            for cubic in lines(pts, False):
                add(cubic, fill=kind == "polyline")
            info[0][2], info[-1][3] = True, True
            if kind == "polyline":
                add(_line(pts[-1], pts[0]), stroke=False)
    elif kind == "rect":
        x, y, w, h = 0, 1, 2, 3
        P = lin.point
        if n_params == 4:
            closed_loop(lines([P({x: 1}, {y: 1}), P({x: 1, w: 1}, {y: 1}), P({x: 1, w: 1}, {y: 1, h: 1}),
                               P({x: 1}, {y: 1, h: 1})], True))
        else:
            rx, ry = 4, 5
            a = [P({x: 1, rx: 1}, {y: 1}), P({x: 1, w: 1, rx: -1}, {y: 1}),       # top edge
                 P({x: 1, w: 1}, {y: 1, ry: 1}), P({x: 1, w: 1}, {y: 1, h: 1, ry: -1}),  # right
                 P({x: 1, w: 1, rx: -1}, {y: 1, h: 1}), P({x: 1, rx: 1}, {y: 1, h: 1}),  # bottom
                 P({x: 1}, {y: 1, h: 1, ry: -1}), P({x: 1}, {y: 1, ry: 1})]            # left
            c = [P({x: 1, w: 1}, {y: 1}), P({x: 1, w: 1}, {y: 1, h: 1}), P({x: 1}, {y: 1, h: 1}), P({x: 1}, {y: 1})]
            for k in range(4):
                add(_line(a[2 * k], a[2 * k + 1]))
                add(_quarter(a[2 * k + 1], c[k], a[(2 * k + 2) % 8]))
    elif kind in ("circle", "ellipse"):
        cx, cy, rx = 0, 1, 2
        ry = 2 if kind == "circle" else 3
        P = lin.point
        ends = [P({cx: 1, rx: 1}, {cy: 1}), P({cx: 1}, {cy: 1, ry: 1}), P({cx: 1, rx: -1}, {cy: 1}),
                P({cx: 1}, {cy: 1, ry: -1})]
        corners = [P({cx: 1, rx: 1}, {cy: 1, ry: 1}), P({cx: 1, rx: -1}, {cy: 1, ry: 1}),
                   P({cx: 1, rx: -1}, {cy: 1, ry: -1}), P({cx: 1, rx: 1}, {cy: 1, ry: -1})]
        closed_loop([_quarter(ends[k], corners[k], ends[(k + 1) % 4]) for k in range(4)])
    if not cubics:
        return np.zeros((0, n_params)), np.zeros((0, 5), np.int64)
    matrix = np.stack([np.stack(c) for c in cubics])  # (n, 4, 2, P)
    return matrix.reshape(-1, n_params), np.array(info, np.int64)
