"""One decoding config: declared once, composed by every command, both IsSup spellings everywhere, the resume
fingerprint derived from the fields."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from selfrag.cli import fingerprint, parse_config
from selfrag.decoding.config import DecodingConfig
from selfrag.decoding.long_form import LongFormSettings
from selfrag.decoding.short_form import ShortFormSettings
from selfrag.errors import ConfigError
from selfrag.eval.long_form import LongFormConfig
from selfrag.eval.short_form import ShortFormConfig
from selfrag.server.config import ServerConfig

DECODING = {f.name for f in dataclasses.fields(DecodingConfig)}
REQUIRED = {
    ShortFormConfig: ["--model_name", "m", "--input_file", "in.jsonl", "--output_file", "out.json"],
    LongFormConfig: ["--model_name", "m", "--input_file", "in.json", "--output_file", "out.json"],
    ServerConfig: ["--model_name", "m"],
}


@pytest.mark.parametrize("cls", list(REQUIRED))
def test_every_command_has_every_decoding_flag_with_its_help(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert DECODING <= set(fields)
    for f in dataclasses.fields(DecodingConfig):
        assert fields[f.name].metadata["help"] == f.metadata["help"]


@pytest.mark.parametrize("cls", list(REQUIRED))
@pytest.mark.parametrize("spelling", ["use_groundness", "use_grounding"])
def test_both_issup_spellings_work_as_flags_and_yaml_keys(cls, spelling, tmp_path):
    assert parse_config(cls, [*REQUIRED[cls], f"--{spelling}"]).use_groundness is True
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({spelling: True, "threshold": 0.3, "beam_width": 3}))
    config = parse_config(cls, [*REQUIRED[cls], "--config", str(path)])
    assert (config.use_groundness, config.threshold, config.beam_width) == (True, 0.3, 3)


def test_a_yaml_written_for_long_form_runs_short_form(tmp_path):
    path = tmp_path / "asqa.yaml"
    path.write_text(yaml.safe_dump({"use_grounding": True, "use_utility": True, "ndocs": 5, "max_depth": 4}))
    short = parse_config(ShortFormConfig, [*REQUIRED[ShortFormConfig], "--config", str(path)])
    long = parse_config(LongFormConfig, [*REQUIRED[LongFormConfig], "--config", str(path)])
    assert short.decoding() == long.decoding()
    assert short.settings().weights == long.settings().weights


def test_a_store_false_flag_is_not_a_yaml_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"no_use_groundness": True}))
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_config(ShortFormConfig, [*REQUIRED[ShortFormConfig], "--config", str(path)])


def test_algorithm_defaults_are_the_configs():
    assert DecodingConfig().short_settings() == ShortFormSettings()
    assert DecodingConfig().long_settings() == LongFormSettings()


def test_server_defaults_differ_only_where_declared():
    server, base = ServerConfig(model_name="m").decoding(), DecodingConfig()
    changed = {f for f in DECODING if getattr(server, f) != getattr(base, f)}
    assert changed == {"ndocs", "max_new_tokens", "max_depth"}
    assert (server.ndocs, server.max_new_tokens, server.max_depth) == (5, 100, 3)


def test_fingerprint_holds_every_field_that_shapes_results_and_no_run_only_one():
    config = ShortFormConfig(model_name="m", input_file="in.jsonl", output_file="out.json", backend="hf", dtype="bf16")
    print_ = fingerprint(config)
    assert DECODING <= set(print_)
    assert {"model_name", "input_file", "task", "limit", "backend", "dtype", "use_chat_template"} <= set(print_)
    run_only = {"output_file", "batch_size", "max_batch_size", "seed", "metric", "trace_dir", "device", "world_size"}
    assert not run_only & set(print_)
    assert print_["mode"] == "adaptive_retrieval"  # "default" resolved
    other = dataclasses.replace(config, dtype="float32")
    assert fingerprint(other) != print_
    assert fingerprint(dataclasses.replace(config, batch_size=3, output_file="x.json")) == print_


def test_a_new_knob_joins_the_fingerprint_unlisted():
    @dataclasses.dataclass
    class Extended(ShortFormConfig):
        new_knob: float = 0.5

    config = Extended(model_name="m", input_file="in.jsonl", output_file="out.json")
    assert fingerprint(config)["new_knob"] == 0.5


def test_bad_values_are_refused_by_every_command():
    for cls, argv in REQUIRED.items():
        with pytest.raises(ConfigError, match="--max_depth"):
            parse_config(cls, [*argv, "--max_depth", "1"])
        with pytest.raises(ConfigError, match="threshold"):
            parse_config(cls, [*argv, "--threshold", "1.5"])


@pytest.mark.parametrize("spelling", ["use_groundness", "use_grounding"])
def test_a_request_may_set_the_scoring_switches_under_both_spellings(spelling):
    from types import SimpleNamespace

    from selfrag.server.protocol import RequestError, parse_request

    engine = SimpleNamespace(model_id="m", defaults=ServerConfig(model_name="m").defaults(), search=None)
    body = {"prompt": "q", "selfrag": {spelling: True, "use_utility": True, "w_use": 2, "mode": "no_retrieval"}}
    options, _ = parse_request(body, False, engine)
    assert options.weights == dataclasses.replace(
        engine.defaults.weights, use_groundness=True, use_utility=True, w_use=2.0
    )
    with pytest.raises(RequestError, match="must be true or false"):
        parse_request({"prompt": "q", "selfrag": {spelling: "yes", "mode": "no_retrieval"}}, False, engine)
