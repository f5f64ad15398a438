"""Write one shell script per cell of the paper's Table 2 (scripts/table2/<cell>.sh) and the README table.

    python scripts/table2/make_scripts.py          # rewrite the scripts and README.md from the settings below

The settings are the paper's (anchors.md §2.2; App. B.2) and the original README's commands: Self-RAG with
w_rel / w_sup / w_use 1 / 1 / 0.5, threshold 0.2, segment beam width 2; PopQA / TriviaQA with 10 passages (5
Contriever + 5 web) and 100 new tokens; PubHealth / ARC with 5 passages and 50 tokens; ASQA always retrieving 5 GTR
passages, max_depth 7, 300 tokens a segment; biographies adaptive, 5 passages, 200 tokens a segment. Baselines:
greedy, 100 tokens (OpenQA and ASQA, capped as ALCE's), 50 (PubHealth, ARC), 500 (biographies), top-5 passages with
retrieval. tests/test_table2_scripts.py checks that the committed scripts are what this file writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

TASKS = {  # task -> (column, eval file, short-form --task flag)
    "popqa": ("PopQA", "popqa_longtail_w_gs.jsonl", None),
    "tqa": ("TQA", "triviaqa_test_w_gs.jsonl", None),
    "pub": ("Pub", "health_claims_processed.jsonl", "fever"),
    "arc": ("ARC", "arc_challenge_processed.jsonl", "arc_c"),
    "asqa": ("ASQA (em / rg / mau / pre / rec)", "asqa_eval_gtr_top100.json", "asqa"),
    "bio": ("Bio (FactScore)", "factscore_unlabeled_alpaca_13b_retrieval.jsonl", "factscore"),
}


@dataclass(frozen=True)
class System:
    key: str  # file-name part of the cell
    label: str  # the paper's row
    model_var: str  # environment variable holding the model
    default: str  # its default (the paper's model)
    selfrag: bool = False
    retrieval: bool = False
    chat_prompt: bool = False  # Llama2-chat's [INST] template
    api: bool = False


# The paper's numbers (anchors.md §2.1): PopQA, TQA, Pub, ARC, Bio, then ASQA em / rg / mau / pre / rec.
PAPER = {
    "Self-RAG 7B": ("54.9", "66.4", "72.4", "67.3", "81.2", ("30.0", "35.7", "74.3", "66.9", "67.8")),
    "Self-RAG 13B": ("55.8", "69.3", "74.5", "73.1", "80.2", ("31.7", "37.0", "71.6", "70.3", "71.3")),
    "Llama2-7B": ("14.7", "30.5", "34.2", "21.8", "44.5", ("7.9", "15.3", "19.0", "–", "–")),
    "Ret-Llama2-7B": ("38.2", "42.5", "30.0", "48.0", "78.0", ("15.2", "22.1", "32.0", "2.9", "4.0")),
    "Alpaca-7B": ("23.6", "54.5", "49.8", "45.0", "45.8", ("18.8", "29.4", "61.7", "–", "–")),
    "Ret-Alpaca-7B": ("46.7", "64.1", "40.2", "48.0", "76.6", ("30.9", "33.3", "57.9", "5.5", "7.2")),
    "Llama2-13B": ("14.7", "38.5", "29.4", "29.4", "53.4", ("7.2", "12.4", "16.0", "–", "–")),
    "Ret-Llama2-13B": ("45.7", "47.0", "30.2", "26.0", "77.5", ("16.3", "20.5", "24.7", "2.3", "3.6")),
    "Alpaca-13B": ("24.4", "61.3", "55.5", "54.9", "50.2", ("22.9", "32.0", "70.6", "–", "–")),
    "Ret-Alpaca-13B": ("46.1", "66.9", "51.1", "57.6", "77.7", ("34.8", "36.7", "56.6", "2.0", "3.8")),
    "Llama2-chat-13B": ("20.0", "59.3", "49.4", "38.4", "55.9", ("22.4", "29.6", "28.6", "–", "–")),
    "Ret-Llama2-chat-13B": ("51.8", "59.8", "52.1", "37.9", "79.9", ("32.8", "34.8", "43.8", "19.8", "36.1")),
    "ChatGPT": ("29.3", "74.3", "70.1", "75.3", "71.8", ("35.3", "36.2", "68.8", "–", "–")),
    "Ret-ChatGPT": ("50.8", "65.7", "54.7", "75.3", None, ("40.7", "39.9", "79.7", "65.1", "76.6")),
}
ALPACA_NOTE = "no hub id: the paper's Alpaca is AlpacaFarm's replication (Dubois et al., 2023); set the path"

SYSTEMS = [
    System("selfrag-7b", "Self-RAG 7B", "SELFRAG_7B", "selfrag/selfrag_llama2_7b", selfrag=True),
    System("selfrag-13b", "Self-RAG 13B", "SELFRAG_13B", "selfrag/selfrag_llama2_13b", selfrag=True),
]
for _name, _var, _default in (
    ("Llama2-7B", "LLAMA2_7B", "meta-llama/Llama-2-7b-hf"),
    ("Alpaca-7B", "ALPACA_7B", "models/alpaca-7b"),
    ("Llama2-13B", "LLAMA2_13B", "meta-llama/Llama-2-13b-hf"),
    ("Alpaca-13B", "ALPACA_13B", "models/alpaca-13b"),
    ("Llama2-chat-13B", "LLAMA2_CHAT_13B", "meta-llama/Llama-2-13b-chat-hf"),
    ("ChatGPT", "CHATGPT", "gpt-3.5-turbo"),
):
    for _ret in (False, True):
        SYSTEMS.append(
            System(
                _name.lower() + ("_ret" if _ret else ""),
                ("Ret-" if _ret else "") + _name,
                _var,
                _default,
                retrieval=_ret,
                chat_prompt=_name.startswith("Llama2-chat"),
                api=_name == "ChatGPT",
            )
        )


def paper_number(system: System, task: str) -> str | None:
    """The paper's number for a cell, None where the paper has no such cell."""
    row = PAPER[system.label]
    if task == "asqa":
        return " / ".join(row[5])
    return row[("popqa", "tqa", "pub", "arc", "bio").index(task)]


def cells() -> list[tuple[str, System, str]]:
    """(cell name, system, task) for every cell the paper reports and our runners can run."""
    found = []
    for system in SYSTEMS:
        for task in TASKS:
            if paper_number(system, task) is not None:
                found.append((f"{task}_{system.key}", system, task))
    return found


def _lines(*parts: str) -> str:
    return " \\\n  ".join(parts)


def selfrag_command(cell: str, system: System, task: str) -> str:
    model = f'--model_name "${system.model_var}"'
    scoring = "--use_groundness --use_utility --use_seqscore"
    _, data, task_flag = TASKS[task]
    if task in ("popqa", "tqa"):
        return _lines(
            'run "$PYTHON" retrieval_lm/run_short_form.py ' + model,
            f'--input_file "$EVAL_DATA/{data}" --mode adaptive_retrieval --max_new_tokens 100',
            f"--threshold 0.2 --metric match --ndocs 10 {scoring} --dtype half",
            f'--output_file "$RESULTS_DIR/{cell}.json" $EXTRA_ARGS',
        )
    if task in ("pub", "arc"):
        return _lines(
            'run "$PYTHON" retrieval_lm/run_short_form.py ' + model,
            f'--input_file "$EVAL_DATA/{data}" --task {task_flag} --max_new_tokens 50',
            f"--threshold 0.2 --metric match --ndocs 5 {scoring} --dtype half",
            f'--output_file "$RESULTS_DIR/{cell}.json" $EXTRA_ARGS',
        )
    scoring = "--use_grounding --use_utility --use_seqscore"
    if task == "asqa":
        generate = _lines(
            'run "$PYTHON" retrieval_lm/run_long_form_static.py ' + model,
            f'--input_file "$EVAL_DATA/{data}" --task asqa --mode always_retrieve --ndocs 5',
            "--max_new_tokens 300 --threshold 0.2 --max_depth 7 --beam_width 2",
            f"{scoring} --dtype half",
            f'--output_file "$GEN_DIR/{cell}.json" $EXTRA_ARGS',
        )
        return generate + "\n" + alce_command(cell, citations=True)
    # bio: the README runs 300 tokens a segment; the paper (App. B.2) says 200 for Self-RAG
    generate = _lines(
        'run "$PYTHON" retrieval_lm/run_long_form_static.py ' + model,
        f'--input_file "$EVAL_DATA/{data}" --task factscore --mode adaptive_retrieval --ndocs 5',
        "--max_new_tokens 200 --threshold 0.2 --max_depth 7 --beam_width 2",
        f"{scoring} --dtype half",
        f'--output_file "$GEN_DIR/{cell}.jsonl" $EXTRA_ARGS',
    )
    return generate + "\n" + factscore_command(cell, "jsonl")


def baseline_command(cell: str, system: System, task: str) -> str:
    _, data, task_flag = TASKS[task]
    tokens = {"popqa": 100, "tqa": 100, "pub": 50, "arc": 50, "asqa": 100, "bio": 500}[task]
    long_form = task in ("asqa", "bio")
    head = f'run "$PYTHON" retrieval_lm/run_baseline_lm.py --model_name "${system.model_var}"'
    if system.api:
        head += " --backend openai"
    flags = f'--input_file "$EVAL_DATA/{data}" --max_new_tokens {tokens}'
    flags += f" --task {task_flag}" if task_flag else ""
    flags += "" if long_form else " --metric match"
    mode = "--mode retrieval --top_n 5" if system.retrieval else "--mode vanilla"
    if system.chat_prompt:
        mode += " --prompt_name llama_chat_prompt" + ("_retrieval" if system.retrieval else "")
    out_dir = "$GEN_DIR" if long_form else "$RESULTS_DIR"
    command = _lines(head, flags, mode, f'--result_fp "{out_dir}/{cell}.json" $EXTRA_ARGS')
    if task == "asqa":
        return command + "\n" + alce_command(cell, citations=system.retrieval)
    if task == "bio":
        return command + "\n" + factscore_command(cell, "json")
    return command


def alce_command(cell: str, citations: bool) -> str:
    parts = [f'run "$PYTHON" scripts/eval_alce.py --f "$GEN_DIR/{cell}.json" --mauve --mauve_model "$MAUVE_MODEL"']
    if citations:
        parts.append('--citations --at_most_citations 3 --nli_model "$NLI_MODEL" --nli_kind "$NLI_KIND"')
    return _lines(*parts, f'--result_fp "$RESULTS_DIR/{cell}.json"')


def factscore_command(cell: str, suffix: str) -> str:
    return _lines(
        f'run "$PYTHON" scripts/eval_factscore.py --input_file "$GEN_DIR/{cell}.{suffix}"',
        '--factscore_python "$FACTSCORE_PYTHON" --model_name "$FACTSCORE_JUDGE" --openai_key "$OPENAI_KEY_FILE"',
        '--data_dir "$FACTSCORE_DATA_DIR" --cache_dir "$FACTSCORE_DATA_DIR" --model_dir "$FACTSCORE_DATA_DIR"',
        f'--result_fp "$RESULTS_DIR/{cell}.json"',
    )


def script_text(cell: str, system: System, task: str) -> str:
    column = TASKS[task][0]
    command = selfrag_command(cell, system, task) if system.selfrag else baseline_command(cell, system, task)
    default = system.default
    note = f"  # {ALPACA_NOTE}" if system.model_var.startswith("ALPACA") else ""
    return (
        "#!/usr/bin/env bash\n"
        f"# Table 2, {system.label}, {column}: paper {paper_number(system, task)}.\n"
        "# Generated by scripts/table2/make_scripts.py; environment variables: scripts/table2/README.md.\n"
        "set -euo pipefail\n"
        'source "$(dirname "${BASH_SOURCE[0]}")/common.sh"\n'
        f': "${{{system.model_var}:={default}}}"{note}\n'
        f"{command}\n"
    )


def readme_text() -> str:
    rows = [
        f"| {system.label} | {TASKS[task][0]} | [`{cell}.sh`]({cell}.sh) | `results/{cell}.json` | "
        f"{paper_number(system, task)} |"
        for cell, system, task in cells()
    ]
    return (HERE / "README.header.md").read_text(encoding="utf-8") + "\n".join(rows) + "\n"


def main() -> int:
    for old in HERE.glob("*_*.sh"):
        old.unlink()
    for cell, system, task in cells():
        path = HERE / f"{cell}.sh"
        path.write_text(script_text(cell, system, task), encoding="utf-8")
        path.chmod(0o755)
    (HERE / "README.md").write_text(readme_text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
