#!/usr/bin/env bash
# Shared body of script_finetune_{7b,13b}.sh, which set MODEL, TRAIN_FILE, OUTPUT_DIR, MAX_SEQ_LENGTH, NUM_GPUS,
# BATCH_SIZE_PER_GPU, TOTAL_BATCH_SIZE, LEARNING_RATE and EPOCHS, then `source` this file.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${MODEL:?}" "${TRAIN_FILE:?}" "${OUTPUT_DIR:?}" "${MAX_SEQ_LENGTH:?}" "${NUM_GPUS:?}"
: "${BATCH_SIZE_PER_GPU:?}" "${TOTAL_BATCH_SIZE:?}" "${LEARNING_RATE:?}" "${EPOCHS:?}"
STRATEGY="${STRATEGY:-deepspeed}"
DS_CONFIG="${DS_CONFIG:-$HERE/ds_configs/stage3_no_offloading.json}"
USE_FLASH_ATTN="${USE_FLASH_ATTN:-1}"   # needs CUDA and flash-attn; USE_FLASH_ATTN=0 elsewhere
MIXED_PRECISION="${MIXED_PRECISION:-bf16}"
PREPROCESSING_WORKERS="${PREPROCESSING_WORKERS:-16}"
REPORT_TO="${REPORT_TO:-tensorboard}"   # written to $OUTPUT_DIR; none: no tracker
CHECKPOINTING_STEPS="${CHECKPOINTING_STEPS:-}"   # N or epoch: resumable checkpoints, and a rerun continues from the newest
# Several machines (docs/training.md, "Several nodes"): the same command on each, NODE_RANK 0..NUM_NODES-1,
# MASTER_ADDR = node 0's address, OUTPUT_DIR on a filesystem all nodes share. NUM_GPUS counts one node's GPUs.
NUM_NODES="${NUM_NODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
read -r -a LAUNCHER_ARGS <<< "${LAUNCHER_ARGS:-}"   # extra torchrun / accelerate options

WORLD=$((NUM_GPUS * NUM_NODES))
GRAD_ACC=$((TOTAL_BATCH_SIZE / WORLD / BATCH_SIZE_PER_GPU))
if [ "$GRAD_ACC" -lt 1 ] || [ $((GRAD_ACC * WORLD * BATCH_SIZE_PER_GPU)) -ne "$TOTAL_BATCH_SIZE" ]; then
    echo "TOTAL_BATCH_SIZE=$TOTAL_BATCH_SIZE is not a multiple of NUM_GPUS x NUM_NODES x BATCH_SIZE_PER_GPU" >&2
    exit 2
fi
echo "Training $MODEL on $WORLD processes ($NUM_NODES node(s)): $BATCH_SIZE_PER_GPU per device x $GRAD_ACC accumulation steps" >&2

ARGS=(
    --model_name_or_path "$MODEL"
    --use_special_tokens
    --use_slow_tokenizer
    --train_file "$TRAIN_FILE"
    --max_seq_length "$MAX_SEQ_LENGTH"
    --preprocessing_num_workers "$PREPROCESSING_WORKERS"
    --per_device_train_batch_size "$BATCH_SIZE_PER_GPU"
    --gradient_accumulation_steps "$GRAD_ACC"
    --learning_rate "$LEARNING_RATE"
    --lr_scheduler_type linear
    --warmup_ratio 0.03
    --weight_decay 0.
    --num_train_epochs "$EPOCHS"
    --output_dir "$OUTPUT_DIR"
    --logging_steps 1
)
if [ "$REPORT_TO" != "none" ]; then ARGS+=(--with_tracking --report_to "$REPORT_TO"); fi
if [ "$USE_FLASH_ATTN" = "1" ]; then ARGS+=(--use_flash_attn); fi
if [ -n "$CHECKPOINTING_STEPS" ]; then ARGS+=(--checkpointing_steps "$CHECKPOINTING_STEPS" --resume_from_checkpoint auto); fi

case "$STRATEGY" in
    deepspeed)
        CMD=(torchrun --nproc_per_node "$NUM_GPUS" --nnodes "$NUM_NODES" --node_rank "$NODE_RANK"
             --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" ${LAUNCHER_ARGS[@]+"${LAUNCHER_ARGS[@]}"} "$HERE/finetune.py" "${ARGS[@]}"
             --strategy deepspeed --deepspeed_config "$DS_CONFIG" --mixed_precision "$MIXED_PRECISION") ;;
    accelerate)
        CMD=(accelerate launch --mixed_precision "$MIXED_PRECISION" --num_machines "$NUM_NODES" --num_processes "$WORLD"
             --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" --dynamo_backend no
             --use_deepspeed --deepspeed_multinode_launcher standard --deepspeed_config_file "$DS_CONFIG" ${LAUNCHER_ARGS[@]+"${LAUNCHER_ARGS[@]}"} "$HERE/finetune.py" "${ARGS[@]}") ;;
    *) echo "STRATEGY must be deepspeed or accelerate, got $STRATEGY" >&2; exit 2 ;;
esac
CMD+=("$@")
if [ "${DRY_RUN:-0}" = "1" ]; then printf '%q ' "${CMD[@]}"; echo; exit 0; fi
exec "${CMD[@]}"
