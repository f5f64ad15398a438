"""Generator training data for the quickstart model, made by this project's data pipeline with an oracle critic.

The steps are those of the Self-RAG generator-data pipeline (docs/data_creation.md): a Retrieve decision per
instruction, retrieval with the real retriever (MiniLM + FAISS over the shipped corpus), IsRel / IsSup labels per
retrieved passage, IsUse per answer, then `selfrag.data_creation.generator_data.build_output` writes the training
target with its inline reflection tokens. What a GPT-4 judge or a trained critic does in the paper is done here by
`OracleCritic`, which knows how the corpus was generated: a factual question needs retrieval, an instruction does
not; a passage is relevant iff it is about the question's entity, and fully supports the answer iff it contains the
answer string. Every factual question yields one instance with the best retrieved passage (chosen by
`build_output`'s rule) and one "negative" instance with a retrieved passage about another entity.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from selfrag import tokens
from selfrag.data_creation.generator_data import SentenceLabels, build_output, generator_instance
from selfrag.quickstart import facts

DATASET_NAME = "quickstart"


class OracleCritic:
    """Critic labels from the corpus construction; `predict(aspect, items)` as a critic model would answer.

    Items carry `instruction` and, per aspect, `evidence` (a passage) and `target_output` (the answer sentence).
    """

    def __init__(self, questions: Sequence[facts.Question]) -> None:
        self.questions = {q.question: q for q in questions}

    def predict(self, aspect: str, items: Sequence[Mapping[str, Any]]) -> list[str]:
        return [self._one(aspect, item) for item in items]

    def _one(self, aspect: str, item: Mapping[str, Any]) -> str:
        question = self.questions.get(item["instruction"])
        if aspect == "retrieval":
            return tokens.RETRIEVAL if question else tokens.NO_RETRIEVAL
        if aspect == "utility":
            return "[Utility:5]"
        if question is None:
            raise ValueError(
                f"aspect {aspect!r} asked for an instruction that is not a question: {item['instruction']!r}"
            )
        passage = item["evidence"]
        if aspect == "relevance":
            return tokens.RELEVANT if passage["title"] == question.title else tokens.IRRELEVANT
        if aspect == "groundness":
            relevant = passage["title"] == question.title
            return tokens.FULLY_SUPPORTED if relevant and question.answer in passage["text"] else tokens.NO_SUPPORT
        raise ValueError(f"unknown aspect {aspect!r}")


def question_instances(
    questions: Sequence[facts.Question],
    retrieved: Sequence[Sequence[Mapping[str, Any]]],
    critic: OracleCritic,
    rng: random.Random,
) -> list[dict[str, str]]:
    """A positive and a negative instance per question (`retrieved[i]` are the passages found for question i)."""
    out = []
    for i, (q, ctxs) in enumerate(zip(questions, retrieved)):
        item = {"instruction": q.question}
        decision = critic.predict("retrieval", [item])[0]
        evidence = [{"instruction": q.question, "evidence": c, "target_output": q.output} for c in ctxs]
        sentence = SentenceLabels(
            text=q.output,
            passages=[{"title": c["title"], "text": c["text"]} for c in ctxs],
            relevance=critic.predict("relevance", evidence),
            groundness=critic.predict("groundness", evidence),
        )
        utility = critic.predict("utility", [{"instruction": q.question, "output": q.output}])[0]
        for negative in (False, True):
            output = build_output(q.output, decision, utility, [sentence], DATASET_NAME, rng, negative=negative)
            if output is not None:
                record = {
                    "instruction": q.question,
                    "id": f"q{i}{'-neg' if negative else ''}",
                    "dataset_name": DATASET_NAME,
                }
                out.append(generator_instance(record, output))
    return out


def instruction_instances(
    instructions: Sequence[facts.Instruction], critic: OracleCritic, rng: random.Random
) -> list[dict[str, str]]:
    out = []
    for i, ins in enumerate(instructions):
        decision = critic.predict("retrieval", [{"instruction": ins.instruction}])[0]
        utility = critic.predict("utility", [{"instruction": ins.instruction, "output": ins.output}])[0]
        output = build_output(ins.output, decision, utility, [], DATASET_NAME, rng, no_retrieval_keep=1.0)
        if output is not None:
            out.append(
                generator_instance(
                    {"instruction": ins.instruction, "id": f"i{i}", "dataset_name": DATASET_NAME}, output
                )
            )
    return out


def training_instances(retriever: Any, ndocs: int = 5, seed: int = 0) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """All training instances (shuffled) and statistics: label counts and how often the gold passage was found."""
    rng = random.Random(seed)
    questions = facts.questions(held_out=False)
    critic = OracleCritic(questions)
    retrieved = retriever.search([q.question for q in questions], k=ndocs)
    found = sum(any(c["title"] == q.title for c in ctxs) for q, ctxs in zip(questions, retrieved))
    data = question_instances(questions, retrieved, critic, rng)
    data += instruction_instances(facts.instructions(held_out=False, seed=seed), critic, rng)
    rng.shuffle(data)
    counts = {t: sum(t in d["output"] for d in data) for t in tokens.ALL_TOKENS if any(t in d["output"] for d in data)}
    stats = {
        "instances": len(data),
        "questions": len(questions),
        f"gold_passage_in_top{ndocs}": found / len(questions),
        "token_counts": counts,
    }
    return data, stats
