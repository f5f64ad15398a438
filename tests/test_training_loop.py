"""Generator training on tiny Llamas built in code: real updates, LoRA with trained token rows, save / reload / resume,
and `retrieval_lm/finetune.py` end to end."""

from __future__ import annotations

import importlib.util
import json
from functools import partial
from pathlib import Path

import pytest
import torch

from selfrag.errors import ConfigError, DataFormatError
from selfrag.tokens import ALL_TOKENS, ReflectionVocab
from selfrag.training.collator import PaddingCollator
from selfrag.training.config import FinetuneConfig
from selfrag.training.encode import encode_example
from selfrag.training.loop import train

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("finetune", ROOT / "retrieval_lm" / "finetune.py")
finetune = importlib.util.module_from_spec(spec)
spec.loader.exec_module(finetune)

ROWS = [
    {
        "instruction": "Who wrote Pride and Prejudice?",
        "input": "",
        "output": "[Retrieval]<paragraph>Pride and Prejudice\nA novel by Jane Austen.</paragraph>[Relevant]Jane Austen "
        "wrote it.[Fully supported][Utility:5]",
    },
    {
        "instruction": "What is the capital of France?",
        "input": "",
        "output": "[No Retrieval]The capital of France is Paris.[Utility:5]",
    },
    {
        "instruction": "Is the following statement correct or not?",
        "input": "Water boils at 100 degrees.",
        "output": "[Retrieval]<paragraph>Water\nWater boils at 100 degrees Celsius.</paragraph>[Relevant]true"
        "[Fully supported][Retrieval]<paragraph>Boiling\nAt sea level.</paragraph>[Irrelevant]Yes.[Utility:4]",
    },
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and far steadier on a shared 2-core machine (no OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory):
    """A tiny Llama whose byte-level BPE tokenizer has NO reflection tokens and NO pad token (a fresh base model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfrag.testing import CORPUS, build_tiny_tokenizer

    fast = build_tiny_tokenizer(
        vocab_size=400, corpus=CORPUS.splitlines() + [r["output"] for r in ROWS], reflection=False
    )
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
    path = tmp_path_factory.mktemp("base")
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", ROWS * 2)


def config(model_dir, train_file, output_dir, **kwargs) -> FinetuneConfig:
    defaults = dict(
        use_special_tokens=True,
        per_device_train_batch_size=2,
        num_train_epochs=1,
        learning_rate=1e-3,
        seed=0,
        max_seq_length=256,
    )
    return FinetuneConfig(
        model_name_or_path=str(model_dir), train_file=train_file, output_dir=str(output_dir), **{**defaults, **kwargs}
    )


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), AutoTokenizer.from_pretrained(path)


def test_two_updates_lower_the_loss_on_a_repeated_batch_and_move_every_weight(tiny_model_dir):
    model, tok = load(tiny_model_dir)
    encode = partial(encode_example, tokenizer=tok, max_seq_length=256)
    batch = PaddingCollator(tok.pad_token_id)([encode(r) for r in ROWS])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = []
    for _ in range(3):  # loss before each of two updates, then after them
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[0] > losses[1] > losses[2] and all(map(torch.isfinite, torch.tensor(losses)))
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # trl's check


def test_train_adds_tokens_learns_and_saves_a_model_hf_loads(base_model_dir, train_file, tmp_path):
    base, base_tok = load(base_model_dir)
    assert base_tok.pad_token is None and "[Retrieval]" not in base_tok.get_vocab()
    result = train(
        config(
            base_model_dir,
            write_jsonl(tmp_path / "rep.jsonl", [ROWS[2]] * 4),
            tmp_path / "out",
            max_train_steps=3,
            lr_scheduler_type="constant",
        )
    )
    assert result.completed_steps == 3 and result.losses[0] > result.losses[1] > result.losses[2]
    assert result.encode_stats.num_kept == 4 and result.tokens_per_second > 0

    model, tok = load(tmp_path / "out")
    vocab = ReflectionVocab.from_tokenizer(tok)
    old = len(base_tok)
    assert [vocab[t] for t in ALL_TOKENS] == list(range(old, old + 15)) and tok.pad_token_id == old + 15
    assert model.config.vocab_size == len(tok) == old + 16 and model.config.pad_token_id == tok.pad_token_id
    text = "[Retrieval]<paragraph>Water</paragraph>[Relevant]true[Fully supported][Utility:5]"
    assert tok.decode(tok.encode(text, add_special_tokens=False), skip_special_tokens=False) == text
    # the new rows started at the mean of the old ones and were trained from there
    mean = base.get_input_embeddings().weight[:old].mean(0)
    trained = model.get_input_embeddings().weight[vocab["[Relevant]"]]
    assert not torch.allclose(trained, mean) and torch.allclose(trained, mean, atol=0.05)
    unused = model.get_input_embeddings().weight[vocab["[Utility:1]"]]  # in no example: only Adam's zero-grad path
    torch.testing.assert_close(unused, mean)
    out = model.generate(
        torch.tensor([tok.encode("### Instruction:\nHi\n\n### Response:\n")]), max_new_tokens=3, do_sample=False
    )
    assert out.shape[1] > 0
    saved = json.loads((tmp_path / "out" / "finetune_config.json").read_text())
    assert saved["use_special_tokens"] is True and saved["original_masking"] is False


@pytest.mark.parametrize("rows_mode", ["trainable_tokens", "modules_to_save", "none"])
def test_lora_trains_the_reflection_token_rows_unless_asked_not_to(base_model_dir, train_file, tmp_path, rows_mode):
    base, base_tok = load(base_model_dir)
    old = len(base_tok)
    result = train(
        config(
            base_model_dir,
            train_file,
            tmp_path / "out",
            use_lora=True,
            lora_rank=4,
            lora_new_token_rows=rows_mode,
            learning_rate=1e-2,
        )
    )
    assert result.completed_steps == 3
    model, tok = load(tmp_path / "out")  # LoRA merged: a plain HF model
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    ids = [ReflectionVocab.from_tokenizer(tok)[t] for t in ("[Retrieval]", "<paragraph>", "[Relevant]")]
    for new, old_weight in (
        (model.get_input_embeddings().weight, base.get_input_embeddings().weight),
        (model.get_output_embeddings().weight, base.get_output_embeddings().weight),
    ):
        mean = old_weight[:old].mean(0)
        moved = [not torch.allclose(new[i], mean) for i in ids]
        assert all(moved) if rows_mode != "none" else not any(moved)
        if rows_mode != "modules_to_save":  # only the token rows are trainable: the old vocabulary stays put
            torch.testing.assert_close(new[:old], old_weight[:old])
    q_new = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_new, base.model.layers[0].self_attn.q_proj.weight)  # LoRA merged in


def test_lora_with_gradient_checkpointing_trains_as_without_it(base_model_dir, train_file, tmp_path):
    """The one-GPU recipe (docs/training.md): recomputing activations changes memory, not the arithmetic (LoRA's
    dropout draws the same masks again in the recomputation)."""
    runs = {}
    for gc in (False, True):
        out = tmp_path / f"gc_{gc}"
        cfg = config(base_model_dir, train_file, out, use_lora=True, lora_rank=4, gradient_checkpointing=gc)
        runs[gc] = (train(cfg).losses, load(out)[0].state_dict())
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5) and len(runs[True][0]) == 3
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, rtol=1e-4, atol=1e-6)


def test_resume_auto_starts_fresh_without_a_checkpoint_and_latest_needs_one(tiny_model_dir, train_file, tmp_path):
    with pytest.raises(ConfigError, match="latest: no step_N / epoch_N checkpoint in"):
        train(config(tiny_model_dir, train_file, tmp_path / "o", resume_from_checkpoint="latest"))
    first = train(
        config(tiny_model_dir, train_file, tmp_path / "o", resume_from_checkpoint="auto", checkpointing_steps="2")
    )
    assert first.completed_steps == 3 and len(first.losses) == 3
    (tmp_path / "o" / "step_9").mkdir()  # a save cut off before trainer_state.json: never resumed from
    again = train(
        config(tiny_model_dir, train_file, tmp_path / "o", resume_from_checkpoint="auto", checkpointing_steps="2")
    )
    assert again.losses == pytest.approx(first.losses[2:])  # resumed from step_2: the one update left


def test_checkpoints_load_in_hf_and_resume_gives_the_same_weights(tiny_model_dir, train_file, tmp_path):
    # 6 examples / batch 2 = 3 updates per epoch, 2 epochs; checkpoints every 2 updates (step_4 is mid-epoch 1)
    full = train(config(tiny_model_dir, train_file, tmp_path / "full", num_train_epochs=2, checkpointing_steps="2"))
    assert full.completed_steps == 6
    assert sorted(p.name for p in (tmp_path / "full").glob("step_*")) == ["step_2", "step_4", "step_6"]
    state = json.loads((tmp_path / "full" / "step_4" / "trainer_state.json").read_text())
    assert state == {"completed_steps": 4, "epoch": 1, "batches_in_epoch": 1}
    step_model, step_tok = load(tmp_path / "full" / "step_4")  # a checkpoint is also an HF model folder
    ReflectionVocab.from_tokenizer(step_tok)

    resumed = train(
        config(
            tiny_model_dir,
            train_file,
            tmp_path / "resumed",
            num_train_epochs=2,
            resume_from_checkpoint=str(tmp_path / "full" / "step_4"),
        )
    )
    assert resumed.completed_steps == 6 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(full.losses[4:], rel=1e-4)
    final, _ = load(tmp_path / "full")
    again, _ = load(tmp_path / "resumed")
    for (name, p), q in zip(final.named_parameters(), again.parameters()):
        torch.testing.assert_close(p, q, msg=name)
    assert not torch.allclose(step_model.lm_head.weight, final.lm_head.weight)

    latest = train(
        config(tiny_model_dir, train_file, tmp_path / "full", num_train_epochs=2, resume_from_checkpoint="latest")
    )
    assert latest.completed_steps == 6 and latest.losses == []  # step_6 is the end already


def test_gradient_accumulation_and_epoch_checkpoints(tiny_model_dir, train_file, tmp_path):
    result = train(
        config(
            tiny_model_dir,
            train_file,
            tmp_path / "out",
            per_device_train_batch_size=1,
            gradient_accumulation_steps=4,
            checkpointing_steps="epoch",
            logging_steps=1,
            warmup_ratio=0.5,
        )
    )
    assert result.completed_steps == 2  # ceil(6 micro-batches / 4)
    state = json.loads((tmp_path / "out" / "epoch_0" / "trainer_state.json").read_text())
    assert state == {"completed_steps": 2, "epoch": 1, "batches_in_epoch": 0}


def test_finetune_script_end_to_end(tiny_model_dir, train_file, tmp_path, caplog):
    out = tmp_path / "out"
    code = finetune.main(
        [
            "--model_name_or_path",
            tiny_model_dir,
            "--use_special_tokens",
            "--train_file",
            train_file,
            "--output_dir",
            str(out),
            "--per_device_train_batch_size",
            "2",
            "--num_train_epochs",
            "1",
            "--logging_steps",
            "1",
            "--learning_rate",
            "1e-3",
            "--seed",
            "1",
            "--original_masking",
            "--preprocessing_num_workers",
            "1",
        ]
    )
    assert code == 0
    model, tok = load(out)
    assert len(tok) == model.config.vocab_size and ReflectionVocab.from_tokenizer(tok)
    assert json.loads((out / "finetune_config.json").read_text())["original_masking"] is True
    assert "step 3/3 | loss" in caplog.text and "tokens/s" in caplog.text


def test_overlong_examples_are_dropped_and_counted(tiny_model_dir, train_file, tmp_path, caplog):
    result = train(config(tiny_model_dir, train_file, tmp_path / "out", max_seq_length=64, max_train_steps=1))
    stats = result.encode_stats
    assert stats.num_too_long > 0 and stats.num_kept == stats.num_examples - stats.num_too_long
    assert "longer than max_seq_length: dropped" in caplog.text
    with pytest.raises(DataFormatError, match="no training example left"):
        train(config(tiny_model_dir, train_file, tmp_path / "out2", max_seq_length=8))


def test_help_lists_the_original_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "model_name_or_path",
        "tokenizer_name",
        "use_special_tokens",
        "train_file",
        "max_seq_length",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_ratio",
        "num_train_epochs",
        "output_dir",
        "use_lora",
        "lora_rank",
        "lora_alpha",
        "lora_dropout",
        "with_tracking",
        "report_to",
        "logging_steps",
        "checkpointing_steps",
        "seed",
        "use_flash_attn",
        "weight_decay",
        "preprocessing_num_workers",
        "low_cpu_mem_usage",
        "gradient_checkpointing",
        "resume_from_checkpoint",
        "original_masking",
        "use_slow_tokenizer",
    ):
        assert f"--{flag}" in text


def test_clear_errors(tiny_model_dir, train_file, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"instruction": "Who?", "input": ""}])
    args = ["--model_name_or_path", tiny_model_dir, "--use_special_tokens", "--output_dir", str(tmp_path / "o")]
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: missing field 'output'"):
        finetune.main([*args, "--train_file", bad])
    assert finetune.run_main(finetune.main, [*args, "--train_file", bad]) == 2
    with pytest.raises(ConfigError, match="json or .jsonl"):
        finetune.main([*args, "--train_file", str(tmp_path / "train.csv")])
    with pytest.raises(ConfigError, match="resume_from_checkpoint"):
        train(config(tiny_model_dir, train_file, tmp_path / "o", resume_from_checkpoint=str(tmp_path)))


def test_flash_attention_without_cuda_warns_once_and_uses_sdpa(tiny_model_dir, train_file, tmp_path, caplog):
    result = train(config(tiny_model_dir, train_file, tmp_path / "o", use_flash_attn=True, max_train_steps=1))
    assert result.completed_steps == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "flash" in r.getMessage()]
    assert warnings == ["--use_flash_attn: no CUDA GPU; using PyTorch's scaled-dot-product attention (sdpa) instead"]
    model, _ = load(tmp_path / "o")
    assert model.config._attn_implementation in ("sdpa", "eager")  # the saved folder loads as usual


def test_gradient_checkpointing_and_no_special_tokens_adds_only_pad(base_model_dir, train_file, tmp_path):
    result = train(
        config(
            base_model_dir,
            train_file,
            tmp_path / "out",
            use_special_tokens=False,
            gradient_checkpointing=True,
            max_train_steps=1,
        )
    )
    assert result.completed_steps == 1
    model, tok = load(tmp_path / "out")
    assert tok.pad_token == "<pad>" and "[Retrieval]" not in tok.get_vocab() and model.config.vocab_size == len(tok)


def test_lora_trainable_tokens_on_tied_embeddings_train_only_those_rows():
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfrag.training.model import apply_lora

    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=40,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    before = base.get_input_embeddings().weight.detach().clone()
    cfg = FinetuneConfig(model_name_or_path="m", train_file="t.jsonl", output_dir="o", use_lora=True, lora_rank=2)
    model = apply_lora(base, cfg, token_ids=[37, 38, 39])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[1, 37, 5, 38, 39, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    merged = model.merge_and_unload()
    emb = merged.get_input_embeddings().weight
    assert not torch.allclose(emb[37:], before[37:]) and torch.equal(emb[:37], before[:37])
    assert torch.equal(merged.get_output_embeddings().weight, emb)  # still tied


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")), reason="a tensorboard is installed"
)
@pytest.mark.filterwarnings("ignore:`log_with=tensorboard`")
def test_a_missing_tracker_is_a_config_error(tiny_model_dir, train_file, tmp_path):
    with pytest.raises(ConfigError, match="tensorboard"):
        train(config(tiny_model_dir, train_file, tmp_path / "o", with_tracking=True, report_to="tensorboard"))
