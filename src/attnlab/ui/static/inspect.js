// The Inspect screen: pick a finished run (pretrained ones marked), type an input, pick a test
// example or upload an image, and G's own view page opens in the iframe (its layer, head, model
// view and rollout controls work there); faithfulness is measured in the background and polled.
"use strict";

const PER_PAGE = 8;  // test examples listed at once
const MAX_UPLOAD = 4 * 2 ** 20;  // the server's limit too

screens.inspect = {

  runs: [], run: null, offset: 0, total: 0, views: 0, examplesSeq: 0, faithSeq: 0,

  init() {
    $("ins-run").addEventListener("change", () => { location.hash = "inspect?run=" + encodeURIComponent($("ins-run").value); });
    $("ins-text-form").addEventListener("submit", e => {
      e.preventDefault();
      if ($("ins-text").value.trim()) this.look({text: $("ins-text").value});
    });
    $("ins-image").addEventListener("change", () => this.upload());
    $("ins-prev").addEventListener("click", () => this.examples(Math.max(0, this.offset - PER_PAGE)));
    $("ins-next").addEventListener("click", () => this.examples(this.offset + PER_PAGE));
    $("ins-faith").addEventListener("click", () => this.faithfulness());
    $("ins-view").addEventListener("load", () => this.loaded());
  },

  async show(query) {
    const {ok, data} = await api("GET", "/api/inspect/runs");
    if (!ok) return this.fail(data.error);
    this.runs = data;
    const label = r => `${r.run} · ${r.experiment} · ${r.task}` +
      (r.pretrained ? ` · pretrained ${r.pretrained}` : "") + (r.components ? ` · mixture of ${r.components}` : "");
    $("ins-run").replaceChildren(
      new Option(data.length ? "pick a run…" : "no finished run yet: train one on Run", ""),
      ...data.map(r => new Option(label(r), r.run_id)));
    const wanted = query.get("run") || this.run;
    if (wanted && data.some(r => r.run_id === wanted)) {
      $("ins-run").value = wanted;
      if (wanted !== this.run) this.pick(wanted);
    } else if (query.get("run")) {
      this.fail(`run ${query.get("run").slice(0, 8)} is not a finished run with its folder on this machine`);
    }
  },

  fail(message) { $("ins-error").textContent = message; },

  pick(id) {
    this.run = id;
    const r = this.runs.find(x => x.run_id === id);
    this.fail("");
    $("ins-about").innerHTML = `<code>${escape(r.program ?? "")}</code>` +
      (r.pretrained ? ` <span class="tag">fine-tuned from ${escape(r.pretrained)}</span>` : "") +
      ` <small>started ${escape(r.started)}</small>`;
    // G's page draws a mixture's allocation itself, under the map of the chosen head.
    $("ins-alloc").hidden = !r.components;
    $("ins-alloc").textContent = r.components ? `a mixture of ${r.components} programs (K = ${r.components}): ` +
      "the view below shows what its gates allocate to each, per head, under the map (the mean " +
      "over the tokens; hover a query token for its own)" : "";
    $("ins-view").hidden = true;
    $("ins-view-note").hidden = false;
    $("ins-view-note").textContent = "G's view appears here: type an input or pick a test example.";
    $("ins-faith-out").replaceChildren();
    $("ins-faith-state").textContent = "";
    this.examples(0);
  },

  async examples(offset) {
    const seq = ++this.examplesSeq, run = this.run;
    const {ok, data} = await api("GET", `/api/inspect/runs/${encodeURIComponent(run)}/examples?offset=${offset}&limit=${PER_PAGE}`);
    if (seq !== this.examplesSeq) return;
    const image = ok && data.input === "image";
    $("ins-upload").hidden = !image;
    $("ins-text-form").hidden = image || (ok && data.input === "frames");
    $("ins-text").placeholder = ok && data.input === "ids" ? "token ids, separated by spaces"
      : "type an input to look at";
    if (!ok) {
      $("ins-examples").replaceChildren();
      $("ins-page").textContent = data.error;
      $("ins-prev").hidden = $("ins-next").hidden = true;
      return;
    }
    this.offset = data.offset; this.total = data.total;
    $("ins-examples").innerHTML = "<tr><th>#</th><th>input</th><th>label</th></tr>" + data.examples.map(e =>
      `<tr data-example="${e.index}"><td>${e.index}</td><td>${e.image ? `<img src="${e.image}" alt="test image ${e.index}">`
        : escape(e.text)}</td><td>${escape(e.label ?? "")}</td></tr>`).join("");
    for (const tr of $("ins-examples").querySelectorAll("tr[data-example]"))
      tr.addEventListener("click", () => this.look({example: tr.dataset.example}));
    $("ins-page").textContent = data.total ? `${data.offset + 1}–${data.offset + data.examples.length} of ${data.total}` : "no test examples";
    $("ins-prev").hidden = $("ins-next").hidden = false;
    $("ins-prev").disabled = data.offset === 0;
    $("ins-next").disabled = data.offset + PER_PAGE >= data.total;
  },

  // The view route in the iframe: G's page, or (for a bad input) the studio's JSON error.
  look(input) {
    if (!this.run) return this.fail("pick a run first");
    this.fail("");
    $("ins-view-note").hidden = false;
    $("ins-view-note").textContent = "drawing…";
    $("ins-view").src = withToken(`/api/inspect/runs/${encodeURIComponent(this.run)}/view?` + new URLSearchParams(input));
  },

  loaded() {
    const doc = $("ins-view").contentDocument;
    if (!doc || !$("ins-view").getAttribute("src")) return;
    let error = null;
    if (doc.contentType !== "text/html") {
      try { error = JSON.parse(doc.body.textContent).error; } catch { error = "the studio sent no view"; }
    }
    $("ins-view").hidden = error !== null;
    $("ins-view-note").hidden = error === null;
    $("ins-view-note").textContent = "";
    if (error !== null) this.fail(error);
    else $("ins-view").style.height = Math.max(600, doc.documentElement.scrollHeight + 20) + "px";
    document.body.dataset.views = ++this.views;  // tests wait for this
    document.body.dataset.view = error === null ? "ok" : "error";
  },

  async upload() {
    const file = $("ins-image").files[0];
    if (!file) return;
    if (file.size > MAX_UPLOAD) return this.fail(`the image is over ${MAX_UPLOAD / 2 ** 20} MB; pick a smaller one`);
    const headers = {"Content-Type": "application/octet-stream"};
    if (TOKEN) headers["Authorization"] = "Bearer " + TOKEN;
    const r = await fetch("/api/inspect/images", {method: "PUT", headers, body: file});
    const data = await r.json().catch(() => ({error: "the studio sent no JSON"}));
    if (!r.ok) return this.fail(data.error);
    this.look({image: data.image});
  },

  async faithfulness() {
    if (!this.run) return this.fail("pick a run first");
    const seq = ++this.faithSeq;
    const body = {examples: Number($("ins-faith-n").value) || 100, seed: Number($("ins-faith-seed").value) || 0};
    $("ins-faith-out").replaceChildren();
    $("ins-faith-state").textContent = "measuring in the background…";
    let {ok, data} = await api("POST", `/api/inspect/runs/${encodeURIComponent(this.run)}/faithfulness`, body);
    while (ok && data.state === "running") {
      await new Promise(done => setTimeout(done, 500));
      if (seq !== this.faithSeq) return;
      ({ok, data} = await api("GET", "/api/inspect/faithfulness/" + data.job));
    }
    if (seq !== this.faithSeq) return;
    if (!ok || data.state === "error") {
      $("ins-faith-state").textContent = "";
      return this.fail(ok ? data.error : data.error);
    }
    this.faithTable(data.result, data.cached);
  },

  faithTable(found, cached) {
    const t = found.table;
    $("ins-faith-state").textContent = `${found.examples} test examples` +
      (found.skipped ? `, ${found.skipped} without a unit skipped` : "") +
      `; ${found.seconds} s${cached ? " (kept from an earlier measurement)" : ""}`;
    $("ins-faith-out").innerHTML =
      `<table class="faith-table"><thead><tr><th>importance</th>${t.columns.map(c => `<th>${escape(c)}</th>`).join("")}</tr></thead>` +
      `<tbody>${t.rows.map(r => `<tr><th>${escape(r.importance)}</th>${r.cells.map(c =>
        `<td class="m${c.mark === "✓" ? "-yes" : c.mark === "✗" ? "-no" : c.mark === "~" ? "-same" : ""}">` +
        `${c.value.toFixed(3)} ${c.mark}</td>`).join("")}</tr>`).join("")}</tbody></table>` +
      `<p class="legend">${escape(t.legend)}</p><ul>${t.verdicts.map(v => `<li>${escape(v)}</li>`).join("")}</ul>` +
      `<p class="legend">erasing: ${escape(found.erasing)}; gradient ${escape(found.gradient)}; ` +
      `random: mean of ${found.random_draws} seeded draws</p>`;
  },
};
