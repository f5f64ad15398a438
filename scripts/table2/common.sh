# Shared by the Table 2 scripts (sourced, not run): paths and models come from the environment, with defaults.
# DRY_RUN=1 prints each command (shell-quoted) instead of running it.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."  # the repository root
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
: "${EVAL_DATA:=eval_data}"          # the authors' eval files (eval_data/ holds small samples of the same formats)
: "${RESULTS_DIR:=results}"          # one <cell>.json per cell, for selfrag eval --table
: "${GEN_DIR:=generations}"          # long-form answers (ASQA, Bio) before scoring; kept out of RESULTS_DIR
: "${EXTRA_ARGS:=}"                  # appended to every generation command, e.g. "--backend hf --limit 5"
: "${NLI_MODEL:=google/t5_xxl_true_nli_mixture}"  # ALCE's citation NLI model
: "${NLI_KIND:=true}"                # true (seq2seq TRUE) or seq-cls (any NLI classifier)
: "${MAUVE_MODEL:=gpt2-large}"       # MAUVE's featurizer (ALCE's); MAUVE needs pip install mauve-text
: "${FACTSCORE_PYTHON:=$PYTHON}"     # an environment with factscore installed (it needs torch<2, openai<0.28)
: "${FACTSCORE_JUDGE:=retrieval+ChatGPT}"
: "${OPENAI_KEY_FILE:=api.key}"      # FactScore reads its OpenAI key from a file; ChatGPT rows use OPENAI_API_KEY
: "${FACTSCORE_DATA_DIR:=.cache/factscore/}"

run() {
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "$@"
    printf '\n'
  else
    mkdir -p "$RESULTS_DIR" "$GEN_DIR"
    "$@"
  fi
}
