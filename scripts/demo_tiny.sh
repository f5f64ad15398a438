#!/usr/bin/env bash
# Fresh machine -> short-form Self-RAG on the shipped PopQA sample, on CPU, in a few minutes.
#   bash scripts/demo_tiny.sh
# The model is a tiny *random* Self-RAG-shaped Llama (no model hub here): the run shows the whole pipeline
# (adaptive retrieval decision, one answer per passage, IsRel/IsSup/IsUse scoring, output file), not good answers.
# With a GPU and the hub: MODEL=selfrag/selfrag_llama2_7b BACKEND=vllm bash scripts/demo_tiny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MODEL=${MODEL:-.cache/tiny-selfrag}
BACKEND=${BACKEND:-hf}
if [ "$MODEL" = .cache/tiny-selfrag ]; then .venv/bin/python scripts/build_tiny_model.py --output_dir "$MODEL"; fi
.venv/bin/python retrieval_lm/run_short_form.py --model_name "$MODEL" --backend "$BACKEND" \
    --input_file eval_data/popqa_longtail_w_gs.jsonl --output_file results/popqa_demo.json \
    --mode adaptive_retrieval --threshold 0.2 --ndocs 5 --max_new_tokens 20 \
    --use_groundness --use_utility --use_seqscore --metric match --dtype float32
.venv/bin/python - <<'PY'
import json
out = json.load(open("results/popqa_demo.json"))
for q, pred, ret, p in list(zip(out["prompts"], out["preds"], out["retrieve"], out["retrieval_probs"]))[:3]:
    print(f"{q.splitlines()[1]!r} -> retrieve={ret} (p={p:.3f}) answer={pred!r}")
print(f"match={out['metric_mean']:.3f} retrieval_frequency={out['retrieval_frequency']:.2f} -> results/popqa_demo.json")
PY
