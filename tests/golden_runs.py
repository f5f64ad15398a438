"""Golden outputs: the runs the tests make, written with a deterministic pseudo-model, compared byte for byte.

Refactors must not change what users get. `python tests/golden_runs.py --write` (re)writes `tests/golden/`
from the current code; `tests/test_golden.py` reruns every case and compares. Rewrite the files only for an
intended change of behaviour, and say so in the commit.

The pseudo-model answers each prompt with text and reflection tokens drawn from a generator seeded by the prompt's
hash, with log-probabilities for every reflection token at every position; every float it makes has 3 decimals,
so scores are pure-Python arithmetic on fixed inputs and the same on any machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
EVAL = ROOT / "eval_data"

WORDS = "the river city was founded by poet science early award known for its and in 1905 Paris".split()


def pseudo_backend():
    """A `ScriptedBackend` over the tiny tokenizer whose completions depend only on the prompt."""
    from selfrag.backends.scripted import ScriptedBackend, make_generation
    from selfrag.testing import build_tiny_tokenizer
    from selfrag.tokens import (
        CONTINUE,
        IRRELEVANT,
        ISSUP_TOKENS,
        ISUSE_TOKENS,
        NO_RETRIEVAL,
        RELEVANT,
        RETRIEVAL,
        ReflectionVocab,
    )

    tokenizer = build_tiny_tokenizer()
    vocab = ReflectionVocab.from_tokenizer(tokenizer)

    def words(rng: random.Random) -> list[str]:
        out = [" " + rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        return out + (["."] if rng.random() < 0.6 else [])

    def complete(prompt: str):
        rng = random.Random(hashlib.sha256(prompt.encode("utf-8")).hexdigest())
        pieces: list[str] = []
        if prompt.endswith("</paragraph>"):
            pieces.append(rng.choice([RELEVANT, IRRELEVANT]))
            pieces += words(rng)
            pieces.append(rng.choice(ISSUP_TOKENS))
            if rng.random() < 0.5:  # a long-form segment that goes on
                pieces.append(rng.choice([RETRIEVAL, NO_RETRIEVAL, CONTINUE]))
                pieces += words(rng)
            pieces.append(rng.choice(ISUSE_TOKENS))
        else:
            if not prompt.endswith(NO_RETRIEVAL):
                pieces.append(rng.choice([RETRIEVAL, NO_RETRIEVAL, " The"]))
            pieces += words(rng)
            if rng.random() < 0.5:
                pieces.append(rng.choice(ISUSE_TOKENS))
        logprobs = {}
        for t, piece in enumerate(pieces):
            step = {token: -round(rng.uniform(0.05, 6.0), 3) for token in vocab.ids}
            if piece in step:
                step[piece] = -round(rng.uniform(0.001, 0.5), 3)
            logprobs[t] = step
        cumulative = -round(rng.uniform(0.5, 12.0), 3)
        return make_generation(pieces, vocab.ids, logprobs, cumulative_logprob=cumulative)

    return ScriptedBackend(complete, tokenizer=tokenizer)


def text_backend():
    """A plain-text pseudo-model for the baselines (no reflection tokens)."""
    from selfrag.backends.base import Generation
    from selfrag.backends.scripted import ScriptedBackend

    def complete(prompt: str) -> Generation:
        rng = random.Random(hashlib.sha256(prompt.encode("utf-8")).hexdigest())
        text = "".join(" " + rng.choice(WORDS + ["A", "B", "true", "false", "\n\n"]) for _ in range(rng.randint(2, 8)))
        return Generation(text=text, token_ids=list(range(len(text.split()) + 1)), cumulative_logprob=-1.0)

    return ScriptedBackend(complete, tokenizer=None)


def _json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def _without_config(path: Path, tmp: Path) -> str:
    """A result file's content without its echo of the config (which records flags, not behaviour)."""
    text = path.read_text(encoding="utf-8").replace(str(tmp), "<tmp>")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON Lines (FactScore, baselines under --compat original)
        return "".join(_json(json.loads(line)) for line in text.splitlines())
    if isinstance(data, dict):
        data.pop("config", None)
    return _json(data)


SHORT_FORM = {
    "short_popqa_adaptive": dict(input_file="popqa_longtail_w_gs.jsonl", ndocs=3),
    "short_popqa_threshold_all_scores": dict(
        input_file="popqa_longtail_w_gs.jsonl",
        ndocs=4,
        threshold=0.3,
        use_groundness=True,
        use_utility=True,
        use_seqscore=True,
        w_use=0.7,
    ),
    "short_popqa_compat_original": dict(
        input_file="popqa_longtail_w_gs.jsonl", ndocs=3, threshold=0.2, compat="original", use_groundness=True
    ),
    "short_health_always": dict(
        input_file="health_claims_processed.jsonl", task="fever", mode="always_retrieve", ndocs=3
    ),
    "short_arc_threshold": dict(input_file="arc_challenge_processed.jsonl", task="arc_c", threshold=0.5, ndocs=2),
    "short_triviaqa_no_retrieval": dict(input_file="triviaqa_test_w_gs.jsonl", mode="no_retrieval"),
}

LONG_FORM = {
    "long_asqa_threshold": dict(
        task="asqa", ndocs=3, beam_width=2, max_depth=3, threshold=0.4, use_groundness=True, use_utility=True
    ),
    "long_asqa_compat_original": dict(
        task="asqa", ndocs=3, beam_width=2, max_depth=3, threshold=0.4, use_groundness=True, compat="original"
    ),
    "long_asqa_always_deep": dict(
        task="asqa", ndocs=2, beam_width=3, max_depth=4, mode="always_retrieve", ignore_cont=True, use_seqscore=True
    ),
    "long_factscore_adaptive": dict(task="factscore", ndocs=3, max_depth=3, use_groundness=True),
    "long_factscore_compat_original": dict(task="factscore", ndocs=3, max_depth=3, compat="original", threshold=0.3),
}

LONG_INPUT = {"asqa": "asqa_eval_gtr_top100.json", "factscore": "factscore_unlabeled_alpaca_13b_retrieval.jsonl"}

BASELINE = {
    "baseline_popqa_retrieval": dict(input_file="popqa_longtail_w_gs.jsonl", mode="retrieval", top_n=2),
    "baseline_arc_vanilla": dict(input_file="arc_challenge_processed.jsonl", task="arc_c", choices="A B C D"),
    "baseline_health_original": dict(input_file="health_claims_processed.jsonl", task="fever", compat="original"),
}

SERVER = {
    "server_short_adaptive": ({"messages": [{"role": "user", "content": "Who founded the river city?"}]}, True, {}),
    "server_short_always_scores": (
        {"prompt": "Who was the poet of Paris?", "selfrag": {"mode": "always_retrieve", "threshold": 0.3}},
        False,
        dict(use_groundness=True, use_utility=True, w_use=0.7),
    ),
    "server_long_form": (
        {
            "messages": [{"role": "user", "content": "Tell me about the city founded in 1905."}],
            "selfrag": {"long_form": True, "beam_width": 2, "max_depth": 3, "mode": "always_retrieve"},
        },
        True,
        dict(threshold=0.5),
    ),
}

SERVER_PASSAGES = [
    {"id": str(i), "title": f"Title {i}", "text": " ".join(WORDS[i : i + 6]) + "."} for i in range(0, 12, 2)
]


def _short(name: str, tmp: Path) -> str:
    from selfrag.eval.short_form import ShortFormConfig, run_short_form

    kw = dict(SHORT_FORM[name])
    out = tmp / f"{name}.json"
    config = ShortFormConfig(
        model_name="pseudo", input_file=str(EVAL / kw.pop("input_file")), output_file=str(out), **kw
    )
    run_short_form(config, backend=pseudo_backend())
    return _without_config(out, tmp)


def _long(name: str, tmp: Path) -> str:
    from selfrag.eval.long_form import LongFormConfig, run_long_form

    kw = dict(LONG_FORM[name])
    out = tmp / (f"{name}.jsonl" if kw["task"] == "factscore" else f"{name}.json")
    config = LongFormConfig(
        model_name="pseudo", input_file=str(EVAL / LONG_INPUT[kw["task"]]), output_file=str(out), **kw
    )
    run_long_form(config, backend=pseudo_backend())
    return _without_config(out, tmp)


def _baseline(name: str, tmp: Path) -> str:
    from selfrag.eval.baseline import BaselineConfig, run_baseline

    kw = dict(BASELINE[name])
    out = tmp / f"{name}.json"
    config = BaselineConfig(model_name="pseudo", input_file=str(EVAL / kw.pop("input_file")), result_fp=str(out), **kw)
    run_baseline(config, backend=text_backend())
    return _without_config(out, tmp)


def _server(name: str, tmp: Path) -> str:
    from selfrag.server.config import ServerConfig
    from selfrag.server.engine import SelfRagEngine
    from selfrag.server.protocol import Reply, parse_request

    body, chat, flags = SERVER[name]
    defaults = ServerConfig(model_name="pseudo", **flags).defaults()
    engine = SelfRagEngine(
        pseudo_backend(), "pseudo", search=lambda queries, k: [SERVER_PASSAGES[:k] for _ in queries], defaults=defaults
    )
    options, _ = parse_request({"model": "pseudo", **body}, chat, engine)
    (answer,) = engine.run([options])
    return _json(Reply(chat, "pseudo", "id-0", 0).completion(answer))


def _training(name: str, tmp: Path) -> str:
    from selfrag.testing import TRAIN_ROWS, build_tiny_tokenizer
    from selfrag.training.encode import encode_example

    tokenizer = build_tiny_tokenizer(reflection=True)
    original = name.endswith("original_masking")
    rows = [encode_example(row, tokenizer, 512, original_masking=original) for row in TRAIN_ROWS]
    return "".join(json.dumps({k: v for k, v in row.items()}, ensure_ascii=False) + "\n" for row in rows)


CASES: dict[str, Callable[[str, Path], str]] = {
    **dict.fromkeys(SHORT_FORM, _short),
    **dict.fromkeys(LONG_FORM, _long),
    **dict.fromkeys(BASELINE, _baseline),
    **dict.fromkeys(SERVER, _server),
    "training_batches": _training,
    "training_batches_original_masking": _training,
}


def produce(name: str) -> str:
    """The golden text of one case, made now by the current code."""
    with tempfile.TemporaryDirectory() as tmp:
        return CASES[name](name, Path(tmp))


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.json"


def main(argv: list[str]) -> int:
    if argv != ["--write"]:
        print("usage: python tests/golden_runs.py --write   (rewrites tests/golden/ from the current code)")
        return 2
    GOLDEN.mkdir(exist_ok=True)
    for name in CASES:
        golden_path(name).write_text(produce(name), encoding="utf-8")
        print("wrote", golden_path(name))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
