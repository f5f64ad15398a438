"""Combining labelled aspects into critic training data (selfrag/data_creation/critic_data.py and its script)."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from selfrag.data_creation.critic_data import critic_records, label_distribution, split_train_dev
from selfrag.data_creation.critic_prompts import ASPECTS

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("combine_critic_data", ROOT / "data_creation" / "combine_critic_data.py")
script = importlib.util.module_from_spec(spec)
spec.loader.exec_module(script)

Q = "Who painted the Mona Lisa?"
ANSWER = "Leonardo da Vinci painted it."
EVIDENCE = {"title": "Mona Lisa", "text": "The Mona Lisa is a portrait by Leonardo da Vinci."}
LABELLED = [
    {"aspect": "retrieval", "instruction": Q, "label": "[Retrieval]"},
    {"aspect": "utility", "instruction": Q, "output": ANSWER, "label": "[Utility:5]", "raw_output": "5"},
    {"aspect": "relevance", "instruction": Q, "evidence": EVIDENCE, "label": "[Relevant]"},
    {
        "aspect": "groundness",
        "instruction": Q,
        "target_output": ANSWER,
        "evidence": EVIDENCE,
        "label": "[Fully supported]",
    },
    {
        "aspect": "multi_retrieval",
        "instruction": Q,
        "preceding_sentences": ANSWER,
        "evidence": EVIDENCE,
        "target_output": "He began it in 1503.",
        "label": "[Retrieval]",
    },
    # dropped: an invalid label, a duplicate, a prompt-breaking instruction
    {"aspect": "relevance", "instruction": Q, "evidence": EVIDENCE, "label": "[Utility:5]"},
    {"aspect": "retrieval", "instruction": Q, "label": "[No Retrieval]"},
    {"aspect": "retrieval", "instruction": "Say hi.\n\n### Response:", "label": "[No Retrieval]"},
]
EXPECTED = [
    {
        "instruction": ASPECTS["retrieval"].instruction,
        "input": f"Task instruction: {Q}",
        "output": "[Retrieval]",
        "task": "retrieval",
    },
    {
        "instruction": ASPECTS["utility"].instruction,
        "input": f"Task instruction: {Q}\n\nOutput: {ANSWER}",
        "output": "[Utility:5]",
        "task": "utility",
    },
    {
        "instruction": ASPECTS["relevance"].instruction,
        "input": f"Task instruction: {Q}\n\nEvidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci.",
        "output": "[Relevant]",
        "task": "relevance",
    },
    {
        "instruction": ASPECTS["groundness"].instruction,
        "input": f"Task instruction: {Q}\n\nOutput: {ANSWER}\n\n"
        "Evidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci.",
        "output": "[Fully supported]",
        "task": "groundness",
    },
    {
        "instruction": ASPECTS["multi_retrieval"].instruction,
        "input": f"Task instruction: {Q}\n\nPreceding sentences: {ANSWER}\n\n"
        "Evidence: Mona Lisa\nThe Mona Lisa is a portrait by Leonardo da Vinci.\n\nOutput: He began it in 1503.",
        "output": "[Retrieval]",
        "task": "multi_retrieval",
    },
]


def test_exact_records_and_drops():
    records, dropped = critic_records(LABELLED)
    assert records == EXPECTED
    assert dict(dropped) == {
        "relevance: invalid label": 1,
        "retrieval: duplicate": 1,
        "retrieval: contains '### Response:'": 1,
    }
    assert label_distribution(records) == {
        "groundness": {"[Fully supported]": 1},
        "multi_retrieval": {"[Retrieval]": 1},
        "relevance": {"[Relevant]": 1},
        "retrieval": {"[Retrieval]": 1},
        "utility": {"[Utility:5]": 1},
    }


def test_relevant_down_sampling_is_seeded():
    items = [{"aspect": "relevance", "instruction": f"q{k}", "evidence": "e", "label": "[Relevant]"} for k in range(20)]
    items.append({"aspect": "relevance", "instruction": "qi", "evidence": "e", "label": "[Irrelevant]"})
    rng = random.Random(3)
    expected = [f"Task instruction: q{k}\n\nEvidence: e" for k in range(20) if rng.random() < 0.5]
    records, dropped = critic_records(items, relevant_keep=0.5, seed=3)
    assert [r["input"] for r in records] == [*expected, "Task instruction: qi\n\nEvidence: e"]
    assert dropped["relevance: [Relevant] down-sampled"] == 20 - len(expected)


def test_split_by_seed():
    records = [{"k": str(k)} for k in range(10)]
    train, dev = split_train_dev(records, dev_size=3, seed=7)
    shuffled = list(records)
    random.Random(7).shuffle(shuffled)
    assert (dev, train) == (shuffled[:3], shuffled[3:])
    assert split_train_dev(records, 3, 7) == (train, dev)
    assert split_train_dev(records, 3, 8) != (train, dev)
    train, dev = split_train_dev(records, dev_size=1500, seed=0)  # capped at half
    assert (len(train), len(dev)) == (5, 5)


def test_script_writes_train_and_dev(tmp_path, capsys):
    by_aspect: dict[str, list] = {}
    for item in LABELLED:
        by_aspect.setdefault(item["aspect"], []).append(item)
    paths = []
    for aspect, items in by_aspect.items():
        path = tmp_path / f"{aspect}.jsonl"
        path.write_text("".join(json.dumps(i) + "\n" for i in items))
        paths.append(str(path))
    prefix = str(tmp_path / "critic")
    assert script.main(["--input_files", *paths, "--output_file_name", prefix, "--dev_size", "2", "--seed", "1"]) == 0
    train = json.loads(Path(prefix + "_train.json").read_text())
    dev = json.loads(Path(prefix + "_dev.json").read_text())
    records, _ = critic_records([i for aspect in by_aspect for i in by_aspect[aspect]])
    assert (train, dev) == split_train_dev(records, 2, 1)
    assert sorted(json.dumps(r, sort_keys=True) for r in train + dev) == sorted(
        json.dumps(r, sort_keys=True) for r in EXPECTED
    )
    stats = json.loads(capsys.readouterr().out)
    assert (stats["train"], stats["dev"]) == (3, 2)


def test_script_refuses_no_inputs(tmp_path):
    from selfrag.cli import run_main

    assert run_main(script.main, ["--output_file_name", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x_train.json").exists()
