"""The quickstart corpus, its oracle critic and the generator instances it yields (exact strings)."""

import random

import pytest

from selfrag import tokens
from selfrag.quickstart import data, facts


def test_corpus_every_answer_is_in_exactly_its_own_passage():
    passages = facts.passages()
    assert len(passages) == len(facts.COUNTRIES) + len(facts.ELEMENTS) == 85
    assert len({p["title"] for p in passages}) == 85
    assert passages[0] == {
        "id": "1",
        "title": "France",
        "text": "France is a country in Europe. Its capital city is Paris. The currency of France is the euro. "
        "The official language of France is French.",
    }
    by_title = {p["title"]: p["text"] for p in passages}
    for q in facts.questions(held_out=False) + facts.questions(held_out=True):
        assert q.answer in by_title[q.title], q


def test_held_out_questions_are_about_other_entities():
    train = {q.title for q in facts.questions(held_out=False)}
    held = {q.title for q in facts.questions(held_out=True)}
    assert not train & held
    assert held == {facts.title_of(n) for n in facts.HELD_OUT_COUNTRIES} | facts.HELD_OUT_ELEMENTS
    assert len(facts.questions(held_out=True)) == 10 * 5 + 5 * 2
    train_ins = {i.instruction for i in facts.instructions(held_out=False)}
    assert not train_ins & {i.instruction for i in facts.instructions(held_out=True)}


def test_instructions_have_correct_outputs():
    for ins in facts.instructions(held_out=False) + facts.instructions(held_out=True):
        if ins.instruction.startswith("What is ") and " plus " in ins.instruction:
            a, b = ins.instruction[len("What is ") : -1].split(" plus ")
            assert ins.output == f"{a} plus {b} equals {int(a) + int(b)}."


NORWAY = {"title": "Norway", "text": "Norway is a country in Europe. Its capital city is Oslo. The currency of norway."}
SWEDEN = {"title": "Sweden", "text": "Sweden is a country in Europe. Its capital city is Stockholm."}


def test_oracle_critic_labels():
    q = facts.Question("What is the capital of Norway?", "Norway", "Oslo", "The capital of Norway is Oslo.")
    critic = data.OracleCritic([q])
    items = [{"instruction": q.question, "evidence": p, "target_output": q.output} for p in (NORWAY, SWEDEN)]
    assert critic.predict("retrieval", [{"instruction": q.question}, {"instruction": "What is 2 plus 2?"}]) == [
        tokens.RETRIEVAL,
        tokens.NO_RETRIEVAL,
    ]
    assert critic.predict("relevance", items) == [tokens.RELEVANT, tokens.IRRELEVANT]
    assert critic.predict("groundness", items) == [tokens.FULLY_SUPPORTED, tokens.NO_SUPPORT]
    assert critic.predict("utility", [{"instruction": q.question, "output": q.output}]) == ["[Utility:5]"]
    with pytest.raises(ValueError, match="not a question"):
        critic.predict("relevance", [{"instruction": "What is 2 plus 2?", "evidence": NORWAY}])


def test_question_instances_positive_and_negative():
    q = facts.Question("What is the capital of Norway?", "Norway", "Oslo", "The capital of Norway is Oslo.")
    out = data.question_instances([q], [[SWEDEN, NORWAY]], data.OracleCritic([q]), random.Random(0))
    assert out == [
        {
            "instruction": "What is the capital of Norway?",
            "output": "[Retrieval]<paragraph>Norway\n" + NORWAY["text"] + "</paragraph>[Relevant]"
            "The capital of Norway is Oslo.[Fully supported][Utility:5]",
            "input": "",
            "id": "q0",
            "dataset_name": "quickstart",
        },
        {
            "instruction": "What is the capital of Norway?",
            "output": "[Retrieval]<paragraph>Sweden\n" + SWEDEN["text"] + "</paragraph>[Irrelevant]"
            "The capital of Norway is Oslo.[Utility:5]",
            "input": "",
            "id": "q0-neg",
            "dataset_name": "quickstart",
        },
    ]


def test_instruction_instances_never_retrieve():
    ins = [facts.Instruction("What is 2 plus 3?", "2 plus 3 equals 5.")]
    out = data.instruction_instances(ins, data.OracleCritic([]), random.Random(0))
    assert out == [
        {
            "instruction": "What is 2 plus 3?",
            "output": "[No Retrieval]2 plus 3 equals 5.[Utility:5]",
            "input": "",
            "id": "i0",
            "dataset_name": "quickstart",
        }
    ]


def test_training_instances_with_a_retriever_built_in_code():
    """Whole data step with an exact retriever stand-in: every question finds its passage first."""
    passages = {p["title"]: p for p in facts.passages()}

    by_q = {q.question: q for q in facts.questions(held_out=False)}

    class TitleRetriever:
        def search(self, queries, k):
            titles = [by_q[q].title for q in queries]
            return [[passages[t], passages["Italy" if t == "France" else "France"]] for t in titles]

    instances, stats = data.training_instances(TitleRetriever(), ndocs=2)
    n_q = len(facts.questions(held_out=False))
    n_i = len(facts.instructions(held_out=False))
    assert stats["questions"] == n_q and stats["instances"] == 2 * n_q + n_i == len(instances)
    assert stats["gold_passage_in_top2"] == 1.0
    assert stats["token_counts"][tokens.RELEVANT] == stats["token_counts"][tokens.IRRELEVANT] == n_q
    assert stats["token_counts"][tokens.NO_RETRIEVAL] == n_i
    assert stats["token_counts"]["[Utility:5]"] == len(instances)
