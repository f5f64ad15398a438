"""The answer trace: why Self-RAG answered what it did, as JSON and as a self-contained HTML page.

`short_trace` / `long_trace` turn the typed decoding results (`ItemResult`, `BeamResult`) into the trace JSON;
`render_page` embeds one trace in `trace.html` with `trace.js` inlined (no network: the page opens from `file://`);
`TraceWriter` writes `DIR/<k>.html` per item and `DIR/index.html`. The server's playground (`GET /`) is the same
template and script, filled from the server's own answers.

Short-form trace: `{question, mode, retrieve, retrieve_prob, threshold, candidates: [{passage: {title, text},
answer, rel, sup, use, score, parts}], chosen, answer}`, where rel / sup / use are `{token, prob}` (the reflection
token the model wrote and its probability within its group) and parts the weighted score terms. Long-form trace:
`{question, nodes: [{id, parent, depth, passage, segment, rel, sup, use, score, kept}], chosen_path, answer,
citations}`.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from selfrag.decoding.long_form import BeamResult, clean_segment
from selfrag.decoding.short_form import ItemResult

logger = logging.getLogger(__name__)


def _passage(ctx: Mapping[str, Any] | None) -> dict[str, str] | None:
    if ctx is None:
        return None
    return {"title": str(ctx.get("title", "")), "text": str(ctx.get("text", ""))}


def short_trace(question: str, item: ItemResult, mode: str, threshold: float | None) -> dict[str, Any]:
    """The trace of one short-form answer."""
    candidates = [
        {
            "passage": _passage(c.passage),
            "answer": c.answer,
            "rel": asdict(c.rel),
            "sup": asdict(c.sup),
            "use": asdict(c.use),
            "score": c.scores.total,
            "parts": {k: v for k, v in asdict(c.scores).items() if k != "total"},
        }
        for c in item.candidates
    ]
    return {
        "kind": "short",
        "question": question,
        "mode": mode,
        "retrieve": item.retrieve,
        "retrieve_prob": item.retrieval_prob,
        "threshold": threshold,
        "candidates": candidates,
        "chosen": item.chosen,
        "answer": item.pred,
    }


def long_trace(question: str, result: BeamResult) -> dict[str, Any]:
    """The trace of one long-form answer: every node of the beam tree but the root."""
    nodes = [
        {
            "id": n.id,
            "parent": n.parent,
            "depth": n.depth,
            "passage": _passage(n.ctx),
            "segment": clean_segment(n.segment),
            "rel": asdict(n.rel),
            "sup": asdict(n.sup),
            "use": asdict(n.use),
            "score": n.score,
            "kept": n.kept,
        }
        for n in result.tree
        if n.depth > 0
    ]
    return {
        "kind": "long",
        "question": question,
        "retrieve": result.retrieve,
        "retrieve_prob": result.retrieval_prob,
        "nodes": nodes,
        "chosen_path": [n.id for n in result.path],
        "answer": result.answer,
        "citations": [_passage(c) for c in result.citations],
    }


def _asset(name: str) -> str:
    return resources.files("selfrag.views").joinpath(name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no `</script>` or `<!--` can close or confuse the element."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(trace: Mapping[str, Any] | None, title: str, playground: bool = False) -> str:
    """`trace.html` with its script inlined and `trace` embedded as `<script type="application/json"
    id="selfrag-trace">`; `playground`: the server's page with a question box instead of a fixed trace."""
    values = {
        "title": html.escape(title),
        "trace": _script_json(trace),
        "playground": "true" if playground else "false",
        "script": _asset("trace.js"),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], _asset("trace.html"))


class TraceWriter:
    """Writes one page per item (`DIR/<k>.html`, k the item's 0-based position) and `DIR/index.html` linking them,
    with whether each item was answered correctly (None: not scored)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, index: int, trace: Mapping[str, Any]) -> Path:
        path = self.dir / f"{index}.html"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(render_page(trace, f"Self-RAG trace {index}: {trace['question']}"), encoding="utf-8")
        tmp.replace(path)
        return path

    def write_index(self, questions: list[str], correct: list[bool | None]) -> Path:
        rows = []
        for k, (question, ok) in enumerate(zip(questions, correct)):
            mark = {True: "correct", False: "wrong", None: "not scored"}[ok]
            rows.append(
                f'<tr class="{mark.replace(" ", "-")}"><td>{k}</td>'
                f'<td><a href="{k}.html">{html.escape(question)}</a></td><td>{mark}</td></tr>'
            )
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Self-RAG traces</title>'
            "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em .8em}.correct td:last-child{color:#080}"
            ".wrong td:last-child{color:#b00}</style></head><body><h1>Self-RAG traces</h1>"
            f"<p>{sum(c is True for c in correct)} of {len(correct)} answered correctly.</p>"
            "<table><thead><tr><th>#</th><th>question</th><th>answer</th></tr></thead><tbody>\n"
            + "\n".join(rows)
            + "\n</tbody></table></body></html>\n"
        )
        path = self.dir / "index.html"
        path.write_text(page, encoding="utf-8")
        logger.info("wrote %d answer traces to %s (open %s)", len(questions), self.dir, path)
        return path
