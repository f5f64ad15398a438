"""Every golden case (tests/golden_runs.py) gives byte for byte the output committed in tests/golden/."""

from __future__ import annotations

import pytest

from golden_runs import CASES, golden_path, produce


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_equals_the_committed_golden_file(name):
    expected = golden_path(name).read_text(encoding="utf-8")
    assert produce(name) == expected, f"{name} changed; if intended, run python tests/golden_runs.py --write"
