"""ASQA / ELI5 evaluation the way ALCE (Gao et al., 2023, `princeton-nlp/ALCE` eval.py) scores it, written anew.

Input: ALCE-format items (what `retrieval_lm/run_long_form_static.py --task asqa` writes, and the `data` of a
`run_baseline_lm.py` output): `output` (the answer, `[k]` citing `docs[k-1]`), `docs`, and for ASQA `qa_pairs`
(`short_answers`) and `annotations` (`long_answer`); ELI5 has `answer` and `claims` instead.

Metrics (the `.score` keys of ALCE; all but `length` are percentages):

- `length`: mean number of words of the answer without its citations.
- `str_em`: per item, the fraction of its `qa_pairs` for which some short answer occurs (as a substring, after
  SQuAD normalisation) in the normalised answer; averaged over items. `str_hit`: the share of items where every
  qa pair is found.
- `rougeLsum`: ROUGE-Lsum F1 (`rouge-score`, Porter stemming) of the lowercased, sentence-split answer against each
  reference long answer, the best reference per item (ALCE compares `annotations[0]` and `annotations[1]`; ASQA dev
  items have two), then aggregated as ALCE does by default: the median of 1,000 bootstrap resamples of the mean
  (rouge-score's `BootstrapAggregator`, the `mid` of its interval), drawn from numpy's generator seeded with
  `--rouge_seed`, so a rerun gives the same number (ALCE leaves it unseeded: its own reruns differ a little).
  `--rouge mean` reports the plain mean over items instead, the quantity the bootstrap median estimates.
- `citation_rec` / `citation_prec` (ALCE §4.2): the answer is split into sentences; a sentence's citations are its
  `[k]` marks (the first `at_most_citations`). Recall: the sentence (citations removed) is entailed by its cited
  passages together; a sentence without citations, or citing a passage that does not exist, counts as unsupported.
  Precision: each citation of a supported sentence is relevant unless it is redundant, i.e. it does not entail the
  sentence alone **and** the other citations still entail it without it; every citation of an unsupported sentence
  is irrelevant. A sentence citing a passage that does not exist is unsupported even when the cap would drop that
  citation (ALCE checks the range first). Per item, recall = supported sentences / sentences and precision =
  relevant / counted citations (0 with none); items whose answer has no sentence are left out of both means (ALCE).
- `mauve` (needs the `mauve-text` package): MAUVE between question+reference and question+answer texts (first 100
  words, trailing punctuation dropped). `QA-EM` / `QA-F1` / `QA-Hit` (`--qa`): an extractive QA model answers each
  disambiguated question from the answer (both in `selfrag.eval.alce_models`). `claims_nli` (ELI5): the share of gold
  claims the answer entails.

Entailment is pluggable (`selfrag.eval.nli.NLIScorer`, re-exported here): the TRUE T5 model ALCE uses
(`google/t5_xxl_true_nli_mixture`), any HF sequence-classification NLI model, or a plain function (tests). Calls
are batched over the whole file.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from selfrag.cli import flag
from selfrag.data import run_config, where
from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.alce_items import qa_pairs_of, references_of, require
from selfrag.eval.alce_models import (
    MAUVE_MODEL,
    QA_MODEL,
    QAFunction,
    hf_qa_function,
    mauve_score,
    mauve_texts,
    qa_scores,
)
from selfrag.eval.metrics import normalize_answer
from selfrag.eval.nli import (  # noqa: F401 - re-exported (tests, docs)
    CachedNLI,
    CallableNLI,
    NLIScorer,
    SeqClsNLI,
    TrueNLI,
    entailment_label,
    load_nli,
    max_input_length,
    torch_device,
)

logger = logging.getLogger(__name__)

TRUE_MODEL = "google/t5_xxl_true_nli_mixture"  # ALCE's AUTOAIS_MODEL
PERCENT_KEYS = ("str_em", "str_hit", "rougeLsum", "QA-EM", "QA-F1", "QA-Hit", "mauve", "citation_rec")
PERCENT_KEYS += ("citation_prec", "claims_nli")
# The model-based extras (--qa, --mauve) live in selfrag.eval.alce_models; the readers of the ASQA / ELI5 fields
# both modules score (qa_pairs_of, references_of) in selfrag.eval.alce_items. Imports go one way: alce ->
# alce_models -> alce_items.


# ------------------------------------------------------------------------------------------------- text helpers

_CITE_MARK = re.compile(r"\s?\[\d+\]")
_CITE_REF = re.compile(r"\[(\d+)")  # ALCE reads "[12" as a citation of passage 12, closed or not


def remove_citations(text: str) -> str:
    """Drop every `[k]` mark with the one space before it: "Paris [1][2]." -> "Paris."."""
    return _CITE_MARK.sub("", text)


def citation_ids(sentence: str) -> list[int]:
    """The 0-based passage indices a sentence cites, in order: "A [2][1]." -> [1, 0]."""
    return [int(k) - 1 for k in _CITE_REF.findall(sentence)]


def first_line(output: str) -> str:
    """ALCE scores the answer up to its first newline, with surrounding whitespace and `<|im_end|>` removed."""
    return output.strip().split("\n")[0].replace("<|im_end|>", "")


_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc e.g i.e u.s u.k no vol fig jan feb mar apr jun jul aug sep sept oct nov dec"
    " inc ltd co corp gen col lt sgt mt ft approx".split()
)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+)")


def regex_sentences(text: str) -> list[str]:
    """Split after `.`, `!` or `?` (and closing quotes / brackets) before whitespace, except after common
    abbreviations ("Dr.", "U.S.") and single-letter initials ("J. R. R. Tolkien"), whatever the next word's case (ALCE
    splits lowercased text for ROUGE); a light
    stand-in for NLTK's punkt, which ALCE uses, for machines without its data."""
    sentences, start = [], 0
    for found in _SENTENCE_END.finditer(text):
        words = text[start : found.start() + 1].split()
        last = words[-1].lower().rstrip(".!?") if words else ""
        if text[found.start()] == "." and (last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())):
            continue
        sentences.append(text[start : found.end()].strip())
        start = found.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def sentence_splitter(kind: Literal["auto", "nltk", "regex"] = "auto") -> Callable[[str], list[str]]:
    """NLTK's `sent_tokenize` (ALCE's splitter) when its punkt data is installed, else `regex_sentences`."""
    if kind == "regex":
        return regex_sentences
    try:
        import nltk

        nltk.sent_tokenize("A test. Another one.")
        return nltk.sent_tokenize
    except (ImportError, LookupError) as err:
        if kind == "nltk":
            raise ConfigError(
                f"--sentence_splitter nltk needs nltk with its punkt data ({err}); "
                "pip install nltk and python -m nltk.downloader punkt_tab, or use --sentence_splitter regex"
            ) from err
        logger.warning("NLTK punkt data not found; sentences are split with the regex splitter (selfrag.eval.alce)")
        return regex_sentences


def format_document(doc: Mapping[str, Any]) -> str:
    """A passage as the NLI premise: "Title: {title}\\n{text}" (ALCE's `_format_document`)."""
    return f"Title: {doc.get('title', '')}\n{doc.get('sent', doc.get('text', ''))}"


# --------------------------------------------------------------------------------------------------- validation


def check_items(items: Sequence[Mapping[str, Any]], citations: bool = False) -> None:
    """Every item needs a string `output`; with `citations`, a `docs` list of passages with `text`."""
    if not items:
        raise DataFormatError("no items to evaluate")
    for item in items:
        require(item, "output", str, "the answer to score (run run_long_form_static.py or run_baseline_lm.py)")
        if citations:
            docs = require(item, "docs", list, "--citations needs the passages the answer's [k] marks refer to")
            for k, doc in enumerate(docs):
                if not isinstance(doc, Mapping) or not isinstance(doc.get("text", doc.get("sent")), str):
                    raise DataFormatError(f"{where(item)}: docs[{k}] has no string 'text'")


def _present_in_all(items: Sequence[Mapping[str, Any]], name: str) -> bool:
    """True when every item has `name`, False when none has; a file where only some have it is an error."""
    have = [item.get(name) is not None for item in items]
    if all(have):
        return True
    if any(have):
        missing = items[have.index(False)]
        raise DataFormatError(f"{where(missing)}: missing field '{name}' (other items have it)")
    return False


# ------------------------------------------------------------------------------------------------ plain metrics


def answer_length(outputs: Sequence[str]) -> float:
    """Mean number of whitespace-separated words."""
    return sum(len(o.split()) for o in outputs) / len(outputs)


def exact_presence(short_answers: Sequence[str], text: str) -> bool:
    """Some short answer, normalised, is a substring of the normalised text (lenient: "handel" is in "handelsblatt")."""
    normalised = normalize_answer(text)
    return any(normalize_answer(a) in normalised for a in short_answers)


def str_em_hit(outputs: Sequence[str], qa_answers: Sequence[Sequence[Sequence[str]]]) -> tuple[float, float]:
    """ALCE's `str_em` and `str_hit` (percentages) of citation-free outputs against each item's short answers."""
    em, hit = [], []
    for output, pairs in zip(outputs, qa_answers):
        found = [exact_presence(answers, output) for answers in pairs]
        em.append(sum(found) / len(found))
        hit.append(float(all(found)))
    return 100 * sum(em) / len(em), 100 * sum(hit) / len(hit)


def rouge_lsum(outputs: Sequence[str], references: Sequence[Sequence[str]], split: Callable[[str], list[str]]) -> float:
    """Mean over items of the best ROUGE-Lsum F1 against the item's references, x100 (rouge-score, stemmed)."""
    best = rouge_lsum_scores(outputs, references, split)
    return 100 * sum(best) / len(best)


BOOTSTRAP_SAMPLES = 1000  # rouge-score's BootstrapAggregator default, which ALCE uses


def bootstrap_median(values: Sequence[float], seed: int, n_samples: int = BOOTSTRAP_SAMPLES) -> float:
    """The median over `n_samples` resamples (with replacement, each as long as `values`) of the resample's mean:
    rouge-score's `BootstrapAggregator(...).aggregate()[...].mid`, with its draws taken from numpy's legacy generator
    seeded with `seed` (the same draws `np.random.seed(seed)` gives the aggregator), without touching numpy's
    global random state."""
    import numpy as np

    scores = np.asarray(values, dtype=np.float64)
    rng = np.random.RandomState(seed)
    means = np.zeros(n_samples)
    for i in range(n_samples):
        means[i] = scores[rng.choice(np.arange(len(scores)), size=len(scores))].mean()
    return float(np.percentile(means, 50))


def rouge_lsum_scores(
    outputs: Sequence[str], references: Sequence[Sequence[str]], split: Callable[[str], list[str]]
) -> list[float]:
    """Per item, the best ROUGE-Lsum F1 against its references (rouge-score, stemmed; fractions)."""
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise ConfigError("ROUGE needs the rouge-score package: pip install rouge-score (or selfrag[eval])") from err
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)

    def prepare(text: str) -> str:
        return "\n".join(split(text.lower()))

    best = []
    for output, refs in zip(outputs, references):
        hypothesis = prepare(output)
        best.append(max(scorer.score(prepare(ref), hypothesis)["rougeLsum"].fmeasure for ref in refs))
    return best


# ------------------------------------------------------------------------------------------------------ citations


def citation_scores(
    items: Sequence[Mapping[str, Any]],
    outputs: Sequence[str],
    nli: NLIScorer,
    split: Callable[[str], list[str]],
    at_most_citations: int | None = 3,
) -> dict[str, float]:
    """ALCE's citation recall and precision (x100); see the module docstring. Three batched NLI rounds: joint
    support of every sentence, then each citation alone, then the others without it (only where needed)."""
    ask = CachedNLI(nli)
    sentences = []  # (item index, hypothesis, cited indices or None when unsupported by construction)
    for i, (item, output) in enumerate(zip(items, outputs)):
        docs = item["docs"]
        for sentence in split(output):
            refs = citation_ids(sentence)
            # ALCE rejects a sentence citing a missing passage before it applies the cap
            ok = bool(refs) and all(0 <= r < len(docs) for r in refs)
            if at_most_citations is not None:
                refs = refs[:at_most_citations]
            sentences.append((i, remove_citations(sentence).strip(), refs if ok else None))

    def premise(i: int, refs: Sequence[int]) -> str:
        return "\n".join(format_document(items[i]["docs"][r]) for r in refs)

    checked = [s for s in sentences if s[2] is not None]
    joint = dict(zip(map(id, checked), ask([(premise(i, refs), hyp) for i, hyp, refs in checked])))
    multi = [s for s in checked if joint[id(s)] and len(s[2]) > 1]
    alone_pairs = [(premise(i, [r]), hyp) for i, hyp, refs in multi for r in refs]
    alone = iter(ask(alone_pairs))
    leave_one_out = []  # (sentence, position) of citations that fail alone
    for s in multi:
        leave_one_out.extend((s, k) for k in range(len(s[2])) if not next(alone))
    others = [s[2][:k] + s[2][k + 1 :] for s, k in leave_one_out]
    redundant = ask([(premise(s[0], rest), s[1]) for (s, _), rest in zip(leave_one_out, others)])
    n_redundant = Counter(id(s) for (s, _), red in zip(leave_one_out, redundant) if red)

    supported, total, relevant, cited = Counter(), Counter(), Counter(), Counter()
    for s in sentences:
        i, _, refs = s
        total[i] += 1
        if refs is None:
            continue  # no citation, or one out of range: unsupported, and no citation counted (ALCE)
        cited[i] += len(refs)
        if joint[id(s)]:
            supported[i] += 1
            relevant[i] += len(refs) - n_redundant[id(s)]
    scored = sorted(total)  # items with at least one sentence
    if not scored:
        raise DataFormatError("no item has an answer sentence to check citations for")
    recall = [supported[i] / total[i] for i in scored]
    precision = [relevant[i] / cited[i] if cited[i] else 0.0 for i in scored]
    logger.info(
        "citations: %d sentences, %d with several citations (%d supported), %d redundant citations",
        len(sentences),
        sum(1 for s in checked if len(s[2]) > 1),
        len(multi),
        sum(n_redundant.values()),
    )
    return {"citation_rec": 100 * sum(recall) / len(scored), "citation_prec": 100 * sum(precision) / len(scored)}


def claims_nli(items: Sequence[Mapping[str, Any]], outputs: Sequence[str], nli: NLIScorer) -> float:
    """ELI5: mean over items of the share of `claims` the citation-free answer entails, x100."""
    pairs, owner = [], []
    for i, (item, output) in enumerate(zip(items, outputs)):
        claims = require(item, "claims", list, "--claims_nli needs the ELI5 gold claims")
        pairs.extend((output, claim) for claim in claims)
        owner.extend([i] * len(claims))
    decisions = CachedNLI(nli)(pairs)
    per_item = [[d for d, o in zip(decisions, owner) if o == i] for i in range(len(items))]
    return 100 * sum(sum(d) / len(d) if d else 0.0 for d in per_item) / len(items)


# ---------------------------------------------------------------------------------------------------------- driver


@dataclass
class AlceEvalConfig:
    """Flags of `scripts/eval_alce.py`: ALCE eval.py's names (`--f --citations --qa --mauve --at_most_citations
    --claims_nli`) plus the NLI model and a Table 2 summary file."""

    f: str = flag(
        "Result file to score: ALCE json ({'data': [...]} or a list), e.g. run_long_form_static.py's.", default=""
    )
    citations: bool = flag(
        "Citation recall and precision with the NLI model.",
        default=False,
        metadata={"aliases": ["--autoais_citation"]},  # the flag's name in later ALCE versions
    )
    no_rouge: bool = flag("Skip ROUGE.", default=False)
    rouge: Literal["bootstrap", "mean"] = flag(
        "How rougeLsum aggregates the items: bootstrap (ALCE's: the median of 1,000 bootstrap means, seeded by "
        "--rouge_seed) or mean (the plain mean over items).",
        default="bootstrap",
    )
    rouge_seed: int = flag("Seed of the bootstrap resampling of --rouge bootstrap (reruns agree).", default=0)
    qa: bool = flag("QA-EM / QA-F1 / QA-Hit with an extractive QA model (ASQA).", default=False)
    mauve: bool = flag("MAUVE (needs pip install mauve-text and the featurizer model).", default=False)
    claims_nli: bool = flag("ELI5 claim recall with the NLI model.", default=False)
    at_most_citations: int = flag("Take at most this many citations of a sentence (ALCE's default 3).", default=3)
    nli_model: str = flag("Entailment model (ALCE: the TRUE T5-XXL).", default=TRUE_MODEL)
    nli_kind: Literal["true", "seq-cls"] = flag(
        "true: seq2seq generating '1' for entailment; seq-cls: sequence classifier with an entailment label.",
        default="true",
    )
    nli_batch_size: int = flag("Premise-hypothesis pairs per NLI forward pass.", default=8)
    qa_model: str = flag("Extractive QA model for --qa.", default=QA_MODEL)
    mauve_model: str = flag("MAUVE featurizer.", default=MAUVE_MODEL)
    device: str = flag("auto (cuda when available), cpu, cuda, cuda:1 ...", default="auto")
    dtype: str | None = flag("NLI model dtype (default bf16 on GPU, fp32 on CPU).", default=None)
    sentence_splitter: Literal["auto", "nltk", "regex"] = flag(
        "auto: NLTK punkt (ALCE's) when its data is installed, else a regex splitter.", default="auto"
    )
    result_fp: str | None = flag("Also write a results-format summary here (for selfrag eval --table).", default=None)

    def __post_init__(self) -> None:
        if not self.f:
            raise ConfigError("--f (the result file to score) is required")
        if self.at_most_citations < 1:
            raise ConfigError(f"--at_most_citations must be at least 1; got {self.at_most_citations}")
        if self.nli_batch_size < 1:
            raise ConfigError(f"--nli_batch_size must be at least 1; got {self.nli_batch_size}")


def evaluate(
    items: Sequence[Mapping[str, Any]],
    config: AlceEvalConfig,
    nli: NLIScorer | None = None,
    qa: QAFunction | None = None,
) -> dict[str, float]:
    """ALCE's score dict for `items`. `nli` / `qa` are built from the config when needed and not given."""
    check_items(items, citations=config.citations)
    split = sentence_splitter(config.sentence_splitter)
    data = [dict(item, output=first_line(item["output"])) for item in items]
    plain = [remove_citations(item["output"]) for item in data]  # every metric but citations ignores [k]
    scores: dict[str, float] = {"length": answer_length(plain)}
    if _present_in_all(data, "qa_pairs"):
        scores["str_em"], scores["str_hit"] = str_em_hit(plain, [qa_pairs_of(item) for item in data])
    else:
        logger.warning("no qa_pairs in the items (not ASQA?): str_em / str_hit skipped")
    if config.no_rouge:
        pass
    elif _present_in_all(data, "annotations") or _present_in_all(data, "answer"):
        best = rouge_lsum_scores(plain, [references_of(item) for item in data], split)
        mean = 100 * sum(best) / len(best)
        if config.rouge == "mean":
            scores["rougeLsum"] = mean
        else:
            scores["rougeLsum"] = 100 * bootstrap_median(best, config.rouge_seed)
            logger.info(
                "rougeLsum: %.4f (ALCE's bootstrap median, seed %d); plain mean %.4f (--rouge mean)",
                scores["rougeLsum"],
                config.rouge_seed,
                mean,
            )
    else:
        logger.warning("no annotations / answer in the items: rougeLsum skipped")
    if config.qa:
        scores.update(qa_scores(plain, data, qa or hf_qa_function(config.qa_model, config.device)))
    if config.mauve:
        value = mauve_score(*mauve_texts(data, plain), featurize_model=config.mauve_model)
        if value is not None:
            scores["mauve"] = value
    if config.citations or config.claims_nli:
        if nli is None:
            logger.info("loading the NLI model %s (%s)", config.nli_model, config.nli_kind)
            nli = load_nli(
                config.nli_model,
                config.nli_kind,
                batch_size=config.nli_batch_size,
                device=config.device,
                dtype=config.dtype,
            )
        if config.citations:
            scores.update(
                citation_scores(data, [item["output"] for item in data], nli, split, config.at_most_citations)
            )
        if config.claims_nli:
            scores["claims_nli"] = claims_nli(data, plain, nli)
    return scores


def generator_of(config: Mapping[str, Any]) -> str | None:
    """Which runner produced a generation file, from its config: "self-rag" (run_long_form_static.py: beam_width,
    no top_n), "baseline" (run_baseline_lm.py: top_n), else None."""
    if "top_n" in config:
        return "baseline"
    if "beam_width" in config:
        return "self-rag"
    return None


def summary(
    scores: Mapping[str, float], n_items: int, source_config: Mapping[str, Any] | None, eval_config: Any
) -> dict:
    """A results-format record of the scores (fractions, like `metric_mean` elsewhere) for the results table."""
    metrics = {k: (v / 100 if k in PERCENT_KEYS else v) for k, v in scores.items()}
    main = "str_em" if "str_em" in metrics else "rougeLsum" if "rougeLsum" in metrics else None
    return {
        "runner": "alce",
        "metric": main,
        "metric_mean": metrics.get(main) if main else None,
        "metrics": metrics,
        "alce_scores": dict(scores),
        "n_items": n_items,
        "generator": generator_of(source_config or {}),
        "config": dict(source_config or {}),
        "eval_config": copy.deepcopy(vars(eval_config)),
    }


def evaluate_file(config: AlceEvalConfig, nli: NLIScorer | None = None, qa: QAFunction | None = None) -> dict:
    """Score `config.f`, write `<f>.score` (ALCE's file) and, with `result_fp`, the summary; return the scores."""
    from selfrag.data import load_items, write_json_atomic

    items = load_items(config.f)
    scores = evaluate(items, config, nli=nli, qa=qa)
    write_json_atomic(config.f + ".score", scores)
    logger.info("scores of %s (%d items): %s", config.f, len(items), scores)
    if config.result_fp:
        write_json_atomic(config.result_fp, summary(scores, len(items), run_config(config.f), config))
    return scores
