"""selfrag/tokens.py: the reflection-token strings, groups, and lookup in a tokenizer (spec §2)."""

from __future__ import annotations

import pytest

from selfrag import tokens as T
from selfrag.errors import VocabError
from selfrag.testing import CORPUS, build_tiny_tokenizer
from selfrag.tokens import ALL_TOKENS, ORIGINAL_CONTROL_TOKENS, ReflectionVocab, strip_reflection_tokens

# §2.2: the order of `additional_special_tokens` in finetune.py, i.e. ids 32000..32014 of the released model.
SPEC_ORDER = [
    "[No Retrieval]",
    "[Retrieval]",
    "[Continue to Use Evidence]",
    "[Irrelevant]",
    "[Relevant]",
    "<paragraph>",
    "</paragraph>",
    "[Utility:1]",
    "[Utility:2]",
    "[Utility:3]",
    "[Utility:4]",
    "[Utility:5]",
    "[Fully supported]",
    "[Partially supported]",
    "[No support / Contradictory]",
]

# §2.5: the 14 strings of `control_tokens` (utils.py:52-53), in that order.
SPEC_CONTROL = [
    "[Fully supported]",
    "[Partially supported]",
    "[No support / Contradictory]",
    "[No Retrieval]",
    "[Retrieval]",
    "[Irrelevant]",
    "[Relevant]",
    "<paragraph>",
    "</paragraph>",
    "[Utility:1]",
    "[Utility:2]",
    "[Utility:3]",
    "[Utility:4]",
    "[Utility:5]",
]

# §2.3: ids in selfrag/selfrag_llama2_7b.
RELEASED_IDS = {
    32000: "[No Retrieval]",
    32001: "[Retrieval]",
    32002: "[Continue to Use Evidence]",
    32003: "[Irrelevant]",
    32004: "[Relevant]",
    32005: "<paragraph>",
    32006: "</paragraph>",
    32007: "[Utility:1]",
    32008: "[Utility:2]",
    32009: "[Utility:3]",
    32010: "[Utility:4]",
    32011: "[Utility:5]",
    32012: "[Fully supported]",
    32013: "[Partially supported]",
    32014: "[No support / Contradictory]",
}


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def _bare_tokenizer(extra_special_tokens=()):
    """A byte-level BPE PreTrainedTokenizerFast trained on the tiny corpus, *without* the reflection tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if extra_special_tokens:
        fast.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return fast


class _StubTokenizer:
    """The two attributes `ReflectionVocab.from_tokenizer` reads."""

    def __init__(self, vocab, unk_token_id):
        self._vocab = dict(vocab)
        self.unk_token_id = unk_token_id

    def get_vocab(self):
        return dict(self._vocab)


# ---------------------------------------------------------------------------------------------- strings, groups


def test_all_tokens_exact_strings_in_original_insertion_order():
    assert list(ALL_TOKENS) == SPEC_ORDER
    assert len(ALL_TOKENS) == 15
    assert len(set(ALL_TOKENS)) == 15


def test_insertion_order_gives_released_ids():
    # Adding the tokens in ALL_TOKENS order after Llama-2's 32000 base ids reproduces §2.3.
    assert {32000 + k: tok for k, tok in enumerate(ALL_TOKENS)} == RELEASED_IDS


def test_named_constants():
    assert T.RETRIEVAL == "[Retrieval]"
    assert T.NO_RETRIEVAL == "[No Retrieval]"
    assert T.CONTINUE == "[Continue to Use Evidence]"
    assert T.RELEVANT == "[Relevant]"
    assert T.IRRELEVANT == "[Irrelevant]"
    assert T.FULLY_SUPPORTED == "[Fully supported]"
    assert T.PARTIALLY_SUPPORTED == "[Partially supported]"
    assert T.NO_SUPPORT == "[No support / Contradictory]"
    assert T.PARAGRAPH_START == "<paragraph>"
    assert T.PARAGRAPH_END == "</paragraph>"


def test_group_contents_and_order():
    assert T.RETRIEVE_TOKENS == ("[No Retrieval]", "[Retrieval]", "[Continue to Use Evidence]")
    assert T.ISREL_TOKENS == ("[Irrelevant]", "[Relevant]")
    assert T.ISSUP_TOKENS == ("[Fully supported]", "[Partially supported]", "[No support / Contradictory]")
    assert T.ISUSE_TOKENS == ("[Utility:1]", "[Utility:2]", "[Utility:3]", "[Utility:4]", "[Utility:5]")
    assert T.CONTEXT_TOKENS == ("<paragraph>", "</paragraph>")


def test_groups_partition_all_tokens():
    groups = T.RETRIEVE_TOKENS + T.ISREL_TOKENS + T.ISSUP_TOKENS + T.ISUSE_TOKENS + T.CONTEXT_TOKENS
    assert len(groups) == 15
    assert sorted(groups) == sorted(ALL_TOKENS)


def test_original_control_tokens_are_the_14_stripped_strings():
    assert list(ORIGINAL_CONTROL_TOKENS) == SPEC_CONTROL
    assert len(ORIGINAL_CONTROL_TOKENS) == 14
    assert "[Continue to Use Evidence]" not in ORIGINAL_CONTROL_TOKENS
    assert set(ALL_TOKENS) - set(ORIGINAL_CONTROL_TOKENS) == {"[Continue to Use Evidence]"}


def test_strip_reflection_tokens_all_15_by_default():
    text = "[Retrieval]<paragraph>T\nx</paragraph>[Relevant]Paris.[Continue to Use Evidence] Yes[Fully supported][Utility:5]"
    assert strip_reflection_tokens(text) == "T\nxParis. Yes"


def test_strip_reflection_tokens_original_list_keeps_continue():
    text = "[No Retrieval]Paris[Continue to Use Evidence] is big.[Utility:4]"
    assert strip_reflection_tokens(text, ORIGINAL_CONTROL_TOKENS) == "Paris[Continue to Use Evidence] is big."


def test_strip_reflection_tokens_changes_nothing_else():
    text = "  [Retrieve] stays, [Utility:6] too\n"
    assert strip_reflection_tokens(text) == text


# --------------------------------------------------------------------------------------- ReflectionVocab lookup


def test_from_tokenizer_ids_distinct_and_round_trip(tiny_tokenizer):
    vocab = ReflectionVocab.from_tokenizer(tiny_tokenizer)
    assert set(vocab.ids) == set(ALL_TOKENS)
    assert len(set(vocab.ids.values())) == 15
    assert tiny_tokenizer.unk_token_id not in vocab.ids.values()
    for tok in ALL_TOKENS:
        assert tiny_tokenizer.convert_ids_to_tokens(vocab[tok]) == tok
        assert tiny_tokenizer.convert_tokens_to_ids(tok) == vocab[tok]
    assert tiny_tokenizer.convert_ids_to_tokens(list(vocab.all_ids)) == list(ALL_TOKENS)


def test_tiny_tokenizer_ids_follow_insertion_order(tiny_tokenizer):
    vocab = ReflectionVocab.from_tokenizer(tiny_tokenizer)
    first = vocab[ALL_TOKENS[0]]
    assert [vocab[tok] for tok in ALL_TOKENS] == list(range(first, first + 15))


def test_each_reflection_token_encodes_to_one_id(tiny_tokenizer):
    vocab = ReflectionVocab.from_tokenizer(tiny_tokenizer)
    for tok in ALL_TOKENS:
        assert tiny_tokenizer.encode(tok, add_special_tokens=False) == [vocab[tok]]


def test_reflection_tokens_stay_single_ids_inside_text(tiny_tokenizer):
    vocab = ReflectionVocab.from_tokenizer(tiny_tokenizer)
    ids = tiny_tokenizer.encode(
        "Paris[Retrieval]<paragraph>France\nParis</paragraph>[Relevant]", add_special_tokens=False
    )
    for tok in ("[Retrieval]", "<paragraph>", "</paragraph>", "[Relevant]"):
        assert ids.count(vocab[tok]) == 1
    assert ids[-1] == vocab["[Relevant]"]
    assert ids.index(vocab["[Retrieval]"]) + 1 == ids.index(vocab["<paragraph>"])


def test_group_and_all_ids():
    vocab = ReflectionVocab(ids={tok: 1000 + k for k, tok in enumerate(ALL_TOKENS)})
    assert vocab.group(T.ISSUP_TOKENS) == (1012, 1013, 1014)
    assert vocab.group(T.ISUSE_TOKENS) == (1007, 1008, 1009, 1010, 1011)
    assert vocab.group(T.ISREL_TOKENS) == (1003, 1004)
    assert vocab.group((T.RETRIEVAL, T.NO_RETRIEVAL)) == (1001, 1000)
    assert vocab.all_ids == tuple(range(1000, 1015))
    assert vocab["[Continue to Use Evidence]"] == 1002


def test_from_tokenizer_without_reflection_tokens_raises():
    bare = _bare_tokenizer()
    with pytest.raises(VocabError) as info:
        ReflectionVocab.from_tokenizer(bare, source="my/model")
    message = str(info.value)
    assert " of my/model " in message
    assert str(list(ALL_TOKENS)) in message  # every token is named, in order
    assert "selfrag/selfrag_llama2_7b" in message


def test_from_tokenizer_names_only_the_missing_tokens():
    present = [tok for tok in ALL_TOKENS if tok not in ("[Continue to Use Evidence]", "[Utility:3]")]
    partial = _bare_tokenizer(present)
    with pytest.raises(VocabError) as info:
        ReflectionVocab.from_tokenizer(partial)
    message = str(info.value)
    assert "lacks the Self-RAG reflection tokens ['[Continue to Use Evidence]', '[Utility:3]']" in message
    assert message.startswith("the tokenizer lacks")  # no source given -> no " of ..."


def test_from_tokenizer_token_mapped_to_unk_counts_as_missing():
    ids = {tok: 10 + k for k, tok in enumerate(ALL_TOKENS)}
    ids["[Relevant]"] = 0
    stub = _StubTokenizer({"<unk>": 0, **ids}, unk_token_id=0)
    with pytest.raises(VocabError) as info:
        ReflectionVocab.from_tokenizer(stub)
    assert "['[Relevant]']" in str(info.value)


def test_from_tokenizer_shared_id_raises():
    ids = {tok: 10 + k for k, tok in enumerate(ALL_TOKENS)}
    ids["[Utility:5]"] = ids["[Utility:4]"]
    stub = _StubTokenizer({"<unk>": 0, **ids}, unk_token_id=0)
    with pytest.raises(VocabError, match="maps several reflection tokens to one id"):
        ReflectionVocab.from_tokenizer(stub, source="x")


def test_from_tokenizer_stub_success():
    ids = {tok: 32000 + k for k, tok in enumerate(ALL_TOKENS)}
    stub = _StubTokenizer({"<unk>": 0, "<pad>": 32015, **ids}, unk_token_id=0)
    vocab = ReflectionVocab.from_tokenizer(stub)
    assert dict(vocab.ids) == ids
    assert vocab["[Retrieval]"] == 32001
    assert vocab["[No support / Contradictory]"] == 32014


def test_vocab_error_is_value_error():
    assert issubclass(VocabError, ValueError)
