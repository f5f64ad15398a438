"""PassageStore: lazy random access through a saved offset index, DPR TSV and JSONL, and errors naming file:line."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from selfrag.errors import DataFormatError
from selfrag.retrieval.passages import MemoryPassages, PassageStore

PASSAGES = [{"id": str(i), "title": f"Title {i}", "text": f"Passage number {i} — “quoted” text."}
            for i in range(1, 201)]


def write_tsv(path, passages, header=True):
    lines = (["id\ttext\ttitle"] if header else []) + [f"{p['id']}\t{p['text']}\t{p['title']}" for p in passages]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_random_access_reads_the_right_rows_and_skips_the_header(tmp_path):
    store = PassageStore.open(write_tsv(tmp_path / "psgs.tsv", PASSAGES))
    assert len(store) == 200
    assert store[0] == PASSAGES[0] and store[199] == PASSAGES[199] and store[-1] == PASSAGES[-1]
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 200, size=50).tolist()
    assert store.get_many(rows) == [PASSAGES[r] for r in rows]
    assert list(store.iter_rows(10, 13)) == PASSAGES[10:13]
    assert store.lookup(["17", "3"]) == [PASSAGES[16], PASSAGES[2]]
    assert store.ids.dtype == np.int64 and store.ids_of(0, 3) == ["1", "2", "3"]
    with pytest.raises(IndexError):
        store[200]


def test_offset_index_is_saved_reused_memory_mapped_and_rebuilt_when_the_file_changes(tmp_path):
    path = write_tsv(tmp_path / "psgs.tsv", PASSAGES)
    PassageStore.open(path)
    for suffix in (".offsets.npy", ".ids.npy", ".offsets.json"):
        assert (tmp_path / f"psgs.tsv{suffix}").is_file()
    again = PassageStore.open(path)
    assert isinstance(again.offsets, np.memmap)  # loaded from disk, not rebuilt and not held as strings
    assert again[5] == PASSAGES[5]
    write_tsv(path, PASSAGES[:20])
    os.utime(path, ns=(0, 10**18))  # a different mtime even on coarse clocks
    changed = PassageStore.open(path)
    assert len(changed) == 20 and changed[19] == PASSAGES[19]


def test_index_dir_and_read_only_folders(tmp_path):
    path = write_tsv(tmp_path / "psgs.tsv", PASSAGES[:5])
    store = PassageStore.open(path, index_dir=tmp_path / "idx")
    assert (tmp_path / "idx" / "psgs.tsv.offsets.npy").is_file() and store[4] == PASSAGES[4]


def test_dpr_quoted_cells_are_read_with_csv_rules(tmp_path):
    path = tmp_path / "psgs.tsv"
    path.write_text('id\ttext\ttitle\n1\t"He said ""hi"" to them"\t"Aaron"\n2\tplain\tB\n', encoding="utf-8")
    store = PassageStore.open(path)
    assert store[0] == {"id": "1", "title": "Aaron", "text": 'He said "hi" to them'}
    assert store[1]["text"] == "plain"


def test_jsonl_corpus_with_string_ids(tmp_path):
    path = tmp_path / "psgs.jsonl"
    rows = [{"id": f"doc-{i}", "title": f"T{i}", "text": f"text {i}", "extra": i} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    store = PassageStore.open(path)
    assert len(store) == 30 and store.ids.dtype.kind == "S"
    assert store[7] == rows[7]
    assert store.lookup(["doc-29", "doc-0"]) == [rows[29], rows[0]]
    with pytest.raises(DataFormatError, match="not in"):
        store.lookup(["doc-30"])


def test_unsorted_and_mixed_ids_are_looked_up(tmp_path):
    passages = [{"id": i, "title": "t", "text": str(i)} for i in ("30", "7", "abc", "007")]
    store = PassageStore.open(write_tsv(tmp_path / "p.tsv", passages))
    assert [p["text"] for p in store.lookup(["007", "30", "abc", "7"])] == ["007", "30", "abc", "7"]
    ints = PassageStore.open(write_tsv(tmp_path / "q.tsv", [{"id": i, "title": "t", "text": str(i)}
                                                            for i in ("30", "7", "12")]))
    assert [p["text"] for p in ints.lookup(np.array([12, 30]))] == ["12", "30"]
    with pytest.raises(DataFormatError, match=r"1 passage ids .* not in .*q\.tsv.*\['8'\]"):
        ints.rows_for_ids(["7", "8"])


@pytest.mark.parametrize("line, message", [
    ("5\tonly two columns", r"bad\.tsv:3: expected 3 tab-separated columns .* found 2"),
    ("5\ta\tb\tc", r"bad\.tsv:3: expected 3 .* found 4"),
    ('5\t"unclosed quote\tT', r"bad\.tsv:3: cannot parse the TSV row"),
])
def test_malformed_tsv_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(f"id\ttext\ttitle\n1\tfine\tT\n{line}\n2\tfine\tT\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        PassageStore.open(path)


def test_malformed_jsonl_and_missing_or_empty_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "title": "t", "text": "x"}\n{"id": 2, "title": "t"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: missing field 'text'"):
        PassageStore.open(bad)
    bad.write_text('{"id": 1, "text": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2: not valid JSON"):
        PassageStore.open(bad)
    with pytest.raises(DataFormatError, match="passage file not found"):
        PassageStore.open(tmp_path / "missing.tsv")
    empty = tmp_path / "empty.tsv"
    empty.write_text("id\ttext\ttitle\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="no passages"):
        PassageStore.open(empty)


def test_a_file_edited_behind_the_index_is_detected(tmp_path):
    path = write_tsv(tmp_path / "psgs.tsv", PASSAGES[:3])
    store = PassageStore.open(path)
    stat = path.stat()
    path.write_text(path.read_text().replace("1\tPassage", "9\tPassage"), encoding="utf-8")  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataFormatError, match="changed since it was indexed"):
        store[0]


def test_memory_passages_lookup():
    passages = MemoryPassages([{"id": 1, "title": "a", "text": "x"}, {"id": "b", "title": "b", "text": "y"}])
    assert [p["text"] for p in passages.lookup(np.array([b"b", b"1"]))] == ["y", "x"]
    with pytest.raises(DataFormatError):
        passages.lookup(["zzz"])
