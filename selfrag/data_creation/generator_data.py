"""Generator training instances with inline reflection tokens, from critic labels (original postprocess_data.py).

Pure functions only: the sentence split, retrieval and critic inference that produce the labels are later steps of
issue #6. Behaviour follows docs/original_selfrag.md §8.4 step 9 and §13 item 15:

- per sentence: `[Retrieval]<paragraph>{title}\\n{text}</paragraph>[Relevant]{s}{IsSup}`,
  `[Retrieval]<paragraph>...</paragraph>[Irrelevant]{s}`, `[Continue to Use Evidence]{s}`, `[No Retrieval]{s}`,
  or the bare sentence when it was skipped (short); sentences are concatenated **without** spaces (spaCy's
  `sent.text` carries no trailing whitespace) and `[Utility:k]` is appended;
- the no-retrieval instance is `[No Retrieval]{output}[Utility:k]`;
- `SUPPORTS` / `REFUTES` become `true` / `false`; outputs starting with `[Continue to Use Evidence]` are dropped;
- critic-prediction parsing keeps the original's lenient rules (a missing `[` added, Yes/No mapped, an unknown
  Retrieve prediction becomes `[No Retrieval]`, the *smallest* digit gives the utility).

Deliberate differences from the original (all randomness goes through the caller's seeded `random.Random`):
- the no-retrieval path is taken when the *converted* initial Retrieve token is `[No Retrieval]` (the original
  tested the raw prediction, so a `No` prediction went down the per-sentence path instead);
- a "random irrelevant paragraph" is a random element of the irrelevant list (the original drew a position
  0..n-1 of that list and used it as a passage index, its bug);
- when a partially / not supported paragraph loses its coin flip and no irrelevant paragraph exists, that
  supported paragraph is kept rather than the sentence dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from selfrag import tokens
from selfrag.prompts import format_evidence

UNKNOWN_RETRIEVE_FALLBACK = tokens.NO_RETRIEVAL


def retrieve_token(pred: str) -> str:
    """The Retrieve token of a critic prediction (original `convert_score_to_retrieval_token`)."""
    pred = pred.strip()
    if not pred.startswith("["):
        pred = "[" + pred
    if pred in tokens.RETRIEVE_TOKENS:
        return pred
    if pred in ("[Yes", "[Yes]"):
        return tokens.RETRIEVAL
    if pred in ("[No", "[No]"):
        return tokens.NO_RETRIEVAL
    return UNKNOWN_RETRIEVE_FALLBACK


def utility_token(pred: str) -> str | None:
    """`[Utility:d]` for the smallest digit 1-5 in the prediction, else an exact token, else None."""
    digits = sorted(set(re.findall(r"[1-5]", pred)))
    if digits:
        return f"[Utility:{digits[0]}]"
    pred = pred.strip()
    pred = pred if pred.startswith("[") else "[" + pred
    return pred if pred in tokens.ISUSE_TOKENS else None


def relevance_token(pred: str | None) -> str | None:
    """`[Relevant]` if "Relevant" occurs (case-sensitive, so not in "Irrelevant"), `[Irrelevant]`, or None."""
    if pred is None:
        return None
    if "Relevant" in pred:
        return tokens.RELEVANT
    if "Irrelevant" in pred:
        return tokens.IRRELEVANT
    return None


def groundness_token(pred: str | None) -> str | None:
    """An IsSup token (a missing `[` added), `[Fully supported]` for a 4 or 5 score, or None."""
    if pred is None:
        return None
    pred = pred.strip()
    if pred in ("4", "5"):
        return tokens.FULLY_SUPPORTED
    pred = pred if pred.startswith("[") else "[" + pred
    return pred if pred in tokens.ISSUP_TOKENS else None


@dataclass
class SentenceLabels:
    """One output sentence with what the critic said about it.

    `retrieve` is the multi-sentence Retrieve prediction (ignored for sentence 0, which uses the initial one;
    None for a later sentence drops it, as a missing prediction did in the original). `passages` are its
    retrieved passages (`title`, `text`), with one relevance and one groundness prediction per passage.
    """

    text: str
    skipped: bool = False
    retrieve: str | None = None
    passages: Sequence[Mapping[str, Any]] = field(default_factory=list)
    relevance: Sequence[str | None] = field(default_factory=list)
    groundness: Sequence[str | None] = field(default_factory=list)


def choose_passage(
    rel: Sequence[str | None], sup: Sequence[str | None], dataset_name: str, rng: random.Random, negative: bool = False
) -> int | None:
    """Index of the passage to show before a `[Retrieval]` sentence, or None to drop the sentence."""
    fully = [i for i, (r, s) in enumerate(zip(rel, sup)) if r == tokens.RELEVANT and s == tokens.FULLY_SUPPORTED]
    partial = [i for i, (r, s) in enumerate(zip(rel, sup)) if r == tokens.RELEVANT and s == tokens.PARTIALLY_SUPPORTED]
    nosup = [i for i, (r, s) in enumerate(zip(rel, sup)) if r == tokens.RELEVANT and s == tokens.NO_SUPPORT]
    irrelevant = [i for i, r in enumerate(rel) if r == tokens.IRRELEVANT]
    if negative or (dataset_name in ("nq", "fever") and irrelevant):
        return rng.choice(irrelevant) if irrelevant else None
    if fully:
        return fully[0]
    if partial and (rng.random() < 0.7 or not irrelevant):
        return partial[0]
    if nosup and (rng.random() < 0.25 or not irrelevant):
        return nosup[0]
    return rng.choice(irrelevant) if irrelevant else None


def sentence_string(
    decision: str,
    sentence: str,
    passage: Mapping[str, Any] | None = None,
    rel: str | None = None,
    sup: str | None = None,
) -> str:
    """One sentence with its reflection tokens (see the module docstring for the four shapes)."""
    if decision == tokens.RETRIEVAL:
        if passage is None or rel not in tokens.ISREL_TOKENS:
            raise ValueError("a [Retrieval] sentence needs a passage and a relevance token")
        if rel == tokens.IRRELEVANT:
            return f"{format_evidence(passage)}{tokens.IRRELEVANT}{sentence}"
        if sup not in tokens.ISSUP_TOKENS:
            raise ValueError("a [Relevant] sentence needs an IsSup token")
        return f"{format_evidence(passage)}{tokens.RELEVANT}{sentence}{sup}"
    if decision in (tokens.CONTINUE, tokens.NO_RETRIEVAL):
        return f"{decision}{sentence}"
    raise ValueError(f"unknown Retrieve decision {decision!r}")


def postprocess_output(output: str) -> str:
    """FEVER labels in the text: `REFUTES` -> `false`, `SUPPORTS` -> `true`."""
    return output.replace("REFUTES", "false").replace("SUPPORTS", "true")


def build_output(
    gold_output: str,
    initial_retrieve: str,
    utility: str,
    sentences: Sequence[SentenceLabels],
    dataset_name: str,
    rng: random.Random,
    negative: bool = False,
    no_retrieval_keep: float = 0.4,
) -> str | None:
    """The generator's training target for one instance, or None when the instance is dropped."""
    retrieve0 = retrieve_token(initial_retrieve)
    use = utility_token(utility)
    if use is None:
        return None
    if gold_output in ("true", "false") and use == "[Utility:1]":
        use = "[Utility:5]"
    if retrieve0 == tokens.NO_RETRIEVAL and not negative:
        if rng.random() >= no_retrieval_keep:
            return None
        output = f"{tokens.NO_RETRIEVAL}{gold_output}{use}"
    else:
        parts = []
        for t, sent in enumerate(sentences):
            if sent.skipped:
                parts.append(sent.text)
                continue
            if t > 0 and sent.retrieve is None:
                continue
            decision = retrieve0 if t == 0 else retrieve_token(sent.retrieve or "")
            if decision != tokens.RETRIEVAL:
                parts.append(sentence_string(decision, sent.text))
                continue
            rel = [relevance_token(p) for p in sent.relevance]
            sup = [groundness_token(p) for p in sent.groundness]
            pick = choose_passage(rel, sup, dataset_name, rng, negative)
            if pick is None:
                continue
            rel_tok, sup_tok = rel[pick], sup[pick]
            if dataset_name in ("nq", "fever", "wow") and rel_tok == tokens.RELEVANT and sup_tok == tokens.NO_SUPPORT:
                rel_tok = tokens.IRRELEVANT
            parts.append(sentence_string(tokens.RETRIEVAL, sent.text, sent.passages[pick], rel_tok, sup_tok))
        if not parts:
            return None
        output = "".join(parts) + use
        if dataset_name == "nq" and tokens.NO_RETRIEVAL in output and rng.random() < 0.5:
            return None
    output = postprocess_output(output)
    if output.startswith(tokens.CONTINUE):
        return None
    return output


def generator_instance(item: Mapping[str, Any], output: str) -> dict[str, str]:
    """The released training-data record: `{instruction, output, input: "", id, dataset_name}`."""
    return {
        "instruction": item["instruction"],
        "output": output,
        "input": "",
        "id": item["id"],
        "dataset_name": item["dataset_name"],
    }
