"""Step storage of the generator-data chain (`pipeline.create_generator_data`): resumable, per-step files.

Each step writes its own file under `work_dir` (`{step}.jsonl`, one record per unit with its `index` and `key`)
and is recorded as done in `work_dir/manifest.json` with a hash of its keys; an interrupted step resumes from
`{step}.jsonl.partial.jsonl` (`selfrag.data.ResumableRun`), so a rerun skips finished steps and items, never
losing or repeating one. The manifest holds the run's fingerprint; a `work_dir` made with other settings is
refused. `critic_step` and `retrieval_step` are the two kinds of step the chain runs on the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from selfrag.data import ResumableRun, read_lines, read_text, write_json_atomic
from selfrag.data_creation.critic_infer import Critic, write_items
from selfrag.data_creation.critic_prompts import critic_input
from selfrag.errors import ConfigError

logger = logging.getLogger(__name__)

# Steps labelled by the critic; each step is named after its aspect (critic_label.py's `aspect`).
CRITIC_STEPS = ("retrieval", "utility", "multi_retrieval", "relevance", "groundness")


class Searcher(Protocol):
    """What the chain needs of a retriever (`selfrag.retrieval.Retriever` has it)."""

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[dict[str, Any]]]: ...


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


class StepStore:
    """The files of one chain run under `work_dir`: a manifest, one `{step}.jsonl` per finished step.

    The manifest holds the run's fingerprint; a `work_dir` made with other settings is refused.
    """

    def __init__(self, work_dir: str | Path, fingerprint: Mapping[str, Any]) -> None:
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / "manifest.json"
        self.fingerprint = json.loads(json.dumps(dict(fingerprint)))
        if self.manifest_path.exists():
            self.manifest = json.loads(read_text(self.manifest_path, "manifest"))
            if self.manifest.get("fingerprint") != self.fingerprint:
                raise ConfigError(
                    f"{self.dir} holds a run with other settings ({self.manifest.get('fingerprint')}); "
                    "use another --work_dir or delete it to start over"
                )
        else:
            self.manifest = {"fingerprint": self.fingerprint, "steps": {}}
            write_json_atomic(self.manifest_path, self.manifest)
        self.calls: Counter = Counter()  # compute() calls per step in this process (tests: zero on a rerun)

    def path(self, step: str) -> Path:
        return self.dir / f"{step}.jsonl"

    def records(self, step: str) -> list[dict[str, Any]]:
        """The records of a finished step, from its file."""
        return [json.loads(line) for _, line in read_lines(self.path(step), "step file") if line.strip()]

    def run(
        self,
        step: str,
        keys: Sequence[str],
        compute: Callable[[list[int]], list[dict[str, Any]]],
        batch_size: int,
        resumed: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Records of `step`, one per key in order: read back when the step is done, else computed (resumably).

        `compute(indices)` returns one record per index (without `index` / `key`, which are added here).
        `resumed(records)` is shown the records an interrupted run of the step saved, before `compute` is called.
        """
        path = self.path(step)
        keys_sha = _sha("\n".join(keys))
        done = self.manifest["steps"].get(step)
        if done is not None and path.exists():
            if done["keys_sha"] != keys_sha:
                raise ConfigError(f"{path}: made for other units than this run needs; delete {self.dir} to start over")
            records = self.records(step)
            logger.info("%s: done (%d records in %s)", step, len(records), path)
            return records
        run = ResumableRun(
            str(path), {**self.fingerprint, "step": step, "keys_sha": keys_sha}, len(keys), batch_size, step
        )
        if resumed is not None:
            resumed(list(run.done.values()))
        for batch in run.batches() if run.todo else ():
            self.calls[step] += 1
            computed = compute(batch)
            assert len(computed) == len(batch), "compute() must return one record per index"
            run.save([{"index": i, "key": keys[i], **record} for i, record in zip(batch, computed)])
        records = run.records()
        write_items(path, records)
        self.manifest["steps"][step] = {"keys_sha": keys_sha, "records": len(records)}
        write_json_atomic(self.manifest_path, self.manifest)
        run.finish()
        return records


def critic_step(
    store: StepStore,
    aspect: str,
    units: Sequence[tuple[str, dict[str, Any] | None]],
    critic: Critic,
    batch_size: int,
) -> list[str | None]:
    """Labels of `aspect` (the step of that name) for `(key, critic item)` units; a None item is not asked (label
    None, `reason`).

    Identical critic inputs are asked once per run (`input_sha` in the records); the record of the unit that asked
    also keeps the critic `item` (for `export_critic_labels`).
    """
    shas = [_sha(aspect + "\0" + critic_input(aspect, item)) if item is not None else None for _, item in units]
    known: dict[str, str | None] = {}

    def remember(records: list[dict[str, Any]]) -> None:
        # The labels of a resumed partial run, so a resumed batch does not ask them again.
        known.update((r["input_sha"], r["label"]) for r in records if r.get("input_sha"))

    def compute(batch: list[int]) -> list[dict[str, Any]]:
        ask = [i for i in batch if shas[i] is not None and shas[i] not in known]
        first: dict[str, int] = {}
        for i in ask:
            first.setdefault(shas[i], i)
        order = list(first.values())
        if order:
            for i, label in zip(order, critic.predict(aspect, [units[i][1] for i in order])):
                known[shas[i]] = label
        asked = set(order)
        records: list[dict[str, Any]] = []
        for i in batch:
            if shas[i] is None:
                records.append({"label": None, "reason": "no input"})
                continue
            record = {"label": known[shas[i]], "input_sha": shas[i]}
            if i in asked:  # the critic input once, for the critic-label export
                record["item"] = {k: v for k, v in units[i][1].items() if k != "_where"}  # type: ignore[union-attr]
            records.append(record)
        return records

    records = store.run(aspect, [k for k, _ in units], compute, batch_size, resumed=remember)
    return [r["label"] for r in records]


def retrieval_step(
    store: StepStore, step: str, units: Sequence[tuple[str, str]], retriever: Searcher, k: int, batch_size: int
) -> list[list[dict[str, Any]]]:
    """Passages for `(key, query)` units; identical queries are searched once per batch."""

    def compute(batch: list[int]) -> list[dict[str, Any]]:
        queries = list(dict.fromkeys(units[i][1] for i in batch))
        found = dict(zip(queries, retriever.search(queries, k)))
        return [{"query": units[i][1], "ctxs": found[units[i][1]][:k]} for i in batch]

    return [r["ctxs"] for r in store.run(step, [k_ for k_, _ in units], compute, batch_size)]


def export_critic_labels(store: StepStore) -> dict[str, int]:
    """`work_dir/critic_labels/{aspect}.jsonl`: every distinct critic input with its label (rejects left out), in
    the format of critic_label.py's output (`aspect`, `label`), so that a chain run with a judge (`--judge_model
    gpt-4`) on a sample is the critic's training data: `combine_critic_data.py --input_files critic_labels/*`."""
    counts = {}
    for aspect in CRITIC_STEPS:
        rows = [
            {**record["item"], "aspect": aspect, "label": record["label"]}
            for record in store.records(aspect)
            if record.get("item") is not None and record["label"] is not None
        ]
        write_items(store.dir / "critic_labels" / f"{aspect}.jsonl", rows)
        counts[aspect] = len(rows)
    return counts
