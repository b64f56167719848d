"""`genstudio bench shape`: VAT's bytes-vs-geometry curve against Draco + decimation, and G3PT generation.

Data: the held-out TEST split of the `shapes` source (never trained on). Only surface points are stored
per shape, so each test shape's source mesh is rebuilt with data.py's own steps (the seeded primitive
stream / the pybullet `random_urdfs` archive -> y-up -> watertight -> normalised into [-0.9, 0.9]^3) and
checked against the stored points (a shape whose rebuild does not match them is dropped, with a note).
That rebuilt mesh is the ONE ground truth of every method: GT points = `samples` area-sampled points of its
outer boundary (samples whose outward step stays inside the solid lie on a piece hidden inside another piece
of a union, and are dropped, as the build drops them). The 2,048 stored points are not used as GT: they lie
~0.03 apart, coarser than the 0.01 threshold, so even a perfect mesh would score a low F-score@0.01.

Part 1, codes of a test shape at several byte budgets:
- VAT, the first k scales kept (k = 1..K): encode the stored surface points (posterior mean), decode the
  prefix -> occupancy on a resolution^3 grid -> marching cubes. Bytes = `tokens_to_bytes` of the kept scales
  (indices x ceil(log2 codebook) bits + 5-byte header): the same for every shape.
- Draco (DracoPy) of the GT mesh after quadric decimation (fast-simplification) to each of `faces` target face
  counts, at each of `qbits` position quantisation levels (compression level `draco_level`). Per VAT budget,
  "draco@<=N B" takes per shape the best (lowest Chamfer) Draco setting whose file fits in N bytes.
- Ablations at full scales, when given: `vat_novar` (no variational layer), `vat_vq` (single-scale VQ).
Metrics on `samples` area-sampled points per mesh; distances in the unit frame (coordinates / 1.8, so the
normalised bounding box's largest side is 1, as in the paper and `bench mesh`): Chamfer = mean nearest-
neighbour L2 averaged over both directions, F-score at 0.01 / 0.02 (1% / 2% of the largest side; 0.018 /
0.036 in the stored frame), normal consistency (unoriented |cos|, both ways).

Part 2, when `g3pt` is given: per class of the model, `per_class` shapes generated (class and/or prompt
condition as trained, CFG `guidance`, `temperature`, `top_k`), decoded at full scales and meshed; against the
test shapes of that class (their 2,048 stored points; `gen_points` sampled per generated mesh): COV, MMD and
1-NNA with Chamfer distance (unit frame). `g3pt_interp` (the cross_scale=False ablation) is run alike; the
train-split shapes of the class, in place of generated ones, are the reference row (what real data scores).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from genstudio.metrics import chamfer_distance, f_score, normal_consistency

from .data import EXTENT, SHAPE_CLASSES, _meshes, normalize_mesh, watertight, winding_number
from .vat import mesh_from_occupancy, tokens_to_bytes

UNIT = 2 * EXTENT          # the stored frame's largest side; metrics divide coordinates by it
MATCH_TOLERANCE = 0.01     # median distance (stored frame) of the stored points to a rebuilt mesh that passes


# ---------------------------------------------------------------- models

def _weights(path, sub: str) -> Path:
    """A run dir, an exported folder, or a checkpoint holding `sub`/ (vat/, g3pt/) -> the weights folder."""
    from genstudio.export import run_weights
    path = Path(path)
    for candidate in (path / sub, path):
        try:
            return run_weights(candidate)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"{path} holds no {sub} weights (a `genstudio train` run, an exported folder, or a "
                            f"checkpoint with {sub}/)")


def load_model(kind: str, path, device: str = "cpu"):
    from .g3pt import G3PT
    from .vat import VATTokenizer
    cls = VATTokenizer if kind == "vat" else G3PT
    return cls.from_pretrained(_weights(path, kind)).float().eval().to(device)


def vat_of_g3pt(path) -> Path | None:
    """The VAT a G3PT was trained on: a checkpoint's vat/ beside g3pt/, or the run's `vat` option."""
    path = Path(path)
    if (path / "vat").is_dir():
        return path / "vat"
    for config in (path / "train_config.json", path.parent / "train_config.json"):
        if config.exists():
            vat = json.loads(config.read_text()).get("options", {}).get("vat")
            return Path(vat) if vat else None
    return None


# ---------------------------------------------------------------- ground truth

def rebuild_sources(items: list[dict], archive: str | None, seed: int, log=print) -> dict[str, object]:
    """id -> the watertight, normalised source mesh of each item (data.py's build steps), where it rebuilds.
    Primitives come from the build's one seeded stream (item k is the k-th draw, whatever the build's count);
    urdf objects need the pybullet archive (`archive=`, else `pip download`)."""
    import tempfile
    wanted = {it["id"] for it in items}
    last = max([int(i.rsplit("_", 1)[1]) for i in wanted if i.startswith("primitive/")], default=-1)
    sources = (["primitives"] if last >= 0 else []) + (["urdf"] if any(i.startswith("urdf/") for i in wanted) else [])
    found: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            try:
                for item_id, _, _, mesh in _meshes([source], last + 1, archive, Path(tmp), log, seed):
                    if item_id in wanted and mesh is not None:
                        mesh = watertight(mesh)
                        if mesh is not None:
                            found[item_id] = normalize_mesh(mesh)
                    if wanted <= set(found):
                        break
            except Exception as e:  # no archive offline: those items go, the rest stay
                log(f"shape bench: the {source} source meshes could not be rebuilt ({e})")
    return found


def hidden(mesh, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Which samples lie on a piece hidden inside another piece of a union (a step along the normal lands
    inside some body). Convex bodies (urdf pieces, most primitives) take a half-space test against their hull,
    far cheaper than the winding number, which the rest use."""
    out = np.zeros(len(points), bool)
    bodies = mesh.split(only_watertight=False)
    if len(bodies) < 2:
        return out
    q = points + 2e-3 * normals
    for body in bodies:
        if len(body.vertices) < 4 or not abs(body.volume) > 1e-9:   # a sheet or a sliver encloses nothing
            continue
        hull = body.convex_hull
        if body.is_watertight and body.volume >= 0.99 * hull.volume:
            offsets = np.einsum("ij,ij->i", hull.face_normals, hull.vertices[hull.faces[:, 0]])
            out |= (q @ hull.face_normals.T < offsets).all(1)
        else:
            out |= winding_number(body.vertices, body.faces, q) > 0.5
    return out


def surface_points(mesh, count: int, seed: int, boundary_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """`count` area-sampled points + face normals; boundary_only drops samples hidden inside another piece
    (as the build does). A marching-cubes mesh is one boundary and skips the test."""
    rng = np.random.default_rng(seed)
    points, normals = np.empty((0, 3)), np.empty((0, 3))
    for _ in range(4):
        p, face = mesh.sample(2 * (count - len(points)) + 64, return_index=True, seed=int(rng.integers(2**31)))
        n = mesh.face_normals[face]
        if boundary_only:
            keep = ~hidden(mesh, p, n)
            p, n = p[keep], n[keep]
        points, normals = np.concatenate([points, p]), np.concatenate([normals, n])
        if len(points) >= count:
            break
    if len(points) == 0:
        raise ValueError("no surface")
    pick = rng.choice(len(points), count, replace=len(points) < count)
    return points[pick], normals[pick]


def matches_stored(mesh, stored: np.ndarray) -> float:
    """Median distance of the stored surface points to a dense sample of the rebuilt mesh (stored frame)."""
    from scipy.spatial import cKDTree
    dense, _ = mesh.sample(100_000, return_index=True, seed=0)
    return float(np.median(cKDTree(dense).query(stored[:, :3])[0]))


def measure(points: np.ndarray, normals: np.ndarray, gt: tuple[np.ndarray, np.ndarray]) -> dict:
    """One output's samples against the GT samples, distances in the unit frame."""
    p, g = points / UNIT, gt[0] / UNIT
    return {"chamfer": chamfer_distance(p, g), "f_score_0.01": f_score(p, g, 0.01), "f_score_0.02": f_score(p, g, 0.02),
            "normal_consistency": normal_consistency(points, normals, gt[0], gt[1])}


METRICS = ("chamfer", "f_score_0.01", "f_score_0.02", "normal_consistency")


def summarise(rows: list[dict], attempted: int, **extra) -> dict:
    """Mean metrics over the shapes a method produced a mesh for; `valid` = their share of `attempted`."""
    out = {"n": len(rows), "valid": round(len(rows) / max(attempted, 1), 3)}
    for k in METRICS:
        out[k] = round(float(np.mean([r[k] for r in rows])), 5) if rows else float("nan")
    return {**out, **extra}


# ---------------------------------------------------------------- part 1: VAT and Draco

@torch.no_grad()
def vat_meshes(vat, stored: np.ndarray, resolution: int, prefixes: list[int]) -> dict[int, object]:
    """One shape's stored points (S, 6) -> {k: marching-cubes mesh of the first k scales, or None if empty}."""
    points = torch.as_tensor(stored, dtype=torch.float32, device=vat.device)[None]
    indices = vat.encode(points[..., :3], points[..., 3:]).indices
    out = {}
    for k in prefixes:
        grid = torch.sigmoid(vat.occupancy_grid(vat.decode(indices[:k]), resolution))[0]
        try:
            out[k] = mesh_from_occupancy(grid)
        except ValueError:
            out[k] = None
    return out


def prefix_bytes(vat, k: int) -> int:
    return len(tokens_to_bytes([torch.zeros(s, dtype=torch.long) for s in vat.scales[:k]], vat.config.codebook_size))


def decimate(vertices, faces, target: int):
    """Quadric decimation to `target` faces; repeated passes, as one stops early on small targets."""
    import fast_simplification
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    for _ in range(8):
        if len(faces) <= target:
            break
        before = len(faces)
        vertices, faces = fast_simplification.simplify(vertices, faces, target_count=max(4, target))
        if len(faces) >= before:
            break
    return vertices, faces


def draco_codes(mesh, face_targets: list[int], qbits: list[int], level: int):
    """(config name, bytes, decoded trimesh or None) for the mesh decimated to each target (0: not decimated;
    capped at the mesh's own count) x position quantisation."""
    import DracoPy
    import trimesh
    for target in face_targets:
        count = len(mesh.faces) if target <= 0 else min(target, len(mesh.faces))
        v, f = decimate(mesh.vertices, mesh.faces, count) if count < len(mesh.faces) else (mesh.vertices, mesh.faces)
        for bits in qbits:
            data = DracoPy.encode(np.asarray(v, np.float32), np.asarray(f, np.uint32), quantization_bits=bits,
                                  compression_level=level)
            decoded = DracoPy.decode(data)
            out = trimesh.Trimesh(np.asarray(decoded.points), np.asarray(decoded.faces).reshape(-1, 3), process=True)
            yield f"F{target if target > 0 else 'all'}/q{bits}", len(data), (out if len(out.faces) and out.area > 0
                                                                              else None)


def tokenizer_curve(report, models: dict, items: list[dict], truth: dict, resolution: int, samples: int,
                    face_targets: list[int], qbits: list[int], level: int, seed: int) -> None:
    from tqdm.auto import tqdm
    vat = models["vat"]
    K = len(vat.scales)
    budgets = {k: prefix_bytes(vat, k) for k in range(1, K + 1)}
    rows: dict[str, list[dict]] = {}
    draco: list[list[dict]] = []          # per shape: every Draco setting's (bytes, metrics)
    for item in tqdm(items, desc="bench shape: codes", unit="shape"):
        with np.load(item["path"]) as z:
            stored = z["points"].astype(np.float32)
        gt = truth[item["id"]]
        for name, model in models.items():
            prefixes = list(range(1, K + 1)) if name == "vat" else [len(model.scales)]
            for k, mesh in vat_meshes(model, stored, resolution, prefixes).items():
                key = f"vat k={k}" if name == "vat" else name
                if mesh is not None:
                    rows.setdefault(key, []).append(measure(*surface_points(mesh, samples, seed, False), gt["samples"]))
        rows.setdefault("gt", []).append({"bytes": 12 * (len(gt["mesh"].vertices) + len(gt["mesh"].faces)),
                                          **measure(*surface_points(gt["mesh"], samples, seed + 7, True), gt["samples"])})
        codes = []
        for config, size, mesh in draco_codes(gt["mesh"], face_targets, qbits, level):
            if mesh is not None:
                codes.append({"config": config, "bytes": size, "faces": len(mesh.faces),
                              **measure(*surface_points(mesh, samples, seed, True), gt["samples"])})
        draco.append(codes)

    n = len(items)
    report.add("gt mesh resampled (floor)", "shapes-test", bytes=round(float(np.mean([r["bytes"] for r in rows["gt"]])), 1),
               **summarise(rows["gt"], n))
    for k in range(1, K + 1):
        report.add(f"vat k={k}/{K}", "shapes-test", bytes=budgets[k], tokens=sum(vat.scales[:k]),
                   **summarise(rows.get(f"vat k={k}", []), n))
        # the same budget spent on Draco: per shape, the best setting whose file fits
        fitted = [min((c for c in codes if c["bytes"] <= budgets[k]), key=lambda c: c["chamfer"], default=None)
                  for codes in draco]
        fitted = [c for c in fitted if c is not None]
        report.add(f"draco@<={budgets[k]} B", "shapes-test", bytes=round(float(np.mean([c["bytes"] for c in fitted])), 1)
                   if fitted else float("nan"), **summarise(fitted, n, faces=round(float(np.mean([c["faces"] for c in fitted])), 1)
                                                  if fitted else float("nan")))
    for name in ("vat_novar", "vat_vq"):
        if name in models:
            m = models[name]
            report.add(f"{name} (full scales)", "shapes-test", bytes=prefix_bytes(m, len(m.scales)),
                       tokens=sum(m.scales), **summarise(rows.get(name, []), n))
    configs = [f"F{t if t > 0 else 'all'}/q{b}" for t in face_targets for b in qbits]
    for config in configs:  # every Draco setting on its own: the baseline's whole curve
        got = [c for codes in draco for c in codes if c["config"] == config]
        report.add(f"draco {config}", "shapes-test", bytes=round(float(np.mean([c["bytes"] for c in got])), 1),
                   **summarise(got, n, faces=round(float(np.mean([c["faces"] for c in got])), 1)))


# ---------------------------------------------------------------- part 2: generation

def pairwise_chamfer(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    return np.array([[chamfer_distance(x / UNIT, y / UNIT) for y in b] for x in a])


def generation_metrics(generated: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """COV (share of reference shapes that are some generated shape's nearest), MMD (mean over reference shapes
    of the nearest generated shape's distance), 1-NNA (leave-one-out 1-NN accuracy on generated + reference;
    0.5 = indistinguishable), all with Chamfer distance."""
    if not generated or not reference:
        return {"cov": float("nan"), "mmd": float("nan"), "1-nna": float("nan")}
    gr = pairwise_chamfer(generated, reference)
    both = generated + reference
    d = pairwise_chamfer(both, both)
    np.fill_diagonal(d, np.inf)
    is_gen = np.arange(len(both)) < len(generated)
    nearest_same = is_gen[d.argmin(1)] == is_gen
    return {"cov": round(len(set(gr.argmin(1).tolist())) / len(reference), 4),
            "mmd": round(float(gr.min(0).mean()), 5), "1-nna": round(float(nearest_same.mean()), 4)}


def _stored_points(items: list[dict], count: int, seed: int) -> list[np.ndarray]:
    out = []
    for it in items:
        with np.load(it["path"]) as z:
            p = z["points"][:, :3].astype(np.float64)
        out.append(p[np.random.default_rng(seed).choice(len(p), min(count, len(p)), replace=False)])
    return out


def class_condition(g3pt, class_index: int, label: str, count: int):
    """The condition G3PT was trained with for `label`: its class id and/or the class's prompt (g3pt_train)."""
    from .g3pt import ShapeCondition, encode_prompts
    from .g3pt import CLASS_PROMPTS
    c = ShapeCondition()
    if g3pt.config.num_classes:
        c.labels = torch.full((count,), class_index, dtype=torch.long, device=g3pt.device)
    if g3pt.config.context_dim:
        states, mask = encode_prompts([CLASS_PROMPTS[label]] * count)
        c.text_states, c.text_mask = states.to(g3pt.device), mask.to(g3pt.device)
    return c if c.batch_size else None


@torch.no_grad()
def generate_shapes(g3pt, vat, condition, count: int, resolution: int, points: int, seed: int,
                    guidance: float, temperature: float, top_k: int) -> tuple[list[np.ndarray], float]:
    """`count` shapes -> (their sampled surface points (valid ones), seconds per shape incl. decode + mesh)."""
    generator = torch.Generator(g3pt.device).manual_seed(seed)
    t = time.perf_counter()
    indices = g3pt.generate(condition, num_samples=count, guidance_scale=guidance, temperature=temperature,
                            top_k=top_k, generator=generator)
    grids = torch.sigmoid(vat.occupancy_grid(vat.decode([i.to(vat.device) for i in indices]), resolution))
    meshes = []
    for grid in grids:
        try:
            meshes.append(mesh_from_occupancy(grid))
        except ValueError:
            pass
    seconds = (time.perf_counter() - t) / count
    return [surface_points(m, points, seed, False)[0] for m in meshes], seconds


def generation(report, vat, generators: dict, test_items: list[dict], train_items: list[dict], per_class,
               resolution: int, points: int, seed: int, guidance: float, temperature: float, top_k: int) -> None:
    first = next(iter(generators.values()))
    names = list(first.config.class_names or ([] if first.config.context_dim == 0 else SHAPE_CLASSES))
    groups = [(k, n) for k, n in enumerate(names)] or [(-1, "all")]   # unconditional: one group, every class
    for class_index, label in groups:
        refs = [it for it in test_items if label in ("all", it["label"])]
        if not refs:
            continue
        reference = _stored_points(refs, points, seed)
        count = int(per_class) if per_class else max(2, len(refs))
        for name, g3pt in generators.items():
            condition = class_condition(g3pt, class_index, label, count) if class_index >= 0 else None
            shapes, seconds = generate_shapes(g3pt, vat, condition, count, resolution, points, seed, guidance,
                                              temperature, top_k)
            report.add(name, f"class {label}", generated=count, valid=round(len(shapes) / count, 3), references=len(refs),
                       **generation_metrics(shapes, reference), sec_per_shape=round(seconds, 3))
        train = [it for it in train_items if label in ("all", it["label"])]
        if train:
            pick = [train[i] for i in np.random.default_rng(seed).choice(len(train), min(count, len(train)), replace=False)]
            report.add("train shapes (reference)", f"class {label}", generated=len(pick), valid=1.0,
                       references=len(refs), **generation_metrics(_stored_points(pick, points, seed + 1), reference))


# ---------------------------------------------------------------- the benchmark

def _ints(value) -> list[int]:
    return [int(v) for v in (value.split(",") if isinstance(value, str) else np.atleast_1d(value))]


def bench_shape(report, vat: str | None = None, vat_novar: str | None = None, vat_vq: str | None = None,
                g3pt: str | None = None, g3pt_interp: str | None = None, items: int | None = 40,
                quick: bool = False, resolution: int = 64, samples: int = 50_000, faces="0,2000,1000,500,250,100,50",
                qbits="6,8,10,14", draco_level: int = 7, archive: str | None = None, data_seed: int = 0,
                per_class: int | None = None, gen_points: int = 2048, guidance: float = 1.0,
                temperature: float = 1.0, top_k: int = 0, seed: int = 0, device: str = "cpu",
                tokenizer: bool = True) -> None:
    """VAT vs Draco + decimation at matched bytes on the test split, ablations, and G3PT generation;
    see the module doc."""
    from genstudio.bench import evenly_spaced, training_steps
    from genstudio.data import DataError
    from .data import load_items
    if quick:
        items, resolution, samples, faces, qbits = min(int(items or 3), 3), 24, 3000, "0,50", "8,14"
        per_class, gen_points = per_class or 2, 256
    vat = vat or (vat_of_g3pt(g3pt) if g3pt else None)
    if not vat:
        raise ValueError("bench shape needs vat=<a VAT run or checkpoint> (or g3pt= a checkpoint/run that names it)")
    paths = {"vat": vat, "vat_novar": vat_novar, "vat_vq": vat_vq}
    models = {name: load_model("vat", p, device) for name, p in paths.items() if p}
    for name, p in paths.items():
        if p:
            m = models[name]
            steps = training_steps(_weights(p, "vat"))
            report.note(f"{name}: {p} (scales {m.scales}, codebook {m.config.codebook_size}, variational "
                        f"{m.config.variational}, {sum(q.numel() for q in m.parameters()) / 1e6:.2f}M parameters"
                        f"{f', {steps} training steps' if steps else ''}).")
    test_items = load_items("test")
    if not test_items:
        raise DataError("the shapes source has no test items; build it with `genstudio data prepare shapes`")
    chosen = evenly_spaced(test_items, int(items)) if items else test_items
    if str(tokenizer).lower() in ("false", "0", "no"):     # generation only (part 1 committed from another run)
        chosen = []

    # ground truth: the rebuilt source mesh, kept only where it matches the stored points
    meshes = rebuild_sources(chosen, archive, int(data_seed)) if chosen else {}
    truth, dropped = {}, []
    for it in chosen:
        mesh = meshes.get(it["id"])
        with np.load(it["path"]) as z:
            stored = z["points"].astype(np.float64)
        if mesh is None or matches_stored(mesh, stored) > MATCH_TOLERANCE:
            dropped.append(it["id"])
            continue
        truth[it["id"]] = {"mesh": mesh, "samples": surface_points(mesh, int(samples), seed + 1, True)}
    kept = [it for it in chosen if it["id"] in truth]
    if chosen and not kept:
        raise DataError(f"none of the {len(chosen)} test shapes' source meshes could be rebuilt to match the stored "
                        "points; pass archive=<the pybullet wheel or random_urdfs folder> and data_seed=<the build's "
                        "seed> as the `shapes` build used them")
    if kept:
        face_targets, bits = _ints(faces), _ints(qbits)
        tokenizer_curve(report, models, kept, truth, int(resolution), int(samples), face_targets, bits, int(draco_level), seed)
        classes = {}
        for it in kept:
            classes[it["label"]] = classes.get(it["label"], 0) + 1
        report.note(f"Part 1 data: {len(kept)} test-split shapes of the `shapes` source ({classes}), evenly spaced "
                    f"by id out of {len(test_items)}" + (f"; dropped (source mesh not rebuilt or not matching the stored "
                                                         f"points): {', '.join(dropped)}" if dropped else "") + ".")
        report.note("Ground truth (every method alike): each shape's source mesh rebuilt by data.py's steps (watertight, "
                    f"normalised into [-{EXTENT}, {EXTENT}]^3; kept when the stored surface points lie within a median "
                    f"{MATCH_TOLERANCE} of it), {samples} points sampled on its outer boundary (samples on pieces hidden "
                    "inside a union dropped, as the build does; Draco outputs are filtered the same way).")
        report.note(f"Metrics on {samples} area-sampled points per mesh, distances in the unit frame (coordinates / "
                    f"{UNIT}: the bounding box's largest side is 1): Chamfer = mean nearest-neighbour L2 averaged over "
                    "both directions; F-score at 0.01 / 0.02 = 1% / 2% of the largest side (0.018 / 0.036 in the stored "
                    "frame); normal consistency unoriented. 'gt mesh resampled (floor)': the GT mesh sampled again (another "
                    "seed): the metrics' sampling floor; its bytes = raw float32 vertices + int32 faces. valid = share of shapes with a non-empty mesh (metrics "
                    "average over those).")
        report.note(f"VAT k=j/K: the first j of K scales decoded, occupancy on a {resolution}^3 grid over [-1, 1]^3, "
                    "marching cubes at 0.5; bytes = the kept indices x ceil(log2 codebook) bits + the 5-byte header "
                    "(fixed per shape). Encoder input: the shape's stored surface points + normals (posterior mean).")
        report.note(f"Draco (DracoPy, compression level {draco_level}) of the GT mesh after quadric decimation "
                    f"(fast-simplification) to {face_targets} faces (0 = every face; capped at the mesh's own count) x position "
                    f"quantisation {bits} bits ('draco F<faces>/q<bits>' rows: each setting over all shapes). "
                    "'draco@<=N B': per shape, the lowest-Chamfer setting whose file is <= N bytes (the VAT prefix's "
                    "size); valid = share of shapes where some setting fits.")

    if g3pt or g3pt_interp:
        generators = {name: load_model("g3pt", p, device) for name, p in
                      (("g3pt", g3pt), ("g3pt_interp (cross_scale=False)", g3pt_interp)) if p}
        for name, g in generators.items():
            if list(g.scales) != list(models["vat"].scales) or g.config.codebook_size != models["vat"].config.codebook_size:
                raise ValueError(f"{name} predicts scales {g.scales} over {g.config.codebook_size} codes, but the VAT "
                                 f"has {models['vat'].scales} over {models['vat'].config.codebook_size}")
        gen_test = evenly_spaced(test_items, len(test_items))
        generation(report, models["vat"], generators, gen_test, load_items("train"), per_class, int(resolution),
                   int(gen_points), seed, float(guidance), float(temperature), int(top_k))
        report.note(f"Part 2: per class, {per_class or 'as many shapes as the class has test shapes (min 2)'} "
                    f"generated (seed {seed}, CFG {guidance}, temperature {temperature}, top-k {top_k or 'off'}), "
                    f"decoded at full scales, {resolution}^3 marching cubes, {gen_points} points sampled; reference = "
                    f"all test shapes of the class ({gen_points} of their stored surface points). COV / MMD / 1-NNA "
                    "with Chamfer (unit frame); 1-NNA 0.5 is ideal; sec_per_shape = generation + decode + marching "
                    f"cubes on {device}, batched per class. 'train shapes' = train-split shapes in place of generated "
                    "ones (the score of real data).")
