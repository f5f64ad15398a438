"""Exact label masks of `encode_example` (prompt and paragraphs, both rules), overflow, field errors, collator.

A whitespace WordLevel tokenizer makes every word one token, so the expected labels are written out as words:
`M` is a masked position (-100), any other string is a target token.
"""

from __future__ import annotations

import doctest
import json
from functools import partial

import pytest

import selfrag.training.collator
import selfrag.training.encode
from selfrag.data import load_items
from selfrag.errors import DataFormatError, VocabError
from selfrag.tokens import ALL_TOKENS
from selfrag.training.collator import PaddingCollator
from selfrag.training.encode import IGNORE_INDEX, encode_dataset, encode_example, paragraph_spans
from selfrag.training.vocab import add_reflection_tokens

M = "M"
PROMPT = ["<s>", "###", "Instruction:", "Who", "wrote", "Hamlet?", "###", "Response:"]  # 8 tokens
WORDS = """### Instruction: Input: Response: Who wrote Hamlet? Hamlet is a play Shakespeare Shakespeare. it. was
English English. He was in The Globe theatre Consider this""".split()


def word_tokenizer(reflection: bool = True):
    """WordLevel over whitespace-split words, `<s>` prepended; reflection tokens and `<pad>` added on top."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "</s>", *dict.fromkeys(WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    add_reflection_tokens(fast, reflection=reflection)
    return fast


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def example(output: str, input: str = "") -> dict:  # noqa: A002 - the record's field name
    return {"instruction": "Who wrote Hamlet?", "input": input, "output": output}


def words(tok, ids):
    return [M if i == IGNORE_INDEX else tok.convert_ids_to_tokens(i) for i in ids]


def encode(tok, output, original=False, max_seq_length=512, **kwargs):
    enc = encode_example(example(output, **kwargs), tok, max_seq_length, original_masking=original)
    return words(tok, enc["input_ids"]), words(tok, enc["labels"]), enc


ONE = "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare wrote it.[Fully supported][Utility:5]"
TWO = (
    "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare wrote it.[Fully supported]"
    "[Retrieval]<paragraph>Shakespeare was English</paragraph>[Relevant]He was English.[Partially supported][Utility:4]"
)


def test_no_paragraph_masks_only_the_prompt_and_the_original_keeps_its_last_token(tok):
    tokens, labels, enc = encode(tok, "[No Retrieval]Shakespeare wrote it.[Utility:5]")
    assert tokens == [*PROMPT, "[No Retrieval]", "Shakespeare", "wrote", "it.", "[Utility:5]", "</s>"]
    assert labels == [M] * 8 + ["[No Retrieval]", "Shakespeare", "wrote", "it.", "[Utility:5]", "</s>"]
    assert enc["attention_mask"] == [1] * 14 and enc["num_truncated"] == 0
    _, original, _ = encode(tok, "[No Retrieval]Shakespeare wrote it.[Utility:5]", original=True)
    assert original == [M] * 7 + ["Response:", "[No Retrieval]", "Shakespeare", "wrote", "it.", "[Utility:5]", "</s>"]


def test_prompt_with_input_uses_prompt_input_and_is_masked_whole(tok):
    tokens, labels, _ = encode(tok, "[No Retrieval]Shakespeare", input="Consider this")
    prompt = [
        "<s>",
        "###",
        "Instruction:",
        "Who",
        "wrote",
        "Hamlet?",
        "###",
        "Input:",
        "Consider",
        "this",
        "###",
        "Response:",
    ]
    assert tokens == [*prompt, "[No Retrieval]", "Shakespeare", "</s>"]
    assert labels == [M] * 12 + ["[No Retrieval]", "Shakespeare", "</s>"]
    _, original, _ = encode(tok, "[No Retrieval]Shakespeare", input="Consider this", original=True)
    assert original == [M] * 11 + ["Response:", "[No Retrieval]", "Shakespeare", "</s>"]


def test_one_paragraph_masks_its_interior_under_both_rules(tok):
    tokens, labels, _ = encode(tok, ONE)
    assert tokens == [
        *PROMPT,
        "[Retrieval]",
        "<paragraph>",
        "Hamlet",
        "is",
        "a",
        "play",
        "</paragraph>",
        "[Relevant]",
        "Shakespeare",
        "wrote",
        "it.",
        "[Fully supported]",
        "[Utility:5]",
        "</s>",
    ]
    target = [
        "[Retrieval]",
        "<paragraph>",
        M,
        M,
        M,
        M,
        "</paragraph>",
        "[Relevant]",
        "Shakespeare",
        "wrote",
        "it.",
        "[Fully supported]",
        "[Utility:5]",
        "</s>",
    ]
    assert labels == [M] * 8 + target
    assert encode(tok, ONE, original=True)[1] == [M] * 7 + ["Response:"] + target


def test_two_paragraphs_each_masked_on_its_own_while_the_original_drops_the_segment_between(tok):
    _, labels, _ = encode(tok, TWO)
    assert labels == [M] * 8 + [
        "[Retrieval]",
        "<paragraph>",
        M,
        M,
        M,
        M,
        "</paragraph>",
        "[Relevant]",
        "Shakespeare",
        "wrote",
        "it.",
        "[Fully supported]",
        "[Retrieval]",
        "<paragraph>",
        M,
        M,
        M,
        "</paragraph>",
        "[Relevant]",
        "He",
        "was",
        "English.",
        "[Partially supported]",
        "[Utility:4]",
        "</s>",
    ]
    _, original, _ = encode(tok, TWO, original=True)
    assert original == [M] * 7 + ["Response:"] + [
        "[Retrieval]",
        "<paragraph>",
        *[M] * 15,
        "</paragraph>",
        "[Relevant]",
        "He",
        "was",
        "English.",
        "[Partially supported]",
        "[Utility:4]",
        "</s>",
    ]


def test_unclosed_paragraph_masks_to_the_end_while_the_original_keeps_the_last_token(tok):
    output = "[Retrieval]<paragraph>Hamlet is a play[Relevant]Shakespeare wrote it."
    tokens, labels, _ = encode(tok, output)
    assert tokens[8:] == [
        "[Retrieval]",
        "<paragraph>",
        "Hamlet",
        "is",
        "a",
        "play",
        "[Relevant]",
        "Shakespeare",
        "wrote",
        "it.",
        "</s>",
    ]
    assert labels == [M] * 8 + ["[Retrieval]", "<paragraph>"] + [M] * 9
    _, original, _ = encode(tok, output, original=True)
    assert original == [M] * 7 + ["Response:", "[Retrieval]", "<paragraph>"] + [M] * 8 + ["</s>"]


def test_closed_then_unclosed_paragraph_under_both_rules(tok):
    output = "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]He was[Retrieval]<paragraph>The Globe theatre"
    _, labels, _ = encode(tok, output)
    head = [
        "[Retrieval]",
        "<paragraph>",
        M,
        M,
        M,
        M,
        "</paragraph>",
        "[Relevant]",
        "He",
        "was",
        "[Retrieval]",
        "<paragraph>",
    ]
    assert labels == [M] * 8 + head + [M, M, M, M]  # the passage and the EOS after it
    _, original, _ = encode(tok, output, original=True)
    assert original == [M] * 7 + ["Response:"] + head + [M, M, M, "</s>"]  # the original's second span stops at -1


def test_a_stray_closing_tag_is_an_ordinary_target(tok):
    _, labels, _ = encode(tok, "Shakespeare</paragraph>wrote it.")
    assert labels == [M] * 8 + ["Shakespeare", "</paragraph>", "wrote", "it.", "</s>"]


def test_paragraph_spans_on_the_original_toy_sequence():
    # docs/original_selfrag.md §7.2: source [0,1,2], target [9,P,7,7,EP,8,8,P,7,7,EP,8,3]
    P, E = 50, 51  # noqa: N806
    ids = [0, 1, 2, 9, P, 7, 7, E, 8, 8, P, 7, 7, E, 8, 3]
    assert paragraph_spans(ids, 3, P, E, original=True) == [(5, 13)]
    labels = [IGNORE_INDEX] * 2 + ids[2:]
    for a, b in paragraph_spans(ids, 3, P, E, original=True):
        labels[a:b] = [IGNORE_INDEX] * (b - a)
    assert labels == [-100, -100, 2, 9, P, *[-100] * 8, E, 8, 3]
    assert paragraph_spans(ids, 3, P, E) == [(5, 7), (11, 13)]
    assert paragraph_spans([0, P, E, 4], 1, P, E) == [] == paragraph_spans([0, P, E, 4], 1, P, E, original=True)


def test_without_paragraph_masking_only_the_prompt_is_masked(tok):
    enc = encode_example(example(ONE), tok, 512, mask_paragraphs=False)
    assert words(tok, enc["labels"]) == [M] * 8 + words(tok, enc["input_ids"])[8:]


def test_paragraph_masking_needs_the_markup_tokens():
    plain = word_tokenizer(reflection=False)
    with pytest.raises(VocabError, match="<paragraph>"):
        encode_example(example("Shakespeare"), plain, 512)
    assert encode_example(example("Shakespeare"), plain, 512, mask_paragraphs=False)["labels"][-2:] != [-100, -100]


def test_overflow_is_reported_with_labels_built_before_the_cut(tok):
    tokens, labels, enc = encode(tok, ONE, max_seq_length=12)
    assert enc["num_truncated"] == 22 - 12
    assert tokens == [*PROMPT, "[Retrieval]", "<paragraph>", "Hamlet", "is"]
    assert labels == [M] * 8 + ["[Retrieval]", "<paragraph>", M, M]  # the cut passage stays masked
    encode_fn = partial(encode_example, tokenizer=tok, max_seq_length=12)
    data = [example(ONE), example("[No Retrieval]Shakespeare")]
    kept, stats = encode_dataset(data, encode_fn)
    assert (len(kept), stats.num_too_long, stats.num_kept) == (1, 1, 1)
    assert "num_truncated" not in kept[0] and stats.num_target_tokens == 3
    kept, stats = encode_dataset(data, encode_fn, overflow="truncate")
    assert [len(k["input_ids"]) for k in kept] == [12, 11] and stats.num_too_long == 1


def test_examples_without_targets_are_dropped_and_counted(tok):
    # With the prompt cut at 8 tokens nothing is left to learn.
    kept, stats = encode_dataset([example(ONE)], partial(encode_example, tokenizer=tok, max_seq_length=8), "truncate")
    assert kept == [] and stats.num_no_targets == 1 and "0/1 examples kept" in stats.summary()


def test_parallel_encoding_gives_the_same_result(tok):
    data = [example(ONE), example(TWO), example("[No Retrieval]He was English.")] * 3
    encode_fn = partial(encode_example, tokenizer=tok, max_seq_length=64)
    assert encode_dataset(data, encode_fn, num_workers=2)[0] == encode_dataset(data, encode_fn)[0]


def test_missing_or_bad_fields_name_file_line_and_field(tok, tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [example(ONE), {"instruction": "Who wrote Hamlet?", "input": ""}, {"instruction": 3, "output": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items(path)
    encode_example(items[0], tok, 64)
    with pytest.raises(DataFormatError, match=r"train\.jsonl:2: missing field 'output'"):
        encode_example(items[1], tok, 64)
    with pytest.raises(DataFormatError, match=r"train\.jsonl:3: field 'instruction' must be a string"):
        encode_example(items[2], tok, 64)


def test_eos_is_appended_as_an_id_once(tok):
    tokens, _, _ = encode(tok, "Shakespeare</s>")
    assert tokens[-2:] == ["Shakespeare", "</s>"]


def test_docstring_example_of_encode_example(tok):
    output = "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare.[Utility:5]"
    tokens, labels, _ = encode(tok, output)
    assert tokens == [
        *PROMPT,
        "[Retrieval]",
        "<paragraph>",
        "Hamlet",
        "is",
        "a",
        "play",
        "</paragraph>",
        "[Relevant]",
        "Shakespeare.",
        "[Utility:5]",
        "</s>",
    ]
    assert labels == [M] * 8 + [
        "[Retrieval]",
        "<paragraph>",
        M,
        M,
        M,
        M,
        "</paragraph>",
        "[Relevant]",
        "Shakespeare.",
        "[Utility:5]",
        "</s>",
    ]


def test_collator_pads_ids_labels_and_mask():
    batch = PaddingCollator(pad_token_id=3, pad_to_multiple_of=4)(
        [
            {"input_ids": [1, 5, 6], "labels": [-100, 5, 6], "attention_mask": [1, 1, 1], "extra": 0},
            {"input_ids": [1], "labels": [1]},
        ]
    )
    assert batch["input_ids"].tolist() == [[1, 5, 6, 3], [1, 3, 3, 3]]
    assert batch["labels"].tolist() == [[-100, 5, 6, -100], [1, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert set(batch) == {"input_ids", "labels", "attention_mask"}


@pytest.mark.parametrize("module", [selfrag.training.encode, selfrag.training.collator])
def test_docstring_examples_run(module):
    assert doctest.testmod(module).failed == 0


def test_reflection_tokens_are_single_words_in_the_test_tokenizer(tok):
    for token in ALL_TOKENS:
        assert tok.convert_ids_to_tokens(tok.encode(token, add_special_tokens=False)) == [token]


def test_masking_drop_bench_runs_on_the_sample(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "masking_drop.py"
    spec = importlib.util.spec_from_file_location("masking_drop", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--output", str(tmp_path / "out.json")]) == 0
    summary = json.loads((tmp_path / "out.json").read_text())["summary"]
    assert summary["0 paragraphs"]["dropped"] == 0 == summary["1 paragraph"]["dropped"]
    assert summary[">= 2 paragraphs"]["dropped_fraction"] > 0.2 and summary["all rows"]["rows"] == 20
