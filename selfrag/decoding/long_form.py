"""Long-form Self-RAG: segment-level beam search with critique scores (paper §3.3, Algorithm 1).

A question is answered segment by segment. At the root the model decides whether to retrieve (as in the short
form). When it retrieves, every passage is tried: `context + [Retrieval]<paragraph>title\\ntext</paragraph>`,
and the model writes a segment, stopping where it asks for the next retrieval. Each continuation is scored
with IsRel / IsSup / IsUse (+ sequence score); the best `beam_width` paths go on, up to `max_depth - 1`
segments. The context for step t is the prompt plus segments 1..t-1 (earlier passages are not kept, as in
the original and in training).

Scoring a path. The original multiplies step scores and reads answers only from the deepest level, so a path
that finished early can never win (original run_long_form_static.py:199-274). Here, by default, a path's score
is the **mean** of its step scores, finished paths stay in the beam and compete with deeper ones, and the search
ends when every path in the beam has finished. `beam_width=1` is then exactly greedy segment-by-segment
decoding. `compat="original"` restores the product, the deepest-level rule, the hard-coded weights 1/1/0.5, no
sequence score, the always-zero utility and the `[No Retrieval]` remapping (docs/upstream_quirks.md).

Everything is batched: one backend call per depth level for all active paths of all questions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from selfrag.backends.base import Generation, GenerationBackend, GenParams
from selfrag.decoding.short_form import ShortFormSettings, decide_retrieval
from selfrag.prompts import format_evidence, no_retrieval_prompt
from selfrag.scoring import Judgement, Weights, judgements, score_generation
from selfrag.tokens import (
    ALL_TOKENS,
    CONTINUE,
    NO_RETRIEVAL,
    NO_SUPPORT,
    ORIGINAL_CONTROL_TOKENS,
    RETRIEVAL,
    ReflectionVocab,
    strip_reflection_tokens,
)

Passages = Sequence[Mapping[str, Any]]
# Live retrieval: (question index, answer so far) pairs -> passages for each; static mode re-uses the item's ctxs.
PassageSource = Callable[[list[tuple[int, str]]], list[Passages]]

_RETRIEVE_STRINGS = re.compile(re.escape(RETRIEVAL) + "|" + re.escape(NO_RETRIEVAL))


@dataclass(frozen=True)
class LongFormSettings:
    """Settings of the beam search. `max_depth` counts the root, as the original: at most max_depth-1 segments.

    The defaults are `DecodingConfig`'s (selfrag/decoding/config.py builds these from a command's flags). `cite`:
    the answer ends each segment with a `[k]` citation of its passage (ASQA / ELI5 / the server; not FactScore).

    `add_special_tokens=False` for prompts built with a chat template, which hold their own BOS (`GenParams`).
    """

    mode: Literal["adaptive_retrieval", "always_retrieve", "no_retrieval"] = "adaptive_retrieval"
    threshold: float | None = None
    ndocs: int = 10
    beam_width: int = 2
    max_depth: int = 2
    max_new_tokens: int = 15
    weights: Weights = field(default_factory=Weights)
    ignore_cont: bool = False
    cite: bool = True
    compat: Literal["none", "original"] = "none"
    add_special_tokens: bool = True


@dataclass
class Node:
    """One segment in the search tree. `context` is the prompt this segment's passage was appended to; `kept`:
    the node survived the pruning of its level (was in the beam)."""

    id: int
    parent: int | None
    depth: int
    context: str
    pred: str = ""
    segment: str = ""
    ctx: Mapping[str, Any] | None = None
    step_score: float = 0.0
    score: float = 0.0
    critique: dict[str, float] = field(default_factory=dict)
    wants_retrieval: bool = True
    steps: int = 0  # segments on the path to this node
    kept: bool = False
    rel: Judgement = field(default_factory=Judgement)
    sup: Judgement = field(default_factory=Judgement)
    use: Judgement = field(default_factory=Judgement)
    generation: Generation | None = field(default=None, repr=False, compare=False)

    @property
    def next_context(self) -> str:
        """The prompt the next passage is appended to: this node's context plus its segment."""
        return self.context + self.segment

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "pred": self.pred,
            "segment": self.segment,
            "ctx": dict(self.ctx) if self.ctx is not None else None,
            "step_score": self.step_score,
            "score": self.score,
            "critique": self.critique,
            "wants_retrieval": self.wants_retrieval,
        }


@dataclass
class BeamResult:
    """The answer of one question: the best path's nodes (root excluded), the whole tree for inspection, and the
    answer assembled from the path with the passages it cites (in citation order)."""

    retrieve: bool
    retrieval_prob: float | None
    path: list[Node]
    tree: list[Node]
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    no_retrieval: Generation | None = field(default=None, repr=False)  # the answer without retrieval

    @property
    def no_retrieval_text(self) -> str | None:
        """The answer without retrieval, up to its first blank line."""
        return None if self.no_retrieval is None else self.no_retrieval.text.split("\n\n")[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "retrieve": self.retrieve,
            "retrieval_prob": self.retrieval_prob,
            "best_path": [n.id for n in self.path],
            "no_retrieval_text": self.no_retrieval_text,
            "prediction_tree": [n.to_dict() for n in self.tree],
        }


def split_segment(gen: Generation, vocab: ReflectionVocab, settings: LongFormSettings) -> tuple[str, bool]:
    """Cut a continuation at the first point where the model asks for retrieval.

    Returns (segment text before that point, whether it asks). Decided from token ids; the text keeps its
    special tokens, so the k-th Retrieve token among the ids is the k-th `[Retrieval]` / `[No Retrieval]` string.
    An emitted `[No Retrieval]` counts as a request when `threshold` is set and p(Ret)/(p(Ret)+p(NoRet)) at that
    position exceeds it (the paper's rule at every decision point); under `compat="original"` when
    (p(Ret)+p(Cont))/(p(Ret)+p(NoRet)) > threshold (original run_long_form_static.py:105-141).
    """
    ret, no_ret, cont = vocab[RETRIEVAL], vocab[NO_RETRIEVAL], vocab[CONTINUE]
    occurrence = -1
    for pos, token in enumerate(gen.token_ids):
        if token not in (ret, no_ret):
            continue
        occurrence += 1
        asks = token == ret
        if token == no_ret and settings.threshold is not None:
            p = {t: math.exp(gen.step_logprobs[pos][t]) for t in (ret, no_ret, cont)}
            if settings.compat == "original":
                asks = (p[ret] + p[cont]) / (p[ret] + p[no_ret]) > settings.threshold
            else:
                asks = p[ret] / (p[ret] + p[no_ret]) > settings.threshold
        if asks:
            matches = list(_RETRIEVE_STRINGS.finditer(gen.text))
            cut = matches[occurrence].start() if occurrence < len(matches) else len(gen.text)
            return gen.text[:cut], True
    return gen.text, False


def step_score(gen: Generation, vocab: ReflectionVocab, settings: LongFormSettings) -> tuple[float, dict[str, float]]:
    """Critique score of one segment; under compat the original's fixed 1/1/0.5 weights, no seq score, utility 0."""
    if settings.compat == "original":
        weights = Weights(w_rel=1.0, w_sup=1.0, w_use=0.0, use_groundness=settings.weights.use_groundness)
    else:
        weights = settings.weights
    scores = score_generation(gen, vocab, weights)
    return scores.total, scores.to_dict()


def beam_search(
    backend: GenerationBackend,
    vocab: ReflectionVocab,
    prompts: Sequence[str],
    ctxs: Sequence[Passages],
    settings: LongFormSettings,
    passage_source: PassageSource | None = None,
) -> list[BeamResult]:
    """Answer a batch of questions; one backend call per depth level covers every question.

    Args:
        prompts: formatted prompts (`### Instruction:\\n...\\n\\n### Response:\\n`, or a chat template's).
        ctxs: each question's passages (static mode: re-used at every step, `[:ndocs]`).
        passage_source: live retrieval; called once per level with (question index, answer so far) for each path
            to expand (the answer without reflection tokens, "" at the root); returns passages for each.
    """
    params = GenParams(
        max_tokens=settings.max_new_tokens,
        watch_token_ids=vocab.all_ids,
        add_special_tokens=settings.add_special_tokens,
    )
    n = len(prompts)
    decisions: list[tuple[bool, float | None]] = [(True, None)] * n
    if settings.mode != "always_retrieve":
        decisions = _root_decisions(backend, vocab, prompts, settings, params)

    results: list[BeamResult | None] = [None] * n
    # Questions that do not retrieve: one generation after [No Retrieval].
    no_ret = [i for i in range(n) if not decisions[i][0]]
    if no_ret:
        gens = backend.generate([no_retrieval_prompt(prompts[i]) for i in no_ret], params)
        for i, gen in zip(no_ret, gens):
            results[i] = BeamResult(False, decisions[i][1], path=[], tree=[], no_retrieval=gen)

    trees: dict[int, list[Node]] = {}
    beams: dict[int, list[Node]] = {}
    for i in range(n):
        if decisions[i][0]:
            root = Node(id=0, parent=None, depth=0, context=prompts[i], pred=RETRIEVAL, kept=True)
            trees[i], beams[i] = [root], [root]
    for depth in range(1, settings.max_depth):
        expand = [(i, node) for i in beams for node in beams[i] if node.wants_retrieval]
        if not expand:
            break
        passages = _passages(expand, prompts, ctxs, settings, passage_source)
        requests = [(i, node, ctx) for (i, node), docs in zip(expand, passages) for ctx in docs]
        gens = backend.generate([node.next_context + format_evidence(ctx) for _, node, ctx in requests], params)
        children: dict[int, list[Node]] = {i: [] for i in beams}
        for (i, parent, ctx), gen in zip(requests, gens):
            segment, wants = split_segment(gen, vocab, settings)
            s, critique = step_score(gen, vocab, settings)
            rel, sup, use = judgements(gen, vocab)
            child = Node(
                id=len(trees[i]),
                parent=parent.id,
                depth=depth,
                context=parent.next_context,
                pred=gen.text,
                segment=segment,
                ctx=ctx,
                step_score=s,
                critique=critique,
                wants_retrieval=wants,
                steps=parent.steps + 1,
                rel=rel,
                sup=sup,
                use=use,
                generation=gen,
            )
            child.score = _path_score(parent, s, child.steps, settings)
            trees[i].append(child)
            children[i].append(child)
        for i, kids in children.items():
            if not kids:  # nothing was expanded for this question: its beam is final
                continue
            if settings.compat == "original":  # only the new level competes: finished paths are dropped
                beams[i] = _top(kids, settings.beam_width)
            else:  # finished paths stay in the beam and compete with the new segments
                beams[i] = _top([node for node in beams[i] if not node.wants_retrieval] + kids, settings.beam_width)
            for node in beams[i]:
                node.kept = True

    for i, tree in trees.items():
        best = max((node for node in beams[i] if node.depth > 0), key=lambda node: node.score, default=None)
        path = _path(tree, best) if best is not None else []
        results[i] = BeamResult(True, decisions[i][1], path=path, tree=tree)
    for result in results:
        result.answer, result.citations = assemble_answer(result, settings)  # type: ignore[union-attr]
    return results  # type: ignore[return-value]


def _root_decisions(backend, vocab, prompts, settings, params) -> list[tuple[bool, float | None]]:
    """Retrieve at the root? As the short form, on a first pass over the bare prompts."""
    if settings.mode == "no_retrieval":
        return [(False, None)] * len(prompts)
    firsts = backend.generate(list(prompts), params)
    short = ShortFormSettings(mode="adaptive_retrieval", threshold=settings.threshold)
    out = []
    for gen in firsts:
        retrieve, p_ret, _ = decide_retrieval(gen, vocab, short)
        if settings.compat == "original":
            # The original retrieves only if the text shows [Retrieval] AND a threshold is set AND p > threshold.
            retrieve = (
                vocab[RETRIEVAL] in gen.token_ids and settings.threshold is not None and p_ret > settings.threshold
            )
        out.append((retrieve, p_ret))
    return out


def _passages(expand, prompts, ctxs, settings, passage_source) -> list[Passages]:
    if passage_source is None:
        return [ctxs[i][: settings.ndocs] for i, _ in expand]
    answers = [
        (i, " ".join(strip_reflection_tokens(node.next_context[len(prompts[i]) :]).split())) for i, node in expand
    ]
    return [docs[: settings.ndocs] for docs in passage_source(answers)]


def _path_score(parent: Node, step: float, steps: int, settings: LongFormSettings) -> float:
    if settings.compat == "original":
        return step if parent.depth == 0 else step * parent.score
    return parent.score + (step - parent.score) / steps  # running mean of the step scores


def _top(nodes: list[Node], width: int) -> list[Node]:
    """The `width` best nodes; ties keep creation order (stable sort)."""
    return sorted(nodes, key=lambda node: node.score, reverse=True)[:width]


def _path(tree: list[Node], node: Node) -> list[Node]:
    path = []
    while node.parent is not None:
        path.append(node)
        node = tree[node.parent]
    return path[::-1]


# ------------------------------------------------------------------------------------------------ answer assembly


def fix_spacing(text: str, compat: str = "none") -> str:
    """Insert a space after a sentence end glued to the next word ("end.Next" -> "end. Next").

    The original (utils.py:78-81) also splits decimals ("3.5" -> "3. 5"); we only split before a capital letter.
    """
    if compat == "original":
        return re.sub(r"(?<=\w)([.!?])(?=\w)", r"\1 ", text)
    return re.sub(r"(?<=[a-z0-9)])([.!?])(?=[A-Z])", r"\1 ", text)


def clean_segment(text: str, compat: str = "none") -> str:
    """A segment as it appears in the answer: reflection tokens and `</s>` removed.

    Default: all 15 tokens and collapsed whitespace. Original (utils.py:84-95): the 14 control strings and `</s>`,
    then one leading space dropped (`[Continue to Use Evidence]` is handled by `assemble_answer`).
    """
    if compat == "original":
        text = strip_reflection_tokens(text, ORIGINAL_CONTROL_TOKENS).replace("</s>", "")
        return text[1:] if text.startswith(" ") else text
    return " ".join(strip_reflection_tokens(text, ALL_TOKENS).replace("</s>", "").split())


def assemble_answer(result: BeamResult, settings: LongFormSettings) -> tuple[str, list[dict[str, Any]]]:
    """The answer text and the cited passages, in citation order.

    With `settings.cite` (ASQA / ELI5, the server) each segment ends with `[k]` (before its final punctuation), k
    numbering the distinct passages in order of first citation; without (FactScore) the segments are joined with
    spaces. Segments repeated word for word are dropped; with `ignore_cont`, segments judged
    `[No support / Contradictory]` too. The original numbers citations by depth and drops each segment's last
    character (`compat="original"`).
    """
    compat = settings.compat
    if not result.retrieve:
        return fix_spacing(clean_segment(result.no_retrieval_text or "", compat), compat), []
    nodes = [n for n in result.path if not (settings.ignore_cont and NO_SUPPORT in n.segment)]
    if compat == "original":
        return _assemble_original(nodes, settings.cite)
    seen: set[str] = set()
    parts: list[str] = []
    docs: list[Mapping[str, Any]] = []
    for node in nodes:
        text = clean_segment(node.segment)
        if not text or text in seen:
            continue
        seen.add(text)
        if not settings.cite:
            parts.append(text)
            continue
        if node.ctx not in docs:
            docs.append(node.ctx)  # type: ignore[arg-type]
        cite = f" [{docs.index(node.ctx) + 1}]"  # type: ignore[arg-type]
        parts.append(text[:-1] + cite + text[-1] if text[-1] in ".!?" else text + cite)
    return fix_spacing(" ".join(parts)), [dict(d) for d in docs]


def _assemble_original(nodes: Sequence[Node], cite: bool) -> tuple[str, list[dict[str, Any]]]:
    """run_long_form_static.py:276-297 and 372-435, kept for `--compat original`."""
    if not cite:
        return fix_spacing(clean_segment(" " + " ".join(n.segment for n in nodes), "original"), "original"), []
    output, docs, seen = "", [], []
    for depth, node in enumerate(nodes, start=1):
        text = clean_segment(node.segment, "original")
        if not node.segment or text in seen:
            continue
        seen.append(text)
        output += text[:-1] + " [" + str(depth) + "]. "
        docs.append(dict(node.ctx))  # type: ignore[arg-type]
    output = fix_spacing(output[:-1] if output.endswith(" ") else output, "original")
    output = output.replace(f".{CONTINUE}", " [1]. ").replace(". [1] ", " [1]. ")
    return output, docs
