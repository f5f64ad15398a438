"""`selfrag quickstart --export DIR`: the real quickstart model (SmolLM2-135M-Instruct from PyPI + the shipped
adapter) written as a plain HF folder, reloaded, evaluated with run_short_form.py and served, offline.

The model is exported once per module (about 20 s on 2 cores, plus the first fetch of SmolLM2, see
test_quickstart.py); the checks that need no model run without it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfrag.cli import parse_config, run_main
from selfrag.errors import ConfigError
from selfrag.quickstart import facts
from selfrag.quickstart.export import MARKER, _prepare, export
from selfrag.quickstart.run import QuickstartConfig
from selfrag.tokens import ALL_TOKENS

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "### Instruction:\nWhat is the capital of Norway?\n\n### Response:\n[Retrieval]<paragraph>Norway\n"
    "Norway is a country in Europe. Its capital city is Oslo.</paragraph>[Relevant]The capital of Norway is Oslo."
)


def test_export_refuses_a_folder_that_holds_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"--export .*: exists and is not an earlier quickstart export"):
        export(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    earlier = tmp_path / "earlier"  # an earlier export (marked) or an empty folder may be replaced
    earlier.mkdir()
    (earlier / MARKER).write_text("{}")
    assert _prepare(earlier) == tmp_path / "earlier.tmp"
    (tmp_path / "empty").mkdir()
    assert _prepare(tmp_path / "empty") == tmp_path / "empty.tmp"
    # a failed export leaves neither the folder nor its scratch copy
    with pytest.raises(ConfigError, match="no quickstart adapter in"):
        export(tmp_path / "new", adapter_dir=tmp_path / "empty")
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.tmp").exists()


def test_export_flags_that_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match="--export apply to the shipped SmolLM2 model, not to --model_name m"):
        parse_config(QuickstartConfig, ["--model_name", "m", "--export", "out"])
    with pytest.raises(ConfigError, match="--export writes the model and answers nothing"):
        parse_config(QuickstartConfig, ["--export", "out", "--question", "Q?"])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("gguf")
    pytest.importorskip("peft")
    pytest.importorskip("faiss")
    import torch

    from selfrag.quickstart import world

    model, tokenizer = world.load_generator()
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = model(ids).logits
        for param in model.parameters():  # the weights as bfloat16 keeps them, computed in float32
            param.copy_(param.to(torch.bfloat16).to(torch.float32))
        rounded = model(ids).logits
    out = tmp_path_factory.mktemp("export") / "selfrag-quickstart"
    paths = export(out, generator=(model, tokenizer))
    return {"dir": out, "paths": paths, "ids": ids, "full": full, "rounded": rounded}


def test_export_writes_a_plain_bfloat16_hf_folder_with_corpus_and_questions(exported):
    out = exported["dir"]
    assert exported["paths"] == {"model": out, "passages": out / "passages.tsv", "questions": out / "questions.jsonl"}
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not (out.parent / "selfrag-quickstart.tmp").exists()
    config = json.loads((out / "config.json").read_text())
    assert (config["dtype"], config["vocab_size"], config["tie_word_embeddings"]) == ("bfloat16", 49167, True)
    assert (out / "model.safetensors").stat().st_size < 300_000_000  # bfloat16: half of float32's 540 MB

    from selfrag.retrieval.passages import PassageStore

    store = PassageStore.open(out / "passages.tsv")
    assert list(store.iter_rows()) == facts.passages()
    items = [json.loads(line) for line in (out / "questions.jsonl").read_text().splitlines()]
    assert len(items) == 60 and len({i["question"] for i in items}) == 60
    assert [(i["question"], i["answers"]) for i in items[:2]] == [
        ("What is the capital of Norway?", ["Oslo"]),
        ("What is the chemical symbol of gold?", ["Au"]),
    ]
    assert all(len(i["ctxs"]) == 3 for i in items) and items[0]["ctxs"][0]["title"] == "Norway"
    assert "do not pass `--use_chat_template`" in (out / "README.md").read_text()


def test_the_reloaded_export_has_single_id_reflection_tokens_and_the_merged_weights(exported):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported["dir"])
    assert [tokenizer.encode(t, add_special_tokens=False) for t in ALL_TOKENS] == [[49152 + k] for k in range(15)]
    assert tokenizer(PROMPT, return_tensors="pt")["input_ids"].tolist() == exported["ids"].tolist()
    model = AutoModelForCausalLM.from_pretrained(exported["dir"], dtype=torch.float32)
    with torch.no_grad():
        logits = model(exported["ids"]).logits
    # exactly the in-memory merged model with its weights rounded to bfloat16 ...
    assert torch.equal(logits, exported["rounded"])
    # ... and, against the float32 weights, the same greedy token everywhere and next-token probabilities within
    # 0.05 (bfloat16 keeps 8 bits of mantissa; measured: 0.018)
    assert torch.equal(logits.argmax(-1), exported["full"].argmax(-1))
    assert (logits.softmax(-1) - exported["full"].softmax(-1)).abs().max().item() < 0.05


def test_run_short_form_on_the_export_answers_the_norway_question(exported, tmp_path):
    out = exported["dir"]
    spec = importlib.util.spec_from_file_location("run_short_form", ROOT / "retrieval_lm" / "run_short_form.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = tmp_path / "eval.json"
    argv = ["--model_name", str(out), "--backend", "hf", "--input_file", str(out / "questions.jsonl")]
    argv += ["--output_file", str(result), "--mode", "adaptive_retrieval", "--threshold", "0.2", "--ndocs", "3"]
    argv += ["--max_new_tokens", "32", "--use_groundness", "--use_utility", "--limit", "1"]
    assert run_main(script.main, argv) == 0
    output = json.loads(result.read_text())
    assert output["retrieve"] == [True] and "Oslo" in output["preds"][0]
    assert output["metrics"]["match"] == 1.0


def test_serving_the_export_marks_an_answer_the_corpus_does_not_back(exported):
    from selfrag.server import RequestOptions, ServerConfig, build_engine

    out = exported["dir"]
    config = ServerConfig(
        model_name=str(out),
        backend="hf",
        dtype="float32",
        passages=str(out / "passages.tsv"),
        ndocs=3,
        threshold=0.2,
        max_new_tokens=32,
        use_groundness=True,
        use_utility=True,
    )
    engine = build_engine(config)
    defaults = config.defaults()
    norway, hamlet = engine.run(
        [
            RequestOptions(**{**defaults.__dict__, "instruction": "What is the capital of Norway?"}),
            RequestOptions(**{**defaults.__dict__, "instruction": "Who wrote Hamlet?"}),
        ]
    )
    assert "Oslo" in norway.text and norway.selfrag["grounded"] is True
    assert norway.selfrag["citations"] == [{"passage": 0, "id": "15", "relevant": True, "support": "full"}]
    # nothing in the corpus is about Hamlet: every passage is judged irrelevant, the answer is not grounded
    assert hamlet.selfrag["retrieve"] is True and hamlet.selfrag["grounded"] is False
    assert [c["relevant"] for c in hamlet.selfrag["candidates"]] == [False, False, False]
    assert hamlet.selfrag["citations"][0]["relevant"] is False
