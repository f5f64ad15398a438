"""Train the Self-RAG critic: next-token loss on {instruction, input, output} critic examples (GPT-4 labels).

The original's flags (docs/training.md, "Critic"), run on the generator's training loop. The original README command
(2 GPUs, FSDP; no --use_special_token, so the critic writes its labels as plain text):

    torchrun --nproc_per_node=2 data_creation/train_special_tokens.py \
        --model_name_or_path meta-llama/Llama-2-7b-hf --data_path critic_train.json \
        --bf16 True --output_dir critic_llama2_7b --num_train_epochs 3 \
        --per_device_train_batch_size 1 --per_device_eval_batch_size 1 --gradient_accumulation_steps 8 \
        --evaluation_strategy no --save_strategy steps --save_steps 300 --save_total_limit 1 \
        --learning_rate 2e-5 --weight_decay 0. --warmup_ratio 0.01 --lr_scheduler_type cosine --logging_steps 10 \
        --fsdp "full_shard auto_wrap"

The same command runs on CPU (gloo, FSDP2); `--deepspeed ds.json` trains with DeepSpeed ZeRO instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from selfrag.cli import parse_config, run_main
from selfrag.training.critic import CriticConfig
from selfrag.training.distributed import setup_rank_logging


def main(argv: Sequence[str] | None = None) -> int:
    setup_rank_logging()
    config = parse_config(CriticConfig, argv, description=__doc__.splitlines()[0])
    from selfrag.training.critic import train_critic

    train_critic(config)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, None))
