"""Parse a judge's reply into one label of an aspect, or reject it with the reason (never guess).

Rules (docs Appendix A, §13 item 15):
- the label is read from the first line of the reply (so also before the first blank line); surrounding
  whitespace and a leading `Label:` / `Rating:` / `Score:` / `Answer:` / `Decision:` / `Need retrieval?:` cue
  are dropped;
- the label must open that line, in brackets or without (a missing `[` or `]` is added), compared without
  regard to case; what follows must not start with a letter or digit (`[Relevant].` and `Relevant - ...` pass,
  `Relevantly` does not);
- aliases: for `retrieval`, `Yes` -> `[Retrieval]` and `No` -> `[No Retrieval]` (the original's question was
  "Need retrieval? [Yes]/[No]"); for `groundness`, `No support` / `Contradictory` -> `[No support / Contradictory]`;
  for `utility`, `5`, `[5]`, `Utility: 5`, `[Utility:5]` -> `[Utility:5]`;
- a first line that also names another label of the aspect in brackets is ambiguous and rejected;
- the explanation is what follows `Explanation:` (or else the rest of the reply after the first line).

Unlike the original `convert_score_to_retrieval_token`, an unknown Retrieve label is a reject here, not
`[No Retrieval]`; the generator-data step may still apply the original's fallback on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selfrag import tokens
from selfrag.data_creation.critic_prompts import get_aspect

_CUE = re.compile(r"^(?:label|rating|score|answer|decision|judg(?:e)?ment|need retrieval\?)\s*:\s*", re.IGNORECASE)
_BOUNDARY = r"(?=$|[^A-Za-z0-9])"
# A digit 1-5, not part of a number, a fraction or a word ("4.5", "5/5", "5th" are rejected).
_UTILITY = re.compile(r"^\[?\s*(?:utility\s*:\s*)?([1-5])\s*\]?(?![A-Za-z0-9])(?![./]\d)", re.IGNORECASE)

_ALIASES: dict[str, dict[str, str]] = {
    "retrieval": {"yes": tokens.RETRIEVAL, "no": tokens.NO_RETRIEVAL},
    "groundness": {"no support": tokens.NO_SUPPORT, "contradictory": tokens.NO_SUPPORT},
}


@dataclass(frozen=True)
class ParsedLabel:
    """`label` is one of the aspect's labels, or None with `reason` saying why the reply was rejected."""

    label: str | None
    reason: str | None = None
    explanation: str = ""

    @property
    def ok(self) -> bool:
        return self.label is not None


def _explanation(text: str, first_line: str) -> str:
    marker = text.find("Explanation:")
    if marker >= 0:
        return text[marker + len("Explanation:") :].strip()
    return text[len(first_line) :].strip()


def _names(aspect: str) -> dict[str, str]:
    """Lower-cased label name (without brackets) or alias -> the label token."""
    names = {label[1:-1].lower(): label for label in get_aspect(aspect).labels}
    names.update(_ALIASES.get(aspect, {}))
    return names


def parse_label(aspect: str, raw: str | None) -> ParsedLabel:
    """The label in a judge's reply `raw` for `aspect`, or a reject with its reason."""
    labels = get_aspect(aspect).labels
    text = (raw or "").strip()
    if not text:
        return ParsedLabel(None, "empty reply")
    first = text.split("\n", 1)[0].strip()
    explanation = _explanation(text, text.split("\n", 1)[0])
    line = _CUE.sub("", first).strip()
    if not line:
        return ParsedLabel(None, f"no label on the first line: {first!r}")
    label = None
    if aspect == "utility":
        match = _UTILITY.match(line)
        if match:
            label = f"[Utility:{match.group(1)}]"
    else:
        # Longest names first, so "No Retrieval" wins over the alias "No".
        for name, token in sorted(_names(aspect).items(), key=lambda kv: -len(kv[0])):
            if re.match(r"^\[?\s*" + re.escape(name) + r"\s*\]?" + _BOUNDARY, line, re.IGNORECASE):
                label = token
                break
    if label is None:
        return ParsedLabel(None, f"no {aspect} label {list(labels)} at the start of the first line: {first!r}")
    others = [other for other in labels if other != label and other.lower() in line.lower()]
    if others:
        return ParsedLabel(None, f"ambiguous: the first line names {label} and {others}: {first!r}")
    return ParsedLabel(label, None, explanation)
