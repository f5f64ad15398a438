"""Shared command-line plumbing: dataclass configs as flags, `--config x.yaml` layered below them, logging."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import field
from typing import Any, TypeVar

from selfrag.errors import ConfigError, SelfRagError

T = TypeVar("T")


def flag(help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse's keyword
    """A dataclass field that becomes a command-line flag with this help text (`metadata` may add `aliases`)."""
    return field(metadata={"help": help, **kwargs.pop("metadata", {})}, **kwargs)


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with one format; called by scripts only, never by the library."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)


def parse_config(cls: type[T], argv: Sequence[str] | None, description: str | None = None) -> T:
    """Parse flags into the dataclass `cls`. `--config file.yaml` sets defaults that flags override.

    Unknown flags and unknown yaml keys are errors.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(cls, description=description)
    parser.add_argument("--config", default=None, help="YAML file of flag values; flags given on the command line win.")
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        import yaml

        with open(pre.config, encoding="utf-8") as handle:
            values: dict[str, Any] = yaml.safe_load(handle) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{pre.config}: unknown keys {unknown}")
        parser.set_defaults(**values)
    namespace = parser.parse_args(argv)
    fields = {k: v for k, v in vars(namespace).items() if k != "config"}
    return cls(**fields)


def run_main(main_fn, argv: Sequence[str] | None) -> int:
    """Call `main_fn(argv)`, turning a `SelfRagError` into a one-line message and exit status 2."""
    try:
        return main_fn(argv)
    except SelfRagError as err:
        logging.getLogger("selfrag").error("%s: %s", type(err).__name__, err)
        return 2
