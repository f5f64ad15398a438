"""generate_passage_embeddings: the original's shard files, sharded = unsharded, resume after a kill, torchrun."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

from selfrag.errors import ConfigError, DataFormatError
from selfrag.retrieval.embeddings import (
    EmbeddingConfig,
    distributed_shard,
    embedding_files,
    generate_passage_embeddings,
    read_embedding_shard,
    shard_bounds,
)
from selfrag.retrieval.encoder import TextEncoder
from selfrag.retrieval.testing import CORPUS, build_tiny_bert, write_tsv

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("generate_passage_embeddings",
                                              ROOT / "retrieval_lm" / "generate_passage_embeddings.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

LINES = CORPUS.splitlines()
PASSAGES = [{"id": str(i + 1), "title": LINES[i % len(LINES)].split()[0], "text": LINES[(i * 3) % len(LINES)]}
            for i in range(23)]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return str(build_tiny_bert(tmp_path_factory.mktemp("tiny_bert")))


@pytest.fixture(scope="module")
def encoder(tiny_bert_dir):
    return TextEncoder.from_pretrained(tiny_bert_dir, device="cpu", batch_size=4)


@pytest.fixture()
def corpus(tmp_path):
    return str(write_tsv(tmp_path / "psgs.tsv", PASSAGES))


def config(tiny_bert_dir, corpus, out, **kw):
    return EmbeddingConfig(model_name_or_path=tiny_bert_dir, passages=corpus, output_dir=str(out), **kw)


def test_shard_bounds_are_the_originals():
    assert [shard_bounds(23, i, 3) for i in range(3)] == [(0, 7), (7, 14), (14, 23)]  # last takes the remainder
    assert shard_bounds(5, 0, 1) == (0, 5)
    with pytest.raises(ConfigError):
        shard_bounds(5, 3, 3)


def test_embeddings_match_the_encoder_and_use_title_text(tiny_bert_dir, corpus, encoder, tmp_path):
    path = generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path / "emb", save_every=5), encoder)
    assert path == tmp_path / "emb" / "passages_00"
    with path.open("rb") as handle:  # what the original's passage_retrieval.py does with it
        ids, embeddings = pickle.load(handle)
    assert ids == [p["id"] for p in PASSAGES] and embeddings.shape == (23, 32) and embeddings.dtype == np.float32
    expected = encoder.embed([f"{p['title']} {p['text']}" for p in PASSAGES], 512)
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
    assert not (tmp_path / "emb" / "passages_00.partial").exists()
    assert (tmp_path / "emb" / "passages_00.meta.json").is_file()
    assert embedding_files(str(tmp_path / "emb" / "*")) == [path]  # the glob skips the .meta.json


def test_shards_concatenate_to_the_unsharded_result(tiny_bert_dir, corpus, encoder, tmp_path):
    whole = generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path / "one"), encoder)
    parts = [generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path / "three", shard_id=i, num_shards=3,
                                                save_every=4), encoder) for i in range(3)]
    ids, embeddings = read_embedding_shard(whole)
    shards = [read_embedding_shard(p) for p in parts]
    assert [len(s[0]) for s in shards] == [7, 7, 9]
    assert sum((s[0] for s in shards), []) == ids
    np.testing.assert_allclose(np.concatenate([s[1] for s in shards]), embeddings, atol=1e-6)


class KilledAfter:
    """Wraps an encoder; raises (as a kill would stop the process) after `calls` chunks."""

    def __init__(self, encoder, calls):
        self.encoder, self.calls, self.seen = encoder, calls, []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_passages(self, passages):
        if self.calls == 0:
            raise KeyboardInterrupt("killed")
        self.calls -= 1
        self.seen.append([p["id"] for p in passages])
        return self.encoder.encode_passages(passages)


def test_a_killed_shard_resumes_where_it_stopped(tiny_bert_dir, corpus, encoder, tmp_path):
    cfg = config(tiny_bert_dir, corpus, tmp_path / "emb", save_every=5)
    first = KilledAfter(encoder, calls=2)
    with pytest.raises(KeyboardInterrupt):
        generate_passage_embeddings(cfg, first)
    partial = tmp_path / "emb" / "passages_00.partial"
    assert sorted(p.name for p in partial.glob("chunk_*")) == ["chunk_000000.npy", "chunk_000001.npy"]
    assert not (tmp_path / "emb" / "passages_00").exists()
    second = KilledAfter(encoder, calls=99)
    path = generate_passage_embeddings(cfg, second)
    assert second.seen == [[str(i) for i in range(11, 16)], [str(i) for i in range(16, 21)], ["21", "22", "23"]]
    resumed = read_embedding_shard(path)
    straight = read_embedding_shard(generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path / "ref"),
                                                                encoder))
    assert resumed[0] == straight[0]
    np.testing.assert_allclose(resumed[1], straight[1], atol=1e-6)
    # A finished shard is not redone.
    third = KilledAfter(encoder, calls=0)
    assert generate_passage_embeddings(cfg, third) == path


def test_resuming_with_other_settings_is_refused(tiny_bert_dir, corpus, encoder, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path, save_every=5), KilledAfter(encoder, 1))
    with pytest.raises(ConfigError, match="partial shard made with other settings"):
        generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path, save_every=7), encoder)
    path = generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path, save_every=7, overwrite=True), encoder)
    assert len(read_embedding_shard(path)[0]) == 23


def test_torchrun_ranks_take_their_own_shard(tiny_bert_dir, corpus, encoder, tmp_path):
    assert distributed_shard(0, 1, {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"}) == (2, 4, 2)
    assert distributed_shard(1, 2, {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "3"}) == (7, 8, 3)  # two nodes
    assert distributed_shard(1, 3, {}) == (1, 3, 0)
    path = generate_passage_embeddings(config(tiny_bert_dir, corpus, tmp_path), encoder,
                                       env={"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert path.name == "passages_01" and read_embedding_shard(path)[0] == [str(i) for i in range(12, 24)]


def test_cli_writes_the_original_files(tiny_bert_dir, corpus, tmp_path):
    out = tmp_path / "emb"
    assert script.main(["--model_name_or_path", tiny_bert_dir, "--passages", corpus, "--output_dir", str(out),
                        "--num_shards", "2", "--shard_id", "1", "--per_gpu_batch_size", "8",
                        "--passage_maxlength", "16", "--lowercase", "--normalize_text", "--prefix", "wiki",
                        "--no_fp16", "--device", "cpu"]) == 0
    ids, embeddings = read_embedding_shard(out / "wiki_01")
    assert ids == [str(i) for i in range(12, 24)] and embeddings.shape == (12, 32)


def test_bad_flags_and_damaged_files(tmp_path, tiny_bert_dir, corpus):
    with pytest.raises(ConfigError, match="--model_name_or_path is required"):
        EmbeddingConfig(passages=corpus)
    with pytest.raises(ConfigError, match="--shard_id must lie"):
        config(tiny_bert_dir, corpus, tmp_path, shard_id=2, num_shards=2)
    (tmp_path / "junk").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match="not an embedding shard"):
        read_embedding_shard(tmp_path / "junk")
    with (tmp_path / "uneven").open("wb") as handle:
        pickle.dump((["1", "2"], np.zeros((3, 4))), handle)
    with pytest.raises(DataFormatError, match="2 ids for embeddings of shape"):
        read_embedding_shard(tmp_path / "uneven")
    with pytest.raises(DataFormatError, match="no embedding files match"):
        embedding_files(str(tmp_path / "none" / "*"))
