"""The model-based ALCE extras (ALCE eval.py's `--qa` and `--mauve`), split from `selfrag.eval.alce`, which imports
and re-exports them (this module does not import alce: the item readers both use are in `selfrag.eval.alce_items`).

- `QA-EM` / `QA-F1` / `QA-Hit` (`qa_scores`): an extractive QA model (`ExtractiveQA`, ALCE's roberta-large SQuAD
  reader) answers each disambiguated ASQA question from the answer text.
- `mauve` (`mauve_texts`, `mauve_score`; needs the `mauve-text` package): MAUVE between question+reference and
  question+answer texts (first 100 words, trailing punctuation dropped).
"""

from __future__ import annotations

import logging
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from selfrag.eval.alce_items import qa_pairs_of, references_of
from selfrag.eval.metrics import normalize_answer
from selfrag.eval.nli import max_input_length, torch_device

logger = logging.getLogger(__name__)

QA_MODEL = "gaotianyu1350/roberta-large-squad"  # ALCE's QA_MODEL
MAUVE_MODEL = "gpt2-large"  # ALCE's featurize_model_name
QAFunction = Callable[[list[str], str], list[str]]  # (questions, context) -> one extracted answer per question


def _squad_f1(gold: str, pred: str) -> float:
    gold_tokens, pred_tokens = normalize_answer(gold).split(), normalize_answer(pred).split()
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)  # SQuAD v2: both empty is a match
    overlap = sum((Counter(gold_tokens) & Counter(pred_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_scores(outputs: Sequence[str], items: Sequence[Mapping[str, Any]], answer: QAFunction) -> dict[str, float]:
    """ALCE's QA-EM / QA-F1 / QA-Hit: `answer` reads each qa pair's `question` from the output."""
    em, f1, hit = [], [], []
    for output, item in zip(outputs, items):
        answers = qa_pairs_of(item)
        questions = [str(pair.get("question", "")) for pair in item["qa_pairs"]]
        preds = answer(questions, output if output else " ")
        item_em = [
            max(float(normalize_answer(a) == normalize_answer(p)) for a in golds) for golds, p in zip(answers, preds)
        ]
        item_f1 = [max(_squad_f1(a, p) for a in golds) for golds, p in zip(answers, preds)]
        em.append(sum(item_em) / len(item_em))
        f1.append(sum(item_f1) / len(item_f1))
        hit.append(float(all(item_em)))
    n = len(em)
    return {"QA-EM": 100 * sum(em) / n, "QA-F1": 100 * sum(f1) / n, "QA-Hit": 100 * sum(hit) / n}


class ExtractiveQA:
    """An HF extractive QA model (ALCE: roberta-large fine-tuned on SQuAD) read the way transformers' former
    `question-answering` pipeline read it with `handle_impossible_answer=True` (transformers 5 removed that
    pipeline): softmax the start and end logits over the context tokens and the first (CLS) token, take the span
    (start <= end, at most `max_answer_len` tokens) with the largest p(start) * p(end), and answer "" when the
    CLS pair scores higher. Contexts longer than the model's input are cut (ASQA answers are short)."""

    def __init__(self, model: str, device: str = "auto", max_answer_len: int = 15):
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        self.device = torch_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForQuestionAnswering.from_pretrained(model).to(self.device).eval()
        self.max_length = max_input_length(self.tokenizer, self.model)
        self.max_answer_len = max_answer_len

    def __call__(self, questions: list[str], context: str) -> list[str]:
        import torch

        batch = self.tokenizer(
            questions,
            [context] * len(questions),
            return_tensors="pt",
            padding=True,
            truncation="only_second",
            max_length=self.max_length,
            return_offsets_mapping=True,
        )
        offsets = batch.pop("offset_mapping")
        with torch.inference_mode():
            out = self.model(**batch.to(self.device))
        answers = []
        for i in range(len(questions)):
            in_context = torch.tensor([s == 1 for s in batch.sequence_ids(i)])
            keep = in_context.clone()
            keep[0] = True  # the CLS token stands for "no answer"
            start = out.start_logits[i].float().cpu().masked_fill(~keep, float("-inf")).softmax(-1)
            end = out.end_logits[i].float().cpu().masked_fill(~keep, float("-inf")).softmax(-1)
            spans = torch.triu(start[:, None] * end[None, :]).tril(self.max_answer_len - 1)
            spans = spans * (in_context[:, None] & in_context[None, :])
            best = int(spans.argmax())
            first, last = divmod(best, spans.shape[1])
            if float(start[0] * end[0]) > float(spans[first, last]):
                answers.append("")
            else:
                answers.append(context[int(offsets[i][first][0]) : int(offsets[i][last][1])])
        return answers


def hf_qa_function(model: str, device: str = "auto") -> QAFunction:
    """A `QAFunction` from an HF extractive QA model path or hub id."""
    from selfrag.pretrained import check_model_path

    check_model_path(model, "--qa_model")
    return ExtractiveQA(model, device)


def mauve_texts(items: Sequence[Mapping[str, Any]], outputs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(human, model) texts for MAUVE: question + " " + answer (the reference `answer`, else the first long answer),
    first 100 words, trailing punctuation removed."""

    def text(question: str, answer: str) -> str:
        return " ".join((question + " " + answer.strip()).split()[:100]).rstrip(string.punctuation)

    human = [
        text(
            str(item.get("question", "")),
            item["answer"] if isinstance(item.get("answer"), str) else references_of(item)[0],
        )
        for item in items
    ]
    return human, [text(str(item.get("question", "")), o) for item, o in zip(items, outputs)]


def mauve_score(human: list[str], model: list[str], featurize_model: str = MAUVE_MODEL) -> float | None:
    """MAUVE x100 with the `mauve-text` package, or None (logged) when it is not installed."""
    try:
        import mauve
    except ImportError:
        logger.warning("MAUVE skipped: the mauve-text package is not installed (pip install mauve-text)")
        return None
    import torch

    out = mauve.compute_mauve(
        p_text=human,
        q_text=model,
        device_id=0 if torch.cuda.is_available() else -1,
        max_text_length=512,
        verbose=False,
        batch_size=8,
        featurize_model_name=featurize_model,
    )
    return 100 * float(out.mauve)
