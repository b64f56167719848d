"""A differentiable SVG rasteriser in pure PyTorch: a `Scene` of shapes -> an (H, W, 3) image whose
gradients reach every coordinate, radius, stroke width, colour and opacity.

    scene = scene_from_svg(svg_text)                  # genstudio.formats.svg_scene
    image = render(scene, 128)                         # (128, 128, 3) in [0, 1], white background
    loss = (image - target).abs().mean(); loss.backward()

Design (one pass per call, no compiled extension):
- Geometry (svg_geometry). Every shape keeps its own parameters in one flat tensor; its outline
  is a list of cubic Béziers LINEAR in them: one matrix product per shape gives the controls.
- Flattening. Each cubic is sampled at a number of points chosen from its (detached) length, so
  edges stay about `max_edge` pixels long; the points are differentiable in the control points.
- Fill. A winding number per pixel centre comes from the signed crossings of each edge with the
  pixel rows (a scatter plus a cumulative sum: no gradient, no pixels x edges product). Only pixels
  within a band of a few tau around an edge get a differentiable coverage
  sigmoid(+-distance to the nearest boundary edge / tau); an edge counts as a boundary for a pixel
  only if crossing it changes inside/outside under the fill rule (so the inner edges of a
  self-intersecting star under nonzero draw no seam). Work: pixels in each edge's dilated
  bounding box, never the whole canvas times every edge.
- Stroke. The signed distance to the polyline minus half the width, minimised per pixel over the
  same band pairs; round joins, and round / butt / square caps on open subpaths. Coverage is the
  logistic filter of the band: sigmoid(-sdf / tau) - sigmoid(-(sdf + width) / tau); miter
  joins add the tip between the offset lines at corners between segments (up to the miter
  limit, 4); bevel joins and joins past the limit are drawn round. `paint-order` is not read.
- Compositing. Fill then stroke per shape, in painter's order, 'over' onto the background, with
  an analytic backward (no autograd graph over L full-canvas layers).

Anti-aliasing is a logistic filter of scale `tau` pixels (cairo uses the exact box filter);
with DEFAULT_TAU the mean absolute difference from cairosvg on the test icons is 0.0036 at 64 px
and 0.0020 at 128 px (pixels in [0, 1]). A larger tau blurs edges and widens the band, which
lengthens the reach of the gradients (use it early in an optimisation).

Speed (2 shared cores, one torch thread, 20 filled paths, forward + backward): about 12-20 ms
at 64 px and 30-45 ms at 128 px; a dense pixels x edges version of the same model takes 15-30x
longer. Run it with one thread on shared cores: two contending threads were 10-40x slower.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .svg_geometry import Scene, Shape  # noqa: F401  (the scene is part of this module's API)

DEFAULT_TAU = 0.18      # pixels: logistic anti-aliasing scale (std 0.33 px, close to a 1-px box filter)
BAND = 6.0              # pixels within BAND * tau of an edge get the smooth coverage (sigmoid(6) = 0.9975)
MAX_EDGE = 2.0          # pixels: flattened edges are about this long
BIG = 1e4               # "no edge near this pixel"


# ---- Rasterising ----

def _ranges(start: torch.Tensor, count: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenated integer ranges start[i] .. start[i] + count[i] - 1: (owner i, value) per entry."""
    owner = torch.repeat_interleave(torch.arange(len(count)), count)
    return owner, start[owner] + torch.arange(len(owner)) - (torch.cumsum(count, 0) - count)[owner]


def _pixel_pairs(lo: torch.Tensor, hi: torch.Tensor, H: int, W: int):
    """All (item, pixel) pairs whose pixel centre lies in the item's box [lo, hi] (px, (E, 2)):
    (item index, flat pixel index, pixel centre x, y), no gradient."""
    j0 = torch.ceil(lo[:, 0] - 0.5).clamp(0, W).long()
    j1 = torch.floor(hi[:, 0] - 0.5).clamp(-1, W - 1).long()
    i0 = torch.ceil(lo[:, 1] - 0.5).clamp(0, H).long()
    i1 = torch.floor(hi[:, 1] - 0.5).clamp(-1, H - 1).long()
    nx, ny = (j1 - j0 + 1).clamp(min=0), (i1 - i0 + 1).clamp(min=0)
    row_item, py = _ranges(i0, ny)          # one entry per (item, pixel row) ...
    row, px = _ranges(j0[row_item], nx[row_item])  # ... then one per pixel of that row
    item, py = row_item[row], py[row]
    return item, py * W + px, px, py


def _winding(a: torch.Tensor, b: torch.Tensor, layer: torch.Tensor, n_layers: int, H: int, W: int) -> torch.Tensor:
    """Winding number at every pixel centre for each layer, (n_layers, H, W) int: each edge adds its
    direction to the pixels right of where it crosses a pixel row (scatter, then cumulative sum)."""
    ylo, yhi = torch.minimum(a[:, 1], b[:, 1]), torch.maximum(a[:, 1], b[:, 1])
    r0 = torch.ceil(ylo - 0.5).clamp(0, H).long()
    r1 = (torch.ceil(yhi - 0.5) - 1).clamp(-1, H - 1).long()  # rows with ylo <= centre < yhi
    edge, row = _ranges(r0, (r1 - r0 + 1).clamp(min=0))
    ea, eb = a[edge], b[edge]
    yc = row.to(a.dtype) + 0.5
    x = ea[:, 0] + (yc - ea[:, 1]) * (eb[:, 0] - ea[:, 0]) / (eb[:, 1] - ea[:, 1])
    col = (torch.floor(x - 0.5) + 1).clamp(0, W).long()
    direction = torch.where(eb[:, 1] > ea[:, 1], 1, -1).to(torch.int32)
    delta = torch.zeros(n_layers * H * (W + 1), dtype=torch.int32)
    delta.index_put_(((layer[edge] * H + row) * (W + 1) + col,), direction, accumulate=True)
    return delta.view(n_layers, H, W + 1).cumsum(-1)[..., :W]


def _inside(winding: torch.Tensor, evenodd: torch.Tensor) -> torch.Tensor:
    return torch.where(evenodd, winding % 2 != 0, winding != 0)


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ab, ap = b - a, p - a
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0, 1)
    q = ap - t[:, None] * ab
    return torch.sqrt((q * q).sum(-1) + 1e-12)  # the epsilon keeps the gradient finite at 0


def _stroke_sdf(p, a, b, width, cap, first, last) -> torch.Tensor:
    """Signed distance (negative inside) from pixel centres p to the stroke of edges a->b of the
    given widths; cap: -1 round, 0 butt, 1 square, applied beyond the first / last edge's end."""
    ab, ap = b - a, p - a
    length2 = (ab * ab).sum(-1).clamp(min=1e-12)
    t = (ap * ab).sum(-1) / length2
    q = ap - t.clamp(0, 1)[:, None] * ab
    sdf = torch.sqrt((q * q).sum(-1) + 1e-12) - width / 2
    capped = (cap >= 0) & ((first & (t < 0)) | (last & (t > 1)))
    if capped.any():
        length = torch.sqrt(length2)
        along = torch.where(t < 0, -t, t - 1) * length
        perp = _cross(ab, ap).abs() / length
        box = torch.maximum(perp - width / 2, along - cap.clamp(min=0) * width / 2)
        sdf = torch.where(capped, box, sdf)
    return sdf


def _clip_caps(sdf, p, a, b, first, last, subpath, n_subpaths, edge, width, cap):
    """Butt and square caps cut the stroke at a plane through the subpath's end: without the cut,
    the round joins between the first few flattened edges would poke out past the cap. Applied to
    edges that start within a stroke width of that end (a path curling back further is not cut)."""
    if not bool((first | last).any()) or not bool((cap >= 0).any()):
        return sdf
    for flag, is_start in ((first, True), (last, False)):
        if not bool(flag.any()):
            continue
        index = torch.full((n_subpaths,), -1, dtype=torch.long)
        index[subpath[flag]] = torch.nonzero(flag).flatten()
        end_edge = index[subpath[edge]]
        valid = (end_edge >= 0) & (cap >= 0)
        if not bool(valid.any()):
            continue
        e = end_edge.clamp(min=0)
        ea, eb = a.index_select(0, e), b.index_select(0, e)
        point, direction = (ea, ea - eb) if is_start else (eb, eb - ea)  # direction points outwards
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        with torch.no_grad():
            mine = a.index_select(0, edge) if is_start else b.index_select(0, edge)
            near = (mine - point).norm(dim=-1) <= width.detach() + 1.0
        beyond = ((p - point) * direction).sum(-1) - cap.clamp(min=0) * width / 2
        sdf = torch.where(valid & near, torch.maximum(sdf, beyond), sdf)
    return sdf


MITER_LIMIT = 4.0  # SVG's default stroke-miterlimit


def _miter_wedges(a, b, layer, first, subpath, joint, miter, width, H: int, W: int, tau: float):
    """Signed distance of the miter tips at corners between segments (the distance to the
    polyline already draws round joins): the region beyond the vertex, inside both offset
    lines. Joins whose miter would exceed MITER_LIMIT stay round (SVG bevels them).
    Returns (sdf, flat layer*pixel index) for the pixels near each tip."""
    n = len(a)
    with torch.no_grad():
        nxt = torch.arange(1, n + 1) % max(n, 1)
        # the next edge of the same subpath, or for a closed subpath's last edge its first one
        start_of = torch.full((int(subpath.max()) + 1,), n, dtype=torch.long).scatter_reduce(
            0, subpath, torch.arange(n), reduce="amin")
        wrap = (nxt == 0) | (subpath[nxt] != subpath)
        nxt = torch.where(wrap, start_of[subpath], nxt)
        closed = (b.detach() - a.detach()[nxt]).norm(dim=-1) < 1e-4
        j = torch.nonzero(joint & miter[layer] & closed & ~(wrap & first[nxt])).flatten()
    if not len(j):
        return a.new_zeros(0), torch.zeros(0, dtype=torch.long)
    o = nxt[j]
    d1, d2 = b[j] - a[j], b[o] - a[o]
    d1 = d1 / d1.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    d2 = d2 / d2.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    turn = _cross(d1, d2)
    perp = lambda d: torch.stack([-d[:, 1], d[:, 0]], -1)  # noqa: E731
    side = -torch.sign(turn).detach()[:, None]  # the outer side of the corner
    n1, n2 = side * perp(d1), side * perp(d2)
    bisector = n1 + n2
    cos_half = (bisector.norm(dim=-1) / 2).clamp(min=1e-6)  # cos of half the turn angle
    with torch.no_grad():
        ok = (turn.abs() > 0.05) & (1 / cos_half <= MITER_LIMIT) & ((d1 * d2).sum(-1) > -0.999)
    j, n1, n2, bisector, cos_half = j[ok], n1[ok], n2[ok], bisector[ok], cos_half[ok]
    if not len(j):
        return a.new_zeros(0), torch.zeros(0, dtype=torch.long)
    v = b[j]
    w = width[layer[j]]
    m = bisector / bisector.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    with torch.no_grad():
        reach = (w / 2 / cos_half).detach()[:, None] + BAND * tau
        item, pix, px, py = _pixel_pairs(v.detach() - reach, v.detach() + reach, H, W)
        p = torch.stack([px, py], -1).to(a.dtype) + 0.5
    q = p - v[item]
    half = w[item] / 2
    sdf = torch.maximum(torch.maximum((q * n1[item]).sum(-1) - half, (q * n2[item]).sum(-1) - half),
                        -(q * m[item]).sum(-1))
    return sdf, layer[j][item] * (H * W) + pix


def _bezier_points(ctrl: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points of cubics ctrl (E, 4, 2) at parameters t (E,)."""
    s = 1 - t
    w = torch.stack([s * s * s, 3 * s * s * t, 3 * s * t * t, t * t * t], -1)
    return (w[:, :, None] * ctrl).sum(1)


def render(scene: Scene, size: int, tau: float = DEFAULT_TAU, background=(1.0, 1.0, 1.0),
           max_edge: float = MAX_EDGE) -> torch.Tensor:
    """Rasterise `scene` to a (size, size, 3) tensor in [0, 1]: the canvas is fitted into the square
    (uniform scale, centred, like cairosvg's xMidYMid meet), pixels sampled at their centres."""
    H = W = int(size)
    params = [s.params for s in scene.shapes]
    dtype = params[0].dtype if params else torch.float32
    bg = torch.as_tensor(background, dtype=dtype).view(1, 3).expand(H * W, 3)
    scale = size / max(scene.width, scene.height)
    offset = torch.tensor([(size - scale * scene.width) / 2, (size - scale * scene.height) / 2], dtype=dtype)

    # 1. outlines -> cubics in pixels, with their layer ids (fill then stroke per shape)
    ctrls, fill_of, stroke_of, caps, subpaths = [], [], [], [], []
    layers: list[tuple[str, Shape]] = []
    n_subpaths = 0
    for shape in scene.shapes:
        basis, flags = shape.outline()
        if not len(flags):
            continue
        fill_id = stroke_id = -1
        if shape.fill is not None and flags[:, 0].any():
            fill_id = len(layers)
            layers.append(("fill", shape))
        if shape.stroke is not None and shape.stroke_width is not None and flags[:, 1].any():
            stroke_id = len(layers)
            layers.append(("stroke", shape))
        if fill_id < 0 and stroke_id < 0:
            continue
        ctrls.append((basis.to(dtype) @ shape.params).view(-1, 4, 2) * scale + offset)
        fill_of.append(np.where(flags[:, 0], fill_id, -1))
        stroke_of.append(np.where(flags[:, 1], stroke_id, -1))
        caps.append(flags[:, 2:4].astype(bool))
        subpaths.append(flags[:, 4] + n_subpaths)
        n_subpaths += int(flags[:, 4].max()) + 1
    if not layers:
        return bg.reshape(H, W, 3).clone()
    ctrl = torch.cat(ctrls)
    fill_of, stroke_of = torch.from_numpy(np.concatenate(fill_of)), torch.from_numpy(np.concatenate(stroke_of))
    caps, subpath_of = torch.from_numpy(np.concatenate(caps)), torch.from_numpy(np.concatenate(subpaths))

    # 2. flatten: k edges per cubic, k from the detached control polygon's length
    with torch.no_grad():
        c = ctrl.detach()
        length = (c[:, 1:] - c[:, :-1]).norm(dim=-1).sum(-1)
        chord = c[:, 3] - c[:, 0]
        bulge = torch.stack([_cross(chord, c[:, 1] - c[:, 0]).abs(), _cross(chord, c[:, 2] - c[:, 0]).abs()], -1)
        curved = bulge.amax(-1) > 0.05 * chord.norm(dim=-1).clamp(min=1e-6)
        k = torch.ceil(length / max_edge).clamp(1, 64).long()
        k = torch.where(curved, k.clamp(min=4), k)
        seg, step = _ranges(torch.zeros_like(k), k)
        t0 = step.to(dtype) / k[seg].to(dtype)
        t1 = (step + 1).to(dtype) / k[seg].to(dtype)
        first = caps[seg, 0] & (step == 0)
        last = caps[seg, 1] & (step == k[seg] - 1)
        joint = step == k[seg] - 1  # the edge ends a segment: a join may follow
    per_edge = ctrl.index_select(0, seg)
    a, b = _bezier_points(per_edge, t0), _bezier_points(per_edge, t1)

    n_layers = len(layers)
    fill_layers = [i for i, (kind, _) in enumerate(layers) if kind == "fill"]
    stroke_layers = [i for i, (kind, _) in enumerate(layers) if kind == "stroke"]
    covs = []
    if fill_layers:  # 3. fills
        fe = fill_of[seg] >= 0
        slot = torch.full((n_layers,), -1, dtype=torch.long)
        slot[fill_layers] = torch.arange(len(fill_layers))
        evenodd = torch.tensor([layers[i][1].fill_rule == "evenodd" for i in fill_layers])
        covs.append(_fill_coverage(a[fe], b[fe], slot[fill_of[seg][fe]], evenodd, H, W, tau))
    if stroke_layers:  # 4. strokes
        se = stroke_of[seg] >= 0
        slot = torch.full((n_layers,), -1, dtype=torch.long)
        slot[stroke_layers] = torch.arange(len(stroke_layers))
        width = torch.stack([layers[i][1].stroke_width.to(dtype).reshape(()) * scale for i in stroke_layers])
        cap = torch.tensor([{"butt": 0.0, "square": 1.0}.get(layers[i][1].linecap, -1.0) for i in stroke_layers],
                           dtype=dtype)
        miter = torch.tensor([layers[i][1].linejoin == "miter" for i in stroke_layers])
        covs.append(_stroke_coverage(a[se], b[se], slot[stroke_of[seg][se]], first[se], last[se],
                                     subpath_of[seg][se], n_subpaths, width, cap, H, W, tau,
                                     joint[se], miter))

    # 5. composite in painter's order ('over'; _Over has an analytic backward)
    order = torch.empty(n_layers, dtype=torch.long)
    order[fill_layers + stroke_layers] = torch.arange(n_layers)
    cov = torch.cat(covs)[order]
    one = torch.ones((), dtype=dtype)
    opacity = torch.stack([_scalar(shape.fill_opacity if kind == "fill" else shape.stroke_opacity, one)
                           for kind, shape in layers])
    colour = torch.stack([(shape.fill if kind == "fill" else shape.stroke).to(dtype).reshape(3)
                          for kind, shape in layers])
    return _Over.apply(cov * opacity[:, None], colour, bg).view(H, W, 3)


def _fill_coverage(a, b, layer, evenodd, H: int, W: int, tau: float) -> torch.Tensor:
    """(n_fill, H*W) coverage of fill layers from their edges a->b (px) and each edge's layer:
    hard inside/outside from the winding number, sigmoid(+-distance / tau) near boundary edges."""
    n_fill, dtype, band = len(evenodd), a.dtype, BAND * tau
    with torch.no_grad():
        da, db = a.detach(), b.detach()
        winding = _winding(da, db, layer, n_fill, H, W).reshape(n_fill, H * W)
        inside = _inside(winding, evenodd[:, None])
        edge, pix, px, py = _pixel_pairs(torch.minimum(da, db) - band, torch.maximum(da, db) + band, H, W)
        p = torch.stack([px, py], -1).to(dtype) + 0.5
        lay = layer[edge]
        # an edge bounds the fill for a pixel only if crossing it flips inside <-> outside
        side = torch.sign(_cross(db[edge] - da[edge], p - da[edge])).long()
        here = inside[lay, pix]
        there = _inside(winding[lay, pix] + side, evenodd[lay])
        keep = (here != there) | (side == 0)
        edge, pix, lay, p = edge[keep], pix[keep], lay[keep], p[keep]
    dist = _segment_distance(p, a.index_select(0, edge), b.index_select(0, edge))
    nearest = torch.full((n_fill * H * W,), BIG, dtype=dtype)
    nearest = nearest.scatter_reduce(0, lay * (H * W) + pix, dist, reduce="amin", include_self=True)
    sign = inside.view(-1).to(dtype) * 2 - 1
    return torch.sigmoid(sign * nearest / tau).view(n_fill, -1)


def _stroke_coverage(a, b, layer, first, last, subpath, n_subpaths: int, width, cap, H: int, W: int,
                     tau: float, joint=None, miter=None) -> torch.Tensor:
    """(n_stroke, H*W) coverage of stroke layers: the logistic filter of the band |sdf| <= width/2,
    sdf = distance to the polyline minus half the width (caps per `cap`: -1 round, 0 butt, 1 square)."""
    n_stroke, dtype = len(width), a.dtype
    with torch.no_grad():
        reach = (width.detach().clamp(min=0) / 2 * torch.where(cap > 0, math.sqrt(2), 1.0))[layer] + BAND * tau
        da, db = a.detach(), b.detach()
        edge, pix, px, py = _pixel_pairs(torch.minimum(da, db) - reach[:, None],
                                         torch.maximum(da, db) + reach[:, None], H, W)
        p = torch.stack([px, py], -1).to(dtype) + 0.5
    lay = layer[edge]
    sdf = _stroke_sdf(p, a.index_select(0, edge), b.index_select(0, edge), width[lay], cap[lay], first[edge],
                      last[edge])
    sdf = _clip_caps(sdf, p, a, b, first, last, subpath, n_subpaths, edge, width[lay], cap[lay])
    index = lay * (H * W) + pix
    if joint is not None and bool(miter.any()):
        wedge_sdf, wedge_index = _miter_wedges(a, b, layer, first, subpath, joint, miter, width, H, W, tau)
        sdf, index = torch.cat([sdf, wedge_sdf]), torch.cat([index, wedge_index])
    nearest = torch.full((n_stroke * H * W,), BIG, dtype=dtype)
    nearest = nearest.scatter_reduce(0, index, sdf, reduce="amin", include_self=True)
    nearest = nearest.view(n_stroke, -1)
    return torch.sigmoid(-nearest / tau) - torch.sigmoid(-(nearest + width[:, None]) / tau)


class _Over(torch.autograd.Function):
    """'over' compositing of L layers (alpha (L, P), colour (L, 3)) onto a background (P, 3), with
    an analytic backward that keeps two per-pixel scalars per layer instead of L images:
    d image / d alpha_l = after_l * (colour_l - below_l), after_l = prod_{j > l} (1 - alpha_j),
    and grad . below_l follows the same recurrence as the image itself."""

    @staticmethod
    def forward(ctx, alpha, colour, background):
        image = background
        for a, c in zip(alpha, colour):
            image = torch.lerp(image, c.view(1, 3).expand_as(background), a[:, None])
        ctx.save_for_backward(alpha, colour, background)
        return image

    @staticmethod
    def backward(ctx, grad):
        alpha, colour, background = ctx.saved_tensors
        grad_dot_colour = (grad @ colour.T).T                # (L, P)
        grad_dot_below = [(grad * background).sum(-1)]       # grad . image below layer l
        for a, gc in zip(alpha[:-1], grad_dot_colour[:-1]):
            grad_dot_below.append(torch.lerp(grad_dot_below[-1], gc, a))
        after = [torch.ones_like(alpha[0])]
        for a in alpha.flip(0)[:-1]:
            after.append(after[-1] * (1 - a))
        after = torch.stack(after[::-1])
        grad_alpha = after * (grad_dot_colour - torch.stack(grad_dot_below))
        grad_colour = (after * alpha) @ grad
        return grad_alpha, grad_colour, None


def _scalar(t: torch.Tensor | None, default: torch.Tensor) -> torch.Tensor:
    return default if t is None else t.to(default.dtype).reshape(())
