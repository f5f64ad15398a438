"""Retriever with a one-hot embedder (dspy-style), and passage_retrieval.py end to end on a tiny BERT."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from selfrag.errors import ConfigError, DataFormatError  # noqa: E402
from selfrag.retrieval.embeddings import read_embedding_shard, write_embedding_shard  # noqa: E402
from selfrag.retrieval.encoder import TextEncoder  # noqa: E402
from selfrag.retrieval.index import FaissIndex  # noqa: E402
from selfrag.retrieval.passages import PassageStore  # noqa: E402
from selfrag.retrieval.pipeline import RetrievalConfig  # noqa: E402
from selfrag.retrieval.retriever import Retriever  # noqa: E402
from selfrag.retrieval.testing import CORPUS, build_tiny_bert, one_hot_embedder, write_tsv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "retrieval_lm" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


retrieval_script = load_script("passage_retrieval")
embedding_script = load_script("generate_passage_embeddings")

TITLES = ["Hamlet", "Paris", "Kyoto", "Everest", "Curie", "Jaws", "Water", "Moon"]
PASSAGES = [{"id": str(10 * (i + 1)), "title": t, "text": line} for i, (t, line) in
            enumerate(zip(TITLES, CORPUS.splitlines()))]
VOCAB = ["shakespeare", "france", "japan", "mountain", "radioactivity", "spielberg", "boils", "orbits"]


def one_hot_retriever(passages=PASSAGES):
    embed = one_hot_embedder(VOCAB)
    index = FaissIndex(len(VOCAB))
    index.index_data([p["id"] for p in passages], embed([p["text"] for p in passages]))
    return Retriever(embed, index, passages)


def test_one_hot_retriever_returns_the_exact_passages_ranked():
    retriever = one_hot_retriever()
    results = retriever.search(["Which mountain is the highest?", "Who directed Jaws, Spielberg?",
                                "What orbits the Earth, and is Paris in France?"], k=2)
    assert results[0][0] == {"id": "40", "title": "Everest", "text": PASSAGES[3]["text"], "score": 1.0}
    assert results[1][0]["id"] == "60"
    assert {r["id"] for r in results[2]} == {"20", "80"} and all(r["score"] == 1.0 for r in results[2])
    assert retriever.search_document("spielberg", 1)[0]["title"] == "Jaws"
    with pytest.raises(ConfigError, match="list of queries"):
        retriever.search("a single string", 1)


def test_scores_are_descending_and_k_larger_than_the_corpus():
    hits = one_hot_retriever().search(["france japan japan"], k=50)[0]
    assert [h["id"] for h in hits[:2]] == ["30", "20"] and len(hits) == 8
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny BERT, a TSV corpus, its embeddings in 2 shards (made by the CLI) and an eval file."""
    root = tmp_path_factory.mktemp("retrieval_cli")
    model = str(build_tiny_bert(root / "bert"))
    corpus = str(write_tsv(root / "psgs.tsv", PASSAGES))
    for shard in ("0", "1"):
        assert embedding_script.main(["--model_name_or_path", model, "--passages", corpus, "--output_dir",
                                      str(root / "emb"), "--num_shards", "2", "--shard_id", shard]) == 0
    items = [{"question": "Who wrote Hamlet?", "answers": ["Shakespeare"], "id": 1},
             {"instruction": "Name the capital of France.", "id": 2},
             {"question": "Is Kyoto in Japan?", "ctxs": [{"id": "old", "text": "replaced"}], "id": 3}]
    data = root / "eval.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    return {"root": root, "model": model, "corpus": corpus, "emb": str(root / "emb" / "*"), "data": str(data),
            "items": items}


def expected_ranking(setup, queries, k):
    """Brute force with the same encoder over the embedding files: ids of the top-k per query."""
    encoder = TextEncoder.from_pretrained(setup["model"], device="cpu")
    shards = [read_embedding_shard(setup["root"] / "emb" / f"passages_0{i}") for i in range(2)]
    ids = sum((s[0] for s in shards), [])
    scores = encoder.encode_queries(queries) @ np.concatenate([s[1] for s in shards]).T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores], scores


def base(setup, *extra):
    return ["--model_name_or_path", setup["model"], "--passages", setup["corpus"],
            "--passages_embeddings", setup["emb"], *extra]


def test_batch_mode_writes_items_with_ranked_ctxs(setup, tmp_path):
    out = tmp_path / "out"
    assert retrieval_script.main(base(setup, "--data", setup["data"], "--output_dir", str(out), "--n_docs", "3")) == 0
    written = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [w["id"] for w in written] == [1, 2, 3] and written[0]["answers"] == ["Shakespeare"]
    queries = ["Who wrote Hamlet?", "Name the capital of France.", "Is Kyoto in Japan?"]
    expected, _ = expected_ranking(setup, queries, 3)
    by_id = {p["id"]: p for p in PASSAGES}
    for item, ids in zip(written, expected):
        ctxs = item["ctxs"]
        assert [c["id"] for c in ctxs] == ids
        assert all(set(c) == {"id", "title", "text", "score"} | ({"hasanswer"} if "answers" in item else set()) for c in ctxs)
        assert all(c["title"] == by_id[c["id"]]["title"] and c["text"] == by_id[c["id"]]["text"] for c in ctxs)
        scores = [float(c["score"]) for c in ctxs]
        assert all(isinstance(c["score"], str) for c in ctxs) and scores == sorted(scores, reverse=True)
    assert (out / "eval.jsonl.config.json").is_file()


def test_single_query_mode_prints_ranked_passages(setup, capsys):
    assert retrieval_script.main(base(setup, "--query", "Who wrote Hamlet?", "--n_docs", "2")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected, scores = expected_ranking(setup, ["Who wrote Hamlet?"], 2)
    assert [h["id"] for h in lines] == expected[0] and [h["rank"] for h in lines] == [1, 2]
    assert lines[0]["score"] == pytest.approx(float(scores[0].max()), rel=1e-5)


def test_save_or_load_index_with_a_compressed_factory(setup, tmp_path, caplog):
    index_dir = tmp_path / "index"
    def args(name):
        return base(setup, "--data", setup["data"], "--output_file", str(tmp_path / name), "--n_docs", "2",
                    "--index_factory", "SQ8", "--save_or_load_index", "--index_dir", str(index_dir))

    assert retrieval_script.main(args("a.json")) == 0
    assert {p.name for p in index_dir.iterdir()} == {"index.faiss", "index_ids.npy", "index_config.json"}
    assert json.loads((index_dir / "index_config.json").read_text())["factory"] == "SQ8"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selfrag"):
        assert retrieval_script.main(args("b.json")) == 0
    assert "loading index from" in caplog.text and "training" not in caplog.text
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert [c["id"] for i in first for c in i["ctxs"]] == [c["id"] for i in second for c in i["ctxs"]]
    with pytest.raises(ConfigError, match="holds a 'SQ8' index, not 'HNSW8'"):
        retrieval_script.main(base(setup, "--query", "x", "--index_factory", "HNSW8", "--save_or_load_index",
                                   "--index_dir", str(index_dir)))


def test_retriever_from_paths(setup, tmp_path):
    retriever = Retriever.from_paths(setup["model"], setup["corpus"], index_dir=str(tmp_path / "idx"),
                                     passages_embeddings=setup["emb"], device="cpu")
    expected, _ = expected_ranking(setup, ["Who wrote Hamlet?"], 3)
    assert [h["id"] for h in retriever.search(["Who wrote Hamlet?"], 3)[0]] == expected[0]
    assert isinstance(retriever.passages, PassageStore)


def test_clear_errors(setup, tmp_path):
    with pytest.raises(ConfigError, match="exactly one of --query"):
        RetrievalConfig(model_name_or_path="m", passages="p", passages_embeddings="e")
    with pytest.raises(ConfigError, match="--output_dir or --output_file"):
        RetrievalConfig(model_name_or_path="m", passages="p", passages_embeddings="e", data="d.jsonl")
    # embeddings that do not match the passages
    other = write_tsv(tmp_path / "other.tsv", [{"id": "999", "title": "t", "text": "x"}])
    with pytest.raises(DataFormatError, match=r"passage ids .* are not in .*other\.tsv"):
        retrieval_script.main(["--model_name_or_path", setup["model"], "--passages", str(other),
                               "--passages_embeddings", setup["emb"], "--query", "x"])
    # an encoder of another dimension than the index
    emb = tmp_path / "emb384"
    write_embedding_shard(emb / "passages_00", [p["id"] for p in PASSAGES], np.ones((8, 384), dtype=np.float16))
    with pytest.raises(ConfigError, match="makes 32-d vectors but the .* 384-d"):
        retrieval_script.main(["--model_name_or_path", setup["model"], "--passages", setup["corpus"],
                               "--passages_embeddings", str(emb / "*"), "--query", "x"])
    with pytest.raises(ConfigError, match="--projection_size is 768"):
        retrieval_script.main(base(setup, "--query", "x", "--projection_size", "768"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answers": ["x"]}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:1: no 'question' or 'instruction'"):
        retrieval_script.main(base(setup, "--data", str(bad), "--output_dir", str(tmp_path)))
    with pytest.raises(ConfigError, match="would overwrite the input"):
        retrieval_script.main(base(setup, "--data", setup["data"], "--output_dir", str(Path(setup["data"]).parent)))
    assert retrieval_script.run_main(retrieval_script.main, base(
        setup, "--data", str(tmp_path / "missing*.jsonl"), "--output_dir", str(tmp_path))) == 2


@pytest.mark.parametrize("script", [retrieval_script, embedding_script])
def test_help_lists_the_original_flags(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    flags = (["--passages_embeddings", "--data", "--output_dir", "--n_docs", "--per_gpu_batch_size",
              "--question_maxlength", "--save_or_load_index", "--indexing_batch_size", "--projection_size",
              "--n_subquantizers", "--n_bits", "--lowercase", "--normalize_text", "--index_factory", "--query"]
             if script is retrieval_script else
             ["--model_name_or_path", "--output_dir", "--passages", "--shard_id", "--num_shards",
              "--per_gpu_batch_size", "--passage_maxlength", "--lowercase", "--normalize_text", "--prefix",
              "--no_fp16", "--no_title"])
    for flag in flags:
        assert flag in text


def test_default_search_params_scale_with_the_index():
    from selfrag.retrieval.pipeline import apply_search_params, default_search_params

    assert default_search_params(FaissIndex(8, "IVF2048,Flat"))["nprobe"] == 32  # 1/64 of the lists
    assert default_search_params(FaissIndex(8, "OPQ4_8,IVF256,PQ4"))["nprobe"] == 16  # at least 16
    assert default_search_params(FaissIndex(8, "IVF4,Flat"))["nprobe"] == 4  # at most all of them
    assert "nprobe" not in default_search_params(FaissIndex(8, "HNSW8"))
    indexes = {factory: FaissIndex(8, factory) for factory in ("Flat", "HNSW8", "IVF4,Flat", "IVF4,PQ2,RFlat")}
    for factory, index in indexes.items():
        apply_search_params(index, {"nprobe": 2} if "IVF" in factory else None)  # defaults never raise
        assert index.search_params.get("nprobe") == (2 if "IVF" in factory else None)
    assert indexes["HNSW8"].index.hnsw.efSearch == 256  # FAISS's own default is 16
    assert indexes["IVF4,PQ2,RFlat"].search_params["k_factor_rf"] == 4


def test_index_preset_is_sized_to_the_corpus_saved_and_loaded_by_name(setup, tmp_path, caplog):
    index_dir = tmp_path / "index"

    def args(name, *extra):
        return base(setup, "--data", setup["data"], "--output_file", str(tmp_path / name), "--n_docs", "2",
                    "--save_or_load_index", "--index_dir", str(index_dir), *extra)

    with caplog.at_level(logging.INFO, logger="selfrag"):
        assert retrieval_script.main(args("a.json", "--index_preset", "compressed")) == 0
    saved = json.loads((index_dir / "index_config.json").read_text())
    n = len(PASSAGES)
    assert (saved["factory"], saved["spec"], saved["ntotal"]) == ("IVF1,SQ8", "compressed", n)  # < 78 vectors: 1 list
    assert f"index compressed for {n} vectors: IVF1,SQ8" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="selfrag"):  # the same preset name, or the resolved string, loads it
        assert retrieval_script.main(args("b.json", "--index_preset", "compressed")) == 0
        assert retrieval_script.main(args("c.json", "--index_factory", "IVF1,SQ8")) == 0
    assert "training" not in caplog.text
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert [c["id"] for i in first for c in i["ctxs"]] == [c["id"] for i in second for c in i["ctxs"]]
    with pytest.raises(ConfigError, match="holds a 'IVF1,SQ8' index, not 'small'"):
        retrieval_script.main(args("d.json", "--index_preset", "small"))
    with pytest.raises(ConfigError, match="--index_preset or --index_factory, not both"):
        retrieval_script.main(args("e.json", "--index_preset", "small", "--index_factory", "Flat"))
