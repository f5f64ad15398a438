"""Every `selfrag` command that writes files ends with one log line naming them; the quickstart's config record
holds the command line as typed and the model it used.

Each command runs in-process on tiny inputs (the tiny Llama of conftest.py, a tiny BERT, a local judge server);
`serve` writes no file, and `retrieve --query` and `eval` without `--output` answer on stdout.

    python -m pytest -q tests/test_command_results.py
"""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest
import yaml

from selfrag.cli import invocation
from selfrag.commands import main
from selfrag.quickstart import run as quickstart

ROOT = Path(__file__).resolve().parent.parent
POPQA = str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl")
ASQA = str(ROOT / "eval_data" / "asqa_eval_gtr_top100.json")
TINY = ["--backend", "hf", "--dtype", "float32", "--limit", "1", "--max_new_tokens", "3"]


def last_line(caplog) -> str:
    """The last INFO-or-above message of the selfrag loggers."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("selfrag") and r.levelno >= logging.INFO][-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny BERT and an 8-passage TSV, embedded once (for index, build-index and retrieve)."""
    pytest.importorskip("faiss")
    from selfrag.retrieval.testing import CORPUS, build_tiny_bert, write_tsv

    root = tmp_path_factory.mktemp("results_retrieval")
    passages = [{"id": str(i + 1), "title": f"T{i}", "text": line} for i, line in enumerate(CORPUS.splitlines())]
    data = root / "questions.jsonl"
    data.write_text(json.dumps({"question": "Who wrote Hamlet?", "answers": ["Shakespeare"]}) + "\n")
    return {
        "model": str(build_tiny_bert(root / "bert")),
        "tsv": str(write_tsv(root / "psgs.tsv", passages)),
        "data": data,
    }


def run_infer(tmp_path, tiny_model_dir, **_):
    out = tmp_path / "popqa.json"
    argv = ["infer", "--model_name", tiny_model_dir, "--input_file", POPQA, "--output_file", str(out), *TINY]
    return argv + ["--ndocs", "1"], [f"wrote {out} (and its config, {out}.config.json)"]


def run_baseline(tmp_path, tiny_model_dir, **_):
    out = tmp_path / "baseline.json"
    argv = ["baseline", "--model_name", tiny_model_dir, "--input_file", POPQA, "--result_fp", str(out), *TINY]
    return argv, [f"wrote {out} (and its config, {out}.config.json)"]


def run_long_form(tmp_path, tiny_model_dir, **_):
    out = tmp_path / "asqa.json"
    argv = ["long-form", "--model_name", tiny_model_dir, "--input_file", ASQA, "--output_file", str(out), *TINY]
    return argv + ["--task", "asqa", "--ndocs", "1", "--max_depth", "2"], [f"to {out}"]


def run_train(tmp_path, tiny_model_dir, **_):
    data = tmp_path / "train.jsonl"
    row = {"instruction": "Say hi.", "input": "", "output": "[No Retrieval]Hi.[Utility:5]"}
    data.write_text(json.dumps(row) + "\n")
    out = tmp_path / "model"
    argv = ["train", "--model_name_or_path", tiny_model_dir, "--train_file", str(data), "--output_dir", str(out)]
    return argv + ["--max_train_steps", "1", "--per_device_train_batch_size", "1"], [str(out)]


def run_combine(tmp_path, **_):
    labelled = tmp_path / "retrieval.jsonl"
    items = [{"aspect": "retrieval", "instruction": q, "label": "[Retrieval]"} for q in ("Who?", "What?", "Why?")]
    labelled.write_text("".join(json.dumps(i) + "\n" for i in items))
    prefix = tmp_path / "critic"
    argv = ["combine", "--input_files", str(labelled), "--output_file_name", str(prefix), "--dev_size", "1"]
    return argv, [f"wrote {prefix}_train.json and {prefix}_dev.json"]


def run_label(tmp_path, judge_url, **_):
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"instruction": "Who wrote Hamlet?", "evidence": "Hamlet\nBy Shakespeare."}) + "\n")
    out = tmp_path / "relevance.jsonl"
    argv = ["label", "--aspect", "relevance", "--input_file", str(items), "--output_file", str(out)]
    argv += ["--base_url", judge_url, "--api_key", "k"]
    return argv, [f"wrote {out}, {out}.rejects.jsonl and {out}.usage.json"]


def run_eval(tmp_path, **_):
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"preds": ["Paris"], "golds": [["Paris"]], "config": {}}))
    table = tmp_path / "table.md"
    return ["eval", str(result), "--output", str(table)], [f"wrote the table to {table}"]


def run_index(tmp_path, corpus, **_):
    emb = tmp_path / "emb"
    argv = ["index", "--model_name_or_path", corpus["model"], "--passages", corpus["tsv"], "--output_dir", str(emb)]
    return argv, [f"written to {emb / 'passages_00'}"]


def embedded(tmp_path, corpus) -> Path:
    emb = tmp_path / "emb"
    args = ["--model_name_or_path", corpus["model"], "--passages", corpus["tsv"], "--output_dir", str(emb)]
    assert main(["index", *args]) == 0
    return emb


def run_build_index(tmp_path, corpus, **_):
    emb = embedded(tmp_path, corpus)
    argv = ["build-index", "--passages_embeddings", f"{emb}/*", "--index_dir", str(tmp_path / "index")]
    return argv, [f"wrote the index (8 vectors, Flat) to {(tmp_path / 'index').resolve()}"]


def run_retrieve(tmp_path, corpus, **_):
    emb = embedded(tmp_path, corpus)
    argv = ["retrieve", "--model_name_or_path", corpus["model"], "--passages", corpus["tsv"]]
    argv += ["--passages_embeddings", f"{emb}/*", "--data", str(corpus["data"]), "--output_dir", str(tmp_path / "r")]
    return argv + ["--n_docs", "2"], [f"wrote the retrieved passages to {tmp_path / 'r' / 'questions.jsonl'}"]


COMMANDS = {
    "infer": run_infer,
    "baseline": run_baseline,
    "long-form": run_long_form,
    "train": run_train,
    "combine": run_combine,
    "label": run_label,
    "eval": run_eval,
    "index": run_index,
    "build-index": run_build_index,
    "retrieve": run_retrieve,
}


@pytest.fixture(scope="module")
def judge_url():
    pytest.importorskip("openai")
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_server import JudgeServer

    with JudgeServer(lambda content: "[Relevant]\nExplanation: it names the author.") as server:
        yield server.base_url


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_ends_with_a_line_naming_its_results(name, request, tmp_path, caplog):
    kwargs = {"tmp_path": tmp_path}
    for fixture in ("tiny_model_dir", "corpus", "judge_url"):
        if fixture in COMMANDS[name].__code__.co_varnames:
            kwargs[fixture] = request.getfixturevalue(fixture)
    argv, expected = COMMANDS[name](**kwargs)
    caplog.clear()
    assert main(argv) == 0
    line = last_line(caplog)
    assert all(text in line for text in expected), line


# ------------------------------------------------------------------------------------------------ quickstart

RECORDS = [{"question": "Q?", "retrieve": False, "p_retrieval": 0.1, "answer": "A.", "candidates": []}]


def test_invocation_names_a_selfrag_module_run_with_python_m(monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name="x")))
    monkeypatch.setattr(sys, "argv", ["/venv/bin/selfrag", "quickstart"])
    assert invocation() == "selfrag"  # a console script, or a module of another package
    for module, typed in [
        ("selfrag.quickstart.__main__", "python -m selfrag.quickstart"),
        ("selfrag.__main__", "python -m selfrag"),
        ("selfrag.quickstart.run", "python -m selfrag.quickstart.run"),
    ]:
        monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(name=module)))
        assert invocation() == typed


@pytest.mark.parametrize(
    ("main_module", "typed"), [(None, ["selfrag"]), ("selfrag.__main__", ["python", "-m", "selfrag"])]
)
def test_quickstart_records_the_command_line_and_the_model_and_says_where_it_wrote(
    main_module, typed, tmp_path, monkeypatch, caplog
):
    from selfrag.pretrained import smollm2_path
    from selfrag.quickstart import world

    out = tmp_path / "qs.json"
    monkeypatch.setattr(quickstart, "answer", lambda config: [{**RECORDS[0], "no_retrieval_output": "A."}])
    spec = types.SimpleNamespace(name=main_module) if main_module else None
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=spec))
    argv = ["quickstart", "--question", "Q?", "--output_file", str(out)]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/selfrag", *argv])
    caplog.clear()
    assert main() == 0
    record = yaml.safe_load(Path(f"{out}.config.yaml").read_text())
    assert record["command"] == [*typed, *argv]
    config = record["config"]
    assert (config["model_name"], config["base_model"]) == ("", str(smollm2_path()))
    assert config["adapter_dir"] == str(world.ADAPTER_DIR)
    assert json.loads(out.read_text())[0]["answer"] == "A."
    assert last_line(caplog) == f"wrote the answers to {out}"


def test_quickstart_with_another_model_records_it_alone(tmp_path):
    from selfrag.cli import parse_config

    config = parse_config(quickstart.QuickstartConfig, ["--model_name", "selfrag/selfrag_llama2_7b"])
    assert (config.model_name, config.base_model, config.adapter_dir) == ("selfrag/selfrag_llama2_7b", "", "")
