"""Reading and writing the json / jsonl files of the eval and training data, with errors that name file and line.

Formats follow the original eval files (docs/original_selfrag.md §11): a `.json` file holds a list of items
(or `{"data": [...]}`), anything else is JSON Lines. Passages live in `ctxs` (fallback `top_contexts`), each a
dict with `text` and usually `title`, `id`, `score`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from selfrag.errors import ConfigError, DataFormatError

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------- text input
# Every text file a command reads goes through these, so bytes that are not UTF-8 give one message naming the file
# and line (and what to do) instead of a UnicodeDecodeError traceback.


def decode_utf8(raw: bytes, path: str | os.PathLike, lineno: int | None = None) -> str:
    """`raw` (one line when `lineno` is given, else a whole file) decoded as UTF-8, or a `DataFormatError`
    `path:line: not valid UTF-8 (...)` naming the line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line = lineno if lineno is not None else raw.count(b"\n", 0, err.start) + 1
        column = err.start - line_start + 1
        raise DataFormatError(
            f"{path}:{line}: not valid UTF-8 ({err.reason}, byte 0x{raw[err.start]:02x} at column {column}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 OLD > NEW)"
        ) from err


def read_text(path: str | os.PathLike, what: str = "input file") -> str:
    """The whole text of `path` (UTF-8; see `decode_utf8`); a missing file is a `DataFormatError` too."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DataFormatError(f"{path}: {what} not found") from err
    except IsADirectoryError as err:
        raise DataFormatError(f"{path}: is a folder; expected a {what}") from err
    return decode_utf8(raw, path)


def read_lines(path: str | os.PathLike, what: str = "input file") -> Iterator[tuple[int, str]]:
    """`(line number, text)` of every line of `path` (numbered from 1, newline kept), decoded one at a time, so a
    large file is never held whole."""
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError as err:
        raise DataFormatError(f"{path}: {what} not found") from err
    except IsADirectoryError as err:
        raise DataFormatError(f"{path}: is a folder; expected a {what}") from err
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            yield lineno, decode_utf8(raw, path, lineno)


# ------------------------------------------------------------------------------------------------- eval items


def load_items(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Load a `.json` list (or `{"data": [...]}`) or a JSON Lines file; each item must be an object."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: input file not found")
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{path}:{err.lineno}: not valid JSON ({err.msg}); a .json file must hold a list"
            ) from err
        if isinstance(data, Mapping) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataFormatError(f"{path}: a .json input must hold a list of items (or {{'data': [...]}})")
        items = data
        locations = [f"{path}: item {i}" for i in range(len(items))]
    else:
        items, locations = [], []
        for lineno, line in read_lines(path):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataFormatError(
                    f"{path}:{lineno}: not valid JSON ({err.msg}); JSON Lines needs one object per line "
                    "(use a .json suffix for a file holding one JSON list)"
                ) from err
            locations.append(f"{path}:{lineno}")
    for item, where in zip(items, locations):
        if not isinstance(item, Mapping):
            raise DataFormatError(f"{where}: expected a JSON object, found {type(item).__name__}")
        item.setdefault("_where", where)
    if not items:
        raise DataFormatError(f"{path}: no items")
    return items


def where(item: Mapping[str, Any]) -> str:
    """`file:line` of an item loaded by `load_items` (for error messages)."""
    return str(item.get("_where", "<item>"))


def require_field(item: Mapping[str, Any], field: str, kind: type | tuple[type, ...] = str) -> Any:
    if field not in item:
        raise DataFormatError(f"{where(item)}: missing field '{field}'")
    if not isinstance(item[field], kind):
        raise DataFormatError(f"{where(item)}: field '{field}' has type {type(item[field]).__name__}")
    return item[field]


CTX_KEYS = ("ctxs", "top_contexts")


def find_passages(item: Mapping[str, Any], keys: Sequence[str] = CTX_KEYS) -> list[dict[str, Any]] | None:
    """The item's passages under the first of `keys` it has (validated), or None when it has none of them."""
    key = next((k for k in keys if k in item), None)
    if key is None:
        return None
    passages = item[key]
    if not isinstance(passages, list):
        raise DataFormatError(f"{where(item)}: field '{key}' must be a list of passages")
    for k, ctx in enumerate(passages):
        if not isinstance(ctx, Mapping) or not isinstance(ctx.get("text"), str):
            raise DataFormatError(f"{where(item)}: {key}[{k}] must be an object with a string 'text'")
    return passages


def get_ctxs(item: Mapping[str, Any], keys: Sequence[str] = CTX_KEYS) -> list[dict[str, Any]]:
    """The item's passages (`ctxs`, or `top_contexts` as in the original), validated; an error when absent."""
    passages = find_passages(item, keys)
    if passages is None:
        raise DataFormatError(
            f"{where(item)}: missing field 'ctxs' (retrieved passages); add them with "
            "retrieval_lm/passage_retrieval.py or run with --mode no_retrieval"
        )
    return passages


def clean(item: Mapping[str, Any]) -> dict[str, Any]:
    """The item without bookkeeping keys (for writing back)."""
    return {k: v for k, v in item.items() if k != "_where"}


def _replace_with(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call `write(handle)` on a temporary file beside `path`, then rename it to `path`: readers and crashes see
    the old file or the new one, never half of one. On an error the temporary file is removed, `path` untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share it
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename, so a crash never leaves half a file."""
    _replace_with(path, lambda handle: json.dump(obj, handle, ensure_ascii=False, indent=1))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` as `write_json_atomic` writes JSON: whole or not at all."""
    _replace_with(path, lambda handle: handle.write(text))


def write_jsonl_atomic(path: str | os.PathLike, records: Iterable[Any]) -> None:
    """Write JSON Lines (one record per line) to `path` as `write_json_atomic` writes JSON: whole or not at all."""

    def write(handle: Any) -> None:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    _replace_with(path, write)


class JsonlCheckpoint:
    """Append-only record of finished items, so an interrupted run resumes without losing or repeating any.

    The first line holds a fingerprint of the settings that shape the results; resuming with other settings is
    refused. Each record carries the item's `index`. A torn last line (crash during a write) is dropped.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint)))

    def load(self) -> dict[int, dict[str, Any]]:
        """Records already written, by index (empty when starting fresh)."""
        if not self.path.exists():
            return {}
        done: dict[int, dict[str, Any]] = {}
        lines = read_text(self.path, "checkpoint").split("\n")
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                if lineno >= len(lines) - 1:  # the torn last line of a crashed write
                    logger.warning("%s: dropping an incomplete last line; that item will be redone", self.path)
                    continue
                raise DataFormatError(
                    f"{self.path}:{lineno}: corrupt checkpoint line; delete the file to restart"
                ) from err
            if lineno == 1:
                if record.get("fingerprint") != self.fingerprint:
                    raise ConfigError(
                        f"{self.path} holds a run with other settings ({record.get('fingerprint')}); "
                        "delete it or choose another --output_file to start a new run"
                    )
                continue
            done[record["index"]] = record
        if done:
            logger.info("resuming: %d items already done in %s", len(done), self.path)
        # Rewrite without a torn line, so later appends start on a clean line.
        self._rewrite(done.values())
        return done

    def _rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, self.path)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite([])
        with self.path.open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


class ResumableRun:
    """Items processed in batches, each batch's records saved before the next starts (`JsonlCheckpoint`).

    run = ResumableRun(output_file, fingerprint, n_items, batch_size, desc="short-form")
    if run.todo:                       # load the model only when something is left to do
        for batch in run.batches():    # lists of item indices, with a progress bar
            run.save([{"index": i, ...} for i in batch])
    records = run.records()            # one record per item, in item order
    run.finish()                       # after the final output is written: drop the checkpoint
    """

    def __init__(self, output_file: str, fingerprint: Mapping[str, Any], n_items: int, batch_size: int, desc: str):
        self.checkpoint = JsonlCheckpoint(output_file + ".partial.jsonl", fingerprint)
        self.done = self.checkpoint.load()
        self.n_items, self.batch_size, self.desc = n_items, batch_size, desc
        self.todo = [i for i in range(n_items) if i not in self.done]

    def batches(self):
        with tqdm(total=self.n_items, initial=len(self.done), desc=self.desc, unit="item") as bar:
            for start in range(0, len(self.todo), self.batch_size):
                batch = self.todo[start : start + self.batch_size]
                yield batch
                missing = [i for i in batch if i not in self.done]
                if missing:
                    raise AssertionError(f"batch items {missing} were not saved")
                bar.update(len(batch))

    def save(self, records: list[dict[str, Any]]) -> None:
        self.checkpoint.append(records)
        self.done.update((r["index"], r) for r in records)

    def records(self) -> list[dict[str, Any]]:
        return [self.done[i] for i in range(self.n_items)]

    def finish(self) -> None:
        self.checkpoint.path.unlink(missing_ok=True)


def run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The config of the run that wrote the result file `path`: the file's own `config` (run_short_form.py,
    run_baseline_lm.py), else the `<path>.config.json` beside it (run_long_form_static.py), else {}."""
    path = Path(path)
    try:
        data = json.loads(read_text(path)) if path.suffix == ".json" else None
    except (OSError, ValueError):  # unreadable, not UTF-8 (DataFormatError) or not one JSON value: no config there
        data = None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        return data["config"]
    side = path.with_name(path.name + ".config.json")
    if not side.is_file():
        return {}
    try:
        return json.loads(read_text(side, "run config"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{side}:{err.lineno}: not valid JSON ({err.msg}); delete it or rerun the run") from err
