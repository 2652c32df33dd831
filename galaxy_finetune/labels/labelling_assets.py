"""The labelling page galaxy-label serves: a static page, its style and its script.

The page holds no data: the script reads /api/state (JSON) and puts every id and class name on screen with
textContent, so user data is never parsed as HTML. Keys: one per class (shown on its button), s skip, x not a
galaxy / artefact, z or Backspace undo, + / - zoom, a the asinh stretch.
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>galaxy-label</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <span id="queue"></span>
  <span id="progress"></span>
  <span id="pace"></span>
</header>
<main>
  <section id="viewer">
    <div id="frame"><img id="galaxy" alt="the galaxy to label"></div>
    <div id="done" hidden></div>
  </section>
  <aside>
    <h1 id="galaxy-id"></h1>
    <p id="given"></p>
    <p id="suggestion"></p>
    <p id="status" role="status"></p>
    <div id="classes"></div>
    <div id="actions">
      <button id="skip" data-key="s"><kbd>s</kbd> skip</button>
      <button id="artefact" data-key="x"><kbd>x</kbd> not a galaxy / artefact</button>
      <button id="undo" data-key="z"><kbd>z</kbd> undo</button>
    </div>
    <div id="view">
      <button id="zoom-in"><kbd>+</kbd> zoom in</button>
      <button id="zoom-out"><kbd>-</kbd> zoom out</button>
      <button id="stretch"><kbd>a</kbd> asinh stretch: <span id="stretch-state">off</span></button>
    </div>
  </aside>
</main>
<footer><span>next:</span><div id="strip"></div></footer>
</body>
</html>
"""

PAGE_CSS = """
body { margin: 0; font: 15px system-ui, sans-serif; background: #111; color: #eee; }
header, footer { display: flex; gap: 2em; align-items: center; padding: 0.5em 1em; background: #1c1c1c; }
main { display: flex; gap: 1.5em; padding: 1em; }
#viewer { flex: none; }
#frame { width: min(560px, calc(100vh - 190px)); height: min(560px, calc(100vh - 190px)); overflow: hidden; background: #000; display: flex;
         align-items: center; justify-content: center; border: 1px solid #333; }
#galaxy { width: 100%; height: 100%; object-fit: contain; transform-origin: center; }
#done { width: 560px; padding: 2em; box-sizing: border-box; font-size: 1.2em; }
aside { min-width: 300px; max-width: 440px; }
h1 { font-size: 1.2em; margin: 0 0 0.5em; word-break: break-all; }
#given { color: #ffb347; font-weight: bold; }
#suggestion { color: #8ecae6; }
#status { min-height: 1.3em; color: #ff6b6b; }
#classes, #actions, #view { display: flex; flex-direction: column; gap: 0.35em; margin-bottom: 1em; }
button { text-align: left; padding: 0.45em 0.7em; font: inherit; color: #eee; background: #2a2a2a;
         border: 1px solid #444; border-radius: 4px; cursor: pointer; }
button:hover { background: #3a3a3a; }
button.suggested { border-color: #8ecae6; }
button.given { border-color: #ffb347; }
kbd { display: inline-block; min-width: 1.2em; text-align: center; margin-right: 0.5em; padding: 0 0.3em;
      background: #444; border-radius: 3px; font-family: ui-monospace, monospace; }
#strip { display: flex; gap: 6px; }
#strip img { width: 72px; height: 72px; border: 1px solid #333; cursor: pointer; }
"""

PAGE_JS = r"""
"use strict";
const $ = (id) => document.getElementById(id);
let state = null;        // /api/state: queue, kind, classes, items, answers
let pos = 0;             // the queue place on screen
let zoom = 1, asinh = false;
const history = [];      // this tab's answers, for undo: {pos, id, label, before}
const paces = [];        // seconds this tab spent on each galaxy it answered
let shownAt = performance.now();

function text(id, value) { $(id).textContent = value; }

function nextOpen(from) {
  const n = state.items.length;
  for (let k = 0; k < n; k++) {
    const i = (from + k) % n;
    if (!(state.items[i].id_str in state.answers)) return i;
  }
  return -1;
}

function imageUrl(i) { return "/image/" + i + (asinh ? "?stretch=asinh" : ""); }

function render() {
  const items = state.items, answered = Object.keys(state.answers).length;
  text("progress", answered + " of " + items.length + " answered");
  if (paces.length) {
    const sorted = paces.slice().sort((a, b) => a - b);
    text("pace", sorted[Math.floor(sorted.length / 2)].toFixed(1) + " s per galaxy (median of " + paces.length + ")");
  }
  text("stretch-state", asinh ? "on" : "off");
  const strip = $("strip");
  strip.replaceChildren();
  if (pos < 0) {
    $("frame").hidden = true;
    $("done").hidden = false;
    text("done", "All " + items.length + " galaxies answered (z undoes the last). Answers are in " +
         state.labels_file + "; fold them into the catalog with: galaxy-label-merge " + state.labels_file);
    text("galaxy-id", ""); text("given", ""); text("suggestion", "");
    return;
  }
  $("frame").hidden = false;
  $("done").hidden = true;
  const item = items[pos];
  $("galaxy").src = imageUrl(pos);
  $("galaxy").style.transform = "scale(" + zoom + ")";
  text("galaxy-id", "#" + (pos + 1) + "  " + item.id_str + (item.split ? "  (" + item.split + ")" : ""));
  text("given", item.given ? "given label: " + item.given : "");
  text("suggestion", item.suggestion ? "model suggests: " + item.suggestion +
       (item.confidence === null ? "" : " (" + (100 * item.confidence).toFixed(1) + "%)") : "");
  for (const b of $("classes").children) {
    b.classList.toggle("suggested", b.dataset.name === item.suggestion);
    b.classList.toggle("given", b.dataset.name === item.given);
  }
  let shown = 0;
  for (let i = pos + 1; i < items.length && shown < 8; i++) {
    if (items[i].id_str in state.answers) continue;
    const img = document.createElement("img");
    img.src = imageUrl(i);
    img.alt = items[i].id_str;
    img.title = items[i].id_str;
    img.dataset.pos = i;
    img.addEventListener("click", () => { pos = Number(img.dataset.pos); shownAt = performance.now(); render(); });
    strip.appendChild(img);
    shown++;
  }
}

async function post(id, label, expect) {
  const response = await fetch("/api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
                                                body: JSON.stringify({id_str: id, label: label, expect: expect})});
  const body = await response.json();
  return {status: response.status, body: body};
}

let busy = false;
async function answer(label) {
  if (busy || pos < 0) return;
  busy = true;
  const item = state.items[pos], before = state.answers[item.id_str] || "";
  try {
    const r = await post(item.id_str, label, before);
    if (r.status === 200) {
      state.answers[item.id_str] = label;
      history.push({pos: pos, id: item.id_str, label: label, before: before});
      paces.push((performance.now() - shownAt) / 1000);
      text("status", "");
    } else if (r.status === 409) {
      if (r.body.label) state.answers[item.id_str] = r.body.label; else delete state.answers[item.id_str];
      text("status", item.id_str + " was answered meanwhile in another tab (" + (r.body.label || "undone") +
           "); that answer is kept");
    } else {
      text("status", "not saved: " + (r.body.error || r.status));
      return;
    }
    pos = nextOpen(pos + 1);
    shownAt = performance.now();
    render();
  } catch (e) {
    text("status", "not saved: the server does not answer (" + e + ")");
  } finally {
    busy = false;
  }
}

async function undo() {
  if (busy) return;
  const last = history.pop();
  if (!last) { text("status", "nothing to undo in this tab"); return; }
  busy = true;
  try {
    const r = await post(last.id, last.before, last.label);
    if (r.status === 200) {
      if (last.before) state.answers[last.id] = last.before; else delete state.answers[last.id];
      paces.pop();
      pos = last.pos;
      text("status", "undone: " + last.id);
    } else if (r.status === 409) {
      text("status", last.id + " was changed meanwhile in another tab; not undone");
    } else {
      history.push(last);
      text("status", "not undone: " + (r.body.error || r.status));
      return;
    }
    shownAt = performance.now();
    render();
  } catch (e) {
    history.push(last);
    text("status", "not undone: the server does not answer (" + e + ")");
  } finally {
    busy = false;
  }
}

function setZoom(factor) { zoom = Math.min(8, Math.max(1, zoom * factor)); render(); }
function toggleStretch() { asinh = !asinh; render(); }

function button(key, label, action, name) {
  const b = document.createElement("button");
  const k = document.createElement("kbd");
  k.textContent = key;
  b.append(k, " ", label);
  b.dataset.key = key;
  if (name !== undefined) b.dataset.name = name;
  b.addEventListener("click", action);
  return b;
}

async function start() {
  const response = await fetch("/api/state");
  state = await response.json();
  text("queue", (state.kind === "review" ? "reviewing labels from " : "labelling ") + state.queue);
  document.title = "galaxy-label: " + state.queue;
  const keys = {};
  for (const c of state.classes) {
    $("classes").appendChild(button(c.key, c.name, () => answer(c.name), c.name));
    keys[c.key] = () => answer(c.name);
  }
  Object.assign(keys, {s: () => answer("skip"), x: () => answer("artefact"), z: undo, Backspace: undo,
                       "+": () => setZoom(1.5), "=": () => setZoom(1.5), "-": () => setZoom(1 / 1.5),
                       a: toggleStretch});
  $("skip").addEventListener("click", () => answer("skip"));
  $("artefact").addEventListener("click", () => answer("artefact"));
  $("undo").addEventListener("click", undo);
  $("zoom-in").addEventListener("click", () => setZoom(1.5));
  $("zoom-out").addEventListener("click", () => setZoom(1 / 1.5));
  $("stretch").addEventListener("click", toggleStretch);
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const act = keys[e.key];
    if (act) { e.preventDefault(); act(); }
  });
  pos = nextOpen(0);
  shownAt = performance.now();
  render();
  document.body.dataset.ready = "1";
}

start().catch((e) => text("status", "could not load the queue: " + e));
"""
