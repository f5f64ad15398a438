"""`python -m selfrag.server`: the server's `main`."""

import sys

from selfrag.cli import program, run_main
from selfrag.server.app import main

if __name__ == "__main__":
    with program("python -m selfrag.server"):
        sys.exit(run_main(main, None))
