"""Critic inference (selfrag/data_creation/critic_infer.py, data_creation/run_reward_vllm.py).

ModelCritic: the exact prompts it sends (the critic's training prompt), its batching, the parsing of generated
strings and the count of rejects, on a recording backend and on a real tiny HF model. JudgeCritic: a real HTTP
server (tests/openai_server.py), duplicate requests sent once, a rerun paid from the cache. run_reward_vllm.py:
outputs, rejects, --split train accuracy, resume after a crash without repeating a prompt, the original's flags.
Run: `python -m pytest -q tests/test_critic_infer.py`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from backends import FailingBackend

from selfrag.backends.base import Generation
from selfrag.backends.scripted import ScriptedBackend
from selfrag.data_creation.critic_infer import (
    Critic,
    CriticPrediction,
    JudgeCritic,
    ModelCritic,
    RewardConfig,
    clean_critic_text,
    critic_prompt,
    label_file,
)
from selfrag.data_creation.critic_prompts import RELEVANCE, RETRIEVAL, critic_record
from selfrag.data_creation.labels import parse_label
from selfrag.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

ITEMS = [
    {"instruction": "What is the capital of France?", "evidence": {"title": "Paris", "text": "Paris is in France."}},
    {"instruction": "Who wrote Hamlet?", "evidence": "Kyoto\nKyoto is a city in Japan."},
    {"instruction": "Name a prime.", "input": "Between 10 and 14.", "evidence": "Primes\n13 is a prime."},
]
PROMPT_0 = (
    f"### Instruction:\n{RELEVANCE.instruction}\n\n### Input:\nTask instruction: What is the capital of France?"
    "\n\nEvidence: Paris\nParis is in France.\n\n### Response:"
)


def generation(text: str) -> Generation:
    return Generation(text=text, token_ids=[0] * max(len(text), 1), cumulative_logprob=0.0)


def scripted(answers: dict[str, str]) -> ScriptedBackend:
    """Answers a prompt with the first `answers` value whose key occurs in it."""
    return ScriptedBackend(lambda prompt: generation(next(v for k, v in answers.items() if k in prompt)))


def test_the_protocol_is_one_batched_method():
    assert isinstance(ModelCritic(scripted({})), Critic)
    assert isinstance(JudgeCritic(None, None), Critic)

    class Oracle:
        def predict(self, aspect: str, items: list[dict]) -> list[str | None]:
            return ["[Relevant]"] * len(items)

    assert isinstance(Oracle(), Critic)


def test_exact_prompts_and_batches():
    backend = scripted({"France": "[Relevant]", "Hamlet": "[Irrelevant]", "prime": "[Relevant]"})
    critic = ModelCritic(backend, batch_size=2)
    assert critic.predict("relevance", ITEMS) == ["[Relevant]", "[Irrelevant]", "[Relevant]"]
    assert backend.calls == [[PROMPT_0, critic_prompt("relevance", ITEMS[1])], [critic_prompt("relevance", ITEMS[2])]]
    assert critic_prompt("relevance", ITEMS[2]).endswith(
        "### Input:\nTask instruction: Name a prime. Between 10 and 14.\n\nEvidence: Primes\n13 is a prime."
        "\n\n### Response:"
    )
    # The prompt is the one the critic is trained on: the critic record's instruction and input.
    record = critic_record("relevance", ITEMS[0], "[Relevant]")
    assert PROMPT_0 == f"### Instruction:\n{record['instruction']}\n\n### Input:\n{record['input']}\n\n### Response:"
    assert critic.params.max_tokens == 15 and critic.params.temperature == 0.0
    assert critic.stats == {"relevance": {"labelled": 3}} and critic.rejects == []


def test_parsing_of_generated_strings_and_rejects_counted():
    answers = {
        "France": "[Relevant]<pad><pad>",  # padding the original strips
        "Hamlet": "Irrelevant</s>",
        "prime": "[Relevant]\n\nExplanation: 13 is prime.",
        "Paris?": " [Irrelevant] the passage is off topic",
        "Moon": "[Utility:5]",  # a label of another aspect
        "Kyoto": "",
        "Everest": "Relevantly so",
    }
    items = ITEMS + [
        {"instruction": f"Where is {word}", "evidence": "E\nx"} for word in ("Paris?", "Moon", "Kyoto", "Everest")
    ]
    critic = ModelCritic(scripted(answers), batch_size=4)
    preds = critic.predict_raw("relevance", items)
    assert [p.label for p in preds] == ["[Relevant]", "[Irrelevant]", "[Relevant]", "[Irrelevant]", None, None, None]
    assert preds[0] == CriticPrediction("[Relevant]<pad><pad>", "[Relevant]")
    assert clean_critic_text("[Relevant]\n\nExplanation: 13 is prime.") == "[Relevant]"
    assert critic.stats == {"relevance": {"labelled": 4, "rejected": 3}}
    assert critic.rejects == [
        {
            "aspect": "relevance",
            "raw_output": "[Utility:5]",
            "reason": "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: '[Utility:5]'",
        },
        {"aspect": "relevance", "raw_output": "", "reason": "empty reply"},
        {
            "aspect": "relevance",
            "raw_output": "Relevantly so",
            "reason": "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: "
            "'Relevantly so'",
        },
    ]


def test_real_hf_model_answers_are_parsed_as_generated(hf_backend):
    """The tiny random Llama through HFBackend: each answer is the backend's greedy text, parsed by parse_label."""
    critic = ModelCritic(hf_backend, max_new_tokens=6, batch_size=2)
    preds = critic.predict_raw("retrieval", ITEMS)
    direct = hf_backend.generate([critic_prompt("retrieval", item) for item in ITEMS], critic.params)
    assert [p.raw for p in preds] == [g.text for g in direct]
    assert [p.label for p in preds] == [parse_label("retrieval", clean_critic_text(g.text)).label for g in direct]
    counts = critic.stats["retrieval"]
    assert counts["labelled"] + counts["rejected"] == 3 and len(critic.rejects) == counts["rejected"]
    assert all(p.label in (None, *RETRIEVAL.labels) for p in preds)


# ------------------------------------------------------------------------------------------------ JudgeCritic


def test_judge_critic_against_a_real_server_sends_each_request_once(tmp_path):
    pytest.importorskip("openai")
    from openai_server import JudgeServer

    from selfrag.data_creation.judge import JudgeCache, JudgeClient

    def reply(content: str) -> str:
        return "[Relevant]\nExplanation: yes." if "France" in content else "Irrelevant"

    items = [ITEMS[0], ITEMS[1], dict(ITEMS[0]), ITEMS[2]]  # the first request twice
    with JudgeServer(reply, always_fail=("prime", 500)) as server:
        client = JudgeClient("judge", base_url=server.base_url, api_key="k", max_retries=1, retry_base_delay=0.01)
        cache = JudgeCache(tmp_path / "cache.sqlite")
        critic = JudgeCritic(client, cache, model="judge", concurrency=2)
        assert critic.predict("relevance", items) == ["[Relevant]", "[Irrelevant]", "[Relevant]", None]
        assert sum("France" in r["body"]["messages"][0]["content"] for r in server.requests) == 1
        assert critic.stats == {"relevance": {"labelled": 3, "rejected": 1}}
        assert critic.rejects[0]["reason"].startswith("request failed:")
        assert critic.usage["requests_paid"] == 2
        sent = len(server.requests)
        again = JudgeCritic(None, cache, model="judge")  # no client: every answered request is in the cache
        assert again.predict("relevance", items[:3]) == ["[Relevant]", "[Irrelevant]", "[Relevant]"]
        assert len(server.requests) == sent and again.usage["requests_paid"] == 0
        cache.close()


def test_judge_critic_stops_at_a_refused_key(tmp_path):
    pytest.importorskip("openai")
    from openai_server import JudgeServer

    from selfrag.data_creation.judge import JudgeCache, judge_client
    from selfrag.errors import AccessError

    with JudgeServer(lambda content: "[Relevant]", api_key="sk-right-key-000") as server:
        config = RewardConfig(
            input_file="unused.jsonl",
            result_fp="unused.json",
            task="relevance",
            judge_model="judge",
            base_url=server.base_url,
            api_key="sk-wrong-key-111",
        )
        cache = JudgeCache(tmp_path / "cache.sqlite")
        critic = JudgeCritic(judge_client("judge", config, "--judge_model"), cache, model="judge", concurrency=4)
        with pytest.raises(
            AccessError, match=r"refused the request for 'judge': AuthenticationError 401: the API key was rejected"
        ):
            critic.predict("relevance", [ITEMS[0], ITEMS[1], ITEMS[2]])
        assert len(server.requests) == 1 and len(cache) == 0
        cache.close()


# ---------------------------------------------------------------------------------------- run_reward_vllm.py


def load_script():
    spec = importlib.util.spec_from_file_location("run_reward_vllm", ROOT / "data_creation" / "run_reward_vllm.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


ANSWERS = {"France": "[Relevant]", "Hamlet": "[Irrelevant]", "prime": "no idea"}


def test_label_file_outputs_rejects_and_stats(tmp_path):
    config = RewardConfig(
        model_name="critic", input_file=write_jsonl(tmp_path / "in.jsonl", ITEMS), result_fp=str(tmp_path / "o.json"),
        task="relevance", batch_size=2,
    )  # fmt: skip
    summary = label_file(config, backend=scripted(ANSWERS))
    assert summary == {
        "task": "relevance",
        "items": 3,
        "labelled": 2,
        "rejected": 1,
        "labels": {"[Irrelevant]": 1, "[Relevant]": 1, "null": 1},
    }
    out = json.loads((tmp_path / "o.json").read_text())  # a .json result_fp is a list, as the original's
    assert out == [
        {**ITEMS[0], "pred": "[Relevant]", "raw_output": "[Relevant]"},
        {**ITEMS[1], "pred": "[Irrelevant]", "raw_output": "[Irrelevant]"},
        {**ITEMS[2], "pred": None, "raw_output": "no idea"},
    ]
    reason = "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: 'no idea'"
    assert read_jsonl(tmp_path / "o.json.rejects.jsonl") == [{**ITEMS[2], "raw_output": "no idea", "reason": reason}]
    assert json.loads((tmp_path / "o.json.stats.json").read_text()) == summary
    assert not (tmp_path / "o.json.partial.jsonl").exists()


def test_resume_after_a_crash_repeats_no_prompt(tmp_path):
    items = [{"instruction": f"Question {i} about France", "evidence": "E\nx"} for i in range(5)]
    config = RewardConfig(
        model_name="critic", input_file=write_jsonl(tmp_path / "in.jsonl", items), result_fp=str(tmp_path / "o.jsonl"),
        task="relevance", batch_size=2,
    )  # fmt: skip
    first = FailingBackend(scripted(ANSWERS), fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        label_file(config, backend=first)
    assert len(read_jsonl(tmp_path / "o.jsonl.partial.jsonl")) == 1 + 2  # fingerprint + the first batch
    second = scripted(ANSWERS)
    label_file(config, backend=second)
    assert [len(call) for call in second.calls] == [2, 1]  # only items 2..4
    assert [r["pred"] for r in read_jsonl(tmp_path / "o.jsonl")] == ["[Relevant]"] * 5


def test_split_train_scores_the_critic_on_critic_records(tmp_path):
    records = [
        critic_record("relevance", ITEMS[0], "[Relevant]"),
        critic_record("relevance", ITEMS[1], "[Relevant]"),  # the critic will say [Irrelevant]
        critic_record("utility", {"instruction": "Hi", "output": "Hello"}, "[Utility:5]"),  # another task
    ]
    (tmp_path / "dev.json").write_text(json.dumps(records))
    config = RewardConfig(
        model_name="critic", input_file=str(tmp_path / "dev.json"), result_fp=str(tmp_path / "o.jsonl"),
        task="relevance", split="train",
    )  # fmt: skip
    backend = scripted(ANSWERS)
    summary = label_file(config, backend=backend)
    assert summary["accuracy"] == 0.5 and summary["items"] == 2
    assert backend.calls == [[PROMPT_0, critic_prompt("relevance", ITEMS[1])]]
    assert [r["correct"] for r in read_jsonl(tmp_path / "o.jsonl")] == [1.0, 0.0]


def test_script_with_the_original_flags_on_a_tiny_hf_model(tmp_path, tiny_model_dir):
    script = load_script()
    argv = [
        "--model_name", tiny_model_dir, "--backend", "hf", "--dtype", "float32", "--input_file",
        write_jsonl(tmp_path / "in.jsonl", ITEMS), "--task", "retrieval", "--inst_mode", "retrieval_instruction",
        "--input_mode", "retrieval_input", "--metric", "match", "--result_fp", str(tmp_path / "preds.jsonl"),
        "--split", "test", "--max_new_tokens", "4",
    ]  # fmt: skip
    assert script.main(argv) == 0
    out = read_jsonl(tmp_path / "preds.jsonl")
    rejects = read_jsonl(tmp_path / "preds.jsonl.rejects.jsonl")
    assert [r["instruction"] for r in out] == [item["instruction"] for item in ITEMS]
    assert len(rejects) == sum(r["pred"] is None for r in out)
    assert all(r["pred"] == parse_label("retrieval", clean_critic_text(r["raw_output"])).label for r in out)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"task": "groudness"}, None),  # the original's spelling
        ({"task": "", "inst_mode": "utility_instruction"}, None),  # the task from the prompt key
        ({"task": "relevance", "inst_mode": "utility_instruction"}, "do not match --task relevance"),
        ({"task": "truthfulness"}, "--task 'truthfulness': choose one of"),
        ({"task": "relevance", "split": "dev"}, "--split 'dev'"),
        ({"task": "relevance", "model_name": "", "judge_model": "gpt-4", "split": "train"}, "pass --model_name"),
        ({"task": "relevance", "model_name": ""}, "exactly one of --model_name"),
    ],
)
def test_config(flags, message):
    values = {"model_name": "m", "input_file": "i.jsonl", "result_fp": "o.jsonl", **flags}
    if message is None:
        config = RewardConfig(**values)
        assert config.task == {"groudness": "groundness"}.get(flags["task"], flags["task"] or "utility")
    else:
        with pytest.raises(ConfigError, match=message):
            RewardConfig(**values)


def test_brief_flag_names_are_aliases():
    from selfrag.cli import parse_config

    config = parse_config(
        RewardConfig,
        [
            "--critic_model_path",
            "c",
            "--aspect",
            "utility",
            "--input_file",
            "i",
            "--output_file",
            "o",
            "--backend",
            "hf",
        ],
    )
    assert (config.model_name, config.task, config.result_fp, config.backend) == ("c", "utility", "o", "hf")


@pytest.mark.parametrize("name", ["run_reward_vllm", "create_generator_data"])
def test_help(name, capsys):
    spec = importlib.util.spec_from_file_location(f"{name}_help", ROOT / "data_creation" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0 and "--critic_model_path" in capsys.readouterr().out
