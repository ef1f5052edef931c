// The unionfs explorer page: the layer stack, the merged tree one directory at a time (from
// /api/tree), what the selected layer changed, the waste report, and on a mount the trace
// events (/api/events) animated on the stack. Every name from the image is set as text, never
// as HTML.
"use strict";

const BADGES = ["added", "changed", "metadata-only", "deleted", "whiteout", "opaque"];
const MAX_EVENTS = 200;
const S = { summary: null, layer: null, expanded: [], ready: false };

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

async function api(route, params) {
  const q = new URLSearchParams(params || {}).toString();
  const r = await fetch("/api/" + route + (q ? "?" + q : ""));
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error || r.statusText);
  return doc;
}

function human(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i ? n.toFixed(1) + " " + units[i] : n + " B";
}

function layerInfo(n) { return S.summary.layers[n - 1] || {}; }
function layerLabel(info) {
  return info.created_by || (info.upper ? "(uncommitted changes)" : info.dir || "");
}
function badge(b) { return el("span", { class: "badge " + b, dataset: { badge: b } }, b); }

// ---- the stack ---------------------------------------------------------------------------

function renderStack() {
  const layers = S.summary.layers;
  const max = Math.max(1, ...layers.map((l) => l.size));
  const box = $("#stack");
  box.replaceChildren();
  for (const l of [...layers].reverse()) {
    box.append(el("div", {
      class: "layer" + (l.upper ? " upper" : "") + (l.number === S.layer ? " selected" : ""),
      dataset: { n: l.number }, title: (l.diff_id || l.dir) + "\n" + layerLabel(l),
      onclick: () => selectLayer(l.number),
    },
      el("span", { class: "n" }, l.upper ? "upper" : "L" + l.number),
      el("span", { class: "meta" }, human(l.size) + " · " + l.entries + " entries" +
        (l.whiteouts ? " · " + l.whiteouts + " whiteouts" : "")),
      el("span", { class: "by" }, layerLabel(l)),
      el("div", { class: "bar", style: "width:" + (100 * l.size / max).toFixed(1) + "%" }),
      el("div", { class: "chips" })));
  }
}

function layerBox(n) { return document.querySelector('#stack .layer[data-n="' + n + '"]'); }

// ---- the tree ------------------------------------------------------------------------------

function depthOf(path) { return path === "/" ? 0 : path.split("/").length - 1; }

function rowFor(e) {
  const isDir = e.type === "dir";
  const deleted = e.badges.includes("deleted");
  const origin = layerInfo(e.layer);
  const sub = isDir && e.changes ? Object.entries(e.changes).map(([b, n]) => n + " " + b).join(", ") : "";
  const name = el("td", { class: "name", style: "padding-left:" + (depthOf(e.path) - 1) * 1.2 + "em" },
    el("span", { class: "toggle" }, isDir && !deleted && e.children ? "▸" : ""),
    e.name + (isDir ? "/" : ""),
    e.target !== null ? el("span", { class: "target" }, " → " + e.target) : null,
    sub ? el("span", { class: "sub", title: "changes below" }, sub) : null);
  const tr = el("tr", {
    class: deleted ? "deleted" : "",
    dataset: { path: e.path, type: e.type, state: deleted ? "deleted" : "visible", layer: e.layer },
  },
    name,
    el("td", { class: "badges" }, e.badges.map(badge)),
    el("td", { class: "num size" }, e.type === "file" ? human(e.size) : ""),
    el("td", { class: "num origin", title: layerLabel(origin) }, origin.upper ? "upper" : "L" + e.layer));
  name.addEventListener("click", () => isDir && !deleted ? toggle(tr) : showHistory(e.path, tr));
  return tr;
}

function descendants(path) {
  const prefix = path === "/" ? "/" : path + "/";
  return [...document.querySelectorAll("#tree tbody tr")].filter(
    (tr) => tr.dataset.path && tr.dataset.path.startsWith(prefix) && tr.dataset.path !== path);
}

async function loadDir(path, after, offset) {
  const doc = await api("tree", { path, layer: S.layer, offset: offset || 0 });
  const rows = doc.entries.map(rowFor);
  const next = doc.offset + doc.entries.length;
  if (next < doc.total) {
    const more = el("tr", { class: "more", dataset: { more: path } },
      el("td", { colspan: 4, style: "padding-left:" + depthOf(path) * 1.2 + "em" },
        "… " + (doc.total - next) + " more entries"));
    more.addEventListener("click", () => { const prev = more.previousSibling; more.remove(); loadDir(path, prev, next); });
    rows.push(more);
  }
  if (after) after.after(...rows); else $("#tree tbody").append(...rows);
  return rows;
}

async function toggle(tr) {
  const path = tr.dataset.path;
  const t = tr.querySelector(".toggle");
  if (S.expanded.includes(path)) {
    S.expanded = S.expanded.filter((p) => p !== path && !p.startsWith(path + "/"));
    descendants(path).forEach((r) => r.remove());
    t.textContent = "▸";
  } else {
    S.expanded.push(path);
    t.textContent = "▾";
    await loadDir(path, tr);
  }
}

async function loadTree() {
  const keep = S.expanded;
  S.expanded = [];
  $("#tree tbody").replaceChildren();
  await loadDir("/");
  for (const path of keep) {          // open again what was open, parents first
    const tr = document.querySelector('#tree tr[data-state="visible"][data-path="' + CSS.escape(path) + '"]');
    if (tr) await toggle(tr);
  }
}

// ---- side panels ---------------------------------------------------------------------------

async function loadLayer() {
  const doc = await api("layer", { n: S.layer });
  $("#counts").replaceChildren(...BADGES.map((b) => el("span", { class: "count-box", dataset: { badge: b } },
    badge(b), el("span", { class: "count" }, doc.counts[b]))));
  $("#changes-layer").textContent = S.layer;
  $("#changes-total").textContent = doc.total + " change" + (doc.total === 1 ? "" : "s") +
    (doc.total > doc.changes.length ? ", first " + doc.changes.length + " shown" : "");
  $("#changes").replaceChildren(...doc.changes.map((c) => el("li", { dataset: { path: c.path, change: c.change } },
    badge(c.change), " ", el("span", { class: "path" }, c.path),
    c.detail ? el("span", { class: "detail" }, c.detail) : null)));
}

async function loadWaste() {
  const w = await api("waste");
  const max = Math.max(1, ...Object.values(w.by_cause));
  const pct = (x) => x === null ? "n/a" : (100 * x).toFixed(1) + " %";
  const causes = Object.entries(w.by_cause).map(([c, n]) => el("div", { class: "cause-row" }, c,
    el("div", { class: "cause-bar", style: "width:" + (100 * n / max).toFixed(1) + "%" }),
    el("span", { class: "num" }, human(n))));
  const paths = w.paths.map((p) => el("tr", {},
    el("td", { class: "path" }, p.path),
    el("td", { class: "num" }, human(p.wasted_bytes)),
    el("td", {}, Object.keys(p.causes).join(", "))));
  $("#waste").replaceChildren(
    el("div", { class: "figures" },
      "shipped", el("b", {}, human(w.total_bytes)),
      "wasted", el("b", { id: "wasted-bytes", dataset: { bytes: w.wasted_bytes } }, human(w.wasted_bytes)),
      "efficiency", el("b", {}, pct(w.efficiency)),
      "user wasted", el("b", { title: "wasted bytes / bytes of the layers above the base (dive's ratio)" },
        pct(w.user_wasted_percent))),
    el("div", { class: "causes" }, causes),
    paths.length ? el("table", {},
      el("tr", {}, el("th", {}, "path"), el("th", { class: "num" }, "wasted"), el("th", {}, "causes")),
      paths) : el("p", {}, "nothing wasted"));
}

async function showHistory(path, tr) {
  document.querySelectorAll("#tree tr.selected").forEach((r) => r.classList.remove("selected"));
  if (tr) tr.classList.add("selected");
  const h = await api("history", { path });
  $("#detail-panel").hidden = false;
  $("#detail-path").textContent = path;
  $("#detail").replaceChildren(
    el("li", {}, h.visible ? "visible, from layer " + h.origin_layer : "not visible"),
    ...h.events.map((e) => el("li", {}, el("b", {}, "L" + e.layer + " "), badge(e.event), " ",
      el("span", { class: "detail" }, e.detail || layerInfo(e.layer).created_by || ""))));
}

// ---- selecting a layer ---------------------------------------------------------------------

async function selectLayer(n) {
  S.layer = n;
  document.querySelectorAll("#stack .layer").forEach((b) => b.classList.toggle("selected", +b.dataset.n === n));
  $("#tree-layer").textContent = n + (n === S.summary.top ? " (the top: what is seen)" : "");
  $("#tree-by").textContent = layerLabel(layerInfo(n));
  await Promise.all([loadTree(), loadLayer()]);
}

// ---- live ----------------------------------------------------------------------------------

function chip(n, kind, text) {
  const box = layerBox(n);
  if (!box) return;
  const chips = box.querySelector(".chips");
  chips.prepend(el("span", { class: "chip " + kind, title: text }, text));
  while (chips.children.length > 6) chips.lastChild.remove();
  box.classList.remove("flash"); void box.offsetWidth; box.classList.add("flash");
}

function fly(from, to, text) {
  const a = layerBox(from), b = layerBox(to);
  if (!a || !b || a === b) return;
  a.classList.remove("source"); void a.offsetWidth; a.classList.add("source");
  const stack = $("#stack");
  const f = el("div", { class: "flyer" }, text);
  f.style.left = a.offsetLeft + 20 + "px";
  f.style.top = a.offsetTop + 4 + "px";
  stack.append(f);
  const anim = f.animate([{ transform: "translate(0,0)" }, { transform: "translate(0," + (b.offsetTop - a.offsetTop) + "px)" }],
    { duration: 900, easing: "ease-in-out" });
  anim.onfinish = () => f.remove();
}

function describe(ev) {
  switch (ev.event) {
    case "copyup": return "copy-up of " + ev.path + (ev.stack_layer ? " from L" + ev.stack_layer : "") +
      (ev.bytes ? " (" + human(ev.bytes) + ")" : "");
    case "whiteout": return "whiteout at " + (ev.upper || ev.path) +
      (ev.lower_bytes ? "; the lower still ships " + human(ev.lower_bytes) : "");
    case "opaque": return "opaque directory " + ev.path;
    case "redirect": return "redirect " + ev.path + " → " + ev.redirect;
    default: return (ev.op || ev.event) + " " + (ev.path || "");
  }
}

function onTrace(ev) {
  const top = S.summary.top;
  const text = describe(ev);
  const li = el("li", { dataset: { event: ev.event, path: ev.path } },
    el("span", { class: "chip " + ev.event }, ev.event), " ", el("span", { class: "path" }, text),
    ev.op && ev.event !== "op" ? el("span", { class: "detail" }, " (" + ev.op + " " + (ev.op_path || "") + ")") : null);
  const list = $("#events");
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
  if (ev.event === "copyup") { fly(ev.stack_layer, top, ev.path); setTimeout(() => chip(top, "copyup", "↑ " + ev.path), 800); }
  else if (ev.event === "whiteout") chip(top, "whiteout", "⊘ " + ev.path);
  else if (ev.event === "opaque") chip(top, "opaque", "▣ " + ev.path);
  else if (ev.event === "redirect") chip(top, "redirect", "↪ " + ev.path);
}

async function onRefresh() {
  S.summary = await api("summary");
  const chips = new Map([...document.querySelectorAll("#stack .layer")].map((b) => [b.dataset.n, b.querySelector(".chips")]));
  renderStack();
  for (const [n, c] of chips) { const b = layerBox(n); if (b) b.querySelector(".chips").replaceWith(c); }
  const tasks = [loadWaste()];
  if (S.layer === S.summary.top) tasks.push(loadTree(), loadLayer());
  await Promise.all(tasks);
  document.body.dataset.gen = S.summary.gen;
}

function setLive(mode) {
  const l = $("#live");
  l.className = "live " + mode;
  l.textContent = mode === "trace" ? "live: trace stream" : mode === "poll" ? "live: polling the upper" : "static";
  $("#live-panel").hidden = !(mode === "trace" || mode === "poll");
}

function subscribe() {
  const es = new EventSource("/api/events");
  es.addEventListener("live", (m) => setLive(JSON.parse(m.data).mode));
  es.addEventListener("trace", (m) => onTrace(JSON.parse(m.data)));
  es.addEventListener("refresh", () => onRefresh().catch(showError));
  es.addEventListener("bye", () => es.close());
}

function showError(err) {
  $("#tree tbody").append(el("tr", {}, el("td", { colspan: 4, class: "error" }, String(err.message || err))));
}

async function main() {
  S.summary = await api("summary");
  const m = S.summary.mount;
  $("#name").textContent = S.summary.name + (m && m !== S.summary.name ? " (mounted at " + m + ")" : "");
  document.title = "unionfs · " + S.summary.name;
  setLive(S.summary.live);
  S.layer = S.summary.top;
  renderStack();
  if (S.summary.mount) subscribe();
  await selectLayer(S.layer);
  document.body.dataset.readyMs = performance.now().toFixed(1);  // the first screen is up
  document.body.dataset.ready = "1";
  document.body.dataset.gen = S.summary.gen;
  await loadWaste();
}

main().catch(showError);
