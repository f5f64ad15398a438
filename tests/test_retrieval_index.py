"""FaissIndex: exact search equals brute force, compressed indexes keep recall, save / mmap round trips, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from selfrag.errors import ConfigError, DataFormatError  # noqa: E402
from selfrag.retrieval.index import FaissIndex, build_index, ids_to_array, original_factory  # noqa: E402

D, N = 32, 4000


@pytest.fixture(scope="module")
def data():
    """Random Gaussian vectors (no structure to exploit: the hard case for compression) and exact top-10."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    q = rng.normal(size=(100, D)).astype(np.float32)
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    return x, q, exact


def recall_at_10(positions: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(p) & set(e)) / 10 for p, e in zip(positions, exact)]))


def test_flat_search_equals_numpy_brute_force(data):
    x, q, _ = data
    index = FaissIndex(D)
    index.index_data([f"p{i}" for i in range(N)], x, batch_size=1000)  # added in 4 chunks
    scores, positions = index.search(q, 10)
    brute = q @ x.T
    expected = np.sort(brute, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(brute, positions, axis=1), scores, rtol=1e-5, atol=1e-4)
    # the original API: (ids, scores) per query, ids as strings
    knn = index.search_knn(q[:2], 3)
    assert knn[0][0] == [f"p{i}" for i in positions[0, :3]] and knn[0][1].shape == (3,)


def test_one_hot_vectors_find_themselves(data):
    index = FaissIndex(8)
    index.index_data(list("abcdefgh"), np.eye(8, dtype=np.float32))
    assert [ids[0] for ids, _ in index.search_knn(np.eye(8, dtype=np.float32)[[3, 0, 7]], 1)] == ["d", "a", "h"]


# Floors sit ~0.1 below what these settings measured on this data (0.77, 0.98, 0.85): they catch a broken index
# (wrong metric, untrained codes, nprobe left at 1), not small numeric changes.
@pytest.mark.parametrize("factory, params, floor", [
    ("IVF16,PQ16", {"nprobe": 8}, 0.65),
    ("HNSW16", {"efSearch": 64}, 0.9),
    ("IVF16,SQ8", {"nprobe": 8}, 0.75),
])
def test_compressed_indexes_keep_recall_at_10(data, factory, params, floor):
    x, q, exact = data
    index = FaissIndex(D, factory, search_params=params)
    index.index_data(list(range(N)), x)
    assert index.is_trained and index.ntotal == N
    _, positions = index.search(q, 10)
    assert recall_at_10(positions, exact) >= floor


def test_nprobe_matters_and_bad_params_are_errors(data):
    x, q, exact = data
    index = FaissIndex(D, "IVF16,SQ8")
    index.index_data(list(range(N)), x)
    index.set_search_params(nprobe=1)
    low = recall_at_10(index.search(q, 10)[1], exact)
    index.set_search_params(nprobe=16)  # every list: exact up to SQ8 rounding
    assert recall_at_10(index.search(q, 10)[1], exact) > max(low, 0.9)
    with pytest.raises(ConfigError, match="efSearch=10 does not apply"):
        index.set_search_params(efSearch=10)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ16", "HNSW16", "IVF16,SQ8", "PQ16", "IVF16,PQ8,RFlat"])
@pytest.mark.parametrize("mmap", [True, False])
def test_serialize_and_memory_mapped_load_round_trip(tmp_path, data, factory, mmap):
    x, q, _ = data
    index = FaissIndex(D, factory, search_params={"nprobe": 4} if "IVF" in factory else None)
    index.index_data([str(i) for i in range(N)], x)
    before = index.search(q, 5)
    index.serialize(tmp_path)
    loaded = FaissIndex.load(tmp_path, mmap=mmap, search_params={"nprobe": 4} if "IVF" in factory else None)
    assert loaded.ntotal == N and loaded.dim == D and loaded.factory == factory
    assert loaded.ids.dtype == np.int64 and loaded.search_knn(q[:1], 1)[0][0] == [str(before[1][0, 0])]
    np.testing.assert_array_equal(loaded.search(q, 5)[1], before[1])
    np.testing.assert_allclose(loaded.search(q, 5)[0], before[0], rtol=1e-6)
    # the original's in-place API
    fresh = FaissIndex(D)
    fresh.deserialize_from(tmp_path, mmap=mmap)
    assert fresh.ntotal == N


def test_an_index_saved_by_the_original_loads(tmp_path, data):
    x, q, _ = data
    raw = faiss.IndexFlatIP(D)  # original src/index.py: IndexFlatIP + pickled id list in index_meta.faiss
    raw.add(x)
    faiss.write_index(raw, str(tmp_path / "index.faiss"))
    with (tmp_path / "index_meta.faiss").open("wb") as handle:
        pickle.dump([str(i + 1) for i in range(N)], handle)
    loaded = FaissIndex.load(tmp_path)
    assert loaded.search_knn(x[41:42], 1)[0][0] == ["42"]


def test_dimension_mismatch_and_broken_saves_are_clear_errors(tmp_path, data):
    x, _, _ = data
    index = FaissIndex(D)
    index.index_data(list(range(10)), x[:10])
    with pytest.raises(ConfigError, match=r"query embeddings have dimension 16 but the index holds 32-d vectors"):
        index.search(np.zeros((1, 16), dtype=np.float32), 1)
    with pytest.raises(ConfigError, match="passage embeddings have dimension 8"):
        index.index_data(["a"], np.zeros((1, 8), dtype=np.float32))
    with pytest.raises(DataFormatError, match="pair up"):
        index.index_data(["a", "b"], x[:1])
    with pytest.raises(ConfigError, match="cannot build index 'IVF16,Bogus'"):
        FaissIndex(D, "IVF16,Bogus")
    with pytest.raises(DataFormatError, match="no saved index"):
        FaissIndex.load(tmp_path / "nothing")
    index.serialize(tmp_path)
    np.save(tmp_path / "index_ids.npy", np.arange(3))
    with pytest.raises(DataFormatError, match="holds 10 vectors but the id file has 3"):
        FaissIndex.load(tmp_path)
    loaded_dir = tmp_path / "other"
    index.serialize(loaded_dir)
    with pytest.raises(ConfigError, match="holds 32-d vectors, not 64-d"):
        FaissIndex(64).deserialize_from(loaded_dir)


def test_fewer_hits_than_k_are_dropped_not_padded(data):
    x, q, _ = data
    index = FaissIndex(D)
    index.index_data(["a", "b", "c"], x[:3])
    ids, scores = index.search_knn(q[:1], 10)[0]
    assert sorted(ids) == ["a", "b", "c"] and len(scores) == 3


def test_ids_and_original_factory():
    assert ids_to_array(["1", "20"]).dtype == np.int64
    assert ids_to_array(["1", "020"]).dtype.kind == "S"
    assert ids_to_array([b"x", "y"]).tolist() == [b"x", b"y"]
    assert original_factory(0, 8) == "Flat" and original_factory(64, 8) == "PQ64x8"
    shards = [(["a", "b"], np.eye(4, dtype=np.float32)[:2]), ([1, 2], np.eye(4, dtype=np.float32)[2:])]
    index = build_index(shards, 4)  # string and integer ids mixed: kept as strings
    assert index.search_knn(np.eye(4, dtype=np.float32)[[1, 3]], 1)[0][0] == ["b"]
    assert index.search_knn(np.eye(4, dtype=np.float32)[[3]], 1)[0][0] == ["2"]
