"""selfrag/eval/factscore.py and scripts/eval_factscore.py: FactScore's input written from our outputs, its
score read back, and the command passed through. FactScore itself (torch<2, openai<0.28, an OpenAI judge and its
Wikipedia db) cannot run here; `test_runs_factscore_as_a_subprocess` uses a stand-in `factscore.factscorer`
module that records its command line and writes an output of FactScore's shape."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

from selfrag.errors import DataFormatError
from selfrag.eval.factscore import (
    FactScoreConfig,
    evaluate_factscore,
    factscore_command,
    factscore_output_path,
    read_factscore_output,
    write_factscore_input,
)

ROOT = Path(__file__).resolve().parent.parent

LONG_FORM = [  # what run_long_form_static.py --task factscore writes (JSON Lines)
    {
        "input": "Question: Tell me a bio of Marie Curie.",
        "output": "Marie Curie was a Polish physicist. She won two Nobel Prizes.",
        "topic": "Marie Curie",
        "cat": ["very freq", "Europe/Middle East"],
        "intermediate": ["[Retrieval]", "Marie Curie was a Polish physicist.[Fully supported]"],
        "retrieve": True,
    },
    {
        "input": "Question: Tell me a bio of Wangari Maathai.",
        "output": "Wangari Maathai founded the Green Belt Movement.",
        "topic": "Wangari Maathai",
        "cat": ["freq", "Latin America/Africa"],
        "intermediate": [],
        "retrieve": False,
    },
]
EXPECTED_INPUT = (
    '{"topic": "Marie Curie", "output": "Marie Curie was a Polish physicist. She won two Nobel Prizes."}\n'
    '{"topic": "Wangari Maathai", "output": "Wangari Maathai founded the Green Belt Movement."}\n'
)
FACTSCORE_OUTPUT = {  # the shape factscore.factscorer writes (score with the length penalty, init_score without)
    "score": 0.75,
    "respond_ratio": 1.0,
    "decisions": [
        [
            {"atom": "Marie Curie was Polish.", "is_supported": True},
            {"atom": "Marie Curie was a physicist.", "is_supported": True},
            {"atom": "She won two Nobel Prizes.", "is_supported": True},
            {"atom": "She won them in 1900.", "is_supported": False},
        ],
        None,
    ],
    "num_facts_per_response": 4.0,
    "init_score": 0.8,
}
GEN_CONFIG = {"model_name": "selfrag/selfrag_llama2_7b", "task": "factscore", "mode": "default", "beam_width": 2}


def write_long_form(tmp_path: Path) -> Path:
    path = tmp_path / "bio_selfrag-7b.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in LONG_FORM), encoding="utf-8")
    (tmp_path / "bio_selfrag-7b.jsonl.config.json").write_text(json.dumps(GEN_CONFIG), encoding="utf-8")
    return path


def test_writes_factscore_input_from_a_long_form_output(tmp_path):
    path = write_long_form(tmp_path)
    config = FactScoreConfig(input_file=str(path))
    assert config.factscore_input_path == str(tmp_path / "bio_selfrag-7b.factscore.jsonl")
    records = write_factscore_input(str(path), config.factscore_input_path)
    assert (tmp_path / "bio_selfrag-7b.factscore.jsonl").read_text(encoding="utf-8") == EXPECTED_INPUT
    assert records == [{"topic": r["topic"], "output": r["output"]} for r in LONG_FORM]
    assert factscore_output_path(config.factscore_input_path) == str(
        tmp_path / "bio_selfrag-7b.factscore_factscore_output.json"
    )


def test_writes_factscore_input_from_a_baseline_output(tmp_path):
    data = [{k: r[k] for k in ("input", "topic", "output")} | {"instruction": r["input"]} for r in LONG_FORM]
    path = tmp_path / "bio_llama2-7b.json"
    path.write_text(
        json.dumps(
            {
                "preds": [r["output"] for r in LONG_FORM],
                "data": data,
                "config": {"model_name": "meta-llama/Llama-2-7b-hf"},
            }
        )
    )
    write_factscore_input(str(path), str(tmp_path / "in.jsonl"))
    assert (tmp_path / "in.jsonl").read_text(encoding="utf-8") == EXPECTED_INPUT


def test_missing_topic_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(LONG_FORM[0]) + "\n" + json.dumps({"output": "x"}) + "\n")
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: field 'topic' is missing; FactScore needs"):
        write_factscore_input(str(path), str(tmp_path / "in.jsonl"))


def test_reads_the_score_back(tmp_path):
    path = write_long_form(tmp_path)
    score_file = tmp_path / "fs_output.json"
    score_file.write_text(json.dumps(FACTSCORE_OUTPUT) + "\n")
    config = FactScoreConfig(
        input_file=str(path), score_file=str(score_file), result_fp=str(tmp_path / "r" / "bio.json")
    )
    summary = evaluate_factscore(config)
    assert json.loads((tmp_path / "r" / "bio.json").read_text()) == summary
    assert summary["runner"] == "factscore" and summary["metric"] == "factscore"
    assert summary["metric_mean"] == 0.75
    assert summary["metrics"] == {
        "factscore": 0.75,
        "respond_ratio": 1.0,
        "factscore_init": 0.8,
        "num_facts_per_response": 4.0,
    }
    assert summary["n_items"] == 2
    assert summary["per_item"] == [
        {"topic": "Marie Curie", "facts": 4, "supported": 3},
        {"topic": "Wangari Maathai", "facts": None, "supported": None},
    ]
    assert summary["config"] == GEN_CONFIG
    assert summary["generator"] == "self-rag"
    assert summary["eval_config"]["model_name"] == "retrieval+ChatGPT"


def test_bad_score_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"respond_ratio": 1.0}))
    with pytest.raises(DataFormatError, match=r"bad.json: field 'score' is missing or not a number"):
        read_factscore_output(str(bad))
    with pytest.raises(DataFormatError, match="FactScore output not found"):
        read_factscore_output(str(tmp_path / "none.json"))


def test_factscore_command_passes_the_flags_through():
    config = FactScoreConfig(
        input_file="x.jsonl",
        factscore_python="/envs/fs/bin/python",
        model_name="retrieval+llama+npm",
        openai_key="key.txt",
        data_dir="d",
        model_dir="m",
        cache_dir="c",
        knowledge_source="ks",
        gamma=5,
        abstain_detection_type="generic",
        n_samples=3,
    )
    assert factscore_command(config, "in.jsonl") == [
        "/envs/fs/bin/python", "-m", "factscore.factscorer", "--input_path", "in.jsonl",
        "--model_name", "retrieval+llama+npm", "--openai_key", "key.txt", "--gamma", "5",
        "--data_dir", "d", "--model_dir", "m", "--cache_dir", "c", "--knowledge_source", "ks",
        "--abstain_detection_type", "generic", "--n_samples", "3", "--verbose", "--print_rate_limit_error",
    ]  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("factscore") is not None, reason="factscore is installed here")
def test_without_factscore_only_the_input_is_written(tmp_path, caplog):
    path = write_long_form(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert evaluate_factscore(FactScoreConfig(input_file=str(path), result_fp=str(tmp_path / "r.json"))) is None
    assert (tmp_path / "bio_selfrag-7b.factscore.jsonl").read_text(encoding="utf-8") == EXPECTED_INPUT
    assert not (tmp_path / "r.json").exists()
    assert "factscore is not importable" in caplog.text
    assert "-m factscore.factscorer --input_path " + str(tmp_path / "bio_selfrag-7b.factscore.jsonl") in caplog.text


STAND_IN = """
import argparse, json, os
parser = argparse.ArgumentParser()
for name in ("--input_path", "--model_name", "--openai_key", "--gamma", "--data_dir", "--model_dir", "--cache_dir"):
    parser.add_argument(name)
parser.add_argument("--verbose", action="store_true")
parser.add_argument("--print_rate_limit_error", action="store_true")
args = parser.parse_args()
topics = [json.loads(line)["topic"] for line in open(args.input_path)]
out = {"score": 0.5, "respond_ratio": 1.0, "init_score": 0.5, "num_facts_per_response": 2.0,
       "decisions": [[{"atom": t, "is_supported": True}, {"atom": t, "is_supported": False}] for t in topics]}
open(args.input_path.replace(".jsonl", "_factscore_output.json"), "w").write(json.dumps(out) + "\\n")
json.dump({"argv": vars(args), "base": os.environ.get("OPENAI_API_BASE")}, open(args.input_path + ".called", "w"))
"""


def test_runs_factscore_as_a_subprocess(tmp_path, monkeypatch):
    package = tmp_path / "fake" / "factscore"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "factscorer.py").write_text(STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    path = write_long_form(tmp_path)
    script = _load_script()
    argv = ["--input_file", str(path), "--run", "always", "--factscore_python", sys.executable]
    argv += ["--openai_key", "k.txt", "--base_url", "http://127.0.0.1:9/v1", "--result_fp", str(tmp_path / "bio.json")]
    assert script.main(argv) == 0
    fs_input = tmp_path / "bio_selfrag-7b.factscore.jsonl"
    called = json.loads(Path(str(fs_input) + ".called").read_text())
    assert called["base"] == "http://127.0.0.1:9/v1"
    assert called["argv"]["input_path"] == str(fs_input)
    assert called["argv"]["model_name"] == "retrieval+ChatGPT" and called["argv"]["openai_key"] == "k.txt"
    summary = json.loads((tmp_path / "bio.json").read_text())
    assert summary["metric_mean"] == 0.5
    assert summary["per_item"] == [
        {"topic": "Marie Curie", "facts": 2, "supported": 1},
        {"topic": "Wangari Maathai", "facts": 2, "supported": 1},
    ]


def _load_script():
    spec = importlib.util.spec_from_file_location("eval_factscore_script", ROOT / "scripts" / "eval_factscore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_help(capsys):
    with pytest.raises(SystemExit):
        _load_script().main(["--help"])
    out = capsys.readouterr().out
    for name in ("--input_file", "--score_file", "--factscore_python", "--model_name", "--openai_key", "--base_url"):
        assert name in out
