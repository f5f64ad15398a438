"""HFBackend: batched decoding equals one-at-a-time decoding and a plain forward pass, EOS handling, sampling."""

from __future__ import annotations

import json

import pytest
import torch

from selfrag.backends.base import GenParams
from selfrag.backends.hf import HFBackend, resolve_dtype
from selfrag.errors import BackendError
from selfrag.testing import build_tiny_model
from selfrag.tokens import ReflectionVocab

PROMPTS = [
    "Paris",
    "### Instruction:\nWho wrote the novel Pride and Prejudice?\n\n### Response:\n",
    "### Instruction:\nIn what country is Kyoto?\n\n### Response:\n[Retrieval]<paragraph>Kyoto\nKyoto is a city in Japan.</paragraph>",
    "### Instruction:\nWhat is the occupation of Marie Curie?\n\n### Response:\n",
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A tiny model with an extra end-of-sequence id that greedy decoding of PROMPTS[1] reaches early, so one
    sequence of a batch finishes before the others."""
    path = build_tiny_model(tmp_path_factory.mktemp("tiny_hf"))
    probe = HFBackend.from_pretrained(str(path), dtype="float32")
    ids = probe.generate([PROMPTS[1]], GenParams(max_tokens=12))[0].token_ids
    stop = next(t for k, t in enumerate(ids) if k >= 3 and t not in ids[:k])
    config = json.loads((path / "generation_config.json").read_text())
    config["eos_token_id"] = [probe.tokenizer.eos_token_id, stop]
    (path / "generation_config.json").write_text(json.dumps(config))
    return HFBackend.from_pretrained(str(path), dtype="float32", max_batch_size=3)


def test_batched_equals_one_at_a_time_and_a_full_forward(backend):
    vocab = ReflectionVocab.from_tokenizer(backend.tokenizer)
    params = GenParams(max_tokens=16, watch_token_ids=vocab.all_ids)
    batched = backend.generate(PROMPTS, params)  # 4 prompts, max_batch_size 3: two forward batches
    assert len(batched[1].token_ids) < 16 and batched[1].token_ids[-1] in backend.eos_ids  # finished early
    assert all(len(g.token_ids) == 16 for k, g in enumerate(batched) if k != 1)
    for prompt, gen in zip(PROMPTS, batched):
        single = backend.generate([prompt], params)[0]
        assert gen.token_ids == single.token_ids and gen.text == single.text
        assert gen.cumulative_logprob == pytest.approx(single.cumulative_logprob, abs=1e-4)
        # Every watched log-prob equals log_softmax of a plain forward pass over prompt + completion.
        ids = backend.tokenizer(prompt, return_tensors="pt")["input_ids"]
        full = torch.cat([ids, torch.tensor([gen.token_ids])], dim=1)
        with torch.no_grad():
            logprobs = torch.log_softmax(backend.model(full).logits[0, ids.shape[1] - 1 : -1].float(), dim=-1)
        assert logprobs.argmax(-1).tolist() == gen.token_ids
        assert gen.cumulative_logprob == pytest.approx(
            logprobs.gather(1, full[0, ids.shape[1] :, None]).sum().item(), abs=1e-4
        )
        for t, step in enumerate(gen.step_logprobs):
            assert list(step) == list(vocab.all_ids)
            for token_id, lp in step.items():
                assert lp == pytest.approx(logprobs[t, token_id].item(), abs=1e-4)


def test_text_keeps_reflection_tokens_and_drops_the_final_eos(backend):
    gen = backend.generate([PROMPTS[1]], GenParams(max_tokens=16))[0]
    assert gen.token_ids[-1] in backend.eos_ids
    assert gen.text == backend.tokenizer.decode(gen.token_ids[:-1], skip_special_tokens=False)
    retrieval = backend.tokenizer.convert_tokens_to_ids("[Retrieval]")
    assert backend.tokenizer.decode([retrieval], skip_special_tokens=False) == "[Retrieval]"


def test_max_tokens_and_seeded_sampling(backend):
    for n in (1, 5):
        assert all(len(g.token_ids) <= n for g in backend.generate(PROMPTS, GenParams(max_tokens=n)))
    params = GenParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    first, again = backend.generate(PROMPTS, params), backend.generate(PROMPTS, params)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    greedy = backend.generate(PROMPTS, GenParams(max_tokens=8))
    assert [g.token_ids for g in first] != [g.token_ids for g in greedy]


def test_dtype_resolution():
    assert resolve_dtype("half", "cpu") == torch.float32  # fp16 on CPU is slow: float32 instead
    assert resolve_dtype("half", "cuda") == torch.float16
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(BackendError, match="unknown --dtype"):
        resolve_dtype("fp8", "cpu")


def test_missing_model_is_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="cannot load model"):
        HFBackend.from_pretrained(str(tmp_path / "nowhere"))
