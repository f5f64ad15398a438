#!/usr/bin/env bash
# Fine-tune the Self-RAG 13B generator (Llama-2-13B base): as the 7B run (script_finetune_7b.sh) but with sequences
# of at most 1536 tokens, the length the released 13B model was trained with. Same environment overrides.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

MODEL="${MODEL:-meta-llama/Llama-2-13b-hf}"
TRAIN_FILE="${TRAIN_FILE:-train.jsonl}"
OUTPUT_DIR="${OUTPUT_DIR:-output/self_rag_13B}"
MAX_SEQ_LENGTH="${MAX_SEQ_LENGTH:-1536}"
NUM_GPUS="${NUM_GPUS:-4}"
BATCH_SIZE_PER_GPU="${BATCH_SIZE_PER_GPU:-1}"
TOTAL_BATCH_SIZE="${TOTAL_BATCH_SIZE:-128}"
LEARNING_RATE="${LEARNING_RATE:-2e-5}"
EPOCHS="${EPOCHS:-3}"

source "$HERE/_finetune_common.sh" "$@"
