"""Tiny Self-RAG-shaped models built in code, for tests, benchmarks and demos without a model hub.

`build_tiny_model(path)` trains a byte-level BPE tokenizer on a few sentences, adds the reflection tokens and
saves a randomly initialised Llama next to it, in the HF layout that both transformers and vllm load.
The head dimension is 64 because vllm's CPU attention kernel rejects smaller ones.
"""

from __future__ import annotations

from pathlib import Path

from selfrag.tokens import ALL_TOKENS

CORPUS = """\
### Instruction:
Who wrote the novel Pride and Prejudice? The answer is Jane Austen, an English novelist.
### Response:
The capital of France is Paris. Paris is on the Seine river. Mount Everest is the highest mountain on Earth.
Is the following statement correct or not? Say true if it's correct; otherwise say false.
Given four answer candidates, A, B, C and D, choose the best answer choice.
Water boils at 100 degrees Celsius at sea level. The Moon orbits the Earth. Plants need sunlight to grow.
What is the occupation of Marie Curie? She was a physicist and chemist who studied radioactivity.
In what country is Kyoto? Kyoto is a city in Japan. Who was the director of Jaws? Steven Spielberg.
"""


# Four generator training examples in the released format (passages inside <paragraph>, reflection tokens inline).
TRAIN_ROWS = [
    {
        "instruction": "Who wrote Pride and Prejudice?",
        "input": "",
        "output": "[Retrieval]<paragraph>Pride and Prejudice\nA novel by Jane Austen.</paragraph>[Relevant]Jane Austen "
        "wrote it.[Fully supported][Utility:5]",
    },
    {"instruction": "What is the capital of France?", "input": "", "output": "[No Retrieval]Paris.[Utility:5]"},
    {
        "instruction": "Is the following statement correct or not?",
        "input": "Water boils at 100 degrees.",
        "output": "[Retrieval]<paragraph>Water\nWater boils at 100 degrees Celsius.</paragraph>[Relevant]true"
        "[Fully supported][Utility:4]",
    },
    {"instruction": "In what country is Kyoto?", "input": "", "output": "[No Retrieval]Japan.[Utility:5]"},
]


def build_tiny_tokenizer(vocab_size: int = 400, corpus: str | list[str] = CORPUS, reflection: bool = True):
    """A `PreTrainedTokenizerFast` (byte-level BPE, BOS prepended) with the reflection tokens and `<pad>` added, or,
    with `reflection=False`, a fresh base tokenizer with neither (what training starts from). `corpus`: a text
    (trained on line by line) or the list of training texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus.splitlines() if isinstance(corpus, str) else corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if reflection:
        fast.add_special_tokens({"additional_special_tokens": list(ALL_TOKENS), "pad_token": "<pad>"})
    return fast


def build_tiny_model(
    path: str | Path,
    seed: int = 0,
    logit_scale: float = 8.0,
    num_layers: int = 2,
    hidden_size: int = 64,
    vocab_size: int | None = None,
    corpus: str = CORPUS,
    tokenizer_vocab_size: int = 400,
    reflection: bool = True,
) -> Path:
    """Save a tiny random Llama with the Self-RAG vocabulary to `path` and return it.

    `logit_scale` multiplies the output head so that next-token distributions are peaked: greedy choices then
    have clear margins, and backends that differ by float rounding still agree on them. `vocab_size` pads the
    model's vocabulary beyond the tokenizer's (e.g. 32016, Llama-2's, for benchmarks where its size matters).
    `corpus` and `tokenizer_vocab_size` shape the tokenizer: the default is nearly character-level; a larger
    vocabulary trained on the text to be encoded gives Llama-like token counts (~1.3 tokens a word).
    `reflection=False`: a base model whose tokenizer has neither the reflection tokens nor a pad token (what
    training starts from).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tiny_tokenizer(tokenizer_vocab_size, corpus, reflection=reflection)
    config = LlamaConfig(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 64,
        num_key_value_heads=hidden_size // 64,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


BENCH_MODEL = "random Llama, hidden 256, 4 layers, vocab 32016"


def build_bench_model(path: str | Path, corpus: str) -> Path:
    """The benchmarks' small model (`BENCH_MODEL`): Llama-2's vocabulary size, and a tokenizer trained on `corpus`
    (the benchmark's own passages) so that they get Llama-like token counts (~1.3 tokens a word)."""
    return build_tiny_model(
        path, hidden_size=256, num_layers=4, vocab_size=32016, logit_scale=1.0, corpus=corpus, tokenizer_vocab_size=4000
    )
