// The Run screen: choose an experiment (shipped, uploaded, pasted) or your own data (a table or a
// folder of images, uploaded file by file), one or more programs checked as you type, extra
// settings; Start queues one training per program. The jobs list follows each job live through
// server-sent events: progress bar, latest metrics, a chart of the loss and the validation
// metric, Cancel, the error of a failed job, and links to Compare and Inspect when it is done.
"use strict";

const STREAMS = 4;  // live streams at once: the browser keeps only ~6 connections to one host
const TABLE = /\.(csv|tsv|jsonl|parquet)$/i, IMAGE = /\.(png|jpe?g)$/i;

screens.run = {

  jobs: {},  // id → {el, summary, es, n (last event number seen), loss: [[step, v]], metric: [[step, v]]}
  zoo: [],
  dataSets: [],

  init() {
    for (const r of document.querySelectorAll("input[name=source]")) r.addEventListener("change", () => this.source());
    $("exp-file").addEventListener("change", async () => {
      const f = $("exp-file").files[0];
      if (f) $("exp-text").value = await f.text();
    });
    $("exp-keep").addEventListener("click", () => this.keepExperiment());
    $("data-set").addEventListener("change", () => this.dataFacts());
    $("data-delete").addEventListener("click", () => this.deleteData());
    $("data-file").addEventListener("change", () => this.uploadTable());
    $("data-folder").addEventListener("change", () => this.uploadFolder());
    $("add-program").addEventListener("click", () => this.addProgram(""));
    $("start").addEventListener("click", () => this.start());
    api("GET", "/api/design/zoo").then(({ok, data}) => {
      if (ok) { this.zoo = data; for (const sel of document.querySelectorAll("#programs select")) this.fillZoo(sel); }
    });
    this.addProgram("scaled_dot ; causal ; softmax");
    this.experiments();
    this.data();
    this.refresh();
    // states and the queue, while the screen shows; the streams carry the details
    setInterval(() => { if (!$("run").hidden) this.refresh(); }, 1500);
  },

  show() { this.refresh(); },

  // -- the source: an experiment or your own data ---------------------------------------------

  source() {
    const own = document.querySelector("input[name=source]:checked").value === "data";
    $("src-experiment").hidden = own;
    $("src-data").hidden = !own;
  },

  async experiments(select) {
    const {ok, data} = await api("GET", "/api/experiments");
    if (!ok) return;
    const el = $("experiment"), keep = select || el.value;
    el.replaceChildren(...data.map(e => new Option(`${e.name} (${e.source})`, e.name)));
    if (keep) el.value = keep;
  },

  async keepExperiment() {
    const {ok, data} = await api("POST", "/api/experiments", {text: $("exp-text").value});
    $("exp-msg").textContent = ok ? `kept as ${data.name}` : data.error;
    $("exp-msg").classList.toggle("bad", !ok);
    if (ok) this.experiments(data.name);
  },

  async data(select) {
    const {ok, data} = await api("GET", "/api/data");
    if (!ok) return;
    this.dataSets = data;
    const el = $("data-set"), keep = select || el.value;
    el.replaceChildren(...data.map(d => new Option(d.name, d.name)));
    if (!data.length) el.add(new Option("none yet: upload one below", ""));
    if (keep && data.some(d => d.name === keep)) el.value = keep;
    $("data-upload").open = !data.length;
    this.dataFacts();
  },

  dataFacts() {
    const d = this.dataSets.find(x => x.name === $("data-set").value);
    $("data-delete").disabled = !d;
    if (!d) { $("data-facts").textContent = ""; return; }
    const images = d.format === "image-folder";
    const kb = (d.bytes / 1024).toFixed(1);
    $("data-facts").textContent = `${d.format || "empty"} · ${d.files} file${d.files === 1 ? "" : "s"} · ${kb} KiB` +
      (images ? ` · classes ${(d.classes || []).join(", ")}` : d.columns && d.columns.length ? ` · columns ${d.columns.join(", ")}` : "");
    $("data-table").hidden = images;
    $("data-images").hidden = !images;
    if (!images && d.format) {
      $("data-format").value = d.format;
      const cols = d.columns || [];
      $("data-columns").replaceChildren(...cols.map(c => new Option(c)));
      // the format's defaults where the file has them, else the first and the last column
      $("data-text").value = cols.includes("text") ? "text" : cols[0] || "text";
      $("data-label").value = cols.includes("label") ? "label" : cols[cols.length - 1] || "label";
    }
  },

  async deleteData() {
    const name = $("data-set").value;
    if (!name) return;
    const r = await fetch("/api/data/" + encodeURIComponent(name), {method: "DELETE", headers: this.auth()});
    const data = await r.json().catch(() => ({error: "the studio sent no JSON"}));
    if (r.ok) await this.data();  // the list first, so that its facts do not wipe the message
    $("data-facts").textContent = r.ok ? `deleted ${name}` : data.error;
  },

  auth() { return TOKEN ? {"Authorization": "Bearer " + TOKEN} : {}; },

  // One file per request, its body the raw bytes: no form encoding, and the server counts them.
  async put(name, relpath, file) {
    const path = relpath.split("/").map(encodeURIComponent).join("/");
    const r = await fetch(`/api/data/${encodeURIComponent(name)}/${path}`, {method: "PUT", headers: this.auth(), body: file});
    const data = await r.json().catch(() => ({error: "the studio sent no JSON"}));
    return r.ok ? null : data.error;
  },

  // A data set name from a file or folder name: what the server's name check takes.
  nameFrom(s) {
    return $("data-name").value.trim() || s.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64) || "data";
  },

  async uploadTable() {
    const file = $("data-file").files[0];
    if (!file) return;
    const name = this.nameFrom(file.name);
    $("data-progress").textContent = `uploading ${file.name}…`;
    const error = await this.put(name, file.name, file);
    $("data-progress").textContent = error || `kept ${file.name} as ${name}`;
    $("data-progress").classList.toggle("bad", !!error);
    $("data-file").value = "";
    if (!error) this.data(name);
  },

  async uploadFolder() {
    const all = [...$("data-folder").files];
    if (!all.length) return;
    // webkitRelativePath is "chosen-folder/class/file.png": the chosen folder names the data set
    const parts = f => f.webkitRelativePath.split("/");
    const name = this.nameFrom(parts(all[0])[0]);
    const files = all.filter(f => IMAGE.test(f.name) && !parts(f).some(p => p.startsWith(".")));
    const skipped = all.length - files.length;
    let done = 0, error = null;
    const tell = () => {
      $("data-progress").textContent = `${name}: ${done} / ${files.length} images` +
        (skipped ? ` (${skipped} other files left out)` : "") + (error ? ` — ${error}` : "");
      $("data-progress").classList.toggle("bad", !!error);
    };
    tell();
    const queue = files.slice();
    const worker = async () => {  // a few at once: faster than one by one, kind to the server
      while (queue.length && !error) {
        const f = queue.shift();
        const e = await this.put(name, parts(f).slice(1).join("/"), f);
        if (e) error = e; else done++;
        tell();
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    $("data-folder").value = "";
    this.data(name);
  },

  // -- programs, checked as you type ----------------------------------------------------------

  addProgram(text) {
    const row = document.createElement("div");
    row.className = "program";
    row.innerHTML = `<select title="the zoo"><option value="">zoo…</option></select>
      <input spellcheck="false" placeholder="scaled_dot ; causal ; softmax">
      <button class="small" title="remove">✕</button><pre class="error" hidden></pre>`;
    const [sel, input, remove] = row.children;
    this.fillZoo(sel);
    input.value = text;
    sel.addEventListener("change", () => { if (sel.value) { input.value = sel.selectedOptions[0].dataset.text; this.check(row); } });
    input.addEventListener("input", () => { sel.value = ""; clearTimeout(row.timer); row.timer = setTimeout(() => this.check(row), 200); });
    remove.addEventListener("click", () => row.remove());
    $("programs").append(row);
    if (text) this.check(row);
  },

  fillZoo(sel) {
    for (const e of this.zoo) {
      const o = new Option(e.name, e.name);
      o.dataset.text = e.text; o.title = e.description;
      sel.add(o);
    }
  },

  async check(row) {
    const input = row.querySelector("input"), pre = row.querySelector("pre");
    const text = input.value.trim();
    const seq = (row.checks = (row.checks || 0) + 1);
    if (!text) { row.dataset.state = ""; pre.hidden = true; return; }
    const {ok, data} = await api("POST", "/api/design/program", {text, seq: 16});
    if (seq !== row.checks) return;  // a newer edit is on its way
    row.dataset.state = ok ? "ok" : "error";
    pre.hidden = ok;
    pre.textContent = ok ? "" : data.detail || data.error;
  },

  // -- start -----------------------------------------------------------------------------------

  async start() {
    const rows = [...document.querySelectorAll("#programs .program")];
    const fail = msg => { $("start-error").hidden = false; $("start-error").textContent = msg; };
    for (const r of rows) if (r.dataset.state === "error") return fail("fix the program marked in red first (or remove it)");
    const body = {
      programs: rows.map(r => r.querySelector("input").value.trim()).filter(Boolean),
      set: $("settings").value.split("\n").map(s => s.trim()).filter(s => s && !s.startsWith("#")),
    };
    if (document.querySelector("input[name=source]:checked").value === "data") {
      const d = this.dataSets.find(x => x.name === $("data-set").value);
      if (!d) return fail("upload a data set first");
      const params = {};
      if (d.format === "image-folder") {
        if ($("data-size").value) params.size = Number($("data-size").value);
        if ($("data-colour").value !== "auto") params.colour = $("data-colour").value;
        body.data = {name: d.name, format: "image-folder", params};
      } else {
        for (const k of ["text", "label"]) if ($("data-" + k).value.trim()) params[k] = $("data-" + k).value.trim();
        body.data = {name: d.name, format: $("data-format").value, params};
      }
    } else {
      if (!$("experiment").value) return fail("choose an experiment (or upload one)");
      body.experiment = $("experiment").value;
    }
    $("start").disabled = true;
    $("start-error").hidden = true;
    const {ok, data} = await api("POST", "/api/runs", body);
    $("start").disabled = false;
    if (!ok) return fail(data.error);
    for (const job of data.jobs) this.update(job);
    this.refresh();
  },

  // -- the jobs list ---------------------------------------------------------------------------

  async refresh() {
    const [runs, queue] = await Promise.all([api("GET", "/api/runs"), api("GET", "/api/queue")]);
    if (queue.ok) {
      const q = queue.data;
      $("queue").textContent = `${q.running} running · ${q.queued} waiting · at most ${q.limit} at once`;
    }
    if (runs.ok) for (const job of runs.data) this.update(job);
  },

  card(summary) {
    let j = this.jobs[summary.id];
    if (j) return j;
    const el = document.createElement("article");
    el.className = "job";
    el.dataset.id = summary.id;
    el.dataset.events = "0";
    el.innerHTML = `<header><b>#${escape(summary.id)} ${escape(summary.name)}</b>
        <code class="program"></code><span class="state"></span><button class="small cancel">Cancel</button></header>
      <div class="bar"><div class="fill"></div></div>
      <div class="facts"></div>
      <canvas class="chart" width="420" height="100"></canvas>
      <pre class="error" hidden></pre>
      <div class="result" hidden></div>`;
    el.querySelector(".program").textContent = summary.program || "";
    el.querySelector(".cancel").addEventListener("click", () => this.cancel(summary.id));
    $("no-jobs").hidden = true;
    $("jobs").prepend(el);  // newest first
    j = this.jobs[summary.id] = {el, summary, es: null, n: -1, loss: [], metric: [], total: null, monitor: null,
                                 progress: null, validation: null, history: false};
    return j;
  },

  // A summary from the list, a start, a cancel or the stream's end: the card follows it.
  update(summary) {
    const j = this.card(summary);
    j.summary = {...j.summary, ...summary};
    // the list's latest step, unless the stream (numbered, newer) is telling already
    if (summary.progress && !j.es && summary.progress.n > j.n) this.onEvent(j, summary.progress, false);
    const done = ["finished", "failed", "cancelled"].includes(summary.state);
    if (done && j.es) { j.es.close(); j.es = null; }
    if (done && !j.history) { j.history = true; this.history(j); }
    if (!done && !j.es && Object.values(this.jobs).filter(x => x.es).length < STREAMS) this.stream(j);
    this.render(j);
  },

  // A job that ended before this page saw it: its events at once, for the chart.
  async history(j) {
    const {ok, data} = await api("GET", "/api/runs/" + encodeURIComponent(j.summary.id));
    if (!ok) return;
    for (const e of data.events) this.onEvent(j, e, true);
    this.render(j);
  },

  stream(j) {
    const es = j.es = new EventSource(withToken(`/api/runs/${encodeURIComponent(j.summary.id)}/events`));
    es.onmessage = m => { this.onEvent(j, JSON.parse(m.data), true); this.render(j); };
    es.addEventListener("end", m => { es.close(); j.es = null; j.history = true; this.update(JSON.parse(m.data)); });
    // on a dropped connection EventSource reconnects by itself, with Last-Event-ID
  },

  onEvent(j, e, numbered) {
    if (numbered) {
      if (e.n <= j.n) return;  // seen already (a replay after a reconnect, or the history)
      j.n = e.n;
      j.el.dataset.events = String(Number(j.el.dataset.events) + 1);  // tests count the live updates
    }
    if (e.kind === "started") {
      j.total = e.total; j.monitor = e.monitor;
      if (e.run_id) j.summary.run_id = e.run_id;
    } else if (e.kind === "step") {
      j.progress = e;
      if (e.total) j.total = e.total;
      if (numbered && e.loss !== null && e.loss !== undefined) j.loss.push([e.step, e.loss]);
    } else if (e.kind === "validation") {
      j.validation = e.metrics;
      const key = this.metricKey(j, e.metrics);
      if (key && numbered) j.metric.push([e.step, e.metrics[key]]);
    } else if (e.kind === "finished" || e.kind === "failed") {
      j.summary.state = e.kind;
      if (e.run_id) j.summary.run_id = e.run_id;
      if (e.error) j.summary.error = e.error;
      if (e.metrics) j.summary.metrics = e.metrics;
    }
  },

  metricKey(j, metrics) {
    if (j.monitor && j.monitor in metrics) return j.monitor;
    return Object.keys(metrics).find(k => k !== "val_loss") || null;
  },

  render(j) {
    const s = j.summary, el = j.el, p = j.progress;
    el.dataset.state = s.state;
    el.querySelector(".state").textContent = s.state;
    el.querySelector(".cancel").hidden = !["queued", "running"].includes(s.state);
    const total = j.total || (p && p.total);
    const frac = s.state === "finished" ? 1 : p && total ? Math.min(1, p.step / total) : 0;
    el.querySelector(".fill").style.width = (100 * frac).toFixed(1) + "%";
    el.dataset.progress = frac.toFixed(3);
    const facts = [];
    if (s.state === "queued") facts.push("waiting for a free place in the queue");
    const m = s.state === "finished" && s.metrics;
    if (m) facts.push(`${m.steps} steps`, `${m.epochs} epoch${m.epochs === 1 ? "" : "s"}`);  // steps are reported now and then: the end says
    else if (p) facts.push(`step ${p.step} / ${total || "?"}`, `epoch ${p.epoch + 1}`);
    if (!m && p && p.loss !== null && p.loss !== undefined) facts.push(`loss ${p.loss.toFixed(4)}`);
    for (const [k, v] of Object.entries(j.validation || {})) facts.push(`${k} ${metric(v)}`);
    el.querySelector(".facts").textContent = facts.join(" · ");
    const err = el.querySelector(".error");
    err.hidden = !s.error;
    err.textContent = s.error || "";
    const result = el.querySelector(".result");
    result.hidden = s.state !== "finished";
    if (m) {
      const main = m.main_metric || "test_accuracy";
      const shown = [[main, m[main]], ["test_loss", m.test_loss]].filter(([, v]) => v !== undefined && v !== null);
      result.innerHTML = shown.map(([k, v]) => `<span class="metric" data-name="${escape(k)}">${escape(k)} <b>${escape(metric(v))}</b></span>`).join(" · ") +
        (typeof m.train_seconds === "number" ? ` · trained in ${m.train_seconds.toFixed(1)} s` : "") +
        ` · <a href="#compare">compare</a>` +
        (s.run_id ? ` · <a href="#inspect?run=${encodeURIComponent(s.run_id)}">inspect</a>` : "");
    }
    this.chart(j);
  },


  // The loss (blue, scaled to its largest) and the validation metric (orange, 0–1 when it is a
  // fraction) against the step.
  chart(j) {
    const c = j.el.querySelector("canvas"), ctx = c.getContext("2d"), W = c.width, H = c.height, pad = 4;
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
    const steps = [...j.loss, ...j.metric].map(([s]) => s);
    const xmax = Math.max(j.total || 0, ...steps, 1);
    const line = (points, colour, lo, hi) => {
      if (!points.length) return;
      ctx.strokeStyle = ctx.fillStyle = colour; ctx.lineWidth = 1.5; ctx.beginPath();
      points.forEach(([s, v], i) => {
        const x = pad + (W - 2 * pad) * s / xmax, y = H - pad - (H - 2 * pad) * (v - lo) / ((hi - lo) || 1);
        if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
      });
      ctx.stroke();
    };
    const losses = j.loss.map(([, v]) => v), metrics = j.metric.map(([, v]) => v);
    line(j.loss, "#2a6fdb", 0, Math.max(...losses, 1e-9));
    const fraction = metrics.every(v => v >= 0 && v <= 1);
    line(j.metric, "#e0801e", fraction ? 0 : Math.min(...metrics), fraction ? 1 : Math.max(...metrics));
    ctx.font = "11px system-ui, sans-serif";  // the legend, top right: the loss starts top left
    ctx.textAlign = "right";
    ctx.fillStyle = "#e0801e"; ctx.fillText(j.monitor || "validation", W - pad - 2, 12);
    ctx.fillStyle = "#2a6fdb"; ctx.fillText("loss", W - pad - 2, 25);
    j.el.dataset.drawn = String(j.loss.length + j.metric.length);
    c.hidden = !(j.loss.length + j.metric.length);  // a job that never ran has nothing to draw
  },

  async cancel(id) {
    const {ok, data} = await api("POST", `/api/runs/${encodeURIComponent(id)}/cancel`);
    if (ok) this.update(data); else this.jobs[id].el.querySelector(".error").textContent = data.error;
    this.refresh();
  },
};
