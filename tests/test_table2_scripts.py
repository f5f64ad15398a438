"""scripts/table2/: one script per Table 2 cell. Every script is valid bash, is what make_scripts.py writes, runs
only existing scripts with flags their config dataclasses accept (checked on the commands the scripts print under
DRY_RUN=1, i.e. after the shell expanded them), writes results/<cell>.json, and is listed in the README; one
short-form and one ASQA cell run end to end on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from procs import run

from selfrag.cli import parse_config
from selfrag.eval.alce import AlceEvalConfig
from selfrag.eval.baseline import BaselineConfig
from selfrag.eval.factscore import FactScoreConfig
from selfrag.eval.long_form import LongFormConfig
from selfrag.eval.short_form import ShortFormConfig

ROOT = Path(__file__).resolve().parent.parent
TABLE2 = ROOT / "scripts" / "table2"
SCRIPTS = sorted(TABLE2.glob("*_*.sh"))
CONFIGS = {
    "retrieval_lm/run_short_form.py": ShortFormConfig,
    "retrieval_lm/run_long_form_static.py": LongFormConfig,
    "retrieval_lm/run_baseline_lm.py": BaselineConfig,
    "scripts/eval_alce.py": AlceEvalConfig,
    "scripts/eval_factscore.py": FactScoreConfig,
}
# Environment for the dry runs: only the defaults of common.sh, whatever the caller's shell has set.
DRY_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"DRY_RUN": "1", "PYTHON": "python"}


def load_generator():
    spec = importlib.util.spec_from_file_location("table2_make_scripts", TABLE2 / "make_scripts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def dry_run(script: Path, env: dict[str, str] | None = None) -> list[list[str]]:
    done = run(["bash", str(script)], env=env or DRY_ENV, timeout=60, cwd="/")
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def test_scripts_exist_and_are_valid_bash():
    assert len(SCRIPTS) == 83  # 2 Self-RAG rows x 6 tasks + 6 baselines x 2 (with / without retrieval) x 6 - 1
    for script in [*SCRIPTS, TABLE2 / "common.sh"]:
        done = run(["bash", "-n", str(script)], timeout=30, check=False)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_scripts_are_what_the_generator_writes():
    generator = load_generator()
    cells = generator.cells()
    assert sorted(f"{cell}.sh" for cell, _, _ in cells) == [s.name for s in SCRIPTS]
    for cell, system, task in cells:
        assert (TABLE2 / f"{cell}.sh").read_text(encoding="utf-8") == generator.script_text(cell, system, task), cell
        assert os.access(TABLE2 / f"{cell}.sh", os.X_OK), f"{cell}.sh is not executable"
    assert (TABLE2 / "README.md").read_text(encoding="utf-8") == generator.readme_text()


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_commands_parse_against_their_configs(script):
    commands = dry_run(script)
    assert commands, f"{script.name} runs nothing"
    configs = []
    for argv in commands:
        assert argv[0] == "python", argv
        target = argv[1]
        assert target in CONFIGS, f"{script.name}: unknown script {target}"
        assert (ROOT / target).is_file()
        configs.append((target, parse_config(CONFIGS[target], argv[2:])))  # unknown flags exit here
    cell = script.stem
    final_target, final = configs[-1]
    final_path = final.output_file if final_target.startswith("retrieval_lm/run_short") else final.result_fp
    assert final_path == f"results/{cell}.json"
    first_target, first = configs[0]
    assert (ROOT / first.input_file).is_file(), first.input_file  # the eval_data sample of the same name
    if len(configs) == 2:  # long form: the evaluator reads what the generator wrote
        written = first.output_file if "long_form" in first_target else first.result_fp
        assert written.startswith("generations/")
        assert (final.f if final_target.endswith("eval_alce.py") else final.input_file) == written


def test_paper_settings_of_the_self_rag_cells():
    settings = {}
    for cell in ("popqa_selfrag-7b", "pub_selfrag-13b", "asqa_selfrag-7b", "bio_selfrag-13b"):
        argv = dry_run(TABLE2 / f"{cell}.sh")[0]
        settings[cell] = parse_config(CONFIGS[argv[1]], argv[2:])
    popqa = settings["popqa_selfrag-7b"]
    assert (popqa.model_name, popqa.mode, popqa.ndocs, popqa.max_new_tokens, popqa.threshold) == (
        "selfrag/selfrag_llama2_7b", "adaptive_retrieval", 10, 100, 0.2,
    )  # fmt: skip
    assert popqa.use_groundness and popqa.use_utility and popqa.use_seqscore and popqa.w_use == 0.5
    pub = settings["pub_selfrag-13b"]
    assert (pub.model_name, pub.task, pub.ndocs, pub.max_new_tokens) == ("selfrag/selfrag_llama2_13b", "fever", 5, 50)
    asqa = settings["asqa_selfrag-7b"]
    assert (asqa.mode, asqa.ndocs, asqa.max_new_tokens, asqa.max_depth, asqa.beam_width) == (
        "always_retrieve", 5, 300, 7, 2,
    )  # fmt: skip
    assert (asqa.w_rel, asqa.w_sup, asqa.w_use) == (1.0, 1.0, 0.5)
    bio = settings["bio_selfrag-13b"]
    assert (bio.task, bio.resolved_mode, bio.threshold, bio.max_new_tokens) == (
        "factscore",
        "adaptive_retrieval",
        0.2,
        200,
    )
    alce = parse_config(AlceEvalConfig, dry_run(TABLE2 / "asqa_selfrag-7b.sh")[1][2:])
    assert alce.citations and alce.mauve and alce.at_most_citations == 3 and alce.mauve_model == "gpt2-large"
    assert (alce.nli_model, alce.nli_kind) == ("google/t5_xxl_true_nli_mixture", "true")
    vanilla = parse_config(AlceEvalConfig, dry_run(TABLE2 / "asqa_llama2-7b.sh")[1][2:])
    assert not vanilla.citations  # the paper has no citation numbers without retrieval


def test_baseline_settings():
    chat = parse_config(BaselineConfig, dry_run(TABLE2 / "tqa_llama2-chat-13b_ret.sh")[0][2:])
    assert (chat.model_name, chat.mode, chat.top_n, chat.prompt_name, chat.max_new_tokens) == (
        "meta-llama/Llama-2-13b-chat-hf", "retrieval", 5, "llama_chat_prompt_retrieval", 100,
    )  # fmt: skip
    gpt = parse_config(BaselineConfig, dry_run(TABLE2 / "arc_chatgpt.sh")[0][2:])
    assert (gpt.model_name, gpt.backend, gpt.task, gpt.max_new_tokens, gpt.temperature) == (
        "gpt-3.5-turbo", "openai", "arc_c", 50, 0.0,
    )  # fmt: skip
    bio = parse_config(BaselineConfig, dry_run(TABLE2 / "bio_alpaca-7b.sh")[0][2:])
    assert (bio.model_name, bio.task, bio.max_new_tokens, bio.mode) == ("models/alpaca-7b", "factscore", 500, "vanilla")
    assert not (TABLE2 / "bio_chatgpt_ret.sh").exists()  # "–" in the paper


def test_environment_overrides():
    env = DRY_ENV | {"SELFRAG_7B": "/m/7b", "EVAL_DATA": "/data", "RESULTS_DIR": "/out", "EXTRA_ARGS": "--limit 3"}
    (argv,) = dry_run(TABLE2 / "arc_selfrag-7b.sh", env)
    config = parse_config(ShortFormConfig, argv[2:])
    assert (config.model_name, config.input_file, config.output_file, config.limit) == (
        "/m/7b", "/data/arc_challenge_processed.jsonl", "/out/arc_selfrag-7b.json", 3,
    )  # fmt: skip


def test_readme_lists_every_cell_with_its_paper_number():
    rows = re.findall(r"^\| (.+?) \| (.+?) \| \[`(.+?)\.sh`\]\(.+?\) \| `results/(.+?)\.json` \| (.+?) \|$",
                      (TABLE2 / "README.md").read_text(encoding="utf-8"), re.MULTILINE)  # fmt: skip
    assert sorted(r[2] for r in rows) == [s.stem for s in SCRIPTS]
    by_cell = {r[2]: r for r in rows}
    assert by_cell["popqa_selfrag-7b"][0::4] == ("Self-RAG 7B", "54.9")
    assert by_cell["asqa_selfrag-13b"][4] == "31.7 / 37.0 / 71.6 / 70.3 / 71.3"
    assert by_cell["bio_llama2-chat-13b_ret"][0::4] == ("Ret-Llama2-chat-13B", "79.9")
    assert by_cell["arc_alpaca-13b_ret"][0::4] == ("Ret-Alpaca-13B", "57.6")
    for row in rows:
        assert row[2] == row[3]
        for line in (TABLE2 / f"{row[2]}.sh").read_text(encoding="utf-8").splitlines()[1:2]:
            assert line.endswith(f"paper {row[4]}.")


@pytest.mark.slow
def test_cells_run_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    """ARC (short form) and ASQA (long form, then ALCE with a tiny always-entailing NLI classifier), shortened by
    EXTRA_ARGS, then the results table over RESULTS_DIR."""
    from test_alce import build_tiny_bert_nli, build_tiny_gpt2

    nli = build_tiny_bert_nli(tmp_path / "nli", {0: "entailment", 1: "neutral", 2: "contradiction"}, "entailment")
    mauve = importlib.util.find_spec("mauve") is not None
    if mauve:
        build_tiny_gpt2(tmp_path / "tiny-gpt2")
    env = dict(os.environ) | {
        "PYTHON": sys.executable,
        "SELFRAG_7B": tiny_model_dir,
        "RESULTS_DIR": str(tmp_path / "results"),
        "GEN_DIR": str(tmp_path / "gen"),
        "NLI_MODEL": str(nli),
        "NLI_KIND": "seq-cls",
        "MAUVE_MODEL": str(tmp_path / "tiny-gpt2"),
        "EXTRA_ARGS": "--backend hf --limit 2 --max_new_tokens 3 --max_depth 2 --ndocs 2",
    }
    env.pop("DRY_RUN", None)
    for cell in ("arc_selfrag-7b", "asqa_selfrag-7b"):
        done = run(["bash", str(TABLE2 / f"{cell}.sh")], env=env, timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    arc = json.loads((tmp_path / "results" / "arc_selfrag-7b.json").read_text())
    assert len(arc["preds"]) == 2 and arc["config"]["task"] == "arc_c"
    asqa = json.loads((tmp_path / "results" / "asqa_selfrag-7b.json").read_text())
    assert asqa["runner"] == "alce" and asqa["n_items"] == 2
    keys = {"length", "str_em", "str_hit", "rougeLsum", "citation_rec", "citation_prec"} | (
        {"mauve"} if mauve else set()
    )
    assert set(asqa["alce_scores"]) == keys
    assert asqa["config"]["model_name"] == tiny_model_dir and asqa["config"]["task"] == "asqa"
    assert asqa["generator"] == "self-rag"
    assert (tmp_path / "gen" / "asqa_selfrag-7b.json.score").is_file()
    table = run([sys.executable, "-m", "selfrag", "eval", str(tmp_path / "results"), "--table"], timeout=120)
    assert "| System | PopQA | TQA | Pub | ARC |" in table.stdout
    assert f"| Self-RAG ({Path(tiny_model_dir).name}) | – | – | – | {100 * arc['metric_mean']:.1f} |" in table.stdout
