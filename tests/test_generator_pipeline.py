"""The generator-data chain (selfrag/data_creation/pipeline.py, data_creation/create_generator_data.py) end to end.

Six raw instruction items go through every step: initial Retrieve, IsUse, sentence split, initial and per-sentence
retrieval (a FAISS index over a one-hot embedder, exact), multi-sentence Retrieve, IsRel, IsSup, assembly. With a
rule-based critic the final instances are written out here in full; a rerun sends nothing; an interrupted run
resumes without losing or repeating a unit. Then the script runs the same chain with a tiny HF critic trained
for a few steps by selfrag.training, and a tiny BERT retriever.
Run: `python -m pytest -q tests/test_generator_pipeline.py`.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

import pytest

from selfrag import tokens
from selfrag.data_creation.critic_infer import Critic
from selfrag.data_creation.pipeline import (
    ChainSettings,
    create_generator_data,
    initial_query,
    query_instruction,
    skipped_flags,
)
from selfrag.errors import ConfigError, DataFormatError
from selfrag.prompts import TASK_INST

pytest.importorskip("faiss")
pytest.importorskip("spacy")

ROOT = Path(__file__).resolve().parent.parent

PASSAGES = [
    {"id": "p1", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "p2", "title": "Seine", "text": "The Seine is a river that flows through Paris."},
    {"id": "p3", "title": "Everest", "text": "Mount Everest is the highest mountain on Earth."},
    {"id": "p4", "title": "Himalayas", "text": "The Himalayas are a mountain range in Asia."},
    {"id": "p5", "title": "Curie", "text": "Marie Curie was a physicist who studied radioactivity."},
    {"id": "p6", "title": "Moon", "text": "The Moon orbits the Earth."},
    {"id": "p7", "title": "Kyoto", "text": "Kyoto is a city in Japan."},
]

ITEMS = [
    {
        "id": "alpaca_0",
        "dataset_name": "gpt4_alpaca",
        "instruction": "Tell me about Paris.",
        "input": "",
        "output": "Paris is the capital of France. It is large because many people live there.",
    },
    {
        "id": "alpaca_1",
        "dataset_name": "gpt4_alpaca",
        "instruction": "Write a short poem about the Moon.",
        "input": "",
        "output": "The Moon is bright. It shines at night.",
    },
    {
        "id": "fever_0",
        "dataset_name": "fever",
        "instruction": TASK_INST["fever"] + "\n\n## Input:\n\nMarie Curie studied radioactivity in Paris.",
        "input": "",
        "output": "true",
    },
    {
        "id": "asqa_0",
        "dataset_name": "asqa",
        "instruction": TASK_INST["asqa"] + "## Input:\n\nWhat is the highest mountain?",
        "input": "",
        "output": "Mount Everest is the highest mountain on Earth. Yes. I think it is very cold at the top of it. "
        "The Himalayas are a mountain range in Asia.",
    },
    {
        "id": "alpaca_2",
        "dataset_name": "gpt4_alpaca",
        "instruction": "Explain the GARBAGE report.",
        "input": "",
        "output": "Sales rose.",
    },
    {
        "id": "alpaca_3",
        "dataset_name": "gpt4_alpaca",
        "instruction": "Who discovered radioactivity?",
        "input": "Answer briefly.",
        "output": "??? unknown",
    },
]


def content(text: str) -> set[str]:
    """Words of five letters or more, lower-cased (the rule critic's notion of content)."""
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 5}


def evidence_text(evidence) -> str:
    return evidence["text"] if isinstance(evidence, dict) else evidence


class RuleCritic:
    """A `Critic` whose labels follow fixed rules on the item text (so expected outputs can be worked by hand):

    retrieval: GARBAGE -> reject, "poem" -> [No Retrieval], else [Retrieval]; utility: "???" -> reject, a one-word
    output -> [Utility:1], else [Utility:5]; multi_retrieval: "because" -> [Continue to Use Evidence], starting
    "I think" -> [No Retrieval], else [Retrieval]; relevance: [Relevant] iff the passage shares a content word
    with the task instruction; groundness: all / some / none of the sentence's content words in the passage.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def predict(self, aspect: str, items: list[dict]) -> list[str | None]:
        self.calls.append((aspect, len(items)))
        return [self.label(aspect, item) for item in items]

    @staticmethod
    def label(aspect: str, item: dict) -> str | None:
        task = item["instruction"] + (" " + item["input"] if item.get("input") else "")
        if aspect == "retrieval":
            return None if "GARBAGE" in task else tokens.NO_RETRIEVAL if "poem" in task else tokens.RETRIEVAL
        if aspect == "utility":
            out = item["output"]
            return None if "???" in out else "[Utility:1]" if len(out.split()) == 1 else "[Utility:5]"
        if aspect == "multi_retrieval":
            sent = item["target_output"]
            return (
                tokens.CONTINUE
                if "because" in sent
                else tokens.NO_RETRIEVAL
                if sent.startswith("I think")
                else (tokens.RETRIEVAL)
            )
        if aspect == "relevance":
            return tokens.RELEVANT if content(evidence_text(item["evidence"])) & content(task) else tokens.IRRELEVANT
        if aspect == "groundness":
            words = content(item["target_output"])
            inside = words & content(evidence_text(item["evidence"]))
            if not words or not inside:
                return tokens.NO_SUPPORT
            return tokens.FULLY_SUPPORTED if inside == words else tokens.PARTIALLY_SUPPORTED
        raise AssertionError(aspect)


def build_retriever():
    from selfrag.retrieval.index import FaissIndex
    from selfrag.retrieval.retriever import Retriever
    from selfrag.retrieval.testing import one_hot_embedder, words

    # Content words only, so that scores have no ties: every query below has a unique top 2.
    vocab = sorted({w for p in PASSAGES for w in words(p["title"] + " " + p["text"]) if w in content(w)})
    embed = one_hot_embedder(vocab)
    index = FaissIndex(len(vocab))
    index.index_data([p["id"] for p in PASSAGES], embed([p["title"] + " " + p["text"] for p in PASSAGES]))
    return Retriever(embed, index, PASSAGES)


class CountingRetriever:
    def __init__(self, retriever) -> None:
        self.retriever, self.queries = retriever, []

    def search(self, queries, k=10):
        self.queries.extend(queries)
        return self.retriever.search(queries, k)


@pytest.fixture(scope="module")
def splitter():
    from selfrag.data_creation.sentences import SentenceSplitter

    return SentenceSplitter("sentencizer")


SETTINGS = ChainSettings(ndocs=2, top_n=2, batch_size=2, no_retrieval_keep=1.0)

# Worked by hand from the rules of RuleCritic and the one-hot retriever (content-word overlap counts; titles count):
# - alpaca_0: sentence 0 takes the initial [Retrieval]; of its passages p1 (Paris) and p2 (Seine), both relevant to
#   "Paris", p1 holds all of {paris, capital, france}: [Fully supported]; sentence 1 has "because": Continue.
# - alpaca_1: "poem" -> [No Retrieval] (kept: no_retrieval_keep 1.0); sentences are not even split.
# - fever_0: "true" has no content word, so both passages (p5 Curie, p1 Paris; relevant) are [No support]; the
#   first is shown, and for fever a [Relevant] + [No support] passage becomes [Irrelevant] (no IsSup after it);
#   the gold output is "true", so [Utility:1] becomes [Utility:5].
# - asqa_0: 4 sentences, "Yes." (< 30 characters) is kept bare; "I think ..." -> [No Retrieval]; the last sentence
#   retrieves again and p4 (Himalayas) supports it fully. Sentences are joined with no space (spaCy sent.text).
# - alpaca_2: the critic's Retrieve answer is a reject -> dropped; alpaca_3: IsUse reject -> dropped.
EXPECTED = [
    {
        "instruction": "Tell me about Paris.",
        "output": "[Retrieval]<paragraph>Paris\nParis is the capital and largest city of France.</paragraph>[Relevant]"
        "Paris is the capital of France.[Fully supported][Continue to Use Evidence]It is large because many people "
        "live there.[Utility:5]",
        "input": "",
        "id": "alpaca_0",
        "dataset_name": "gpt4_alpaca",
    },
    {
        "instruction": "Write a short poem about the Moon.",
        "output": "[No Retrieval]The Moon is bright. It shines at night.[Utility:5]",
        "input": "",
        "id": "alpaca_1",
        "dataset_name": "gpt4_alpaca",
    },
    {
        "instruction": ITEMS[2]["instruction"],
        "output": "[Retrieval]<paragraph>Curie\nMarie Curie was a physicist who studied radioactivity.</paragraph>"
        "[Irrelevant]true[Utility:5]",
        "input": "",
        "id": "fever_0",
        "dataset_name": "fever",
    },
    {
        "instruction": ITEMS[3]["instruction"],
        "output": "[Retrieval]<paragraph>Everest\nMount Everest is the highest mountain on Earth.</paragraph>[Relevant]"
        "Mount Everest is the highest mountain on Earth.[Fully supported]Yes.[No Retrieval]I think it is very cold at "
        "the top of it.[Retrieval]<paragraph>Himalayas\nThe Himalayas are a mountain range in Asia.</paragraph>"
        "[Relevant]The Himalayas are a mountain range in Asia.[Fully supported][Utility:5]",
        "input": "",
        "id": "asqa_0",
        "dataset_name": "asqa",
    },
]
EXPECTED_CRITIC_LABELS = {
    "retrieval": {"[No Retrieval]": 1, "[Retrieval]": 4, "null": 1},
    "utility": {"[Utility:1]": 1, "[Utility:5]": 3, "null": 1},
    "multi_retrieval": {"[Continue to Use Evidence]": 1, "[No Retrieval]": 1, "[Retrieval]": 1},
    "relevance": {"[Relevant]": 8},
    "groundness": {"[Fully supported]": 3, "[No support / Contradictory]": 2, "[Partially supported]": 3},
}


def run_chain(work_dir, critic: Critic, retriever, splitter, settings=SETTINGS):
    return create_generator_data(
        ITEMS, critic, retriever, splitter, work_dir, settings, fingerprint={"critic": "rules"}
    )


def test_chain_end_to_end_exact_instances_and_statistics(tmp_path, splitter):
    critic, retriever = RuleCritic(), CountingRetriever(build_retriever())
    result = run_chain(tmp_path / "work", critic, retriever, splitter)
    assert result.instances == EXPECTED
    stats = result.stats
    assert stats["critic_labels"] == EXPECTED_CRITIC_LABELS
    assert stats["dropped"] == {"no IsUse label (critic reject)": 1, "no Retrieve label (critic reject)": 1}
    assert stats["output_tokens"] == {
        "[No Retrieval]": 2,
        "[Retrieval]": 4,
        "[Continue to Use Evidence]": 1,
        "[Irrelevant]": 1,
        "[Relevant]": 3,
        "<paragraph>": 4,
        "</paragraph>": 4,
        "[Utility:5]": 4,
        "[Fully supported]": 3,
    }
    assert stats["instances_by_first_token"] == {"[No Retrieval]": 1, "[Retrieval]": 3}
    assert stats["sentences"] == {"total": 7, "skipped": 1} and stats["splitter"] == "sentencizer"
    assert stats["retrieval"] == {"initial_queries": 3, "sentence_queries": 6}
    # Batches of 2 units per critic call; the utility of the Retrieve reject is not asked; relevance asks the
    # 6 distinct (instruction, passage) pairs of its 8 units once (asqa_0 sees p3 and p4 for two sentences).
    assert critic.calls == [
        ("retrieval", 2), ("retrieval", 2), ("retrieval", 2),
        ("utility", 2), ("utility", 2), ("utility", 1),
        ("multi_retrieval", 2), ("multi_retrieval", 1),
        ("relevance", 2), ("relevance", 2), ("relevance", 2),
        ("groundness", 2), ("groundness", 2), ("groundness", 2), ("groundness", 2),
    ]  # fmt: skip
    assert retriever.queries[:3] == [
        "Tell me about Paris. Paris is the capital of France. It is large because many people live there.",
        ITEMS[2]["instruction"] + " true",  # fever: no "\n\nInput: " to cut at
        ITEMS[3]["instruction"] + " " + ITEMS[3]["output"],
    ]
    assert retriever.queries[3:] == [
        "Tell me about Paris. Paris is the capital of France.",
        "Tell me about Paris. It is large because many people live there.",
        "Marie Curie studied radioactivity in Paris. true",  # the TASK_INST prefix is cut for task datasets
        "What is the highest mountain? Mount Everest is the highest mountain on Earth.",
        "What is the highest mountain? I think it is very cold at the top of it.",  # "Yes." is skipped
        "What is the highest mountain? The Himalayas are a mountain range in Asia.",
    ]
    # One file per step, each record with its unit key; the manifest lists them all.
    work = tmp_path / "work"
    manifest = json.loads((work / "manifest.json").read_text())
    assert list(manifest["steps"]) == [
        "retrieval", "utility", "sentences", "initial_ctxs", "sentence_ctxs", "multi_retrieval", "relevance",
        "groundness",
    ]  # fmt: skip
    sentences = [json.loads(line) for line in (work / "sentences.jsonl").read_text().splitlines()]
    assert [(r["key"], r["skipped"]) for r in sentences] == [
        ("alpaca_0", [False, False]),
        ("fever_0", [False]),
        ("asqa_0", [False, True, False, False]),
    ]
    multi = [json.loads(line) for line in (work / "multi_retrieval.jsonl").read_text().splitlines()]
    assert [(r["key"], r["label"]) for r in multi] == [
        ("alpaca_0#1", tokens.CONTINUE),
        ("asqa_0#2", tokens.NO_RETRIEVAL),
        ("asqa_0#3", tokens.RETRIEVAL),
    ]
    assert not list(work.glob("*.partial.jsonl"))
    # The distinct critic inputs with their labels, as critic_label.py writes them: critic training data.
    assert stats["critic_label_files"] == {
        "retrieval": 5, "utility": 4, "multi_retrieval": 3, "relevance": 6, "groundness": 8,
    }  # fmt: skip
    groundness = [json.loads(line) for line in (work / "critic_labels" / "groundness.jsonl").read_text().splitlines()]
    assert groundness[0] == {
        "instruction": "Tell me about Paris.",
        "input": "",
        "preceding_sentences": None,
        "target_output": "Paris is the capital of France.",
        "evidence": {"id": "p1", "title": "Paris", "text": PASSAGES[0]["text"], "score": 6.0},
        "aspect": "groundness",
        "label": tokens.FULLY_SUPPORTED,
    }
    from selfrag.data import load_items
    from selfrag.data_creation.critic_data import critic_records

    labelled = [row for path in sorted((work / "critic_labels").iterdir()) for row in load_items(path)]
    records, dropped = critic_records(labelled)
    assert len(records) == 26 and not dropped


def test_rerun_skips_every_finished_step(tmp_path, splitter):
    first = run_chain(tmp_path / "work", RuleCritic(), build_retriever(), splitter)
    critic, retriever = RuleCritic(), CountingRetriever(build_retriever())
    again = run_chain(tmp_path / "work", critic, retriever, splitter)
    assert critic.calls == [] and retriever.queries == [] and again.stats["compute_calls"] == {}
    assert again.instances == first.instances == EXPECTED
    # Other result-shaping settings on the same work_dir are refused.
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        run_chain(tmp_path / "work", critic, retriever, splitter, ChainSettings(ndocs=5, top_n=2))


class CrashError(RuntimeError):
    pass


class CrashingCritic(RuleCritic):
    """Raises on the `crash_at`-th call of `aspect` (an interrupted run)."""

    def __init__(self, aspect: str, crash_at: int) -> None:
        super().__init__()
        self.aspect, self.crash_at, self.seen = aspect, crash_at, 0

    def predict(self, aspect, items):
        if aspect == self.aspect:
            self.seen += 1
            if self.seen == self.crash_at:
                raise CrashError(aspect)
        return super().predict(aspect, items)


@pytest.mark.parametrize(("aspect", "crash_at"), [("utility", 2), ("relevance", 3), ("groundness", 2)])
def test_interrupted_run_resumes_without_losing_or_repeating(tmp_path, splitter, aspect, crash_at):
    crashing = CrashingCritic(aspect, crash_at)
    with pytest.raises(CrashError):
        run_chain(tmp_path / "work", crashing, build_retriever(), splitter)
    assert (tmp_path / "work" / f"{aspect}.jsonl.partial.jsonl").exists()
    resumed = RuleCritic()
    result = run_chain(tmp_path / "work", resumed, build_retriever(), splitter)
    assert result.instances == EXPECTED and result.stats["critic_labels"] == EXPECTED_CRITIC_LABELS
    # Every critic call of an uninterrupted run happened exactly once over the two runs.
    reference = RuleCritic()
    run_chain(tmp_path / "reference", reference, build_retriever(), splitter)
    assert sorted(crashing.calls + resumed.calls) == sorted(reference.calls)


def test_random_choices_are_per_item_and_seeded(tmp_path, splitter):
    """no_retrieval_keep 0.4: which [No Retrieval] instance survives depends on (seed, id) only, not on order."""
    settings = ChainSettings(ndocs=2, top_n=2, batch_size=2, no_retrieval_keep=0.4, seed=3)
    forward = create_generator_data(ITEMS, RuleCritic(), build_retriever(), splitter, tmp_path / "a", settings)
    backward = create_generator_data(ITEMS[::-1], RuleCritic(), build_retriever(), splitter, tmp_path / "b", settings)
    assert forward.instances == backward.instances[::-1]
    kept = random.Random("3:alpaca_1").random() < 0.4
    assert ("alpaca_1" in [i["id"] for i in forward.instances]) == kept


def test_query_rules_of_the_original():
    nq = {
        "instruction": "Answer it.\n\nInput: who wrote hamlet",
        "output": "Shakespeare",
        "dataset_name": "nq",
        "input": "",
    }
    assert initial_query(nq) == "who wrote hamlet Shakespeare"
    assert initial_query({**nq, "dataset_name": "gpt4_alpaca"}) == "Answer it.\n\nInput: who wrote hamlet Shakespeare"
    arc = {"instruction": TASK_INST["arc_easy"] + "## Input:\n\nWhich is a metal?", "dataset_name": "arc_easy"}
    assert query_instruction({**arc, "input": "A: iron B: wood"}) == "Which is a metal? A: iron B: wood"
    assert query_instruction({**arc, "input": "Which is a metal?"}) == "Which is a metal?"  # already contained
    assert query_instruction({**arc, "dataset_name": "sharegpt", "input": ""}) == arc["instruction"]
    assert skipped_flags(["Short.", "Also short."], 30) == [False, False]  # at most 2 sentences: none skipped
    assert skipped_flags(["Short.", "A sentence of thirty characters", "Ok."], 30) == [True, False, True]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dataset_name": None}, r"items.jsonl:2: missing or empty field 'dataset_name'"),
        ({"output": ""}, r"items.jsonl:2: missing or empty field 'output'"),
        ({"id": None}, r"items.jsonl:2: missing field 'id'"),
        ({"id": "alpaca_0"}, r"items.jsonl:2: id 'alpaca_0' already used at .*items.jsonl:1"),
    ],
)
def test_bad_items_name_file_line_and_field(tmp_path, splitter, change, match):
    from selfrag.data import load_items

    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(it) for it in [ITEMS[0], {**ITEMS[1], **change}]) + "\n")
    with pytest.raises(DataFormatError, match=match):
        create_generator_data(load_items(path), RuleCritic(), build_retriever(), splitter, tmp_path / "w", SETTINGS)


# ------------------------------------------------------------------------------ the script, with a real HF critic


def load_script(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class RecordingCritic(RuleCritic):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, dict, str | None]] = []

    def predict(self, aspect, items):
        labels = super().predict(aspect, items)
        self.asked += list(zip([aspect] * len(items), items, labels))
        return labels


@pytest.fixture(scope="module")
def trained_critic(tmp_path_factory, splitter):
    """A tiny Llama critic trained by selfrag.training (train_special_tokens.py's loop) for 80 steps on the critic
    records of the chain's own inputs, labelled by RuleCritic: it learns to answer with label tokens."""
    import torch

    from selfrag.data_creation.critic_prompts import critic_record
    from selfrag.testing import build_tiny_model
    from selfrag.training.critic import CriticConfig, train_critic

    tmp = tmp_path_factory.mktemp("critic")
    recorder = RecordingCritic()
    run_chain(tmp / "labels", recorder, build_retriever(), splitter)
    records = [critic_record(aspect, item, label) for aspect, item, label in recorder.asked if label is not None]
    (tmp / "critic_train.json").write_text(json.dumps(records))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = CriticConfig(
            model_name_or_path=str(build_tiny_model(tmp / "base")),
            data_path=str(tmp / "critic_train.json"),
            output_dir=str(tmp / "critic"),
            max_steps=80,
            per_device_train_batch_size=8,
            learning_rate=3e-3,
            lr_scheduler_type="constant",
            model_max_length=2048,
            save_strategy="no",
        )
        train_critic(config)
    finally:
        torch.set_num_threads(threads)
    return str(tmp / "critic")


@pytest.fixture(scope="module")
def retriever_files(tmp_path_factory):
    """PASSAGES as a DPR TSV, embedded by generate_passage_embeddings.py with a tiny random BERT."""
    from selfrag.retrieval.testing import build_tiny_bert, write_tsv

    tmp = tmp_path_factory.mktemp("retrieval")
    corpus = str(write_tsv(tmp / "psgs.tsv", PASSAGES))
    encoder = str(build_tiny_bert(tmp / "bert", corpus=" ".join(p["title"] + " " + p["text"] for p in PASSAGES)))
    embed = load_script("retrieval_lm", "generate_passage_embeddings")
    assert embed.main(["--model_name_or_path", encoder, "--passages", corpus, "--output_dir", str(tmp / "emb")]) == 0
    return encoder, corpus, str(tmp / "emb" / "*")


RELEASED_SENTENCE = re.compile(
    r"(\[Retrieval\]<paragraph>[^<]*</paragraph>(\[Relevant\][^\[]+\[(Fully supported|Partially supported|"
    r"No support / Contradictory)\]|\[Irrelevant\][^\[]+)|\[No Retrieval\][^\[]+|\[Continue to Use Evidence\][^\[]+"
    r"|[^\[]+)"
)


def test_script_with_a_trained_hf_critic_and_a_bert_retriever(tmp_path, trained_critic, retriever_files):
    encoder, corpus, embeddings = retriever_files
    items = tmp_path / "raw.jsonl"
    items.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    out = tmp_path / "gen.jsonl"
    argv = [
        "--critic_model_path", trained_critic, "--backend", "hf", "--dtype", "float32", "--max_new_tokens", "4",
        "--batch_size", "4", "--input_files", str(items), "--output_file", str(out), "--work_dir", str(tmp_path / "w"),
        "--retriever", encoder, "--passages", corpus, "--passages_embeddings", embeddings, "--n_docs", "2",
        "--top_n", "2", "--splitter", "sentencizer", "--no_retrieval_keep", "1.0",
    ]  # fmt: skip
    script = load_script("data_creation", "create_generator_data")
    assert script.main(argv) == 0
    instances = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads((tmp_path / "gen.jsonl.stats.json").read_text())
    assert stats["items"] == 6 and stats["instances"] == len(instances)
    assert stats["config"]["model_name"] == trained_critic and "api_key" not in stats["config"]
    # The trained critic answers with label tokens: parsed labels, and its rejects counted one by one.
    labelled = sum(n for labels in stats["critic_labels"].values() for label, n in labels.items() if label != "null")
    assert labelled > 0
    for aspect, labels in stats["critic_labels"].items():
        nulls = [r for r in stats["critic_rejects"] if r["aspect"] == aspect]
        assert labels.get("null", 0) == len(nulls)
    for instance in instances:
        assert set(instance) == {"instruction", "output", "input", "id", "dataset_name"} and instance["input"] == ""
        body, utility = instance["output"][:-11], instance["output"][-11:]
        assert re.fullmatch(r"\[Utility:[1-5]\]", utility)
        assert re.fullmatch(f"(?:{RELEASED_SENTENCE.pattern})+", body), instance["output"]
    # A rerun loads neither the critic nor the index, and writes the same data.
    assert script.main(argv) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == instances
    again = json.loads((tmp_path / "gen.jsonl.stats.json").read_text())
    assert again["compute_calls"] == {} and "critic_rejects" not in again


def test_script_config_errors(tmp_path):
    script = load_script("data_creation", "create_generator_data")
    base = ["--input_files", "x.jsonl", "--output_file", "o.jsonl", "--work_dir", "w", "--passages", "p.tsv"]
    assert script.run_main(script.main, [*base, "--retriever", "r"]) == 2  # neither a critic model nor a judge
    with pytest.raises(ConfigError, match="exactly one of --model_name"):
        script.main([*base, "--retriever", "r", "--model_name", "m", "--judge_model", "gpt-4"])
    with pytest.raises(ConfigError, match="--retriever and --passages are required"):
        script.main([*base, "--model_name", "m"])
    with pytest.raises(ConfigError, match="--splitter 'nltk'"):
        script.main([*base, "--retriever", "r", "--model_name", "m", "--splitter", "nltk"])


# ------------------------------------------------------------------------------------- the chain with a judge


def judge_reply(content: str) -> str:
    """A judge answering the judge prompt of critic_prompts with RuleCritic's rules (read back from the prompt)."""
    from selfrag.data_creation.critic_prompts import ANSWER_FORMAT, ASPECTS

    aspect = next(name for name, a in ASPECTS.items() if content.startswith(a.instruction))
    body = content.split(ANSWER_FORMAT + "\n\n", 1)[1].rsplit("\n\nLabel:", 1)[0]
    item = {}
    for part in re.split(r"\n\n(?=(?:Preceding sentences|Evidence|Output): )", body):
        name, value = part.split(": ", 1)
        key = {"Task instruction": "instruction", "Preceding sentences": "preceding_sentences"}.get(name, name.lower())
        if key == "output" and aspect in ("multi_retrieval", "groundness"):
            key = "target_output"
        item[key] = value
    label = RuleCritic.label(aspect, item)
    return f"{label}\nExplanation: by the rules." if label else "I cannot tell."


class DirectJudge:
    """What JudgeCritic should return, computed without HTTP: the reply to each judge prompt, parsed."""

    def predict(self, aspect, items):
        from selfrag.data_creation.critic_prompts import judge_prompt
        from selfrag.data_creation.labels import parse_label

        return [parse_label(aspect, judge_reply(judge_prompt(aspect, item))).label for item in items]


def test_chain_labelled_by_a_judge_over_http(tmp_path, splitter):
    """create_generator_data.py --judge_model: a real HTTP judge with a 429 and a 500 on the way; the result equals
    the same judge called directly; a rerun pays nothing; the exported labels are critic training data."""
    pytest.importorskip("openai")
    from openai_server import JudgeServer

    from selfrag.data_creation.pipeline import GeneratorDataConfig, run_generator_data

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(item) + "\n" for item in ITEMS))
    with JudgeServer(judge_reply, failures=[429, 500]) as server:
        config = GeneratorDataConfig(
            judge_model="gpt-4", base_url=server.base_url, api_key="test-key", retry_base_delay=0.01,
            concurrency=2, input_files=[str(raw)], output_file=str(tmp_path / "gen.json"),
            work_dir=str(tmp_path / "work"), retriever="unused", passages="unused", n_docs=2, top_n=2,
            batch_size=2, splitter="sentencizer", no_retrieval_keep=1.0,
        )  # fmt: skip
        result = run_generator_data(config, retriever=build_retriever())
        paid = len(server.answered)
        assert len(server.requests) == paid + 2  # the two injected failures were retried
        direct = run_chain(tmp_path / "direct", DirectJudge(), build_retriever(), splitter)
        assert result.instances == direct.instances and len(result.instances) == 4
        assert json.loads((tmp_path / "gen.json").read_text()) == result.instances  # a .json output is a list
        assert paid == sum(result.stats["critic_label_files"].values()) + 2  # + the two "I cannot tell." replies
        assert {r["reason"][:27] for r in result.stats["critic_rejects"]} == {
            "no retrieval label ['[Retri",
            "no utility label ['[Utility",
        }
        # Rerun: nothing is sent (the steps are done; the judge is not even built).
        again = run_generator_data(config, retriever=build_retriever())
        assert len(server.requests) == paid + 2 and again.instances == result.instances
