"""Passages read on demand from a DPR TSV or a JSONL file, through a byte-offset index saved next to the file.

Formats, as the original (`src/data.py:227-244`, docs/original_selfrag.md §6.1):
- `.jsonl`: one object per line with `id`, `title`, `text`.
- anything else: TSV with columns `id`, `text`, `title` (DPR `psgs_w100.tsv`); rows whose first cell is `id` (the
  header) are skipped; cells are read with `csv` rules (the DPR file quotes its text cells).

The original loads every passage into a Python list (13 GB of strings for DPR Wikipedia). Here the first open scans
the file once and saves `<file>.offsets.npy` (the byte offset of each row), `<file>.ids.npy` (its id: int64 when all
ids are plain integers, else fixed-width bytes) and `<file>.offsets.json` (size and mtime of the file they describe;
a changed file is re-scanned). `store[i]` and `store.get_many(rows)` then read only the rows asked for: about 340 MB
of RAM for 21M passages, memory-mapped. The scan also checks every row, so a malformed row fails at open, naming
file:line.
"""

from __future__ import annotations

import array
import csv
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from selfrag.data import decode_utf8
from selfrag.errors import DataFormatError

logger = logging.getLogger(__name__)

INDEX_VERSION = 1
TSV_COLUMNS = 3  # id, text, title


def _parse_tsv(line: str, where: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter="\t", strict=True))
    except (csv.Error, StopIteration) as err:
        raise DataFormatError(f"{where}: cannot parse the TSV row ({err}); a quoted cell must close on its line") \
            from err


def _tsv_passage(line: str, where: str) -> dict[str, str] | None:
    """A passage from one TSV line, or None for a header / blank line."""
    line = line.rstrip("\r\n")
    if not line:
        return None
    row = _parse_tsv(line, where) if '"' in line else line.split("\t")
    if len(row) != TSV_COLUMNS:
        raise DataFormatError(
            f"{where}: expected {TSV_COLUMNS} tab-separated columns (id, text, title) as in DPR psgs_w100.tsv; "
            f"found {len(row)}. Fix the row, or write the corpus as .jsonl with id, title and text"
        )
    if row[0] == "id":
        return None
    return {"id": row[0], "title": row[2], "text": row[1]}


def _jsonl_passage(line: str, where: str) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        passage = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{where}: not valid JSON ({err.msg}); a .jsonl corpus holds one object per line") \
            from err
    if not isinstance(passage, dict):
        raise DataFormatError(f"{where}: expected a JSON object with id, title and text; "
                              f"found {type(passage).__name__}")
    for field in ("id", "text"):
        if field not in passage:
            raise DataFormatError(f"{where}: missing field '{field}' (a passage needs id, title and text)")
    if not isinstance(passage["text"], str):
        raise DataFormatError(f"{where}: field 'text' must be a string")
    passage["id"] = str(passage["id"])
    return passage


def _canonical_int(value: str) -> int | None:
    """`int(value)` when `value` is exactly how Python writes that integer (so '007' or '1.0' stay strings)."""
    if value.isdigit() and (value == "0" or value[0] != "0") and len(value) < 19:
        return int(value)
    return None


class PassageStore:
    """Random access to a passage file without loading it: `store[row]`, `store.get_many(rows)`, `store.lookup(ids)`.

    Open with `PassageStore.open(path)`. Rows are numbered from 0 in file order, headers and blank lines skipped.
    Reads go through one file handle under a lock, so a store may be shared by threads.
    """

    def __init__(self, path: Path, offsets: np.ndarray, ids: np.ndarray) -> None:
        self.path = path
        self.format = "jsonl" if path.suffix == ".jsonl" else "tsv"
        self.offsets = offsets
        self.ids = ids
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None
        self._handle = None
        self._lock = threading.Lock()

    # ---- opening and the offset index ----

    @classmethod
    def open(cls, path: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> PassageStore:
        """Open `path`, scanning it once (with a progress bar) when its offset index is missing or stale.

        The index is saved next to the file (or under `index_dir`); when that folder is not writable, under
        `~/.cache/selfrag/passages/`, and when nothing is writable it is kept in memory.
        """
        path = Path(path)
        if not path.is_file():
            raise DataFormatError(
                f"{path}: passage file not found; download psgs_w100.tsv (DPR Wikipedia) or pass a .tsv / .jsonl "
                "corpus with --passages"
            )
        stat = path.stat()
        fingerprint = {"version": INDEX_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        homes = [Path(index_dir) if index_dir else path.parent, default_index_dir(path)]
        for home in homes:
            found = cls._load_index(home / path.name, fingerprint)
            if found is not None:
                return cls(path, *found)
        offsets, ids = cls._scan(path)
        for home in homes:
            try:
                cls._save_index(home / path.name, offsets, ids, {**fingerprint, "count": len(offsets),
                                                                 "path": str(path)})
                break
            except OSError as err:
                logger.warning("cannot save the offset index of %s under %s (%s)", path, home, err)
        else:
            logger.warning("keeping the offset index of %s in memory only", path)
        return cls(path, offsets, ids)

    @staticmethod
    def _index_files(base: Path) -> dict[str, Path]:
        return {k: base.with_name(base.name + suffix)
                for k, suffix in (("offsets", ".offsets.npy"), ("ids", ".ids.npy"), ("meta", ".offsets.json"))}

    @classmethod
    def _load_index(cls, base: Path, fingerprint: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        files = cls._index_files(base)
        if not files["meta"].is_file():
            return None
        try:
            meta = json.loads(files["meta"].read_text(encoding="utf-8"))
            if all(meta.get(k) == v for k, v in fingerprint.items()):
                offsets = np.load(files["offsets"], mmap_mode="r")
                ids = np.load(files["ids"], mmap_mode="r")
                if len(offsets) == len(ids) == meta.get("count"):
                    return offsets, ids
        except (OSError, ValueError) as err:  # unreadable or torn index files: scan again
            logger.info("ignoring the offset index %s (%s)", files["meta"], err)
            return None
        logger.info("%s changed since its offset index was built; scanning it again", base)
        return None

    @classmethod
    def _save_index(cls, base: Path, offsets: np.ndarray, ids: np.ndarray, meta: Mapping[str, Any]) -> None:
        files = cls._index_files(base)
        base.parent.mkdir(parents=True, exist_ok=True)
        for key, value in (("offsets", offsets), ("ids", ids)):
            tmp = files[key].with_name(files[key].name + ".tmp.npy")
            np.save(tmp, value)
            os.replace(tmp, files[key])
        tmp = files["meta"].with_name(files["meta"].name + ".tmp")
        tmp.write_text(json.dumps(dict(meta)), encoding="utf-8")
        os.replace(tmp, files["meta"])  # last, so a crash never leaves a meta file over missing arrays
        logger.info("saved the offset index of %s (%d passages) to %s", meta.get("path"), len(offsets),
                    files["offsets"])

    @staticmethod
    def _scan(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Offsets and ids of every row, checking each row's format."""
        parse = _jsonl_passage if path.suffix == ".jsonl" else _tsv_passage
        offsets = array.array("q")
        int_ids: array.array | None = array.array("q")
        str_ids: list[bytes] = []
        position = 0
        with path.open("rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                             desc=f"indexing {path.name}", disable=None) as bar:
            for lineno, raw in enumerate(handle, start=1):
                start, position = position, position + len(raw)
                if lineno % 65536 == 0:
                    bar.update(position - bar.n)
                line = decode_utf8(raw, path, lineno)
                if path.suffix != ".jsonl" and "\t" in line and '"' not in line:
                    # Fast path for the DPR file: count cells without building the row.
                    if line.count("\t") != TSV_COLUMNS - 1 or line.startswith("id\t"):
                        if parse(line, f"{path}:{lineno}") is None:
                            continue
                    passage_id = line[: line.index("\t")]
                else:
                    passage = parse(line, f"{path}:{lineno}")
                    if passage is None:
                        continue
                    passage_id = passage["id"]
                offsets.append(start)
                number = _canonical_int(passage_id) if int_ids is not None else None
                if number is not None and int_ids is not None:
                    int_ids.append(number)
                else:
                    if int_ids is not None:  # first non-integer id: switch every id to bytes
                        str_ids = [str(i).encode() for i in int_ids]
                        int_ids = None
                    str_ids.append(passage_id.encode("utf-8"))
            bar.update(position - bar.n)
        if not offsets:
            raise DataFormatError(f"{path}: no passages (an empty file, or only a header)")
        ids = np.frombuffer(int_ids, dtype=np.int64).copy() if int_ids is not None else np.array(str_ids, dtype=bytes)
        return np.frombuffer(offsets, dtype=np.int64).copy(), ids

    # ---- reading ----

    def __len__(self) -> int:
        return len(self.offsets)

    def _read_at(self, handle: Any, row: int) -> dict[str, Any]:
        handle.seek(int(self.offsets[row]))
        line = handle.readline().decode("utf-8")
        parse = _jsonl_passage if self.format == "jsonl" else _tsv_passage
        passage = parse(line, f"{self.path}: row {row} (byte {int(self.offsets[row])})")
        if passage is None or passage["id"] != self.id_at(row):
            raise DataFormatError(f"{self.path}: row {row} changed since it was indexed; delete "
                                  f"{self.path}.offsets.json to re-scan the file")
        return passage

    def _file(self) -> Any:
        if self._handle is None:
            self._handle = self.path.open("rb")
        return self._handle

    def __getitem__(self, row: int) -> dict[str, Any]:
        if not -len(self) <= row < len(self):
            raise IndexError(f"passage row {row} out of range (the store has {len(self)})")
        with self._lock:
            return self._read_at(self._file(), row % len(self))

    def get_many(self, rows: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Passages at `rows`, in that order (read in file order, so nearby rows share disk reads)."""
        rows = [int(r) for r in rows]
        for row in rows:
            if not 0 <= row < len(self):
                raise IndexError(f"passage row {row} out of range (the store has {len(self)})")
        found: dict[int, dict[str, Any]] = {}
        with self._lock:
            handle = self._file()
            for row in sorted(set(rows)):
                found[row] = self._read_at(handle, row)
        return [dict(found[row]) for row in rows]

    def iter_rows(self, start: int = 0, end: int | None = None) -> Iterator[dict[str, Any]]:
        """Passages `start..end-1` in order, reading the file sequentially (for embedding a shard)."""
        end = len(self) if end is None else end
        with self.path.open("rb") as handle:
            for row in range(start, end):
                yield self._read_at(handle, row)

    def id_at(self, row: int) -> str:
        value = self.ids[row]
        return value.decode("utf-8") if isinstance(value, bytes) else str(int(value))

    def ids_of(self, start: int = 0, end: int | None = None) -> list[str]:
        """Ids of rows `start..end-1` as strings."""
        chunk = self.ids[start:end]
        if chunk.dtype.kind == "S":
            return [v.decode("utf-8") for v in chunk]
        return [str(v) for v in chunk.tolist()]

    # ---- ids -> rows ----

    def _sorted_ids(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids in ascending order, the permutation that sorts them or None when already sorted)."""
        if self._sorted is None:
            ids = np.asarray(self.ids)
            if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # DPR: ids 1..N in order
                self._sorted = (ids, None)  # type: ignore[assignment]
            else:
                order = np.argsort(ids, kind="stable")
                self._sorted = (ids[order], order)
        return self._sorted  # type: ignore[return-value]

    def rows_for_ids(self, ids: Sequence[str] | np.ndarray, source: str = "") -> np.ndarray:
        """Rows of the passages with these ids; an id missing from the file is a `DataFormatError`."""
        sorted_ids, order = self._sorted_ids()
        wanted = np.asarray(ids)
        if self.ids.dtype.kind == "S":
            width = self.ids.dtype.itemsize
            encoded = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in wanted.tolist()]
            keys = np.array(encoded, dtype=f"S{max(width, 1)}")  # longer ids are cut here, and flagged below
            too_long = np.array([len(v) > width for v in encoded], dtype=bool)
        elif wanted.dtype.kind in "iu":
            keys, too_long = wanted.astype(np.int64), None
        else:
            numbers = [_canonical_int(v.decode() if isinstance(v, bytes) else str(v)) for v in wanted.tolist()]
            keys = np.array([-1 if n is None else n for n in numbers], dtype=np.int64)
            too_long = np.array([n is None for n in numbers], dtype=bool)
        pos = np.searchsorted(sorted_ids, keys).clip(max=len(sorted_ids) - 1)
        missing = sorted_ids[pos] != keys
        if too_long is not None:
            missing |= too_long
        if missing.any():
            bad = [str(v.decode() if isinstance(v, bytes) else v) for v in wanted[missing][:5].tolist()]
            raise DataFormatError(
                f"{int(missing.sum())} passage ids{' from ' + source if source else ''} are not in {self.path} "
                f"(first: {bad}); the embeddings / index were built from another passage file: pass the matching "
                "--passages, or rebuild the embeddings"
            )
        return pos if order is None else order[pos]

    def lookup(self, ids: Sequence[str] | np.ndarray) -> list[dict[str, Any]]:
        """Passages by id, in the order given."""
        return self.get_many(self.rows_for_ids(ids))

    def fingerprint(self) -> dict[str, Any]:
        stat = self.path.stat()
        return {"path": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "count": len(self)}

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class MemoryPassages:
    """The `lookup` interface over passages already in memory: a list of dicts or a mapping id -> dict."""

    def __init__(self, passages: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> None:
        if isinstance(passages, Mapping):
            self.by_id = {str(k): dict(v) for k, v in passages.items()}
        else:
            self.by_id = {}
            for k, passage in enumerate(passages):
                if "id" not in passage or "text" not in passage:
                    raise DataFormatError(f"passage {k}: needs 'id' and 'text' (and usually 'title')")
                self.by_id[str(passage["id"])] = dict(passage)

    def __len__(self) -> int:
        return len(self.by_id)

    def lookup(self, ids: Sequence[str] | np.ndarray) -> list[dict[str, Any]]:
        keys = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(ids).tolist()]
        missing = [k for k in keys if k not in self.by_id]
        if missing:
            raise DataFormatError(f"{len(missing)} passage ids are not among the passages given (first: {missing[:5]})")
        return [dict(self.by_id[k]) for k in keys]


def default_index_dir(path: str | os.PathLike) -> Path:
    """A per-user cache folder for offset indexes of read-only corpora."""
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:16]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfrag" / "passages" / digest
