"""Fine-tune a Self-RAG generator: next-token loss on outputs with reflection tokens, retrieved passages masked.

Same flags as the original script, plus --original_masking, --overflow, --new_token_init, --lora_new_token_rows,
--torch_dtype, --pad_token and --strategy. The original 7B run (4 GPUs, effective batch 128):

    accelerate launch --mixed_precision bf16 --num_machines 1 --num_processes 4 \
        --use_deepspeed --deepspeed_config_file stage3_no_offloading_accelerate.conf \
        retrieval_lm/finetune.py --model_name_or_path meta-llama/Llama-2-7b-hf --use_special_tokens \
        --train_file train.jsonl --max_seq_length 2048 --per_device_train_batch_size 1 \
        --gradient_accumulation_steps 32 --learning_rate 2e-5 --lr_scheduler_type linear --warmup_ratio 0.03 \
        --weight_decay 0. --num_train_epochs 3 --output_dir output/self_rag_7B --with_tracking \
        --report_to tensorboard --logging_steps 1 --use_flash_attn

Several CPU processes (gloo), DeepSpeed ZeRO-2/3 or FSDP2 called directly (accelerate's own DeepSpeed / FSDP modes do
not distribute on CPU); the same command runs one process per GPU:

    torchrun --nproc_per_node 2 retrieval_lm/finetune.py --strategy deepspeed --zero_stage 3 ...
    torchrun --nproc_per_node 2 retrieval_lm/finetune.py --strategy fsdp ...

One CPU process (a tiny model): python retrieval_lm/finetune.py --model_name_or_path <dir> --use_special_tokens \
    --train_file train.jsonl --output_dir out --per_device_train_batch_size 2 --num_train_epochs 1 --logging_steps 1
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main
from selfrag.training.config import FinetuneConfig
from selfrag.training.distributed import setup_rank_logging


def main(argv: Sequence[str] | None = None) -> int:
    setup_rank_logging()
    config = parse_config(FinetuneConfig, argv, description=__doc__.splitlines()[0])
    from selfrag.training.loop import train

    train(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
