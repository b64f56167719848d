"""One GPU lease: face-recognizer -> vec2face (one process) and VDT-M (another), each calibrated
(samples/s over a short run) so its cosine schedule ends inside the time budget.

    python3 docs/gpu_lease_driver.py all   # both, in parallel; results as tars in $OUT (data in .gpu/, see docs/GPU_LEASE.md)
Env: OUT, BUDGET (seconds for the whole thing, default 470), SCALE (budget multiplier for CPU tests).
"""
import json, os, subprocess, sys, tarfile, time, gzip, shutil
from pathlib import Path

T0 = float(os.environ.get("T0", time.time()))
BUDGET = float(os.environ.get("BUDGET", 470))
OUT = Path(os.environ.get("OUT", "/tmp/gpu_out"))
RUNS = Path(os.environ.get("RUNS", "/tmp/gsruns"))
GPU = None


def left() -> float:
    return T0 + BUDGET - time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def unpack_faces():
    import numpy as np
    root = Path("/tmp/gsdata"); d = root / "faces"
    (d / "images").mkdir(parents=True, exist_ok=True)
    if not (d / "images" / "train.npy").exists():
        with np.load(".gpu/faces.npz") as z:
            for s in z.files:
                np.save(d / "images" / f"{s}.npy", z[s])
        with gzip.open(".gpu/manifest.jsonl.gz", "rb") as f, open(d / "manifest.jsonl", "wb") as g:
            shutil.copyfileobj(f, g)
        for n in ("info.json", "style.json"):
            shutil.copy(f".gpu/{n}", d / n)
    os.environ["GENSTUDIO_DATA"] = str(root)


TINY = os.environ.get("TINY") == "1"   # a CPU test of the whole flow


def calibrate(recipe_fn, cfg: dict, name: str, steps: int = 12 if TINY else 60) -> float:
    """Training samples per second (steady state) of this recipe + config on this machine."""
    from genstudio.train import train
    out = RUNS / f"cal-{name}"
    shutil.rmtree(out, ignore_errors=True)
    r = recipe_fn({**cfg, "steps": steps, "log_every": 3 if TINY else 10, "save_every": 10 ** 9, "output_dir": str(out),
                   "progress": False, "warmup_steps": 5})
    r.eval_fn = None
    t = time.time()
    train(r)
    rows = [json.loads(l) for l in open(out / "metrics.jsonl") if '"samples_per_s"' in l]
    sps = sorted(r_["samples_per_s"] for r_ in rows[1:])[len(rows[1:]) // 2]
    log(f"{name}: calibration {steps} steps in {time.time() - t:.1f}s, {sps:.0f} samples/s")
    return sps


def run(recipe_fn, cfg: dict, name: str, seconds: float) -> Path:
    from genstudio.train import train
    if TINY:
        cfg = {**cfg, "preset": "tiny", "batch_size": 8, "num_workers": 1}
    sps = calibrate(recipe_fn, cfg, name)
    seconds = min(seconds, left() - 25)
    steps = max(50, int(seconds * sps / cfg["batch_size"] * 0.9))
    out = RUNS / name
    shutil.rmtree(out, ignore_errors=True)
    full = {**cfg, "steps": steps, "save_every": max(steps // 3, 1), "output_dir": str(out), "progress": False,
            "max_minutes": max(seconds * 1.1, 10) / 60, "warmup_steps": min(cfg.get("warmup_steps", 100), steps // 10)}
    log(f"{name}: {steps} steps for {seconds:.0f}s")
    t = time.time()
    summary = train(recipe_fn(full))
    log(f"{name}: done in {time.time() - t:.1f}s: {json.dumps(summary)}")
    return out


def pack(run_dir: Path, name: str) -> None:
    """train_config, metrics, summary and final/ (safetensors cast to fp16) as $OUT/name.tar."""
    import torch
    from safetensors.torch import load_file, save_file
    final = run_dir / "final"
    for f in final.glob("*.safetensors"):
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(f).items()}
        save_file(sd, f, metadata={"format": "pt"})
    OUT.mkdir(parents=True, exist_ok=True)
    with tarfile.open(OUT / f"{name}.tar", "w") as tar:
        for n in ("train_config.json", "metrics.jsonl", "summary.json"):
            if (run_dir / n).exists():
                tar.add(run_dir / n, arcname=f"{name}/{n}")
        tar.add(final, arcname=f"{name}/final")
    log(f"packed {name}: {(OUT / f'{name}.tar').stat().st_size / 1e6:.1f} MB")


def faces():
    unpack_faces()
    from pipelines.face.train import recognizer_recipe, vec2face_recipe
    workers = int(os.environ.get("FACE_WORKERS", 6))
    rec_s = float(os.environ.get("REC_SECONDS", 0.3 * BUDGET))
    rec = run(recognizer_recipe, {"preset": "M", "embed_dim": 256, "batch_size": 256, "lr": 2e-3, "warmup_steps": 200,
                                  "margin_warmup_steps": 800, "num_workers": workers}, "face-recognizer", rec_s)
    pack(rec, "face-recognizer")
    v2f_cfg = {"preset": "S", "recognizer": str(rec), "batch_size": 128, "lr": 4e-4, "warmup_steps": 300,
               "num_workers": workers}
    # the calibration and the export take ~40 s
    v2f = run(vec2face_recipe, v2f_cfg, "vec2face", left() - 60)
    pack(v2f, "vec2face")


def vdt():
    from pipelines.video.train import recipe
    workers = int(os.environ.get("VDT_WORKERS", 8))
    cfg = {"preset": os.environ.get("VDT_PRESET", "M"), "prediction_type": "sample", "kinds": ["balls", "digits"],
           "batch_size": 64, "lr": 5e-4, "warmup_steps": 200, "num_workers": workers}
    out = run(recipe, cfg, "vdt", left() - 45)
    pack(out, "vdt")


def main():
    what = sys.argv[1]
    if what == "all":
        OUT.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "T0": str(T0)}
        procs = {n: subprocess.Popen([sys.executable, __file__, n], env=env, stdout=open(OUT / f"{n}.log", "w"),
                                     stderr=subprocess.STDOUT) for n in ("faces", "vdt")}
        while any(p.poll() is None for p in procs.values()):
            time.sleep(2)
            if left() < -30:
                for p in procs.values():
                    p.kill()
        for n, p in procs.items():
            log(n, "exit", p.returncode)
            print("".join(open(OUT / f"{n}.log").readlines()[-12:]))
    elif what == "faces":
        faces()
    elif what == "vdt":
        vdt()


if __name__ == "__main__":
    main()
