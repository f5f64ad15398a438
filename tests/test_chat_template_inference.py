"""`--use_chat_template` at inference: prompts equal to the ones training masks, one BOS in the ids the backend feeds
the model, run_short_form / run_long_form / the server with a chat template, and the flag off unchanged.

Run: .venv/bin/python -m pytest -q tests/test_chat_template_inference.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_training_chat_template import word_tokenizer

from selfrag.backends.base import GenParams
from selfrag.backends.hf import HFBackend
from selfrag.decoding.config import DecodingConfig
from selfrag.decoding.long_form import beam_search
from selfrag.decoding.short_form import ShortFormSettings, run_batch
from selfrag.errors import BackendError, ConfigError
from selfrag.eval.long_form import LongFormConfig, run_long_form
from selfrag.eval.short_form import ShortFormConfig, run_short_form
from selfrag.prompts import TASK_INST, build_instruction, chat_template_prompt, format_evidence, format_prompt
from selfrag.server.engine import RequestOptions, SelfRagEngine
from selfrag.tokens import ReflectionVocab
from selfrag.training.encode import IGNORE_INDEX, chat_prompt, encode_example

# A Llama-2-chat-like template for the tiny BPE model: it writes the BOS itself, as real templates do.
TINY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    "{% if add_generation_prompt %} {% endif %}"
)
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
        "question": "In what country is Kyoto?",
        "answers": ["Japan"],
        "ctxs": [{"id": "3", "title": "Kyoto", "text": "Kyoto is a city in Japan.", "score": "1.2"}],
    },
]
# The predictions of these ITEMS with --max_new_tokens 6 --ndocs 2 on the tiny model (selfrag.testing, seed 0),
# written by the code before --use_chat_template existed (commit 9b4725c): the flag off must still give them.
BEFORE_PREDS = {
    "always_retrieve": ["ill\ufffdiceovel\ufffd", "ill s\ufffd\u0019"],
    "no_retrieval": ["\ufffd\u0005IGiv", "\ufffd\u0005ll\ufffd\u0019di"],
}


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def chat_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with `TINY_TEMPLATE` saved in its tokenizer (the fixture's own directory stays untouched)."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tiny_chat") / "model"
    shutil.copytree(tiny_model_dir, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = TINY_TEMPLATE
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def chat_backend(chat_model_dir):
    return HFBackend.from_pretrained(chat_model_dir, dtype="float32")


def record_prompt_ids(backend: HFBackend, monkeypatch) -> list[list[int]]:
    """Collect the token ids of every prompt the backend feeds the model."""
    seen: list[list[int]] = []
    original = backend._generate_batch

    def spy(prompt_ids, params, generator):
        seen.extend(prompt_ids)
        return original(prompt_ids, params, generator)

    monkeypatch.setattr(backend, "_generate_batch", spy)
    return seen


def write_jsonl(path: Path, items) -> str:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return str(path)


# ------------------------------------------------------------------------------------------------ prompt strings


def test_without_a_tokenizer_the_prompt_is_unchanged(tok):
    assert format_prompt("Who wrote Hamlet?") == "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n"
    assert format_prompt("Who wrote Hamlet?", "[No Retrieval]") == (
        "### Instruction:\nWho wrote Hamlet?\n\n### Response:\n[No Retrieval]"
    )


def test_chat_prompt_is_the_templates_user_turn_and_assistant_opening(tok):
    assert format_prompt("Who wrote Hamlet?", tokenizer=tok) == (
        "<s> <|im_start|> user Who wrote Hamlet? <|im_end|> <|im_start|> assistant "
    )
    assert chat_template_prompt(tok, "Who wrote Hamlet?") == format_prompt("Who wrote Hamlet?", tokenizer=tok)
    evidence = format_evidence({"title": "Hamlet", "text": "Hamlet is a play"})
    assert format_prompt("Who wrote Hamlet?", evidence, tokenizer=tok) == (
        "<s> <|im_start|> user Who wrote Hamlet? <|im_end|> <|im_start|> assistant "
        "[Retrieval]<paragraph>Hamlet\nHamlet is a play</paragraph>"
    )


@pytest.mark.parametrize(
    "instruction",
    [
        "Who wrote Hamlet?",
        build_instruction({"question": "Hamlet is a play"}, "fever"),
        TASK_INST["asqa"] + "## Input:\n\nWho wrote Hamlet?",
    ],
)
def test_chat_prompt_equals_the_prompt_training_masks(tok, instruction):
    record = {"instruction": instruction, "input": "", "output": "[No Retrieval]Shakespeare wrote it.[Utility:5]"}
    prompt = format_prompt(instruction, tokenizer=tok)
    assert prompt == chat_prompt(tok, record)
    # the ids: training's masked prefix is exactly the prompt inference feeds (tokenized without added specials)
    enc = encode_example(record, tok, 512, mask_paragraphs=False, chat_template=True)
    n_prompt = next(i for i, label in enumerate(enc["labels"]) if label != IGNORE_INDEX)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    assert ids == enc["input_ids"][:n_prompt]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_a_tokenizer_without_a_chat_template_is_a_config_error():
    with pytest.raises(ConfigError, match="has no chat template .* drop --use_chat_template"):
        format_prompt("Who wrote Hamlet?", tokenizer=word_tokenizer(template=None))


# ------------------------------------------------------------------------------------------------------ backend


def test_hf_backend_feeds_exactly_one_bos(chat_backend, monkeypatch):
    tokenizer = chat_backend.tokenizer
    bos = tokenizer.bos_token_id
    prompt = format_prompt("Who wrote Hamlet?", tokenizer=tokenizer)
    assert prompt == "<s>[INST] Who wrote Hamlet? [/INST] "
    seen = record_prompt_ids(chat_backend, monkeypatch)
    chat_backend.generate([prompt], GenParams(max_tokens=1, add_special_tokens=False))
    chat_backend.generate([prompt], GenParams(max_tokens=1))  # the default would add a second BOS
    expected = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert seen[0] == expected and expected[0] == bos and expected.count(bos) == 1
    assert seen[1] == [bos, *expected]
    # a plain prompt keeps the tokenizer's BOS by default, as before
    seen.clear()
    chat_backend.generate([format_prompt("Who wrote Hamlet?")], GenParams(max_tokens=1))
    assert seen[0] == tokenizer(format_prompt("Who wrote Hamlet?"))["input_ids"] and seen[0][:2].count(bos) == 1


# ---------------------------------------------------------------------------------------------------- end to end


def chat_prompts(tokenizer, items) -> list[str]:
    """Prompts built by hand from the template, independently of format_prompt."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": item["question"]}], tokenize=False, add_generation_prompt=True
        )
        for item in items
    ]


@pytest.mark.parametrize("mode", ["always_retrieve", "adaptive_retrieval"])
def test_run_short_form_with_a_chat_template(chat_model_dir, chat_backend, tmp_path, monkeypatch, mode):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    threshold = 0.08 if mode == "adaptive_retrieval" else None  # p(Ret) is 0.047 and 0.107 here: one of each
    common = {"mode": mode, "threshold": threshold, "ndocs": 2, "max_new_tokens": 6}
    seen = record_prompt_ids(chat_backend, monkeypatch)
    # backend=None: the tokenizer is loaded from --model_name to build the prompts before the model loads
    config = ShortFormConfig(
        model_name=chat_model_dir,
        input_file=input_file,
        output_file=str(tmp_path / "out.json"),
        backend="hf",
        dtype="float32",
        use_chat_template=True,
        **common,
    )
    output = run_short_form(config)
    assert json.loads(Path(config.output_file).read_text())["preds"] == output["preds"]

    tokenizer = chat_backend.tokenizer
    prompts = chat_prompts(tokenizer, ITEMS)
    assert prompts[0] == "<s>[INST] Who wrote Hamlet? [/INST] "
    assert output["prompts"] == prompts
    vocab = ReflectionVocab.from_tokenizer(tokenizer)
    settings = ShortFormSettings(mode=mode, threshold=threshold, ndocs=2, max_new_tokens=6, add_special_tokens=False)
    expected = run_batch(chat_backend, vocab, prompts, [item["ctxs"] for item in ITEMS], settings)
    assert output["preds"] == [r.pred for r in expected]
    assert output["all_results"] == [r.results for r in expected]
    assert output["retrieve"] == [r.retrieve for r in expected]
    assert output["retrieve"] == ([False, True] if mode == "adaptive_retrieval" else [True, True])
    assert output["config"]["use_chat_template"] is True
    assert config.fingerprint()["use_chat_template"] is True
    # every sequence the reference run fed the model starts with the template's BOS, once
    bos = tokenizer.bos_token_id
    assert seen and all(ids[0] == bos and ids.count(bos) == 1 for ids in seen)

    # the same run handed the backend gives the same file
    again = ShortFormConfig(**{**config.__dict__, "output_file": str(tmp_path / "again.json")})
    assert run_short_form(again, backend=chat_backend)["preds"] == output["preds"]


def test_run_long_form_with_a_chat_template(chat_model_dir, chat_backend, tmp_path, monkeypatch):
    items = [{"question": item["question"], "docs": item["ctxs"]} for item in ITEMS]
    (tmp_path / "in.json").write_text(json.dumps(items))
    config = LongFormConfig(
        model_name=chat_model_dir,
        input_file=str(tmp_path / "in.json"),
        output_file=str(tmp_path / "out.json"),
        task="asqa",
        mode="always_retrieve",
        ndocs=2,
        max_new_tokens=6,
        max_depth=3,
        use_chat_template=True,
    )
    seen = record_prompt_ids(chat_backend, monkeypatch)
    outputs = run_long_form(config, backend=chat_backend)
    tokenizer = chat_backend.tokenizer
    bos = tokenizer.bos_token_id
    assert seen and all(ids[0] == bos and ids.count(bos) == 1 for ids in seen)

    instructions = [TASK_INST["asqa"] + "## Input:\n\n" + item["question"] for item in items]
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": i}], tokenize=False, add_generation_prompt=True)
        for i in instructions
    ]
    settings = config.settings()
    assert settings.add_special_tokens is False
    vocab = ReflectionVocab.from_tokenizer(tokenizer)
    expected = beam_search(chat_backend, vocab, prompts, [item["docs"] for item in items], settings)
    assert [o["intermediate"] for o in outputs] == [[n.pred for n in r.path] for r in expected]
    assert [o["best_path"] for o in outputs] == [[n.id for n in r.path] for r in expected]


def test_a_model_without_a_chat_template_fails_before_loading(tiny_model_dir, tmp_path):
    config = ShortFormConfig(
        model_name=tiny_model_dir,
        input_file=write_jsonl(tmp_path / "in.jsonl", ITEMS),
        output_file=str(tmp_path / "out.json"),
        backend="hf",
        use_chat_template=True,
    )
    with pytest.raises(ConfigError, match="has no chat template"):
        run_short_form(config)
    assert not (tmp_path / "out.json").exists()
    missing = ShortFormConfig(**{**config.__dict__, "model_name": str(tmp_path / "missing")})
    with pytest.raises(BackendError, match="cannot load the tokenizer of .*missing"):
        run_short_form(missing)


# ------------------------------------------------------------------------------------------------------ flag off


@pytest.mark.parametrize("mode", ["always_retrieve", "no_retrieval"])
def test_flag_off_is_unchanged(tiny_model_dir, hf_backend, tmp_path, monkeypatch, mode):
    input_file = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    config = ShortFormConfig(
        model_name=tiny_model_dir,
        input_file=input_file,
        output_file=str(tmp_path / "out.json"),
        mode=mode,
        ndocs=2,
        max_new_tokens=6,
    )
    assert config.fingerprint()["use_chat_template"] is False  # a resumed run must match it too
    seen = record_prompt_ids(hf_backend, monkeypatch)
    output = run_short_form(config, backend=hf_backend)
    assert output["preds"] == BEFORE_PREDS[mode]
    prompts = [format_prompt(item["question"]) for item in ITEMS]
    assert output["prompts"] == prompts
    # the ids are the tokenizer's default encoding (its BOS added), as before the flag existed
    tokenizer = hf_backend.tokenizer
    suffixes = [[format_evidence(c) for c in item["ctxs"]] for item in ITEMS]
    if mode == "no_retrieval":
        suffixes = [["[No Retrieval]"] for _ in ITEMS]
    fed = [tokenizer(p + s)["input_ids"] for p, ss in zip(prompts, suffixes) for s in ss]
    assert sorted(seen) == sorted(fed)
    vocab = ReflectionVocab.from_tokenizer(tokenizer)
    expected = run_batch(
        hf_backend,
        vocab,
        prompts,
        [item["ctxs"] for item in ITEMS],
        ShortFormSettings(mode=mode, max_new_tokens=6, ndocs=2),
    )
    assert output["all_results"] == [r.results for r in expected]
    assert output["config"]["use_chat_template"] is False


# ------------------------------------------------------------------------------------------------------- server


def test_server_engine_with_a_chat_template(chat_backend, monkeypatch):
    options = RequestOptions(
        instruction="Who wrote Hamlet?", decoding=DecodingConfig(max_new_tokens=4, mode="no_retrieval", ndocs=5)
    )
    seen = record_prompt_ids(chat_backend, monkeypatch)
    engine = SelfRagEngine(chat_backend, "tiny", use_chat_template=True)
    (answer,) = engine.run([options])
    prompt = "<s>[INST] Who wrote Hamlet? [/INST] "
    tokenizer = chat_backend.tokenizer
    assert seen == [tokenizer(prompt + "[No Retrieval]", add_special_tokens=False)["input_ids"]]
    assert answer.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    plain = SelfRagEngine(chat_backend, "tiny")
    seen.clear()
    (plain_answer,) = plain.run([options])
    assert seen == [tokenizer(format_prompt("Who wrote Hamlet?", "[No Retrieval]"))["input_ids"]]
    assert plain_answer.prompt_tokens == len(tokenizer(format_prompt("Who wrote Hamlet?"))["input_ids"])


def test_server_engine_refuses_a_tokenizer_without_a_template(hf_backend):
    with pytest.raises(ConfigError, match="has no chat template"):
        SelfRagEngine(hf_backend, "tiny", use_chat_template=True)


def test_vllm_backend_tokenizes_without_the_bos_when_asked(chat_backend):
    """The vllm backend tokenizes prompts itself (TokensPrompt): a stand-in engine records the ids it is handed."""
    pytest.importorskip("vllm")
    from types import SimpleNamespace

    from selfrag.backends.vllm import VllmBackend

    handed: list[list[int]] = []

    def generate(inputs, sampling, use_tqdm=False):
        handed.extend(list(i["prompt_token_ids"]) for i in inputs)
        empty = SimpleNamespace(token_ids=[], logprobs=[], cumulative_logprob=0.0)
        return [SimpleNamespace(outputs=[empty]) for _ in inputs]

    model_config = SimpleNamespace(
        tokenizer="unused",
        max_logprobs=20,
        get_vocab_size=lambda: len(chat_backend.tokenizer),
        try_get_generation_config=lambda: {},
    )
    backend = VllmBackend(SimpleNamespace(model_config=model_config, generate=generate), chat_backend.tokenizer)
    tokenizer = chat_backend.tokenizer
    prompt = format_prompt("Who wrote Hamlet?", tokenizer=tokenizer)
    backend.generate([prompt], GenParams(max_tokens=1, add_special_tokens=False))
    backend.generate([prompt], GenParams(max_tokens=1))
    bos = tokenizer.bos_token_id
    assert handed[0] == tokenizer(prompt, add_special_tokens=False)["input_ids"] and handed[0].count(bos) == 1
    assert handed[1] == tokenizer(prompt)["input_ids"] == [bos, *handed[0]]
