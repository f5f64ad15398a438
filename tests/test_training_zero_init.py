"""DeepSpeed ZeRO-3 `zero.Init`: the model is loaded partitioned (no process holds it whole), the reflection tokens
are added and their rows mean-initialised on the partitioned model, and finetune.py trains and saves from there.

Two `torchrun --nproc_per_node 2` subprocesses on CPU (DS_ACCELERATOR=cpu, gloo), ≈ 10-15 s each.
Run: .venv/bin/python -m pytest -q tests/test_training_zero_init.py
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import textwrap
from pathlib import Path

import pytest
import torch
from procs import run, torchrun

from selfrag.prompts import PROMPT_DICT
from selfrag.tokens import ALL_TOKENS

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed not installed")

ROOT = Path(__file__).resolve().parent.parent
FINETUNE = ROOT / "retrieval_lm" / "finetune.py"
TIMEOUT = 300
HIDDEN = 64

ROWS = [
    {
        "instruction": "Who wrote Pride and Prejudice?",
        "input": "",
        "output": "[Retrieval]<paragraph>Pride and Prejudice\nA novel by Jane Austen.</paragraph>[Relevant]Jane Austen "
        "wrote it.[Fully supported][Utility:5]",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"},
    {"instruction": "In what country is Kyoto?", "input": "", "output": "[No Retrieval]Japan.[Utility:5]"},
    {"instruction": "Is water wet?", "input": "", "output": "[No Retrieval]Yes.[Utility:4]"},
]


def build_base_model(path: Path) -> Path:
    """A tiny random Llama whose byte-level BPE tokenizer has NO reflection tokens and no pad token (a base model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfrag.testing import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(vocab_size=300, reflection=False)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return build_base_model(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))  # 8 examples: 2 batches of 2 per rank
    return str(path)


def run_torchrun(script: Path, *args: str, cwd: Path) -> str:
    cmd = torchrun(script, *args)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SELFRAG_LOG_ALL_RANKS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TOKENIZERS_PARALLELISM": "false",
    }
    return run(cmd, env=env, timeout=TIMEOUT, cwd=cwd).output  # fails the test on a non-zero exit


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import deepspeed, torch
    from transformers.integrations import is_deepspeed_zero3_enabled
    from selfrag.training.config import FinetuneConfig
    from selfrag.training.distributed import _fill_ds_config, init_distributed, load_model_partitioned, partition_counts
    from selfrag.training.model import load_tokenizer

    model_dir, out = sys.argv[1], Path(sys.argv[2])
    config = FinetuneConfig(model_name_or_path=model_dir, train_file="unused.jsonl", output_dir=str(out),
                            use_special_tokens=True, strategy="deepspeed", zero_stage=3)
    d = init_distributed("deepspeed")
    tokenizer, added = load_tokenizer(config)
    model = load_model_partitioned(config, tokenizer, added, _fill_ds_config(config, 64, d.world_size))
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    info = {"rank": d.rank, "counts": partition_counts(model), "zero3_after": is_deepspeed_zero3_enabled(),
            "emb": [emb.numel(), emb.ds_numel, list(emb.ds_shape), emb.ds_tensor.numel()],
            "head": [head.numel(), head.ds_numel, list(head.ds_shape)],
            "new_ids": list(added.new_token_ids), "old_len": added.old_len}
    (out / f"rank{d.rank}.json").write_text(json.dumps(info))
    with deepspeed.zero.GatheredParameters([emb, head]):
        if d.rank == 0:
            torch.save({"emb": emb.detach().clone(), "head": head.detach().clone()}, out / "gathered.pt")
    torch.distributed.barrier()
    """
)


def test_zero_init_loads_partitioned_and_mean_initialises_the_new_rows(base_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    script = tmp_path / "load.py"
    script.write_text(LOAD_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    run_torchrun(script, str(base_dir), str(out), cwd=tmp_path)

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    old_len = len(AutoTokenizer.from_pretrained(base_dir))
    full = sum(p.numel() for p in base.parameters()) + 16 * 2 * HIDDEN  # plus 16 rows (15 tokens + <pad>) x 2
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for info in ranks:
        assert info["new_ids"] == list(range(old_len, old_len + 16)) and info["old_len"] == old_len
        counts = info["counts"]
        assert counts["materialized"] == 0  # no parameter exists in full on any rank
        assert counts["full"] == full
        assert counts["partition"] == pytest.approx(full / 2, abs=64)  # each rank holds half (rounded per param)
        emb_numel, emb_ds_numel, emb_shape, emb_partition = info["emb"]
        assert emb_numel == 0 and emb_ds_numel == (old_len + 16) * HIDDEN and emb_shape == [old_len + 16, HIDDEN]
        assert emb_partition == emb_ds_numel // 2
        assert info["head"][0] == 0 and info["head"][2] == [old_len + 16, HIDDEN]
        assert info["zero3_after"] is False  # transformers no longer sees ZeRO-3 after the block
    assert ranks[0]["counts"]["partition"] + ranks[1]["counts"]["partition"] >= full

    gathered = torch.load(out / "gathered.pt", weights_only=True)
    for name, before in (("emb", base.model.embed_tokens.weight), ("head", base.lm_head.weight)):
        weight = gathered[name]
        assert weight.shape == (old_len + 16, HIDDEN)
        assert torch.equal(weight[:old_len], before)  # the checkpoint's weights, loaded into the partitions
        expected = before.mean(dim=0)
        for row in range(old_len, old_len + 16):
            torch.testing.assert_close(weight[row], expected, rtol=0, atol=1e-6)


def test_finetune_zero3_with_zero_init_trains_and_saves_a_plain_hf_model(base_dir, train_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out"
    output = run_torchrun(
        FINETUNE,
        "--model_name_or_path",
        str(base_dir),
        "--train_file",
        train_file,
        "--output_dir",
        str(out),
        "--use_special_tokens",
        "--per_device_train_batch_size=2",
        "--num_train_epochs=6",
        "--learning_rate=2e-2",
        "--lr_scheduler_type=constant",
        "--seed=0",
        "--logging_steps=1",
        "--strategy=deepspeed",
        "--zero_stage=3",
        "--checkpointing_steps=2",
        cwd=tmp_path,
    )
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["zero_init"] is True and summary["world_size"] == 2
    for rank in summary["ranks"]:
        at_load = rank["params_at_load"]
        assert at_load["materialized"] == 0 and 0 < at_load["partition"] < at_load["full"]
    assert "ZeRO-3 zero.Init: rank 0 holds" in output and "ZeRO-3 zero.Init: rank 1 holds" in output
    assert "the 16 new rows set to the mean of the first 300" in output
    losses = summary["losses"]
    assert summary["completed_steps"] == 12 == len(losses) and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    old_len = base.config.vocab_size
    for folder in (out / "step_2", out):  # a step checkpoint and the final model: plain HF folders
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        ids = tokenizer.convert_tokens_to_ids(list(ALL_TOKENS))
        assert ids == list(range(old_len, old_len + 15)) and tokenizer.pad_token == "<pad>"
        assert tokenizer.decode(ids) == "".join(ALL_TOKENS)
        emb = model.get_input_embeddings().weight
        assert emb.shape == (old_len + 16, HIDDEN)
        assert not torch.allclose(emb[:old_len], base.model.embed_tokens.weight)  # trained
        mean = base.model.embed_tokens.weight.mean(dim=0)
        assert not torch.allclose(emb[ids[1]], mean)  # [Retrieval] is a target: its row moved from the mean
    # training taught the model to open an answer with a reflection token, which the tokenizer decodes back
    from selfrag.training.config import FinetuneConfig
    from selfrag.training.model import load_model, load_tokenizer

    init_config = FinetuneConfig(
        model_name_or_path=str(base_dir), train_file=train_file, output_dir=str(tmp_path), use_special_tokens=True
    )
    init_tokenizer, added = load_tokenizer(init_config)
    initial = load_model(init_config, init_tokenizer, added)  # the same start, in one process
    prompt = tokenizer(PROMPT_DICT["prompt_no_input"].format(instruction=ROWS[1]["instruction"]), return_tensors="pt")
    with torch.no_grad():
        before = initial(**prompt).logits[0, -1].softmax(-1)
        after = model(**prompt).logits[0, -1].softmax(-1)
    no_retrieval = tokenizer.convert_tokens_to_ids("[No Retrieval]")
    assert after[no_retrieval] > 10 * before[no_retrieval]
    top3 = after.topk(3).indices.tolist()
    assert no_retrieval in top3 and "[No Retrieval]" in tokenizer.decode(top3)
