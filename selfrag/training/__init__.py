"""Generator training: encoding with context masking, reflection-token vocabulary, padding, the training loop.

`encode`, `collator` and `config` are cheap to import (no torch at import time); `model` and `loop` need torch,
transformers and accelerate (peft for LoRA): `pip install 'selfrag[train]'`. See docs/training.md.
"""
