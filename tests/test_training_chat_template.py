"""`--use_chat_template`: examples formatted with the tokenizer's chat template, with exact masks (prompt masked,
passages masked inside the assistant turn), clear errors, and finetune.py / the critic training with it.

A whitespace WordLevel tokenizer with a ChatML-like template set in code makes every word one token, so the labels
are written out as words: `M` is a masked position (-100), any other string is a target token.
Run: .venv/bin/python -m pytest -q tests/test_training_chat_template.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from selfrag.errors import ConfigError, VocabError
from selfrag.training.encode import IGNORE_INDEX, chat_messages, chat_prompt, encode_example
from selfrag.training.vocab import add_reflection_tokens

ROOT = Path(__file__).resolve().parent.parent
M = "M"
WORDS = "### Instruction: Response: user assistant Who wrote Hamlet? Hamlet is a play Shakespeare wrote it. was English He Consider this".split()
# Whitespace around the markers keeps every word a token of its own; the template writes the BOS itself.
TEMPLATE = (
    "<s> {% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)
PROMPT = ["<s>", "<|im_start|>", "user", "Who", "wrote", "Hamlet?", "<|im_end|>", "<|im_start|>", "assistant"]
ONE = "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare wrote it.[Fully supported][Utility:5]"
TWO = (
    "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare wrote it.[Fully supported]"
    "[Retrieval]<paragraph>Shakespeare was English</paragraph>[Relevant]He was English[Utility:4]"
)


def word_tokenizer(template: str | None = TEMPLATE):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    add_reflection_tokens(fast)
    fast.chat_template = template
    return fast


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def words(tok, ids):
    return [M if i == IGNORE_INDEX else tok.convert_ids_to_tokens(i) for i in ids]


def encode(tok, output, input="", **kwargs):  # noqa: A002 - the record's field name
    example = {"instruction": "Who wrote Hamlet?", "input": input, "output": output}
    enc = encode_example(example, tok, 512, chat_template=True, **kwargs)
    return words(tok, enc["input_ids"]), words(tok, enc["labels"])


def test_chat_prompt_is_the_user_turn_then_the_assistant_opening(tok):
    example = {"instruction": "Who wrote Hamlet?", "input": "Consider this", "output": "x"}
    assert chat_messages(example) == [{"role": "user", "content": "Who wrote Hamlet?\n\nConsider this"}]
    assert chat_prompt(tok, example) == (
        "<s> <|im_start|> user Who wrote Hamlet?\n\nConsider this <|im_end|> <|im_start|> assistant "
    )


def test_no_paragraph_masks_the_whole_prompt_and_ends_with_the_templates_end_of_turn(tok):
    tokens, labels = encode(tok, "[No Retrieval]Shakespeare wrote it.[Utility:5]")
    assert tokens == [*PROMPT, "[No Retrieval]", "Shakespeare", "wrote", "it.", "[Utility:5]", "<|im_end|>"]
    assert labels == [M] * 9 + ["[No Retrieval]", "Shakespeare", "wrote", "it.", "[Utility:5]", "<|im_end|>"]
    assert tokens.count("<s>") == 1 and "</s>" not in tokens  # the template's BOS only; no EOS appended


def test_input_joins_the_user_turn_and_is_masked(tok):
    tokens, labels = encode(tok, "[No Retrieval]Shakespeare", input="Consider this")
    prompt = ["<s>", "<|im_start|>", "user", "Who", "wrote", "Hamlet?", "Consider", "this", "<|im_end|>"]
    assert tokens == [*prompt, "<|im_start|>", "assistant", "[No Retrieval]", "Shakespeare", "<|im_end|>"]
    assert labels == [M] * 11 + ["[No Retrieval]", "Shakespeare", "<|im_end|>"]


def test_each_paragraph_is_masked_inside_the_assistant_turn(tok):
    tokens, labels = encode(tok, ONE, mask_paragraphs=True)
    answer = ["Shakespeare", "wrote", "it.", "[Fully supported]", "[Utility:5]", "<|im_end|>"]
    assert tokens == [*PROMPT, "[Retrieval]", "<paragraph>", "Hamlet", "is", "a", "play", "</paragraph>", "[Relevant]",
                      *answer]  # fmt: skip
    assert labels == [M] * 9 + ["[Retrieval]", "<paragraph>", M, M, M, M, "</paragraph>", "[Relevant]", *answer]

    _, labels = encode(tok, TWO, mask_paragraphs=True)
    first = ["[Retrieval]", "<paragraph>", M, M, M, M, "</paragraph>", "[Relevant]", "Shakespeare", "wrote", "it."]
    second = ["[Fully supported]", "[Retrieval]", "<paragraph>", M, M, M, "</paragraph>", "[Relevant]", "He", "was",
              "English", "[Utility:4]", "<|im_end|>"]  # fmt: skip
    assert labels == [M] * 9 + first + second
    # the original rule, for ablations: the last prompt token ("assistant") stays a target, one span first..last
    _, original = encode(tok, TWO, mask_paragraphs=True, original_masking=True)
    assert original == [M] * 8 + ["assistant", "[Retrieval]", "<paragraph>", *[M] * 15, "</paragraph>", "[Relevant]",
                                  "He", "was", "English", "[Utility:4]", "<|im_end|>"]  # fmt: skip


def test_tokenizer_without_a_chat_template_is_a_clear_error(tmp_path):
    plain = word_tokenizer(template=None)
    with pytest.raises(VocabError, match="has no chat template .* drop the flag"):
        encode(plain, ONE)
    plain.save_pretrained(tmp_path / "plain")
    (tmp_path / "train.jsonl").write_text(json.dumps({"instruction": "q", "output": "a"}) + "\n")
    from selfrag.training.config import FinetuneConfig
    from selfrag.training.model import load_tokenizer

    config = FinetuneConfig(
        model_name_or_path=str(tmp_path / "plain"),
        train_file=str(tmp_path / "train.jsonl"),
        output_dir=str(tmp_path / "out"),
        use_chat_template=True,
    )
    with pytest.raises(ConfigError, match="--use_chat_template: the tokenizer .* has no chat template"):
        load_tokenizer(config)


def test_a_template_that_rewrites_the_answer_is_refused():
    upper = word_tokenizer(template=TEMPLATE.replace("{{ m['content'] }}", "{{ m['content'] | upper }}"))
    with pytest.raises(ConfigError, match="does not render the conversation as its generation prompt"):
        encode(upper, "[No Retrieval]Shakespeare")


def test_critic_flag_maps_onto_the_generator_config():
    from selfrag.training.critic import CriticConfig

    critic = CriticConfig(data_path="d.json", output_dir="out", use_chat_template=True)
    assert critic.to_finetune_config().use_chat_template is True
    assert CriticConfig(data_path="d.json", output_dir="out").to_finetune_config().use_chat_template is False


def load_script(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """The tiny Self-RAG Llama with a ChatML template on its (byte-level BPE) tokenizer."""
    from transformers import AutoTokenizer

    from selfrag.testing import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("chat") / "model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}, False)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.save_pretrained(path)
    return path


ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"},
    {
        "instruction": "Who wrote Pride and Prejudice?",
        "input": "",
        "output": "[Retrieval]<paragraph>Pride and Prejudice\nA novel by Jane Austen.</paragraph>[Relevant]Jane "
        "Austen.[Fully supported][Utility:5]",
    },
]


def test_finetune_and_critic_scripts_train_with_the_chat_template(chat_model_dir, tmp_path):
    from transformers import AutoTokenizer

    torch.set_num_threads(1)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    from selfrag.cli import parse_config
    from selfrag.training.config import FinetuneConfig
    from selfrag.training.loop import train as run_training

    out = tmp_path / "gen"
    args = ["--model_name_or_path", str(chat_model_dir), "--train_file", str(train), "--output_dir", str(out)]
    flags = ["--use_special_tokens", "--use_chat_template", "--per_device_train_batch_size=2", "--seed=0"]
    config = parse_config(FinetuneConfig, [*args, *flags, "--num_train_epochs=4", "--learning_rate=1e-2"])
    assert config.use_chat_template is True
    result = run_training(config)
    assert result.completed_steps == 8 and result.losses[-1] < result.losses[0]
    assert result.encode_stats.num_kept == 4
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.chat_template == AutoTokenizer.from_pretrained(chat_model_dir).chat_template  # inference can use it
    prompt = chat_prompt(saved, ROWS[0])
    assert prompt == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"

    critic_script = load_script(ROOT / "data_creation" / "train_special_tokens.py", "train_special_tokens")
    critic_out = tmp_path / "critic"
    critic_args = ["--model_name_or_path", str(chat_model_dir), "--data_path", str(train), "--output_dir",
                   str(critic_out), "--use_chat_template", "--use_special_token", "--per_device_train_batch_size=2",
                   "--num_train_epochs=1", "--save_strategy=no", "--learning_rate=1e-3"]  # fmt: skip
    assert critic_script.main(critic_args) == 0
    assert AutoTokenizer.from_pretrained(critic_out).chat_template == saved.chat_template


def test_critic_original_masking_switch_keeps_the_whole_prompt_masked(tmp_path):
    """The critic's `--original_masking` (with `--use_context_markups`): the original critic's one passage span, with
    the prompt masked whole (its prompt mask had no off-by-one), on the critic prompt and under the chat template."""
    from selfrag.training.critic import CRITIC_PROMPTS, CriticConfig, critic_encode_fn

    tok = word_tokenizer()
    data = tmp_path / "critic.jsonl"
    data.write_text(json.dumps({"instruction": "Who wrote Hamlet?", "input": "", "output": TWO}) + "\n")
    base = dict(data_path=str(data), output_dir=str(tmp_path), use_special_token=True, use_context_markups=True)
    spans = {}
    for original in (False, True):
        critic = CriticConfig(**base, original_masking=original)
        (enc,), _ = critic_encode_fn(critic)(critic.to_finetune_config(), tok)
        spans[original] = words(tok, enc["labels"])
    prompt = [M] * 8  # <s> ### Instruction: Who wrote Hamlet? ### Response: (CRITIC_PROMPTS, no trailing newline)
    assert CRITIC_PROMPTS["prompt_no_input"] == "### Instruction:\n{instruction}\n\n### Response:"
    tail = ["[Relevant]", "He", "was", "English", "[Utility:4]", "</s>"]
    assert spans[True] == [*prompt, "[Retrieval]", "<paragraph>", *[M] * 15, "</paragraph>", *tail]
    assert spans[False] == [*prompt, "[Retrieval]", "<paragraph>", M, M, M, M, "</paragraph>", "[Relevant]",
                            "Shakespeare", "wrote", "it.", "[Fully supported]", "[Retrieval]", "<paragraph>", M, M, M,
                            "</paragraph>", *tail]  # fmt: skip
    with pytest.raises(ConfigError, match="--original_masking changes the passage masks of --use_context_markups"):
        CriticConfig(data_path=str(data), output_dir=str(tmp_path), use_special_token=True, original_masking=True)
