"""LoRA + resume: a LoRA run stopped at a step checkpoint and resumed ends with the same losses and weights as the
uninterrupted run (same seed), and the new reflection-token rows trained.

Run: .venv/bin/python -m pytest -q tests/test_training_lora_resume.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfrag.tokens import ALL_TOKENS
from selfrag.training.config import FinetuneConfig
from selfrag.training.loop import train

ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"},
    {
        "instruction": "Who wrote Pride and Prejudice?",
        "input": "",
        "output": "[Retrieval]<paragraph>Pride and Prejudice\nA novel by Jane Austen.</paragraph>[Relevant]Jane "
        "Austen wrote it.[Fully supported][Utility:5]",
    },
    {
        "instruction": "Is the following statement correct or not?",
        "input": "Water boils at 100 degrees.",
        "output": "[Retrieval]<paragraph>Water\nWater boils at 100 degrees Celsius.</paragraph>[Relevant]true"
        "[Fully supported][Utility:4]",
    },
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is faster and steadier on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny random Llama whose tokenizer has NO reflection tokens and no pad token (they are added by training)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfrag.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=300, reflection=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base") / "model"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def lora_config(base_dir: Path, train_file: str, output_dir: Path, **kwargs) -> FinetuneConfig:
    return FinetuneConfig(
        model_name_or_path=str(base_dir),
        train_file=train_file,
        output_dir=str(output_dir),
        use_special_tokens=True,
        use_lora=True,
        lora_rank=4,
        lora_dropout=0.1,  # dropout draws from the RNG: the resumed run must restore it to match
        per_device_train_batch_size=2,
        num_train_epochs=2,
        learning_rate=1e-2,
        seed=0,
        max_seq_length=256,
        **kwargs,
    )


@pytest.fixture(scope="module")
def full_run(base_dir, tmp_path_factory):
    """8 examples, batches of 2: 4 updates per epoch, 2 epochs, a checkpoint every 2 updates (step_4 ends epoch 0)."""
    root = tmp_path_factory.mktemp("lora")
    train_file = root / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2 + ROWS[:2]))
    result = train(lora_config(base_dir, str(train_file), root / "full", checkpointing_steps="2"))
    assert result.completed_steps == 8 and result.losses[-1] < result.losses[0]
    assert sorted(p.name for p in (root / "full").glob("step_*")) == ["step_2", "step_4", "step_6", "step_8"]
    return str(train_file), result


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("step", [4, 6], ids=["at-an-epoch-end", "inside-an-epoch"])
def test_lora_run_resumed_from_a_step_checkpoint_matches_the_uninterrupted_run(step, base_dir, full_run, tmp_path):
    train_file, full = full_run
    out = full.output_dir
    state = json.loads((out / f"step_{step}" / "trainer_state.json").read_text())
    assert state == {4: {"completed_steps": 4, "epoch": 0, "batches_in_epoch": 4},
                     6: {"completed_steps": 6, "epoch": 1, "batches_in_epoch": 2}}[step]  # fmt: skip
    resumed_dir = tmp_path / "resumed"
    resumed = train(lora_config(base_dir, train_file, resumed_dir, resume_from_checkpoint=str(out / f"step_{step}")))
    assert resumed.completed_steps == 8 and len(resumed.losses) == 8 - step
    # Same data order, dropout masks, optimizer and schedule: the same arithmetic in the same order, so the same
    # numbers (measured: identical); the tolerance only allows for float reassociation on other machines.
    assert resumed.losses == pytest.approx(full.losses[step:], rel=1e-6, abs=1e-7)
    final, tokenizer = load(out)  # merged models: plain HF folders
    again, _ = load(resumed_dir)
    assert final.keys() == again.keys()
    for name, value in final.items():
        torch.testing.assert_close(again[name], value, rtol=1e-6, atol=1e-7, msg=name)
    for run in (out, resumed_dir):  # the unmerged adapters are kept too
        assert (run / "adapter" / "adapter_config.json").is_file()


def test_lora_trains_the_new_reflection_rows_from_their_mean_init(base_dir, full_run):
    _, full = full_run
    final, tokenizer = load(full.output_dir)
    # The reflection rows are new (not in the base tokenizer), started at the mean of the old rows, and trained.
    base, base_tokenizer = load(base_dir)
    old = len(base_tokenizer)
    ids = tokenizer.convert_tokens_to_ids(list(ALL_TOKENS))
    assert ids == list(range(old, old + 15)) and tokenizer.decode(ids) == "".join(ALL_TOKENS)
    used = {t for t in ALL_TOKENS if any(t in r["output"] for r in ROWS)}
    assert len(used) == 8
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        mean = base[name].mean(dim=0)
        moved = {t for t, i in zip(ALL_TOKENS, ids) if not torch.equal(final[name][i], mean)}
        # input rows move when their token occurs in the data; output rows get a gradient through every softmax
        assert moved == (used if name == "model.embed_tokens.weight" else set(ALL_TOKENS)), moved
        torch.testing.assert_close(final[name][:old], base[name])  # the old vocabulary is untouched (LoRA)


def torchrun_finetune(*args: str, cwd: Path) -> str:
    import importlib.util
    import os

    from procs import run, torchrun

    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed not installed")
    root = Path(__file__).resolve().parent.parent
    cmd = torchrun(root / "retrieval_lm" / "finetune.py", *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    return run(cmd, env=env, timeout=300, cwd=cwd).output  # fails the test on a non-zero exit


def test_lora_zero3_on_two_processes_resumed_inside_an_epoch_matches(base_dir, tmp_path):
    """DeepSpeed ZeRO-3 + LoRA (dropout 0.1) on 2 CPU processes: 12 examples = 3 batches of 2 per rank and epoch,
    2 epochs; resuming from step_4 (inside epoch 1) gives the last two updates and the final weights exactly."""
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 4))
    common = ["--model_name_or_path", str(base_dir), "--train_file", str(train_file), "--use_special_tokens",
              "--use_lora", "--lora_rank=4", "--lora_dropout=0.1", "--per_device_train_batch_size=2",
              "--num_train_epochs=2", "--learning_rate=1e-2", "--seed=0", "--strategy=deepspeed", "--zero_stage=3"]  # fmt: skip
    torchrun_finetune(*common, "--output_dir", str(tmp_path / "full"), "--checkpointing_steps=2", cwd=tmp_path)
    state = json.loads((tmp_path / "full" / "step_4" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batches_in_epoch"], state["world_size"]) == (1, 1, 2)
    checkpoint = str(tmp_path / "full" / "step_4")
    torchrun_finetune(*common, "--output_dir", str(tmp_path / "resumed"), f"--resume_from_checkpoint={checkpoint}",
                      cwd=tmp_path)  # fmt: skip
    full = json.loads((tmp_path / "full" / "train_summary.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "train_summary.json").read_text())
    assert (
        full["completed_steps"] == resumed["completed_steps"] == 6 and full["zero_init"] is False
    )  # LoRA: no zero.Init
    assert resumed["losses"] == pytest.approx(full["losses"][4:], rel=1e-6, abs=1e-7)
    expected, _ = load(tmp_path / "full")
    got, _ = load(tmp_path / "resumed")
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-7, msg=name)
