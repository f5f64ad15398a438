"""run_short_form.py end to end on the tiny model: outputs, exact prompts and scores, resume, bad inputs."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest
from backends import FailingBackend

from selfrag.backends.base import GenParams
from selfrag.errors import BackendError, ConfigError
from selfrag.eval.short_form import ShortFormConfig, run_short_form
from selfrag.prompts import format_evidence, format_prompt
from selfrag.scoring import Weights, score_generation
from selfrag.tokens import ReflectionVocab

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_short_form", ROOT / "retrieval_lm" / "run_short_form.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

ITEMS = [
    {
        "question": "Who wrote Hamlet?",
        "answers": ["Shakespeare"],
        "ctxs": [
            {"id": "1", "title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare.", "score": "1.5"},
            {"id": "2", "title": "Paris", "text": "Paris is the capital of France.", "score": "1.1"},
        ],
    },
    {
        "question": "What is the capital of France?",
        "answer": "Paris",
        "ctxs": [{"id": "2", "title": "Paris", "text": "Paris is the capital of France.", "score": "1.3"}],
    },
    {
        "question": "In what country is Kyoto?",
        "answers": ["Japan"],
        "ctxs": [
            {"id": "3", "title": "Kyoto", "text": "Kyoto is a city in Japan.", "score": "1.2"},
            {"id": "4", "title": "Osaka", "text": "Osaka is a city in Japan.", "score": "1.0"},
        ],
    },
]


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def base_args(model_dir, input_file, output_file, *extra):
    return [
        "--model_name",
        model_dir,
        "--input_file",
        input_file,
        "--output_file",
        output_file,
        "--backend",
        "hf",
        "--dtype",
        "float32",
        "--max_new_tokens",
        "6",
        "--ndocs",
        "2",
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
        "--output_file",
        "--task",
        "--mode",
        "--threshold",
        "--ndocs",
        "--max_new_tokens",
        "--use_groundness",
        "--use_grounding",
        "--use_utility",
        "--use_seqscore",
        "--w_rel",
        "--w_sup",
        "--w_use",
        "--metric",
        "--dtype",
        "--world_size",
        "--download_dir",
        "--backend",
        "--batch_size",
        "--compat",
    ):
        assert flag in text


def test_always_retrieve_output_matches_direct_scoring(tiny_model_dir, hf_backend, tmp_path):
    """Every stored score equals the score of the exact prompt `prompt + [Retrieval]<paragraph>...` on the model."""
    out_file = tmp_path / "out.json"
    args = base_args(
        tiny_model_dir,
        write_jsonl(tmp_path / "in.jsonl", ITEMS),
        str(out_file),
        "--mode",
        "always_retrieve",
        "--use_groundness",
        "--use_utility",
        "--use_seqscore",
        "--batch_size",
        "2",
    )
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert set(out) >= {
        "preds",
        "prompts",
        "metric_results",
        "all_results",
        "golds",
        "metric",
        "metric_mean",
        "scores",
        "retrieve",
        "retrieval_probs",
        "retrieval_frequency",
        "metrics",
        "config",
    }
    assert out["prompts"][0] == "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"
    assert out["retrieve"] == [True, True, True] and out["retrieval_frequency"] == 1.0
    assert out["golds"] == [["Shakespeare"], ["Paris"], ["Japan"]]
    assert len(out["all_results"][1]) == 1  # the second item has one passage (< ndocs): it uses what it has

    vocab = ReflectionVocab.from_tokenizer(hf_backend.tokenizer)
    weights = Weights(w_use=0.5, use_groundness=True, use_utility=True, use_seqscore=True)
    for item, results in zip(ITEMS, out["all_results"]):
        prompts = [format_prompt(item["question"]) + format_evidence(ctx) for ctx in item["ctxs"][:2]]
        gens = hf_backend.generate(prompts, GenParams(max_tokens=6, watch_token_ids=vocab.all_ids))
        for i, gen in enumerate(gens):
            assert results[f"retrieval_{i}"]["pred"] == gen.text
            assert results[f"retrieval_{i}"]["score"] == pytest.approx(
                score_generation(gen, vocab, weights).total, abs=1e-5
            )
    assert out["metric"] == "match"
    assert out["metric_mean"] == sum(out["metric_results"]) / 3
    assert not (tmp_path / "out.json.partial.jsonl").exists()
    assert json.loads((tmp_path / "out.json.config.json").read_text())["w_use"] == 0.5


@pytest.mark.parametrize("mode", ["adaptive_retrieval", "no_retrieval", "default"])
def test_modes_run_and_report_retrieval(tiny_model_dir, tmp_path, mode):
    out_file = tmp_path / "out.json"
    extra = ["--mode", mode, "--threshold", "0.0"] if mode != "no_retrieval" else ["--mode", mode]
    assert script.main(base_args(tiny_model_dir, write_jsonl(tmp_path / "in.jsonl", ITEMS), str(out_file), *extra)) == 0
    out = json.loads(out_file.read_text())
    if mode == "no_retrieval":
        assert out["retrieve"] == [False] * 3 and out["retrieval_probs"] == [None] * 3
    else:  # threshold 0: any positive p(Retrieval) retrieves
        assert out["retrieve"] == [True] * 3
        assert all(0.0 < p < 1.0 for p in out["retrieval_probs"])
    assert out["retrieval_frequency"] == sum(out["retrieve"]) / 3


def test_threshold_one_never_retrieves(tiny_model_dir, tmp_path):
    out_file = tmp_path / "out.json"
    args = base_args(tiny_model_dir, write_jsonl(tmp_path / "in.jsonl", ITEMS), str(out_file), "--threshold", "1.0")
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert out["retrieve"] == [False] * 3
    assert list(out["all_results"][0]) == ["no_retrieval"]


def test_compat_original_defaults_w_use_to_one(tiny_model_dir, tmp_path):
    config = ShortFormConfig(model_name=tiny_model_dir, input_file="x", output_file="y", compat="original")
    assert config.w_use == 1.0
    assert ShortFormConfig(model_name=tiny_model_dir, input_file="x", output_file="y").w_use == 0.5


def test_resume_after_interruption_loses_and_repeats_nothing(tiny_model_dir, hf_backend, tmp_path):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)

    def config(out):
        return ShortFormConfig(
            model_name=tiny_model_dir,
            input_file=input_file,
            output_file=str(out),
            backend="hf",
            max_new_tokens=6,
            ndocs=2,
            threshold=0.5,
            batch_size=1,
            use_utility=True,
        )

    reference = run_short_form(config(tmp_path / "ref.json"), backend=hf_backend)

    # Adaptive mode makes 2 calls per batch of 1 item: failing on call 3 dies inside the second item.
    with pytest.raises(KeyboardInterrupt):
        run_short_form(config(tmp_path / "out.json"), backend=FailingBackend(hf_backend, fail_on_call=3))
    partial = (tmp_path / "out.json.partial.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in partial[1:]] == [0]

    resumed_backend = FailingBackend(hf_backend, fail_on_call=-1)
    resumed = run_short_form(config(tmp_path / "out.json"), backend=resumed_backend)
    assert resumed_backend.calls == 4  # only items 1 and 2 were generated again
    for key in ("preds", "prompts", "all_results", "retrieve", "retrieval_probs", "metric_results"):
        assert resumed[key] == reference[key]


def test_resume_refuses_other_settings(tiny_model_dir, tmp_path):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.json"
    (tmp_path / "out.json.partial.jsonl").write_text(json.dumps({"fingerprint": {"threshold": 0.9}}) + "\n")
    with pytest.raises(ConfigError, match="other settings"):
        run_short_form(ShortFormConfig(model_name=tiny_model_dir, input_file=input_file, output_file=str(out)))


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        ([{"question": "q", "answers": ["a"]}], [], r"in\.jsonl:1: missing field 'ctxs'"),
        ([ITEMS[0], {"question": "q", "answers": ["a"], "ctxs": []}], [], r"in\.jsonl:2: 'ctxs' is empty"),
        ([ITEMS[0], {"answers": ["a"], "ctxs": ITEMS[0]["ctxs"]}], [], r"in\.jsonl:2: missing field 'question'"),
        ([{"question": "q", "ctxs": ITEMS[0]["ctxs"]}], [], r"in\.jsonl:1: missing field 'answers'"),
        (
            [{"question": "q", "answers": ["a"], "ctxs": [{"title": "t"}]}],
            [],
            r"ctxs\[0\] must be an object with a string 'text'",
        ),
        (
            [{"question": "q", "answerKey": "A", "ctxs": ITEMS[0]["ctxs"]}],
            ["--task", "arc_c"],
            r"in\.jsonl:1: field 'choices'",
        ),
        (
            [
                {
                    "question": "q",
                    "answerKey": "E",
                    "choices": {"text": ["x", "y"], "label": ["A", "B"]},
                    "ctxs": ITEMS[0]["ctxs"],
                }
            ],
            ["--task", "arc_c"],
            r"in\.jsonl:1: answerKey 'E' is not among the choice labels",
        ),
    ],
)
def test_bad_input_names_file_line_and_field(tiny_model_dir, tmp_path, caplog, lines, extra, message):
    args = base_args(tiny_model_dir, write_jsonl(tmp_path / "in.jsonl", lines), str(tmp_path / "o.json"), *extra)
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, args) == 2
    assert re.search(message, caplog.text), caplog.text


def test_invalid_json_line_is_reported_with_its_line(tiny_model_dir, tmp_path, caplog):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(ITEMS[0]) + "\n{not json\n")
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, base_args(tiny_model_dir, str(path), str(tmp_path / "o.json"))) == 2
    assert "in.jsonl:2: not valid JSON" in caplog.text


def test_model_without_reflection_tokens_is_refused(tmp_path, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from selfrag.testing import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "m")
    # Replace the tokenizer by one without the reflection tokens.
    tok = Tokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>").save_pretrained(model_dir)
    assert AutoTokenizer.from_pretrained(model_dir).unk_token == "<unk>"
    args = base_args(str(model_dir), write_jsonl(tmp_path / "in.jsonl", ITEMS), str(tmp_path / "o.json"))
    with caplog.at_level(logging.ERROR):
        assert script.run_main(script.main, args) == 2
    assert "VocabError" in caplog.text and "[Retrieval]" in caplog.text


def test_unknown_backend_and_bad_values_are_config_errors(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="--threshold must lie in"):
        ShortFormConfig(model_name="m", input_file="i", output_file="o", threshold=1.5)
    with pytest.raises(ConfigError, match="--ndocs must be at least 1"):
        ShortFormConfig(model_name="m", input_file="i", output_file="o", ndocs=0)
    from selfrag.backends import load_backend

    with pytest.raises(BackendError, match="unknown backend"):
        load_backend("tgi", tiny_model_dir)


def test_yaml_config_is_layered_under_flags(tiny_model_dir, tmp_path):
    from selfrag.cli import parse_config

    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(
        f"model_name: {tiny_model_dir}\ninput_file: a.jsonl\noutput_file: b.json\nndocs: 5\nthreshold: 0.2\n"
    )
    config = parse_config(ShortFormConfig, ["--config", str(yaml_file), "--ndocs", "3"])
    assert (config.ndocs, config.threshold, config.input_file) == (3, 0.2, "a.jsonl")
    yaml_file.write_text("ndoc: 5\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['ndoc'\]"):
        parse_config(ShortFormConfig, ["--config", str(yaml_file)])


@pytest.mark.parametrize(
    ("file", "task", "n_items"),
    [
        ("popqa_longtail_w_gs.jsonl", None, 15),
        ("triviaqa_test_w_gs.jsonl", None, 12),
        ("health_claims_processed.jsonl", "fever", 12),
        ("arc_challenge_processed.jsonl", "arc_c", 12),
    ],
)
def test_shipped_eval_samples_end_to_end(tiny_model_dir, tmp_path, file, task, n_items):
    out_file = tmp_path / "out.json"
    extra = ["--task", task] if task else []
    args = base_args(
        tiny_model_dir,
        str(ROOT / "eval_data" / file),
        str(out_file),
        "--threshold",
        "0.2",
        "--use_groundness",
        "--use_utility",
        "--use_seqscore",
        "--max_new_tokens",
        "3",
        *extra,
    )
    assert script.main(args) == 0
    out = json.loads(out_file.read_text())
    assert len(out["preds"]) == len(out["metric_results"]) == len(out["all_results"]) == n_items
    assert out["metric_mean"] == pytest.approx(sum(out["metric_results"]) / n_items)
    items = [json.loads(line) for line in (ROOT / "eval_data" / file).read_text().splitlines()]
    if task == "arc_c":  # digit answer keys are mapped to the letters the prompt shows
        assert {g[0] for g in out["golds"]} <= set("ABCD")
        assert out["prompts"][0].endswith(f"\nD: {items[0]['choices']['text'][3]}\n\n### Response:\n")
    elif task == "fever":
        assert out["prompts"][0].startswith("### Instruction:\nIs the following statement correct or not?")
        assert "\n\n## Input:\n\n" + items[0]["question"] in out["prompts"][0]
    else:
        assert out["prompts"][0] == f"### Instruction:\n{items[0]['question']}\n\n### Response:\n"
    for results, retrieve in zip(out["all_results"], out["retrieve"]):
        assert any(k.startswith("retrieval_") for k in results) == retrieve
