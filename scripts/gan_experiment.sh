#!/usr/bin/env bash
# Issue 10's comparison: the best generator (runs/g128_r09_e20, grown corpus, 20 epochs) fine-tuned for two more
# epochs at lr 1e-4, alone and against each discriminator, and the resunet decoder warm-started from it, with
# and without the PatchGAN. Every variant sees the same images in the same order (seed 0).
# Usage: scripts/gan_experiment.sh [CORPUS] [GENERATOR]   (then scripts/gan_evaluate.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-../shared/data/colorize-corpus}
GEN=${2:-runs/g128_r09_e20/last.pt}
common=(--mode training --data-dir "$CORPUS/train" --val-dir "$CORPUS/val" --init-from "$GEN" --epochs 2 --lr 1e-4
        --image-size 128 --crop-scale 0.5 --seed 0)
train() { name=$1; shift; [ -f "runs/gan_$name/last.pt" ] || python Engine.py "${common[@]}" --run-name "gan_$name" "$@"; }
train ft
train patchgan --gan patchgan --gan-pretrain-steps 40
train wgan --gan wgan-gp --gan-pretrain-steps 40 --n-critic 2
train resunet --decoder resunet
train resunet_patchgan --decoder resunet --gan patchgan --gan-pretrain-steps 40
