"""Shared command-line plumbing: dataclass configs as flags, `--config x.yaml` layered below them, logging, and the
resolved-config record written next to every result.

Layering, lowest first: the dataclass defaults, each `--config FILE.yaml` in the order given (a later file wins),
then the flags on the command line. Every config whose command writes results (a field `output_file`, `result_fp`,
`output_file_name` or `output_dir`) gets a record of the fully resolved config, see `record_path`:

    selfrag_version: 0.1.0
    command: [selfrag, infer, --config, popqa.yaml, --threshold, '0.3']
    config: {model_name: ..., threshold: 0.3, ...}          # every field, after yaml and flags and __post_init__

A record is itself a valid `--config` file (its `config` mapping is read), so `--config results/x.json.config.yaml`
repeats a run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import json
import logging
import os
import shlex
import sys
import types
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from selfrag.errors import ConfigError, DataFormatError, SelfRagError

T = TypeVar("T")
logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".config.yaml"
RECORD_KEYS = ("selfrag_version", "command", "config")
REDACTED = "<redacted>"
# Fields that may hold a literal secret; a value naming an existing file (a key file) is kept.
SECRET_FIELDS = frozenset({"api_key"})

# The program name shown in usage lines and records: set by `selfrag <command>` (see `program`), else argv[0].
_PROGRAM: ContextVar[str | None] = ContextVar("selfrag_program", default=None)
# Whether `parse_config` writes the record: on inside `run_main` (every script's and `selfrag`'s entry point), off
# for library and test callers of a script's `main([...])`, which should not leave files beside their outputs.
_RECORD: ContextVar[bool] = ContextVar("selfrag_record_config", default=False)


def flag(help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors argparse's keyword
    """A dataclass field that becomes a command-line flag with this help text (`metadata` may add `aliases`)."""
    return field(metadata={"help": help, **kwargs.pop("metadata", {})}, **kwargs)


def run_only(help: str, **kwargs: Any) -> Any:  # noqa: A002 - mirrors flag()
    """A flag that changes how a run goes (paths, batch sizes, devices) but not its results: left out of
    `fingerprint`."""
    return flag(help, metadata={"run_only": True, **kwargs.pop("metadata", {})}, **kwargs)


def fingerprint(config: Any) -> dict[str, Any]:
    """What a resumed run must match: every field of the dataclass `config` but the `run_only` ones, with a
    `resolved_mode` (if the config has one) standing for `mode`."""
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if not f.metadata.get("run_only")}
    if "mode" in out and hasattr(config, "resolved_mode"):
        out["mode"] = config.resolved_mode
    return out


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr with one format; called by scripts only, never by the library. Third-party lines that are not
    the user's business (faiss's SIMD probing, DeepSpeed's no-GPU notice) are silenced: `selfrag.quiet`."""
    from selfrag.quiet import quiet_third_party

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    quiet_third_party()


@contextlib.contextmanager
def program(name: str) -> Iterator[None]:
    """Within this block, parsers and records name the program `name` (e.g. `selfrag infer`)."""
    token = _PROGRAM.set(name)
    try:
        yield
    finally:
        _PROGRAM.reset(token)


def program_name() -> str:
    return _PROGRAM.get() or invocation()


def invocation() -> str:
    """How this process was started: `python -m selfrag...` for one of this package's modules run with -m (whose
    argv[0] is only its `__main__.py` or file path), else the script's file name (`selfrag`, `run_short_form.py`)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None) or ""
    if name == "selfrag" or name.startswith("selfrag."):
        return "python -m " + name.removesuffix(".__main__")
    return os.path.basename(sys.argv[0]) or "selfrag"


def recording() -> bool:
    """Whether this run writes config records: inside `run_main`, as scripts and `selfrag` commands run."""
    return _RECORD.get()


def parse_config(
    cls: type[T], argv: Sequence[str] | None, description: str | None = None, *, record: bool | None = None
) -> T:
    """Parse flags into the dataclass `cls`; `--config a.yaml [--config b.yaml ...]` set defaults that flags override.

    Unknown flags and unknown yaml keys are errors; yaml values are converted and checked like the flags' values
    (`1e-5` is a float, `mode: bogus` is refused). With `record` (default: when called under `run_main`), the
    resolved config is written next to the command's output (`write_config_record`) before any work starts.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser_class()(cls, description=description, prog=program_name())
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        metavar="YAML",
        help="YAML file of flag values (repeatable: later files win); flags given on the command line win over all.",
    )
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", action="append", default=[])
    config_files = pre.parse_known_args(argv)[0].config
    values: dict[str, Any] = {}
    for path in config_files:
        values.update(load_config_file(path, parser))
    if values:
        for action in parser._actions:
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    namespace = parser.parse_args(argv)
    config = cls(**{k: v for k, v in vars(namespace).items() if k != "config"})
    if _RECORD.get() if record is None else record:
        write_config_record(config, argv)
    return config


@functools.cache
def _parser_class() -> type:
    """transformers' HfArgumentParser, told to leave our own field metadata (`run_only`) out of argparse's keywords."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        @staticmethod
        def _parse_dataclass_field(parser, field):
            if "run_only" in field.metadata:
                field = copy.copy(field)
                field.metadata = types.MappingProxyType({k: v for k, v in field.metadata.items() if k != "run_only"})
            HfArgumentParser._parse_dataclass_field(parser, field)

    return Parser


def load_config_file(path: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The flag values of one yaml file (or of a record written by `write_config_record`), converted by the
    parser's own types and checked against its choices."""
    import yaml

    from selfrag.data import decode_utf8

    try:
        with open(path, "rb") as handle:
            values = yaml.safe_load(decode_utf8(handle.read(), path))
    except OSError as err:
        raise ConfigError(f"--config {path}: cannot read it ({err.strerror})") from err
    except DataFormatError as err:
        raise ConfigError(f"--config {err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path}: not valid YAML ({err})") from err
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path}: expected a mapping of flag names to values, found {type(values).__name__}")
    if set(values) == set(RECORD_KEYS) and isinstance(values["config"], dict):  # a record: rerun its config
        values = {k: v for k, v in values["config"].items() if v != REDACTED}
    actions = {}  # every spelling of a flag (its aliases too) -> its action
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "config"):
            if isinstance(action, argparse._StoreFalseAction):  # `--no_x`: the key `x: false` says it
                continue
            for name in [action.dest, *(o.lstrip("-") for o in action.option_strings if o.startswith("--"))]:
                actions.setdefault(name, action)
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigError(f"--config {path}: unknown keys {unknown}; the keys are the flag names without '--'")
    return {actions[key].dest: _convert(path, actions[key], key, value) for key, value in values.items()}


def _convert(path: str, action: argparse.Action, key: str, value: Any) -> Any:
    """`value` as the flag `--key value` would have parsed it."""
    if value is None:
        return None
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_convert_one(path, action, key, item) for item in items]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"--config {path}: '{key}' takes one value, found {value!r}")
    return _convert_one(path, action, key, value)


def _convert_one(path: str, action: argparse.Action, key: str, value: Any) -> Any:
    converted = value
    if callable(action.type):
        if isinstance(value, bool) and action.type in (int, float):
            raise ConfigError(f"--config {path}: '{key}' must be a number, found {value!r}")
        try:
            converted = action.type(value if isinstance(value, str) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
            raise ConfigError(f"--config {path}: '{key}': cannot read {value!r} ({err})") from err
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise ConfigError(f"--config {path}: '{key}' must be one of {choices}; found {value!r}")
    return converted


def record_path(config: Any) -> Path | None:
    """Where the resolved config of a run goes, from its output fields (None: the run writes no file).

    - `output_file` / `result_fp` / `output_file_name` X: `X.config.yaml` beside it;
    - `output_dir` D: `D/config.yaml`, except for embedding shards (fields `prefix` and `shard_id`), whose folder is
      read back with a glob (`"D/*"`): there `D.<prefix>_<shard_id:02d>.config.yaml` beside the folder.
    """
    for name in ("output_file", "result_fp", "output_file_name"):
        value = getattr(config, name, None)
        if isinstance(value, str) and value:
            return Path(value + RECORD_SUFFIX)
    directory = getattr(config, "output_dir", None)
    if not isinstance(directory, str) or not directory:
        return None
    if hasattr(config, "prefix") and isinstance(getattr(config, "shard_id", None), int):
        folder = Path(directory).resolve()
        return folder.parent / f"{folder.name}.{config.prefix}_{config.shard_id:02d}{RECORD_SUFFIX}"
    return Path(directory) / "config.yaml"


def redact_config(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with literal secrets (`SECRET_FIELDS`) replaced by '<redacted>'; a path to a key file is kept."""
    return {k: (REDACTED if _is_secret(k, v) else v) for k, v in values.items()}


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The command line with the values of secret flags redacted, as `redact_config` does for fields."""
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, value = arg.partition("=")
        key = name[2:].replace("-", "_") if name.startswith("--") else ""
        if key not in SECRET_FIELDS:
            continue
        if eq and _is_secret(key, value):
            out[i] = f"{name}={REDACTED}"
        elif not eq and i + 1 < len(out) and _is_secret(key, out[i + 1]):
            out[i + 1] = REDACTED
    return out


def _is_secret(name: str, value: Any) -> bool:
    return name in SECRET_FIELDS and isinstance(value, str) and bool(value) and not Path(value).is_file()


def config_record(config: Any, argv: Sequence[str]) -> dict[str, Any]:
    """The record of a run: package version, command line (secrets redacted) and every field of `config`."""
    from selfrag import __version__

    values = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # tuples -> lists, paths -> str
    return {
        "selfrag_version": __version__,
        "command": [*shlex.split(program_name()), *redact_argv(list(argv))],
        "config": redact_config(values),
    }


def write_config_record(config: Any, argv: Sequence[str], path: str | Path | None = None) -> Path | None:
    """Write `config_record` to `path` (default `record_path(config)`); only on rank 0 of a distributed run.

    Returns the path written, or None when the run has no output or this is not rank 0.
    """
    import yaml

    path = record_path(config) if path is None else Path(path)
    if path is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    text = yaml.safe_dump(config_record(config, argv), sort_keys=False, allow_unicode=True, width=120)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    logger.info("resolved config written to %s", path)
    return path


def run_main(main_fn, argv: Sequence[str] | None) -> int:
    """Call `main_fn(argv)` with config records on (see `parse_config`), turning a `SelfRagError` into a one-line
    message and exit status 2."""
    token = _RECORD.set(True)
    try:
        return main_fn(argv)
    except SelfRagError as err:
        logging.getLogger("selfrag").error("%s: %s", type(err).__name__, err)
        return 2
    finally:
        _RECORD.reset(token)
