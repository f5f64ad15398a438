"""selfrag/eval/data.py and scripts/prepare_eval_data.py: format checks, conversion rules, the CLI end to end.

Run with `python -m pytest tests/test_eval_data.py -q`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from selfrag.data import clean, load_items
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.data import (
    MAX_LISTED,
    TASK_FORMATS,
    check_items,
    convert_item,
    convert_items,
    detect_dataset,
    file_sha256,
)
from selfrag.eval.short_form import ShortFormConfig, prepare_items

ROOT = Path(__file__).resolve().parent.parent
EVAL_DATA = ROOT / "eval_data"
spec = importlib.util.spec_from_file_location("prepare_eval_data", ROOT / "scripts" / "prepare_eval_data.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

SAMPLES = [  # (file, dataset, items, passages per item)
    ("popqa_longtail_w_gs.jsonl", "popqa", 15, 5),
    ("triviaqa_test_w_gs.jsonl", "triviaqa", 12, 5),
    ("health_claims_processed.jsonl", "pubhealth", 12, 5),
    ("arc_challenge_processed.jsonl", "arc_c", 12, 5),
    ("asqa_eval_gtr_top100.json", "asqa", 6, 8),
    ("factscore_unlabeled_alpaca_13b_retrieval.jsonl", "factscore", 6, 5),
]
CTX = {"id": "7", "title": "Paris", "text": "Paris is the capital of France.", "score": "1.5"}


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def arc_item(key: str = "B", labels: tuple[str, ...] = ("A", "B", "C", "D")) -> dict:
    return {
        "id": "x",
        "question": "Which?",
        "choices": {"text": ["w", "x", "y", "z"][: len(labels)], "label": list(labels)},
        "answerKey": key,
        "ctxs": [CTX],
    }


# ------------------------------------------------------------------------------------------- the shipped samples


@pytest.mark.parametrize(("name", "dataset", "n_items", "n_passages"), SAMPLES)
def test_samples_pass_the_check(name, dataset, n_items, n_passages):
    path = EVAL_DATA / name
    assert detect_dataset(path) == dataset
    report = check_items(load_items(path), dataset)
    assert report.problems == []
    assert report.n_problems == 0 and report.ok
    assert report.n_items == n_items
    assert report.n_with_ctxs == n_items
    assert report.ctxs_min == n_passages and report.ctxs_median == n_passages


@pytest.mark.parametrize(("name", "dataset", "n_items", "n_passages"), SAMPLES)
def test_samples_are_already_converted(name, dataset, n_items, n_passages):
    items = load_items(EVAL_DATA / name)
    converted, report = convert_items(items, dataset)
    assert converted == items
    assert report.ok and report.n_dropped == 0


def test_sample_statistics():
    popqa = check_items(load_items(EVAL_DATA / "popqa_longtail_w_gs.jsonl"), "popqa")
    # Rashomon and Frida Kahlo have one web passage each, Tasmania two (eval_data/README.md).
    assert (popqa.ctxs_max, popqa.n_passages, popqa.n_passages_without_id_or_score) == (7, 79, 4)
    assert popqa.label_counts == {}
    health = check_items(load_items(EVAL_DATA / "health_claims_processed.jsonl"), "pubhealth")
    assert health.label_counts == {"false": 6, "true": 6}
    arc = check_items(load_items(EVAL_DATA / "arc_challenge_processed.jsonl"), "arc_c")
    assert sum(arc.label_counts.values()) == 12 and arc.label_counts["2"] == 1 and arc.label_counts["4"] == 1


# ------------------------------------------------------------------------------------------------- detection, hash


def test_detect_dataset_from_the_original_names():
    expected = {
        "popqa_longtail_w_gs.jsonl": "popqa",
        "triviaqa_test_w_gs.jsonl": "triviaqa",
        "triviaqa_test.jsonl": "triviaqa",
        "health_claims_processed.jsonl": "pubhealth",
        "arc_challenge_processed.jsonl": "arc_c",
        "asqa_eval_gtr_top100.json": "asqa",
        "factscore_unlabeled_alpaca_13b_retrieval.jsonl": "factscore",
    }
    assert {name: detect_dataset(f"/downloads/{name}") for name in expected} == expected
    assert set(TASK_FORMATS) == set(expected.values())
    with pytest.raises(ConfigError, match=r"'my_popqa.jsonl'.*pass --dataset"):
        detect_dataset("my_popqa.jsonl")


def test_file_sha256(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"question": "q"}\n')
    assert file_sha256(path) == hashlib.sha256(b'{"question": "q"}\n').hexdigest()


# ----------------------------------------------------------------------------------------------- conversion rules


def test_top_contexts_to_ctxs_and_numeric_passage_fields_to_strings():
    item = {
        "question": "q",
        "answers": ["a"],
        "top_contexts": [{"id": 7, "title": "t", "text": "x", "score": 1.5}, {"title": "w", "text": "w\n\nweb"}],
    }
    assert convert_item(item, "popqa") == {
        "question": "q",
        "answers": ["a"],
        "ctxs": [{"id": "7", "title": "t", "text": "x", "score": "1.5"}, {"title": "w", "text": "w\n\nweb"}],
    }
    assert "top_contexts" in item and item["top_contexts"][0]["id"] == 7  # the input is not modified


def test_answer_to_answers():
    assert convert_item({"question": "q", "answer": "Paris", "ctxs": [CTX]}, "triviaqa") == {
        "question": "q",
        "answers": ["Paris"],
        "ctxs": [CTX],
    }
    assert convert_item({"question": "q", "answer": ["Paris", "City of Light"], "ctxs": [CTX]}, "triviaqa") == {
        "question": "q",
        "answers": ["Paris", "City of Light"],
        "ctxs": [CTX],
    }
    with pytest.raises(DataFormatError, match="'answer' must be a string or a list"):
        convert_item({"question": "q", "answer": 3, "ctxs": [CTX]}, "triviaqa")


def test_popqa_raw_row():
    raw = {
        "id": 4222362,
        "subj": "George Rankin",
        "prop": "occupation",
        "s_pop": 142,
        "question": "What is George Rankin's occupation?",
        "possible_answers": '["politician", "political leader"]',
        "ctxs": [CTX],
    }
    assert convert_item(raw, "popqa") == {
        "id": 4222362,
        "subj": "George Rankin",
        "prop": "occupation",
        "question": "What is George Rankin's occupation?",
        "ctxs": [CTX],
        "answers": ["politician", "political leader"],
        "pop": 142,
    }
    with pytest.raises(DataFormatError, match="'possible_answers' is not a JSON-encoded list"):
        convert_item({**raw, "possible_answers": "politician"}, "popqa")


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["True"], ["true"]),
        (["FALSE"], ["false"]),
        (["SUPPORTS"], ["true"]),
        (["refutes"], ["false"]),
        (["true"], ["true"]),
    ],
)
def test_pubhealth_answers_lowercase_true_false(answers, expected):
    item = {"question": "claim", "answers": answers, "ctxs": [CTX]}
    assert convert_item(item, "pubhealth") == {"question": "claim", "answers": expected, "ctxs": [CTX]}


@pytest.mark.parametrize(("label", "expected"), [(0, ["false"]), (2, ["true"]), ("2", ["true"]), ("False", ["false"])])
def test_pubhealth_health_fact_row(label, expected):
    raw = {"claim_id": "15", "claim": "Vaccines cause autism.", "label": label, "ctxs": [CTX]}
    assert convert_item(raw, "pubhealth") == {
        "claim_id": "15",
        "question": "Vaccines cause autism.",
        "ctxs": [CTX],
        "answers": expected,
    }


@pytest.mark.parametrize(("label", "name"), [(1, "mixture"), (3, "unproven"), ("mixture", "mixture")])
def test_pubhealth_label_without_true_false_raises(label, name):
    item = {"question": "claim", "label": label, "ctxs": [CTX], "_where": "health.jsonl:4"}
    with pytest.raises(DataFormatError, match=rf"^health.jsonl:4: PubHealth label .*\({name}\).*--drop_invalid"):
        convert_item(item, "pubhealth")


def test_arc_digit_key_kept_ints_become_strings():
    item = {**arc_item(), "choices": {"text": ["w", "x", "y", "z"], "label": [1, 2, 3, 4]}, "answerKey": 2}
    assert convert_item(item, "arc_c") == {
        **arc_item(),
        "choices": {"text": ["w", "x", "y", "z"], "label": ["1", "2", "3", "4"]},
        "answerKey": "2",
    }
    digit = arc_item("3", ("1", "2", "3", "4"))
    assert convert_item(digit, "arc_c") == digit


def test_arc_ai2_nested_row():
    raw = {
        "id": "Mercury_7",
        "question": {
            "stem": "Which?",
            "choices": [{"text": "w", "label": "A"}, {"text": "x", "label": "B"}, {"text": "y", "label": "C"}],
        },
        "answerKey": "C",
        "ctxs": [CTX],
    }
    assert convert_item(raw, "arc_c") == {
        "id": "Mercury_7",
        "question": "Which?",
        "answerKey": "C",
        "ctxs": [CTX],
        "choices": {"text": ["w", "x", "y"], "label": ["A", "B", "C"]},
    }


def test_docs_become_ctxs_for_short_form_and_stay_docs_for_asqa():
    doc = {"id": "1", "title": "t", "text": "x", "score": 1.25}
    assert convert_item({"question": "q", "answers": ["a"], "docs": [doc]}, "popqa") == {
        "question": "q",
        "answers": ["a"],
        "ctxs": [{"id": "1", "title": "t", "text": "x", "score": "1.25"}],
    }
    alce = {"question": "q", "answer": "long answer", "qa_pairs": [{"short_answers": ["a"]}], "docs": [doc]}
    assert convert_item(alce, "asqa") == alce  # ALCE's `answer` and numeric scores pass through
    assert convert_item({"question": "q", "ctxs": [doc]}, "asqa") == {"question": "q", "docs": [doc]}


def test_factscore_item():
    item = {
        "input": "Tell me a bio of Ada Lovelace.",
        "topic": "Ada Lovelace",
        "cat": ["rare"],
        "ctxs": [{**CTX, "score": 2}],
    }
    assert convert_item(item, "factscore") == {**item, "ctxs": [{**CTX, "score": "2"}]}
    assert check_items([convert_item(item, "factscore")], "factscore").ok
    assert check_items([{"input": "x", "ctxs": [CTX]}], "factscore").n_problems == 1  # no topic


# ---------------------------------------------------------------------------------------- problems name file:line


def test_arc_problem_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "arc.jsonl", [arc_item("A"), arc_item("E"), arc_item("C")])
    report = check_items(load_items(path), "arc_c")
    assert report.problems == [f"{path}:2: answerKey 'E' is not among the choice labels ['A', 'B', 'C', 'D']"]
    assert report.n_problems == 1 and not report.ok
    assert report.label_counts == {"A": 1, "C": 1, "E": 1}


def test_arc_label_problems(tmp_path):
    five = {**arc_item("E", ("A", "B", "C", "D", "E")), "choices": {"text": list("vwxyz"), "label": list("ABCDE")}}
    rows = [five, arc_item("C", ("A", "1", "C", "D")), {**arc_item(), "choices": None}, {**arc_item(), "answerKey": 2}]
    path = write_jsonl(tmp_path / "arc.jsonl", rows)
    assert check_items(load_items(path), "arc_c").problems == [
        f"{path}:1: answerKey 'E' is outside A-D; the prompt shows only choices A-D",
        f"{path}:2: choice labels ['A', '1', 'C', 'D'] repeat after mapping 1-4 to A-D",
        f"{path}:3: field 'choices' must be {{'text': [...], 'label': [...]}} for --task arc_c",
        f"{path}:4: field 'answerKey' must be a string; found int 2 (--output_file converts it)",
    ]


def test_pubhealth_problem_names_file_and_line(tmp_path):
    items = [{"question": "c", "answers": [label], "ctxs": [CTX]} for label in ("true", "false", "maybe")]
    path = write_jsonl(tmp_path / "health.jsonl", items)
    report = check_items(load_items(path), "pubhealth")
    assert report.n_problems == 1
    assert report.problems[0].startswith(f'{path}:3: field \'answers\' must be ["true"] or ["false"]')
    assert 'found list ["maybe"]' in report.problems[0]
    with pytest.raises(DataFormatError, match=rf"^{path}:3: PubHealth answer 'maybe' cannot be mapped"):
        convert_item(load_items(path)[2], "pubhealth")


def test_problems_are_collected_and_capped(tmp_path):
    items = [{"question": "q", "answers": ["a"], "ctxs": [CTX]}] + [{"question": "q", "ctxs": [CTX]}] * 25
    path = write_jsonl(tmp_path / "popqa.jsonl", items)
    report = check_items(load_items(path), "popqa")
    assert report.n_problems == 25 and len(report.problems) == MAX_LISTED
    assert report.problems[0] == f"{path}:2: field 'answers' must be a non-empty list of strings; it is missing"
    assert report.problems[-1].startswith(f"{path}:{MAX_LISTED + 1}: ")


def test_variant_fields_are_problems_with_a_hint(tmp_path):
    path = write_jsonl(
        tmp_path / "popqa.jsonl",
        [{"question": "q", "answer": "a", "top_contexts": [{**CTX, "id": 1, "score": 1.5}, {**CTX, "score": 2.0}]}],
    )
    assert check_items(load_items(path), "popqa").problems == [
        f"{path}:1: field 'answers' must be a non-empty list of strings; it is missing (found 'answer'; "
        "--output_file converts it)",
        f"{path}:1: missing field 'ctxs' (found 'top_contexts'; --output_file converts it)",
    ]
    ctxs = [{**CTX, "id": 1, "score": 1.5}, {**CTX, "score": 2.0}]
    path = write_jsonl(tmp_path / "triviaqa.jsonl", [{"question": "q", "answers": ["a"], "ctxs": ctxs}])
    assert check_items(load_items(path), "triviaqa").problems == [
        f"{path}:1: ctxs[0]: non-string 'id' (the original files store strings; --output_file converts it)",
        f"{path}:1: ctxs[0, 1]: non-string 'score' (the original files store strings; --output_file converts it)",
    ]


def test_convert_items_keeps_or_drops_unmappable_items(tmp_path):
    rows = [
        {"claim": "c1", "label": 0, "ctxs": [CTX]},
        {"claim": "c2", "label": 1, "ctxs": [CTX]},
        {"claim": "c3", "label": 2, "ctxs": [CTX]},
    ]
    items = load_items(write_jsonl(tmp_path / "health.jsonl", rows))
    kept, report = convert_items(items, "pubhealth")
    assert len(kept) == 3 and report.n_problems == 1 and report.n_dropped == 0
    assert report.problems[0].startswith(f"{tmp_path / 'health.jsonl'}:2: PubHealth label 1 (mixture)")
    kept, report = convert_items(items, "pubhealth", drop_invalid=True)
    assert [clean(i) for i in kept] == [
        {"question": "c1", "ctxs": [CTX], "answers": ["false"]},
        {"question": "c3", "ctxs": [CTX], "answers": ["true"]},
    ]
    assert report.ok and report.n_items == 2 and report.n_dropped == 1
    assert report.label_counts == {"false": 1, "true": 1}
    assert report.dropped[0].startswith(f"{tmp_path / 'health.jsonl'}:2: ")


# ------------------------------------------------------------------------------------------- the script end to end


def test_script_check_mode(tmp_path):
    report_file = tmp_path / "report.json"
    assert (
        script.main(["--input_file", str(EVAL_DATA / "popqa_longtail_w_gs.jsonl"), "--report_file", str(report_file)])
        == 0
    )
    report = json.loads(report_file.read_text())
    assert report["ok"] and report["n_items"] == 15 and report["dataset"] == "popqa"
    assert report["sha256"] == file_sha256(EVAL_DATA / "popqa_longtail_w_gs.jsonl")
    assert report["output_file"] is None

    bad = write_jsonl(tmp_path / "arc_challenge_processed.jsonl", [arc_item("A"), arc_item("E")])
    assert script.main(["--input_file", str(bad), "--report_file", str(report_file)]) == 1
    report = json.loads(report_file.read_text())
    assert not report["ok"] and report["n_problems"] == 1 and report["problems"][0].startswith(f"{bad}:2: ")


def test_script_needs_dataset_for_unknown_names(tmp_path):
    path = write_jsonl(tmp_path / "mine.jsonl", [{"question": "q", "answers": ["a"], "ctxs": [CTX]}])
    with pytest.raises(ConfigError, match="pass --dataset"):
        script.main(["--input_file", str(path)])
    assert script.run_main(script.main, ["--input_file", str(path)]) == 2
    assert script.main(["--input_file", str(path), "--dataset", "triviaqa"]) == 0


@pytest.mark.parametrize(
    ("dataset", "task", "rows", "expected"),
    [
        (
            "popqa",
            None,
            [
                {
                    "question": "Who?",
                    "possible_answers": '["Ann", "Anne"]',
                    "s_pop": 12,
                    "top_contexts": [{"id": 3, "title": "Ann", "text": "Ann is.", "score": 1.25}],
                }
            ],
            [
                {
                    "question": "Who?",
                    "ctxs": [{"id": "3", "title": "Ann", "text": "Ann is.", "score": "1.25"}],
                    "answers": ["Ann", "Anne"],
                    "pop": 12,
                }
            ],
        ),
        (
            "pubhealth",
            "fever",
            [
                {"claim": "Water is wet.", "label": 2, "ctxs": [CTX]},
                {"question": "Fish fly.", "answers": ["REFUTES"], "ctxs": [CTX]},
            ],
            [
                {"question": "Water is wet.", "ctxs": [CTX], "answers": ["true"]},
                {"question": "Fish fly.", "answers": ["false"], "ctxs": [CTX]},
            ],
        ),
        (
            "arc_c",
            "arc_c",
            [
                {
                    "id": "a1",
                    "question": {"stem": "Which?", "choices": [{"text": "w", "label": 1}, {"text": "x", "label": 2}]},
                    "answerKey": 2,
                    "ctxs": [CTX],
                }
            ],
            [
                {
                    "id": "a1",
                    "question": "Which?",
                    "answerKey": "2",
                    "ctxs": [CTX],
                    "choices": {"text": ["w", "x"], "label": ["1", "2"]},
                }
            ],
        ),
    ],
)
def test_script_convert_mode_feeds_the_runner(tmp_path, dataset, task, rows, expected):
    raw = write_jsonl(tmp_path / "raw.jsonl", rows)
    out = tmp_path / "out" / "converted.jsonl"
    assert script.main(["--input_file", str(raw), "--dataset", dataset, "--output_file", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == expected
    assert script.main(["--input_file", str(out), "--dataset", dataset]) == 0  # the output passes the check
    config = ShortFormConfig(model_name="m", input_file=str(out), output_file=str(tmp_path / "r.json"), task=task)
    items, prompts, evidences, golds = prepare_items(config)
    assert len(items) == len(expected) and [len(e) for e in evidences] == [1] * len(expected)
    assert golds == {"popqa": [["Ann", "Anne"]], "pubhealth": [["true"], ["false"]], "arc_c": [["B"]]}[dataset]


def test_script_convert_writes_a_json_list_for_json_suffix(tmp_path):
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"question": "q", "answer": "a", "ctxs": [CTX]}])
    out = tmp_path / "converted.json"
    assert script.main(["--input_file", str(raw), "--dataset", "triviaqa", "--output_file", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == [{"question": "q", "answers": ["a"], "ctxs": [CTX]}]


def test_script_convert_refuses_to_write_while_problems_remain(tmp_path):
    rows = [{"question": "c1", "answers": ["true"], "ctxs": [CTX]}, {"question": "c2", "label": 3, "ctxs": [CTX]}]
    raw = write_jsonl(tmp_path / "health_claims_processed.jsonl", rows)
    out, report_file = tmp_path / "out.jsonl", tmp_path / "report.json"
    assert script.main(["--input_file", str(raw), "--output_file", str(out)]) == 1
    assert not out.exists()
    assert (
        script.main(
            ["--input_file", str(raw), "--output_file", str(out), "--drop_invalid", "--report_file", str(report_file)]
        )
        == 0
    )
    assert [json.loads(line) for line in out.read_text().splitlines()] == [rows[0]]
    report = json.loads(report_file.read_text())
    assert (report["n_items"], report["n_dropped"], report["output_file"]) == (1, 1, str(out))
    assert report["output_sha256"] == file_sha256(out)
    with pytest.raises(ConfigError, match="is the input file"):
        script.main(["--input_file", str(raw), "--output_file", str(raw)])
