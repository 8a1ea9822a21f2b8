// The predictive keyboard: asks /v1/suggest on every edit (the served word search: the same words as
// `rnnlab suggest`), shows word completions and next characters, Tab (or a click) accepts the top
// completion, "Continue" streams /v1/generate/stream.
"use strict";

const $ = (id) => document.getElementById(id);
const textArea = $("text");
const completionsBox = $("completions");
const nextCharsBox = $("next-chars");
const statusLine = $("status");
const clientId = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2)).slice(0, 64);

let latest = null;      // the last suggestions shown, with the text they are for
let seq = 0;            // request counter: only the newest answer is drawn
let inFlight = false;   // at most one suggest request at a time...
let pending = false;    // ...and one more queued for the newest text
let streaming = null;   // AbortController of a running generation

function beforeCaret() {
  return textArea.value.slice(0, textArea.selectionStart);
}

function insertAtCaret(s) {
  const start = textArea.selectionStart, end = textArea.selectionEnd;
  textArea.setRangeText(s, start, end, "end");
  textArea.focus();
  onEdit();
}

function visible(ch) {
  return ch === " " ? "␣" : ch === "\n" ? "↵" : ch === "\t" ? "⇥" : ch;
}

function percent(p) {
  return p >= 0.995 ? "99%" : p >= 0.01 ? Math.round(p * 100) + "%" : "<1%";
}

function chip(label, prob, onClick, top) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "chip" + (top ? " top" : "");
  b.textContent = label;
  const span = document.createElement("span");
  span.className = "prob";
  span.textContent = percent(prob);
  b.appendChild(span);
  b.addEventListener("mousedown", (e) => e.preventDefault());  // keep the caret in the text
  b.addEventListener("click", onClick);
  return b;
}

function render(text, s) {
  completionsBox.dataset.for = text;  // which text these suggestions answer (tests wait on it)
  completionsBox.replaceChildren(...s.completions.map((c, i) =>
    chip(c.word || "␣", c.prob, () => accept(c), i === 0)));
  nextCharsBox.replaceChildren(...s.next_chars.map((c) =>
    chip(visible(c.text), c.prob, () => insertAtCaret(c.text), false)));
}

async function suggestNow() {
  if (inFlight) { pending = true; return; }
  inFlight = true;
  const text = beforeCaret();
  const mine = ++seq;
  try {
    const r = await fetch("/v1/suggest", {
      method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify({text: text.slice(-4000), k: 5, client: clientId}),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    if (mine === seq && text === beforeCaret()) {
      latest = {text, ...body};
      render(text, body);
      statusLine.textContent = `suggested in ${body.elapsed_ms.toFixed(1)} ms`;
    }
  } catch (e) {
    statusLine.textContent = "suggest failed: " + e.message;
  } finally {
    inFlight = false;
    if (pending) { pending = false; suggestNow(); }
  }
}

function onEdit() {
  latest = null;  // stale until the new answer arrives
  suggestNow();
}

function accept(c) {
  // the completion's characters, then a space so that the next word can follow
  insertAtCaret(c.append + " ");
}

textArea.addEventListener("input", onEdit);
textArea.addEventListener("click", onEdit);
textArea.addEventListener("keydown", (e) => {
  if (e.key !== "Tab" || e.shiftKey || e.altKey || e.ctrlKey || e.metaKey) return;
  e.preventDefault();  // Tab never leaves the text box: it accepts, or waits for suggestions
  if (latest && latest.text === beforeCaret() && latest.completions.length) accept(latest.completions[0]);
});

async function continueText() {
  const prefix = beforeCaret().slice(-4000);
  if (!prefix) { statusLine.textContent = "type something to continue"; return; }
  streaming = new AbortController();
  $("continue").disabled = true;
  $("stop").disabled = false;
  const body = {
    prefix,
    length: Math.max(1, Math.min(1000, parseInt($("length").value, 10) || 80)),
    temperature: Math.max(0, Math.min(10, parseFloat($("temperature").value) || 0)),
  };
  try {
    const r = await fetch("/v1/generate/stream", {
      method: "POST", headers: {"content-type": "application/json"},
      body: JSON.stringify(body), signal: streaming.signal,
    });
    if (!r.ok) throw new Error((await r.json()).error || r.statusText);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, {stream: true});
      const lines = buffered.split("\n");
      buffered = lines.pop();
      const piece = lines.filter(Boolean).map((l) => JSON.parse(l)).map((m) => m.text || "").join("");
      if (piece) textArea.setRangeText(piece, textArea.selectionStart, textArea.selectionEnd, "end");
    }
    statusLine.textContent = "continued";
  } catch (e) {
    if (e.name !== "AbortError") statusLine.textContent = "generate failed: " + e.message;
  } finally {
    streaming = null;
    $("continue").disabled = false;
    $("stop").disabled = true;
    textArea.focus();
    onEdit();
  }
}

$("continue").addEventListener("click", continueText);
$("stop").addEventListener("click", () => streaming && streaming.abort());

fetch("/healthz").then((r) => r.json()).then((h) => {
  const m = h.model, d = h.data;
  $("model-info").textContent =
    `${m.impl} ${m.model.toUpperCase()}, ${m.hidden_size} hidden × ${m.num_layers} layer(s), ` +
    `${m.vocab_size} ${d.token === "char" ? "characters" : "words"}` +
    (d.preset === "letters" ? " (lowercase letters and spaces)" : "") +
    (h.words ? ` · word search (${h.words.lexicon.toLocaleString()} words)` : "");
}).catch(() => { $("model-info").textContent = "model info unavailable"; });

onEdit();
