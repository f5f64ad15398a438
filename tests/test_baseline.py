"""run_baseline_lm.py end to end on the tiny model (HF backend): prompts per task and mode, resume, bad input."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest
from backends import FailingBackend

from selfrag.errors import ConfigError
from selfrag.eval.baseline import (
    BaselineConfig,
    final_answer,
    format_paragraph,
    postprocess_answers_closed,
    postprocess_output,
    run_baseline,
)

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_baseline_lm", ROOT / "retrieval_lm" / "run_baseline_lm.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

ALPACA = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
FEVER = "Is the following statement correct or not? Say true if it's correct; otherwise say false."
ARC = "Given four answer candidates, A, B, C and D, choose the best answer choice."

ITEMS = [
    {
        "question": "Who wrote Hamlet?",
        "answers": ["Shakespeare"],
        "ctxs": [
            {"id": "1", "title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
            {"id": "2", "title": "Paris", "text": "Paris is the capital of France."},
        ],
    },
    {
        "question": "What is the capital of France?",
        "answer": "Paris",
        "ctxs": [{"id": "2", "title": "Paris", "text": "Paris is the capital of France."}],
    },
    {
        "question": "In what country is Kyoto?",
        "answers": ["Japan"],
        "ctxs": [{"id": "3", "title": "Kyoto", "text": "Kyoto is a city in Japan."}],
    },
]


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def base_args(model_dir, input_file, result_fp, *extra):
    return [
        "--model_name",
        model_dir,
        "--input_file",
        input_file,
        "--result_fp",
        result_fp,
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--max_new_tokens",
        "3",
        *extra,
    ]


def test_help_lists_the_original_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--model_name",
        "--input_file",
        "--retrieval_file",
        "--mode",
        "--device",
        "--max_new_tokens",
        "--int8bit",
        "--metric",
        "--top_n",
        "--result_fp",
        "--task",
        "--prompt_name",
        "--batch_size",
        "--dtype",
        "--world_size",
        "--choices",
        "--instruction",
        "--download_dir",
        "--api_key",
        "--backend",
        "--base_url",
        "--compat",
        "--output_file",
    ):
        assert flag in text


def expected_first_prompt(file: str, task: str | None, mode: str) -> str:
    """The exact prompt of the first item, written out from the original's templates (utils.py, §3.5 / §9)."""
    item = read_jsonl(ROOT / "eval_data" / file)[0]
    instruction = item["question"]
    if task == "fever":
        instruction = f"{FEVER}\n\n### Input:\n{instruction}"
    if task == "arc_c":
        texts = dict(zip(item["choices"]["label"], item["choices"]["text"]))
        instruction = (
            f"{ARC}\n\n### Input:\n{instruction}\nA: {texts['A']}\nB: {texts['B']}\nC: {texts['C']}"
            f"\nD: {texts.get('D', '')}"
        )
    if mode == "vanilla":
        return f"### Instruction:\n{instruction}\n\n### Response:\n"
    c0, c1 = item["ctxs"][:2]
    paragraph = f"[1] {c0['title']}\n{c0['text']}\n[2] {c1['title']}\n{c1['text']}"
    return f"{ALPACA}\n\n### Paragraph:\n{paragraph}\n\n### Instruction:\n{instruction}\n\n### Response:"


@pytest.mark.parametrize("mode", ["vanilla", "retrieval"])
@pytest.mark.parametrize(
    ("file", "task", "n_items"),
    [
        ("popqa_longtail_w_gs.jsonl", None, 15),
        ("triviaqa_test_w_gs.jsonl", None, 12),
        ("health_claims_processed.jsonl", "fever", 12),
        ("arc_challenge_processed.jsonl", "arc_c", 12),
    ],
)
def test_shipped_eval_samples_end_to_end(tiny_model_dir, tmp_path, file, task, n_items, mode):
    out_file = tmp_path / "out.json"
    extra = ["--task", task] if task else []
    args = base_args(
        tiny_model_dir,
        str(ROOT / "eval_data" / file),
        str(out_file),
        "--mode",
        mode,
        "--top_n",
        "2",
        "--metric",
        "match",
        "--batch_size",
        "8",
        *extra,
    )
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert set(out) >= {
        "preds",
        "prompts",
        "golds",
        "metric_results",
        "metric",
        "metric_mean",
        "metrics",
        "raw_preds",
        "data",
        "config",
        "runner",
    }
    assert out["prompts"][0] == expected_first_prompt(file, task, mode)
    assert len(out["preds"]) == len(out["prompts"]) == len(out["metric_results"]) == len(out["data"]) == n_items
    assert out["metric"] == "match"
    assert out["metric_mean"] == pytest.approx(sum(out["metric_results"]) / n_items)
    assert set(out["metrics"]) == {"match", "accuracy", "exact_match", "f1"}
    assert out["retrieval_frequency"] == (1.0 if mode == "retrieval" else 0.0)
    items = read_jsonl(ROOT / "eval_data" / file)
    if task == "arc_c":  # digit answer keys are mapped to the letters the prompt shows
        assert [g[0] for g in out["golds"]] == [
            "ABCD"[int(i["answerKey"]) - 1] if i["answerKey"].isdigit() else i["answerKey"] for i in items
        ]
    else:
        assert out["golds"] == [i["answers"] for i in items]
    record = out["data"][0]  # the original's per-item record
    assert record["output"] == out["preds"][0] and record["golds"] == out["golds"][0]
    assert record["metric_result"] == out["metric_results"][0]
    if mode == "retrieval":
        assert record["ctxs"] == items[0]["ctxs"][:2] and record["paragraph"] in out["prompts"][0]
    else:
        assert "ctxs" not in record and "paragraph" not in record
    assert out["config"]["temperature"] == 0.0 and out["config"]["top_p"] == 1.0  # greedy by default
    assert not (tmp_path / "out.json.partial.jsonl").exists()
    assert json.loads((tmp_path / "out.json.config.json").read_text())["prompt_name"] == (
        "prompt_no_input" if mode == "vanilla" else "prompt_no_input_retrieval"
    )


ASQA = [
    {
        "question": "Who played Batman?",
        "answer": "Several actors have played Batman, among them ...",
        "qa_pairs": [{"question": "q", "short_answers": ["Adam West"]}],
        "sample_id": "s1",
        "docs": [
            {"title": "Batman (TV series)", "text": "Adam West starred as Batman."},
            {"title": "Batman (1989 film)", "text": "Michael Keaton played Batman."},
        ],
    },
    {
        "question": "When was the Eiffel Tower built?",
        "answer": "It was built from 1887 to 1889.",
        "qa_pairs": [],
        "sample_id": "s2",
        "docs": [{"title": "Eiffel Tower", "text": "Built 1887-1889."}],
    },
]
FACTSCORE = [
    {"input": "Question: Tell me a bio of Marie Curie.", "topic": "Marie Curie", "cat": ["very freq"]},
    {"input": "Question: Tell me a bio of Kyoto.", "topic": "Kyoto", "cat": ["freq"]},
]


@pytest.mark.parametrize(("task", "items", "suffix"), [("asqa", ASQA, ".json"), ("factscore", FACTSCORE, ".jsonl")])
def test_long_form_tasks_run_in_vanilla_mode_without_passages_or_golds(tiny_model_dir, tmp_path, task, items, suffix):
    """The original crashed on ASQA (KeyError 'ctxs', issue #43) and on FactScore (no 'instruction' / 'question')."""
    path = tmp_path / f"in{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(items))
    else:
        write_jsonl(path, items)
    out_file = tmp_path / "out.json"
    assert script.main(base_args(tiny_model_dir, str(path), str(out_file), "--task", task)) == 0
    out = json.loads(out_file.read_text())
    query = items[0].get("question") or items[0]["input"]
    assert out["prompts"][0] == f"### Instruction:\n{query}\n\n### Response:\n"
    assert out["metric"] == "none" and out["metric_mean"] is None and out["metrics"] == {}
    assert out["metric_results"] == [] and out["golds"] == [[], []]
    assert "metric_result" not in out["data"][0] and "golds" not in out["data"][0]
    assert out["data"][0]["output"] == out["preds"][0]
    if task == "asqa":  # ALCE fields pass through for the ALCE evaluator; unused passages are dropped
        assert out["data"][0]["qa_pairs"] == ASQA[0]["qa_pairs"] and "docs" not in out["data"][0]
    else:
        assert out["data"][1]["topic"] == "Kyoto"


def test_asqa_retrieval_reads_alce_docs(tiny_model_dir, tmp_path):
    path = tmp_path / "asqa.json"
    path.write_text(json.dumps(ASQA))
    out_file = tmp_path / "out.json"
    args = base_args(
        tiny_model_dir,
        str(path),
        str(out_file),
        "--task",
        "asqa",
        "--mode",
        "retrieval",
        "--top_n",
        "5",
        "--prompt_name",
        "llama_chat_prompt_retrieval",
    )
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert out["prompts"][0] == (
        "[INST][1] Batman (TV series)\nAdam West starred as Batman.\n[2] Batman (1989 film)\n"
        "Michael Keaton played Batman.\nWho played Batman?[/INST]"
    )
    assert out["data"][0]["docs"] == ASQA[0]["docs"]  # the passages shown, under ALCE's key


def test_retrieval_file_is_matched_by_id_or_position(tiny_model_dir, tmp_path):
    items = [
        {"id": "a", "question": "Who wrote Hamlet?", "answers": ["Shakespeare"]},
        {"id": "b", "question": "What is the capital of France?", "answers": ["Paris"]},
    ]
    passages = [
        {"id": "b", "ctxs": [{"title": "Paris", "text": "Capital of France."}]},
        {"id": "a", "ctxs": [{"title": "Hamlet", "text": "A play."}, {"title": "X", "text": "Y"}]},
    ]
    out_file = tmp_path / "out.json"
    args = base_args(
        tiny_model_dir,
        write_jsonl(tmp_path / "in.jsonl", items),
        str(out_file),
        "--mode",
        "retrieval",
        "--retrieval_file",
        write_jsonl(tmp_path / "ret.jsonl", passages),
        "--prompt_name",
        "prompt_open_instruct_retrieval",
    )
    assert script.main(args) == 0
    prompts = json.loads(out_file.read_text())["prompts"]
    assert prompts == [
        "<user>\nReference:[1] Hamlet\nA play.\nWho wrote Hamlet?\n<assistant>\n",
        "<user>\nReference:[1] Paris\nCapital of France.\nWhat is the capital of France?\n<assistant>\n",
    ]
    # Without ids, by position (the original's rule).
    for item in items:
        del item["id"]
    for record in passages:
        del record["id"]
    args = base_args(
        tiny_model_dir,
        write_jsonl(tmp_path / "in2.jsonl", items),
        str(tmp_path / "o2.json"),
        "--mode",
        "retrieval",
        "--retrieval_file",
        write_jsonl(tmp_path / "ret2.jsonl", passages),
    )
    assert script.main(args) == 0
    assert "[1] Paris\nCapital of France." in json.loads((tmp_path / "o2.json").read_text())["prompts"][0]


def test_instruction_prefix_metric_alias_and_choices(tiny_model_dir, tmp_path):
    out_file = tmp_path / "out.json"
    args = base_args(
        tiny_model_dir,
        write_jsonl(tmp_path / "in.jsonl", ITEMS[:1]),
        str(out_file),
        "--instruction",
        "Answer briefly.",
        "--metric",
        "em",
        "--prompt_name",
        "llama_chat_prompt",
    )
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert out["prompts"] == ["[INST]Answer briefly.\n\n### Input:\nWho wrote Hamlet?[/INST]"]
    assert out["metric"] == "exact_match"


def test_compat_original_drops_arc_choices_and_samples(tiny_model_dir, tmp_path):
    file = ROOT / "eval_data" / "arc_challenge_processed.jsonl"
    out_file = tmp_path / "out.json"
    args = base_args(
        tiny_model_dir, str(file), str(out_file), "--task", "arc_c", "--compat", "original", "--limit", "2"
    )
    assert script.main([*args, "--output_format", "json"]) == 0  # the scores object (JSON Lines: the test below)
    out = json.loads(out_file.read_text())
    item = read_jsonl(file)[0]
    assert out["prompts"][0] == f"### Instruction:\n{ARC}\n\n### Input:\n{item['question']}\n\n### Response:\n"
    assert (out["config"]["temperature"], out["config"]["top_p"]) == (0.8, 0.95)


def test_postprocessing_default_and_original():
    assert postprocess_output(" Paris.\n\nQuestion: next</s>", cut_blank_line=True, compat="none") == "Paris."
    assert postprocess_output(" Paris</s>\n\nmore", cut_blank_line=False, compat="none") == "Paris\n\nmore"
    assert postprocess_output("  two spaces", cut_blank_line=True, compat="original") == " two spaces"
    assert postprocess_answers_closed("SUPPORTS", "fever", None) == "true"
    assert postprocess_answers_closed("REFUTES", "fever", None) == "false"
    assert postprocess_answers_closed("REFUTES", "fever", None, compat="original") == "REFUTES"  # the original's bug
    assert postprocess_answers_closed("True", "fever", None) == "true"
    assert postprocess_answers_closed("True, it is.", "fever", None) == "True, it is."
    assert postprocess_answers_closed("maybe yes, maybe no", None, "yes no") == "no"  # the last choice found wins
    assert format_paragraph([{"text": "untitled"}]) == "[1] \nuntitled"


def test_compat_original_writes_json_lines_as_the_original(tiny_model_dir, tmp_path):
    """The original wrote one record per line (save_file_jsonl) whatever --result_fp was called; --compat original
    does too, and the tools that read results (selfrag eval, the results table) read it back."""
    from selfrag import commands
    from selfrag.eval.results_table import load_results

    file = ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl"
    out_file = tmp_path / "popqa_llama2-7b_ret.json"
    args = base_args(tiny_model_dir, str(file), str(out_file), "--compat", "original", "--limit", "3")
    output = run_baseline(script.parse_config(BaselineConfig, [*args, "--mode", "retrieval", "--top_n", "2"]))
    lines = out_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    items = read_jsonl(file)[:3]
    assert len(records) == 3 and records == output["data"]
    for record, item, pred in zip(records, items, output["preds"]):
        # the input item whole (every passage kept), plus what the original added to it
        assert {k: v for k, v in record.items() if k in item} == item
        assert set(record) - set(item) == {"instruction", "paragraph", "golds", "output", "metric_result"}
        assert record["output"] == pred and record["golds"] == item["answers"]
        assert record["paragraph"] == format_paragraph(item["ctxs"][:2])
    config = json.loads((tmp_path / "popqa_llama2-7b_ret.json.config.json").read_text())
    assert (config["compat"], config["output_format"]) == ("original", "jsonl")

    table = commands.rescore(out_file, ["match"])
    assert table["items"] == 3 and table["match"] == pytest.approx(sum(r["metric_result"] for r in records) / 3)
    entries = load_results(out_file)
    assert [e.value for e in entries] == [pytest.approx(table["match"])]


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [("out.jsonl", [], "jsonl"), ("out.json", [], "json"), ("out.jsonl", ["--output_format", "json"], "json")],
)
def test_output_format_follows_the_result_file_name(tiny_model_dir, tmp_path, name, extra, expected):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out_file = tmp_path / name
    assert script.main(base_args(tiny_model_dir, input_file, str(out_file), "--limit", "2", *extra)) == 0
    text = out_file.read_text(encoding="utf-8")
    if expected == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
        assert [r["question"] for r in records] == [ITEMS[0]["question"], ITEMS[1]["question"]]
        assert all({"output", "golds", "metric_result", "instruction"} <= set(r) for r in records)
    else:
        assert set(json.loads(text)) >= {"preds", "metric_mean", "data", "config"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.jsonl", name, name + ".config.json"])


def test_compat_original_leaves_full_batches_unprocessed():
    """The original overwrote the postprocessed answer with the raw one in full batches (run_baseline_lm.py:175)."""
    config = BaselineConfig(
        model_name="m", input_file="i", result_fp="o", backend="hf", task="fever", batch_size=2, compat="original"
    )
    raws = [" True\n\nmore", " SUPPORTS", " False", " True", " REFUTES"]
    original = ["True", "SUPPORTS", "False", "True", "REFUTES"]
    assert [final_answer(r, i, 5, config) for i, r in enumerate(raws)] == original
    config = BaselineConfig(model_name="m", input_file="i", result_fp="o", backend="hf", task="fever", batch_size=2)
    assert [final_answer(r, i, 5, config) for i, r in enumerate(raws)] == ["true", "true", "false", "true", "false"]


def test_long_form_outputs_are_not_cut_at_blank_lines_by_default():
    config = BaselineConfig(model_name="m", input_file="i", result_fp="o", backend="hf", task="factscore")
    assert final_answer(" Marie Curie was a physicist.\n\nShe won two Nobel Prizes.", 0, 1, config) == (
        "Marie Curie was a physicist.\n\nShe won two Nobel Prizes."
    )


def test_config_resolution():
    def make(**kw):
        return BaselineConfig(input_file="i", result_fp="o", **kw)

    assert make(model_name="gpt-3.5-turbo").backend == "openai"
    chat = make(model_name="gpt-3.5-turbo", mode="retrieval")
    assert (chat.openai_api, chat.prompt_name, chat.temperature) == ("chat", "chat_user_retrieval", 0.0)
    assert make(model_name="gpt-3.5-turbo", compat="original").prompt_name == "prompt_no_input"
    assert make(model_name="gpt-3.5-turbo", compat="original").temperature == 1.0  # the API's default, as the original
    davinci = make(model_name="text-davinci-003", compat="original")
    assert (davinci.openai_api, davinci.prompt_name, davinci.temperature) == ("completions", "prompt_no_input", 0.0)
    assert make(model_name="my-model", base_url="http://127.0.0.1:1/v1").backend == "openai"
    assert make(model_name="m", backend="hf", temperature=0.5).temperature == 0.5


def test_resume_after_interruption_loses_and_repeats_nothing(tiny_model_dir, hf_backend, tmp_path):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)

    def config(out):
        return BaselineConfig(
            model_name=tiny_model_dir,
            input_file=input_file,
            result_fp=str(out),
            backend="hf",
            max_new_tokens=4,
            mode="retrieval",
            batch_size=1,
        )

    reference = run_baseline(config(tmp_path / "ref.json"), backend=hf_backend)
    with pytest.raises(KeyboardInterrupt):
        run_baseline(config(tmp_path / "out.json"), backend=FailingBackend(hf_backend, fail_on_call=2))
    partial = (tmp_path / "out.json.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in partial[1:]] == [0]

    resumed_backend = FailingBackend(hf_backend, fail_on_call=-1)
    resumed = run_baseline(config(tmp_path / "out.json"), backend=resumed_backend)
    assert resumed_backend.calls == 2  # only items 1 and 2 were generated again
    for key in ("preds", "prompts", "raw_preds", "metric_results", "golds", "data"):
        assert resumed[key] == reference[key]
    assert not (tmp_path / "out.json.partial.jsonl").exists()


def test_resume_refuses_other_settings(tiny_model_dir, tmp_path):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    (tmp_path / "out.json.partial.jsonl").write_text(json.dumps({"fingerprint": {"top_n": 3}}) + "\n")
    with pytest.raises(ConfigError, match="other settings"):
        run_baseline(
            BaselineConfig(
                model_name=tiny_model_dir, input_file=input_file, result_fp=str(tmp_path / "out.json"), backend="hf"
            )
        )


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (
            [ITEMS[0], {"question": "q", "answers": ["a"]}],
            ["--mode", "retrieval"],
            r"in\.jsonl:2: missing field 'ctxs' .*--mode retrieval",
        ),
        (
            [{"question": "q", "answers": ["a"], "ctxs": []}],
            ["--mode", "retrieval"],
            r"in\.jsonl:1: the passage list is empty",
        ),
        (
            [{"question": "q", "answers": ["a"], "ctxs": [{"title": "t"}]}],
            ["--mode", "retrieval"],
            r"in\.jsonl:1: ctxs\[0\] must be an object with a string 'text'",
        ),
        ([ITEMS[0], {"answers": ["a"]}], [], r"in\.jsonl:2: missing field 'question'"),
        ([ITEMS[0], {"question": "q"}], [], r"in\.jsonl:2: no gold answers .*--metric none"),
        ([{"question": "q"}], ["--metric", "match"], r"in\.jsonl:1: no gold answers"),
        ([{"question": "q", "answerKey": "A"}], ["--task", "arc_c"], r"in\.jsonl:1: field 'choices'"),
        ([ITEMS[0]], ["--mode", "retrieval", "--prompt_name", "prompt_no_input"], r"has no \{paragraph\}"),
        ([ITEMS[0]], ["--prompt_name", "llama_chat_prompt_retrieval"], r"needs passages"),
        ([ITEMS[0]], ["--prompt_name", "alpaca"], r"unknown --prompt_name 'alpaca'"),
        ([ITEMS[0]], ["--top_n", "0"], r"--top_n must be at least 1"),
    ],
)
def test_bad_input_stops_before_the_model_loads(tmp_path, caplog, lines, extra, message):
    # A model path that does not exist: every error must come before loading it.
    args = base_args(
        str(tmp_path / "no_model"), write_jsonl(tmp_path / "in.jsonl", lines), str(tmp_path / "o.json"), *extra
    )
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, args) == 2
    assert re.search(message, caplog.text), caplog.text
    assert not (tmp_path / "o.json").exists()


def test_retrieval_file_without_the_item_is_reported(tmp_path, caplog):
    items = [{"id": "zz", "question": "q", "answers": ["a"]}]
    args = base_args(
        str(tmp_path / "no_model"),
        write_jsonl(tmp_path / "in.jsonl", items),
        str(tmp_path / "o.json"),
        "--mode",
        "retrieval",
        "--retrieval_file",
        write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "ctxs": []}]),
    )
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, args) == 2
    assert "in.jsonl:1: no item with id 'zz' in --retrieval_file" in caplog.text
