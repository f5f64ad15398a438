"""Label parsing of judge replies (selfrag/data_creation/labels.py): exact labels and exact reject reasons."""

from __future__ import annotations

import pytest

from selfrag.data_creation.labels import ParsedLabel, parse_label

ACCEPTED = [
    ("retrieval", "[Retrieval]", "[Retrieval]"),
    ("retrieval", "[No Retrieval]\nExplanation: a poem needs no lookup.", "[No Retrieval]"),
    ("retrieval", "No Retrieval]", "[No Retrieval]"),  # missing "[" added
    ("retrieval", "Yes", "[Retrieval]"),
    ("retrieval", "[No]\n\nExplanation: x", "[No Retrieval]"),
    ("retrieval", "Need retrieval?: [Yes]", "[Retrieval]"),
    ("multi_retrieval", "[Continue to Use Evidence]", "[Continue to Use Evidence]"),
    ("multi_retrieval", "  Continue to Use Evidence]  \nThe evidence says so.", "[Continue to Use Evidence]"),
    ("multi_retrieval", "[No Retrieval]", "[No Retrieval]"),
    ("relevance", "[Relevant]", "[Relevant]"),
    ("relevance", "Irrelevant.", "[Irrelevant]"),
    ("relevance", "Rating: [Relevant]\nExplanation: on topic", "[Relevant]"),
    ("relevance", "\n\n[irrelevant]", "[Irrelevant]"),
    ("groundness", "[Fully supported]", "[Fully supported]"),
    ("groundness", "Partially supported]", "[Partially supported]"),
    (
        "groundness",
        "[No support / Contradictory]\nExplanation: the evidence is silent.",
        "[No support / Contradictory]",
    ),
    ("groundness", "No support", "[No support / Contradictory]"),
    ("utility", "5", "[Utility:5]"),
    ("utility", "[Utility:5]", "[Utility:5]"),
    ("utility", "Utility:3", "[Utility:3]"),
    ("utility", "Utility: 4 - mostly complete", "[Utility:4]"),
    ("utility", "[2]", "[Utility:2]"),
    ("utility", "Score: 1\nExplanation: off topic", "[Utility:1]"),
    ("utility", "[Utility:5].", "[Utility:5]"),
]


@pytest.mark.parametrize(("aspect", "raw", "label"), ACCEPTED)
def test_accepted_labels(aspect, raw, label):
    parsed = parse_label(aspect, raw)
    assert parsed.ok and parsed.label == label and parsed.reason is None


REJECTED = [
    ("relevance", "", "empty reply"),
    ("relevance", "   \n ", "empty reply"),
    ("relevance", "Rating:", "no label on the first line: 'Rating:'"),
    (
        "relevance",
        "Relevantly, the passage ...",
        "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: 'Relevantly, the passage ...'",
    ),
    (
        "relevance",
        "[Relevant] or [Irrelevant]",
        "ambiguous: the first line names [Relevant] and ['[Irrelevant]']: '[Relevant] or [Irrelevant]'",
    ),
    (
        "relevance",
        "Explanation: on topic\n[Relevant]",  # the label must be on the first line
        "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: 'Explanation: on topic'",
    ),
    (
        "retrieval",
        "Maybe",
        "no retrieval label ['[Retrieval]', '[No Retrieval]'] at the start of the first line: 'Maybe'",
    ),
    # Yes/No is mapped for the instruction-only Retrieve aspect only (three-way "No" is ambiguous).
    (
        "multi_retrieval",
        "No",
        "no multi_retrieval label ['[Continue to Use Evidence]', '[No Retrieval]', '[Retrieval]'] at the start of "
        "the first line: 'No'",
    ),
    ("relevance", "Yes", "no relevance label ['[Relevant]', '[Irrelevant]'] at the start of the first line: 'Yes'"),
    (
        "groundness",
        "[Supported]",
        "no groundness label ['[Fully supported]', '[Partially supported]', "
        "'[No support / Contradictory]'] at the start of the first line: '[Supported]'",
    ),
]
UTILITY_LABELS = "['[Utility:1]', '[Utility:2]', '[Utility:3]', '[Utility:4]', '[Utility:5]']"
REJECTED += [
    ("utility", raw, f"no utility label {UTILITY_LABELS} at the start of the first line: {raw!r}")
    for raw in ("4.5", "5/5", "6", "0", "[Utility:6]", "five", "5th")
]
REJECTED.append(
    (
        "utility",
        "[Utility:5] or [Utility:4]",
        "ambiguous: the first line names [Utility:5] and ['[Utility:4]']: '[Utility:5] or [Utility:4]'",
    )
)


@pytest.mark.parametrize(("aspect", "raw", "reason"), REJECTED)
def test_rejected_with_reason(aspect, raw, reason):
    assert parse_label(aspect, raw) == ParsedLabel(None, reason)


def test_explanation():
    assert parse_label("relevance", "[Relevant]\nExplanation: it names the capital.").explanation == (
        "it names the capital."
    )
    assert parse_label("utility", "4\nGood but short.").explanation == "Good but short."
    assert parse_label("utility", "4").explanation == ""
