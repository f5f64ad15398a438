"""`python -m selfrag <command> [flags]`: the `selfrag` command (selfrag/commands.py)."""

from __future__ import annotations

import sys

from selfrag.commands import main

if __name__ == "__main__":
    sys.exit(main())
