"""Reflection tokens + pad for tokenizers of four styles built in code, and mean-initialised embedding rows."""

from __future__ import annotations

import pytest
import torch

from selfrag.errors import VocabError
from selfrag.testing import CORPUS
from selfrag.tokens import ALL_TOKENS, PARAGRAPH_END, PARAGRAPH_START, RETRIEVAL, ReflectionVocab
from selfrag.training.encode import encode_example
from selfrag.training.vocab import add_reflection_tokens, resize_and_init_embeddings


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is faster, and far steadier on a shared 2-core machine (no OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bpe(pre_tokenizer, decoder, special, byte_fallback=False, vocab_size=300, unk=None):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk, byte_fallback=byte_fallback))
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoder
    alphabet = pre_tokenizers.ByteLevel.alphabet() if isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) else []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return tok


def llama2_style():
    """SentencePiece-like (Metaspace, byte fallback) as Llama-2 / Mistral: <unk> <s> </s>, BOS prepended, no pad."""
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]  # ids 3..258, as in Llama-2's SentencePiece model
    decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="first")])
    tok = _bpe(
        pre_tokenizers.Metaspace(prepend_scheme="first"),
        decoder,
        ["<unk>", "<s>", "</s>", *byte_tokens],
        byte_fallback=True,
        vocab_size=500,
        unk="<unk>",
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def llama3_style():
    """Byte-level BPE as Llama-3: <|begin_of_text|> prepended, <|end_of_text|>, reserved specials, no unk, no pad."""
    from tokenizers import decoders, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|eot_id|>"]
    tok = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(), special)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        extra_special_tokens=["<|reserved_special_token_0|>", "<|eot_id|>"],
    )


def qwen_style():
    """Byte-level BPE as Qwen2.5: no BOS, eos <|im_end|>, pad <|endoftext|> already set, chat specials."""
    from tokenizers import decoders, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(), special)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def gpt2_style():
    """Byte-level BPE as GPT-2: bos = eos = unk = <|endoftext|>, nothing prepended, no pad."""
    from tokenizers import decoders, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = _bpe(pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel(), ["<|endoftext|>"])
    eot = "<|endoftext|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)


STYLES = {"llama2": llama2_style, "llama3": llama3_style, "qwen2.5": qwen_style, "gpt2": gpt2_style}
TEXT = "[Retrieval]<paragraph>Paris\nThe capital of France is Paris.</paragraph>[Relevant]Paris.[Utility:5]"


@pytest.mark.parametrize("style", STYLES)
def test_tokens_added_in_order_with_pad_after_and_each_one_id(style):
    tok = STYLES[style]()
    old_len, had_pad = len(tok), tok.pad_token is not None
    specials_before = set(tok.all_special_tokens)
    added = add_reflection_tokens(tok)
    assert added.old_len == old_len and added.pad_added is not had_pad
    assert [added.vocab[t] for t in ALL_TOKENS] == list(range(old_len, old_len + 15))
    assert added.new_token_ids == tuple(range(old_len, old_len + 15 + (not had_pad)))
    if not had_pad:
        assert tok.pad_token == "<pad>" and tok.pad_token_id == old_len + 15
    assert specials_before <= set(tok.all_special_tokens)  # the tokenizer's own specials stay special
    ids = tok.encode(TEXT, add_special_tokens=False)
    assert ids[:2] == [added.vocab[RETRIEVAL], added.vocab[PARAGRAPH_START]]
    assert tok.decode(ids, skip_special_tokens=False) == TEXT
    plain = tok.decode(ids, skip_special_tokens=True)  # reflection tokens are special: dropped, as vllm's default
    assert "The capital of France is Paris." in plain and not any(t in plain for t in ALL_TOKENS)
    assert ReflectionVocab.from_tokenizer(tok) == added.vocab
    # idempotent: a tokenizer that has them gets nothing new
    again = add_reflection_tokens(tok)
    assert again.new_token_ids == () and again.vocab == added.vocab and len(tok) == old_len + len(added.new_token_ids)


@pytest.mark.parametrize("style", STYLES)
def test_encoding_masks_the_passage_for_every_style(style):
    tok = STYLES[style]()
    add_reflection_tokens(tok)
    enc = encode_example({"instruction": "Where is Paris?", "output": TEXT}, tok, 512)
    ids, labels = enc["input_ids"], enc["labels"]
    start = ids.index(tok.convert_tokens_to_ids(PARAGRAPH_START))
    end = ids.index(tok.convert_tokens_to_ids(PARAGRAPH_END))
    assert all(label == -100 for label in labels[start + 1 : end])
    assert labels[start] == ids[start] and labels[end:] == ids[end:] and ids[-1] == tok.eos_token_id
    prompt_len = len(tok("### Instruction:\nWhere is Paris?\n\n### Response:\n")["input_ids"])
    assert labels[:prompt_len] == [-100] * prompt_len and labels[prompt_len] != -100
    assert (ids[0] == tok.bos_token_id) is (style in ("llama2", "llama3"))


def test_llama2_sized_vocabulary_gets_the_released_ids():
    """32000 tokens -> reflection tokens 32000..32014 and <pad> 32015, as selfrag/selfrag_llama2_7b (§2.3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 32000)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    added = add_reflection_tokens(fast)
    assert added.vocab["[No Retrieval]"] == 32000 and added.vocab["[Relevant]"] == 32004
    assert added.vocab["<paragraph>"] == 32005 and added.vocab["[Utility:1]"] == 32007
    assert added.vocab["[No support / Contradictory]"] == 32014 and fast.pad_token_id == 32015 and len(fast) == 32016


def test_a_tokenizer_that_splits_a_token_is_refused():
    tok = gpt2_style()
    tok.add_tokens(["[Retrieval]"])  # a plain added token, matched by the tokenizer: fine
    add_reflection_tokens(tok)

    class Splitting:  # a tokenizer stub whose encode splits "[Relevant]"
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __len__(self):
            return len(self.inner)

        def encode(self, text, add_special_tokens=False):
            ids = self.inner.encode(text, add_special_tokens=add_special_tokens)
            return ids * 2 if text == "[Relevant]" else ids

    with pytest.raises(VocabError, match=r"\[Relevant\]"):
        add_reflection_tokens(Splitting(tok))


def _tiny_llama(vocab_rows: int, tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_rows,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


@pytest.mark.parametrize(
    "style,tied,extra_rows", [("llama2", False, 0), ("gpt2", True, 0), ("qwen2.5", True, 64), ("llama3", False, 0)]
)
def test_new_rows_are_the_mean_of_the_old_rows_input_and_output(style, tied, extra_rows):
    tok = STYLES[style]()
    rows = len(tok) + extra_rows  # Qwen2.5 pads its embedding matrix beyond the tokenizer
    model = _tiny_llama(rows, tied)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    added = add_reflection_tokens(tok)
    resize_and_init_embeddings(model, len(tok), added.new_token_ids, added.old_len)
    emb_in, emb_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb_in.shape[0] == max(rows, len(tok)) == emb_out.shape[0] == model.config.vocab_size
    new = list(added.new_token_ids)
    torch.testing.assert_close(emb_in[new], before_in[: added.old_len].mean(0).expand(len(new), -1))
    torch.testing.assert_close(emb_out[new], before_out[: added.old_len].mean(0).expand(len(new), -1))
    torch.testing.assert_close(emb_in[: added.old_len], before_in[: added.old_len])
    torch.testing.assert_close(emb_out[: added.old_len], before_out[: added.old_len])
    assert (emb_in.data_ptr() == emb_out.data_ptr()) is tied
    assert torch.isfinite(model(torch.tensor([new])).logits).all()


def test_default_init_leaves_new_rows_alone():
    tok = llama2_style()
    model = _tiny_llama(len(tok), tied=False)
    added = add_reflection_tokens(tok)
    resize_and_init_embeddings(model, len(tok), added.new_token_ids, added.old_len, init="default")
    mean = model.get_input_embeddings().weight[: added.old_len].mean(0)
    assert not torch.allclose(model.get_input_embeddings().weight[added.new_token_ids[0]], mean)
