#!/usr/bin/env bash
# MeshAnything-XS on one GPU: continue the shipped meshanything-urdf-XS at a GPU batch size inside a fixed time
# budget; export it in fp16. What travels (made on the CPU machine by `make gpu-prep`): .gpu/meshdata (the `meshes`
# build's train + val items of <= 400 faces, what the XS preset trains on: pipelines.mesh.data.slim_copy),
# .gpu/whl, and checkpoints/meshanything-urdf-XS. Runs under that box's own python3, torch and transformers.
#
#   bash scripts/gpu-meshanything.sh OUT_DIR [MINUTES]
set -uo pipefail
out=${1:?OUT_DIR}; minutes=${2:-2.3}
mkdir -p "$out"
source "$(dirname "$0")/gpu-env.sh"
export GENSTUDIO_DATA=$PWD/.gpu/meshdata
$G train meshanything --set preset='"XS"' --set init_from='"checkpoints/meshanything-urdf-XS"' \
  --set steps=${STEPS:-3000} --set batch_size=${BATCH:-64} --set lr=5e-4 --set warmup_steps=50 --set save_every=100000 \
  --set num_workers=${WORKERS:-8} --set progress=false --set log_every=50 --set eval_items=23 \
  --set max_minutes="$minutes" --output-dir /tmp/runs/meshanything 2>&1 | tee "$out/train.log" || exit 1
cp /tmp/runs/meshanything/metrics.jsonl "$out/metrics.jsonl"
$G export /tmp/runs/meshanything --to /tmp/export/meshanything-urdf-XS --dtype fp16 --overwrite && \
  tar cf "$out/meshanything.tar" -C /tmp/export meshanything-urdf-XS
ls -la "$out"
