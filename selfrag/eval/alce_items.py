"""The ASQA / ELI5 item fields ALCE's metrics read, shared by `selfrag.eval.alce` (the scorer) and
`selfrag.eval.alce_models` (its model-based extras), so that imports run one way: alce -> alce_models -> alce_items.

- `qa_pairs_of`: the short answers of each disambiguated question (ASQA `qa_pairs[*].short_answers`);
- `references_of`: the reference long answers (ASQA `annotations[*].long_answer`, else ELI5 `answer`);
- `require`: a field of an item, with the item's `file:line` and a hint when it is missing or of the wrong type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfrag.data import where
from selfrag.errors import DataFormatError


def require(item: Mapping[str, Any], name: str, kind: type | tuple[type, ...], hint: str) -> Any:
    """`item[name]`, which must be a `kind`; else a `DataFormatError` naming the item, the field and `hint`."""
    if name not in item:
        raise DataFormatError(f"{where(item)}: missing field '{name}'; {hint}")
    if not isinstance(item[name], kind):
        raise DataFormatError(f"{where(item)}: field '{name}' has type {type(item[name]).__name__}; {hint}")
    return item[name]


def qa_pairs_of(item: Mapping[str, Any]) -> list[list[str]]:
    """The short answers of each qa pair: `qa_pairs[*].short_answers`."""
    pairs = require(item, "qa_pairs", list, "ASQA items list their disambiguated questions in qa_pairs")
    if not pairs:
        raise DataFormatError(f"{where(item)}: 'qa_pairs' is empty")
    answers = []
    for k, pair in enumerate(pairs):
        short = pair.get("short_answers") if isinstance(pair, Mapping) else None
        if not isinstance(short, list) or not all(isinstance(a, str) for a in short):
            raise DataFormatError(f"{where(item)}: qa_pairs[{k}] has no list of strings 'short_answers'")
        answers.append(short)
    return answers


def references_of(item: Mapping[str, Any]) -> list[str]:
    """ROUGE references: the `long_answer` of the first two `annotations` (ASQA; ALCE reads `annotations[0]` and
    `[1]`, and a single one serves alone here), else `answer` (ELI5)."""
    if item.get("annotations"):
        refs = [a.get("long_answer") if isinstance(a, Mapping) else None for a in item["annotations"][:2]]
        if all(isinstance(r, str) for r in refs):
            return refs
        raise DataFormatError(f"{where(item)}: every annotations[*] needs a string 'long_answer'")
    if isinstance(item.get("answer"), str):
        return [item["answer"]]
    raise DataFormatError(f"{where(item)}: no reference for ROUGE: needs annotations[*].long_answer or answer")
