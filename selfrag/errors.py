"""Exception hierarchy: every error a user can cause is a `SelfRagError` with an actionable message."""

from __future__ import annotations


class SelfRagError(Exception):
    """Base class of all errors raised on purpose by this package."""


class ConfigError(SelfRagError, ValueError):
    """A flag, config file or combination of settings is invalid."""


class DataFormatError(SelfRagError, ValueError):
    """An input file or record does not have the expected format (the message names file, line and field)."""


class VocabError(SelfRagError, ValueError):
    """A tokenizer lacks the Self-RAG reflection tokens."""


class BackendError(SelfRagError, RuntimeError):
    """A generation backend cannot be loaded or used as asked."""


class AccessError(BackendError):
    """An API refused the key (401), the access (403) or the model (404): not transient, so the run stops at the
    first one instead of retrying or recording it as a failed item."""
