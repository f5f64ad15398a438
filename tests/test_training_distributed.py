"""Multi-process generator training on CPU (gloo): `torchrun --nproc_per_node 2 retrieval_lm/finetune.py` with
`--strategy fsdp` (FSDP2 `fully_shard`) and `--strategy deepspeed` (ZeRO-2 and ZeRO-3), on a tiny Llama.

Each run is a real subprocess (≈ 8-10 s; the very first DeepSpeed run in an environment also JIT-builds its shm_comm
op, ≈ 30 s, cached in <venv>/torch_extensions, see selfrag.torch_extensions), run by tests/procs.py: a run that hangs
is killed whole at the timeout."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from procs import run
from procs import torchrun as torchrun_cmd

from selfrag.errors import ConfigError
from selfrag.testing import TRAIN_ROWS
from selfrag.tokens import ALL_TOKENS
from selfrag.training.config import FinetuneConfig

ROOT = Path(__file__).resolve().parent.parent
FINETUNE = ROOT / "retrieval_lm" / "finetune.py"
TIMEOUT = 240

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

ROWS = TRAIN_ROWS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from selfrag.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))  # 8 examples: 2 batches of 2 per rank
    return str(path)


def torchrun(model_dir, train_file, output_dir, *flags: str, nproc: int = 2) -> str:
    """Run finetune.py under `torchrun --nproc_per_node nproc`; return its output, or fail showing its tail."""
    cmd = torchrun_cmd(
        FINETUNE,
        "--model_name_or_path",
        str(model_dir),
        "--train_file",
        train_file,
        "--output_dir",
        str(output_dir),
        "--use_special_tokens",
        "--per_device_train_batch_size=2",
        "--num_train_epochs=2",
        "--learning_rate=1e-3",
        "--seed=0",
        "--logging_steps=1",
        *flags,
        nproc=nproc,
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SELFRAG_LOG_ALL_RANKS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    return run(cmd, env=env, timeout=TIMEOUT, cwd=output_dir.parent).output  # fails the test on a non-zero exit


def load_weights(path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_run(output: str, out: Path, model_dir: Path, updates: int) -> dict:
    """Both ranks trained on their own shard, losses finite and falling, saved once, HF loads the moved weights."""
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "gloo"
    assert summary["completed_steps"] == updates == len(summary["losses"])
    assert all(math.isfinite(x) for x in summary["losses"])
    assert summary["losses"][-1] < summary["losses"][0]
    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["micro_batches"] == 4 and r["examples"] == 8 for r in ranks)  # 2 epochs x 2 batches of 2
    assert sum(r["tokens"] for r in ranks) > 0
    for rank in (0, 1):
        assert re.search(rf"\[rank {rank}\] INFO selfrag\.training\.distributed: trained {updates} updates", output)
    final_saves = re.findall(
        rf"\[rank (\d)\] INFO .*: rank \d: saved the model to {re.escape(str(out))}$", output, re.M
    )
    assert final_saves == ["0"], final_saves  # written once, by rank 0
    before, after = load_weights(model_dir), load_weights(out)
    assert before.keys() == after.keys()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) == len(before), sorted(set(before) - set(moved))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.convert_tokens_to_ids(list(ALL_TOKENS))
    assert tok.decode(ids) == "".join(ALL_TOKENS)
    return after


@pytest.fixture(scope="module")
def fsdp_run(model_dir, train_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp") / "out"
    output = torchrun(model_dir, train_file, out, "--strategy=fsdp", "--checkpointing_steps=2")
    return out, output


@pytest.fixture(scope="module")
def zero3_run(model_dir, train_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3") / "out"
    output = torchrun(model_dir, train_file, out, "--strategy=deepspeed", "--zero_stage=3", "--checkpointing_steps=2")
    return out, output


def test_fsdp2_on_two_cpu_processes(fsdp_run, model_dir):
    out, output = fsdp_run
    check_run(output, out, model_dir, updates=4)
    assert "FSDP2: 2 decoder layers sharded over 2 processes" in output
    # step checkpoints: HF-loadable, with the position
    for step in (2, 4):
        state = json.loads((out / f"step_{step}" / "trainer_state.json").read_text())
        assert state["completed_steps"] == step
        load_weights(out / f"step_{step}")
    assert torch.equal(load_weights(out / "step_4")["lm_head.weight"], load_weights(out)["lm_head.weight"])


@needs_deepspeed
def test_deepspeed_zero3_on_two_cpu_processes_matches_fsdp(zero3_run, fsdp_run, model_dir):
    out, output = zero3_run
    zero3 = check_run(output, out, model_dir, updates=4)
    assert "DeepSpeed ZeRO-3 engine on 2 processes" in output
    assert json.loads((out / "train_summary.json").read_text())["zero_stage"] == 3
    # Same data order, AdamW and schedule: ZeRO-3 and FSDP2 end with the same weights (up to float rounding).
    fsdp = load_weights(fsdp_run[0])
    fsdp_losses = json.loads((fsdp_run[0] / "train_summary.json").read_text())["losses"]
    assert json.loads((out / "train_summary.json").read_text())["losses"] == pytest.approx(fsdp_losses, rel=1e-4)
    for name, value in zero3.items():
        torch.testing.assert_close(value, fsdp[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_deepspeed
def test_deepspeed_zero2_with_gradient_accumulation(model_dir, train_file, tmp_path):
    """2 batches per epoch and rank, 3 to accumulate: each epoch ends with a partial update (2 updates in all)."""
    out = tmp_path / "out"
    output = torchrun(
        model_dir, train_file, out, "--strategy=deepspeed", "--zero_stage=2", "--gradient_accumulation_steps=3"
    )
    check_run(output, out, model_dir, updates=2)
    assert "DeepSpeed ZeRO-2 engine on 2 processes" in output
    # linear decay over 2 updates, stepped once per update (at the end of each epoch), not per micro-batch
    assert re.search(r"step 1/2 \| loss [\d.]+ \| lr 0\.0005 ", output)
    assert re.search(r"step 2/2 \| loss [\d.]+ \| lr 0 ", output)


THREADS_AFTER_TRAIN = """
import os, sys
from selfrag.training.config import FinetuneConfig
from selfrag.training.loop import train

model_dir, train_file, out, strategy = sys.argv[1:5]
train(FinetuneConfig(model_name_or_path=model_dir, train_file=train_file, output_dir=out, use_special_tokens=True,
                     per_device_train_batch_size=2, num_train_epochs=1, seed=0, strategy=strategy,
                     zero_stage=3 if strategy == "deepspeed" else None))
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print("THREADS", " ".join(names))
"""


@needs_deepspeed
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_deepspeed_zero3_leaves_no_gloo_group_alive(model_dir, train_file, tmp_path):
    """Issue #14: every process group, with its gloo worker and transport threads, is gone when training returns,
    not left for interpreter finalization (DeepSpeed keeps the model, engine and groups in module-level state;
    torch.distributed.nn.functional binds the default group as a default argument when imported after it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-c", THREADS_AFTER_TRAIN, str(model_dir), train_file, str(tmp_path / "out"), "deepspeed"]
    done = run(cmd, env=env, timeout=TIMEOUT, cwd=tmp_path)  # fails the test on a non-zero exit
    threads = re.search(r"^THREADS (.*)$", done.stdout, re.M).group(1).split()
    assert not [t for t in threads if "gloo" in t or "tcpstore" in t], threads


@pytest.mark.parametrize(
    ("strategy", "flags"),
    [
        pytest.param("fsdp", ["--strategy=fsdp"], id="fsdp"),
        pytest.param("zero3", ["--strategy=deepspeed", "--zero_stage=3"], id="zero3", marks=needs_deepspeed),
    ],
)
def test_resume_from_a_step_checkpoint_ends_with_the_same_weights(
    strategy, flags, request, model_dir, train_file, tmp_path
):
    """Resume from step 2 of the 4-update run: the last two updates, their losses and the final weights match."""
    full_out, _ = request.getfixturevalue(f"{strategy}_run")
    state = json.loads((full_out / "step_2" / "trainer_state.json").read_text())
    assert state["completed_steps"] == 2 and state["world_size"] == 2
    out = tmp_path / "resumed"
    output = torchrun(model_dir, train_file, out, *flags, f"--resume_from_checkpoint={full_out / 'step_2'}")
    assert "resumed from" in output
    full = json.loads((full_out / "train_summary.json").read_text())
    resumed = json.loads((out / "train_summary.json").read_text())
    assert resumed["completed_steps"] == 4
    assert resumed["losses"] == pytest.approx(full["losses"][2:], rel=1e-5)
    expected = load_weights(full_out)
    for name, value in load_weights(out).items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(["--strategy=fsdp"], id="fsdp"),
        pytest.param(["--strategy=deepspeed", "--zero_stage=3"], id="zero3", marks=needs_deepspeed),
    ],
)
def test_lora_on_two_processes_trains_the_reflection_rows_and_saves_merged(flags, model_dir, train_file, tmp_path):
    out = tmp_path / "out"
    output = torchrun(model_dir, train_file, out, *flags, "--use_lora", "--lora_rank=4", "--learning_rate=1e-2")
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["completed_steps"] == 4
    assert all(math.isfinite(x) for x in summary["losses"]) and summary["losses"][-1] < summary["losses"][0]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert len(re.findall(rf"saved the model to {re.escape(str(out))}$", output, re.M)) == 1
    before, after = load_weights(model_dir), load_weights(out)  # the merged model, a plain HF one
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    rows = tok.convert_tokens_to_ids(list(ALL_TOKENS))
    others = [i for i in range(before["model.embed_tokens.weight"].shape[0]) if i not in set(rows)]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert not torch.allclose(after[name][rows], before[name][rows])  # the reflection rows trained
        torch.testing.assert_close(after[name][others], before[name][others])  # the rest of the vocabulary did not
    assert not torch.allclose(
        after["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"]
    )


def test_fsdp_strategy_without_a_launcher_runs_in_one_process(model_dir, train_file, tmp_path, monkeypatch):
    from selfrag.training.loop import train

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    config = FinetuneConfig(
        model_name_or_path=str(model_dir),
        train_file=train_file,
        output_dir=str(tmp_path / "out"),
        use_special_tokens=True,
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=1e-3,
        seed=0,
        strategy="fsdp",
        with_tracking=True,
        report_to="all",  # whichever of tensorboard / wandb is installed, or none (a warning)
        logging_steps=1,
    )
    result = train(config)
    assert result.completed_steps == 4 and result.losses[-1] < result.losses[0]
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["world_size"] == 1 and summary["ranks"][0]["examples"] == 16
    assert not torch.distributed.is_initialized()  # the group it made is gone, and the variables it set
    assert not {"RANK", "WORLD_SIZE", "MASTER_PORT"} & set(os.environ)
    load_weights(tmp_path / "out")


def test_strategy_flag_errors(model_dir, train_file, tmp_path):
    base = dict(model_name_or_path=str(model_dir), train_file=train_file, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--strategy deepspeed"):
        FinetuneConfig(**base, zero_stage=3)
    with pytest.raises(ConfigError, match="must be 2 or 3"):
        FinetuneConfig(**base, strategy="deepspeed", zero_stage=1)
    with pytest.raises(ConfigError, match="mixed_precision"):
        FinetuneConfig(**base, mixed_precision="bf16")
    from selfrag.training.loop import train

    with pytest.raises(ConfigError, match="only tensorboard, wandb or all"):
        train(FinetuneConfig(**base, strategy="fsdp", with_tracking=True, report_to="comet_ml"))
    assert not torch.distributed.is_initialized() and "RANK" not in os.environ


def test_deepspeed_config_auto_values_are_filled(tmp_path):
    from selfrag.training.distributed import _fill_ds_config

    base = dict(model_name_or_path="m", train_file="t.jsonl", output_dir=str(tmp_path), strategy="deepspeed")
    config = FinetuneConfig(
        **base, per_device_train_batch_size=1, gradient_accumulation_steps=32, mixed_precision="bf16"
    )
    ds = _fill_ds_config(config, hidden_size=4096, world_size=4)
    assert ds["train_batch_size"] == 128 and ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["gradient_accumulation_steps"] == 32
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["reduce_bucket_size"] == 4096 * 4096
    assert zero["stage3_param_persistence_threshold"] == 40960
    assert ds["optimizer"]["params"]["lr"] == config.learning_rate
    shipped = ROOT / "retrieval_lm" / "ds_configs" / "stage3_no_offloading.json"
    if shipped.is_file():
        ds = _fill_ds_config(FinetuneConfig(**base, deepspeed_config=str(shipped)), hidden_size=64, world_size=2)
        assert ds["zero_optimization"]["stage"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train_batch_size": 7}))
    with pytest.raises(ConfigError, match="train_batch_size=7"):
        _fill_ds_config(FinetuneConfig(**base, deepspeed_config=str(bad)), hidden_size=64, world_size=2)
