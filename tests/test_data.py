"""selfrag/data.py: json / jsonl loading with located errors, passages, atomic writes, resumable checkpoints."""

from __future__ import annotations

import json
import logging

import pytest

from selfrag.data import (
    JsonlCheckpoint,
    clean,
    get_ctxs,
    load_items,
    require_field,
    where,
    write_json_atomic,
)
from selfrag.errors import ConfigError, DataFormatError

# -------------------------------------------------------------------------------------------------- load_items


def test_load_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"question": "q1", "answers": ["a"]}\n\n   \n{"question": "q2"}\n\n', encoding="utf-8")
    items = load_items(path)
    assert [item["question"] for item in items] == ["q1", "q2"]
    assert items[0]["answers"] == ["a"]
    assert where(items[0]) == f"{path}:1"
    assert where(items[1]) == f"{path}:4"  # blank lines still count
    assert clean(items[1]) == {"question": "q2"}


def test_load_jsonl_any_non_json_suffix(tmp_path):
    path = tmp_path / "eval.txt"
    path.write_text('{"question": "q"}\n', encoding="utf-8")
    assert [clean(i) for i in load_items(str(path))] == [{"question": "q"}]


def test_load_json_list(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([{"question": "q1"}, {"question": "q2", "docs": []}]), encoding="utf-8")
    items = load_items(path)
    assert [clean(i) for i in items] == [{"question": "q1"}, {"question": "q2", "docs": []}]
    assert where(items[1]) == f"{path}: item 1"


def test_load_json_data_wrapper(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"data": [{"question": "q1"}], "args": {}}), encoding="utf-8")
    items = load_items(path)
    assert [clean(i) for i in items] == [{"question": "q1"}]
    assert where(items[0]) == f"{path}: item 0"


def test_load_json_keeps_unicode(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"question": "Wer ist Gödel?"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_items(path)[0]["question"] == "Wer ist Gödel?"


def test_load_jsonl_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"question": "q1"}\n\n{"question": "q2",}\n{"question": "q3"}\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not valid JSON (")
    assert "one object per line" in message


def test_load_json_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text('[\n  {"question": "q1"},\n  {"question": q2}\n]\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: not valid JSON (")
    assert "must hold a list" in message


def test_load_jsonl_list_line_is_rejected(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"question": "q1"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value) == f"{path}:2: expected a JSON object, found list"


def test_load_json_non_object_item_is_rejected(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text('[{"question": "q"}, "q2"]', encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value) == f"{path}: item 1: expected a JSON object, found str"


def test_load_json_not_a_list(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text('{"question": "q"}', encoding="utf-8")
    with pytest.raises(DataFormatError, match="must hold a list of items"):
        load_items(path)


def test_load_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value) == f"{path}: input file not found"


def test_load_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataFormatError, match="input file not found"):
        load_items(tmp_path)


def test_load_empty_jsonl(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value) == f"{path}: no items"


def test_load_empty_json_list(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value) == f"{path}: no items"


def test_load_empty_json_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_items(path)
    assert str(info.value).startswith(f"{path}:1: not valid JSON")


# ------------------------------------------------------------------------------------------------ require_field


def test_require_field():
    item = {"question": "q", "answers": ["a"], "_where": "f.jsonl:7"}
    assert require_field(item, "question") == "q"
    assert require_field(item, "answers", list) == ["a"]
    with pytest.raises(DataFormatError) as info:
        require_field(item, "answerKey")
    assert str(info.value) == "f.jsonl:7: missing field 'answerKey'"
    with pytest.raises(DataFormatError) as info:
        require_field(item, "answers")
    assert str(info.value) == "f.jsonl:7: field 'answers' has type list"


# ----------------------------------------------------------------------------------------------------- get_ctxs


def test_get_ctxs():
    ctxs = [{"title": "T", "text": "x", "id": "1", "score": "2.0"}, {"text": "y"}]
    assert get_ctxs({"ctxs": ctxs, "_where": "f:1"}) == ctxs


def test_get_ctxs_top_contexts_fallback():
    ctxs = [{"title": "T", "text": "x"}]
    assert get_ctxs({"top_contexts": ctxs}) == ctxs


def test_get_ctxs_prefers_ctxs():
    assert get_ctxs({"ctxs": [{"text": "a"}], "top_contexts": [{"text": "b"}]}) == [{"text": "a"}]


def test_get_ctxs_empty_list_is_allowed():
    assert get_ctxs({"ctxs": []}) == []


def test_get_ctxs_missing():
    with pytest.raises(DataFormatError) as info:
        get_ctxs({"question": "q", "_where": "eval.jsonl:5"})
    message = str(info.value)
    assert message.startswith("eval.jsonl:5: missing field 'ctxs'")
    assert "--mode no_retrieval" in message


def test_get_ctxs_not_a_list():
    with pytest.raises(DataFormatError) as info:
        get_ctxs({"ctxs": {"text": "x"}, "_where": "eval.jsonl:2"})
    assert str(info.value) == "eval.jsonl:2: field 'ctxs' must be a list of passages"
    with pytest.raises(DataFormatError) as info:
        get_ctxs({"top_contexts": "x", "_where": "eval.jsonl:2"})
    assert str(info.value) == "eval.jsonl:2: field 'top_contexts' must be a list of passages"


@pytest.mark.parametrize("bad", [{"title": "T"}, {"title": "T", "text": None}, {"text": 3}, "just text"])
def test_get_ctxs_passage_without_text(bad):
    with pytest.raises(DataFormatError) as info:
        get_ctxs({"ctxs": [{"text": "ok"}, bad], "_where": "eval.jsonl:4"})
    assert str(info.value) == "eval.jsonl:4: ctxs[1] must be an object with a string 'text'"


# ------------------------------------------------------------------------------------------- write_json_atomic


def test_write_json_atomic(tmp_path):
    path = tmp_path / "out" / "sub" / "result.json"
    obj = {"preds": ["Gödel", "b"], "metric_mean": 0.5}
    write_json_atomic(path, obj)
    assert json.loads(path.read_text(encoding="utf-8")) == obj
    assert "Gödel" in path.read_text(encoding="utf-8")  # ensure_ascii=False
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]  # no .tmp left
    write_json_atomic(path, [1, 2])
    assert json.loads(path.read_text(encoding="utf-8")) == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


# ------------------------------------------------------------------------------------------------ JsonlCheckpoint

FP = {"model": "m", "ndocs": 5, "threshold": 0.2}


def test_checkpoint_fresh_load_is_empty(tmp_path):
    ckpt = JsonlCheckpoint(tmp_path / "ck.jsonl", FP)
    assert ckpt.load() == {}
    assert not (tmp_path / "ck.jsonl").exists()


def test_checkpoint_append_and_load_round_trip(tmp_path):
    path = tmp_path / "deep" / "ck.jsonl"
    ckpt = JsonlCheckpoint(path, FP)
    ckpt.append([{"index": 0, "pred": "Paris"}, {"index": 2, "pred": "Gödel"}])
    ckpt.append([{"index": 1, "pred": "x", "score": 1.5}])
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"fingerprint": FP}
    assert len(lines) == 4
    done = JsonlCheckpoint(path, dict(FP)).load()
    assert done == {
        0: {"index": 0, "pred": "Paris"},
        2: {"index": 2, "pred": "Gödel"},
        1: {"index": 1, "pred": "x", "score": 1.5},
    }


def test_checkpoint_fingerprint_normalised_through_json(tmp_path):
    path = tmp_path / "ck.jsonl"
    JsonlCheckpoint(path, {"ndocs": (1, 2)}).append([{"index": 0}])
    # A tuple is written as a list; resuming with the same settings must still match.
    assert JsonlCheckpoint(path, {"ndocs": (1, 2)}).load() == {0: {"index": 0}}


def test_checkpoint_other_fingerprint_raises(tmp_path):
    path = tmp_path / "ck.jsonl"
    JsonlCheckpoint(path, FP).append([{"index": 0, "pred": "a"}])
    with pytest.raises(ConfigError) as info:
        JsonlCheckpoint(path, {**FP, "ndocs": 10}).load()
    message = str(info.value)
    assert message.startswith(f"{path} holds a run with other settings (")
    assert "'ndocs': 5" in message
    # The refused file is left untouched.
    assert JsonlCheckpoint(path, FP).load() == {0: {"index": 0, "pred": "a"}}


def test_checkpoint_torn_last_line_dropped_and_appends_stay_valid(tmp_path, caplog):
    path = tmp_path / "ck.jsonl"
    ckpt = JsonlCheckpoint(path, FP)
    ckpt.append([{"index": 0, "pred": "a"}, {"index": 1, "pred": "b"}])
    full = path.read_text(encoding="utf-8")
    path.write_text(full + '{"index": 2, "pred": "tor', encoding="utf-8")  # crash mid-write
    with caplog.at_level(logging.WARNING, logger="selfrag.data"):
        done = JsonlCheckpoint(path, FP).load()
    assert done == {0: {"index": 0, "pred": "a"}, 1: {"index": 1, "pred": "b"}}
    assert "dropping an incomplete last line" in caplog.text
    # The file was rewritten without the torn line, so a later append starts on a clean line.
    assert path.read_text(encoding="utf-8") == full
    ckpt.append([{"index": 2, "pred": "c"}])
    for line in path.read_text(encoding="utf-8").splitlines():
        json.loads(line)
    assert JsonlCheckpoint(path, FP).load() == {
        0: {"index": 0, "pred": "a"},
        1: {"index": 1, "pred": "b"},
        2: {"index": 2, "pred": "c"},
    }


def test_checkpoint_torn_last_line_with_newline_is_dropped(tmp_path):
    path = tmp_path / "ck.jsonl"
    JsonlCheckpoint(path, FP).append([{"index": 0, "pred": "a"}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"index": 1, "pr\n')
    assert JsonlCheckpoint(path, FP).load() == {0: {"index": 0, "pred": "a"}}


def test_checkpoint_corrupt_middle_line_raises(tmp_path):
    path = tmp_path / "ck.jsonl"
    JsonlCheckpoint(path, FP).append([{"index": 0, "pred": "a"}, {"index": 1, "pred": "b"}])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1][:8]  # corrupt record 0 on line 2; line 3 is intact
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        JsonlCheckpoint(path, FP).load()
    assert str(info.value) == f"{path}:2: corrupt checkpoint line; delete the file to restart"


def test_checkpoint_later_record_with_same_index_wins(tmp_path):
    path = tmp_path / "ck.jsonl"
    ckpt = JsonlCheckpoint(path, FP)
    ckpt.append([{"index": 0, "pred": "old"}])
    ckpt.append([{"index": 0, "pred": "new"}])
    assert JsonlCheckpoint(path, FP).load() == {0: {"index": 0, "pred": "new"}}
