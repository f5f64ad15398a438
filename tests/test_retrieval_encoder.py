"""TextEncoder on a tiny BERT built in code: Contriever mean pooling (exact), CLS, normalisation, text preparation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from selfrag.errors import ConfigError
from selfrag.retrieval.encoder import (
    TextEncoder,
    as_query_encoder,
    normalize_text,
    passage_text,
    preprocess,
    sentence_transformers_defaults,
)
from selfrag.retrieval.testing import build_tiny_bert

TEXTS = ["Hamlet is a tragedy written by William Shakespeare", "Paris", "Kyoto is a city in Japan", "the Moon"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", batch_size=3)


def hand_mean_pool(encoder: TextEncoder, text: str) -> np.ndarray:
    """One text, no padding: the plain mean of its token states (contriever.py:46-49 without any mask)."""
    ids = encoder.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**ids).last_hidden_state[0]  # [t, d]
    return (hidden.sum(0) / hidden.shape[0]).numpy()


def test_mean_pooling_matches_a_hand_computation_across_padded_batches(encoder):
    # Batches of 3 with texts of 1..8 words: every batch pads; the padded positions must not count.
    got = encoder.encode_queries(TEXTS)
    assert got.shape == (4, 32) and got.dtype == np.float32
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(got[row], hand_mean_pool(encoder, text), atol=1e-6)
    # Contriever does not normalise: raw inner products, norms are not 1.
    assert not np.allclose(np.linalg.norm(got, axis=1), 1.0)


def test_batch_size_and_order_do_not_change_embeddings(encoder, tiny_bert_dir):
    one_by_one = TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", batch_size=1)
    np.testing.assert_allclose(encoder.encode_queries(TEXTS), one_by_one.encode_queries(TEXTS), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_queries(TEXTS[::-1]), encoder.encode_queries(TEXTS)[::-1], atol=1e-6)


def test_cls_pooling_and_l2_normalisation(tiny_bert_dir, encoder):
    cls_enc = TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", pooling="cls", normalize=True)
    got = cls_enc.encode_queries(TEXTS[:2])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    ids = encoder.tokenizer(TEXTS[0], return_tensors="pt")
    with torch.no_grad():
        first = encoder.model(**ids).last_hidden_state[0, 0].numpy()
    np.testing.assert_allclose(got[0], first / np.linalg.norm(first), atol=1e-6)


def test_passages_are_title_space_text_and_queries_get_the_same_preprocessing(tiny_bert_dir):
    enc = TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", lowercase=True, normalize_text=True,
                                      query_prefix="query: ", passage_prefix="passage: ")
    passage = {"id": "1", "title": "Hamlet", "text": "A “tragedy” — by Shakespeare"}
    assert enc.passage_texts([passage]) == ['passage: hamlet a "tragedy" - by shakespeare']
    assert enc.query_texts(["Who wrote ‘Hamlet’?"]) == ["query: who wrote 'hamlet'?"]
    np.testing.assert_allclose(enc.encode_passages([passage]), enc.embed(enc.passage_texts([passage]), 512))
    plain = TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", use_title=False)
    assert plain.passage_texts([passage]) == ["A “tragedy” — by Shakespeare"]


def test_passage_text_and_preprocess_follow_the_original():
    assert passage_text({"title": "Paris", "text": "is in France"}) == "Paris is in France"
    assert passage_text({"text": "no title"}) == "no title"
    assert passage_text({"title": "Paris", "text": "x"}, use_title=False) == "x"
    # lowercase first, then normalize (generate_passage_embeddings.py:36-40)
    assert preprocess("ÉTÉ – Ok", lowercase=True, normalize=True) == "été - ok"


@pytest.mark.parametrize("raw, expected", [
    ("“Don’t” — 5…", "\"Don't\" - 5..."),
    ("a\u00adb\u0001c", "abc"),
    ("x\u000by\u000cz\u0085w", "x y z w"),
    ("1\u22122 \uff0d 3\u207b", "1-2 - 3-"),
    ("\u2032\u2033\u2034\u2057", "'" + "''" + "'''" + "''''"),
    ("a\u2044b\u2215c", "a/b/c"),
    ("wave\u301c\uff5e", "wave~~"),
    ("one . . . two", "one ... two"),
    ("plain ASCII stays", "plain ASCII stays"),
])
def test_normalize_text_is_contrievers_mapping(raw, expected):
    assert normalize_text(raw) == expected


def test_sentence_transformers_folder_declares_pooling_and_normalisation(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    assert sentence_transformers_defaults(tmp_path) == {"normalize": True, "pooling": "cls"}
    assert sentence_transformers_defaults(tmp_path / "missing") == {}


def test_callable_encoders_and_bad_inputs(tmp_path):
    encode = as_query_encoder(lambda qs: [[1.0, 0.0]] * len(qs))
    assert encode(["a", "b"]).shape == (2, 2)
    with pytest.raises(ConfigError, match="shape"):
        as_query_encoder(lambda qs: np.zeros(3))(["a"])
    with pytest.raises(ConfigError, match="callable"):
        as_query_encoder(42)
    with pytest.raises(ConfigError, match="cannot load the encoder"):
        TextEncoder.from_pretrained(str(tmp_path / "no_such_model"), device="cpu")
