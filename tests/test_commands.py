"""The `selfrag` command: help of every command, dispatch, yaml layering and the resolved-config records, and
end-to-end runs that must match the scripts' outputs (tiny Llama for `infer`, tiny BERT for `index` / `retrieve`).

    python -m pytest -q tests/test_commands.py
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import yaml
from procs import run as run_cmd

import selfrag
from selfrag.cli import parse_config, program, record_path, run_main
from selfrag.commands import COMMANDS, main, rescore_markdown
from selfrag.errors import ConfigError
from selfrag.eval.metrics import metric_fn

ROOT = Path(__file__).resolve().parent.parent
POPQA = str(ROOT / "eval_data" / "popqa_longtail_w_gs.jsonl")


def load_script(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_record(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------------ help / dispatch


def test_top_level_help_lists_every_command_without_importing_torch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: selfrag <command> [flags]\n")
    for name, command in COMMANDS.items():
        assert f"  {name} " in out and command.help in out
    assert list(COMMANDS) == [
        "index",
        "build-index",
        "retrieve",
        "infer",
        "long-form",
        "baseline",
        "train",
        "label",
        "combine",
        "eval",
        "serve",
        "quickstart",
    ]
    code = "import sys; from selfrag.commands import main; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    loaded = run_cmd([sys.executable, "-c", code], timeout=120, cwd=ROOT)
    assert loaded.stdout == "[]\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"selfrag {selfrag.__version__}\n"


HELP_CASES = [
    (["index"], ["--model_name_or_path", "--num_shards", "--shard_id", "--passage_maxlength", "--save_every"]),
    (["build-index"], ["--passages_embeddings", "--index_factory", "--train_size", "--index_dir"]),
    (["retrieve"], ["--n_docs", "--query", "--data", "--save_or_load_index", "--index_factory"]),
    (["infer"], ["--threshold", "--use_groundness", "--use_grounding", "--ndocs", "--compat", "--mode", "--limit"]),
    (["long-form"], ["--max_depth", "--beam_width", "--ignore_cont", "--use_grounding", "--live"]),
    (["long-form", "--live"], ["--retriever", "--passages", "--passages_embeddings", "--max_depth"]),
    (["baseline"], ["--result_fp", "--top_n", "--prompt_name", "--api_key"]),
    (["train"], ["--use_special_tokens", "--train_file", "--zero_stage", "--original_masking", "--critic"]),
    (["train", "--critic"], ["--data_path", "--use_special_token", "--fsdp", "--model_max_length"]),
    (["label"], ["--aspect", "--dry_run", "--base_url"]),
    (["combine"], ["--input_files", "--output_file_name", "--dev_size"]),
    (["eval"], ["--files", "--metric", "--table", "--task"]),
    (["serve"], ["--port", "--host", "--retriever"]),
    (["quickstart"], []),
]


@pytest.mark.parametrize(("argv", "flags"), HELP_CASES, ids=[" ".join(c[0]) for c in HELP_CASES])
def test_every_command_has_help_with_its_own_flags(argv, flags, capsys):
    if argv == ["quickstart"]:
        quickstart = pytest.importorskip("selfrag.quickstart")
        if not callable(getattr(quickstart, "main", None)):
            pytest.skip("selfrag.quickstart.main(argv) is not written yet")
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: selfrag {argv[0]} ")
    for name in [*flags, "--config"]:
        assert f"{name} " in out or f"{name}\n" in out or f"{name}," in out, name


def test_unknown_or_missing_command_is_exit_status_2(capsys):
    assert main(["inferr", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: selfrag <command> [flags]\n")
    assert "selfrag: error: unknown command 'inferr'; did you mean 'infer'? (commands: index, build-index," in err
    assert main([]) == 2
    assert "selfrag: error: name a command (selfrag --help lists them)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--bogus"])
    assert exit_info.value.code == 2


def test_a_bad_flag_value_is_a_one_line_error_with_status_2(capsys, caplog):
    assert (
        main(["infer", "--model_name", "m", "--input_file", "a.jsonl", "--output_file", "b.json", "--threshold", "2"])
        == 2
    )
    assert "ConfigError: --threshold must lie in [0, 1] (a probability); got 2.0" in caplog.text
    live = ["long-form", "--live", "--model_name", "m", "--input_file", "a.json", "--output_file", "b.json"]
    assert main(live) == 2
    assert "ConfigError: --retriever and --passages are required for live retrieval" in (caplog.text)
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--ndocs", "many"])
    assert exit_info.value.code == 2
    assert "argument --ndocs: invalid int value: 'many'" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "module"), [("serve", "selfrag.server"), ("quickstart", "selfrag.quickstart")])
def test_serve_and_quickstart_dispatch_to_their_module_main(name, module, monkeypatch):
    calls = []
    fake = types.ModuleType(module)
    fake.main = lambda argv: calls.append(argv) or 7
    monkeypatch.setitem(sys.modules, module, fake)
    assert main([name, "--port", "8001"]) == 7
    assert calls == [["--port", "8001"]]


def test_a_delegated_module_missing_from_the_installation_is_a_clear_error(monkeypatch, caplog):
    from selfrag import commands

    monkeypatch.setitem(commands.COMMANDS, "serve", commands.Command("x", commands._delegate("selfrag.no_such")))
    assert main(["serve"]) == 2
    assert "ConfigError: selfrag.no_such is not part of this installation of selfrag" in caplog.text


# ------------------------------------------------------------------------------------------------ config layering


def test_record_paths_follow_the_output_fields(tmp_path):
    @dataclasses.dataclass
    class Out:
        output_file: str = ""
        output_dir: str = ""

    @dataclasses.dataclass
    class Baseline:
        result_fp: str = "r/x.json"

    @dataclasses.dataclass
    class Shards:
        output_dir: str = str(tmp_path / "emb")
        prefix: str = "passages"
        shard_id: int = 3

    assert record_path(Out(output_file="res/a.json", output_dir="d")) == Path("res/a.json.config.yaml")
    assert record_path(Out(output_dir="out/model")) == Path("out/model/config.yaml")
    assert record_path(Out()) is None
    assert record_path(Baseline()) == Path("r/x.json.config.yaml")
    # beside the shards' folder, never in it: retrieval reads the folder back with the glob "emb/*"
    assert record_path(Shards()) == tmp_path / "emb.passages_03.config.yaml"


def popqa_args(model_dir: str, output_file: Path, *extra: str) -> list[str]:
    return [
        "--model_name",
        model_dir,
        "--input_file",
        POPQA,
        "--output_file",
        str(output_file),
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--limit",
        "2",
        "--ndocs",
        "2",
        "--max_new_tokens",
        "4",
        "--threshold",
        "0.2",
        "--use_groundness",
        "--use_utility",
        "--use_seqscore",
        *extra,
    ]


def test_yaml_files_are_layered_under_flags_and_the_resolved_config_is_recorded(tiny_model_dir, tmp_path):
    from selfrag.eval.short_form import ShortFormConfig

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(
        f"model_name: {tiny_model_dir}\ninput_file: {POPQA}\nbackend: hf\ndtype: float32\nlimit: 1\n"
        "ndocs: 1\nmax_new_tokens: 3\nthreshold: 0.2\nw_rel: 2\nuse_utility: true\nmode: always_retrieve\n"
    )
    second.write_text("threshold: 0.4\nw_rel: 1e-1\n")  # yaml reads 1e-1 as a string: converted like the flag
    out = tmp_path / "res" / "out.json"
    argv = ["infer", "--config", str(first), "--config", str(second), "--threshold", "0.6", "--output_file", str(out)]
    assert main(argv) == 0

    record = read_record(Path(str(out) + ".config.yaml"))
    assert list(record) == ["selfrag_version", "command", "config"]
    assert record["selfrag_version"] == selfrag.__version__
    assert record["command"] == ["selfrag", *argv]
    expected = ShortFormConfig(
        model_name=tiny_model_dir,
        input_file=POPQA,
        output_file=str(out),
        backend="hf",
        dtype="float32",
        limit=1,
        ndocs=1,
        max_new_tokens=3,
        threshold=0.6,
        w_rel=0.1,
        use_utility=True,
        mode="always_retrieve",
    )
    assert record["config"] == dataclasses.asdict(expected)
    assert (record["config"]["threshold"], record["config"]["w_rel"], record["config"]["ndocs"]) == (0.6, 0.1, 1)
    assert (record["config"]["w_use"], record["config"]["metric"]) == (0.5, "match")  # resolved by __post_init__
    assert json.loads(out.read_text())["config"] == dataclasses.asdict(expected)  # and the run used it
    # a record is itself a config file: it repeats the run
    again = parse_config(ShortFormConfig, ["--config", str(out) + ".config.yaml"])
    assert again == expected


def test_yaml_values_are_checked_like_flags(tmp_path):
    from selfrag.eval.short_form import ShortFormConfig

    base = "model_name: m\ninput_file: a.jsonl\noutput_file: b.json\n"
    cases = [
        (
            "mode: bogus\n",
            r"c.yaml: 'mode' must be one of default, adaptive_retrieval, no_retrieval, always_retrieve; "
            r"found 'bogus'",
        ),
        ("ndocs: many\n", r"c.yaml: 'ndocs': cannot read 'many'"),
        ("ndocs: [1, 2]\n", r"c.yaml: 'ndocs' takes one value, found \[1, 2\]"),
        ("ndoc: 5\n", r"c.yaml: unknown keys \['ndoc'\]; the keys are the flag names without '--'"),
    ]
    path = tmp_path / "c.yaml"
    for text, message in cases:
        path.write_text(base + text)
        with pytest.raises(ConfigError, match=message):
            parse_config(ShortFormConfig, ["--config", str(path)])
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping of flag names to values, found list"):
        parse_config(ShortFormConfig, ["--config", str(path)])
    with pytest.raises(ConfigError, match="no_such.yaml: cannot read it"):
        parse_config(ShortFormConfig, ["--config", str(tmp_path / "no_such.yaml")])
    path.write_text(base + "use_groundness: false\nmetric: f1\n")
    config = parse_config(ShortFormConfig, ["--config", str(path), "--use_grounding"])
    assert (config.use_groundness, config.metric, config.output_file) == (True, "f1", "b.json")


def test_a_literal_api_key_never_reaches_the_record(tmp_path):
    from selfrag.eval.baseline import BaselineConfig

    out = tmp_path / "b.json"
    argv = [
        "--model_name",
        "gpt-4",
        "--backend",
        "openai",
        "--input_file",
        POPQA,
        "--result_fp",
        str(out),
        "--api_key",
        "sk-secret",
    ]
    with program("selfrag baseline"):
        config = parse_config(BaselineConfig, argv, record=True)
    text = Path(str(out) + ".config.yaml").read_text()
    assert "sk-secret" not in text and config.api_key == "sk-secret"
    record = yaml.safe_load(text)
    assert record["config"]["api_key"] == "<redacted>" and record["command"][-2:] == ["--api_key", "<redacted>"]
    key_file = tmp_path / "key.txt"  # a key file's path is kept
    key_file.write_text("sk-secret\n")
    with program("selfrag baseline"):
        parse_config(BaselineConfig, [*argv[:-1], str(key_file)], record=True)
    assert read_record(Path(str(out) + ".config.yaml"))["config"]["api_key"] == str(key_file)


# ------------------------------------------------------------------------------------------------ end to end


def test_infer_writes_what_run_short_form_writes(tiny_model_dir, tmp_path):
    ours, theirs = tmp_path / "cli" / "out.json", tmp_path / "script" / "out.json"
    assert main(["infer", *popqa_args(tiny_model_dir, ours)]) == 0
    script = load_script("retrieval_lm/run_short_form.py")
    assert run_main(script.main, popqa_args(tiny_model_dir, theirs)) == 0

    a, b = json.loads(ours.read_text()), json.loads(theirs.read_text())
    assert a["config"].pop("output_file") == str(ours) and b["config"].pop("output_file") == str(theirs)
    assert a == b and len(a["preds"]) == 2
    # the script, run through run_main as its __main__ does, writes the record too
    record_a, record_b = (read_record(Path(str(p) + ".config.yaml")) for p in (ours, theirs))
    assert record_a["command"][:2] == ["selfrag", "infer"] and record_a["command"][2:] == popqa_args(
        tiny_model_dir, ours
    )
    assert record_b["command"][1:] == popqa_args(tiny_model_dir, theirs)
    record_a["config"].pop("output_file"), record_b["config"].pop("output_file")
    assert record_a["config"] == record_b["config"] == a["config"]


def test_eval_rescores_a_produced_output_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["infer", *popqa_args(tiny_model_dir, out)]) == 0
    data = json.loads(out.read_text())
    capsys.readouterr()
    assert main(["eval", str(out), "--metric", "match", "f1"]) == 0
    match = sum(metric_fn("match", None)(p, g) for p, g in zip(data["preds"], data["golds"])) / 2
    f1 = sum(metric_fn("f1", None)(p, g) for p, g in zip(data["preds"], data["golds"])) / 2
    assert match == data["metrics"]["match"] and f1 == data["metrics"]["f1"]
    assert capsys.readouterr().out == (
        f"| file | task | items | match | f1 |\n|---|---|---|---|---|\n| {out} | - | 2 | {100 * match:.1f} | "
        f"{100 * f1:.1f} |\n"
    )


def test_eval_prints_the_exact_metrics_of_known_predictions(tmp_path, capsys):
    open_file, arc_file = tmp_path / "open.json", tmp_path / "arc.json"
    open_file.write_text(
        json.dumps(
            {
                "preds": ["Paris is nice", "the answer: Japan", "London"],
                "golds": [["Paris"], ["japan"], ["Berlin"]],
                "config": {"task": None},
            }
        )
    )
    arc_file.write_text(
        json.dumps(
            {
                "preds": ["The answer is B.", "C", "A, because"],
                "golds": [["B"], ["D"], ["A"]],
                "config": {"task": "arc_c"},
            }
        )
    )
    table = tmp_path / "table.md"
    assert main(["eval", str(open_file), str(arc_file), "--output", str(table)]) == 0
    # match: "Paris" in pred 1 only (case-sensitive); exact_match 0; f1: (1/2 + 2/3 + 0) / 3 = 0.3889;
    # ARC: accuracy parses the letters B, C, A against B, D, A -> 2/3; match 2/3; exact_match 0 ("a" is an article,
    # so "A" normalises to ""); f1 (1/2 + 0 + 0) / 3
    expected = (
        "| file | task | items | match | accuracy | exact_match | f1 |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {open_file} | - | 3 | 33.3 | 0.0 | 0.0 | 38.9 |\n"
        f"| {arc_file} | arc_c | 3 | 66.7 | 66.7 | 0.0 | 16.7 |\n"
    )
    assert capsys.readouterr().out == expected
    assert table.read_text() == expected
    record = read_record(Path(str(table) + ".config.yaml"))
    assert record["config"] == {
        "files": [str(open_file), str(arc_file)],
        "metric": ["match", "accuracy", "exact_match", "f1"],
        "task": None,
        "table": False,
        "sweep": None,
        "plot": None,
        "output": str(table),
    }
    assert rescore_markdown([], ["f1"]) == "| file | task | items | f1 |\n|---|---|---|---|\n"


def test_eval_refuses_a_file_that_is_not_a_short_form_output(tmp_path, caplog):
    path = tmp_path / "asqa.json"
    path.write_text(json.dumps({"data": [{"output": "text"}]}))
    assert main(["eval", str(path)]) == 2
    assert f"{path}: needs 'preds' and 'golds' lists of equal length" in caplog.text
    assert main(["eval", "--metric", "f1"]) == 2
    assert "give result files: selfrag eval results/popqa.json" in caplog.text


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny BERT, the retrieval tests' 8-passage TSV corpus and an eval file of three questions."""
    pytest.importorskip("faiss")
    from selfrag.retrieval.testing import CORPUS, build_tiny_bert, write_tsv

    root = tmp_path_factory.mktemp("commands_retrieval")
    titles = ["Hamlet", "Paris", "Kyoto", "Everest", "Curie", "Jaws", "Water", "Moon"]
    passages = [
        {"id": str(10 * (i + 1)), "title": t, "text": line}
        for i, (t, line) in enumerate(zip(titles, CORPUS.splitlines()))
    ]
    data = root / "eval.jsonl"
    items = [
        {"question": "Who wrote Hamlet?", "id": 1},
        {"instruction": "Name the capital of France.", "id": 2},
        {"question": "Is Kyoto in Japan?", "id": 3},
    ]
    data.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return {
        "root": root,
        "model": str(build_tiny_bert(root / "bert")),
        "tsv": str(write_tsv(root / "psgs.tsv", passages)),
        "data": str(data),
    }


def test_index_and_retrieve_match_the_scripts(corpus, tmp_path, capsys):
    emb = tmp_path / "emb"
    for shard in ("0", "1"):
        assert (
            main(
                [
                    "index",
                    "--model_name_or_path",
                    corpus["model"],
                    "--passages",
                    corpus["tsv"],
                    "--output_dir",
                    str(emb),
                    "--num_shards",
                    "2",
                    "--shard_id",
                    shard,
                ]
            )
            == 0
        )
    assert sorted(p.name for p in emb.iterdir() if not p.is_dir()) == [
        "passages_00",
        "passages_00.meta.json",
        "passages_01",
        "passages_01.meta.json",
    ]
    shard_record = read_record(tmp_path / "emb.passages_01.config.yaml")
    assert shard_record["config"]["shard_id"] == 1 and shard_record["command"][:2] == ["selfrag", "index"]

    common = [
        "--model_name_or_path",
        corpus["model"],
        "--passages",
        corpus["tsv"],
        "--passages_embeddings",
        f"{emb}/*",
        "--data",
        corpus["data"],
        "--n_docs",
        "3",
    ]
    capsys.readouterr()
    assert main(["retrieve", *common, "--output_dir", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'cli' / 'eval.jsonl'}\n"
    script = load_script("retrieval_lm/passage_retrieval.py")
    assert script.main([*common, "--output_dir", str(tmp_path / "script")]) == 0
    ours = (tmp_path / "cli" / "eval.jsonl").read_text()
    assert ours == (tmp_path / "script" / "eval.jsonl").read_text()
    written = [json.loads(line) for line in ours.splitlines()]
    assert [w["id"] for w in written] == [1, 2, 3] and [len(w["ctxs"]) for w in written] == [3, 3, 3]
    assert read_record(tmp_path / "cli" / "config.yaml")["config"]["n_docs"] == 3

    capsys.readouterr()
    assert main(["retrieve", *common[:6], "--query", "Who wrote Hamlet?", "--n_docs", "2"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["id"] == written[0]["ctxs"][0]["id"]


def test_build_index_saves_an_index_that_retrieve_loads(corpus, tmp_path, capsys):
    emb = tmp_path / "emb"
    assert (
        main(["index", "--model_name_or_path", corpus["model"], "--passages", corpus["tsv"], "--output_dir", str(emb)])
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "build-index",
                "--passages_embeddings",
                f"{emb}/*",
                "--index_factory",
                "SQ8",
                "--index_dir",
                str(tmp_path / "index"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"index_dir": str((tmp_path / "index").resolve()), "factory": "SQ8", "vectors": 8, "dim": 32}
    assert {p.name for p in (tmp_path / "index").iterdir()} == {"index.faiss", "index_ids.npy", "index_config.json"}
    assert read_record(tmp_path / "index.index.config.yaml")["config"]["index_factory"] == "SQ8"
    query = [
        "--model_name_or_path",
        corpus["model"],
        "--passages",
        corpus["tsv"],
        "--index_dir",
        str(tmp_path / "index"),
        "--save_or_load_index",
        "--query",
        "Who wrote Hamlet?",
        "--n_docs",
        "2",
    ]
    assert main(["retrieve", *query]) == 0
    ours = capsys.readouterr().out
    assert load_script("retrieval_lm/passage_retrieval.py").main(query) == 0  # the script on the same saved index
    assert ours == capsys.readouterr().out and [json.loads(line)["rank"] for line in ours.splitlines()] == [1, 2]


def test_eval_table_prints_table_2_with_the_chosen_metric(tmp_path, capsys):
    def result(model, input_file, task, mean, **extra):
        config = {
            "model_name": model,
            "input_file": input_file,
            "task": task,
            "mode": "adaptive_retrieval",
            "threshold": 0.2,
            "compat": "none",
        }
        return {
            "preds": [],
            "all_results": [],
            "retrieve": [],
            "metric": "match",
            "metric_mean": mean,
            "metrics": {"match": mean, "accuracy": mean / 2},
            "retrieval_frequency": 0.5,
            "config": config,
        }

    (tmp_path / "popqa.json").write_text(
        json.dumps(result("selfrag/selfrag_llama2_7b", "popqa_longtail_w_gs.jsonl", None, 0.549))
    )
    (tmp_path / "arc.json").write_text(json.dumps(result("selfrag/selfrag_llama2_7b", "arc.jsonl", "arc_c", 0.672)))
    head = "| System | PopQA | TQA | Pub | ARC |\n|---|---|---|---|---|\n| *Self-RAG* | | | | |\n"
    for flags, row in (
        ([], "| Self-RAG 7B | 54.9 | – | – | 67.2 |"),
        (["--metric", "accuracy"], "| Self-RAG 7B | 27.5 | – | – | 33.6 |"),
    ):
        assert main(["eval", str(tmp_path), "--table", *flags]) == 0
        assert capsys.readouterr().out == head + row + "\n"


def test_combine_and_label_dry_run_match_the_scripts(tmp_path, capsys):
    question = "Who painted the Mona Lisa?"
    evidence = {"title": "Mona Lisa", "text": "The Mona Lisa is a portrait by Leonardo da Vinci."}
    labelled = {
        "retrieval": [
            {"aspect": "retrieval", "instruction": question, "label": "[Retrieval]"},
            {"aspect": "retrieval", "instruction": "Say hi.", "label": "[No Retrieval]"},
        ],
        "relevance": [{"aspect": "relevance", "instruction": question, "evidence": evidence, "label": "[Relevant]"}],
    }
    paths = []
    for aspect, items in labelled.items():
        paths.append(str(tmp_path / f"{aspect}.jsonl"))
        Path(paths[-1]).write_text("".join(json.dumps(i) + "\n" for i in items))
    combine_script = load_script("data_creation/combine_critic_data.py")
    outputs = {}
    for name, run in (("cli", lambda a: main(["combine", *a])), ("script", combine_script.main)):
        prefix = str(tmp_path / name / "critic")
        assert run(["--input_files", *paths, "--output_file_name", prefix, "--dev_size", "1", "--seed", "1"]) == 0
        outputs[name] = [Path(prefix + s).read_text() for s in ("_train.json", "_dev.json")], capsys.readouterr().out
    assert outputs["cli"] == outputs["script"] and json.loads(outputs["cli"][1])["train"] == 2
    assert read_record(tmp_path / "cli" / "critic.config.yaml")["config"]["dev_size"] == 1

    label_script = load_script("data_creation/critic_label.py")
    argv = [
        "--aspect",
        "relevance",
        "--input_file",
        paths[1],
        "--output_file",
        str(tmp_path / "labels.jsonl"),
        "--dry_run",
        "--base_url",
        "http://127.0.0.1:9/v1",
    ]  # a dry run sends nothing
    assert main(["label", *argv]) == 0
    ours = capsys.readouterr().out
    assert label_script.main(argv) == 0
    assert ours == capsys.readouterr().out and json.loads(ours)["dry_run"] is True


def test_long_form_writes_what_run_long_form_static_writes(tiny_model_dir, tmp_path):
    def args(out):
        return [
            "--model_name",
            tiny_model_dir,
            "--input_file",
            str(ROOT / "eval_data" / "asqa_eval_gtr_top100.json"),
            "--output_file",
            str(out),
            "--task",
            "asqa",
            "--backend",
            "hf",
            "--dtype",
            "float32",
            "--limit",
            "1",
            "--ndocs",
            "2",
            "--max_new_tokens",
            "3",
            "--max_depth",
            "2",
            "--beam_width",
            "2",
            "--threshold",
            "0.2",
            "--use_grounding",
            "--use_utility",
            "--use_seqscore",
        ]

    ours, theirs = tmp_path / "cli.json", tmp_path / "script.json"
    assert main(["long-form", *args(ours)]) == 0
    assert load_script("retrieval_lm/run_long_form_static.py").main(args(theirs)) == 0
    assert ours.read_text() == theirs.read_text()
    assert len(json.loads(ours.read_text())["data"]) == 1
    assert read_record(Path(f"{ours}.config.yaml"))["config"]["max_depth"] == 2
