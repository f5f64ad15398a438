"""Critic training (`data_creation/train_special_tokens.py`): the original's flags, prompt, optional reflection tokens
with mean-initialised rows, label masking, and runs in one process and under `torchrun --nproc_per_node 2` (FSDP2)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from procs import run, torchrun

from selfrag.errors import ConfigError
from selfrag.tokens import ALL_TOKENS
from selfrag.training.critic import CRITIC_PROMPTS, CriticConfig, critic_encode_fn, train_critic
from selfrag.training.encode import IGNORE_INDEX, encode_example

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "data_creation" / "train_special_tokens.py"
spec = importlib.util.spec_from_file_location("train_special_tokens", SCRIPT)
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

ROWS = [
    {
        "instruction": "Given an instruction, decide whether retrieval is needed.",
        "input": "Task instruction: Who wrote Pride and Prejudice?",
        "output": "[Retrieval]",
    },
    {
        "instruction": "Judge whether the evidence is relevant.",
        "input": "Question: capital of France\nEvidence: <paragraph>Paris is the capital.</paragraph>",
        "output": "[Relevant]",
    },
    {"instruction": "Rate the utility of the response.", "input": "", "output": "[Utility:5] The answer is useful."},
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    """A tiny Llama whose tokenizer has no reflection tokens and no pad token (a fresh base model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfrag.testing import build_tiny_tokenizer

    fast = build_tiny_tokenizer(vocab_size=400, reflection=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(fast),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        )
    )
    path = tmp_path_factory.mktemp("base") / "model"
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "critic_train.json"
    path.write_text(json.dumps(ROWS * 2))  # the original's format: one JSON list
    return str(path)


def readme_flags(model_dir, data_file, output_dir) -> list[str]:
    """The original README critic command, shrunk (batch, steps) for a tiny model."""
    return [
        f"--model_name_or_path={model_dir}",
        f"--data_path={data_file}",
        "--bf16",
        "True",
        f"--output_dir={output_dir}",
        "--num_train_epochs=2",
        "--per_device_train_batch_size=2",
        "--per_device_eval_batch_size=1",
        "--gradient_accumulation_steps=1",
        "--evaluation_strategy",
        "no",
        "--save_strategy",
        "steps",
        "--save_steps=300",
        "--save_total_limit=1",
        "--learning_rate=1e-3",
        "--weight_decay=0.",
        "--warmup_ratio=0.01",
        "--lr_scheduler_type=cosine",
        "--logging_steps=1",
        "--fsdp",
        "full_shard auto_wrap",
    ]


def test_readme_flags_map_onto_the_training_loop(tmp_path):
    from selfrag.cli import parse_config

    critic = parse_config(CriticConfig, readme_flags("m", "d.json", tmp_path))
    config = critic.to_finetune_config()
    assert critic.strategy == config.strategy == "fsdp"
    assert config.mixed_precision == "bf16" and config.lr_scheduler_type == "cosine"
    assert config.checkpointing_steps == "300" and config.warmup_ratio == 0.01 and config.seed == 42
    assert config.pad_token == "[PAD]" and config.new_token_init == "mean" and config.max_seq_length == 512
    assert not config.use_special_tokens and not config.with_tracking  # the README does not pass --use_special_token
    plain = CriticConfig(data_path="d.json", output_dir="o", deepspeed="ds.json", save_strategy="epoch", max_steps=5)
    config = plain.to_finetune_config()
    assert config.strategy == "deepspeed" and config.deepspeed_config == "ds.json"
    assert config.checkpointing_steps == "epoch" and config.max_train_steps == 5
    assert CriticConfig(data_path="d.json", output_dir="o", save_strategy="no").to_finetune_config().strategy == (
        "accelerate"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"separated": True}, "prompt_no_input_separated"),
        ({"eval_strategy": "steps"}, "no evaluation"),
        ({"fsdp": "shard_grad_op"}, "full_shard auto_wrap"),
        ({"fsdp": "full_shard", "deepspeed": "x.json"}, "exclusive"),
        ({"use_context_markups": True}, "--use_special_token"),
        ({"optim": "adafactor"}, "AdamW"),
        ({"data_path": ""}, "--data_path"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CriticConfig(**{"data_path": "d.json", "output_dir": "o", **kwargs})


def test_critic_prompt_and_masks():
    from selfrag.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    example = {"instruction": "Judge it.", "input": "Evidence: <paragraph>Paris.</paragraph>", "output": "[Relevant]"}
    prompt = "### Instruction:\nJudge it.\n\n### Input:\nEvidence: <paragraph>Paris.</paragraph>\n\n### Response:"
    assert CRITIC_PROMPTS["prompt_input"].format(**example) == prompt
    enc = encode_example(example, tok, 512, mask_paragraphs=False, templates=CRITIC_PROMPTS)
    n_prompt = len(tok(prompt)["input_ids"])
    assert enc["input_ids"][:n_prompt] == tok(prompt)["input_ids"]
    relevant = tok.convert_tokens_to_ids("[Relevant]")
    assert enc["labels"] == [IGNORE_INDEX] * n_prompt + [relevant, tok.eos_token_id]  # target: output + EOS
    # --not_consider_special_tokens: the reflection token leaves the loss, EOS stays
    enc = encode_example(example, tok, 512, mask_paragraphs=False, templates=CRITIC_PROMPTS, mask_token_ids=[relevant])
    assert enc["labels"] == [IGNORE_INDEX] * (n_prompt + 1) + [tok.eos_token_id]
    no_input = {"instruction": "Rate it.", "input": "", "output": "[Utility:5]"}
    enc = encode_example(no_input, tok, 512, mask_paragraphs=False, templates=CRITIC_PROMPTS)
    assert tok.decode(enc["input_ids"], skip_special_tokens=False).startswith(
        "<s>### Instruction:\nRate it.\n\n### Response:[Utility:5]"
    )


def test_context_markups_mask_each_passage_in_the_output():
    from selfrag.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    example = {
        "instruction": "Rate it.",
        "input": "",
        "output": "<paragraph>Paris.</paragraph>[Relevant]<paragraph>Seine.</paragraph>[Utility:5]",
    }
    critic = CriticConfig(data_path="d.json", output_dir="o", use_special_token=True, use_context_markups=True)
    enc = encode_example(example, tok, 512, mask_paragraphs=critic.use_context_markups, templates=CRITIC_PROMPTS)
    kept = tok.decode([i for i, label in zip(enc["input_ids"], enc["labels"], strict=True) if label != IGNORE_INDEX])
    assert kept == "<paragraph></paragraph>[Relevant]<paragraph></paragraph>[Utility:5]</s>"


def test_critic_encode_fn_counts_and_masks_reflection_tokens(base_model_dir, data_file, tmp_path):
    from selfrag.training.model import load_tokenizer

    critic = CriticConfig(
        model_name_or_path=str(base_model_dir),
        data_path=data_file,
        output_dir=str(tmp_path),
        use_special_token=True,
        not_consider_special_tokens=True,
    )
    config = critic.to_finetune_config()
    tokenizer, added = load_tokenizer(config)
    assert len(added.vocab.all_ids) == len(ALL_TOKENS) and tokenizer.pad_token == "[PAD]"
    data, stats = critic_encode_fn(critic)(config, tokenizer)
    assert stats.num_kept == 6
    reflection = set(tokenizer.convert_tokens_to_ids(list(ALL_TOKENS)))
    for ex in data:
        assert not reflection & {t for t, label in zip(ex["input_ids"], ex["labels"], strict=True) if label != -100}


@pytest.mark.parametrize("special", [True, False])
def test_critic_trains_in_one_process_and_saves(base_model_dir, data_file, tmp_path, special):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "critic"
    flags = [
        f"--model_name_or_path={base_model_dir}",
        f"--data_path={data_file}",
        f"--output_dir={out}",
        "--num_train_epochs=2",
        "--per_device_train_batch_size=3",
        "--learning_rate=1e-3",
        "--logging_steps=1",
        "--save_strategy=no",
    ] + (["--use_special_token"] if special else [])
    from selfrag.cli import parse_config

    result = train_critic(parse_config(CriticConfig, flags))
    assert result.completed_steps == 4 and all(math.isfinite(x) for x in result.losses)
    assert result.losses[-1] < result.losses[0]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tok.pad_token == "[PAD]" and model.get_input_embeddings().weight.shape[0] == len(tok)
    has_tokens = all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in ALL_TOKENS)
    assert has_tokens is special  # reflection tokens only with --use_special_token, as the original
    assert not (out / "step_300").exists()


def test_script_reports_config_errors_as_exit_status_2(tmp_path):
    argv = [f"--data_path={tmp_path}/d.json", f"--output_dir={tmp_path}", "--separated"]
    assert script.run_main(script.main, argv) == 2


def test_readme_command_under_torchrun_with_fsdp2(base_model_dir, data_file, tmp_path):
    out = tmp_path / "critic"
    cmd = torchrun(SCRIPT, *readme_flags(base_model_dir, data_file, out), "--use_special_token")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SELFRAG_LOG_ALL_RANKS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = run(cmd, env=env, timeout=240, cwd=tmp_path, check=False)
    output = proc.output
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{output[-6000:]}"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["world_size"] == 2
    assert [r["rank"] for r in summary["ranks"]] == [0, 1] and all(r["micro_batches"] == 4 for r in summary["ranks"])
    assert len(summary["losses"]) == 4 and all(math.isfinite(x) for x in summary["losses"])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in ALL_TOKENS) and tok.pad_token == "[PAD]"
