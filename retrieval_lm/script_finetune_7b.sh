#!/usr/bin/env bash
# Fine-tune the Self-RAG 7B generator (Llama-2-7B base), the settings of the released model:
# 4 GPUs x 1 example x 32 accumulation steps = 128 examples per update, lr 2e-5 linear with 3 % warm-up,
# 3 epochs, 2048 tokens, bf16, DeepSpeed ZeRO-3 without offloading (ds_configs/stage3_no_offloading.json).
#
# Every setting can be overridden from the environment, e.g.
#   NUM_GPUS=8 TRAIN_FILE=data/train.jsonl OUTPUT_DIR=output/my_7b bash retrieval_lm/script_finetune_7b.sh
# STRATEGY=deepspeed (default) runs DeepSpeed under torchrun; STRATEGY=accelerate launches with
# `accelerate launch --use_deepspeed` as the original did (finetune.py then drives the same DeepSpeed engine).
# CHECKPOINTING_STEPS=N saves resumable checkpoints; the same command run again after a crash continues from the
# newest. NUM_NODES / NODE_RANK / MASTER_ADDR / MASTER_PORT: several machines (docs/training.md).
# DRY_RUN=1 prints the command instead of running it.
# Extra arguments are passed on to finetune.py (they win over the ones here).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MODEL="${MODEL:-meta-llama/Llama-2-7b-hf}"
TRAIN_FILE="${TRAIN_FILE:-train.jsonl}"
OUTPUT_DIR="${OUTPUT_DIR:-output/self_rag_7B}"
MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-2048}"
NUM_GPUS="${NUM_GPUS:-4}"
BATCH_SIZE_PER_GPU="${BATCH_SIZE_PER_GPU:-1}"
TOTAL_BATCH_SIZE="${TOTAL_BATCH_SIZE:-128}"
LEARNING_RATE="${LEARNING_RATE:-2e-5}"
EPOCHS="${EPOCHS:-3}"

source "$HERE/_finetune_common.sh" "$@"
