"""The evaluation tasks, one `Task` entry each: what the runners, metrics, eval-data checks and results table know
about a task, in one place (in the manner of lm-eval's task registry).

`TASKS` holds the paper's seven evaluation tasks, in the order of its Table 2 (PopQA, TriviaQA, PubHealth,
ARC-Challenge, biographies / FactScore, ASQA) and ELI5 last. The modules that read it:

- `selfrag.eval.short_form`: the prompt (`short_form_instruction`: instruction, ARC's listed choices), closed-set
  score summing (`choices`), gold answers (`input_format.gold`), the default `metric`;
- `selfrag.eval.long_form`: the question field, the instruction, the passages and output layout of the task's
  `scorer` (ALCE or FactScore), citations (`cite`);
- `selfrag.eval.baseline`: long-form tasks, the closed-set tasks' instruction, ARC's choices and golds;
- `selfrag.eval.metrics`: `accuracy`'s parsing of an answer (`answer_parser`);
- `selfrag.eval.formats`: `TASK_FORMATS`, the eval-file forms the eval-data checks know (`input_format`);
- `selfrag.eval.results_table`: the Table 2 columns, file-name tags, scorers and Self-RAG's paper mode.

**Adding a task** is one entry plus its test: `register(Task(...))` (or an entry in `_BUILTIN` below), and a test
in tests/test_tasks.py. A short-form task with an instruction and closed-set `choices` then runs under
`run_short_form.py --task <task_flag>` with that instruction in its prompts and its candidates' scores summed per
answer. Constants derived from the registry at import (`TASK_FORMATS`, `LONG_FORM_TASKS`, the results table's
names) list the built-in entries (`selfrag.prompts.CLOSED_TASKS` is written out, since this module imports prompts;
tests/test_tasks.py checks it equals `closed_flags()`); the runners, metrics and eval-data checks
look tasks up when they run, so they also see a task registered later.

The `TASK_INST` strings stay in `selfrag.prompts` (model-interface strings, byte for byte the original's); an entry
references them. This module sits in the data layer: it imports only `selfrag.prompts` and `selfrag.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from selfrag.errors import ConfigError
from selfrag.prompts import TASK_INST, build_instruction, task_instruction

# The long-form scorers a task's outputs go to, with their scripts: `alce` reads ALCE's format (a JSON list of items
# with `question` and `docs`; the output envelope `{"data", ...}` with `[k]` citations), `factscore` reads JSON Lines
# of `input`, `topic`, `cat` and `output`.
SCORER_SCRIPTS = {"alce": "scripts/eval_alce.py", "factscore": "scripts/eval_factscore.py"}
# How `selfrag.eval.metrics.accuracy` parses an answer: `choice`, the option letter A-D; `true_false`, true / false
# (SUPPORTS / REFUTES). Tasks without one are scored by exact match.
ANSWER_PARSERS = ("choice", "true_false")


@dataclass(frozen=True)
class DatasetFormat:
    """The expected form of one eval file (docs/original_selfrag.md §11).

    Attributes:
        name: the dataset name (`--dataset`).
        file_names: the file names in the original release, for `detect_dataset`.
        query_field: the field holding the question or prompt (`input` for FactScore).
        gold: how the gold answers are stored: `aliases` (`answers`, a non-empty list of strings), `true_false`
            (`answers`, `["true"]` or `["false"]`, lowercase), `answer_key` (`choices` `{text, label}` and
            `answerKey`), `alce` (ALCE's `qa_pairs` / `answer`, passed through unchecked) or `None` (no gold).
        passages: the key of the passage list: `ctxs`, or ALCE's `docs` for ASQA.
        required_strings: other fields that must be non-empty strings.
        run: how the runners use the file.
    """

    name: str
    file_names: tuple[str, ...]
    query_field: str
    gold: str | None
    passages: str
    required_strings: tuple[str, ...] = ()
    run: str = ""


@dataclass(frozen=True)
class Task:
    """One evaluation task.

    Attributes:
        name: the dataset name, as the eval-data checks know it (`scripts/prepare_eval_data.py --dataset`):
            popqa, triviaqa, pubhealth, arc_c, factscore, asqa, eli5.
        title: the task's name in prose.
        task_flag: the value of the runners' `--task` (the original's names): None for PopQA and TriviaQA (no
            task: the question alone), `fever` for PubHealth, else the name.
        form: `short` (run_short_form.py, one answer per question) or `long` (run_long_form_static.py, a beam
            search over segments).
        instruction: the task instruction put before the input: a `TASK_INST` value (model-interface string), or
            None (the question alone; FactScore's `input` is its whole prompt).
        input_format: the form of its eval file, checked by `selfrag.eval.check` (None: no checked form).
        metric: the default metric: for short form a `selfrag.eval.metrics` name (the paper's `match`), for long
            form the scorer's headline metric.
        choices: the closed set of answers (PubHealth true / false, ARC A-D): the short form then sums the scores
            of the candidates that give the same answer. None for open answers.
        choices_in_prompt: the prompt lists the item's `choices` by letter (ARC: `\\nA: ...\\nB: ...`).
        answer_parser: how `accuracy` parses an answer (one of `ANSWER_PARSERS`), None: exact match.
        cite: long-form answers cite their passages (`[k]`): ASQA and ELI5, not the biographies.
        scorer: the long-form scorer reading its outputs (a key of `SCORER_SCRIPTS`), which also fixes the input and
            output files' layout.
        column: its column in the paper's Table 2 (`selfrag.eval.results_table`); for a long-form task the name of
            its group of columns. None: not in the table.
        column_metrics: a long-form task's table cells: (column, key of its scorer's summary `metrics`).
        file_tags: the TASK of result files named `SYSTEM__TASK.json` that fill its column(s).
        input_file_pattern: a regular expression on a run's input file name that tells its column when the run had
            no `--task` (the original eval files' names).
        paper_mode: Self-RAG's retrieval mode for it in the paper (App. B.2).
        sample_file: its sample in `eval_data/`, or None.
    """

    name: str
    title: str
    task_flag: str | None
    form: Literal["short", "long"]
    instruction: str | None = None
    input_format: DatasetFormat | None = None
    metric: str = "match"
    choices: tuple[str, ...] | None = None
    choices_in_prompt: bool = False
    answer_parser: str | None = None
    cite: bool = False
    scorer: str | None = None
    column: str | None = None
    column_metrics: tuple[tuple[str, str], ...] = ()
    file_tags: tuple[str, ...] = ()
    input_file_pattern: str | None = None
    paper_mode: str = "adaptive_retrieval"
    sample_file: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.form not in ("short", "long"):
            problems.append(f"form must be 'short' or 'long', not {self.form!r}")
        if self.input_format is not None and self.input_format.name != self.name:
            problems.append(f"its input_format is named {self.input_format.name!r}")
        if self.choices is not None and not self.choices:
            problems.append("choices, when given, must name at least one answer")
        if self.answer_parser is not None and self.answer_parser not in ANSWER_PARSERS:
            problems.append(f"answer_parser must be one of {ANSWER_PARSERS}, not {self.answer_parser!r}")
        if self.scorer is not None and self.scorer not in SCORER_SCRIPTS:
            problems.append(f"scorer must be one of {sorted(SCORER_SCRIPTS)}, not {self.scorer!r}")
        if self.form == "long" and self.scorer is None:
            problems.append("a long-form task names its scorer")
        if self.form == "short" and (self.cite or self.scorer or self.column_metrics):
            problems.append("cite, scorer and column_metrics are for long-form tasks")
        if problems:
            raise ConfigError(f"task {self.name!r}: " + "; ".join(problems))

    @property
    def closed(self) -> bool:
        """Whether the answers form a closed set (`choices`)."""
        return self.choices is not None

    @property
    def gold(self) -> str | None:
        """How the eval file stores gold answers (`DatasetFormat.gold`), None without an input format."""
        return self.input_format.gold if self.input_format is not None else None

    @property
    def query_field(self) -> str:
        """The field holding the question: the input format's (FactScore: `input`), else `question`."""
        return self.input_format.query_field if self.input_format is not None else "question"

    def short_form_instruction(self, item: Mapping[str, Any], where: str = "") -> str:
        """The short-form `instruction` of an item (`selfrag.prompts.task_instruction`)."""
        return task_instruction(item, self.instruction, self.choices_in_prompt, where)


_BUILTIN = (
    Task(
        name="popqa",
        title="PopQA",
        task_flag=None,
        form="short",
        input_format=DatasetFormat(
            "popqa",
            ("popqa_longtail_w_gs.jsonl",),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        column="PopQA",
        file_tags=("popqa",),
        input_file_pattern=r"popqa",
        sample_file="popqa_longtail_w_gs.jsonl",
    ),
    Task(
        name="triviaqa",
        title="TriviaQA",
        task_flag=None,
        form="short",
        input_format=DatasetFormat(
            "triviaqa",
            ("triviaqa_test_w_gs.jsonl", "triviaqa_test.jsonl"),
            "question",
            "aliases",
            "ctxs",
            run="retrieval_lm/run_short_form.py, no --task",
        ),
        column="TQA",
        file_tags=("tqa", "triviaqa"),
        input_file_pattern=r"triviaqa|(?<![a-z])tqa(?![a-z])",
        sample_file="triviaqa_test_w_gs.jsonl",
    ),
    Task(
        name="pubhealth",
        title="PubHealth",
        task_flag="fever",
        form="short",
        instruction=TASK_INST["fever"],
        input_format=DatasetFormat(
            "pubhealth",
            ("health_claims_processed.jsonl",),
            "question",
            "true_false",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task fever",
        ),
        choices=("true", "false"),
        answer_parser="true_false",
        column="Pub",
        file_tags=("pub", "pubhealth"),
        input_file_pattern=r"health",
        sample_file="health_claims_processed.jsonl",
    ),
    Task(
        name="arc_c",
        title="ARC-Challenge",
        task_flag="arc_c",
        form="short",
        instruction=TASK_INST["arc_c"],
        input_format=DatasetFormat(
            "arc_c",
            ("arc_challenge_processed.jsonl",),
            "question",
            "answer_key",
            "ctxs",
            run="retrieval_lm/run_short_form.py --task arc_c",
        ),
        choices=("A", "B", "C", "D"),
        choices_in_prompt=True,
        answer_parser="choice",
        column="ARC",
        file_tags=("arc", "arc_c"),
        input_file_pattern=r"(?<![a-z])arc(?![a-z])",
        sample_file="arc_challenge_processed.jsonl",
    ),
    Task(
        name="factscore",
        title="Biographies (FactScore)",
        task_flag="factscore",
        form="long",
        input_format=DatasetFormat(
            "factscore",
            ("factscore_unlabeled_alpaca_13b_retrieval.jsonl",),
            "input",
            None,
            "ctxs",
            required_strings=("topic",),
            run="retrieval_lm/run_long_form_static.py --task factscore",
        ),
        metric="factscore",
        cite=False,
        scorer="factscore",
        column="Bio",
        column_metrics=(("Bio", "factscore"),),
        file_tags=("bio", "factscore"),
        sample_file="factscore_unlabeled_alpaca_13b_retrieval.jsonl",
    ),
    Task(
        name="asqa",
        title="ASQA",
        task_flag="asqa",
        form="long",
        instruction=TASK_INST["asqa"],
        input_format=DatasetFormat(
            "asqa",
            ("asqa_eval_gtr_top100.json",),
            "question",
            "alce",
            "docs",
            run="retrieval_lm/run_long_form_static.py --task asqa (a JSON list, ALCE's format)",
        ),
        metric="str_em",
        cite=True,
        scorer="alce",
        column="ASQA",
        column_metrics=(
            ("ASQA em", "str_em"),
            ("ASQA rg", "rougeLsum"),
            ("ASQA mau", "mauve"),
            ("ASQA pre", "citation_prec"),
            ("ASQA rec", "citation_rec"),
        ),
        file_tags=("asqa",),
        paper_mode="always_retrieve",
        sample_file="asqa_eval_gtr_top100.json",
    ),
    Task(
        name="eli5",
        title="ELI5",
        task_flag="eli5",
        form="long",
        instruction=TASK_INST["eli5"],
        metric="rougeLsum",
        cite=True,
        scorer="alce",
    ),
)

TASKS: dict[str, Task] = {task.name: task for task in _BUILTIN}


def register(task: Task) -> Task:
    """Add `task` to `TASKS` and return it. Its name must be new, and so must its `task_flag` (unless None).

    Example (as tests/test_tasks.py does):

        register(Task("yes_no", "Yes/no questions", "yes_no", "short", instruction="Answer yes or no.",
                      choices=("yes", "no")))
    """
    if task.name in TASKS:
        raise ConfigError(f"a task named {task.name!r} is registered already")
    other = task_for_flag(task.task_flag)
    if other is not None:
        raise ConfigError(f"--task {task.task_flag} is taken by the task {other.name!r}")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task named `name`; raises `ConfigError` naming the known ones."""
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; expected one of {sorted(TASKS)}")
    return TASKS[name]


def task_for_flag(task_flag: object) -> Task | None:
    """The task run under `--task task_flag`, or None: no flag (PopQA, TriviaQA: the question alone) or a flag of
    no registered task (e.g. `TASK_INST`'s wow / obqa / trex, which the runners treat as before)."""
    if task_flag is None:
        return None
    return next((task for task in TASKS.values() if task.task_flag == task_flag), None)


def closed_flags() -> frozenset[str]:
    """The `--task` values of closed-set tasks (the original's `CLOSED_TASKS`: fever, arc_c)."""
    return frozenset(t.task_flag for t in TASKS.values() if t.closed and t.task_flag is not None)


def is_closed(task_flag: object) -> bool:
    """Whether `--task task_flag` has a closed set of answers."""
    task = task_for_flag(task_flag)
    return task is not None and task.closed


def is_long_form(task_flag: object) -> bool:
    """Whether `--task task_flag` is a long-form task (ASQA, ELI5, FactScore)."""
    task = task_for_flag(task_flag)
    return task is not None and task.form == "long"


def long_form_flags() -> frozenset[str]:
    """The `--task` values of long-form tasks."""
    return frozenset(t.task_flag for t in TASKS.values() if t.form == "long" and t.task_flag is not None)


def input_formats() -> dict[str, DatasetFormat]:
    """The eval-file forms the eval-data checks know, by dataset name (`selfrag.eval.formats.TASK_FORMATS`)."""
    return {t.name: t.input_format for t in TASKS.values() if t.input_format is not None}


def short_form_instruction(item: Mapping[str, Any], task_flag: str | None, where: str = "") -> str:
    """The short-form `instruction` of an item under `--task task_flag`: the registered task's
    (`Task.short_form_instruction`), else `selfrag.prompts.build_instruction`'s (no task: the question; another
    `TASK_INST` key: its instruction)."""
    task = task_for_flag(task_flag)
    if task is None:
        return build_instruction(item, task_flag, where)
    return task.short_form_instruction(item, where)


def default_metric(task_flag: str | None) -> str:
    """The default short-form metric under `--task task_flag`: a short-form task's `metric`, else `match`."""
    task = task_for_flag(task_flag)
    return task.metric if task is not None and task.form == "short" else "match"
