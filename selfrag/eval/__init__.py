"""Evaluation: the runs that produce result files and the scorers that read them (imported on use; this package
imports nothing at import time).

- `short_form`: the short-form run (PopQA, TriviaQA, PubHealth, ARC; `selfrag infer`, run_short_form.py); the
  algorithm itself is `selfrag.decoding.short_form`.
- `long_form`: the long-form run (ASQA, ELI5, FactScore; `selfrag long-form`, run_long_form[_static].py); the beam
  search is `selfrag.decoding.long_form`.
- `baseline`: the baseline LM run (`selfrag baseline`, run_baseline_lm.py).
- `metrics`: match / accuracy / exact match / F1.
- `alce`: ALCE's ASQA / ELI5 metrics (scripts/eval_alce.py); `alce_models`: its QA and MAUVE extras; `alce_items`:
  the item fields both read; `nli`: the entailment scorers.
- `factscore`: FactScore input and score files (scripts/eval_factscore.py).
- `results_table`: the paper's Table 2 and the threshold sweep (`selfrag eval --table`).
- `data`: `prepare_eval_file` (scripts/prepare_eval_data.py) over `formats` (the expected form of each eval file),
  `check` (deviations, with file:line) and `convert` (known variants into the expected form).
"""
