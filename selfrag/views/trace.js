// Renders a Self-RAG answer trace (selfrag/views/trace.py documents its JSON). No framework, no network:
// a static page reads the trace embedded in #selfrag-trace; the playground asks the server it was served by.
"use strict";
(function () {
  const fmt = (p) => (typeof p === "number" ? p.toFixed(2) : "–");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  function judgements(item) {
    return el("div", { class: "judgements" },
      ...[["IsRel", item.rel], ["IsSup", item.sup], ["IsUse", item.use]].map(([name, j]) =>
        el("span", { class: "judge", "data-aspect": name },
          `${name} ${j && j.token ? j.token : "(none)"} ${fmt(j && j.prob)}`)));
  }

  function passageCard(item, chosen, extra) {
    const card = el("div", { class: "card" + (chosen ? " chosen" : "") + (extra.pruned ? " pruned" : "") });
    const title = el("div", { class: "title" }, item.passage ? item.passage.title || "(untitled passage)" : "(no passage)");
    if (chosen) title.append(el("span", { class: "badge chosen-badge" }, "chosen"));
    card.append(title);
    if (item.passage) card.append(el("div", { class: "text" }, item.passage.text));
    card.append(el("div", { class: "said" }, extra.label + ": ", el("q", {}, extra.text)));
    card.append(judgements(item));
    card.append(el("div", { class: "score" }, `score ${item.score.toFixed(3)}` +
      (item.parts ? ` from seq ${fmt(item.parts.seq)}, IsRel ${fmt(item.parts.relevance)}, ` +
        `IsSup ${fmt(item.parts.support)}, IsUse ${fmt(item.parts.utility)} (before weights; 0 when switched off)` : "") +
      (extra.kept === false ? " — pruned" : "")));
    return card;
  }

  function decision(t) {
    let text = t.retrieve ? "Retrieved" : "Did not retrieve";
    if (typeof t.retrieve_prob === "number") {
      text += ` — p(Retrieval) ${fmt(t.retrieve_prob)}`;
      text += typeof t.threshold === "number" ? ` against threshold ${fmt(t.threshold)}` : " (the model's own choice, no threshold)";
    } else if (t.mode) {
      text += ` (mode ${t.mode})`;
    }
    return el("p", { class: "decision" }, text);
  }

  function renderShort(t, view) {
    view.append(el("h2", {}, `Candidates (${t.candidates.length})`));
    if (!t.candidates.length) view.append(el("p", {}, "No passage was tried: the answer was written without retrieval."));
    t.candidates.forEach((c, i) =>
      view.append(passageCard(c, i === t.chosen, { label: "answer", text: c.answer })));
  }

  function renderLong(t, view) {
    const chosen = new Set(t.chosen_path);
    const children = new Map();
    for (const n of t.nodes) {
      const key = n.depth === 1 ? 0 : n.parent;
      if (!children.has(key)) children.set(key, []);
      children.get(key).push(n);
    }
    const tree = (parent) => {
      const box = el("div", { class: "depth" });
      for (const n of children.get(parent) || []) {
        const wrap = el("div", { class: "node", "data-node": n.id });
        wrap.append(el("div", { class: "level" }, `depth ${n.depth}`));
        wrap.append(passageCard(n, chosen.has(n.id), { label: "segment", text: n.segment, pruned: !n.kept, kept: n.kept }));
        if (children.has(n.id)) wrap.append(tree(n.id));
        box.append(wrap);
      }
      return box;
    };
    view.append(el("h2", {}, `Beam tree (${t.nodes.length} segments, ${t.chosen_path.length} on the chosen path)`));
    if (!t.nodes.length) view.append(el("p", {}, "No passage was tried: the answer was written without retrieval."));
    else view.append(tree(0));
    if (t.citations && t.citations.length) {
      view.append(el("h2", {}, "Citations"));
      view.append(el("ol", { class: "citations" }, ...t.citations.map((c) => el("li", {}, c.title || "(untitled)"))));
    }
  }

  function render(t) {
    const view = document.getElementById("view");
    view.replaceChildren();
    view.append(el("h1", { class: "question" }, t.question));
    view.append(el("div", { class: "answer" }, t.answer));
    view.append(decision(t));
    if (t.kind === "long") renderLong(t, view); else renderShort(t, view);
  }

  const embedded = JSON.parse(document.getElementById("selfrag-trace").textContent);
  if (embedded) render(embedded);
  if (!PLAYGROUND) return;

  const form = document.getElementById("ask");
  const status = document.getElementById("status");
  form.hidden = false;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = document.getElementById("question").value.trim();
    if (!question) return;
    status.textContent = "Thinking…";
    status.className = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: question }], selfrag: { trace: true } }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      status.textContent = "";
      window.lastResponse = body;
      render(body.selfrag.trace);
    } catch (err) {
      status.textContent = String(err.message || err);
      status.className = "error";
    }
  });
})();
