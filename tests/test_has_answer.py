"""`hasanswer` (DPR's token match) and top-k answer recall in passage_retrieval.py's batch mode.

Run: .venv/bin/python -m pytest -q tests/test_has_answer.py
"""

from __future__ import annotations

import json
import logging
import unicodedata

import numpy as np
import pytest

from selfrag.errors import DataFormatError
from selfrag.retrieval.has_answer import AnswerRecall, add_hasanswer, gold_answers, has_answer, tokenize


def test_tokenize_splits_like_dprs_simple_tokenizer():
    assert tokenize("The U.S. capital, Washington D.C.") == [
        "the",
        "u",
        ".",
        "s",
        ".",
        "capital",
        ",",
        "washington",
        "d",
        ".",
        "c",
        ".",
    ]
    assert tokenize("Jane Austen's 2nd novel (1813)") == ["jane", "austen", "'", "s", "2nd", "novel", "(", "1813", ")"]
    # whitespace of any kind and control characters separate and vanish; symbols are tokens of their own
    assert tokenize("a\tb\u00a0c\nd\u200be $5+x") == ["a", "b", "c", "d", "e", "$", "5", "+", "x"]
    assert tokenize("") == [] and tokenize("  \n") == []


def test_accents_compare_in_nfd_form_and_are_not_stripped():
    composed, decomposed = "Beyonc\u00e9", "Beyonce\u0301"
    assert unicodedata.normalize("NFD", composed) == decomposed
    assert tokenize(composed) == tokenize(decomposed) == ["beyonce\u0301"]  # the mark stays in the word
    assert has_answer([decomposed], f"{composed} released Lemonade.")
    assert has_answer([composed], f"{decomposed} released Lemonade.")
    assert not has_answer(["Beyonce"], f"{composed} released Lemonade.")  # DPR does not remove accents
    assert has_answer(["Tomas Tranströmer"], "TOMAS TRANSTRÖMER was a Swedish poet.")  # upper-case accented letters


def test_case_punctuation_and_multi_token_answers():
    text = "Nineteen Eighty-Four is a novel by George Orwell, published in 1949."
    assert has_answer(["george orwell"], text)
    assert has_answer(["GEORGE ORWELL"], text)
    assert has_answer(["Eighty-Four"], text)  # "-" is a token in both
    assert has_answer(["Eighty - Four"], text)  # spacing around punctuation does not matter
    assert has_answer(["Orwell"], text) and has_answer(["1949"], text)
    assert not has_answer(["George and Orwell"], text)  # the tokens must be contiguous
    assert not has_answer(["Orwel"], text)  # whole tokens only
    assert not has_answer(["Eighty Four"], text)  # the "-" token is missing in between
    assert not has_answer(["Austen"], "Austenite is a phase of iron.")
    assert has_answer(["U.S."], "Made in the U.S.A. today")  # u . s . then a .
    assert not has_answer(["USA"], "Made in the U.S.A. today")
    assert has_answer(["Blair", "Orwell"], text)  # any of the answers
    assert not has_answer([], text)
    assert not has_answer([""], text) and not has_answer(["   "], text)  # no token: matches nothing


def test_gold_answers_fields_and_errors():
    assert gold_answers({"answers": ["poet", "poetess"]}) == ["poet", "poetess"]
    assert gold_answers({"answer": "Paris"}) == ["Paris"]
    assert gold_answers({"golds": ["true"]}) == ["true"]
    assert gold_answers({"answers": None, "answer": ["x"]}) == ["x"]  # the first field that is set
    assert gold_answers({"question": "q", "answerKey": "C"}) is None
    with pytest.raises(DataFormatError, match=r"eval\.jsonl:7: field 'answers' must be a string or a list of strings"):
        gold_answers({"_where": "eval.jsonl:7", "answers": [1, 2]})
    with pytest.raises(DataFormatError, match=r"field 'golds'"):
        gold_answers({"golds": {"a": 1}})


def test_add_hasanswer_marks_each_ctx_and_counts_the_first_hit():
    items = [
        {"answers": ["Shakespeare"], "ctxs": [{"text": "Hamlet, by Shakespeare."}, {"text": "Paris."}]},
        {"answer": "Kyoto", "ctxs": [{"text": "Tokyo."}, {"text": "Kyoto, Japan."}]},
        {"golds": ["Mars"], "ctxs": [{"text": "Venus."}, {"text": None}]},
        {"question": "no golds", "ctxs": [{"text": "Kyoto"}]},
    ]
    stats = add_hasanswer(items, n_docs=2)
    assert [[c.get("hasanswer") for c in item["ctxs"]] for item in items] == [
        [True, False],
        [False, True],
        [False, False],
        [None],
    ]
    assert "hasanswer" not in items[3]["ctxs"][0]
    assert (stats.n_items, stats.n_questions, stats.first_hits) == (4, 3, [0, 1, None])
    assert stats.recall() == {"1": 1 / 3, "2": 2 / 3}
    assert stats.summary() == "answer recall over 3 of 4 items with gold answers: R@1: 0.3333 R@2: 0.6667"


def test_recall_depths_go_up_to_the_runs_k():
    assert AnswerRecall(n_docs=100).depths() == [1, 5, 20, 100]
    assert AnswerRecall(n_docs=25).depths() == [1, 5, 20, 25]
    assert AnswerRecall(n_docs=5).depths() == [1, 5]
    assert AnswerRecall(n_docs=1).depths() == [1]
    assert AnswerRecall(n_docs=10).recall() == {}  # no question with answers


# --- batch mode of passage_retrieval.py (retrieve_files) with an exact, model-free embedder -----------------------

PASSAGES = [
    {"id": "1", "title": "Hamlet", "text": "Hamlet is a tragedy by William Shakespeare."},
    {"id": "2", "title": "Paris", "text": "Paris is the capital of France."},
    {"id": "3", "title": "Kyoto", "text": "Kyoto is a city in Japan."},
    {"id": "4", "title": "Everest", "text": "Everest is in Nepal."},
]
# Passage i is the unit vector e_i; each query's weights fix a strict ranking.
QUERIES = {
    "Who wrote Hamlet?": [0.9, 0.3, 0.2, 0.1],  # 1, 2, 3
    "Where is Kyoto?": [0.3, 0.9, 0.5, 0.7],  # 2, 4, 3
    "Highest mountain?": [0.1, 0.2, 0.3, 0.9],  # 4, 3, 2
    "Name a city.": [0.2, 0.9, 0.8, 0.1],  # 2, 3, 1
}


def embed(texts):
    return np.array([QUERIES[t] for t in texts], dtype=np.float32)


def test_batch_mode_adds_hasanswer_and_writes_the_recall(tmp_path, caplog):
    pytest.importorskip("faiss")
    from selfrag.retrieval.index import FaissIndex
    from selfrag.retrieval.pipeline import RetrievalConfig, retrieve_files
    from selfrag.retrieval.retriever import Retriever

    index = FaissIndex(4)
    index.index_data([p["id"] for p in PASSAGES], np.eye(4, dtype=np.float32))
    retriever = Retriever(embed, index, PASSAGES)
    items = [
        {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare"]},
        {"question": "Where is Kyoto?", "answer": "Japan"},
        {"question": "Highest mountain?", "golds": ["Mount Everest"]},
        {"instruction": "Name a city."},
    ]
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    out = tmp_path / "out" / "eval.jsonl"
    config = RetrievalConfig(
        model_name_or_path="m",
        passages="p.tsv",
        passages_embeddings="e/*",
        data=str(data),
        output_file=str(out),
        n_docs=3,
    )
    with caplog.at_level(logging.INFO, logger="selfrag"):
        assert retrieve_files(config, retriever) == [out]
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [[c["id"] for c in w["ctxs"]] for w in written] == [
        ["1", "2", "3"],
        ["2", "4", "3"],
        ["4", "3", "2"],
        ["2", "3", "1"],
    ]
    assert [[c.get("hasanswer") for c in w["ctxs"]] for w in written] == [
        [True, False, False],
        [False, False, True],
        [False, False, False],
        [None, None, None],
    ]
    assert all(set(c) == {"id", "title", "text", "score"} for c in written[3]["ctxs"])
    recall = json.loads((tmp_path / "out" / "eval.jsonl.recall.json").read_text())
    assert recall["n_items"] == 4 and recall["n_questions"] == 3 and recall["n_docs"] == 3
    assert recall["recall"] == {"1": pytest.approx(1 / 3), "3": pytest.approx(2 / 3)}
    assert "answer recall over 3 of 4 items with gold answers: R@1: 0.3333 R@3: 0.6667" in caplog.text

    # no gold answers anywhere: no hasanswer, no recall file
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"question": "Who wrote Hamlet?"}) + "\n", encoding="utf-8")
    out2 = tmp_path / "out" / "plain.jsonl"
    config = RetrievalConfig(
        model_name_or_path="m",
        passages="p.tsv",
        passages_embeddings="e/*",
        data=str(plain),
        output_file=str(out2),
        n_docs=2,
    )
    retrieve_files(config, retriever)
    assert "hasanswer" not in json.loads(out2.read_text())["ctxs"][0]
    assert not (tmp_path / "out" / "plain.jsonl.recall.json").exists()

    # a malformed answers field fails before any search, naming the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Who wrote Hamlet?", "answers": [42]}) + "\n", encoding="utf-8")
    config = RetrievalConfig(
        model_name_or_path="m",
        passages="p.tsv",
        passages_embeddings="e/*",
        data=str(bad),
        output_file=str(tmp_path / "out" / "bad.jsonl"),
        n_docs=2,
    )
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:1: field 'answers'"):
        retrieve_files(config, retriever)


def test_docstring_examples_run():
    import doctest

    import selfrag.retrieval.has_answer

    assert doctest.testmod(selfrag.retrieval.has_answer).failed == 0
