# genstudio: the README's two commands are `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# CPU torch by default (a wheel on disk on the project's machines). A GPU user installs a CUDA
# build of torch into .venv first and runs `make install TORCH=` to keep it.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1

.PHONY: install browser demo test bench bench-shape gpu-prep gpu-prep-text2svg train-tokenizer train-starvector train-put train-vdt train-vdt-finetune train-vdt-cpu train-meshanything train-image train-text2svg train-face train-shape train-multiview train-starvector-distill app clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(if $(TORCH),$(PIP) install -q "$(TORCH)")
	$(PIP) install -q -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: install
	$(VENV)/bin/genstudio --seed 0 svg --image examples/svg/rocket.png -o outputs/demo/rocket.svg
	@echo "demo output: outputs/demo/rocket.svg (input: examples/svg/rocket.png)"

# Test files are spread over TEST_WORKERS processes (pytest-xdist; one file stays on one worker, so its module
# fixtures are built once): 2 on a 2-core machine is ~1.7x faster than one process. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: install browser
	$(PY) -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The browser tests (tests/test_browser.py, marker `browser`) drive Debian's Chromium with Playwright:
# as root with apt-get this installs the package (never from a browser CDN; about 30 s). It never fails
# the build: without a browser those tests skip and say why. `make test BROWSER=` leaves it out.
BROWSER ?= chromium-headless-shell chromium
browser:
	@for b in /usr/lib/chromium/chromium-headless-shell /usr/lib/chromium/chromium chromium-headless-shell chromium \
	  chromium-browser google-chrome $$GENSTUDIO_BROWSER; do b=$$(command -v "$$b" 2>/dev/null) || continue; \
	  if [ -x "$$b" ]; then echo "browser: $$b"; exit 0; fi; done; \
	if [ -z "$(BROWSER)" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "browser: no Chromium, and no root apt-get to install one: the browser tests will skip"; exit 0; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	for pkg in $(BROWSER); do \
	  echo "browser: apt-get install $$pkg (Debian package)"; \
	  if timeout 600 apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1 || \
	     { timeout 300 apt-get update -q >/dev/null 2>&1 && \
	       timeout 600 apt-get install -y -q --no-install-recommends $$pkg >/dev/null 2>&1; }; then exit 0; fi; \
	done; echo "browser: could not install $(BROWSER): the browser tests will skip"

bench: install
	$(VENV)/bin/genstudio bench dit
	$(VENV)/bin/genstudio bench vq
	$(VENV)/bin/genstudio bench svg --option per_set=8 --option candidates=4
	$(VENV)/bin/genstudio bench inpaint
	$(VENV)/bin/genstudio data prepare clips
	$(VENV)/bin/genstudio bench video --option steps=10,25,50 --option clips=16
	$(VENV)/bin/genstudio bench mesh
	$(VENV)/bin/genstudio bench compress

train-starvector: install
	$(VENV)/bin/genstudio data prepare icons
	$(VENV)/bin/genstudio data prepare glyphs
	$(VENV)/bin/genstudio train starvector --set preset='"S"' --set max_tokens=256 --set steps=4200 \
	  --set batch_size=16 --set lr=8e-4 --set warmup_steps=100 --set shapes=15000 --set max_shapes=2 \
	  --set curriculum_warm=1200 --set curriculum_ramp=1500 --set shapes_share=0.25 --set save_every=600 \
	  --set eval_items=64 --set eval_max_new_tokens=256 --output-dir runs/starvector-C
	$(VENV)/bin/genstudio train starvector --set init_from='"runs/starvector-C/final"' --set shapes=15000 \
	  --set max_shapes=2 --set curriculum_ramp=1 --set shapes_share=0.25 --set max_tokens=256 --set steps=2800 \
	  --set batch_size=16 --set lr=4e-4 --set warmup_steps=50 --set save_every=700 --set eval_items=64 \
	  --set eval_max_new_tokens=256 --output-dir runs/starvector-C2
	$(VENV)/bin/genstudio train starvector --set init_from='"runs/starvector-C2/final"' --set shapes=15000 \
	  --set max_shapes=2 --set curriculum_ramp=1 --set shapes_share=0.25 --set max_tokens=256 --set steps=1700 \
	  --set batch_size=16 --set lr=3e-4 --set warmup_steps=50 --set save_every=850 --set eval_items=64 \
	  --set eval_max_new_tokens=256 --set max_minutes=42 --output-dir runs/starvector-C3

# Self-distillation round (#18): refined SVGs of training images become the targets of a short fine-tune;
# keep the result only if `bench svg -o methods=ours-greedy,ours-best-of-8` (the model alone) improves.
train-starvector-distill: install
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio svg-distill -m starvector-icons-S -o runs/distill/targets.jsonl \
	  --max-items 900 --max-minutes 32
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train starvector --set init_from='"starvector-icons-S"' \
	  --set targets='"runs/distill/targets.jsonl"' --set targets_only=true --set max_tokens=256 --set steps=400 \
	  --set batch_size=16 --set lr=2e-4 --set warmup_steps=30 --set save_every=200 --set eval_items=64 \
	  --set eval_max_new_tokens=256 --set max_minutes=22 --output-dir runs/distill/train
	$(VENV)/bin/genstudio export runs/distill/train --to runs/distill/export --overwrite
	$(VENV)/bin/genstudio bench svg -o per_set=10 -o methods='"ours-greedy,ours-best-of-8"' \
	  -o model='"runs/distill/export"' --out runs/distill/bench

train-tokenizer: install
	$(VENV)/bin/genstudio data prepare photos --option debian=true
	$(VENV)/bin/genstudio train tokenizer --output-dir runs/tokenizer-simvq-photos

train-put: install
	$(VENV)/bin/genstudio data prepare photos --option debian=true
	$(VENV)/bin/genstudio train put --set stage='"vqvae"' --set steps=1500 --output-dir runs/put-vqvae-S
	$(VENV)/bin/genstudio train put --set stage='"transformer"' --set vqvae='"runs/put-vqvae-S"' --set steps=1500 \
	  --output-dir runs/put-transformer-S
	$(VENV)/bin/genstudio export runs/put-transformer-S --to checkpoints/put-photos-S --dtype fp16 --overwrite
	# stage 1b: a harmonic-reference decoder on the frozen encoder + codebooks (the transformer still fits),
	# trained on tokens sampled from that transformer
	$(VENV)/bin/genstudio train put --set stage='"vqvae"' --set init_from='"runs/put-vqvae-S"' --set decoder_only=true \
	  --set vqvae_kwargs='{"reference_fill": "harmonic"}' --set transformer='"runs/put-transformer-S"' \
	  --set no_reference_prob=0.1 --set steps=1800 --set lr=3e-4 --set warmup_steps=50 --set save_every=300 \
	  --set max_minutes=45 --output-dir runs/put-vqvae-H
	# stage 1c (version 3): a biharmonic-reference decoder with 4 dilated refinement blocks, per-image log-MSE;
	# the shipped run stopped at 1,300 of the 3,000 scheduled steps (max_minutes on 1 CPU thread)
	$(VENV)/bin/genstudio train put --set stage='"vqvae"' --set init_from='"runs/put-vqvae-H"' --set decoder_only=true \
	  --set vqvae_kwargs='{"reference_fill": "biharmonic", "refine_blocks": 4}' --set transformer='"runs/put-transformer-S"' \
	  --set oracle_share=0 --set pixel_loss='"psnr"' --set gradient_weight=0 --set hole_weight=20 --set lr=2e-4 \
	  --set betas='[0.9, 0.99]' --set warmup_steps=50 --set ema_decay=0.999 --set steps=3000 --set save_every=250 \
	  --set max_minutes=75 --output-dir runs/put-vqvae-B
	$(VENV)/bin/genstudio export runs/put-vqvae-B --to checkpoints/put-photos-S --dtype fp16 --overwrite \
	  --set transformer='"runs/put-transformer-S"'
	# stage 1d (version 4): stage 1c's decoder fine-tuned with 30 % greyscale crops (the photos mix colour and
	# greyscale pictures; version 3 filled greyscale ones badly), 10 % items without known pixels, lr 1e-4, EMA 0.998;
	# 1,000 steps, 38 min on 2 CPU threads
	$(VENV)/bin/genstudio train put --set stage='"vqvae"' --set init_from='"runs/put-vqvae-B"' --set decoder_only=true \
	  --set vqvae_kwargs='{"reference_fill": "biharmonic", "refine_blocks": 4}' --set transformer='"runs/put-transformer-S"' \
	  --set oracle_share=0 --set pixel_loss='"psnr"' --set gradient_weight=0 --set hole_weight=20 --set lr=1e-4 \
	  --set betas='[0.9, 0.99]' --set warmup_steps=20 --set ema_decay=0.998 --set steps=1000 --set save_every=200 \
	  --set grey_prob=0.3 --set no_reference_prob=0.1 --set max_minutes=60 --output-dir runs/put-vqvae-G
	$(VENV)/bin/genstudio export runs/put-vqvae-G --to checkpoints/put-photos-S --dtype fp16 --overwrite \
	  --set transformer='"runs/put-transformer-S"'

# vdt-physics-M (the default) was trained this way on one H200 in 5.6 minutes (2,526 steps, 8 data workers);
# on 2 CPU cores the same steps take days: vdt-physics-S (3,000 steps, batch 16) is the CPU recipe.
train-vdt: install
	$(VENV)/bin/genstudio train vdt --set preset='"M"' --set prediction_type='"sample"' --set steps=2526 \
	  --set batch_size=64 --set lr=5e-4 --set warmup_steps=200 --set save_every=842 --set num_workers=8 \
	  --output-dir runs/vdt-physics-M
	$(VENV)/bin/genstudio export runs/vdt-physics-M --to checkpoints/vdt-physics-M --dtype fp16 --overwrite

# vdt-physics-M v3 (the shipped default since 2026-11-30): the H200 weights above, continued on one CPU thread in
# three runs of 34-40 minutes (477 + 500 + 426 steps of batch 16 were reached on an AMD EPYC; max_minutes stops them).
train-vdt-finetune: install
	$(VENV)/bin/genstudio train vdt --set preset='"M"' --set prediction_type='"sample"' --set init_from='"runs/vdt-physics-M"' \
	  --set steps=600 --set batch_size=16 --set lr=1e-4 --set warmup_steps=20 --set ema_decay=0.995 --set save_every=100 \
	  --set num_workers=1 --set max_minutes=38 --output-dir runs/vdt-M-cpu
	$(VENV)/bin/genstudio train vdt --set preset='"M"' --set prediction_type='"sample"' --set init_from='"runs/vdt-M-cpu"' \
	  --set steps=560 --set batch_size=16 --set lr=1e-4 --set warmup_steps=20 --set ema_decay=0.995 --set save_every=100 \
	  --set num_workers=1 --set max_minutes=40 --output-dir runs/vdt-M-cpu2
	$(VENV)/bin/genstudio train vdt --set preset='"M"' --set prediction_type='"sample"' --set init_from='"runs/vdt-M-cpu2"' \
	  --set steps=560 --set batch_size=16 --set lr=1e-4 --set warmup_steps=20 --set ema_decay=0.995 --set save_every=100 \
	  --set num_workers=1 --set max_minutes=34 --output-dir runs/vdt-M-cpu3
	$(VENV)/bin/genstudio export runs/vdt-M-cpu3 --to checkpoints/vdt-physics-M --dtype fp16 --overwrite

train-vdt-cpu: install
	$(VENV)/bin/genstudio train vdt --set preset='"S"' --set prediction_type='"sample"' --set steps=4000 \
	  --set batch_size=16 --set lr=5e-4 --set warmup_steps=100 --set save_every=500 --output-dir runs/vdt-physics-S
	$(VENV)/bin/genstudio export runs/vdt-physics-S --to checkpoints/vdt-physics-S --dtype fp16 --overwrite

train-meshanything: install
	$(VENV)/bin/genstudio data prepare meshes
	$(VENV)/bin/genstudio train meshanything --set preset='"XS"' --set steps=2400 --set batch_size=8 \
	  --set lr=1e-3 --set warmup_steps=200 --set save_every=500 --output-dir runs/meshanything-urdf-XS
	$(VENV)/bin/genstudio export runs/meshanything-urdf-XS --to checkpoints/meshanything-urdf-XS --dtype fp16 --overwrite
	# v2 continued that export on one GPU: scripts/gpu-meshanything.sh (batch 64, 1,497 steps in 135 s), and v3 (shipped)
	# continued v2 there: STEPS=3500 BATCH=128 scripts/gpu-meshanything.sh OUT 8.6 (1,795 steps at batch 128 in 521 s);
	# its config.json sets "default_temperature": 1.0 (sampling, the better mode on bench mesh)

# Class-conditional glyph DiT (genstudio generate) + its SIMS checkpoint; the classifier scores `bench sims`.
# The font packages widen the data from 22 DejaVu fonts to 82 fonts in 19 families.
train-image: install
	-apt-get install -y -q fonts-noto-core fonts-liberation2 fonts-urw-base35
	$(VENV)/bin/genstudio data prepare glyph-classes --force
	$(VENV)/bin/genstudio train glyph-classifier --set steps=1200 --output-dir runs/glyph-classifier
	$(VENV)/bin/genstudio export runs/glyph-classifier --to checkpoints/glyph-classifier --overwrite
	$(VENV)/bin/genstudio train image-vae --set steps=1500 --output-dir runs/glyphs-vae
	# what made the shipped checkpoint: run 1 (cosine over 8,000 steps, plain label LR) was stopped after
	# its checkpoint-3000; run 2 continued from there for 6,000 steps with the label LR x10
	$(VENV)/bin/genstudio train image-dit --set vae='"runs/glyphs-vae"' --set steps=8000 --set label_lr_multiplier=1 \
	  --set max_minutes=30 --output-dir runs/dit-glyphs-S1
	$(VENV)/bin/genstudio train image-dit --set vae='"runs/glyphs-vae"' --set init_from='"runs/dit-glyphs-S1/checkpoint-3000"' \
	  --set steps=6000 --set warmup_steps=100 --output-dir runs/dit-glyphs-S
	$(VENV)/bin/genstudio export runs/dit-glyphs-S --to checkpoints/dit-glyphs-S --overwrite
	$(VENV)/bin/genstudio sims --base dit-glyphs-S --synthetic-size 3100 --steps 600 --guidance 0.5 \
	  -o checkpoints/dit-glyphs-S-sims --overwrite

# Vec2Face (genstudio face): the recogniser, then Vec2Face against it. vec2face-avatars-S was trained this way
# on one H200 (82 s + 118 s, 8+ data workers); on 2 CPU cores each step takes 2-5 s.
# VAT (65 CPU minutes: the run stops at step ~1,690 of its 1,800-step cosine) -> G3PT XS (class + text) and its
# interpolation ablation; export into one checkpoint (vat/ + g3pt/), then the benchmark
# VAT: stage 1 decodes the continuous latents for 100 steps, then initialises the codebook from them and ramps the
# commitment (against latent collapse); stage 2 continues it. Ablations: stage 1 alone, compared at checkpoint-600.
VAT_RECIPE = --set preset=S --set decoder_queries='"learned"' --set kl_weight=1e-5 --set save_every=300
VAT_STAGE1 = $(VAT_RECIPE) --set ae_warmup_steps=100 --set commitment_ramp_steps=100 --set logvar_init=-8.0 \
  --set steps=900 --set warmup_steps=100 --set lr=5e-4
G3PT_RECIPE = --set vat=runs/vat-S --set preset=XS --set condition=class+text --set steps=450 --set warmup_steps=40 \
  --set batch_size=64 --set lr=6e-4 --set save_every=150 --set max_minutes=28

train-shape: install
	$(VENV)/bin/genstudio data prepare shapes
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train vat $(VAT_STAGE1) --set max_minutes=33 --output-dir runs/vat-S-stage1
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train vat $(VAT_RECIPE) --set init_from='"runs/vat-S-stage1"' \
	  --set steps=1200 --set warmup_steps=50 --set lr=3e-4 --set max_minutes=45 --output-dir runs/vat-S
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train vat $(VAT_STAGE1) --set variational=false --set max_minutes=24 --output-dir runs/vat-S-novar
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train vat $(VAT_STAGE1) --set single_scale=true --set max_minutes=24 --output-dir runs/vat-S-vq
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train g3pt $(G3PT_RECIPE) --output-dir runs/g3pt-XS
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train g3pt $(G3PT_RECIPE) --set cross_scale=false --output-dir runs/g3pt-XS-interp
	$(VENV)/bin/genstudio export runs/vat-S --to checkpoints/shape-S/vat --overwrite
	$(VENV)/bin/genstudio export runs/g3pt-XS --to checkpoints/shape-S/g3pt --overwrite
	$(VENV)/bin/genstudio bench shape -o vat=runs/vat-S
	$(VENV)/bin/genstudio bench shape -o vat=runs/vat-S-stage1/checkpoint-600 -o vat_novar=runs/vat-S-novar/checkpoint-600 \
	  -o vat_vq=runs/vat-S-vq/checkpoint-600 -o faces=50 -o qbits=8 --out runs/bench-shape-ablation
	mv runs/bench-shape-ablation/shape.json benchmarks/results/shape-ablation.json
	mv runs/bench-shape-ablation/shape.md benchmarks/results/shape-ablation.md
	$(VENV)/bin/genstudio bench shape -o g3pt=runs/g3pt-XS -o g3pt_interp=runs/g3pt-XS-interp -o tokenizer=false --out runs/bench-shape-gen
	mv runs/bench-shape-gen/shape.json benchmarks/results/shape-generation.json
	mv runs/bench-shape-gen/shape.md benchmarks/results/shape-generation.md

train-face: install
	$(VENV)/bin/genstudio data prepare faces
	$(VENV)/bin/genstudio train face-recognizer --set preset='"M"' --set embed_dim=256 --set batch_size=256 --set lr=2e-3 \
	  --set warmup_steps=200 --set margin_warmup_steps=800 --set steps=2610 --set num_workers=8 --output-dir runs/face-recognizer
	$(VENV)/bin/genstudio train vec2face --set recognizer='"runs/face-recognizer"' --set batch_size=128 --set lr=4e-4 \
	  --set warmup_steps=205 --set steps=2059 --set num_workers=8 --output-dir runs/vec2face
	$(VENV)/bin/genstudio export runs/vec2face --to checkpoints/vec2face-avatars-S --overwrite
	$(VENV)/bin/genstudio bench face --option identities=200 --option per_identity=12 --option steps=300

# SVGFusion (genstudio text2svg): VP-VAE, then the VS-DiT on its latents and the raw-rows ablation;
# IconCLIP is the benchmark's feature space. The first DiT run caches the MiniLM states of every caption.
train-text2svg: install
	$(VENV)/bin/genstudio data prepare icons
	# svgfusion-icons-S used this VAE run's step-2,000 EMA checkpoint (the run was stopped by hand there)
	$(VENV)/bin/genstudio train svgfusion-vae --set steps=3000 --output-dir runs/svgfusion-vae
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"runs/svgfusion-vae"' --set steps=2000 \
	  --set warmup_steps=100 --output-dir runs/svgfusion-dit
	$(VENV)/bin/genstudio export runs/svgfusion-dit --to checkpoints/svgfusion-icons-S --overwrite
	# v2-v4 continued that run (cosine over 6,000 more steps; resumed with `--config runs/svgfusion-dit2/train_config.json`
	# after each stop; v3 = its step-2,500 EMA checkpoint, v4 = the step it stopped at, see the model card)
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"runs/svgfusion-vae"' --set init_from='"runs/svgfusion-dit"' \
	  --set steps=6000 --set warmup_steps=50 --output-dir runs/svgfusion-dit2
	$(VENV)/bin/genstudio export runs/svgfusion-dit2 --to checkpoints/svgfusion-icons-S --overwrite
	# v5 continued v4 on a GPU (where one is lent: `make gpu-prep gpu-prep-text2svg`, scripts/gpu-text2svg.sh there);
	# (max_minutes is a GPU budget: on 2 CPU cores the same 7,438 steps at batch 512 take days)
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"checkpoints/svgfusion-icons-S"' \
	  --set init_from='"checkpoints/svgfusion-icons-S"' --set batch_size=512 --set lr=5e-4 --set steps=10000 \
	  --set warmup_steps=200 --set save_every=2000 --set max_minutes=$(or $(T2S_MINUTES),8.4) --output-dir runs/svgfusion-dit5
	$(VENV)/bin/genstudio export runs/svgfusion-dit5 --to checkpoints/svgfusion-icons-S --overwrite
	# v6 and v7 continued v5 on 2 CPU threads with game-icons added and the Min-SNR-5 loss: v6 = the run's step-3,500
	# EMA checkpoint (stopped by hand there, ~85 min on an Intel Xeon), v7 = the run resumed to the end of its cosine
	# (6,000 steps, ~2 h 25 min in all there; on a slower CPU resume it with `--config runs/svgfusion-dit7/train_config.json`)
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"checkpoints/svgfusion-icons-S"' \
	  --set init_from='"checkpoints/svgfusion-icons-S"' --set train_sets='"tabler,lucide,mdi,phosphor,twemoji,openmoji,game-icons"' \
	  --set snr_gamma=5.0 --set batch_size=64 --set lr=8e-5 --set steps=6000 --set warmup_steps=100 --set keep_checkpoints=12 \
	  --set max_minutes=160 --output-dir runs/svgfusion-dit7
	$(VENV)/bin/genstudio export runs/svgfusion-dit7 --to checkpoints/svgfusion-icons-S --overwrite
	# v8: v7 plus a high-noise expert (eDiff-I): v7 re-trained as v-prediction (v12, 4,500 steps), then with the
	# high-noise steps kept in the loss (v13, snr_floor=1, 4,000 steps); ~65 + 60 min on 2 CPU threads
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"checkpoints/svgfusion-icons-S"' \
	  --set init_from='"checkpoints/svgfusion-icons-S"' --set train_sets='"tabler,lucide,mdi,phosphor,twemoji,openmoji,game-icons"' \
	  --set prediction_type='"v_prediction"' --set snr_gamma=5.0 --set scaling_factor=0.7946492433547974 \
	  --set batch_size=64 --set lr=1e-4 --set steps=4500 --set warmup_steps=200 --output-dir runs/svgfusion-dit12
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"checkpoints/svgfusion-icons-S"' \
	  --set init_from='"runs/svgfusion-dit12"' --set train_sets='"tabler,lucide,mdi,phosphor,twemoji,openmoji,game-icons"' \
	  --set prediction_type='"v_prediction"' --set snr_gamma=5.0 --set snr_floor=1.0 \
	  --set scaling_factor=0.7946492433547974 --set batch_size=64 --set lr=8e-5 --set steps=4000 --set warmup_steps=200 \
	  --output-dir runs/svgfusion-dit13
	$(VENV)/bin/genstudio export runs/svgfusion-dit7 --to checkpoints/svgfusion-icons-S --overwrite \
	  --set high=runs/svgfusion-dit13 --set expert_boundary=500
	# the ablation: 2,000 steps (41 min on the AMD EPYC; on a slower CPU resume it with
	# `genstudio train svgfusion-dit --config runs/svgfusion-raw/train_config.json` until it reaches them)
	$(VENV)/bin/genstudio train svgfusion-dit --set vae='"raw"' --set steps=2000 --set warmup_steps=100 \
	  --set max_minutes=41 --output-dir runs/svgfusion-raw
	$(VENV)/bin/genstudio export runs/svgfusion-raw --to runs/svgfusion-raw-export --overwrite
	$(VENV)/bin/genstudio train text2svg-clip --set steps=1000 --set warmup_steps=50 --set max_minutes=16 \
	  --output-dir runs/text2svg-clip
	$(VENV)/bin/genstudio export runs/text2svg-clip --to checkpoints/text2svg-clip --overwrite
	$(VENV)/bin/genstudio bench text2svg --option raw_model=runs/svgfusion-raw-export

# MV-Adapter (genstudio multiview), the CPU recipe: a small VAE (64 px -> 16x16x4), the latent text-to-image
# base on single views, then only the adapter on 4 views per object (the base frozen); ~2 h on 2 cores. That gives
# v1; the shipped v2 continued both on a GPU: `make gpu-prep`, then scripts/gpu-multiview.sh there.
train-multiview: install
	$(VENV)/bin/genstudio data prepare multiview
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train mv-vae --set preset=S --set steps=1100 --set batch_size=32 \
	  --set save_every=250 --output-dir runs/mv-vae
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train mv-base --set preset=S-latent --set vae='"runs/mv-vae"' --set steps=1900 \
	  --set batch_size=32 --set save_every=250 --set max_minutes=52 --output-dir runs/mv-base
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train mv-adapter --set base='"runs/mv-base"' --set steps=1050 --set batch_size=8 \
	  --set save_every=150 --set max_minutes=52 --output-dir runs/mv-adapter
	# v1: both continued (the base with Min-SNR-5 weighting; the adapter at lr 5e-4 without the SNR shift)
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train mv-base --set preset=S-latent --set vae='"runs/mv-vae"' \
	  --set init_from='"runs/mv-base"' --set snr_gamma=5 --set steps=1200 --set batch_size=32 --set lr=3e-4 \
	  --set warmup_steps=50 --set save_every=200 --set max_minutes=34 --output-dir runs/mv-base-v1
	OMP_NUM_THREADS=1 $(VENV)/bin/genstudio train mv-adapter --set base='"runs/mv-base-v1"' --set init_from='"runs/mv-adapter"' \
	  --set shift_scale=1 --set steps=900 --set batch_size=8 --set lr=5e-4 --set warmup_steps=50 --set save_every=150 \
	  --set max_minutes=42 --output-dir runs/mv-adapter-v1
	$(VENV)/bin/genstudio export runs/mv-base-v1 --to checkpoints/mv-base-S --overwrite
	# the VAE ships as its own checkpoint (each <= 30 MB); the base's vae.json names it
	rm -rf checkpoints/mv-vae-S && mv checkpoints/mv-base-S/vae checkpoints/mv-vae-S
	echo '{"checkpoint": "mv-vae-S"}' > checkpoints/mv-base-S/vae.json
	$(VENV)/bin/genstudio export runs/mv-adapter-v1 --to checkpoints/mv-adapter-S --overwrite
	$(VENV)/bin/genstudio bench multiview -o objects=16

# v2 continued both on one GPU (an H200 lent through the workplace's device tool): what travels there is
# made here, the command ran there from the repository root (checkpoints/mv-* carried), its exports came back
gpu-prep: install
	rm -rf .gpu /tmp/gpu-multiview && mkdir -p .gpu/whl
	$(VENV)/bin/python -c "from pipelines.multiview.data import slim_copy; slim_copy('/tmp/gpu-multiview', compress=False)"
	tar cf - -C /tmp/gpu-multiview multiview | xz -6 -T2 > .gpu/data.tar.xz && rm -rf /tmp/gpu-multiview
	$(VENV)/bin/python -c "from pipelines.multiview.train import write_caption_table as w; from genstudio.data import \
	  load_manifest as m; w('.gpu/captions.safetensors', sorted({it['caption'] for it in m('multiview')}))"
	$(VENV)/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .gpu/whl . importlib_metadata
	# diffusers without its pipelines (the 64 MiB that travel hold data, checkpoints and wheels)
	$(VENV)/bin/python -m pip download -q --no-deps -d /tmp/gpu-whl diffusers==0.42.1 && rm -rf /tmp/gpu-d && \
	  mkdir /tmp/gpu-d && cd /tmp/gpu-d && unzip -q /tmp/gpu-whl/diffusers-0.42.1-py3-none-any.whl && \
	  rm -rf diffusers/pipelines/*/ diffusers/modular_pipelines && \
	  tar czf $(CURDIR)/.gpu/whl/diffusers-0.42.1-pruned.tgz diffusers diffusers-0.42.1.dist-info
	# MeshAnything's: the `meshes` build's train + val items of <= 400 faces (what preset XS trains on)
	$(VENV)/bin/python -c "from pipelines.mesh.data import slim_copy; slim_copy('.gpu/meshdata')"
	# there: bash scripts/gpu-multiview.sh $$OUT 2.5 5   (base 1,016 steps at batch 512, adapter 1,850 at 64)
	#        bash scripts/gpu-meshanything.sh $$OUT 2.2  (1,497 steps at batch 64)

# SVGFusion's VS-DiT there, in two calls of one lease (see scripts/gpu-text2svg.sh): the VP-VAE posteriors and
# captions of the icons (latent table), MiniLM pruned to the captions' tokens; the genstudio wheel from gpu-prep.
# T2S_SETS: the training icon sets (default pipelines.text2svg.data.SETS; v6 adds game-icons: T2S_SETS=tabler,...,game-icons)
# T2S_VAE: the VP-VAE whose posteriors the DiT learns (default the shipped one; carry it and pass VAE=... there)
T2S_VAE ?= checkpoints/svgfusion-icons-S
gpu-prep-text2svg: install
	$(VENV)/bin/python -c "from pipelines.text2svg.train import write_latent_table as w, train_sets; \
	  from pipelines.text2svg.data import load_items; \
	  w('.gpu/svgf-latents.npz', '$(T2S_VAE)', load_items('train', sets=train_sets('$(T2S_SETS)')))"
	$(VENV)/bin/python -c "import json; from pipelines.text2svg.train import read_latent_table, _caption_table; \
	  from genstudio.text import write_pruned_encoder; t = read_latent_table('.gpu/svgf-latents.npz'); \
	  c = {k: t[k] for k in ('captions', 'val_captions')}; json.dump(c, open('.gpu/svgf-captions.json', 'w')); \
	  print(write_pruned_encoder('.gpu/minilm', _caption_table(c['captions'])[0] + _caption_table(c['val_captions'])[0]))"
	# there: bash scripts/gpu-text2svg.sh states   (carry .gpu/minilm .gpu/svgf-captions.json .gpu/whl), then
	#        bash scripts/gpu-text2svg.sh train $$OUT 8.4 S checkpoints/svgfusion-icons-S 512 5e-4 10000 200 dit-S 5 0 \
	#          M none 512 5e-4 8000 500 dit-M 5 0   (carry .gpu/svgf-latents.npz .gpu/whl checkpoints/svgfusion-icons-S)
	#        v8's two experts at scale (T2S_SETS=tabler,lucide,mdi,phosphor,twemoji,openmoji,game-icons here; checked
	#        end to end on the CPU with a 1.5-minute budget, 2026-12-02):
	#        SNR_GAMMA=5 EXTRA='--set scaling_factor=0.7946492433547974' EXTRA_low='--set t_max=500' \
	#          EXTRA_high='--set prediction_type=v_prediction --set snr_floor=1 --set t_min=500' EXPERTS='low high 500' \
	#          bash scripts/gpu-text2svg.sh train $$OUT 8.4 S checkpoints/svgfusion-icons-S 512 2e-4 10000 200 low 5 0 \
	#          S checkpoints/svgfusion-icons-S/transformer_high 512 2e-4 10000 200 high 5 1

# VAT curve vs Draco + decimation at matched bytes, ablations, G3PT generation (`genstudio bench shape`);
# pass the runs: make bench-shape VAT=runs/vat-S G3PT=runs/g3pt-S (and VAT_NOVAR= VAT_VQ= G3PT_INTERP=)
bench-shape: install
	$(VENV)/bin/genstudio bench shape --option vat=$(VAT) $(if $(VAT_NOVAR),--option vat_novar=$(VAT_NOVAR)) \
	  $(if $(VAT_VQ),--option vat_vq=$(VAT_VQ)) $(if $(G3PT),--option g3pt=$(G3PT)) \
	  $(if $(G3PT_INTERP),--option g3pt_interp=$(G3PT_INTERP))

app: install
	$(VENV)/bin/genstudio app

clean:
	rm -rf $(VENV) outputs .pytest_cache
