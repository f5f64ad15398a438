"""An offline Self-RAG on a real small model: corpus, training data, the trained adapter, and the demo loop.

`python -m selfrag.quickstart` (or `selfrag quickstart`) runs the demo (`run`); `python -m selfrag.quickstart.build`
rebuilds the adapter (`build`); `facts` is the corpus and the questions, `data` the training data, `evaluate` the
held-out measurement of the reflection tokens, `export` the generator as a plain HF folder (`--export DIR`).
"""


def main(argv=None) -> int:
    from selfrag.quickstart.run import main as run_main

    return run_main(argv)
