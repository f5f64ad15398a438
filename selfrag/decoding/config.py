"""The decoding knobs of Self-RAG, declared once.

`DecodingConfig` holds every flag that shapes how an answer is decoded and scored. Short form
(`run_short_form.py`), long form (`run_long_form_static.py`, `run_long_form.py`), the server (`selfrag serve`) and
each server request compose it, so a `--config` yaml written for one is read by the others. The IsSup switch has
both of the original's spellings everywhere: `--use_groundness` (short form) and `--use_grounding` (long form), as
flags, yaml keys and request options.

A command that wants another default for a knob (the server tries 5 passages, not 10) says so with
`DecodingConfig.default(name, value)`, which keeps the help text declared here.

What a resumed run must match is `selfrag.cli.fingerprint(config)`: every field of the command's config except
those declared with `run_only` (where results go, batch sizes, devices), so a new knob joins it unlisted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from selfrag.cli import flag
from selfrag.decoding.long_form import LongFormSettings
from selfrag.decoding.short_form import ShortFormSettings
from selfrag.errors import ConfigError
from selfrag.scoring import Weights

Mode = Literal["default", "adaptive_retrieval", "no_retrieval", "always_retrieve"]
MODES = ("adaptive_retrieval", "no_retrieval", "always_retrieve")


@dataclass
class DecodingConfig:
    """How Self-RAG decodes: when to retrieve, how many passages, how to score them, and the long-form beam."""

    mode: Mode = flag("default = adaptive_retrieval.", default="default")
    threshold: float | None = flag(
        "Retrieve when p(Ret)/(p(Ret)+p(NoRet)) > threshold; unset: when the model generates [Retrieval].", default=None
    )
    ndocs: int = flag("Passages tried per retrieval (ctxs[:ndocs]).", default=10)
    max_new_tokens: int = flag("Tokens to generate per completion (per segment in long form).", default=15)
    use_groundness: bool = flag(
        "Add the IsSup score (also spelled --use_grounding).", default=False, metadata={"aliases": ["--use_grounding"]}
    )
    use_utility: bool = flag("Add the IsUse score.", default=False)
    use_seqscore: bool = flag("Add exp(mean token log-prob).", default=False)
    w_rel: float = flag("Weight of IsRel.", default=1.0)
    w_sup: float = flag("Weight of IsSup.", default=1.0)
    w_use: float | None = flag("Weight of IsUse (default 0.5 as the paper; 1.0 with --compat original).", default=None)
    beam_width: int = flag("Long form: paths kept at each depth.", default=2)
    max_depth: int = flag("Long form: depth of the tree counting the root (at most max_depth-1 segments).", default=2)
    ignore_cont: bool = flag(
        "Long form: drop segments marked [No support / Contradictory] from the answer.", default=False
    )
    compat: Literal["none", "original"] = flag(
        "original: reproduce the original code's quirks where reported numbers depend on them "
        "(docs/upstream_quirks.md).",
        default="none",
    )

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"--threshold must lie in [0, 1] (a probability); got {self.threshold}")
        for name in ("ndocs", "max_new_tokens", "beam_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1; got {getattr(self, name)}")
        if self.max_depth < 2:
            raise ConfigError(
                f"--max_depth counts the root, so it must be at least 2 (one segment); got {self.max_depth}"
            )
        if self.w_use is None:
            self.w_use = 1.0 if self.compat == "original" else 0.5

    @staticmethod
    def default(name: str, value: Any) -> Any:
        """The field `name` of DecodingConfig with another default (for a command whose default differs)."""
        base = next(f for f in dataclasses.fields(DecodingConfig) if f.name == name)
        return dataclasses.field(default=value, metadata=base.metadata)

    @property
    def resolved_mode(self) -> str:
        return "adaptive_retrieval" if self.mode == "default" else self.mode

    def weights(self) -> Weights:
        return Weights(
            w_rel=self.w_rel,
            w_sup=self.w_sup,
            w_use=float(self.w_use),  # type: ignore[arg-type]
            use_groundness=self.use_groundness,
            use_utility=self.use_utility,
            use_seqscore=self.use_seqscore,
        )

    def decoding(self) -> DecodingConfig:
        """The decoding part of a command's config, on its own."""
        return DecodingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DecodingConfig)})

    def short_settings(self, closed: bool = False, add_special_tokens: bool = True) -> ShortFormSettings:
        """The short-form algorithm's settings (`closed`: the task's answers form a closed set, as fever / arc_c)."""
        return ShortFormSettings(
            mode=self.resolved_mode,  # type: ignore[arg-type]
            threshold=self.threshold,
            ndocs=self.ndocs,
            max_new_tokens=self.max_new_tokens,
            closed=closed,
            weights=self.weights(),
            compat=self.compat,
            add_special_tokens=add_special_tokens,
        )

    def long_settings(self, cite: bool = True, add_special_tokens: bool = True) -> LongFormSettings:
        """The beam search's settings (`cite`: end each segment with a `[k]` citation, ALCE-style)."""
        return LongFormSettings(
            mode=self.resolved_mode,  # type: ignore[arg-type]
            threshold=self.threshold,
            ndocs=self.ndocs,
            beam_width=self.beam_width,
            max_depth=self.max_depth,
            max_new_tokens=self.max_new_tokens,
            weights=self.weights(),
            ignore_cont=self.ignore_cont,
            cite=cite,
            compat=self.compat,
            add_special_tokens=add_special_tokens,
        )
