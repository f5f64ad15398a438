"""Bad inputs a user produces, across the scripts: one table, each row a command, the file it is given and the
exact one-line message it must answer with (file and line named), with no traceback and no earlier output touched.

Each row runs the script's `main` in-process under `selfrag.cli.run_main` (what `python script.py` runs), so the
table stays fast; `test_non_utf8_input_from_the_command_line` runs one row as a real process to show what the
user sees on stderr. docs/reliability.md lists these promises per entry point.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from selfrag.cli import run_main

ROOT = Path(__file__).resolve().parent.parent
POPQA = ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"
OLD = b'{"earlier": "results, must survive a failed run"}\n'


def load_script(relative: str):
    spec = importlib.util.spec_from_file_location("script_" + relative.replace("/", "_")[:-3], ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def latin1_jsonl(path: Path, good: list[dict], bad_line: int, bad: str) -> Path:
    """JSON Lines whose line `bad_line` (1-based) holds `bad` written in Latin-1 (é is the byte 0xe9, not UTF-8)."""
    lines = [json.dumps(item, ensure_ascii=False).encode("utf-8") for item in good]
    lines.insert(bad_line - 1, bad.encode("latin-1"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def utf8_message(path: Path, line: int, column: int) -> str:
    return (
        f"DataFormatError: {path}:{line}: not valid UTF-8 (invalid continuation byte, byte 0xe9 at column {column}); "
        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
    )


def folder_message(path: Path, what: str = "--model_name") -> str:
    return (
        f"ConfigError: {what} {path}: no such folder ({path}); pass an existing model folder (one that "
        "save_pretrained wrote) or a hub id such as org/name"
    )


@dataclass
class Case:
    """`argv` and `message` are built from the test's folder by the row's function."""

    script: str
    build: object  # (tmp_path) -> (argv, outputs that exist before the run, expected message[, files never made])


def _baseline_latin1(tmp: Path):
    src = latin1_jsonl(
        tmp / "questions.jsonl",
        [{"question": "Who wrote Hamlet?", "answers": ["Shakespeare"]}] * 2,
        3,
        '{"question": "Qui a écrit Candide ?", "answers": ["Voltaire"]}',
    )
    out = tmp / "baseline.json"
    argv = ["--input_file", src, "--result_fp", out, "--model_name", tmp / "unused", "--backend", "hf"]
    return argv, [out], utf8_message(src, 3, 21)


def _critic_label_latin1(tmp: Path):
    item = {"instruction": "Name a French writer.", "output": "Voltaire."}
    src = latin1_jsonl(tmp / "retrieval.jsonl", [item], 2, '{"instruction": "Nommez un écrivain.", "output": "x"}')
    out = tmp / "labels.jsonl"
    argv = ["--aspect", "retrieval", "--input_file", src, "--output_file", out, "--base_url", "http://127.0.0.1:9/v1"]
    return argv, [out], utf8_message(src, 2, 28)


def _combine_latin1(tmp: Path):
    good = tmp / "relevance.jsonl"
    good.write_text(json.dumps({"aspect": "relevance", "label": "[Relevant]"}) + "\n", encoding="utf-8")
    bad = latin1_jsonl(
        tmp / "utility.jsonl", [{"aspect": "utility", "label": "[Utility:5]"}], 1, '{"instruction": "Résumé"}'
    )
    prefix = tmp / "critic_data"
    argv = ["--input_files", good, bad, "--output_file_name", prefix]
    return argv, [Path(f"{prefix}_train.json"), Path(f"{prefix}_dev.json")], utf8_message(bad, 1, 19)


def _embeddings_latin1(tmp: Path):
    tsv = tmp / "latin1.tsv"
    rows = ["id\ttext\ttitle", "1\tParis is the capital of France.\tParis", "2\tLyon is a city.\tLyon"]
    tsv.write_bytes("\n".join(rows).encode() + b"\n" + "3\tLa Défense is near Paris.\tLa Défense\n".encode("latin-1"))
    out_dir = tmp / "embeddings"
    out_dir.mkdir()
    argv = ["--model_name_or_path", tmp / "unused", "--passages", tsv, "--output_dir", out_dir]
    argv += ["--shard_id", "1", "--num_shards", "2"]
    # shard 0 of an earlier run stays as it was; shard 1 is not started
    return argv, [out_dir / "passages_00"], utf8_message(tsv, 4, 7), [out_dir / "passages_01"]


def _eval_json_latin1(tmp: Path):
    path = tmp / "asqa_run.json"
    head = json.dumps({"data": [{"question": "q", "output": "a"}]}, indent=1).encode()
    path.write_bytes(head[:-1] + b',\n "note": "' + "café".encode("latin-1") + b'"\n}')
    argv = ["--f", path]
    # the whole .json is decoded at once: the line is counted up to the bad byte
    return argv, [Path(str(path) + ".score")], utf8_message(path, head.count(b"\n") + 2, 14)


def _short_form_missing_model(tmp: Path):
    model = tmp / "checkpoints" / "selfrag-7b"
    out = tmp / "popqa.json"
    argv = ["--model_name", model, "--input_file", POPQA, "--output_file", out, "--backend", "hf", "--limit", "2"]
    argv += ["--mode", "always_retrieve"]
    return argv, [out], folder_message(model)


def _baseline_missing_model(tmp: Path):
    model = tmp / "models" / "llama2-7b"
    out = tmp / "baseline.json"
    argv = ["--model_name", model, "--input_file", POPQA, "--result_fp", out, "--backend", "hf", "--limit", "2"]
    return argv, [out], folder_message(model)


def _retrieval_missing_encoder(tmp: Path):
    model = tmp / "contriever-msmarco"
    tsv = tmp / "psgs.tsv"
    tsv.write_text("id\ttext\ttitle\n1\tParis is the capital of France.\tParis\n", encoding="utf-8")
    out_dir = tmp / "embeddings"
    out_dir.mkdir()
    argv = ["--model_name_or_path", model, "--passages", tsv, "--output_dir", out_dir]
    argv += ["--shard_id", "1", "--num_shards", "2"]
    return argv, [out_dir / "passages_00"], folder_message(model, "cannot load the encoder"), [out_dir / "passages_01"]


CASES = {
    "run_baseline_lm-non-utf8": Case("retrieval_lm/run_baseline_lm.py", _baseline_latin1),
    "critic_label-non-utf8": Case("data_creation/critic_label.py", _critic_label_latin1),
    "combine_critic_data-non-utf8": Case("data_creation/combine_critic_data.py", _combine_latin1),
    "generate_passage_embeddings-non-utf8": Case("retrieval_lm/generate_passage_embeddings.py", _embeddings_latin1),
    "eval_alce-non-utf8-json": Case("scripts/eval_alce.py", _eval_json_latin1),
    "run_short_form-missing-model-folder": Case("retrieval_lm/run_short_form.py", _short_form_missing_model),
    "run_baseline_lm-missing-model-folder": Case("retrieval_lm/run_baseline_lm.py", _baseline_missing_model),
    "generate_passage_embeddings-missing-encoder": Case(
        "retrieval_lm/generate_passage_embeddings.py", _retrieval_missing_encoder
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_table(name, tmp_path, caplog):
    case = CASES[name]
    argv, outputs, message, *absent = case.build(tmp_path)
    for path in outputs:
        path.write_bytes(OLD)
    script = load_script(case.script)
    with caplog.at_level(logging.INFO):
        status = run_main(script.main, [str(a) for a in argv])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert status == 2
    assert errors == [message]
    for path in outputs:
        assert path.read_bytes() == OLD, f"{path} was changed by a failed run"
    for path in absent[0] if absent else []:
        assert not path.exists(), f"a failed run left {path}"


def test_selfrag_eval_and_results_table_name_a_non_utf8_result_file(tmp_path, caplog):
    """`selfrag eval` and `selfrag eval --table` read result files through the same reader."""
    from selfrag import commands

    path = tmp_path / "popqa_llama2-7b.json"
    path.write_bytes(b'{"preds": ["Par' + "í".encode("latin-1") + b's"], "golds": [["Paris"]]}\n')
    for extra in ([], ["--table"]):
        caplog.clear()
        assert commands.main(["eval", str(path), *extra]) == 2
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [
            f"DataFormatError: {path}:1: not valid UTF-8 (invalid continuation byte, byte 0xed at column 16); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
        ]


def test_a_non_utf8_config_file_is_a_config_error(tmp_path, caplog):
    config = tmp_path / "popqa.yaml"
    config.write_bytes(b"threshold: 0.2\nmodel_name: caf" + "é".encode("latin-1") + b"\n")
    script = load_script("retrieval_lm/run_short_form.py")
    status = run_main(script.main, ["--config", str(config)])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert status == 2
    assert errors == [
        f"ConfigError: --config {config}:2: not valid UTF-8 (invalid continuation byte, byte 0xe9 at column 16); "
        "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
    ]


def test_non_utf8_input_from_the_command_line(tmp_path):
    """As the user runs it: exit status 2, the one message on stderr, no traceback, the old result kept."""
    from procs import run

    argv, outputs, message = _baseline_latin1(tmp_path)
    outputs[0].write_bytes(OLD)
    done = run([sys.executable, ROOT / "retrieval_lm" / "run_baseline_lm.py", *argv], timeout=300, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert [line.split(" ERROR selfrag: ", 1)[1] for line in done.stderr.splitlines() if " ERROR " in line] == [message]
    assert outputs[0].read_bytes() == OLD


@pytest.mark.parametrize("kind", ["json", "jsonl", "text"])
def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, kind):
    """Result files are replaced whole: a writer that fails half-way (here a value JSON cannot hold) leaves the
    earlier file as it was and no temporary file beside it."""
    from selfrag.data import write_json_atomic, write_jsonl_atomic, write_text_atomic

    path = tmp_path / f"out.{kind}"
    path.write_bytes(OLD)
    writers = {
        "json": lambda: write_json_atomic(path, {"ok": 1, "bad": object()}),
        "jsonl": lambda: write_jsonl_atomic(path, [{"ok": 1}, {"bad": object()}]),
        "text": lambda: write_text_atomic(path, "caf\udce9"),  # a lone surrogate: not encodable as UTF-8
    }
    with pytest.raises((TypeError, UnicodeEncodeError)):
        writers[kind]()
    assert path.read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
