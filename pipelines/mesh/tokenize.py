"""Meshes <-> token sequences for MeshAnything, and the grammar that keeps generation valid.

Vocabulary (the official MeshAnythingV2 one, so its weights read and write our sequences):

    0 BOS   1 EOS   2 PAD   3 .. 3+B-1  coordinate bins (B = 128)   3+B  separator "&" (AMT only)

Canonical form (both tokenisations). Coordinates are normalised to [-0.5, 0.5] (bounding-box
centre, longest side 1) and quantised to B bins; vertices that fall into the same bins merge, and
vertices are sorted z-y-x (z most significant, as the reference's `np.lexsort(vertices.T)`).
Degenerate and duplicate faces are dropped; each face is rotated cyclically so its smallest
vertex leads (this keeps the winding, unlike the reference's sorted triples), and faces are
sorted lexicographically.

Adjacent Mesh Tokenization (MeshAnythingV2). A strip starts with the smallest unvisited face
(its 3 vertices, 9 tokens). While an unvisited face shares the last two vertices of the strip,
only its third vertex is written (3 tokens); otherwise a separator ends the strip. Orientation
follows the triangle-strip rule: the j-th added vertex w after (p, q) makes the face (q, p, w)
for odd j and (p, q, w) for even j. The encoder only continues through a face whose winding
matches that rule, so decoding restores every face with its orientation: the round trip is
lossless on the canonical quantised mesh.

V1 (MeshAnything). Faces in canonical order, 9 coordinates each; the model turns these into
3 vertices x Q residual-VQ codes per face (see `FaceVQ` in meshanything.py).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessor

NUM_BINS = 128
BOS, EOS, PAD = 0, 1, 2
COORD_OFFSET = 3          # first coordinate (AMT) or code (V1) token id
AMT_FIRST_FACE = 9        # coordinates of a strip's first face
AMT_NUM_ROLES = 10        # BOS, EOS, PAD, separator, x/y/z of a first face, x/y/z of an added vertex


def separator_id(num_bins: int = NUM_BINS) -> int:
    return COORD_OFFSET + num_bins


def amt_vocab_size(num_bins: int = NUM_BINS) -> int:
    return COORD_OFFSET + num_bins + 1


# ---- Normalisation, quantisation, canonical order ----

def normalize_vertices(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre the bounding box and scale its longest side to 1: returns (vertices in [-0.5, 0.5],
    centre, side) so that original = unit * side + centre."""
    v = np.asarray(vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    center, side = (lo + hi) / 2, float((hi - lo).max())
    if not np.isfinite(side) or side <= 0:
        raise ValueError("the mesh has no extent (all vertices coincide)")
    return np.clip((v - center) / side, -0.5, 0.5), center, side


def quantize(vertices: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """[-0.5, 0.5] -> integer bins 0..num_bins-1 (the reference's rounding)."""
    q = np.round((np.asarray(vertices, dtype=np.float64) + 0.5) * num_bins - 0.5)
    return np.clip(q, 0, num_bins - 1).astype(np.int64)


def dequantize(bins: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bin centres in [-0.5, 0.5]."""
    return (np.asarray(bins, dtype=np.float64) + 0.5) / num_bins - 0.5


@dataclass
class QuantizedMesh:
    """Canonical quantised mesh: unique integer vertices sorted z-y-x, faces rotated smallest-first
    and sorted. Two meshes are the same quantised mesh iff their arrays are equal."""
    vertices: np.ndarray  # (n, 3) int64 bins, (x, y, z)
    faces: np.ndarray     # (m, 3) int64

    def __eq__(self, other) -> bool:
        return (isinstance(other, QuantizedMesh) and np.array_equal(self.vertices, other.vertices)
                and np.array_equal(self.faces, other.faces))

    @property
    def num_faces(self) -> int:
        return len(self.faces)


def canonicalize(bins: np.ndarray, faces: np.ndarray) -> QuantizedMesh:
    """Merge equal vertices, drop degenerate/duplicate faces and unused vertices, sort (see module doc)."""
    bins = np.asarray(bins, dtype=np.int64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0 or len(bins) == 0:
        return QuantizedMesh(np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64))
    base = int(bins.max()) + 1
    key = (bins[:, 2] * base + bins[:, 1]) * base + bins[:, 0]          # z-y-x order
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    vertices = bins[first]
    f = inverse.reshape(-1)[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    lead = f.argmin(1)
    f = np.take_along_axis(f, (lead[:, None] + np.arange(3)) % 3, 1)     # smallest vertex first
    _, keep = np.unique(np.sort(f, 1), axis=0, return_index=True)         # a face and its flip are one face
    f = f[np.sort(keep)]
    f = f[np.lexsort((f[:, 2], f[:, 1], f[:, 0]))]
    used = np.unique(f)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return QuantizedMesh(vertices[used], remap[f])


def quantize_mesh(vertices: np.ndarray, faces: np.ndarray, num_bins: int = NUM_BINS,
                  normalize: bool = True) -> QuantizedMesh:
    """Float mesh -> canonical quantised mesh (normalised to the unit cube first unless told not to)."""
    v = normalize_vertices(vertices)[0] if normalize else np.asarray(vertices, dtype=np.float64)
    return canonicalize(quantize(v, num_bins), faces)


# ---- Adjacent Mesh Tokenization (V2) ----

def amt_encode(mesh: QuantizedMesh, num_bins: int = NUM_BINS) -> np.ndarray:
    """Canonical mesh -> token ids (no BOS/EOS); see the module doc."""
    faces = mesh.faces
    # directed edge (u, v) -> faces (u, v, w) that contain it, smallest third vertex first
    by_edge: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for index, (a, b, c) in enumerate(faces.tolist()):
        for u, v, w in ((a, b, c), (b, c, a), (c, a, b)):
            by_edge[(u, v)].append((w, index))
    for options in by_edge.values():
        options.sort()
    visited = np.zeros(len(faces), dtype=bool)
    order: list[int] = []  # vertex indices, -1 = separator
    start = 0
    while True:
        while start < len(faces) and visited[start]:
            start += 1
        if start == len(faces):
            break
        if order:
            order.append(-1)
        a, b, c = faces[start].tolist()
        visited[start] = True
        order += [a, b, c]
        p, q, j = b, c, 1
        while True:
            edge = (q, p) if j % 2 else (p, q)
            nxt = next(((w, i) for w, i in by_edge.get(edge, ()) if not visited[i]), None)
            if nxt is None:
                break
            w, i = nxt
            visited[i] = True
            order.append(w)
            p, q, j = q, w, j + 1
    coords = mesh.vertices + COORD_OFFSET
    sep = separator_id(num_bins)
    tokens = [[sep] if k < 0 else coords[k].tolist() for k in order]
    return np.asarray([t for group in tokens for t in group], dtype=np.int64)


def amt_strips(tokens, num_bins: int = NUM_BINS) -> list[list[tuple[int, int, int]]]:
    """Token ids -> strips of vertex bins. Tolerant: BOS/PAD are skipped, EOS ends, an incomplete
    vertex is dropped, a separator in the middle of a vertex just ends the strip."""
    sep = separator_id(num_bins)
    strips, strip, partial = [], [], []
    for t in np.asarray(tokens, dtype=np.int64).reshape(-1).tolist():
        if t == EOS:
            break
        if t == sep:
            strips.append(strip)
            strip, partial = [], []
        elif COORD_OFFSET <= t < sep:
            partial.append(t - COORD_OFFSET)
            if len(partial) == 3:
                strip.append(tuple(partial))
                partial = []
    strips.append(strip)
    return [s for s in strips if len(s) >= 3]


def amt_decode(tokens, num_bins: int = NUM_BINS) -> QuantizedMesh:
    """Token ids -> canonical quantised mesh (invalid pieces are dropped, never raised on)."""
    points, faces = [], []
    for strip in amt_strips(tokens, num_bins):
        base = len(points)
        points += strip
        faces.append((base, base + 1, base + 2))
        for j in range(1, len(strip) - 2):
            p, q, w = base + j, base + j + 1, base + j + 2
            faces.append((q, p, w) if j % 2 else (p, q, w))
    if not faces:
        return canonicalize(np.zeros((0, 3)), np.zeros((0, 3)))
    return canonicalize(np.asarray(points), np.asarray(faces))


# ---- V1: per-face coordinates ----

def face_coordinates(mesh: QuantizedMesh) -> np.ndarray:
    """(m, 9) bins: each face's three vertices (x, y, z), in canonical face order."""
    return mesh.vertices[mesh.faces].reshape(-1, 9)


def mesh_from_face_coordinates(coords: np.ndarray) -> QuantizedMesh:
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 9)
    points = coords.reshape(-1, 3)
    return canonicalize(points, np.arange(len(points)).reshape(-1, 3))


# ---- Token roles (the official decoder's "loop embedding") ----

def token_roles(ids: torch.Tensor, start: torch.Tensor | None = None, *, tokenization: str = "amt",
                num_bins: int = NUM_BINS, tokens_per_face: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Which slot of the grammar each token fills, (B, T) -> (roles (B, T), coordinates since the
    last reset after the row (B,)). `start` continues rows whose earlier tokens were seen before.

    AMT (as the reference): BOS/EOS/PAD -> their ids, separator -> 3, the 9 coordinates of a strip's
    first face -> 4, 5, 6 (x, y, z), later coordinates -> 7, 8, 9. V1: code k of a face -> 3 + k.
    """
    batch, length = ids.shape
    k0 = torch.zeros(batch, dtype=torch.long, device=ids.device) if start is None else start.to(ids.device)
    if length == 0:
        return ids.clone(), k0
    special = ids < COORD_OFFSET
    sep = (ids == separator_id(num_bins)) if tokenization == "amt" else torch.zeros_like(special)
    reset = special | sep
    coord = (~reset).long()
    seen = coord.cumsum(1)
    before = seen - coord                                  # coordinates before t in this row
    position = torch.arange(length, device=ids.device).expand(batch, -1)
    last_reset = torch.where(reset, position, torch.full_like(position, -1)).cummax(1).values
    at_reset = seen.gather(1, last_reset.clamp(min=0))
    k = torch.where(last_reset >= 0, before - at_reset, before + k0[:, None])
    if tokenization == "amt":
        coord_role = torch.where(k < AMT_FIRST_FACE, 4 + k % 3, 7 + k % 3)
    else:
        coord_role = COORD_OFFSET + k % tokens_per_face
    roles = torch.where(special, ids, torch.where(sep, torch.full_like(ids, 3), coord_role))
    end = torch.where(reset[:, -1], torch.zeros_like(k0), k[:, -1] + 1)
    return roles, end


# ---- Grammar: invalid-token masking during generation ----

def _zyx(v) -> tuple[int, int, int]:
    return v[2], v[1], v[0]


class AMTGrammar(LogitsProcessor):
    """Forbids tokens that cannot follow in an AMT sequence; sees only the generated tokens.

    - a vertex is 3 coordinates: no separator/EOS inside one; a strip starts with a full face;
    - the separator and EOS only after a complete face; BOS/PAD never;
    - at each z (the last coordinate of a vertex, the most significant in the canonical order):
      a strip's first vertex is >= the previous strip's (strips start at the smallest unvisited
      face), the 2nd and 3rd vertices are > the first (smallest vertex leads), and a vertex never
      repeats one of the two it forms a face with. A constraint that would leave nothing is lifted.
    - `max_faces`: after that many faces only EOS is allowed; `max_new_tokens` likewise near the end.
    - `geometry` (default on): no face that post-processing would drop. The vertex completing a face
      (i) is not collinear with the face's other two (a zero-area face: a small model's greedy pass
      walks a straight line of bins, one z step a vertex, and writes nothing but such faces), and
      (ii) does not repeat a face already written (same three vertices, either winding: greedy
      decoders otherwise cycle through the same few faces). Collinearity is checked at the z slot,
      and at the y slot where the face's first two vertices lie on a line parallel to z (then no z
      could help). With these, every completed face is a real one, so EOS (allowed only after a
      complete face) always leaves at least one face.
    - a decoder caught in a loop (`loop_faces` faces in a row that repeat an earlier face, which
      post-processing would drop anyway) may only stop: a small model's greedy pass otherwise spends
      the whole token budget cycling, then the pipeline samples again. With `geometry` on, this
      only happens where the constraints had to be lifted.
    - Constraints are lifted in order when they would leave no token: the ordering ones first,
      then the geometric ones; the syntax is never lifted.
    """

    def __init__(self, num_bins: int = NUM_BINS, max_faces: int | None = None, max_new_tokens: int | None = None,
                 loop_faces: int | None = 24, geometry: bool = True):
        self.num_bins, self.max_faces, self.max_new_tokens = num_bins, max_faces, max_new_tokens
        self.loop_faces, self.geometry = loop_faces, geometry
        self.sep = separator_id(num_bins)
        self.vocab = amt_vocab_size(num_bins)
        self.rows: list[dict] = []
        self.seen = 0

    def _new_row(self) -> dict:
        # count: vertices in the current strip; strip: its last three vertices
        return dict(partial=[], strip=[], count=0, first=None, prev_start=None, faces=0, done=False,
                    faces_seen=set(), repeats=0, thirds=defaultdict(set))

    def _advance(self, row: dict, t: int) -> None:
        if row["done"]:
            return
        if t == EOS:
            row["done"] = True
        elif t == self.sep:
            row["prev_start"] = row["first"]
            row.update(partial=[], strip=[], count=0, first=None)
        elif COORD_OFFSET <= t < self.sep:
            row["partial"].append(t - COORD_OFFSET)
            if len(row["partial"]) == 3:
                v = tuple(row["partial"])
                row["partial"] = []
                if row["first"] is None:
                    row["first"] = v
                row["strip"] = (row["strip"] + [v])[-3:]
                row["count"] += 1
                if row["count"] >= 3:
                    row["faces"] += 1
                    key = tuple(sorted(row["strip"]))
                    row["repeats"] = row["repeats"] + 1 if key in row["faces_seen"] else 0
                    row["faces_seen"].add(key)
                    a, b, c = key
                    for (p, q), w in (((a, b), c), ((a, c), b), ((b, c), a)):
                        row["thirds"][(p, q)].add(w)

    def _allowed(self, row: dict, generated: int) -> np.ndarray:
        allowed = np.zeros(self.vocab, dtype=bool)
        coords = slice(COORD_OFFSET, self.sep)
        if row["done"]:
            allowed[:] = True
            return allowed
        slot, count = len(row["partial"]), row["count"]
        if slot == 0 and count >= 3:
            near_end = self.max_new_tokens is not None and generated + 4 > self.max_new_tokens
            looping = self.loop_faces is not None and row["repeats"] >= self.loop_faces
            if (self.max_faces is not None and row["faces"] >= self.max_faces) or near_end or looping:
                allowed[EOS] = True
                return allowed
            allowed[EOS] = True
            # a new strip needs a whole face (9 coordinates) before it can end
            allowed[self.sep] = self.max_new_tokens is None or generated + 11 <= self.max_new_tokens
        allowed[coords] = True
        if slot == 1 and count >= 2 and self.geometry:
            (ax, ay, _), (bx, by, _) = row["strip"][-2], row["strip"][-1]
            if ax == bx and ay == by and row["partial"][0] == ax:  # every z would be on the line
                allowed[COORD_OFFSET + ay] = False
        elif slot == 2:
            order_ok = self._z_allowed(row, count)
            geom_ok = self._z_geometry(row, count) if self.geometry else np.ones_like(order_ok)
            for ok in (order_ok & geom_ok, geom_ok, order_ok):
                if ok.any():
                    allowed[coords] = ok
                    break
        return allowed

    def _z_geometry(self, row: dict, count: int) -> np.ndarray:
        """z bins whose vertex completes a face with positive area that was not written before."""
        ok = np.ones(self.num_bins, dtype=bool)
        if count < 2:
            return ok
        x, y = row["partial"]
        z = np.arange(self.num_bins)
        a, b = row["strip"][-2], row["strip"][-1]
        d = np.subtract(b, a)
        px, py, pz = x - a[0], y - a[1], z - a[2]
        collinear = (py * d[2] - pz * d[1] == 0) & (pz * d[0] - px * d[2] == 0) & (px * d[1] - py * d[0] == 0)
        ok &= ~collinear
        for w in row["thirds"].get(tuple(sorted((a, b))), ()):
            if w[0] == x and w[1] == y:
                ok[w[2]] = False
        return ok

    def _z_allowed(self, row: dict, count: int) -> np.ndarray:
        x, y = row["partial"]
        z = np.arange(self.num_bins)
        ok = np.ones(self.num_bins, dtype=bool)

        def at_least(ref, strict: bool):  # (z, y, x) >= ref (or >)
            rz, ry, rx = _zyx(ref)
            tail = (y, x) > (ry, rx) or (not strict and (y, x) == (ry, rx))
            return z > rz if not tail else z >= rz

        def differs(ref):
            return ~((z == ref[2]) & (x == ref[0]) & (y == ref[1]))

        if count == 0 and row["prev_start"] is not None:
            ok &= at_least(row["prev_start"], strict=False)
        elif count in (1, 2):
            ok &= at_least(row["first"], strict=True)
            if count == 2:
                ok &= differs(row["strip"][-1])
        elif count >= 3:
            ok &= differs(row["strip"][-1]) & differs(row["strip"][-2])
        return ok

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] < self.seen or len(self.rows) != input_ids.shape[0]:
            self.rows, self.seen = [self._new_row() for _ in range(input_ids.shape[0])], 0
        new = input_ids[:, self.seen:].tolist()
        self.seen = input_ids.shape[1]
        masks = []
        for row, tokens in zip(self.rows, new):
            for t in tokens:
                self._advance(row, t)
            masks.append(self._allowed(row, self.seen))
        mask = torch.from_numpy(np.stack(masks)).to(scores.device)
        mask = torch.nn.functional.pad(mask, (0, scores.shape[1] - mask.shape[1]), value=False)
        return scores.masked_fill(~mask, float("-inf"))


class FaceGrammar(LogitsProcessor):
    """V1 sequences: face after face of `3 * num_quantizers` codes, stage q of the residual VQ drawing
    from its own codebook (ids 3 + q*K .. 3 + (q+1)*K - 1); EOS only between faces."""

    def __init__(self, num_quantizers: int, codebook_size: int, max_faces: int | None = None):
        self.q, self.k, self.max_faces = num_quantizers, codebook_size, max_faces
        self.per_face = 3 * num_quantizers

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for b, row in enumerate(input_ids.tolist()):
            if EOS in row:
                mask[b] = True
                continue
            k = len(row)
            stage = (k % self.per_face) % self.q
            if k and k % self.per_face == 0:
                mask[b, EOS] = True
                if self.max_faces is not None and k // self.per_face >= self.max_faces:
                    continue
            lo = COORD_OFFSET + stage * self.k
            mask[b, lo: lo + self.k] = True
        return scores.masked_fill(~mask, float("-inf"))


# ---- Post-processing ----

def postprocess(vertices: np.ndarray, faces: np.ndarray, fix_normals: bool = True):
    """A clean trimesh: merged vertices, no degenerate/duplicate faces or unused vertices, and
    (by default) consistent outward winding per connected body."""
    import trimesh
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64).reshape(-1, 3),
                           np.asarray(faces, dtype=np.int64).reshape(-1, 3), process=False)
    if len(mesh.faces) == 0:
        return mesh
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if fix_normals and len(mesh.faces):
        with np.errstate(divide="ignore", invalid="ignore"):  # flat pieces have no volume to orient by
            trimesh.repair.fix_normals(mesh, multibody=True)
    return mesh
