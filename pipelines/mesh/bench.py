"""`genstudio bench mesh`: MeshAnything against marching cubes + quadric decimation.

Inputs: the TEST split of the `meshes` source (never trained on). Each artist mesh (normalised to
the unit cube) is remeshed densely (the same voxelise + marching cubes as the training condition,
`dense_remesh`), and every method starts from that dense mesh:

- ours-greedy / ours-sampled / ours-default: MeshAnything on the dense mesh, decoded greedily, by the
  reference's sampling mode (temperature 1, top-k 50, top-p 0.95), or as `genstudio mesh` does by default
  (the checkpoint's `default_temperature`, top-k 50, top-p 0.95); `decoding=` picks which (default
  greedy,sampled);
- mc+qem@ours-<decoding>: the dense mesh decimated by quadric error (fast-simplification) to the face
  count ours produced on the same input (skipped where ours produced nothing);
- mc+qem@gt: the same, to the ground truth's face count;
- ours-*-unfitted: the same meshes before the pipeline's surface fit (`fit.py`), when the checkpoint fits;
- mc-dense: the dense mesh itself (the geometry both start from; tens of thousands of faces).

Metrics against the ground-truth artist mesh, on 10,000 area-sampled points each: Chamfer distance
(mean nearest-neighbour L2, symmetric), normal consistency (unoriented), F-score at 0.02 and 0.01
(the unit cube's side is 1); #V/#F; seconds per mesh (ours: generation; baselines: decimation).
The model: `model=` or $GENSTUDIO_BENCH_MESH_MODEL (default: the shipped meshanything-urdf-XS); a
missing checkpoint skips ours (and mc+qem@ours) with a note and still measures the baselines.
"""
from __future__ import annotations

import os
import time

import numpy as np

from genstudio.bench import evenly_spaced, training_steps
from genstudio.metrics import chamfer_distance, f_score, normal_consistency

from .data import dense_remesh, sample_surface

MODEL_ENV = "GENSTUDIO_BENCH_MESH_MODEL"
SAMPLES = 10_000


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric error decimation to `target_faces` faces. One fast-simplification pass stops early on
    small targets (~100 faces), so passes repeat while they make progress."""
    import fast_simplification
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    target = max(4, int(target_faces))
    for _ in range(8):
        if len(faces) <= target:
            break
        before = len(faces)
        vertices, faces = fast_simplification.simplify(vertices, faces, target_count=target)
        if len(faces) >= before:
            break
    return vertices, faces


def measure(vertices, faces, gt: tuple[np.ndarray, np.ndarray], seconds: float, seed: int = 0) -> dict:
    """One output mesh against the ground truth's (points, normals)."""
    points, normals = sample_surface(vertices, faces, SAMPLES, np.random.default_rng(seed))
    gt_points, gt_normals = gt
    return {"chamfer": chamfer_distance(points, gt_points), "normal_consistency":
            normal_consistency(points, normals, gt_points, gt_normals), "f_score_0.02": f_score(points, gt_points, 0.02),
            "f_score_0.01": f_score(points, gt_points, 0.01), "vertices": len(vertices), "faces": len(faces),
            "seconds": seconds}


def aggregate(rows: list[dict], attempted: int) -> dict:
    def mean(key):
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")
    return {"n": len(rows), "valid": round(len(rows) / max(attempted, 1), 3), "chamfer": round(mean("chamfer"), 5),
            "normal_consistency": round(mean("normal_consistency"), 4), "f_score_0.02": round(mean("f_score_0.02"), 4),
            "f_score_0.01": round(mean("f_score_0.01"), 4), "vertices": round(mean("vertices"), 1),
            "faces": round(mean("faces"), 1), "sec_per_mesh": round(mean("seconds"), 3)}


def _load_pipeline(model: str, report):
    from genstudio.hub import resolve
    from .pipeline import MeshAnythingPipeline
    try:
        pipe = MeshAnythingPipeline.from_pretrained(model)
    except (FileNotFoundError, ValueError, ImportError) as e:
        report.note(f"ours skipped: {e}")
        return None
    folder = resolve(model)
    params = sum(p.numel() for p in pipe.model.parameters())
    steps = training_steps(folder)
    report.note(f"ours = MeshAnything checkpoint {model!r} ({folder}), {params / 1e6:.1f}M parameters, "
                f"{pipe.model.config.tokenization} tokens, "
                f"{f'{steps} training steps' if steps else 'training steps: see its model card'}, device {pipe.device}.")
    return pipe


DECODING = {"greedy": dict(temperature=0.0), "sampled": dict(temperature=1.0, top_k=50, top_p=0.95),
            "default": dict(temperature=None, top_k=50, top_p=0.95)}   # None: the checkpoint's default_temperature


def _defaults(pipe) -> str:
    if pipe is None:
        return "n/a"
    config = pipe.model.config
    return f"{config.default_temperature} and {config.default_candidates}"


def bench_mesh(report, quick: bool = False, model: str | None = None, limit: int | None = None,
               max_faces: int | None = None, resolution: int = 64, seed: int = 0,
               decoding: str = "greedy,sampled", candidates: str | int = 1) -> None:
    """Ours vs marching cubes + quadric decimation on the test split; see the module doc."""
    import trimesh
    from tqdm.auto import tqdm
    from genstudio.data import load_manifest
    from genstudio.data.registry import DataError
    items = load_manifest("meshes", "test")
    if not items:
        raise DataError("the meshes source has no test items; build it with `genstudio data prepare meshes`")
    items = evenly_spaced(items, 3 if quick else int(limit) if limit else len(items))
    pipe = _load_pipeline(model or os.environ.get(MODEL_ENV) or "meshanything-urdf-XS", report)
    if max_faces is None:  # what the checkpoint was trained for
        max_faces = int(pipe.model.config.max_faces) if pipe is not None else 400

    modes = [m.strip() for m in str(decoding).split(",") if m.strip()]
    unknown = [m for m in modes if m not in DECODING]
    if unknown or not modes:
        raise ValueError(f"decoding must list some of {', '.join(DECODING)} (got {decoding!r})")
    counts = [int(c) for c in str(candidates).split(",") if c.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"candidates must list draws per input >= 1, e.g. 1,4 (got {candidates!r})")
    # (row name, decoding, draws): sampled decodes once per count (`-bestN`: nearest the input of N);
    # "default" decodes as the checkpoint says, draws included (its default_candidates)
    runs = [(f"ours-{m}", m, None if m == "default" else 1) for m in modes if m != "sampled"]
    runs += [("ours-sampled" + (f"-best{c}" if c > 1 else ""), "sampled", c) for c in counts if "sampled" in modes]
    names = [n for r, _, _ in runs for n in (r, f"mc+qem@{r}")] + ["mc+qem@gt", "mc-dense"]
    rows: dict[str, list[dict]] = {m: [] for m in names + [f"{r}-unfitted" for r, _, _ in runs]}
    for k, item in enumerate(tqdm(items, desc="bench mesh", unit="mesh")):
        with np.load(item["path"]) as z:
            gt_v, gt_f = z["vertices"].astype(np.float64), z["faces"].astype(np.int64)
        gt = sample_surface(gt_v, gt_f, SAMPLES, np.random.default_rng(seed + 1))
        dense_v, dense_f = dense_remesh(gt_v, gt_f, resolution)
        rows["mc-dense"].append(measure(dense_v, dense_f, gt, 0.0, seed))
        targets = {"mc+qem@gt": len(gt_f)}
        if pipe is not None:
            if k == 0:  # the first call pays for lazy imports and allocator growth
                pipe(trimesh.Trimesh(dense_v, dense_f, process=False), max_faces=min(max_faces, 8), seed=seed)
            for run, mode, draws in runs:
                out = pipe(trimesh.Trimesh(dense_v, dense_f, process=False), max_faces=max_faces, seed=seed,
                           fallback=False, num_candidates=draws, **DECODING[mode])
                if not out.failed:
                    targets[f"mc+qem@{run}"] = out.num_faces
                    rows[run].append(measure(out.vertices, out.faces, gt, out.seconds, seed))
                    if "unfitted_vertices" in out.extra:  # the same mesh before the pipeline's surface fit
                        rows[f"{run}-unfitted"].append(measure(out.extra["unfitted_vertices"], out.faces, gt,
                                                               out.seconds, seed))
        for name, target in targets.items():
            t = time.perf_counter()
            v, f = decimate(dense_v, dense_f, target)
            rows[name].append(measure(v, f, gt, time.perf_counter() - t, seed))

    attempted = {"mc+qem@gt": len(items), "mc-dense": len(items)}
    for run, _, _ in runs:
        attempted[run] = len(items) if pipe is not None else 0
        attempted[f"{run}-unfitted"] = len(rows[run]) if rows[f"{run}-unfitted"] else 0
        attempted[f"mc+qem@{run}"] = len(rows[run])
    for method, method_rows in rows.items():
        if attempted[method]:
            report.add(method, "urdf-test", **aggregate(method_rows, attempted[method]))
    gt_faces = np.mean([it["faces"] for it in items])
    report.note(f"Inputs: {len(items)} test-split meshes of the `meshes` source (pybullet random_urdfs, zlib), "
                f"ground truth {gt_faces:.0f} faces on average; every method starts from the same dense "
                f"marching-cubes remesh (resolution {resolution}). Metrics on {SAMPLES} area-sampled points per "
                "mesh in the unit cube: Chamfer = mean nearest-neighbour L2 (average of both directions), "
                "normal consistency unoriented, F-score at 0.02/0.01. ours: max_faces "
                f"{max_faces}, seed {seed}, decoding {', '.join(modes)} (sampled = the reference's sampling mode: "
                f"T 1, top-k 50, top-p 0.95; default = the checkpoint's default_temperature and default_candidates, "
                f"{_defaults(pipe)}; -bestN = nearest the input points of N draws, Chamfer to the input, the "
                "pipeline's `num_candidates`); valid = share of inputs where ours produced a mesh (mc+qem@ours-* runs "
                "only there). Decimation: fast-simplification (quadric error), time excludes the remesh. "
                f"ours rows include the pipeline's surface fit ({pipe.model.config.default_fit_steps if pipe else 0} "
                "steps: the kept mesh's vertices moved to fit the input's surface, faces unchanged; our addition, "
                "not the paper's); -unfitted = the same meshes with the decoder's vertices (the paper's output).")
