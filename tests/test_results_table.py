"""scripts/results_table.py: Table 2 and the Fig. 3c sweep from hand-written result files (and from real runs)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from pathlib import Path

import pytest

from selfrag.results_table import model_label

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("results_table_script", ROOT / "scripts" / "results_table.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)


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
        assert script.main([str(results_dir), "--output", str(tmp_path / "table.md")]) == 0
    assert capsys.readouterr().out == TABLE
    assert (tmp_path / "table.md").read_text() == TABLE
    assert "asqa_llama2.json: no metric value" in caplog.text


def test_other_metric_and_missing_metric(results_dir, capsys, caplog):
    files = [str(results_dir / "popqa_selfrag7b.json"), str(results_dir / "popqa_llama2.json")]
    assert script.main([*files, "--metric", "accuracy"]) == 0
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC |\n|---|---|---|---|---|\n"
        "| *Baselines without retrieval* | | | | |\n| Llama2-7B | 10.0 | – | – | – |\n"
        "| *Self-RAG* | | | | |\n| Self-RAG 7B | 40.0 | – | – | – |\n"
    )
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, [str(results_dir / "tqa_llama2.json"), "--metric", "accuracy"]) == 2
    assert "tqa_llama2.json: no 'accuracy' in its 'metrics' (['match'])" in caplog.text


def test_two_files_for_one_cell_are_an_error(results_dir, caplog):
    write(
        results_dir,
        "popqa_selfrag7b_again.json",
        selfrag_result("selfrag/selfrag_llama2_7b", "popqa_longtail_w_gs.jsonl", None, 0.5, threshold=0.5),
    )
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, [str(results_dir)]) == 2
    assert "two results for Self-RAG 7B / PopQA" in caplog.text


def test_file_without_config_or_name_is_skipped(tmp_path, caplog):
    write(tmp_path, "result.json", {"metric_mean": 0.3})
    with caplog.at_level(logging.WARNING):
        assert script.run_main(script.main, [str(tmp_path / "result.json")]) == 2
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
    assert script.main(["--sweep", str(sweep_dir), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.out == SWEEP
    assert f"saved {plot}" in captured.err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


def test_plot_without_matplotlib_says_so_and_still_prints(sweep_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    plot = tmp_path / "fig3c.png"
    assert script.main(["--sweep", str(sweep_dir), "--plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.out == SWEEP
    assert "matplotlib is not installed" in captured.err and "pip install matplotlib" in captured.err
    assert not plot.exists()


def test_table_and_sweep_together_and_bad_usage(results_dir, sweep_dir, capsys, caplog):
    assert (
        script.main(
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
        assert script.run_main(script.main, [str(results_dir), "--plot", "x.png"]) == 2
        assert script.run_main(script.main, ["--sweep", str(results_dir / "popqa_llama2.json")]) == 2
        assert script.run_main(script.main, [str(results_dir / "nope.json")]) == 2
    assert "--plot draws the threshold sweep: add --sweep" in caplog.text
    assert "no threshold sweep found" in caplog.text
    assert "nope.json: no such file or directory" in caplog.text


def test_table_from_real_runs_of_both_scripts(tiny_model_dir, tmp_path, capsys):
    """Outputs of run_baseline_lm.py and run_short_form.py on the tiny model land in the right cells."""
    from selfrag.baseline import BaselineConfig, run_baseline
    from selfrag.short_form import ShortFormConfig, run_short_form

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
    assert script.main([str(out)]) == 0
    name = Path(tiny_model_dir).name
    assert capsys.readouterr().out == (
        "| System | PopQA | TQA | Pub | ARC |\n|---|---|---|---|---|\n"
        f"| *Baselines without retrieval* | | | | |\n| {name} | {100 * base['metric_mean']:.1f} | – | – | – |\n"
        f"| *Baselines with retrieval* | | | | |\n| Ret-{name} | – | – | {100 * ret['metric_mean']:.1f} | – |\n"
        f"| *Self-RAG* | | | | |\n| Self-RAG ({name}) | {100 * sr['metric_mean']:.1f} | – | – | – |\n"
    )
