"""selfrag/eval/alce.py and scripts/eval_alce.py: ALCE's ASQA metrics on hand-made answers with hand-derived numbers,
and the NLI plumbing with tiny HF models built in code (a BERT classifier and a T5 'TRUE' model)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from selfrag.errors import ConfigError, DataFormatError
from selfrag.eval.alce import (
    AlceEvalConfig,
    CallableNLI,
    SeqClsNLI,
    TrueNLI,
    bootstrap_median,
    citation_ids,
    citation_scores,
    claims_nli,
    entailment_label,
    evaluate,
    exact_presence,
    first_line,
    format_document,
    references_of,
    regex_sentences,
    remove_citations,
    rouge_lsum,
    rouge_lsum_scores,
    str_em_hit,
)
from selfrag.eval.alce_models import mauve_texts, qa_scores

ROOT = Path(__file__).resolve().parent.parent
ASQA = ROOT / "eval_data" / "asqa_eval_gtr_top100.json"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("/", "_"), ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(**kwargs) -> AlceEvalConfig:
    return AlceEvalConfig(f="unused.json", sentence_splitter="regex", **kwargs)


# ------------------------------------------------------------------------------------------------- text helpers


def test_citation_marks():
    assert remove_citations("Paris is the capital [1][2]. It is big [3].") == "Paris is the capital. It is big."
    assert citation_ids("A [2][1] and [12].") == [1, 0, 11]
    assert citation_ids("no citation.") == []
    assert first_line("  Answer one [1].\nSecond line<|im_end|>") == "Answer one [1]."
    assert format_document({"title": "Paris", "text": "Capital of France."}) == "Title: Paris\nCapital of France."


def test_regex_sentences():
    text = (
        'Cohen wrote it [1][3]. Handel composed it [2]. Dr. Who met J. R. R. Tolkien in the U.S. Army. "Yes!" she said.'
    )
    assert regex_sentences(text) == [
        "Cohen wrote it [1][3].",
        "Handel composed it [2].",
        "Dr. Who met J. R. R. Tolkien in the U.S. Army.",
        '"Yes!"',
        "she said.",
    ]
    assert regex_sentences("the dog sat. the cat barked.") == ["the dog sat.", "the cat barked."]
    assert regex_sentences("") == []
    assert regex_sentences("No final stop") == ["No final stop"]


# ------------------------------------------------------------------------------------------------ str-em, rouge

QA_PAIRS = [
    [["Leonard Cohen"], ["George Frideric Handel", "Handel"], ["Kobi Oshrat", "Shimrit Orr"]],
    [["The Beatles"]],
]


def test_str_em_and_hit_by_hand():
    outputs = ["Leonard Cohen wrote it. The chorus is by Handel.", "It was beatles!"]
    # item 0: Cohen and Handel found, Eurovision not: 2/3, no hit; item 1: "beatles" after normalisation: 1, hit.
    em, hit = str_em_hit(outputs, QA_PAIRS)
    assert em == pytest.approx(100 * (2 / 3 + 1) / 2)  # 83.33
    assert hit == 50.0


def test_exact_presence_is_a_normalised_substring_test():
    assert exact_presence(["Handel"], "Handelsblatt reported it")  # lenient, as ALCE
    assert exact_presence(["U.S."], "the US army")
    assert exact_presence(["The Beatles"], "by beatles")
    assert not exact_presence(["Kobi Oshrat"], "Kobi wrote it")


def test_rouge_lsum_by_hand():
    # Summary-level LCS: ref "the cat sat on the mat" gets {the, cat, sat} from the two hypothesis sentences, "the
    # dog barked" gets {the, dog, barked}: 6 hits; P = 6/6, R = 6/9, F = 0.8. The second reference scores lower.
    # Item 2: "the cat sat" vs "the cat sat on the mat": P = 1, R = 1/2, F = 2/3. Mean x100 = 73.33.
    outputs = ["The dog sat. The cat barked.", "The cat sat."]
    refs = [["The cat sat on the mat. The dog barked.", "Something else entirely."], ["The cat sat on the mat."]]
    assert rouge_lsum(outputs, refs, regex_sentences) == pytest.approx(100 * (0.8 + 2 / 3) / 2)


def test_evaluate_plain_metrics_on_hand_made_items():
    items = [
        {
            "output": "Leonard Cohen wrote it [1]. The chorus is by Handel [2].\nignored second line",
            "qa_pairs": [{"short_answers": a} for a in QA_PAIRS[0]],
            "annotations": [{"long_answer": "Leonard Cohen wrote it. The chorus is by Handel."}],
        },
        {
            "output": "It was beatles!",
            "qa_pairs": [{"short_answers": a} for a in QA_PAIRS[1]],
            "annotations": [{"long_answer": "Nothing alike here."}, {"long_answer": "It was the Beatles."}],
        },
    ]
    scores = evaluate(items, config())
    assert set(scores) == {"length", "str_em", "str_hit", "rougeLsum"}
    assert scores["length"] == (9 + 3) / 2  # citations removed, second line dropped
    assert scores["str_em"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["str_hit"] == 50.0
    # item 0 is identical to its reference (F = 1); item 1: "it was beatles" vs "it was the beatles": LCS 3,
    # P = 3/3, R = 3/4, F = 6/7.
    assert scores["rougeLsum"] == pytest.approx(100 * (1 + 6 / 7) / 2)


def alce_rouge(items: list[dict], outputs: list[str], seed: int) -> float:
    """ALCE eval.py's compute_rouge, step by step as it runs it (the references annotations[0] and [1], the better
    one's scores added to rouge-score's BootstrapAggregator, its `mid`), with numpy's generator seeded first."""
    import numpy as np
    from rouge_score import rouge_scorer, scoring

    def lines(text: str) -> str:
        return "\n".join(regex_sentences(text.lower()))

    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    aggregator = scoring.BootstrapAggregator()
    for item, output in zip(items, outputs):
        scores1 = scorer.score(lines(item["annotations"][0]["long_answer"]), lines(output))
        scores2 = scorer.score(lines(item["annotations"][1]["long_answer"]), lines(output))
        better = scores1["rougeLsum"].fmeasure > scores2["rougeLsum"].fmeasure
        aggregator.add_scores(scores1 if better else scores2)
    np.random.seed(seed)
    return 100 * aggregator.aggregate()["rougeLsum"].mid.fmeasure


def asqa_answers(items: list[dict]) -> list[str]:
    """Answers of uneven quality: the first sentence or two of one reference, or the question itself."""
    answers = []
    for k, item in enumerate(items):
        long_answer = item["annotations"][k % 2]["long_answer"]
        answers.append(item["question"] if k == 3 else ". ".join(long_answer.split(". ")[: 1 + k % 3]))
    return answers


def test_rouge_is_alces_seeded_bootstrap_median_by_default(caplog):
    import numpy as np

    items = json.loads(ASQA.read_text(encoding="utf-8"))
    data = [dict(item, output=answer) for item, answer in zip(items, asqa_answers(items))]
    plain = [remove_citations(first_line(d["output"])) for d in data]
    mean = 100 * sum(rouge_lsum_scores(plain, [references_of(d) for d in data], regex_sentences)) / len(data)
    state = np.random.get_state()
    with caplog.at_level(logging.INFO):
        scores = evaluate(data, config())
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator is left alone
    assert scores["rougeLsum"] == pytest.approx(alce_rouge(items, plain, seed=0), rel=1e-12)
    assert f"plain mean {mean:.4f} (--rouge mean)" in caplog.text
    # seeded: a rerun agrees; another seed is ALCE with that seed (with seed 0 the median of these six items happens
    # to land on their mean; with 1 and 7 it does not)
    assert evaluate(data, config())["rougeLsum"] == scores["rougeLsum"]
    for seed in (1, 7):
        other = evaluate(data, config(rouge_seed=seed))["rougeLsum"]
        assert other == pytest.approx(alce_rouge(items, plain, seed), rel=1e-12)
        assert other != pytest.approx(mean, rel=1e-4)
    np.random.set_state(state)  # alce_rouge seeded it
    assert evaluate(data, config(rouge="mean"))["rougeLsum"] == pytest.approx(mean)
    assert bootstrap_median([0.25] * 5, seed=3) == 0.25


def test_shipped_asqa_sample_has_every_field_alces_eval_reads():
    """ALCE's eval.py reads annotations[0] and annotations[1] (an IndexError with one), qa_pairs' short_answers,
    question and answer (MAUVE), docs' title and text (citations); the shipped sample gives it all of them."""
    items = json.loads(ASQA.read_text(encoding="utf-8"))
    for item in items:
        assert len(item["annotations"]) >= 2
        first, second = (item["annotations"][k]["long_answer"] for k in (0, 1))
        assert isinstance(first, str) and isinstance(second, str) and first != second
        assert item["answer"] == first and isinstance(item["question"], str)
        for pair in item["qa_pairs"]:  # both references name every disambiguated answer
            assert all(exact_presence(pair["short_answers"], text) for text in (first, second))
        assert all(isinstance(d["title"], str) and isinstance(d["text"], str) for d in item["docs"])


def test_qa_scores_with_a_callable_reader():
    items = [
        {
            "qa_pairs": [
                {"question": "q1", "short_answers": ["Leonard Cohen"]},
                {"question": "q2", "short_answers": ["Handel"]},
            ]
        }
    ]
    answers = {"q1": "Cohen", "q2": "Handel"}
    scores = qa_scores(["text"], items, lambda questions, context: [answers[q] for q in questions])
    # q1: EM 0, F1 = 2 * (1/1 * 1/2) / (1 + 1/2) = 2/3; q2: EM 1, F1 1.
    assert scores == pytest.approx({"QA-EM": 50.0, "QA-F1": 100 * (2 / 3 + 1) / 2, "QA-Hit": 0.0})


def test_mauve_texts_and_skip_without_the_package(caplog):
    items = [{"question": "Who?", "annotations": [{"long_answer": " Cohen wrote it. "}], "output": "Cohen [1]."}]
    assert mauve_texts(items, ["Cohen wrote it!!"]) == (["Who? Cohen wrote it"], ["Who? Cohen wrote it"])
    long_answer = " ".join(f"w{i}" for i in range(150))
    human, _ = mauve_texts([{"question": "Q", "answer": long_answer}], ["x"])
    assert human[0].split() == ["Q"] + [f"w{i}" for i in range(99)]
    if importlib.util.find_spec("mauve") is None:
        with caplog.at_level(logging.WARNING):
            scores = evaluate([dict(items[0], qa_pairs=[{"short_answers": ["Cohen"]}])], config(mauve=True))
        assert "mauve" not in scores
        assert "mauve-text package is not installed" in caplog.text


# ------------------------------------------------------------------------------------------------------ citations

REQUIRED = {  # the words a premise must contain to entail each sentence (the test's NLI rule)
    "Leonard Cohen wrote the song.": ["Cohen"],
    "Handel composed the chorus.": ["Handel"],
    "It is famous.": ["famous"],
    "Handel and Cohen both wrote a Hallelujah.": ["Handel", "Cohen"],
    "Cohen was Canadian.": ["Canadian"],
    "Nothing cited here.": ["nothing"],
    "Paris is the capital of France.": ["Paris"],
}
COHEN = {"title": "Hallelujah", "text": "Leonard Cohen wrote Hallelujah in 1984."}
HANDEL = {"title": "Messiah", "text": "Handel composed Messiah."}
FRANCE = {"title": "France", "text": "Lyon is in France."}
CAPITALS = [{"title": t, "text": f"{t} is a city."} for t in ("Berlin", "Rome", "Madrid")]
CITATION_ITEMS = [
    # A: s1 cites [1][3]: jointly entailed; [3] alone fails and [1] alone still entails -> [3] redundant.
    #    s2 cites [2]: entailed, relevant. s3: no citation, unsupported. recall 2/3, precision 2/3.
    {
        "output": "Leonard Cohen wrote the song [1][3]. Handel composed the chorus [2]. It is famous.",
        "docs": [COHEN, HANDEL, FRANCE],
    },
    # B: s1 cites [2][1]: both needed (neither alone, nor the other alone, entails) -> both relevant.
    #    s2 cites [4] of 2 docs: unsupported, its citation not counted. recall 1/2, precision 2/2.
    {"output": "Handel and Cohen both wrote a Hallelujah [2][1]. Cohen was Canadian [4].", "docs": [HANDEL, COHEN]},
    # C: one sentence, no citation: recall 0, precision 0 (no citation counted).
    {"output": "Nothing cited here.", "docs": [COHEN]},
    # D: four citations; with at most 3 the Paris passage is cut: unsupported, recall 0, precision 0/3.
    #    With all four: supported; Berlin, Rome, Madrid are each redundant: recall 1, precision 1/4.
    {
        "output": "Paris is the capital of France [1][2][3][4].",
        "docs": CAPITALS + [{"title": "Paris", "text": "Paris is the capital of France."}],
    },
    # E: no sentence at all: left out of both means (ALCE).
    {"output": "", "docs": [COHEN]},
    # F: [9] does not exist: unsupported, no citation counted, although the cap of 3 would drop it (ALCE checks
    #    the range first): recall 0, precision 0.
    {
        "output": "Paris is the capital of France [4][1][2][9].",
        "docs": CAPITALS + [{"title": "Paris", "text": "Paris is the capital of France."}],
    },
]


class CountingNLI(CallableNLI):
    def __init__(self, fn):
        super().__init__(fn)
        self.batches = 0

    def entails(self, premises, hypotheses):
        self.batches += 1
        return super().entails(premises, hypotheses)


def rule_nli() -> CountingNLI:
    return CountingNLI(lambda premise, hypothesis: all(w in premise for w in REQUIRED[hypothesis]))


def test_citation_recall_and_precision_by_hand():
    nli = rule_nli()
    outputs = [item["output"] for item in CITATION_ITEMS]
    scores = citation_scores(CITATION_ITEMS, outputs, nli, regex_sentences, at_most_citations=3)
    # recall (A 2/3 + B 1/2 + C 0 + D 0 + F 0) / 5 = 7/30; precision (2/3 + 1 + 0 + 0 + 0) / 5 = 1/3
    assert scores == pytest.approx({"citation_rec": 100 * 7 / 30, "citation_prec": 100 / 3})
    # batched rounds: joint support, then each citation alone; the leave-one-out round needs no call here, since
    # with two citations "the others" is one passage alone, already asked. Each distinct pair is asked once.
    assert nli.batches == 2
    assert len(nli.calls) == len(set(nli.calls))
    assert (
        "Title: Hallelujah\nLeonard Cohen wrote Hallelujah in 1984.\nTitle: France\nLyon is in France.",
        "Leonard Cohen wrote the song.",
    ) in nli.calls


def test_citation_scores_without_the_cap():
    outputs = [item["output"] for item in CITATION_ITEMS]
    scores = citation_scores(CITATION_ITEMS, outputs, rule_nli(), regex_sentences, at_most_citations=None)
    # D now: recall 1, precision 1/4. recall (2/3 + 1/2 + 0 + 1 + 0) / 5 = 13/30; precision (2/3 + 1 + 0 + 1/4 + 0) / 5
    # = 23/60
    assert scores == pytest.approx({"citation_rec": 100 * 13 / 30, "citation_prec": 100 * 23 / 60})


def test_claims_nli():
    items = [{"claims": ["Cohen", "Handel"]}, {"claims": ["Paris"]}]
    nli = CallableNLI(lambda premise, claim: claim in premise)
    assert claims_nli(items, ["Cohen wrote it.", "Paris."], nli) == pytest.approx(100 * (1 / 2 + 1) / 2)


# ------------------------------------------------------------------------------------------------------ bad input


def test_missing_fields_name_the_item_and_field():
    items = [{"output": "x", "docs": []}, {"docs": []}]
    for item, _ in zip(items, range(2)):
        item["_where"] = f"res.json: item {items.index(item)}"
    with pytest.raises(DataFormatError, match=r"res.json: item 1: missing field 'output'"):
        evaluate(items, config())
    with pytest.raises(DataFormatError, match=r"item 0: missing field 'docs'; --citations needs"):
        evaluate([{"output": "x", "_where": "item 0"}], config(citations=True), nli=rule_nli())
    half = [{"output": "a", "qa_pairs": [{"short_answers": ["a"]}]}, {"output": "b", "_where": "res.json: item 1"}]
    with pytest.raises(DataFormatError, match=r"item 1: missing field 'qa_pairs' \(other items have it\)"):
        evaluate(half, config())
    bad_pairs = [{"output": "a", "qa_pairs": [{"question": "q"}], "_where": "res.json: item 0"}]
    with pytest.raises(DataFormatError, match=r"item 0: qa_pairs\[0\] has no list of strings 'short_answers'"):
        evaluate(bad_pairs, config())
    with pytest.raises(ConfigError, match="--f"):
        AlceEvalConfig()


# ------------------------------------------------------------------------------------------- tiny HF NLI models

WORDS = "premise : hypothesis title leonard cohen wrote hallelujah handel composed messiah paris is the capital".split()


def _word_tokenizer(special: list[str], seq2seq: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(special + ["0", "1"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]" if not seq2seq else "<unk>"))
    tok.normalizer = __import__("tokenizers").normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if seq2seq:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def build_tiny_bert_nli(path: Path, id2label: dict[int, str], bias_to: str | None = None, seed: int = 0) -> Path:
    """A tiny BertForSequenceClassification; `bias_to` makes it always predict that label (zero weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = _word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], seq2seq=False)
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        initializer_range=1.0,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = BertForSequenceClassification(cfg)
    if bias_to is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(
                torch.tensor([10.0 if id2label[i] == bias_to else 0.0 for i in range(len(id2label))])
            )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build_tiny_true_t5(path: Path, answer: str | None, seed: int = 0) -> Path:
    """A tiny T5. With `answer` ("1" or "0") it generates exactly that token then </s>, whatever the input: every
    decoder layer's output projection is zero, so the decoder state is the (normalised) embedding of the previous
    token, and the tied embedding / output matrix E makes E[start] -> `answer` and E[answer] -> </s> the argmax:
    E[<pad>] = (1, 0), E[answer] = (2, 1), E[</s>] = (0, 6), other rows 0. Step 1 logits ~ E . (1, 0): pad 1,
    answer 2, </s> 0; step 2 ~ E . (2, 1): pad 2, answer 5, </s> 6. Without `answer` it is random."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tok = _word_tokenizer(["<pad>", "</s>", "<unk>"], seq2seq=True)
    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = T5ForConditionalGeneration(cfg)
    if answer is not None:
        target = tok.convert_tokens_to_ids(answer)
        with torch.no_grad():
            for name, param in model.decoder.named_parameters():
                if name.endswith(("SelfAttention.o.weight", "EncDecAttention.o.weight", "DenseReluDense.wo.weight")):
                    param.zero_()
            emb = torch.zeros(len(tok), 16)
            emb[0, 0] = 1.0
            emb[target, :2] = torch.tensor([2.0, 1.0])
            emb[1, 1] = 6.0
            model.shared.weight.copy_(emb)
            model.lm_head.weight.copy_(emb)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


PAIRS = (
    [
        "Title: Hallelujah\nLeonard Cohen wrote Hallelujah",
        "Paris",
        "Title: Messiah\nHandel composed Messiah the capital",
        "is",
    ],
    ["Cohen wrote Hallelujah", "Paris is the capital", "Handel composed", "the the the"],
)


@pytest.mark.parametrize(
    "id2label, expected",
    [
        ({0: "contradiction", 1: "neutral", 2: "entailment"}, 2),
        ({0: "ENTAILMENT", 1: "NOT_ENTAILMENT"}, 0),
        ({0: "not_entailment", 1: "entailment"}, 1),
    ],
)
def test_entailment_label(id2label, expected):
    assert entailment_label(id2label) == expected


def test_entailment_label_missing():
    with pytest.raises(ConfigError, match="cannot find the entailment class"):
        entailment_label({0: "LABEL_0", 1: "LABEL_1"})


def test_seq_cls_nli_batched_equals_direct(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = build_tiny_bert_nli(tmp_path / "bert", {0: "contradiction", 1: "entailment", 2: "neutral"}, seed=0)
    nli = SeqClsNLI(str(path), batch_size=3, device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    direct = []
    for premise, hypothesis in zip(*PAIRS):
        with torch.no_grad():
            direct.append(int(model(**tok(premise, hypothesis, return_tensors="pt")).logits.argmax()) == 1)
    assert nli.entails(*map(list, PAIRS)) == direct
    assert len(set(direct)) == 2, "the random model should give both decisions, else the test shows little"


def test_seq_cls_nli_deterministic(tmp_path):
    labels = {0: "ENTAILMENT", 1: "NOT_ENTAILMENT"}
    yes = SeqClsNLI(str(build_tiny_bert_nli(tmp_path / "yes", labels, bias_to="ENTAILMENT")), device="cpu")
    no = SeqClsNLI(str(build_tiny_bert_nli(tmp_path / "no", labels, bias_to="NOT_ENTAILMENT")), device="cpu")
    assert yes.entails(*map(list, PAIRS)) == [True] * 4
    assert no.entails(*map(list, PAIRS)) == [False] * 4


def test_true_nli_batched_equals_direct(tmp_path):
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = build_tiny_true_t5(tmp_path / "t5", answer=None, seed=1)
    nli = TrueNLI(str(path), batch_size=3, device="cpu")
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    direct = []
    for premise, hypothesis in zip(*PAIRS):
        ids = tok(f"premise: {premise} hypothesis: {hypothesis}", return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=10, do_sample=False)
        direct.append(tok.decode(out[0], skip_special_tokens=True))
    assert nli.generate_texts(*map(list, PAIRS)) == direct
    assert nli.entails(*map(list, PAIRS)) == [text.strip() == "1" for text in direct]


def test_true_nli_deterministic(tmp_path):
    yes = TrueNLI(str(build_tiny_true_t5(tmp_path / "yes", answer="1")), device="cpu")
    no = TrueNLI(str(build_tiny_true_t5(tmp_path / "no", answer="0")), device="cpu")
    assert yes.generate_texts(*map(list, PAIRS)) == ["1"] * 4
    assert yes.entails(*map(list, PAIRS)) == [True] * 4
    assert no.entails(*map(list, PAIRS)) == [False] * 4


# ------------------------------------------------------------------------------------------------- CLI end to end


def write_result_file(tmp_path: Path) -> Path:
    """Two ASQA items in run_long_form_static.py's output format, with a config beside it."""
    items = json.loads(ASQA.read_text(encoding="utf-8"))[:2]
    items[0]["output"] = (
        "Leonard Cohen wrote Hallelujah [1]. Handel composed the Messiah chorus [2][3]. Kobi Oshrat wrote the 1979 winner."
    )
    items[0]["docs"] = items[0]["docs"][:3]
    items[1]["output"] = "Gene Wilder played him."
    items[1]["docs"] = items[1]["docs"][:2]
    path = tmp_path / "asqa_selfrag-7b.json"
    path.write_text(
        json.dumps({"data": items, "args": [], "total_cost": 0.0, "azure_filter_fail": ""}), encoding="utf-8"
    )
    (tmp_path / "asqa_selfrag-7b.json.config.json").write_text(
        json.dumps({"model_name": "selfrag/selfrag_llama2_7b", "task": "asqa", "mode": "always_retrieve"}),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("kind", ["seq-cls", "true"])
def test_cli_end_to_end(tmp_path, kind):
    from rouge_score import rouge_scorer

    path = write_result_file(tmp_path)
    if kind == "seq-cls":
        model = build_tiny_bert_nli(
            tmp_path / "nli", {0: "contradiction", 1: "neutral", 2: "entailment"}, bias_to="entailment"
        )
    else:
        model = build_tiny_true_t5(tmp_path / "nli", answer="1")
    summary_path = tmp_path / "results" / "asqa_selfrag-7b.json"
    script = load_script("scripts/eval_alce.py")
    argv = ["--f", str(path), "--citations", "--nli_model", str(model), "--nli_kind", kind, "--device", "cpu"]
    assert script.main(argv + ["--sentence_splitter", "regex", "--result_fp", str(summary_path)]) == 0

    scores = json.loads((tmp_path / "asqa_selfrag-7b.json.score").read_text())
    items = json.loads(path.read_text())["data"]
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    rouge = [  # the better of the item's two annotations, as ALCE picks
        max(
            scorer.score(
                "\n".join(regex_sentences(item["annotations"][k]["long_answer"].lower())),
                "\n".join(regex_sentences(remove_citations(item["output"]).lower())),
            )["rougeLsum"].fmeasure
            for k in (0, 1)
        )
        for item in items
    ]
    # str-em: item 0 finds all 3 answers, item 1 finds Gene Wilder only (1/3). An always-entailing NLI model:
    # recall = sentences with valid citations (2/3 and 0/1), precision = 3/3 and 0 (no citation).
    assert scores == pytest.approx(
        {
            "length": (15 + 4) / 2,
            "str_em": 100 * (1 + 1 / 3) / 2,
            "str_hit": 50.0,
            "rougeLsum": 100 * sum(rouge) / 2,
            "citation_rec": 100 * (2 / 3) / 2,
            "citation_prec": 50.0,
        }
    )
    summary = json.loads(summary_path.read_text())
    assert summary["metric"] == "str_em" and summary["metric_mean"] == pytest.approx((1 + 1 / 3) / 2)
    assert summary["metrics"]["citation_prec"] == pytest.approx(0.5)
    assert summary["metrics"]["length"] == 9.5
    assert summary["config"] == {"model_name": "selfrag/selfrag_llama2_7b", "task": "asqa", "mode": "always_retrieve"}
    assert summary["n_items"] == 2 and summary["runner"] == "alce"
    assert summary["generator"] is None  # the hand-written config has neither beam_width nor top_n


def test_cli_reports_a_missing_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"question": "q", "output": "a", "docs": []}, {"question": "q2"}]}))
    script = load_script("scripts/eval_alce.py")
    with pytest.raises(DataFormatError, match=r"bad.json: item 1: missing field 'output'"):
        script.main(["--f", str(path)])
    assert not (tmp_path / "bad.json.score").exists()


def test_cli_help(capsys):
    script = load_script("scripts/eval_alce.py")
    with pytest.raises(SystemExit):
        script.main(["--help"])
    out = capsys.readouterr().out
    for name in ("--f", "--citations", "--autoais_citation", "--qa", "--mauve", "--at_most_citations", "--nli_model"):
        assert name in out


def build_tiny_gpt2(path: Path) -> Path:
    """A tiny random GPT-2 (a MAUVE featurizer: mauve-text takes any model whose name contains 'gpt2')."""
    import torch
    from transformers import GPT2Config, GPT2Model

    from selfrag.testing import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=16, n_layer=1, n_head=2, n_positions=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    GPT2Model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_mauve_with_a_tiny_gpt2_featurizer(tmp_path):
    """The real MAUVE path (mauve-text), with a tiny GPT-2 built in code as the featurizer (mauve accepts any model
    whose name contains 'gpt2'): identical text sets score 100, different ones less."""
    pytest.importorskip("mauve")
    from selfrag.eval.alce_models import mauve_score

    build_tiny_gpt2(tmp_path / "tiny-gpt2")
    texts = [f"The capital of France is Paris number {i}." for i in range(12)]
    other = [f"Water boils at {i} degrees Celsius." for i in range(12)]
    assert mauve_score(texts, texts, featurize_model=str(tmp_path / "tiny-gpt2")) == pytest.approx(100.0)
    assert mauve_score(texts, other, featurize_model=str(tmp_path / "tiny-gpt2")) < 50.0


def build_tiny_bert_qa(path: Path) -> Path:
    """A tiny BertForQuestionAnswering that always answers the span "leonard ... cohen" when the context has it, else
    nothing: position / segment embeddings and every layer's output projection are zero, so a token's final state is
    LayerNorm(its word embedding); "leonard" and "cohen" point along the start and end directions of qa_outputs
    (logit 28), [CLS] half-way along both (logit 20), every other word is 0."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    tok = _word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], seq2seq=False)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64,
    )  # fmt: skip
    model = BertForQuestionAnswering(cfg)
    start, end = torch.zeros(16), torch.zeros(16)
    start[:2], end[2:4] = torch.tensor([1.0, -1.0]), torch.tensor([1.0, -1.0])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "output.dense" in name or "position_embeddings" in name or "token_type_embeddings" in name:
                param.zero_()
        words = torch.zeros(len(tok), 16)
        words[tok.convert_tokens_to_ids("leonard")] = start
        words[tok.convert_tokens_to_ids("cohen")] = end
        words[tok.convert_tokens_to_ids("[CLS]")] = 0.5 * (start + end)
        model.bert.embeddings.word_embeddings.weight.copy_(words)
        model.qa_outputs.weight.copy_(5.0 * torch.stack([start, end]))
        model.qa_outputs.bias.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_extractive_qa_with_a_tiny_bert(tmp_path):
    from selfrag.eval.alce_models import hf_qa_function

    path = build_tiny_bert_qa(tmp_path / "qa")
    qa = hf_qa_function(str(path), device="cpu")
    context = "Leonard Cohen wrote Hallelujah . Handel composed Messiah"
    assert qa(["who wrote hallelujah", "who composed messiah"], context) == ["Leonard Cohen", "Leonard Cohen"]
    assert qa(["who wrote hallelujah"], "Handel composed Messiah") == [""]  # [CLS] wins: no answer
    items = [
        {
            "output": context + " [1].",
            "qa_pairs": [
                {"question": "who wrote hallelujah", "short_answers": ["Leonard Cohen"]},
                {"question": "who composed messiah", "short_answers": ["Handel"]},
            ],
        }
    ]
    scores = evaluate(items, config(qa=True, qa_model=str(path), device="cpu", no_rouge=True))
    # q1 exact, q2 answered "Leonard Cohen" (EM 0, F1 0): QA-EM 50, QA-F1 50, QA-Hit 0
    assert scores == pytest.approx(
        {"length": 8.0, "str_em": 100.0, "str_hit": 100.0, "QA-EM": 50.0, "QA-F1": 50.0, "QA-Hit": 0.0}
    )
