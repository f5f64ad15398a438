"""Turn `{instruction, input, output}` records into `input_ids` / `labels` with the prompt and the passages masked.

This is the original `encode_with_prompt_completion_format` (finetune.py:250-292) as a pure function, with its two
masking bugs fixed by default and kept behind `original_masking=True` for ablations (docs/upstream_quirks.md):

* prompt: the original masks `labels[:source_len-1]`, leaving the last prompt token a target; we mask all of it;
* passages: the original masks ONE span, from after the first `<paragraph>` to before the last `</paragraph>`, so
  with several passages every segment, `[Relevant]`, `[Fully supported]`, `[Retrieval]` in between is dropped from
  the loss (upstream issue #95). We mask the strict interior of each `<paragraph>...</paragraph>` pair on its own
  (the rule the README FAQ and issue #12 describe).

Sequences longer than `max_seq_length` are never cut silently: `encode_example` computes the labels on the whole
sequence, then truncates and reports how many tokens it cut (`num_truncated`); `encode_dataset` drops such
examples by default (`overflow="drop"`) and logs the count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from selfrag.data import load_items, where
from selfrag.errors import ConfigError, DataFormatError, VocabError
from selfrag.prompts import PROMPT_DICT
from selfrag.tokens import PARAGRAPH_END, PARAGRAPH_START
from selfrag.training.config import FinetuneConfig

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


def build_prompt(example: Mapping[str, Any], templates: Mapping[str, str] | None = None) -> str:
    """`prompt_input` when `input` is non-empty, else `prompt_no_input` (original finetune.py:255-258).

    `templates` replaces `PROMPT_DICT` (e.g. the critic's, `selfrag.training.critic.CRITIC_PROMPTS`)."""
    _check_fields(example)
    templates = PROMPT_DICT if templates is None else templates
    if example.get("input"):
        return templates["prompt_input"].format(instruction=example["instruction"], input=example["input"])
    return templates["prompt_no_input"].format(instruction=example["instruction"])


def chat_messages(example: Mapping[str, Any]) -> list[dict[str, str]]:
    """The user turn of `--use_chat_template`: the instruction, then a blank line and `input` when it is non-empty.

    >>> chat_messages({"instruction": "Who wrote Hamlet?", "input": "", "output": "x"})
    [{'role': 'user', 'content': 'Who wrote Hamlet?'}]
    >>> chat_messages({"instruction": "Is it true?", "input": "Water is wet.", "output": "x"})[0]["content"]
    'Is it true?\\n\\nWater is wet.'
    """
    _check_fields(example)
    content = example["instruction"]
    if example.get("input"):
        content += "\n\n" + example["input"]
    return [{"role": "user", "content": content}]


def _require_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise VocabError(
            f"--use_chat_template: the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template "
            "(tokenizer.chat_template is unset; base models usually have none): drop the flag to use the Alpaca "
            "'### Instruction:' prompt, or pass --tokenizer_name of the instruction model's tokenizer"
        )


def chat_prompt(tokenizer: Any, example: Mapping[str, Any]) -> str:
    """The generation prompt of `example` under the tokenizer's chat template (what inference must feed the model):
    the user turn of `chat_messages`, then the template's opening of the assistant turn."""
    _require_chat_template(tokenizer)
    return tokenizer.apply_chat_template(chat_messages(example), tokenize=False, add_generation_prompt=True)


def chat_parts(tokenizer: Any, example: Mapping[str, Any]) -> tuple[str, str]:
    """`(prompt, completion)` texts under the chat template: the generation prompt, and what the template renders
    after it for the assistant turn `output` (the output itself plus the template's end-of-turn marker).

    Raises `ConfigError` when the template does not render the conversation as the prompt followed by the output
    verbatim (e.g. a template that rewrites or drops assistant text): its masks could not be exact."""
    prompt = chat_prompt(tokenizer, example)
    messages = [*chat_messages(example), {"role": "assistant", "content": example["output"]}]
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    completion = full[len(prompt) :]
    if not full.startswith(prompt) or example["output"] not in completion:
        raise ConfigError(
            f"{where(example)}: the tokenizer's chat template does not render the conversation as its generation "
            "prompt followed by the output verbatim, so the prompt cannot be masked exactly; use another template "
            "(tokenizer.chat_template) or drop --use_chat_template"
        )
    return prompt, completion


def _check_fields(example: Mapping[str, Any]) -> None:
    for field, required in (("instruction", True), ("output", True), ("input", False)):
        if field not in example:
            if required:
                raise DataFormatError(
                    f"{where(example)}: missing field '{field}'; generator training records need 'instruction', "
                    "'output' and optionally 'input'"
                )
            continue
        value = example[field]
        if not (isinstance(value, str) or (not required and value is None)):
            raise DataFormatError(f"{where(example)}: field '{field}' must be a string, found {type(value).__name__}")


def paragraph_spans(
    ids: Sequence[int], start: int, open_id: int, close_id: int, original: bool = False
) -> list[tuple[int, int]]:
    """Half-open index ranges `[a, b)` of `ids[start:]` to exclude from the loss as retrieved context.

    Intended rule (default): the strict interior of each `<paragraph>...</paragraph>` pair; spans do not nest (the
    first `</paragraph>` after an open one closes it); a `</paragraph>` without an open one is an ordinary target; an
    unclosed `<paragraph>` masks everything after it, to the end of the sequence (its content is still passage text,
    and the final token after a passage, EOS or a cut passage token, is nothing the model should learn to emit).

    `original=True` replays the original loop (finetune.py:269-285) token by token: at the first `<paragraph>` at `s`
    it finds the LAST `</paragraph>` at `e >= s` (no `break`), or `e = len(ids) - 1` when there is none, masks
    `[s+1, e)`, and keeps scanning over the labels it has already overwritten, so only a `<paragraph>` after the last
    `</paragraph>` opens a second span. Unclosed, the original thus keeps the final token (usually EOS) a target.

    >>> P, E = 5, 6
    >>> paragraph_spans([0, 1, 2, 9, P, 7, 7, E, 8, 8, P, 7, 7, E, 8, 3], 3, P, E)
    [(5, 7), (11, 13)]
    >>> paragraph_spans([0, 1, 2, 9, P, 7, 7, E, 8, 8, P, 7, 7, E, 8, 3], 3, P, E, original=True)
    [(5, 13)]
    >>> paragraph_spans([0, 9, P, 7, 7, 3], 1, P, E), paragraph_spans([0, 9, P, 7, 7, 3], 1, P, E, original=True)
    ([(3, 6)], [(3, 5)])
    """
    n = len(ids)
    spans: list[tuple[int, int]] = []
    if original:
        labels = list(ids)  # the original scans the labels it is overwriting
        for s in range(start, n):
            if labels[s] != open_id:
                continue
            closes = [k for k in range(s, n) if labels[k] == close_id]
            e = closes[-1] if closes else n - 1
            if e > s + 1:
                spans.append((s + 1, e))
                labels[s + 1 : e] = [IGNORE_INDEX] * (e - s - 1)
        return spans
    s = start
    while s < n:
        if ids[s] != open_id:
            s += 1
            continue
        e = next((k for k in range(s + 1, n) if ids[k] == close_id), n)
        if e > s + 1:
            spans.append((s + 1, e))
        s = e + 1
    return spans


def _single_token_id(tokenizer: Any, token: str) -> int:
    ids = tokenizer.convert_tokens_to_ids([token])
    token_id = ids[0] if ids else None
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise VocabError(
            f"masking the retrieved passages needs {token!r} as one token, and this tokenizer lacks it; add the "
            "reflection tokens (retrieval_lm/finetune.py --use_special_tokens) or turn paragraph masking off"
        )
    return token_id


def encode_example(
    example: Mapping[str, Any],
    tokenizer: Any,
    max_seq_length: int,
    mask_paragraphs: bool = True,
    original_masking: bool = False,
    templates: Mapping[str, str] | None = None,
    mask_token_ids: Collection[int] = (),
    chat_template: bool = False,
    original_paragraphs: bool = False,
) -> dict[str, Any]:
    """Tokenize prompt + completion and build the training labels.

    The prompt is `PROMPT_DICT["prompt_input"]` (non-empty `input`) or `["prompt_no_input"]`; the completion is
    `output` followed by the EOS id. As in the original, prompt and completion are tokenized together (the tokenizer
    adds its BOS, if any) and the prompt alone gives `source_len`; should the joint tokenization not start with the
    prompt's ids (a merge across the boundary), the two are tokenized separately and concatenated instead.

    Args:
        example: a record with string fields `instruction` and `output`, and optionally `input` (released Self-RAG
            data has `input: ""`). `_where` (set by `selfrag.data.load_items`) names the record in errors.
        tokenizer: a HF tokenizer; with `mask_paragraphs` it must hold `<paragraph>` and `</paragraph>` as tokens.
        max_seq_length: sequences longer than this are cut to it AFTER the labels are built (so a cut passage stays
            masked), and `num_truncated` says by how many tokens; `encode_dataset` drops them by default.
        mask_paragraphs: exclude retrieved passages from the loss (the original does this under
            `--use_special_tokens`).
        original_masking: the original's rules: `labels[:source_len-1]` and one span from the first `<paragraph>` to
            the last `</paragraph>` (see `paragraph_spans`).
        templates: prompt templates in place of `PROMPT_DICT` (keys `prompt_input`, `prompt_no_input`).
        mask_token_ids: ids also excluded from the loss wherever they occur (the critic's
            `--not_consider_special_tokens`).
        original_paragraphs: the original's one-span passage rule alone, with the whole prompt masked (the original
            critic's masks, train_special_tokens.py:203-224); `original_masking` implies it.
        chat_template: format with the tokenizer's chat template instead of `templates` (`--use_chat_template`):
            the user turn is the instruction (plus a blank line and `input`), the assistant turn is `output`; the
            prompt is everything up to the opening of the assistant turn (`add_generation_prompt=True`), the
            completion is the rest of the rendered conversation (output and end-of-turn marker, no extra EOS). The
            text is tokenized without adding special tokens, since templates write their own BOS.

    Returns:
        `{"input_ids", "labels", "attention_mask"}` (lists of ints) and `"num_truncated"` (int, 0 when it fits).

    Example, with a whitespace WordLevel tokenizer that prepends `<s>` (so each word is one token):

        example = {"instruction": "Who wrote Hamlet?", "input": "",
                   "output": "[Retrieval]<paragraph>Hamlet is a play</paragraph>[Relevant]Shakespeare.[Utility:5]"}
        tokens  = <s> ### Instruction: Who wrote Hamlet? ### Response: [Retrieval] <paragraph> Hamlet is a play
                  </paragraph> [Relevant] Shakespeare. [Utility:5] </s>
        labels  = -100 x 8 (the prompt), [Retrieval] <paragraph>, -100 x 4 (the passage), </paragraph> [Relevant]
                  Shakespeare. [Utility:5] </s>          (labels hold ids; tokens are shown for reading)

        With original_masking=True the same example keeps `Response:` (the 8th token) as a target.
    """
    if max_seq_length < 1:
        raise ConfigError(f"max_seq_length must be positive, got {max_seq_length}")
    if chat_template:
        prompt, completion = chat_parts(tokenizer, example)
    else:
        prompt, completion = build_prompt(example, templates), example["output"]
        if tokenizer.eos_token_id is None:
            raise VocabError("the tokenizer has no eos_token; set one (tokenizer.eos_token = ...) before training")
    special = not chat_template  # chat templates write their own BOS
    prompt_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    input_ids = tokenizer(prompt + completion, add_special_tokens=special)["input_ids"]
    if input_ids[: len(prompt_ids)] != prompt_ids:
        input_ids = prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not chat_template and (not input_ids or input_ids[-1] != tokenizer.eos_token_id):
        input_ids = input_ids + [tokenizer.eos_token_id]
    source_len = len(prompt_ids)

    labels = list(input_ids)
    n_prompt = max(source_len - 1, 0) if original_masking else source_len
    labels[:n_prompt] = [IGNORE_INDEX] * n_prompt
    if mask_paragraphs:
        open_id = _single_token_id(tokenizer, PARAGRAPH_START)
        close_id = _single_token_id(tokenizer, PARAGRAPH_END)
        original = original_masking or original_paragraphs
        for a, b in paragraph_spans(input_ids, source_len, open_id, close_id, original=original):
            labels[a:b] = [IGNORE_INDEX] * (b - a)
    if mask_token_ids:
        masked = set(mask_token_ids)
        labels = [IGNORE_INDEX if token in masked else label for token, label in zip(input_ids, labels, strict=True)]

    num_truncated = max(len(input_ids) - max_seq_length, 0)
    input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": [1] * len(input_ids),
        "num_truncated": num_truncated,
    }


@dataclass
class EncodeStats:
    """Counters of one `encode_dataset` call, logged once at the end."""

    num_examples: int = 0
    num_kept: int = 0
    num_too_long: int = 0  # longer than max_seq_length (dropped, or truncated with overflow="truncate")
    num_no_targets: int = 0  # every label is -100 (dropped, as the original does at finetune.py:515)
    num_tokens: int = 0  # tokens of the kept examples
    num_target_tokens: int = 0  # labels != -100 of the kept examples

    def summary(self) -> str:
        return (
            f"{self.num_kept}/{self.num_examples} examples kept; {self.num_too_long} longer than max_seq_length, "
            f"{self.num_no_targets} without any target token; {self.num_tokens} tokens, "
            f"{self.num_target_tokens} of them targets"
        )


def encode_dataset(
    examples: Iterable[Mapping[str, Any]],
    encode: Callable[[Mapping[str, Any]], dict[str, Any]],
    overflow: Literal["drop", "truncate"] = "drop",
    num_workers: int | None = None,
) -> tuple[list[dict[str, list[int]]], EncodeStats]:
    """Encode every example with `encode` (e.g. a `functools.partial` of `encode_example`), drop bad ones, count.

    `overflow="drop"` (default) removes examples longer than max_seq_length; `"truncate"` keeps them cut (labels were
    built on the whole sequence, so a cut passage stays masked, but the EOS and the end of the answer are lost, as in
    the original). Examples without any target token are always dropped. `num_workers > 1` encodes in that many
    forked processes (`encode` must pickle; a `partial` of `encode_example` with a fast tokenizer does).
    """
    if overflow not in ("drop", "truncate"):
        raise ConfigError(f"overflow must be 'drop' or 'truncate', got {overflow!r}")
    stats = EncodeStats()
    kept: list[dict[str, list[int]]] = []
    if num_workers and num_workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        examples = list(examples)
        chunk = max(1, len(examples) // (4 * num_workers))
        with ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("fork")) as pool:
            encoded: Iterable[dict[str, Any]] = list(pool.map(encode, examples, chunksize=chunk))
    else:
        encoded = map(encode, examples)
    for enc in encoded:
        stats.num_examples += 1
        if enc.pop("num_truncated"):
            stats.num_too_long += 1
            if overflow == "drop":
                continue
        n_targets = sum(label != IGNORE_INDEX for label in enc["labels"])
        if n_targets == 0:
            stats.num_no_targets += 1
            continue
        stats.num_kept += 1
        stats.num_tokens += len(enc["input_ids"])
        stats.num_target_tokens += n_targets
        kept.append(enc)
    if stats.num_too_long:
        logger.warning(
            "%d of %d examples are longer than max_seq_length: %s (raise --max_seq_length or pass --overflow %s)",
            stats.num_too_long,
            stats.num_examples,
            "dropped" if overflow == "drop" else "truncated",
            "truncate" if overflow == "drop" else "drop",
        )
    logger.info("encoding: %s", stats.summary())
    return kept, stats


EncodeFn = Callable[[FinetuneConfig, Any], tuple[list[dict[str, list[int]]], EncodeStats]]


def encode_file(config: FinetuneConfig, tokenizer: Any) -> tuple[list[dict[str, list[int]]], EncodeStats]:
    """Load `--train_file` and encode it (prompt and, under `--use_special_tokens`, passages masked): the examples of
    both training loops (`loop.py`, `distributed.py`) unless an `EncodeFn` replaces it (the critic's)."""
    items = load_items(config.train_file)
    encode = partial(
        encode_example,
        tokenizer=tokenizer,
        max_seq_length=config.max_seq_length,
        mask_paragraphs=config.use_special_tokens,
        original_masking=config.original_masking,
        chat_template=config.use_chat_template,
    )
    data, stats = encode_dataset(items, encode, overflow=config.overflow, num_workers=config.preprocessing_num_workers)
    if not data:
        raise DataFormatError(f"{config.train_file}: no training example left after encoding ({stats.summary()})")
    return data, stats
