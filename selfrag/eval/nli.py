"""Entailment (NLI) scorers for evaluators: a small `NLIScorer` protocol and three implementations.

- `TrueNLI`: a seq2seq TRUE-style model (`google/t5_xxl_true_nli_mixture`, ALCE's AutoAIS model), entailed iff it
  generates "1";
- `SeqClsNLI`: any HF sequence-classification NLI model, entailed iff the argmax class is the entailment label;
- `CallableNLI`: a plain function `(premise, hypothesis) -> bool` (tests, rules, remote services).

`load_nli(model, kind)` builds one of the first two; `CachedNLI` asks each distinct pair once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from selfrag.errors import ConfigError


class NLIScorer(Protocol):
    """Decides entailment for aligned lists: `entails(premises, hypotheses)[i]` is premise i |= hypothesis i."""

    def entails(self, premises: list[str], hypotheses: list[str]) -> list[bool]: ...


class CallableNLI:
    """An `NLIScorer` from a plain function `(premise, hypothesis) -> bool` (tests, rules, remote services)."""

    def __init__(self, fn: Callable[[str, str], bool]):
        self.fn = fn
        self.calls: list[tuple[str, str]] = []

    def entails(self, premises: list[str], hypotheses: list[str]) -> list[bool]:
        self.calls.extend(zip(premises, hypotheses))
        return [bool(self.fn(p, h)) for p, h in zip(premises, hypotheses)]


def torch_device(device: str) -> str:
    """The device for `device`: "auto" is cuda when available, else cpu; any other name is kept."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def torch_dtype(name: str | None, device: str):
    """The torch dtype called `name` ("half", "bf16", "fp32" or torch's own names); None: bf16 on GPU, fp32 on CPU."""
    import torch

    if name is None:  # ALCE loads TRUE in bf16 on GPU
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, {"half": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(name, name))


def max_input_length(tokenizer: Any, model: Any) -> int:
    """The longest input the model takes: the tokenizer's `model_max_length` or the model's position embeddings
    (roberta: 512 of 514), whichever is smaller and real (tokenizers without a limit report ~1e30); 512 if neither."""
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    return min((n for n in limits if isinstance(n, int) and n < 1_000_000), default=512)


class TrueNLI:
    """A seq2seq TRUE-style model: input "premise: {p} hypothesis: {h}", entailed iff it generates exactly "1"
    (ALCE's `_run_nli_autoais`, which greedily generates up to 10 tokens and compares the text with "1")."""

    def __init__(self, model: str, batch_size: int = 8, device: str = "auto", dtype: str | None = None):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.device = torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model, dtype=torch_dtype(dtype, self.device)).to(self.device)
        self.model.eval()
        self.batch_size = batch_size

    def generate_texts(self, premises: list[str], hypotheses: list[str]) -> list[str]:
        import torch

        texts = []
        inputs = [f"premise: {p} hypothesis: {h}" for p, h in zip(premises, hypotheses)]
        for start in range(0, len(inputs), self.batch_size):
            batch = self.tokenizer(inputs[start : start + self.batch_size], return_tensors="pt", padding=True)
            with torch.inference_mode():
                out = self.model.generate(**batch.to(self.device), max_new_tokens=10, do_sample=False)
            texts.extend(self.tokenizer.batch_decode(out, skip_special_tokens=True))
        return texts

    def entails(self, premises: list[str], hypotheses: list[str]) -> list[bool]:
        return [text.strip() == "1" for text in self.generate_texts(premises, hypotheses)]


def entailment_label(id2label: Mapping[Any, str]) -> int:
    """The class index whose label names entailment ("entailment", "ENTAILMENT", "entailed"), not "not_entailment"."""
    found = [int(i) for i, label in id2label.items() if "entail" in label.lower() and "not" not in label.lower()]
    if len(found) != 1:
        raise ConfigError(
            f"cannot find the entailment class among the model's labels {dict(id2label)}; "
            "use an NLI model whose config.id2label names it (e.g. 'entailment')"
        )
    return found[0]


class SeqClsNLI:
    """Any HF sequence-classification NLI model: entailed iff the argmax class is the entailment label."""

    def __init__(self, model: str, batch_size: int = 16, device: str = "auto", dtype: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch_dtype(dtype, "cpu"))
        self.model.to(self.device).eval()
        self.entailment = entailment_label(self.model.config.id2label)
        self.batch_size = batch_size
        self.max_length = max_input_length(self.tokenizer, self.model)  # passages are cut, not the sentence

    def entails(self, premises: list[str], hypotheses: list[str]) -> list[bool]:
        import torch

        decisions = []
        for start in range(0, len(premises), self.batch_size):
            end = start + self.batch_size
            batch = self.tokenizer(
                premises[start:end],
                hypotheses[start:end],
                return_tensors="pt",
                padding=True,
                truncation="only_first",
                max_length=self.max_length,
            )
            with torch.inference_mode():
                logits = self.model(**batch.to(self.device)).logits
            decisions.extend((logits.argmax(-1) == self.entailment).tolist())
        return decisions


def load_nli(model: str, kind: Literal["true", "seq-cls"], **kwargs: Any) -> NLIScorer:
    """`TrueNLI` (kind "true") or `SeqClsNLI` (kind "seq-cls") of `model`; kwargs: batch_size, device, dtype."""
    from selfrag.pretrained import check_model_path

    check_model_path(model, "--nli_model")
    return TrueNLI(model, **kwargs) if kind == "true" else SeqClsNLI(model, **kwargs)


class CachedNLI:
    """Asks each distinct (premise, hypothesis) once, in as few batched calls as the caller allows."""

    def __init__(self, nli: NLIScorer):
        self.nli, self.cache = nli, {}

    def __call__(self, pairs: list[tuple[str, str]]) -> list[bool]:
        todo = list(dict.fromkeys(p for p in pairs if p not in self.cache))
        if todo:
            results = self.nli.entails([p for p, _ in todo], [h for _, h in todo])
            if len(results) != len(todo):
                raise ValueError(f"NLI scorer returned {len(results)} decisions for {len(todo)} pairs")
            self.cache.update(zip(todo, map(bool, results)))
        return [self.cache[p] for p in pairs]
