"""`retrieval_lm/script_finetune_{7b,13b}.sh` and the ZeRO-3 config: the released models' settings, and the 7B script
run for real on CPU (2 processes, DeepSpeed ZeRO-3, bf16) with a tiny model in place of Llama-2."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import pytest
from procs import free_port, group_alive, members, run

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "retrieval_lm"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def dry_run(script: str, **env: str) -> list[str]:
    proc = run(
        ["bash", str(SCRIPTS / script), "--seed", "7"],
        env={**os.environ, "DRY_RUN": "1", **env},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


@pytest.mark.parametrize(
    ("script", "model", "length"), [("7b", "Llama-2-7b-hf", "2048"), ("13b", "Llama-2-13b-hf", "1536")]
)
def test_scripts_carry_the_released_settings(script, model, length):
    cmd = dry_run(f"script_finetune_{script}.sh")
    assert cmd[:3] == ["torchrun", "--nproc_per_node", "4"]
    assert flag(cmd, "--model_name_or_path") == f"meta-llama/{model}" and flag(cmd, "--max_seq_length") == length
    assert flag(cmd, "--per_device_train_batch_size") == "1" and flag(cmd, "--gradient_accumulation_steps") == "32"
    assert flag(cmd, "--learning_rate") == "2e-5" and flag(cmd, "--lr_scheduler_type") == "linear"
    assert flag(cmd, "--warmup_ratio") == "0.03" and flag(cmd, "--num_train_epochs") == "3"
    assert flag(cmd, "--strategy") == "deepspeed" and flag(cmd, "--mixed_precision") == "bf16"
    assert flag(cmd, "--deepspeed_config").endswith("ds_configs/stage3_no_offloading.json")
    for name in ("--use_special_tokens", "--use_slow_tokenizer", "--use_flash_attn", "--with_tracking"):
        assert name in cmd
    assert cmd[-2:] == ["--seed", "7"]  # extra arguments go to finetune.py, last


def test_script_overrides_and_the_accelerate_launch():
    cmd = dry_run("script_finetune_7b.sh", NUM_GPUS="8", STRATEGY="accelerate", USE_FLASH_ATTN="0")
    assert cmd[:2] == ["accelerate", "launch"] and flag(cmd, "--num_processes") == "8"
    assert "--use_deepspeed" in cmd and flag(cmd, "--gradient_accumulation_steps") == "16"
    assert "--use_flash_attn" not in cmd
    proc = run(
        ["bash", str(SCRIPTS / "script_finetune_7b.sh")],
        env={**os.environ, "DRY_RUN": "1", "NUM_GPUS": "3"},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "not a multiple" in proc.stderr


def test_zero3_config_is_the_originals_shape():
    ds = json.loads((SCRIPTS / "ds_configs" / "stage3_no_offloading.json").read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    assert ds["bf16"]["enabled"] == "auto" and ds["train_batch_size"] == "auto"
    assert "optimizer" not in ds and "scheduler" not in ds


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")
def test_7b_script_trains_a_tiny_model_on_two_cpu_processes(tmp_path, monkeypatch):
    """Also issue #19's stale lock: one left in torch's default build folder (an interrupted first build) does not
    make the run wait, and nothing of the run is left afterwards."""
    from selfrag import torch_extensions as te
    from selfrag.testing import build_tiny_model

    xdg = tmp_path / "xdg"
    stale = xdg / "torch_extensions" / te._build_folder_name() / "deepspeed_shm_comm" / "lock"
    stale.parent.mkdir(parents=True)
    stale.touch()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))

    model = build_tiny_model(tmp_path / "model")
    rows = [
        {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"},
        {
            "instruction": "Who wrote Pride and Prejudice?",
            "input": "",
            "output": "[Retrieval]<paragraph>A novel by Jane Austen.</paragraph>[Relevant]Jane Austen.[Utility:5]",
        },
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("TORCH_EXTENSIONS_DIR", "SELFRAG_CACHE")},
        "XDG_CACHE_HOME": str(xdg),
        "MODEL": str(model),
        "TRAIN_FILE": str(train),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "NUM_GPUS": "2",
        "TOTAL_BATCH_SIZE": "4",
        "EPOCHS": "1",
        "USE_FLASH_ATTN": "0",
        "PREPROCESSING_WORKERS": "1",
        "REPORT_TO": "none",
        "OMP_NUM_THREADS": "1",
        "MASTER_PORT": str(port),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        # The script calls `torchrun`: take the one of this interpreter's environment (CI does not activate it).
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }
    cmd = ["bash", str(SCRIPTS / "script_finetune_7b.sh"), "--use_slow_tokenizer", "False"]
    proc = run(cmd, env=env, timeout=240, cwd=tmp_path, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert not proc.left_behind and not group_alive(proc.pgid) and not members(proc.token)
    monkeypatch.setenv(
        "XDG_CACHE_HOME", str(xdg)
    )  # the build went to the project's folder, as this interpreter picks it
    monkeypatch.delenv("SELFRAG_CACHE", raising=False)
    assert (te.project_extensions_dir() / "deepspeed_shm_comm").is_dir() and stale.exists()
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["strategy"] == "deepspeed" and summary["zero_stage"] == 3 and summary["world_size"] == 2
    assert summary["completed_steps"] == 2 and all(math.isfinite(x) for x in summary["losses"])
    assert all(r["micro_batches"] == 4 for r in summary["ranks"])
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "out")
