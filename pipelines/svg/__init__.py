"""Image -> SVG code (StarVector): the model, its SVG tokenizer and data, the training recipe."""

DEFAULT_MODEL = "starvector-icons-S"  # the shipped checkpoint; here so that CLI modules import no torch
# Refinement defaults, sized for <= 5 s per icon on 2 CPU cores (greedy decoding, then the best
# model candidate and an empty canvas refined; benchmarks/results/svg.md measures them).
REFINE_STEPS = 60      # optimiser steps per refined candidate
REFINE_TOP_K = 1       # model candidates refined (the best by their own score)
REFINE_SECONDS = 4.0   # time bound for all refinements of one image together
