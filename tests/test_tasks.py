"""The task registry (selfrag/tasks.py): every entry agrees with the model-interface strings, the eval-data checks and
the modules that read it; and adding a task is one entry plus its test (the yes/no task below).

Run with `python -m pytest tests/test_tasks.py -q`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from golden_runs import WORDS, pseudo_backend

from selfrag.backends.base import GenParams
from selfrag.data import load_items
from selfrag.decoding.short_form import clean_prediction, rerank
from selfrag.errors import ConfigError
from selfrag.eval.data import TASK_FORMATS, check_items, detect_dataset
from selfrag.eval.long_form import LongFormConfig
from selfrag.eval.short_form import ShortFormConfig, run_short_form
from selfrag.prompts import ARC_LETTERS, CLOSED_TASKS, TASK_INST, build_instruction, format_evidence, format_prompt
from selfrag.tasks import (
    SCORER_SCRIPTS,
    TASKS,
    Task,
    closed_flags,
    get_task,
    input_formats,
    is_closed,
    long_form_flags,
    register,
    short_form_instruction,
    task_for_flag,
)
from selfrag.tokens import ReflectionVocab

ROOT = Path(__file__).resolve().parent.parent
EVAL_DATA = ROOT / "eval_data"


# ------------------------------------------------------------------------------------------------- the entries


def test_the_seven_tasks_and_their_flags():
    flags = {task.name: task.task_flag for task in TASKS.values()}
    assert flags == {
        "popqa": None,
        "triviaqa": None,
        "pubhealth": "fever",
        "arc_c": "arc_c",
        "factscore": "factscore",
        "asqa": "asqa",
        "eli5": "eli5",
    }
    assert {name: task.form for name, task in TASKS.items()} == {
        "popqa": "short",
        "triviaqa": "short",
        "pubhealth": "short",
        "arc_c": "short",
        "factscore": "long",
        "asqa": "long",
        "eli5": "long",
    }
    for task in TASKS.values():
        assert get_task(task.name) is task
        if task.task_flag is not None:
            assert task_for_flag(task.task_flag) is task
    assert task_for_flag(None) is None  # no --task: PopQA / TriviaQA, the question alone
    assert task_for_flag("wow") is None  # a TASK_INST key of no evaluation task
    with pytest.raises(ConfigError, match="unknown task 'tqa'"):
        get_task("tqa")


@pytest.mark.parametrize("name", list(TASKS))
def test_instruction_is_task_inst_of_its_flag(name):
    task = TASKS[name]
    assert task.instruction == TASK_INST.get(task.task_flag)  # None for PopQA, TriviaQA and FactScore
    if task.instruction is not None:
        assert task.instruction is TASK_INST[task.task_flag]  # referenced, not copied


def test_closed_sets():
    assert closed_flags() == CLOSED_TASKS == frozenset({"fever", "arc_c"})
    assert get_task("pubhealth").choices == ("true", "false")
    assert get_task("arc_c").choices == ARC_LETTERS
    assert [task.name for task in TASKS.values() if task.choices_in_prompt] == ["arc_c"]
    assert {task.task_flag: task.answer_parser for task in TASKS.values() if task.answer_parser} == {
        "fever": "true_false",
        "arc_c": "choice",
    }
    assert is_closed("fever") and is_closed("arc_c") and not is_closed(None) and not is_closed("asqa")


def test_long_form_entries():
    assert long_form_flags() == frozenset({"asqa", "eli5", "factscore"})
    assert {task.name: (task.cite, task.scorer) for task in TASKS.values() if task.form == "long"} == {
        "asqa": (True, "alce"),
        "eli5": (True, "alce"),
        "factscore": (False, "factscore"),
    }
    assert get_task("factscore").query_field == "input"
    assert get_task("asqa").query_field == get_task("eli5").query_field == "question"
    for flag in ("asqa", "eli5", "factscore"):
        config = LongFormConfig(model_name="m", input_file="i", output_file="o", task=flag)
        assert config.settings().cite is task_for_flag(flag).cite
    assert set(SCORER_SCRIPTS.values()) == {"scripts/eval_alce.py", "scripts/eval_factscore.py"}
    assert all((ROOT / script).is_file() for script in SCORER_SCRIPTS.values())


@pytest.mark.parametrize("name", [task.name for task in TASKS.values() if task.sample_file])
def test_each_sample_file_passes_the_check_of_its_task(name):
    task = TASKS[name]
    path = EVAL_DATA / task.sample_file
    assert task.sample_file in task.input_format.file_names
    assert detect_dataset(path) == task.name
    report = check_items(load_items(path), task.name)
    assert report.ok, report.problems
    if task.form == "short":  # the registry builds the prompts the original's branches built
        for item in load_items(path):
            assert short_form_instruction(item, task.task_flag) == build_instruction(item, task.task_flag)


def test_every_eval_data_file_is_a_task_sample():
    samples = {task.sample_file for task in TASKS.values() if task.sample_file}
    shipped = {p.name for p in EVAL_DATA.iterdir() if p.suffix in (".json", ".jsonl")}
    assert shipped == samples
    assert get_task("eli5").sample_file is None and get_task("eli5").input_format is None


def test_what_the_modules_derive_is_what_they_had():
    """The constants the modules derive from the registry equal those they used to spell out."""
    from selfrag.eval import results_table as table
    from selfrag.eval.baseline import LONG_FORM_TASKS

    assert TASK_FORMATS == input_formats()
    assert list(TASK_FORMATS) == ["popqa", "triviaqa", "pubhealth", "arc_c", "factscore", "asqa"]  # no ELI5 file
    assert LONG_FORM_TASKS == frozenset({"asqa", "eli5", "factscore"})
    assert table.COLUMNS == ("PopQA", "TQA", "Pub", "ARC")
    assert table.LONG_COLUMNS == ("Bio", "ASQA em", "ASQA rg", "ASQA mau", "ASQA pre", "ASQA rec")
    assert table.TASK_NAMES == {
        "popqa": "PopQA",
        "tqa": "TQA",
        "triviaqa": "TQA",
        "pub": "Pub",
        "pubhealth": "Pub",
        "arc": "ARC",
        "arc_c": "ARC",
    }
    assert table.LONG_TASK_NAMES == {"asqa": "ASQA", "bio": "Bio", "factscore": "Bio"}
    assert table.LONG_TASK_METRICS == {
        "ASQA": (
            ("ASQA em", "str_em"),
            ("ASQA rg", "rougeLsum"),
            ("ASQA mau", "mauve"),
            ("ASQA pre", "citation_prec"),
            ("ASQA rec", "citation_rec"),
        ),
        "Bio": (("Bio", "factscore"),),
    }
    assert table.LONG_TASK_RUNNERS == {"alce": "ASQA", "factscore": "Bio"}
    assert table.LONG_TASK_SCORERS == {"ASQA": "scripts/eval_alce.py", "Bio": "scripts/eval_factscore.py"}
    assert {c: m for c, m in table.PAPER_MODES.items() if m != "adaptive_retrieval"} == {"ASQA": "always_retrieve"}
    assert [(p.pattern, c) for p, c in table.INPUT_FILE_COLUMNS] == [
        ("popqa", "PopQA"),
        ("triviaqa|(?<![a-z])tqa(?![a-z])", "TQA"),
        ("health", "Pub"),
        ("(?<![a-z])arc(?![a-z])", "ARC"),
    ]
    assert table.FLAG_COLUMNS == {"fever": "Pub", "arc_c": "ARC"}


def test_entries_are_checked():
    with pytest.raises(ConfigError, match="form must be"):
        Task("x", "X", "x", "medium")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="names its scorer"):
        Task("x", "X", "x", "long")
    with pytest.raises(ConfigError, match="for long-form tasks"):
        Task("x", "X", "x", "short", cite=True)
    with pytest.raises(ConfigError, match="answer_parser"):
        Task("x", "X", "x", "short", answer_parser="regex")
    with pytest.raises(ConfigError, match="input_format is named 'popqa'"):
        Task("x", "X", "x", "short", input_format=get_task("popqa").input_format)


def test_register_refuses_a_taken_name_or_flag():
    with pytest.raises(ConfigError, match="'asqa' is registered already"):
        register(Task("asqa", "ASQA again", "asqa2", "long", scorer="alce"))
    with pytest.raises(ConfigError, match="--task fever is taken by the task 'pubhealth'"):
        register(Task("health2", "PubHealth again", "fever", "short"))
    assert "asqa2" not in {t.task_flag for t in TASKS.values()} and "health2" not in TASKS


# ------------------------------------------------------------------------- adding a task: one entry + this test

YES_NO_INSTRUCTION = "Answer the following question with yes or no."
YES_NO = Task(
    name="yes_no",
    title="Yes/no questions (a toy task)",
    task_flag="yes_no",
    form="short",
    instruction=YES_NO_INSTRUCTION,
    choices=("yes", "no"),
)
# Questions on which the pseudo-model gives two passages the same answer, and that answer's summed score beats the
# best single passage's (found by trying question numbers; the pseudo-model depends only on the prompt).
QUESTIONS = [f"Is claim number {k} about the river city true?" for k in (264, 1313, 1867)]
PASSAGES = [
    {"id": str(i), "title": f"Note {i}", "text": f"Note {i} says: " + " ".join(WORDS[i : i + 5]) + "."}
    for i in range(6)
]


@pytest.fixture
def yes_no_task():
    task = register(YES_NO)
    try:
        yield task
    finally:
        del TASKS[task.name]


def test_a_registered_short_form_task_runs(yes_no_task, tmp_path):
    assert task_for_flag("yes_no") is yes_no_task and is_closed("yes_no")
    input_file = tmp_path / "yes_no.jsonl"
    items = [{"question": q, "answers": ["yes"], "ctxs": PASSAGES} for q in QUESTIONS]
    input_file.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    config = ShortFormConfig(
        model_name="pseudo",
        input_file=str(input_file),
        output_file=str(tmp_path / "out.json"),
        task="yes_no",
        mode="always_retrieve",
        ndocs=len(PASSAGES),
    )
    assert config.settings().closed and config.metric == "match"
    output = run_short_form(config, backend=pseudo_backend())

    # The prompts carry the new task's instruction, in the short form's `## Input:` layout.
    prompts = [format_prompt(YES_NO_INSTRUCTION + "\n\n## Input:\n\n" + q) for q in QUESTIONS]
    assert output["prompts"] == prompts

    # The closed-set rule applies: each pred is the answer whose candidates' scores sum highest, as `rerank` with
    # `closed=True` picks it; on these questions that differs from the single best candidate's answer.
    backend = pseudo_backend()
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    settings = config.settings()
    params = GenParams(max_tokens=settings.max_new_tokens, watch_token_ids=vocab.all_ids)
    open_preds = []
    for prompt, pred in zip(prompts, output["preds"]):
        generations = backend.generate([prompt + format_evidence(ctx) for ctx in PASSAGES], params)
        closed_answer, candidates, _ = rerank(generations, PASSAGES, vocab, settings)
        open_answer, _, _ = rerank(generations, PASSAGES, vocab, dataclasses.replace(settings, closed=False))
        answers = [c.answer for c in candidates]
        assert answers.count(closed_answer) >= 2  # its score is a sum
        assert pred == clean_prediction(closed_answer, settings.compat)
        open_preds.append(clean_prediction(open_answer, settings.compat))
    assert output["preds"] != open_preds
    assert output["metric"] == "match" and len(output["metric_results"]) == len(QUESTIONS)
