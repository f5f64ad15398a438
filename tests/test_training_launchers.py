"""The original's training commands run for real on CPU (2 processes, gloo, a tiny model): `accelerate launch
--use_deepspeed` through `script_finetune_7b.sh` with the script's defaults, `kill -9` of a whole job and the same
command run again (generator: torchrun + DeepSpeed ZeRO-3; critic: torchrun + `--fsdp "full_shard auto_wrap"`), and
two torchrun "nodes" against one node with two processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from procs import _marked, free_port, kill_all, members, run, torchrun

from selfrag.testing import TRAIN_ROWS
from selfrag.tokens import ALL_TOKENS

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "retrieval_lm" / "script_finetune_7b.sh"
CRITIC = ROOT / "data_creation" / "train_special_tokens.py"
TIMEOUT = 300

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

ROWS = TRAIN_ROWS


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny Llama whose tokenizer has neither the reflection tokens nor a pad token: training adds them."""
    from selfrag.testing import CORPUS, build_tiny_model

    corpus = "\n".join([CORPUS, *(r["output"] for r in ROWS)])
    return build_tiny_model(tmp_path_factory.mktemp("base") / "model", corpus=corpus, reflection=False)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 4))  # 16 examples: 4 updates of 4 an epoch
    return path


def script_env(model: Path, train: Path, out: Path, **extra: str) -> dict[str, str]:
    """`script_finetune_7b.sh`'s environment: only the job size changed (2 processes, 4 examples an update)."""
    return {
        **os.environ,
        "MODEL": str(model),
        "TRAIN_FILE": str(train),
        "OUTPUT_DIR": str(out),
        "NUM_GPUS": "2",
        "TOTAL_BATCH_SIZE": "4",
        "EPOCHS": "3",
        "LEARNING_RATE": "1e-3",
        "PREPROCESSING_WORKERS": "1",
        "MIXED_PRECISION": "no",
        "REPORT_TO": "none",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        # the script calls torchrun / accelerate: this interpreter's (CI does not activate the venv)
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        **extra,
    }


SCRIPT_CMD = ["bash", str(SCRIPT), "--use_slow_tokenizer", "False", "--seed", "0"]  # the tiny tokenizer is fast-only


def summary(out: Path) -> dict:
    return json.loads((out / "train_summary.json").read_text())


def weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: Path, b: Path, rel: float = 1e-3) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        err = (wa[name] - wb[name]).norm() / wa[name].norm().clamp_min(1e-12)
        assert err <= rel, f"{name}: relative difference {err:.2e}"


def assert_selfrag_model(out: Path) -> None:
    """The saved folder loads in HF and keeps the 15 reflection tokens as single ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    ids = [tok.encode(t, add_special_tokens=False) for t in ALL_TOKENS]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == len(ALL_TOKENS) == 15


def test_multi_node_commands_the_script_runs():
    """`NUM_NODES=2 NODE_RANK=1 ...` (dry run): the launcher flags of node 1, and the global batch kept at 128."""
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "NUM_NODES": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29555",
    }
    torchrun = run(["bash", str(SCRIPT)], env=env, timeout=30).stdout.split()
    assert torchrun[: torchrun.index(str(ROOT / "retrieval_lm" / "finetune.py"))] == [
        "torchrun",
        "--nproc_per_node",
        "4",
        "--nnodes",
        "2",
        "--node_rank",
        "1",
        "--master_addr",
        "node0",
        "--master_port",
        "29555",
    ]
    assert torchrun[torchrun.index("--gradient_accumulation_steps") + 1] == "16"  # 128 / (4 GPUs x 2 nodes)
    accelerate = run(["bash", str(SCRIPT)], env={**env, "STRATEGY": "accelerate"}, timeout=30).stdout.split()
    for name, value in (
        ("--num_machines", "2"),
        ("--num_processes", "8"),
        ("--machine_rank", "1"),
        ("--main_process_ip", "node0"),
        ("--deepspeed_multinode_launcher", "standard"),
    ):
        assert accelerate[accelerate.index(name) + 1] == value


def test_accelerate_launch_with_the_scripts_defaults_trains(base_model, train_file, tmp_path):
    """`STRATEGY=accelerate bash script_finetune_7b.sh` as written (flash attention asked for, tensorboard, bf16,
    the ZeRO-3 config of ds_configs/): accelerate launches 2 processes, finetune.py drives DeepSpeed ZeRO-3."""
    out = tmp_path / "out"
    env = script_env(base_model, train_file, out, STRATEGY="accelerate", EPOCHS="2")
    for name in ("MIXED_PRECISION", "REPORT_TO"):
        del env[name]  # the script's defaults: bf16, tensorboard
    done = run(SCRIPT_CMD, env=env, timeout=TIMEOUT, cwd=tmp_path)
    s = summary(out)
    assert (s["strategy"], s["zero_stage"], s["world_size"], s["completed_steps"]) == ("deepspeed", 3, 2, 8)
    assert all(r["micro_batches"] == 16 for r in s["ranks"])  # 16 examples, 2 ranks, 1 a micro-batch, 2 epochs
    losses = s["losses"]
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # it learns
    assert "accelerate launch with DeepSpeed: training with DeepSpeed called directly" in done.output
    flash = [line for line in done.output.splitlines() if "--use_flash_attn" in line and "sdpa" in line]
    assert len(flash) == 1 and "no CUDA GPU" in flash[0]  # one warning, not one per process
    assert list((out / "selfrag_finetune").glob("events.out.tfevents.*"))  # tensorboard, in the output folder
    assert not list(out.glob("*.tmp"))  # rank 0 alone wrote the shared files
    config = json.loads((out / "finetune_config.json").read_text())
    assert config["strategy"] == "deepspeed" and config["mixed_precision"] == "bf16"
    assert_selfrag_model(out)


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> tuple[subprocess.Popen, str]:
    """Start a job in the background, marked (tests/procs.py) so that all of it can be found: torchrun puts each
    worker in a session of its own."""
    env, token = _marked(env)
    with log.open("w") as handle:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, token


def kill_after_checkpoint(job: tuple[subprocess.Popen, str], checkpoint: Path, out: Path, log: Path) -> None:
    """`kill -9` the whole job (launcher and workers, as a scheduler ends a job) as soon as `checkpoint` is complete,
    before the run ends."""
    proc, token = job
    deadline = time.monotonic() + TIMEOUT
    while not (checkpoint / "trainer_state.json").is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_all(proc, token)
            pytest.fail(
                f"no {checkpoint.name} before the run ended (exit {proc.returncode}):\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.02)
    kill_all(proc, token)  # SIGKILL to every process of the job
    assert not members(token), "a process of the killed job is still running"
    assert not (out / "train_summary.json").exists(), "the run had finished before the kill: nothing was tested"


@pytest.fixture(scope="module")
def one_node_run(base_model, train_file, tmp_path_factory):
    """The uninterrupted reference: torchrun + DeepSpeed ZeRO-3, fp32, 12 updates, a checkpoint every 2."""
    out = tmp_path_factory.mktemp("ref") / "out"
    run(
        SCRIPT_CMD,
        env=script_env(base_model, train_file, out, CHECKPOINTING_STEPS="2"),
        timeout=TIMEOUT,
        cwd=out.parent,
    )
    return out


def test_kill_9_then_the_same_command_resumes_to_the_same_weights(base_model, train_file, one_node_run, tmp_path):
    out, log = tmp_path / "out", tmp_path / "killed.log"
    env = script_env(base_model, train_file, out, CHECKPOINTING_STEPS="2")
    kill_after_checkpoint(start(SCRIPT_CMD, env, log, tmp_path), out / "step_4", out, log)
    env["MASTER_PORT"] = str(free_port())  # the killed job's port may linger in TIME_WAIT
    done = run(SCRIPT_CMD, env=env, timeout=TIMEOUT, cwd=tmp_path)
    resumed = [line for line in done.output.splitlines() if "resumed from" in line]
    assert resumed and "/step_" in resumed[0], done.output[-3000:]
    step = int(resumed[0].split("/step_")[1].split(":")[0])
    assert step >= 4
    ref = summary(one_node_run)
    s = summary(out)
    assert s["completed_steps"] == ref["completed_steps"] == 12
    assert s["losses"] == pytest.approx(ref["losses"][step:], rel=1e-4)  # the updates after the checkpoint
    assert_same_weights(one_node_run, out)
    assert_selfrag_model(out)


def test_two_nodes_train_like_one_node_with_two_processes(base_model, train_file, one_node_run, tmp_path):
    """`NUM_NODES=2 NODE_RANK=0|1 NUM_GPUS=1` (torchrun --nnodes 2 --node_rank R --nproc_per_node 1), the output
    folder shared as on a cluster filesystem."""
    out = tmp_path / "out"
    env = script_env(base_model, train_file, out, CHECKPOINTING_STEPS="2", NUM_GPUS="1", NUM_NODES="2")
    jobs = [start(SCRIPT_CMD, {**env, "NODE_RANK": str(r)}, tmp_path / f"node{r}.log", tmp_path) for r in (0, 1)]
    try:
        for proc, _ in jobs:
            proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("two-node run timed out:\n" + (tmp_path / "node0.log").read_text()[-4000:])
    finally:
        for job in jobs:
            kill_all(*job)
    codes = [proc.returncode for proc, _ in jobs]
    assert codes == [0, 0], "\n".join((tmp_path / f"node{r}.log").read_text()[-3000:] for r in (0, 1))
    ref, s = summary(one_node_run), summary(out)
    assert s["world_size"] == 2 and [r["rank"] for r in s["ranks"]] == [0, 1]
    assert s["losses"][0] == pytest.approx(ref["losses"][0], rel=1e-6)  # the same first logged loss
    assert s["losses"] == pytest.approx(ref["losses"], rel=1e-4)
    assert_same_weights(one_node_run, out)


def critic_cmd(model: Path, data: Path, out: Path, port: int) -> list[str]:
    """The README's critic command (torchrun, FSDP), fp32, saving every 2 updates, resumable."""
    return torchrun(
        CRITIC,
        f"--model_name_or_path={model}",
        f"--data_path={data}",
        f"--output_dir={out}",
        "--num_train_epochs=3",
        "--per_device_train_batch_size=1",
        "--gradient_accumulation_steps=2",
        "--save_strategy=steps",
        "--save_steps=2",
        "--resume_from_checkpoint=auto",
        "--learning_rate=1e-3",
        "--lr_scheduler_type=cosine",
        "--logging_steps=1",
        "--use_special_token",
        "--fsdp",
        "full_shard auto_wrap",
        port=port,
    )


def test_critic_kill_9_then_the_same_command_resumes_to_the_same_weights(base_model, tmp_path):
    data = tmp_path / "critic_train.json"
    data.write_text(
        json.dumps([{"instruction": r["instruction"], "input": r["input"], "output": "[Relevant]"} for r in ROWS] * 4)
    )
    env = {**script_env(base_model, data, tmp_path), "SELFRAG_LOG_ALL_RANKS": "0"}
    ref = tmp_path / "ref"
    run(critic_cmd(base_model, data, ref, free_port()), env=env, timeout=TIMEOUT, cwd=tmp_path)
    out, log = tmp_path / "out", tmp_path / "killed.log"
    kill_after_checkpoint(
        start(critic_cmd(base_model, data, out, free_port()), env, log, tmp_path), out / "step_4", out, log
    )
    done = run(critic_cmd(base_model, data, out, free_port()), env=env, timeout=TIMEOUT, cwd=tmp_path)
    assert "resumed from" in done.output
    assert (
        summary(out)["strategy"] == "fsdp" and summary(out)["completed_steps"] == summary(ref)["completed_steps"] == 12
    )
    assert_same_weights(ref, out)
    assert_selfrag_model(out)
