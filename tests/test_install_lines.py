"""requirements.txt and environment.yml install what the scripts import at run time (the original's README installs
from them): every extra of pyproject.toml but the GPU-only vllm, the quickstart's and the developers'; vllm and
faiss-gpu stay GPU lines, commented as such."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("faiss-cpu", "accelerate", "deepspeed", "openai", "tensorboard")  # the ones the reliability sweep missed
NOT_IN_REQUIREMENTS = ("vllm", "quickstart", "dev")  # extras: GPU only, the offline demo's, the developers'


def requirement_lines(lines: list[str]) -> dict[str, str]:
    """name -> the line, for every line that is a requirement (not a comment, not `-e .`)."""
    found = {}
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            found[Requirement(text).name] = text
    return found


def expected() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra, requirements in project["optional-dependencies"].items():
        if extra not in NOT_IN_REQUIREMENTS:
            lines += requirements
    return requirement_lines(lines)


def test_requirements_txt_lists_every_runtime_package():
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = requirement_lines(lines)
    assert set(RUNTIME) <= set(listed)
    wanted = expected()  # pyproject.toml's dependencies and extras: each listed, with the same version bounds
    assert {name: listed.get(name) for name in wanted} == wanted
    for gpu in ("vllm", "faiss-gpu"):
        assert gpu not in listed
        comments = [line for line in lines if line.lstrip().startswith(f"# {gpu}")]
        assert len(comments) == 1 and "GPU" in comments[0], gpu


def test_environment_yml_installs_the_same_plus_vllm_for_gpu_machines():
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    env = yaml.safe_load(text)
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = requirement_lines(pip)
    requirements = requirement_lines((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert {k: v for k, v in listed.items() if k != "vllm"} == requirements
    assert "-e ." in pip
    vllm_line = next(line for line in text.splitlines() if line.strip().startswith("- vllm"))
    assert "GPU" in vllm_line
    assert "faiss-gpu" not in [d for d in env["dependencies"] if isinstance(d, str)]  # commented: it replaces faiss-cpu
    assert any(line.strip() == "# - faiss-gpu" for line in text.splitlines())
