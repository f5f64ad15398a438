"""Assembly of the generator-data chain's labels into training instances (`selfrag.data_creation.pipeline`'s
last stage, re-exported there): `ChainLabels` gathers what the steps found by unit, `assemble` builds each item's
instance with `generator_data.build_output` and a per-item `random.Random(f"{seed}:{id}")` (so the result does not
depend on how runs were interrupted), and `label_statistics` counts labels, tokens and drops for `.stats.json`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from selfrag import tokens
from selfrag.data_creation.generator_data import SentenceLabels, build_output, generator_instance
from selfrag.data_creation.settings import ChainSettings


@dataclass
class ChainLabels:
    """Everything the steps found, by unit: item `n`, sentence `(n, t)`, passage `(n, t, p)`."""

    initial: list[str | None]  # Retrieve label per item
    utility: list[str | None]  # IsUse label per item
    sentences: dict[int, dict[str, Any]]  # item -> {"sentences", "skipped"} (retrieval path only)
    ctxs: dict[tuple[int, int], list[dict[str, Any]]]  # sentence -> passages
    multi: dict[tuple[int, int], str | None]  # sentence (t > 0) -> three-way Retrieve label
    rel: dict[tuple[int, int, int], str | None]  # passage -> IsRel label
    sup: dict[tuple[int, int, int], str | None]  # passage -> IsSup label

    def sentence_labels(self, n: int) -> list[SentenceLabels]:
        """`generator_data.SentenceLabels` of item `n` (empty off the retrieval path)."""
        if n not in self.sentences:
            return []
        out = []
        for t, (text, skipped) in enumerate(zip(self.sentences[n]["sentences"], self.sentences[n]["skipped"])):
            if skipped:
                out.append(SentenceLabels(text, skipped=True))
                continue
            judged = [p for p in range(len(self.ctxs[(n, t)])) if (n, t, p) in self.rel]  # a prefix: ctxs[:top_n]
            out.append(
                SentenceLabels(
                    text,
                    retrieve=self.multi.get((n, t)) if t > 0 else None,
                    passages=[self.ctxs[(n, t)][p] for p in judged],
                    relevance=[self.rel[(n, t, p)] for p in judged],
                    groundness=[self.sup[(n, t, p)] for p in judged],
                )
            )
        return out


def assemble(
    items: Sequence[Mapping[str, Any]], labels: ChainLabels, settings: ChainSettings
) -> tuple[list[dict[str, str]], Counter]:
    """Final instances (`generator_data.build_output`, one seeded `random.Random` per item) and drops by reason."""
    instances: list[dict[str, str]] = []
    dropped: Counter = Counter()
    for n, item in enumerate(items):
        initial, utility = labels.initial[n], labels.utility[n]
        if initial is None:
            dropped["no Retrieve label (critic reject)"] += 1
            continue
        if utility is None:
            dropped["no IsUse label (critic reject)"] += 1
            continue
        output = build_output(
            item["output"],
            initial,
            utility,
            labels.sentence_labels(n),
            item["dataset_name"],
            random.Random(f"{settings.seed}:{item['id']}"),
            negative=settings.negative_samples,
            no_retrieval_keep=settings.no_retrieval_keep,
        )
        if output is None:
            kind = "retrieval" if n in labels.sentences else "no-retrieval"
            dropped[f"dropped by build_output ({kind} path)"] += 1
            continue
        instances.append(generator_instance(item, output))
    return instances, dropped


def label_statistics(
    items: int,
    instances: Sequence[Mapping[str, str]],
    dropped: Mapping[str, int],
    critic_labels: Mapping[str, Sequence[str | None]],
    **extra: Any,
) -> dict[str, Any]:
    """Counts for the `.stats.json`: critic labels per aspect (rejects as `null`), reflection tokens in the final
    outputs, instances per dataset and per first token, drops by reason."""
    critic = {
        aspect: dict(sorted(Counter("null" if label is None else label for label in labels).items()))
        for aspect, labels in critic_labels.items()
    }
    output_tokens = Counter()
    for instance in instances:
        for token in tokens.ALL_TOKENS:
            count = instance["output"].count(token)
            if count:
                output_tokens[token] += count
    return {
        "items": items,
        "instances": len(instances),
        "dropped": dict(sorted(dropped.items())),
        "critic_labels": critic,
        "output_tokens": {t: output_tokens[t] for t in tokens.ALL_TOKENS if output_tokens[t]},
        "instances_by_dataset": dict(sorted(Counter(i["dataset_name"] for i in instances).items())),
        "instances_by_first_token": dict(
            sorted(
                Counter(
                    next((t for t in tokens.ALL_TOKENS if i["output"].startswith(t)), "none") for i in instances
                ).items()
            )
        ),
        **extra,
    }
