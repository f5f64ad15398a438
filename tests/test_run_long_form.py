"""run_long_form_static.py end to end: ALCE / FactScore formats, exact prompts, resume, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest
from backends import FailingBackend

from selfrag.backends.scripted import ScriptedBackend, make_generation
from selfrag.errors import ConfigError
from selfrag.eval.long_form import LongFormConfig, run_long_form
from selfrag.prompts import TASK_INST, format_evidence, format_prompt
from selfrag.testing import build_tiny_tokenizer
from selfrag.tokens import ReflectionVocab

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_long_form_static", ROOT / "retrieval_lm" / "run_long_form_static.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

DOCS = [
    {"id": "1", "title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
    {"id": "2", "title": "Kyoto", "text": "Kyoto is a city in Japan."},
]
ASQA = [
    {"sample_id": "s1", "question": "Who wrote Hamlet?", "qa_pairs": [], "answer": "Shakespeare.", "docs": DOCS},
    {"sample_id": "s2", "question": "Where is Kyoto?", "qa_pairs": [], "answer": "Japan.", "docs": DOCS[::-1]},
]
BIO = [
    {"input": "Question: Tell me a bio of Marie Curie.", "topic": "Marie Curie", "cat": ["very freq"], "ctxs": DOCS},
    {"input": "Question: Tell me a bio of Kyoto.", "topic": "Kyoto", "cat": ["rare"], "ctxs": DOCS[:1]},
]


def run_cli(model_dir, input_file, output_file, *extra) -> int:
    return script.main(
        [
            "--model_name",
            model_dir,
            "--input_file",
            str(input_file),
            "--output_file",
            str(output_file),
            "--backend",
            "hf",
            "--dtype",
            "float32",
            "--max_new_tokens",
            "8",
            "--ndocs",
            "2",
            "--use_grounding",
            "--use_utility",
            "--use_seqscore",
            *extra,
        ]
    )


def test_asqa_writes_alce_format_with_a_trace(tiny_model_dir, tmp_path):
    input_file, out = tmp_path / "asqa.json", tmp_path / "asqa_out.json"
    input_file.write_text(json.dumps(ASQA))
    assert (
        run_cli(
            tiny_model_dir,
            input_file,
            out,
            "--task",
            "asqa",
            "--mode",
            "always_retrieve",
            "--max_depth",
            "3",
            "--beam_width",
            "2",
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert set(result) == {"data", "args", "total_cost", "azure_filter_fail"}
    for item, source in zip(result["data"], ASQA):
        assert item["sample_id"] == source["sample_id"] and item["answer"] == source["answer"]  # ALCE fields kept
        assert item["retrieve"] is True
        tree = item["prediction_tree"]
        assert [n["depth"] for n in tree[:3]] == [0, 1, 1] and tree[0]["parent"] is None
        path = [tree[i] for i in item["best_path"]]
        assert item["intermediate"] == [n["pred"] for n in path]
        assert all(d in source["docs"] for d in item["docs"])  # only cited passages, in citation order
        for node in tree[1:]:
            assert set(node["critique"]) == {"relevance", "support", "utility", "seq", "total"}
            assert node["step_score"] == pytest.approx(node["critique"]["total"])


def test_factscore_writes_jsonl(tiny_model_dir, tmp_path):
    input_file, out = tmp_path / "bio.jsonl", tmp_path / "bio_out.jsonl"
    input_file.write_text("".join(json.dumps(x) + "\n" for x in BIO))
    assert run_cli(tiny_model_dir, input_file, out, "--task", "factscore", "--threshold", "0.0") == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["topic"] for x in lines] == ["Marie Curie", "Kyoto"]
    for line in lines:
        assert {"input", "output", "topic", "cat", "intermediate", "prediction_tree", "retrieve"} <= set(line)
        assert "[Relevant]" not in line["output"] and "</s>" not in line["output"]


def test_exact_prompts_of_each_task(tmp_path):
    tok = build_tiny_tokenizer()
    ids = dict(ReflectionVocab.from_tokenizer(tok).ids)
    backend = ScriptedBackend(lambda prompt: make_generation(["[Relevant]", "Done.", "[Utility:5]"], ids), tok)
    asqa_file = tmp_path / "asqa.json"
    asqa_file.write_text(json.dumps(ASQA[:1]))
    config = LongFormConfig(
        model_name="scripted",
        input_file=str(asqa_file),
        output_file=str(tmp_path / "o.json"),
        task="asqa",
        mode="always_retrieve",
        ndocs=2,
    )
    out = run_long_form(config, backend=backend)
    # No "\n\n" between the task instruction and "## Input:" (original run_long_form_static.py:391-395).
    prompt = format_prompt(TASK_INST["asqa"] + "## Input:\n\nWho wrote Hamlet?")
    assert backend.calls == [[prompt + format_evidence(DOCS[0]), prompt + format_evidence(DOCS[1])]]
    assert out[0]["output"] == "Done [1]." and out[0]["docs"] == [DOCS[0]]

    backend.calls.clear()
    bio_file = tmp_path / "bio.jsonl"
    bio_file.write_text(json.dumps(BIO[0]) + "\n")
    config = LongFormConfig(
        model_name="scripted",
        input_file=str(bio_file),
        output_file=str(tmp_path / "o.jsonl"),
        task="factscore",
        mode="no_retrieval",
    )
    out = run_long_form(config, backend=backend)
    assert backend.calls == [[format_prompt(BIO[0]["input"]) + "[No Retrieval]"]]
    assert out[0]["output"] == "Done."


def test_resume_after_interruption(tiny_model_dir, hf_backend, tmp_path):
    input_file = tmp_path / "asqa.json"
    input_file.write_text(json.dumps(ASQA))

    def config(out):
        return LongFormConfig(
            model_name=tiny_model_dir,
            input_file=str(input_file),
            output_file=str(out),
            task="asqa",
            mode="always_retrieve",
            ndocs=2,
            max_depth=3,
            max_new_tokens=6,
            batch_size=1,
        )

    counting = FailingBackend(hf_backend, -1)
    reference = run_long_form(config(tmp_path / "ref.json"), backend=counting)
    total = counting.calls
    with pytest.raises(KeyboardInterrupt):  # the last call belongs to item 1: item 0 is done by then
        run_long_form(config(tmp_path / "out.json"), backend=FailingBackend(hf_backend, total))
    partial = (tmp_path / "out.json.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in partial[1:]] == [0]
    again = FailingBackend(hf_backend, -1)
    assert run_long_form(config(tmp_path / "out.json"), backend=again) == reference
    # Item 0 took one call for depth 1, and one more if a depth-1 node (all are in the width-2 beam) asked again.
    item0_calls = 1 + any(n["wants_retrieval"] for n in reference[0]["prediction_tree"] if n["depth"] == 1)
    assert again.calls == total - item0_calls  # only item 1 was searched again


def test_bad_inputs(tiny_model_dir, tmp_path, caplog):
    input_file = tmp_path / "asqa.json"
    input_file.write_text(json.dumps([ASQA[0], {"question": "q"}]))
    with caplog.at_level(logging.ERROR):
        assert (
            script.run_main(
                script.main,
                [
                    "--model_name",
                    tiny_model_dir,
                    "--input_file",
                    str(input_file),
                    "--output_file",
                    str(tmp_path / "o.json"),
                    "--task",
                    "asqa",
                ],
            )
            == 2
        )
    assert "asqa.json: item 1: missing field 'ctxs'" in caplog.text
    with pytest.raises(ConfigError, match="--max_depth counts the root"):
        LongFormConfig(model_name="m", input_file="i", output_file="o", max_depth=1)


@pytest.mark.parametrize(
    ("file", "task", "n_items"),
    [("asqa_eval_gtr_top100.json", "asqa", 6), ("factscore_unlabeled_alpaca_13b_retrieval.jsonl", "factscore", 6)],
)
def test_shipped_long_form_samples_end_to_end(tiny_model_dir, tmp_path, file, task, n_items):
    out = tmp_path / ("out.json" if task == "asqa" else "out.jsonl")
    assert (
        run_cli(
            tiny_model_dir,
            ROOT / "eval_data" / file,
            out,
            "--task",
            task,
            "--threshold",
            "0.2",
            "--max_depth",
            "3",
            "--max_new_tokens",
            "4",
        )
        == 0
    )
    text = out.read_text()
    items = json.loads(text)["data"] if task == "asqa" else [json.loads(line) for line in text.splitlines()]
    assert len(items) == n_items
    assert all(isinstance(item["output"], str) and isinstance(item["retrieve"], bool) for item in items)


def test_live_retrieval_queries_question_plus_answer_and_caches(tmp_path):
    """With a retriever, items need no passages; each query is the question plus the answer so far."""
    tok = build_tiny_tokenizer()
    ids = dict(ReflectionVocab.from_tokenizer(tok).ids)

    def reply(prompt):  # the first segment asks for more, the second finishes
        if prompt.count("<paragraph>") == 1 and "Done." not in prompt:
            return make_generation(["[Relevant]", "Done.", "[Retrieval]"], ids)
        return make_generation(["[Relevant]", "More.", "[Utility:5]"], ids)

    calls = []

    def search(queries, k):
        calls.append(list(queries))
        return [[{"id": f"{q}-{j}", "title": "T", "text": f"passage {j} for {q}"} for j in range(k)] for q in queries]

    bio_file = tmp_path / "bio.jsonl"
    bio_file.write_text(json.dumps({"input": "Question: Tell me a bio of Kyoto.", "topic": "Kyoto"}) + "\n")
    config = LongFormConfig(
        model_name="scripted",
        input_file=str(bio_file),
        output_file=str(tmp_path / "o.jsonl"),
        task="factscore",
        mode="always_retrieve",
        ndocs=2,
        beam_width=2,
        max_depth=3,
    )
    out = run_long_form(config, backend=ScriptedBackend(reply, tok), search=search)
    q = "Question: Tell me a bio of Kyoto."
    # Depth 1: the question; depth 2: both depth-1 paths wrote "Done.", so one cached query serves both.
    assert calls == [[q], [q + " Done."]]
    assert out[0]["output"] == "Done. More."


@pytest.mark.parametrize(
    ("file", "task"),
    [("asqa_eval_gtr_top100.json", "asqa"), ("factscore_unlabeled_alpaca_13b_retrieval.jsonl", "factscore")],
)
def test_live_retrieval_script_on_the_shipped_samples(tiny_model_dir, tmp_path, file, task):
    """run_long_form.py end to end: passages embedded with a tiny BERT, indexed, and retrieved during the search.
    The corpus is every passage of the two long-form samples; the items' own passages are not used."""
    pytest.importorskip("faiss")
    from selfrag.data import load_items
    from selfrag.retrieval.testing import build_tiny_bert, write_tsv

    def load(name, module):
        spec = importlib.util.spec_from_file_location(module, ROOT / "retrieval_lm" / f"{name}.py")
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[module] = loaded  # dataclasses look their module up there
        spec.loader.exec_module(loaded)
        return loaded

    embed, live = load("generate_passage_embeddings", "gpe_script"), load("run_long_form", "rlf_script")
    passages = {}
    for sample in ("asqa_eval_gtr_top100.json", "factscore_unlabeled_alpaca_13b_retrieval.jsonl"):
        for item in load_items(ROOT / "eval_data" / sample):
            for doc in item.get("docs") or item["ctxs"]:
                passages[doc["id"]] = {"id": doc["id"], "title": doc["title"], "text": doc["text"]}
    corpus = str(write_tsv(tmp_path / "psgs.tsv", list(passages.values())))
    encoder = str(build_tiny_bert(tmp_path / "bert", corpus=" ".join(p["text"] for p in passages.values())))
    assert (
        embed.main(["--model_name_or_path", encoder, "--passages", corpus, "--output_dir", str(tmp_path / "emb")]) == 0
    )
    out = tmp_path / ("out.json" if task == "asqa" else "out.jsonl")
    assert (
        live.main(
            [
                "--model_name",
                tiny_model_dir,
                "--backend",
                "hf",
                "--dtype",
                "float32",
                "--retriever",
                encoder,
                "--passages",
                corpus,
                "--passages_embeddings",
                str(tmp_path / "emb" / "*"),
                "--input_file",
                str(ROOT / "eval_data" / file),
                "--output_file",
                str(out),
                "--task",
                task,
                "--mode",
                "always_retrieve",
                "--ndocs",
                "3",
                "--max_new_tokens",
                "4",
                "--max_depth",
                "3",
            ]
        )
        == 0
    )
    text = out.read_text()
    items = json.loads(text)["data"] if task == "asqa" else [json.loads(line) for line in text.splitlines()]
    assert len(items) == 6
    for item in items:
        level1 = [n for n in item["prediction_tree"] if n["depth"] == 1]
        assert len(level1) == 3 and all(n["ctx"]["id"] in passages for n in level1)
        if task == "asqa":
            assert all(d["id"] in passages for d in item["docs"])
