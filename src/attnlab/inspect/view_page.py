"""The page `attnlab inspect` writes: HTML, CSS and script in one string, into which
`views.write_html` puts the data as JSON. Nothing on it loads from the network: no CDN, no font,
no image by address.

Head view: pick a layer (the rollout is one more) and a head; the map shows a page of query rows
against every key; hovering a query token (or a map row, or a patch of the image) highlights the
keys it looks at, names the strongest, and, on a short page, draws BertViz-like lines from the
query to them. Model view: one small map per layer × head; a click opens it in the head view.
"""

PAGE_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>attnlab inspect</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:1.2em 2em;color:#1d2430;background:#fbfbfd}
h1{font-size:1.15em;margin:0 0 .2em}
.summary{color:#555;margin:.2em 0}
ul.notes{color:#555;margin:.2em 0 .8em;padding-left:1.2em;font-size:.92em}
#controls{display:flex;flex-wrap:wrap;gap:.6em 1.2em;align-items:center;margin:.6em 0;padding:.5em .7em;
 background:#eef1f6;border-radius:6px}
button{font:inherit;border:1px solid #b8c0cc;background:#fff;border-radius:4px;padding:.1em .55em;
 cursor:pointer}
button.on{background:#1d3557;color:#fff;border-color:#1d3557}
#mass{color:#555;font-size:.92em}
#looks{max-width:40em}
#head-view{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
#tokens{flex:1 1 30em;min-width:20em}
#lines text{font-size:12px;cursor:default}
#lines text.on{fill:#e76f51;font-weight:600}
canvas{border:1px solid #ccd;background:#fff;image-rendering:pixelated}
.flow{max-width:60em;line-height:1.9}
.flow span{padding:.05em 0;border-radius:3px;cursor:default}
.flow.chips span{border:1px solid #d5dae3;margin:.1em;padding:0 .3em;white-space:nowrap}
.flow span.q:hover,.flow span.q.pinned{outline:2px solid #e76f51}
.flow span.hot{color:#000}
h2{font-size:1em;margin:.8em 0 .2em;color:#333}
#model-view{display:none}
#grid{display:grid;gap:6px}
#grid figure{margin:0;text-align:center;font-size:.8em;cursor:pointer}
#grid canvas:hover{outline:2px solid #e76f51}
</style></head>
<body>
<h1 id="title"></h1>
<p class="summary" id="summary"><!--SUMMARY--></p>
<ul class="notes" id="notes"></ul>
<div id="controls">
 <span><button id="tab-head" class="on">head view</button> <button id="tab-model">model view</button></span>
 <label>layer <select id="layer"></select></label>
 <span id="heads"></span>
 <label id="page-box">rows <select id="page"></select></label>
 <label title="colour each weight against its row's largest, or against the largest of the map">
  colour <select id="colour"><option value="row">against its row</option>
  <option value="map">against the map</option></select></label>
 <span id="mass"></span>
</div>
<div id="head-view">
 <div><canvas id="map" width="560" height="560"></canvas>
  <div id="map-note" class="summary"></div><div id="looks" class="summary"></div>
  <div id="allocation" class="summary"></div></div>
 <div id="lines-box"><svg id="lines" width="340" height="100"></svg>
  <div class="summary">lines: where each query looks (hover one)</div></div>
 <div id="picture-box"><canvas id="picture" width="336" height="336"></canvas>
  <div id="picture-note" class="summary"></div></div>
 <div id="tokens"><h2 id="queries-title">queries</h2><div id="queries" class="flow"></div>
  <h2 id="keys-title">keys</h2><div id="keys" class="flow"></div></div>
</div>
<div id="model-view">
 <p class="summary">One map per layer × head (this page of rows); click one to open it.</p>
 <div id="grid"></div></div>
<script>
"use strict";
const DATA = /*DATA*/null;
const state = {map: DATA.start.map, head: DATA.start.head, page: 0, query: null, pinned: false,
               colour: DATA.maps.some(m => m.k < DATA.sequences[m.key].length) ? "row" : "map"};

function bytes(b64) {
  const s = atob(b64), out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
// Each map's arrays are decoded the first time it is drawn, not when the page opens.
function arrays(m) {
  if (!m.arrays) {
    const index = bytes(m.index).buffer;
    m.arrays = {index: m.wide ? new Uint32Array(index) : new Uint16Array(index), level: bytes(m.level),
                scale: new Float32Array(bytes(m.scale).buffer), mass: bytes(m.mass)};
  }
  return m.arrays;
}
// The kept weights of one row: [[key, weight, level 0..1 of the row's largest], ...], largest first.
function row(m, head, r) {
  const a = arrays(m), at = head * m.rows + r, out = [];
  for (let j = 0; j < m.k; j++) {
    const level = a.level[at * m.k + j] / 255;
    if (level > 0) out.push([a.index[at * m.k + j], level * a.scale[at], level]);
  }
  return out;
}
function rowsOfPage(m) {
  const first = state.page * DATA.page;
  return [first, Math.min(m.rows, first + DATA.page)];
}
function labelOf(text) { return text.startsWith("##") ? text.slice(2) : text; }

// A map: rows of this page against every key; a weight's colour is its share of its row's
// largest, or of the page's largest (state.colour).
function drawMap(canvas, m, head, mark) {
  const ctx = canvas.getContext("2d"), [r0, r1] = rowsOfPage(m);
  const keys = DATA.sequences[m.key].length, w = canvas.width, h = canvas.height;
  const cw = w / keys, ch = h / Math.max(1, r1 - r0), scale = arrays(m).scale;
  let top = 0;
  for (let r = r0; r < r1; r++) top = Math.max(top, scale[head * m.rows + r]);
  ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, w, h);
  for (let r = r0; r < r1; r++) {
    for (const [key, weight, level] of row(m, head, r)) {
      const shade = state.colour === "row" ? level : weight / Math.max(top, 1e-30);
      ctx.fillStyle = `rgba(29,53,87,${(0.04 + 0.96 * shade).toFixed(3)})`;
      ctx.fillRect(key * cw, (r - r0) * ch, Math.max(1, cw), Math.max(1, ch));
    }
  }
  if (mark !== null && mark >= r0 && mark < r1) {
    ctx.strokeStyle = "#e76f51"; ctx.lineWidth = 2;
    ctx.strokeRect(1, (mark - r0) * ch, w - 2, Math.max(2, ch));
  }
}

// An image under a heat of where one row looks (the [CLS] row, or the mean over patch rows).
function lookedAt(m, head, query) {
  const p = DATA.picture, heat = new Float32Array(p.grid * p.grid);
  const rows = query !== null ? [query] : p.first ? [0] : [...Array(m.rows).keys()];
  for (const r of rows)
    for (const [key, weight] of row(m, head, r))
      if (key >= p.first && key < p.first + heat.length) heat[key - p.first] += weight / rows.length;
  return heat;
}
function drawPicture(canvas, m, head, query) {
  const p = DATA.picture, ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const px = w / p.width, py = h / p.height;
  let lo = Infinity, hi = -Infinity;
  for (const v of p.pixels) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (let y = 0; y < p.height; y++)
    for (let x = 0; x < p.width; x++) {
      const g = Math.round(255 * (p.pixels[y * p.width + x] - lo) / Math.max(hi - lo, 1e-9));
      ctx.fillStyle = `rgb(${g},${g},${g})`;
      ctx.fillRect(x * px, y * py, Math.ceil(px), Math.ceil(py));
    }
  const heat = lookedAt(m, head, query), top = Math.max(...heat, 1e-12);
  const cx = w / p.grid, cy = h / p.grid;
  for (let i = 0; i < heat.length; i++) {
    ctx.fillStyle = `rgba(255,90,20,${(0.75 * heat[i] / top).toFixed(3)})`;
    ctx.fillRect((i % p.grid) * cx, Math.floor(i / p.grid) * cy, cx, cy);
  }
  if (query !== null && query >= p.first) {
    const i = query - p.first;
    ctx.strokeStyle = "#2a9d8f"; ctx.lineWidth = 3;
    ctx.strokeRect((i % p.grid) * cx + 1.5, Math.floor(i / p.grid) * cy + 1.5, cx - 3, cy - 3);
  }
}

function flow(box, labels, first, last, cls) {
  box.textContent = "";
  box.classList.toggle("chips", labels.some(l => l.includes(" ")));  // titles, not words
  const spans = [];
  for (let i = first; i < last; i++) {
    const s = document.createElement("span");
    s.textContent = labelOf(labels[i]);
    s.className = cls + (labels[i].startsWith("##") ? " cont" : "");
    s.dataset.i = i;
    // a space before each word (not before a piece that continues one): where lines may break
    if (i > first && !labels[i].startsWith("##")) box.appendChild(document.createTextNode(" "));
    box.appendChild(s); spans.push(s);
  }
  return spans;
}

// BertViz-like lines, for pages short enough to read them: queries left, keys right.
const SVG = document.getElementById("lines").namespaceURI, LINE_ROWS = 96, STEP = 17;
function lineable(m) {
  const [r0, r1] = rowsOfPage(m);
  return !DATA.picture && r1 - r0 <= LINE_ROWS && DATA.sequences[m.key].length <= LINE_ROWS;
}
const WIDE = 28, CHAR = 7;  // labels are cut to WIDE characters of about CHAR pixels
function cut(label) { return label.length > WIDE ? label.slice(0, WIDE - 1) + "…" : label; }
let lineX = [0, 0];  // where lines start and end
function drawLabels(m) {
  const svg = document.getElementById("lines"), [r0, r1] = rowsOfPage(m);
  const keys = DATA.sequences[m.key], queries = DATA.sequences[m.query].slice(r0, r1);
  const widest = list => CHAR * Math.max(...list.map(l => cut(l).length), 1);
  lineX = [widest(queries) + 10, widest(queries) + 100];
  svg.textContent = "";
  svg.setAttribute("height", STEP * Math.max(r1 - r0, keys.length) + 10);
  svg.setAttribute("width", lineX[1] + widest(keys) + 20);
  const text = (x, y, label, anchor, cls, i) => {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", x); t.setAttribute("y", y); t.setAttribute("text-anchor", anchor);
    t.setAttribute("class", cls); t.dataset.i = i; t.textContent = cut(label);
    svg.appendChild(t); return t;
  };
  for (let r = r0; r < r1; r++) {
    const t = text(lineX[0] - 5, STEP * (r - r0 + 1), DATA.sequences[m.query][r], "end", "lq", r);
    t.addEventListener("mouseenter", () => { if (!state.pinned) look(r); });
  }
  keys.forEach((label, j) => text(lineX[1] + 5, STEP * (j + 1), label, "start", "lk", j));
}
function drawLines(m, query) {
  const svg = document.getElementById("lines"), [r0, r1] = rowsOfPage(m);
  svg.querySelectorAll("line").forEach(l => l.remove());
  svg.querySelectorAll("text.on").forEach(t => t.classList.remove("on"));
  for (let r = r0; r < r1; r++) {
    if (query !== null && r !== query) continue;
    for (const [key, , level] of row(m, state.head, r)) {
      const l = document.createElementNS(SVG, "line");
      l.setAttribute("x1", lineX[0]); l.setAttribute("y1", STEP * (r - r0 + 1) - 4);
      l.setAttribute("x2", lineX[1]); l.setAttribute("y2", STEP * (key + 1) - 4);
      l.setAttribute("stroke", "#1d3557"); l.setAttribute("stroke-width", 2);
      l.setAttribute("stroke-opacity", (query === null ? 0.35 : 1) * level);
      svg.insertBefore(l, svg.firstChild);
    }
  }
  if (query !== null) svg.querySelector(`text.lq[data-i="${query}"]`)?.classList.add("on");
}

let keySpans = [], hot = [];
function highlight(query) {
  for (const s of hot) { s.style.background = ""; s.classList.remove("hot"); }
  hot = [];
  const m = DATA.maps[state.map];
  if (query === null || DATA.picture) return;
  for (const [key, , level] of row(m, state.head, query)) {
    const s = keySpans[key];
    if (!s) continue;
    s.style.background = `rgba(42,157,143,${(0.15 + 0.85 * level).toFixed(3)})`;
    s.classList.add("hot"); hot.push(s);
  }
}

function look(query) {
  state.query = query;
  const m = DATA.maps[state.map];
  drawMap(document.getElementById("map"), m, state.head, query);
  if (DATA.picture) drawPicture(document.getElementById("picture"), m, state.head, query);
  if (lineable(m)) drawLines(m, query);
  highlight(query);
  const seq = DATA.sequences[m.query];
  const keys = DATA.sequences[m.key];
  document.getElementById("looks").textContent = query === null ? "" : "looks most at: " +
    row(m, state.head, query).slice(0, 8).map(([key, weight]) =>
      `“${labelOf(keys[key])}” ${key} (${(100 * weight).toFixed(1)}%)`).join(", ");
  document.getElementById("map-note").textContent = query === null ?
    `${m.label}, head ${state.head}: rows are ${m.query}, columns ${m.key}` :
    `${m.label}, head ${state.head}: “${labelOf(seq[query])}” (${m.query} ${query})`;
  document.getElementById("allocation").textContent = allocationText(m, state.head, query);
}

// What the layer's gates gave this head: over the example's tokens, or at the looked-at query.
function allocationText(m, head, query) {
  const a = m.allocation;
  if (!a) return "";
  const at = (g) => query !== null && g.per_token ? g.per_token[query][head] : g.head_mean[head];
  const where = query !== null ? "at this query" : "mean over the tokens";
  const out = [];
  if (a.mix) out.push(`mix (${where}): ` + at(a.mix).map((w, c) =>
    `{${a.mix.components[c]}} ${(100 * w).toFixed(1)}%`).join(" · "));
  if (a.diff) out.push(`diff: λ = ${a.diff.lambda.toFixed(3)}`);
  if (a.output_gate) out.push(`output gate σ (${where}): ${at(a.output_gate).toFixed(3)}`);
  if (a.route) out.push(`route weight (${where}): ${at(a.route).toFixed(3)}; this head serves ` +
    `${(100 * a.route.share[head]).toFixed(0)}% of the tokens`);
  return out.join("  —  ");
}

function drawHeadView() {
  const m = DATA.maps[state.map], [r0, r1] = rowsOfPage(m);
  document.getElementById("lines-box").style.display = lineable(m) ? "" : "none";
  if (lineable(m)) drawLabels(m);
  if (!DATA.picture) {
    document.getElementById("queries-title").textContent =
      `queries: ${m.query} ${r0}–${r1 - 1} (hover one to see where it looks; click to pin)`;
    document.getElementById("keys-title").textContent = `keys: ${m.key}`;
    flow(document.getElementById("queries"), DATA.sequences[m.query], r0, r1, "q").forEach(s => {
      s.addEventListener("mouseenter", () => { if (!state.pinned) look(+s.dataset.i); });
      s.addEventListener("click", () => {
        document.querySelectorAll(".q.pinned").forEach(x => x.classList.remove("pinned"));
        state.pinned = !(state.pinned && state.query === +s.dataset.i);
        if (state.pinned) s.classList.add("pinned");
        look(+s.dataset.i);
      });
    });
    keySpans = flow(document.getElementById("keys"), DATA.sequences[m.key], 0,
                    DATA.sequences[m.key].length, "k");
    hot = [];
  }
  let kept = 0;
  const a = arrays(m);
  for (let r = r0; r < r1; r++) kept += a.mass[state.head * m.rows + r] / 255;
  document.getElementById("mass").textContent =
    `the top ${m.k} weights kept per row hold ${(100 * kept / Math.max(1, r1 - r0)).toFixed(1)}% ` +
    `of these rows' attention`;
  look(state.pinned ? state.query : null);
}

function drawControls() {
  const m = DATA.maps[state.map], heads = document.getElementById("heads");
  heads.textContent = "head ";
  for (let h = 0; h < m.heads; h++) {
    const b = document.createElement("button");
    b.textContent = m.heads === 1 && m.label.startsWith("rollout") ? "mean of heads" : h;
    b.className = "head" + (h === state.head ? " on" : "");
    b.dataset.head = h;
    b.addEventListener("click", () => { state.head = h; drawControls(); drawHeadView(); });
    heads.appendChild(b);
  }
  const page = document.getElementById("page"), pages = Math.ceil(m.rows / DATA.page);
  page.textContent = "";
  for (let i = 0; i < pages; i++)
    page.add(new Option(`${i * DATA.page}–${Math.min(m.rows, (i + 1) * DATA.page) - 1} of ${m.rows}`, i));
  state.page = Math.min(state.page, pages - 1);
  page.value = state.page;
  document.getElementById("page-box").style.display = pages > 1 ? "" : "none";
  document.getElementById("layer").value = state.map;
}

function choose(map, head) {
  state.map = map; state.head = Math.min(head, DATA.maps[map].heads - 1);
  state.pinned = false; state.query = null;
  drawControls(); drawHeadView();
}

let modelDrawn = -1;
function drawModelView() {
  if (modelDrawn === state.page) return;
  modelDrawn = state.page;
  const grid = document.getElementById("grid");
  const most = Math.max(...DATA.maps.map(m => m.heads));
  grid.style.gridTemplateColumns = `repeat(${most + 1}, auto)`;
  grid.textContent = "";
  DATA.maps.forEach((m, i) => {
    const name = document.createElement("div");
    name.textContent = m.label; name.style.fontSize = ".8em"; name.style.alignSelf = "center";
    grid.appendChild(name);
    for (let h = 0; h < most; h++) {
      const fig = document.createElement("figure");
      if (h < m.heads) {
        const c = document.createElement("canvas");
        c.width = c.height = 110; c.className = "cell"; c.dataset.map = i; c.dataset.head = h;
        if (DATA.picture) drawPicture(c, m, h, null); else drawMap(c, m, h, null);
        c.addEventListener("click", () => { showTab("head"); choose(i, h); });
        const cap = document.createElement("figcaption");
        cap.textContent = m.label.startsWith("rollout") ? "rollout" : `head ${h}`;
        fig.append(c, cap);
      }
      grid.appendChild(fig);
    }
  });
}

function showTab(which) {
  document.getElementById("head-view").style.display = which === "head" ? "flex" : "none";
  document.getElementById("model-view").style.display = which === "model" ? "block" : "none";
  document.getElementById("tab-head").classList.toggle("on", which === "head");
  document.getElementById("tab-model").classList.toggle("on", which === "model");
  if (which === "model") drawModelView();
}

function start() {
  document.getElementById("title").textContent = DATA.title;
  const notes = document.getElementById("notes");
  const whole = DATA.maps.every(m => m.k === DATA.sequences[m.key].length);
  for (const n of [...DATA.notes, whole ? "every weight is kept" :
       `only the ${DATA.top} largest weights of each row are kept (rows over few keys keep all)`]) {
    const li = document.createElement("li"); li.textContent = n; notes.appendChild(li);
  }
  const layer = document.getElementById("layer");
  DATA.maps.forEach((m, i) => layer.add(new Option(m.label, i)));
  layer.addEventListener("change", () => choose(+layer.value, state.head));
  document.getElementById("page").addEventListener("change", e => {
    state.page = +e.target.value; state.pinned = false; drawHeadView();
  });
  const colour = document.getElementById("colour");
  colour.value = state.colour;
  colour.addEventListener("change", () => { state.colour = colour.value; modelDrawn = -1; drawHeadView(); });
  document.getElementById("tab-head").addEventListener("click", () => showTab("head"));
  document.getElementById("tab-model").addEventListener("click", () => showTab("model"));
  const map = document.getElementById("map");
  map.addEventListener("mousemove", e => {
    if (state.pinned) return;
    const m = DATA.maps[state.map], [r0, r1] = rowsOfPage(m), box = map.getBoundingClientRect();
    const r = r0 + Math.floor((e.clientY - box.top) / box.height * (r1 - r0));
    if (r >= r0 && r < r1 && r !== state.query) look(r);
  });
  if (DATA.picture) {
    document.getElementById("tokens").style.display = "none";
    document.getElementById("picture-note").textContent = DATA.picture.first ?
      "heat: where [CLS] looks; hover a patch to see where it looks" :
      "heat: mean over patches; hover a patch to see where it looks";
    const pic = document.getElementById("picture");
    pic.addEventListener("mousemove", e => {
      const p = DATA.picture, box = pic.getBoundingClientRect();
      const c = Math.floor((e.clientX - box.left) / box.width * p.grid);
      const r = Math.floor((e.clientY - box.top) / box.height * p.grid);
      if (c >= 0 && c < p.grid && r >= 0 && r < p.grid) look(p.first + r * p.grid + c);
    });
    pic.addEventListener("mouseleave", () => look(null));
  } else {
    document.getElementById("picture-box").style.display = "none";
  }
  choose(state.map, state.head);
}
start();
</script>
</body></html>
"""
