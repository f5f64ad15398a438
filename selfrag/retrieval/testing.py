"""Retrieval test doubles built in code: a tiny Contriever-shaped BERT and a one-hot embedder (no model hub)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CORPUS = """\
Hamlet is a tragedy written by William Shakespeare around 1600.
Paris is the capital and largest city of France, on the Seine river.
Kyoto is a city in Japan and was the imperial capital for a thousand years.
Mount Everest is the highest mountain on Earth above sea level.
Marie Curie was a physicist and chemist who studied radioactivity.
Jaws is a film directed by Steven Spielberg about a great white shark.
Water boils at one hundred degrees at sea level.
The Moon orbits the Earth once every month.
"""


def words(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text.lower())


def build_tiny_bert(path: str | Path, corpus: str = CORPUS, hidden_size: int = 32, seed: int = 0) -> Path:
    """Save a random 1-layer BERT (Contriever's architecture, hidden 32, 2 heads) and a WordLevel tokenizer
    (lowercasing, [CLS] ... [SEP]) over the words of `corpus` to `path`; return `path`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = Path(path)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(special)}
    for word in words(corpus):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def one_hot_embedder(vocabulary: Sequence[str]):
    """dspy-style dummy embedder: a text's vector counts the vocabulary words it contains (exact, model-free)."""
    position = {w: i for i, w in enumerate(vocabulary)}

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(vocabulary)), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in words(text):
                if word in position:
                    out[row, position[word]] += 1.0
        return out

    return embed


def write_tsv(path: str | Path, passages: Sequence[dict], header: bool = True) -> Path:
    """A DPR-style TSV (id, text, title) of `passages`, quoted as csv does (like psgs_w100.tsv)."""
    import csv

    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        if header:
            writer.writerow(["id", "text", "title"])
        writer.writerows([p["id"], p["text"], p["title"]] for p in passages)
    return path
