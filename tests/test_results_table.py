"""`selfrag eval --table` (selfrag/eval/results_table.py): Table 2 and the Fig. 3c sweep from hand-written result
files (and from real runs)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from selfrag.commands import main as selfrag_main
from selfrag.eval.results_table import model_label

ROOT = Path(__file__).resolve().parent.parent


def table(args: list[str]) -> int:
    """`selfrag eval ARGS --table`: its exit status (0, or 2 with the error logged, as on the command line)."""
    return selfrag_main(["eval", *args, "--table"])


def selfrag_result(model, input_file, task, mean, mode="adaptive_retrieval", threshold=0.2, freq=0.5, **metrics):
    """The shape of a run_short_form.py output (only the keys the table reads, plus markers)."""
    return {
        "preds": [],
        "all_results": [],
        "retrieve": [],
        "metric": "match",
        "metric_mean": mean,
        "metrics": {"match": mean, **metrics},
        "retrieval_frequency": freq,
        "config": {
            "model_name": model,
            "input_file": input_file,
            "task": task,
            "mode": mode,
            "threshold": threshold,
            "compat": "none",
        },
    }


def baseline_result(model, input_file, task, mean, mode="vanilla", **metrics):
    """The shape of a run_baseline_lm.py output."""
    return {
        "preds": [],
        "metric": "match",
        "metric_mean": mean,
        "metrics": {"match": mean, **metrics},
        "runner": "baseline",
        "retrieval_frequency": float(mode == "retrieval"),
        "config": {"model_name": model, "input_file": input_file, "task": task, "mode": mode, "compat": "none"},
    }


def write(directory: Path, name: str, obj) -> None:
    (directory / name).parent.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results"
    sr = "selfrag/selfrag_llama2_7b"
    write(
        d, "popqa_selfrag7b.json", selfrag_result(sr, "eval_data/popqa_longtail_w_gs.jsonl", None, 0.549, accuracy=0.4)
    )
    write(d, "pub_selfrag7b.json", selfrag_result(sr, "eval_data/health_claims_processed.jsonl", "fever", 0.724))
    write(d, "arc_selfrag7b.json", selfrag_result(sr, "data/arc_challenge_processed.jsonl", "arc_c", 0.673))
    write(
        d,
        "popqa_selfrag7b_always.json",
        selfrag_result(sr, "x/popqa_longtail_w_gs.jsonl", None, 0.5, "always_retrieve"),
    )
    write(
        d,
        "popqa_llama2.json",
        baseline_result("meta-llama/Llama-2-7b-hf", "popqa_longtail_w_gs.jsonl", None, 0.147, accuracy=0.1),
    )
    write(d, "tqa_llama2.json", baseline_result("meta-llama/Llama-2-7b-hf", "triviaqa_test_w_gs.jsonl", None, 0.305))
    write(d, "arc_llama2_ret.json", baseline_result("/models/Llama-2-7b-hf/", "arc.jsonl", "arc_c", 0.48, "retrieval"))
    write(
        d,
        "tqa_chatgpt_ret.json",
        baseline_result("gpt-3.5-turbo-0301", "triviaqa_test.jsonl", None, 0.657, "retrieval"),
    )
    # The original baseline's JSON Lines output, placed by its name.
    write(
        d,
        "Alpaca-7B__pub.jsonl",
        "".join(json.dumps({"output": "true", "metric_result": v}) + "\n" for v in (1.0, 0.0, 1.0, 0.0, 0.0)),
    )
    # The original short form's output (no config), placed by its name.
    write(d, "sub/Self-RAG 13B__TQA.json", {"preds": [], "metric_mean": 0.693, "all_results": [], "golds": []})
    # Files written beside results, and results outside Table 2's short-form columns: ignored or skipped.
    write(d, "popqa_selfrag7b.json.config.json", {"model_name": sr})
    write(d, "run.json.partial.jsonl", '{"fingerprint": {}}\n')
    write(d, "asqa_llama2.json", baseline_result("meta-llama/Llama-2-7b-hf", "asqa_eval_gtr_top100.json", "asqa", None))
    return d


TABLE = """\
| System | PopQA | TQA | Pub | ARC |
|---|---|---|---|---|
| *Baselines without retrieval* | | | | |
| Alpaca-7B | – | – | 40.0 | – |
| Llama2-7B | 14.7 | 30.5 | – | – |
| *Baselines with retrieval* | | | | |
| Ret-ChatGPT | – | 65.7 | – | – |
| Ret-Llama2-7B | – | – | – | 48.0 |
| *Self-RAG* | | | | |
| Self-RAG 13B | – | 69.3 | – | – |
| Self-RAG 7B | 54.9 | – | 72.4 | 67.3 |
| Self-RAG 7B (always_retrieve) | 50.0 | – | – | – |
"""


def test_table2_from_sample_files(results_dir, tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        assert table([str(results_dir), "--output", str(tmp_path / "table.md")]) == 0
    assert capsys.readouterr().out == TABLE
    assert (tmp_path / "table.md").read_text() == TABLE
    assert "asqa_llama2.json: no metric value" in caplog.text


def test_other_metric_and_missing_metric(results_dir, capsys, caplog):
    files = [str(results_dir / "popqa_selfrag7b.json"), str(results_dir / "popqa_llama2.json")]
    assert table([*files, "--metric", "accuracy"]) == 0
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC |\n|---|---|---|---|---|\n"
        "| *Baselines without retrieval* | | | | |\n| Llama2-7B | 10.0 | – | – | – |\n"
        "| *Self-RAG* | | | | |\n| Self-RAG 7B | 40.0 | – | – | – |\n"
    )
    with caplog.at_level(logging.ERROR):
        assert table([str(results_dir / "tqa_llama2.json"), "--metric", "accuracy"]) == 2
    assert "tqa_llama2.json: no 'accuracy' in its 'metrics' (['match'])" in caplog.text


def test_two_files_for_one_cell_are_an_error(results_dir, caplog):
    write(
        results_dir,
        "popqa_selfrag7b_again.json",
        selfrag_result("selfrag/selfrag_llama2_7b", "popqa_longtail_w_gs.jsonl", None, 0.5, threshold=0.5),
    )
    with caplog.at_level(logging.ERROR):
        assert table([str(results_dir)]) == 2
    assert "two results for Self-RAG 7B / PopQA" in caplog.text


def test_file_without_config_or_name_is_skipped(tmp_path, caplog):
    write(tmp_path, "result.json", {"metric_mean": 0.3})
    with caplog.at_level(logging.WARNING):
        assert table([str(tmp_path / "result.json")]) == 2
    assert "name the file SYSTEM__TASK.json" in caplog.text and "no result file could be placed" in caplog.text


def test_model_labels():
    assert model_label("selfrag/selfrag_llama2_13b") == "Self-RAG 13B"
    assert model_label("meta-llama/Llama-2-13b-chat-hf") == "Llama2-chat-13B"
    assert model_label("/ckpt/alpaca-7b-reproduced") == "Alpaca-7B"
    assert model_label("/ckpt/my_model/") == "my_model"


@pytest.fixture
def sweep_dir(tmp_path):
    d = tmp_path / "sweep"
    sr = "selfrag/selfrag_llama2_7b"
    for threshold, acc, freq in ((0.5, 0.70, 0.3), (0.0, 0.72, 1.0), (0.2, 0.74, 0.62)):
        write(
            d,
            f"pub_{threshold}.json",
            selfrag_result(sr, "health_claims_processed.jsonl", "fever", acc, threshold=threshold, freq=freq),
        )
    for threshold, acc, freq in ((0.2, 0.55, 0.9), (0.8, 0.45, 0.1)):
        write(
            d,
            f"popqa_{threshold}.json",
            selfrag_result(sr, "popqa_longtail_w_gs.jsonl", None, acc, threshold=threshold, freq=freq),
        )
    return d


SWEEP = """\
| System | Task | Threshold | Accuracy | Retrieval (%) |
|---|---|---|---|---|
| Self-RAG 7B | PopQA | 0.2 | 55.0 | 90.0 |
| Self-RAG 7B | PopQA | 0.8 | 45.0 | 10.0 |
| Self-RAG 7B | Pub | 0 | 72.0 | 100.0 |
| Self-RAG 7B | Pub | 0.2 | 74.0 | 62.0 |
| Self-RAG 7B | Pub | 0.5 | 70.0 | 30.0 |
"""


def test_sweep_table_and_plot(sweep_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "fig" / "fig3c.png"
    assert table(["--sweep", str(sweep_dir), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.out == SWEEP
    assert f"saved {plot}" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_plot_without_matplotlib_says_so_and_still_prints(sweep_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    plot = tmp_path / "fig3c.png"
    assert table(["--sweep", str(sweep_dir), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.out == SWEEP
    assert "matplotlib is not installed" in captured.err and "pip install matplotlib" in captured.err
    assert not plot.exists()


def test_table_and_sweep_together_and_bad_usage(results_dir, sweep_dir, capsys, caplog):
    assert (
        table(
            [
                str(results_dir / "tqa_llama2.json"),
                "--sweep",
                str(sweep_dir / "pub_0.2.json"),
                str(sweep_dir / "pub_0.5.json"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("| System | PopQA |") and out.endswith("| Self-RAG 7B | Pub | 0.5 | 70.0 | 30.0 |\n")
    with caplog.at_level(logging.ERROR):
        assert table([str(results_dir), "--plot", "x.png"]) == 2
        assert table(["--sweep", str(results_dir / "popqa_llama2.json")]) == 2
        assert table([str(results_dir / "nope.json")]) == 2
        assert selfrag_main(["eval", "--sweep", str(sweep_dir)]) == 2  # the sweep is part of --table
    assert "--plot draws the threshold sweep: add --sweep" in caplog.text
    assert "--sweep and --plot go with --table" in caplog.text
    assert "no threshold sweep found" in caplog.text
    assert "nope.json: no such file or directory" in caplog.text


def test_table_from_real_runs_of_both_scripts(tiny_model_dir, tmp_path, capsys):
    """Outputs of run_baseline_lm.py and run_short_form.py on the tiny model land in the right cells."""
    from selfrag.eval.baseline import BaselineConfig, run_baseline
    from selfrag.eval.short_form import ShortFormConfig, run_short_form

    popqa = str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl")
    health = str(ROOT / "eval_data" / "health_claims_processed.jsonl")
    out = tmp_path / "runs"
    base = run_baseline(
        BaselineConfig(
            model_name=tiny_model_dir,
            input_file=popqa,
            result_fp=str(out / "b.json"),
            backend="hf",
            max_new_tokens=2,
            limit=2,
        )
    )
    ret = run_baseline(
        BaselineConfig(
            model_name=tiny_model_dir,
            input_file=health,
            result_fp=str(out / "r.json"),
            backend="hf",
            max_new_tokens=2,
            limit=2,
            task="fever",
            mode="retrieval",
        )
    )
    sr = run_short_form(
        ShortFormConfig(
            model_name=tiny_model_dir,
            input_file=popqa,
            output_file=str(out / "s.json"),
            backend="hf",
            max_new_tokens=2,
            limit=2,
            ndocs=1,
            threshold=0.2,
        )
    )
    assert table([str(out)]) == 0
    name = Path(tiny_model_dir).name
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC |\n|---|---|---|---|---|\n"
        f"| *Baselines without retrieval* | | | | |\n| {name} | {100 * base['metric_mean']:.1f} | – | – | – |\n"
        f"| *Baselines with retrieval* | | | | |\n| Ret-{name} | – | – | {100 * ret['metric_mean']:.1f} | – |\n"
        f"| *Self-RAG* | | | | |\n| Self-RAG ({name}) | {100 * sr['metric_mean']:.1f} | – | – | – |\n"
    )


# ---------------------------------------------------------------------------------------------------------------
# Long form: ASQA (scripts/eval_alce.py) and Bio (scripts/eval_factscore.py) summaries

SELFRAG_LONG_CONFIG = {  # what run_long_form_static.py writes to <output>.config.json (the keys the table reads)
    "model_name": "selfrag/selfrag_llama2_7b",
    "task": "asqa",
    "mode": "always_retrieve",
    "threshold": 0.2,
    "beam_width": 2,
    "compat": "none",
}


def long_form_summary(runner, config, generator, **metrics):
    """The shape of an eval_alce.py / eval_factscore.py --result_fp summary (fractions)."""
    main = "factscore" if runner == "factscore" else "str_em" if "str_em" in metrics else None
    return {
        "runner": runner,
        "metric": main,
        "metric_mean": metrics.get(main) if main else None,
        "metrics": metrics,
        "n_items": 2,
        "generator": generator,
        "config": config,
        "eval_config": {},
    }


def baseline_long_config(model, task, mode="vanilla"):
    return {"model_name": model, "task": task, "mode": mode, "top_n": 5 if mode == "retrieval" else 1, "compat": "none"}


@pytest.fixture
def long_form_dir(results_dir):
    d = results_dir / "long"
    write(
        d,
        "asqa_selfrag-7b.json",
        long_form_summary(
            "alce",
            SELFRAG_LONG_CONFIG,
            "self-rag",
            length=60.2,
            str_em=0.3,
            str_hit=0.1,
            rougeLsum=0.357,
            mauve=0.743,
            citation_rec=0.678,
            citation_prec=0.669,
        ),
    )
    # run_long_form_static.py writes the mode as given: "default" is the adaptive mode, the paper's for Bio.
    bio_config = SELFRAG_LONG_CONFIG | {"task": "factscore", "mode": "default"}
    write(
        d,
        "bio_selfrag-7b.json",
        long_form_summary("factscore", bio_config, "self-rag", factscore=0.812, respond_ratio=1.0),
    )
    # Not the paper's mode for ASQA: a row of its own.
    adaptive = SELFRAG_LONG_CONFIG | {"mode": "adaptive_retrieval"}
    write(d, "asqa_selfrag-7b_adaptive.json", long_form_summary("alce", adaptive, "self-rag", str_em=0.28))
    # Without retrieval: no citation scores, and MAUVE not computed (mauve-text absent): missing cells.
    llama = baseline_long_config("meta-llama/Llama-2-7b-hf", "asqa")
    write(d, "asqa_llama2-7b.json", long_form_summary("alce", llama, "baseline", str_em=0.079, rougeLsum=0.153))
    llama_ret = baseline_long_config("meta-llama/Llama-2-7b-hf", "factscore", "retrieval")
    write(d, "bio_llama2-7b_ret.json", long_form_summary("factscore", llama_ret, "baseline", factscore=0.78))
    # The scorers' own files, placed by name: ALCE's <f>.score (percentages) and FactScore's output.
    alce_scores = {"length": 61.0, "str_em": 40.7, "str_hit": 12.0, "rougeLsum": 39.9, "mauve": 79.7}
    write(d, "Ret-ChatGPT__asqa.json", alce_scores | {"citation_rec": 76.6, "citation_prec": 65.1})
    write(d, "Self-RAG 13B__Bio.json", {"score": 0.802, "respond_ratio": 0.98, "num_facts_per_response": 30.1})
    # ELI5 is not in Table 2.
    eli5 = SELFRAG_LONG_CONFIG | {"task": "eli5"}
    write(d, "eli5_selfrag-7b.json", long_form_summary("alce", eli5, "self-rag", rougeLsum=0.2, claims_nli=0.1))
    return results_dir


WIDE_TABLE = """\
| System | PopQA | TQA | Pub | ARC | Bio | ASQA em | ASQA rg | ASQA mau | ASQA pre | ASQA rec |
|---|---|---|---|---|---|---|---|---|---|---|
| *Baselines without retrieval* | | | | | | | | | | |
| Alpaca-7B | – | – | 40.0 | – | – | – | – | – | – | – |
| Llama2-7B | 14.7 | 30.5 | – | – | – | 7.9 | 15.3 | – | – | – |
| *Baselines with retrieval* | | | | | | | | | | |
| Ret-ChatGPT | – | 65.7 | – | – | – | 40.7 | 39.9 | 79.7 | 65.1 | 76.6 |
| Ret-Llama2-7B | – | – | – | 48.0 | 78.0 | – | – | – | – | – |
| *Self-RAG* | | | | | | | | | | |
| Self-RAG 13B | – | 69.3 | – | – | 80.2 | – | – | – | – | – |
| Self-RAG 7B | 54.9 | – | 72.4 | 67.3 | 81.2 | 30.0 | 35.7 | 74.3 | 66.9 | 67.8 |
| Self-RAG 7B (adaptive_retrieval) | – | – | – | – | – | 28.0 | – | – | – | – |
| Self-RAG 7B (always_retrieve) | 50.0 | – | – | – | – | – | – | – | – | – |
"""


def test_table2_with_bio_and_asqa_columns(long_form_dir, tmp_path, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        assert table([str(long_form_dir), "--output", str(tmp_path / "table.md")]) == 0
    assert capsys.readouterr().out == WIDE_TABLE
    assert (tmp_path / "table.md").read_text() == WIDE_TABLE
    assert "eli5_selfrag-7b.json: a scripts/eval_alce.py summary of task 'eli5', which is not a column" in caplog.text


def test_selfrag_eval_table_prints_the_wide_table_too(long_form_dir, capsys):
    from selfrag.commands import main

    assert main(["eval", str(long_form_dir), "--table"]) == 0
    assert capsys.readouterr().out == WIDE_TABLE


def test_metric_flag_leaves_the_long_form_columns_alone(long_form_dir, capsys):
    files = [long_form_dir / "popqa_selfrag7b.json", long_form_dir / "long" / "asqa_selfrag-7b.json"]
    assert table([*map(str, files), "--metric", "accuracy"]) == 0
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC | Bio | ASQA em | ASQA rg | ASQA mau | ASQA pre | ASQA rec |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| *Self-RAG* | | | | | | | | | | |\n"
        "| Self-RAG 7B | 40.0 | – | – | – | – | 30.0 | 35.7 | 74.3 | 66.9 | 67.8 |\n"
    )


def test_long_form_files_that_cannot_be_placed(tmp_path, caplog):
    summary = long_form_summary("alce", SELFRAG_LONG_CONFIG, "self-rag", str_em=0.3)
    write(tmp_path, "Self-RAG 7B__popqa.json", summary)
    with caplog.at_level(logging.ERROR):
        assert table([str(tmp_path / "Self-RAG 7B__popqa.json")]) == 2
    assert (
        "Self-RAG 7B__popqa.json: named for PopQA but holds a scripts/eval_alce.py summary (ASQA); "
        "rename it SYSTEM__asqa.json"
    ) in caplog.text
    write(tmp_path, "no_config.json", long_form_summary("factscore", {}, None, factscore=0.5))
    write(tmp_path, "length_only.json", long_form_summary("alce", SELFRAG_LONG_CONFIG, "self-rag", length=50.0))
    write(tmp_path, "nothing__asqa.json", {"length": 50.0})
    write(tmp_path, "no_metrics.json", {"runner": "factscore", "config": SELFRAG_LONG_CONFIG})
    # An ASQA generation (run_baseline_lm.py --task asqa) is not a score.
    generation = baseline_result("meta-llama/Llama-2-7b-hf", "asqa_eval_gtr_top100.json", "asqa", 0.0)
    write(tmp_path, "gen.json", generation)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for name in ("no_config.json", "length_only.json", "nothing__asqa.json", "gen.json"):
            assert table([str(tmp_path / name)]) == 2
        assert table([str(tmp_path / "no_metrics.json")]) == 2
    assert "no_config.json: no generation 'config' to name its row; name the file SYSTEM__bio.json" in caplog.text
    assert (
        "length_only.json: none of str_em, rougeLsum, mauve, citation_prec, citation_rec in it; skipped" in caplog.text
    )
    assert "nothing__asqa.json: none of str_em, rougeLsum" in caplog.text
    assert (
        "gen.json: task 'asqa' is a generation to score: run scripts/eval_alce.py --result_fp FILE on it and pass "
        "FILE; skipped"
    ) in caplog.text
    assert "no_metrics.json: a scripts/eval_factscore.py summary without a 'metrics' object" in caplog.text


def test_two_asqa_summaries_for_one_row_are_an_error(long_form_dir, caplog):
    write(long_form_dir, "asqa_again.json", json.loads((long_form_dir / "long" / "asqa_selfrag-7b.json").read_text()))
    with caplog.at_level(logging.ERROR):
        assert table([str(long_form_dir)]) == 2
    assert "two results for Self-RAG 7B / ASQA em" in caplog.text


# Two ASQA items (test_alce.py's): the Self-RAG answers find 2/3 and 1/1 short answers (str_em (2/3 + 1) / 2) and
# ROUGE-Lsum F 1 and 6/7; the baseline's find 1/3 and 1/1, and ROUGE-Lsum F 8/13 ("leonard cohen wrote it" against
# the two reference sentences: P 4/4, R 4/9) and 1.
ASQA_ITEMS = [
    {
        "question": "Who wrote Hallelujah?",
        "qa_pairs": [{"short_answers": ["Leonard Cohen"]}, {"short_answers": ["George Frideric Handel", "Handel"]},
                     {"short_answers": ["Kobi Oshrat", "Shimrit Orr"]}],
        "annotations": [{"long_answer": "Leonard Cohen wrote it. The chorus is by Handel."}],
    },
    {
        "question": "Who sang Hey Jude?",
        "qa_pairs": [{"short_answers": ["The Beatles"]}],
        "annotations": [{"long_answer": "Nothing alike here."}, {"long_answer": "It was the Beatles."}],
    },
]  # fmt: skip
BIO_OUTPUT = [  # FactScore's decisions for two biographies (its `score`, length-penalised, is given separately)
    [{"atom": f"fact {i}", "is_supported": i < 3} for i in range(4)],
    [{"atom": f"fact {i}", "is_supported": i != 1} for i in range(4)],
]


def test_table_from_real_runs_of_both_scorers(tmp_path, capsys):
    """eval_alce.py and eval_factscore.py summaries of Self-RAG (long-form output + .config.json) and baseline
    (config inside) generations land in the right cells."""
    from selfrag.eval.alce import AlceEvalConfig, evaluate_file
    from selfrag.eval.factscore import FactScoreConfig, evaluate_factscore

    gen, results = tmp_path / "gen", tmp_path / "results"
    selfrag_out = ["Leonard Cohen wrote it [1]. The chorus is by Handel [2].", "It was beatles!"]
    write(gen, "asqa_selfrag-7b.json", [item | {"output": o} for item, o in zip(ASQA_ITEMS, selfrag_out)])
    write(gen, "asqa_selfrag-7b.json.config.json", SELFRAG_LONG_CONFIG)
    baseline_out = ["Leonard Cohen wrote it.", "It was the Beatles."]
    write(
        gen,
        "asqa_llama2-7b.json",
        {
            "preds": baseline_out,
            "data": [item | {"output": o} for item, o in zip(ASQA_ITEMS, baseline_out)],
            "config": baseline_long_config("meta-llama/Llama-2-7b-hf", "asqa"),
        },
    )
    for cell in ("asqa_selfrag-7b", "asqa_llama2-7b"):
        config = AlceEvalConfig(
            f=str(gen / f"{cell}.json"), sentence_splitter="regex", result_fp=str(results / f"{cell}.json")
        )
        evaluate_file(config)

    topics = ["Marie Curie", "Wangari Maathai"]
    bios = [{"input": f"Tell me a bio of {t}.", "topic": t, "output": f"{t} was a scientist."} for t in topics]
    write(gen, "bio_selfrag-7b.jsonl", "".join(json.dumps(b) + "\n" for b in bios))
    write(gen, "bio_selfrag-7b.jsonl.config.json", SELFRAG_LONG_CONFIG | {"task": "factscore", "mode": "default"})
    write(
        gen,
        "bio_llama2-7b_ret.json",
        {
            "preds": [b["output"] for b in bios],
            "data": [b | {"instruction": b["input"]} for b in bios],
            "config": baseline_long_config("meta-llama/Llama-2-7b-hf", "factscore", "retrieval"),
        },
    )
    for cell, name, score in (
        ("bio_selfrag-7b", "bio_selfrag-7b.jsonl", 0.75),
        ("bio_llama2-7b_ret", "bio_llama2-7b_ret.json", 0.5),
    ):
        write(gen, f"{cell}_fs.json", {"score": score, "respond_ratio": 1.0, "decisions": BIO_OUTPUT})
        config = FactScoreConfig(
            input_file=str(gen / name), score_file=str(gen / f"{cell}_fs.json"), result_fp=str(results / f"{cell}.json")
        )
        evaluate_factscore(config)

    assert table([str(results)]) == 0
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC | Bio | ASQA em | ASQA rg | ASQA mau | ASQA pre | ASQA rec |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| *Baselines without retrieval* | | | | | | | | | | |\n"
        "| Llama2-7B | – | – | – | – | – | 66.7 | 80.8 | – | – | – |\n"
        "| *Baselines with retrieval* | | | | | | | | | | |\n"
        "| Ret-Llama2-7B | – | – | – | – | 50.0 | – | – | – | – | – |\n"
        "| *Self-RAG* | | | | | | | | | | |\n"
        "| Self-RAG 7B | – | – | – | – | 75.0 | 83.3 | 92.9 | – | – | – |\n"
    )


def test_every_table2_cell_lands_in_its_readme_row_and_column(tmp_path):
    """Each scripts/table2 cell: its generation config (what the runner records, from the flags the script passes)
    in the file its last command writes (for ASQA / Bio, the scorer's summary) is placed in the README's row and
    column."""
    import dataclasses
    import os
    import re
    import shlex

    from procs import run

    from selfrag.cli import parse_config
    from selfrag.eval.alce import AlceEvalConfig, summary
    from selfrag.eval.baseline import BaselineConfig
    from selfrag.eval.factscore import FactScoreConfig, factscore_summary
    from selfrag.eval.long_form import LongFormConfig
    from selfrag.eval.results_table import LONG_COLUMNS, load_results
    from selfrag.eval.short_form import ShortFormConfig

    table2 = ROOT / "scripts" / "table2"
    rows = re.findall(
        r"^\| (.+?) \| (.+?) \| \[`(.+?)\.sh`\]", (table2 / "README.md").read_text(encoding="utf-8"), re.MULTILINE
    )
    assert len(rows) == 83
    columns = {"ASQA (em / rg / mau / pre / rec)": set(LONG_COLUMNS[1:]), "Bio (FactScore)": {"Bio"}}
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")} | {"DRY_RUN": "1", "PYTHON": "py"}
    for row, column, cell in rows:
        done = run(["bash", str(table2 / f"{cell}.sh")], env=env, timeout=60, cwd="/", check=False)
        commands = [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]
        assert done.returncode == 0 and commands, (cell, done.stderr)
        script_name, argv = commands[0][1], commands[0][2:]
        if script_name.endswith("run_short_form.py"):
            config = dataclasses.asdict(parse_config(ShortFormConfig, argv))
            result = {"all_results": [], "retrieve": [], "metric_mean": 0.5, "config": config}
        elif script_name.endswith("run_baseline_lm.py"):
            config = parse_config(BaselineConfig, argv).to_dict()
            result = {"runner": "baseline", "metric_mean": 0.5, "config": config}
        else:
            assert script_name.endswith("run_long_form_static.py"), script_name
            config = dataclasses.asdict(parse_config(LongFormConfig, argv))  # its <output>.config.json
        if column.startswith("ASQA"):
            scores = {"str_em": 30.0, "rougeLsum": 35.0, "mauve": 70.0, "citation_prec": 60.0, "citation_rec": 65.0}
            result = summary(scores, 2, config, AlceEvalConfig(f="x.json"))
        elif column.startswith("Bio"):
            out = {"score": 0.8, "respond_ratio": 1.0, "decisions": [None, None]}
            result = factscore_summary(out, [{"topic": "a"}, {"topic": "b"}], config, FactScoreConfig(input_file="x"))
        write(tmp_path, f"{cell}.json", result)
        entries = load_results(tmp_path / f"{cell}.json")
        assert {(e.system, e.group) for e in entries} == {
            (
                row,
                "selfrag" if row.startswith("Self-RAG") else "retrieval" if row.startswith("Ret-") else "no_retrieval",
            )
        }, cell
        assert {e.column for e in entries} == columns.get(column, {column}), cell
