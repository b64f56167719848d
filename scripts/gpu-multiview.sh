#!/usr/bin/env bash
# MV-Adapter on one GPU: continue the shipped mv-base-S (Min-SNR-5) and then the shipped mv-adapter-S on it,
# at GPU batch sizes, inside a fixed time budget; export both in fp16.
#
# Prepared on the CPU machine (`make gpu-prep`): .gpu/data.tar.xz (the train split without masks and
# position / normal maps: pipelines.multiview.data.slim_copy, stored raw and xz-compressed), .gpu/captions.safetensors (the MiniLM states of
# every caption: train.write_caption_table, so the GPU box needs no text encoder), .gpu/whl (the genstudio
# wheel, diffusers without its pipelines, importlib_metadata). Runs under that box's own python3 + torch.
#
#   bash scripts/gpu-multiview.sh OUT_DIR [BASE_MINUTES] [ADAPTER_MINUTES]
set -uo pipefail
out=${1:?OUT_DIR}; base_min=${2:-2.5}; adapter_min=${3:-5}
mkdir -p "$out"
source "$(dirname "$0")/gpu-env.sh"
export GENSTUDIO_DATA=/tmp/gsdata
mkdir -p $GENSTUDIO_DATA && tar xJf .gpu/data.tar.xz -C $GENSTUDIO_DATA || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
${PY:-python3} -c "import sys, torch, diffusers, genstudio; print(sys.version.split()[0], torch.__version__, diffusers.__version__, \
torch.cuda.is_available())" || exit 1
# DataLoader workers hand batches over /dev/shm: a small one (a container's 64 MB) crashes them
shm=$(df -m --output=avail /dev/shm 2>/dev/null | tail -1); echo "/dev/shm: ${shm:-?} MB free"
workers=12; [ "${shm:-0}" -gt 4000 ] 2>/dev/null || workers=0
TABLE='".gpu/captions.safetensors"'
runs=/tmp/runs; exp=/tmp/export; mkdir -p $runs $exp

$G train mv-base --set preset=S-latent --set vae='"checkpoints/mv-vae-S"' --set init_from='"checkpoints/mv-base-S"' \
  --set caption_table="$TABLE" --set snr_gamma=5 --set steps=${BASE_STEPS:-3500} --set batch_size=${BASE_BATCH:-512} --set lr=4e-4 \
  --set warmup_steps=100 --set save_every=1000 --set num_workers=$workers --set progress=false --set log_every=100 \
  --set max_minutes="$base_min" --output-dir $runs/mv-base 2>&1 | tee "$out/base.log" || exit 1
cp $runs/mv-base/metrics.jsonl "$out/base-metrics.jsonl"
$G export $runs/mv-base --to $exp/mv-base-S --dtype fp16 --overwrite || exit 1
(cd $exp && tar cf - mv-base-S) | split -b 16000k - "$out/base.tar.part-"   # what comes back: files <= 16 MiB

$G train mv-adapter --set base="\"$runs/mv-base\"" --set init_from='"checkpoints/mv-adapter-S"' \
  --set caption_table="$TABLE" --set shift_scale=1 --set steps=${ADAPTER_STEPS:-3500} --set batch_size=${ADAPTER_BATCH:-64} --set lr=3e-4 \
  --set warmup_steps=100 --set save_every=1000 --set num_workers=$workers --set progress=false --set log_every=100 \
  --set max_minutes="$adapter_min" --output-dir $runs/mv-adapter 2>&1 | tee "$out/adapter.log"
cp $runs/mv-adapter/metrics.jsonl "$out/adapter-metrics.jsonl"
$G export $runs/mv-adapter --to $exp/mv-adapter-S --dtype fp16 --overwrite && tar cf "$out/adapter.tar" -C $exp mv-adapter-S
ls -la "$out"
