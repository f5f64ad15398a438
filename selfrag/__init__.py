"""Self-RAG: retrieve, generate and critique through self-reflection (Asai et al., ICLR 2024), rebuilt."""

from __future__ import annotations

__version__ = "0.1.0"
