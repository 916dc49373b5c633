// The Design screen: a program typed, checked as you type, its tree, mask and plan, a benchmark
// against SDPA, the zoo and the controls that rewrite the program text.
"use strict";

screens.design = {

  seq: 0, busy: false, again: false, changedAt: null,

  init() {
    $("program").addEventListener("input", () => { $("zoo").value = ""; this.update(); });
    for (const id of ["seq", "p-heads", "p-head_dim", "mode"]) $(id).addEventListener("change", () => this.update());
    for (const name of ["window", "global_tokens", "heads", "normalizer"])
      $("c-" + name).addEventListener("change", () => this.control(name));
    $("zoo").addEventListener("change", () => {
      const opt = $("zoo").selectedOptions[0];
      if (opt.value) { $("program").value = opt.dataset.text; this.update(); }
    });
    $("bench").addEventListener("click", () => this.bench());
    api("GET", "/api/design/zoo").then(({ok, data}) => {
      if (!ok) return;
      for (const e of data) {
        const o = new Option(e.name, e.name); o.dataset.text = e.text; o.title = e.description;
        $("zoo").add(o);
      }
    });
    this.update();
  },

  shape() {
    const num = id => $(id).value ? Number($(id).value) : null;
    return {text: $("program").value, seq: num("seq") || 64, heads: num("p-heads"),
            head_dim: num("p-head_dim"), training: $("mode").value === "training"};
  },

  // One question in flight at a time: a change asks at once; changes made while it is out wait
  // for its answer, which is dropped, and then the newest text is asked (keys typed faster than
  // the studio answers are asked about together). The response time runs from the first change
  // not yet asked about to its mask and plan drawn.
  async update() {
    this.changedAt ??= performance.now();
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    const seq = ++this.seq, t0 = this.changedAt;
    this.changedAt = null;
    let answer;
    try { answer = await api("POST", "/api/design/program", this.shape()); }
    catch (e) { answer = {ok: false, data: {error: "the studio did not answer: " + e.message}}; }
    finally { this.busy = false; }
    if (this.again) { this.again = false; return this.update(); }  // the text changed meanwhile
    if (answer.ok) this.draw(answer.data); else this.fail(answer.data);
    const ms = performance.now() - t0;
    document.body.dataset.responseMs = ms.toFixed(1);
    document.body.dataset.answers = seq;  // tests wait for a newer answer by this count
    $("timing").textContent = `answered in ${ms.toFixed(0)} ms`;
  },

  draw(data) {
    $("error").hidden = true;
    document.body.dataset.state = "ok";
    $("canonical").textContent = data.canonical;
    this.tree(data.tree);
    this.fill(data.controls);
    this.mask(data);
    $("backend").textContent = `→ ${data.plan.backend} (${data.plan.mode})`;
    $("plan").textContent = data.plan.text;
  },

  fail(data) {
    document.body.dataset.state = "error";
    $("error").hidden = false;
    $("error").textContent = data.detail || data.error;
  },

  tree(node) {
    const build = n => {
      const li = document.createElement("li");
      li.textContent = n.label;
      if (n.doc) { const d = document.createElement("span"); d.className = "doc"; d.textContent = "  " + n.doc; li.append(d); }
      if (n.children.length) { const ul = document.createElement("ul"); n.children.forEach(c => ul.append(build(c))); li.append(ul); }
      return li;
    };
    $("tree").replaceChildren(build(node));
  },

  fill(c) {
    for (const name of ["window", "global_tokens", "heads", "normalizer"]) {
      const el = $("c-" + name);
      el.disabled = !c.editable;
      if (!c.editable) continue;
      const v = c[name];
      if (name === "normalizer" && v && ![...el.options].some(o => o.value === v)) el.add(new Option(v));
      el.value = v === null ? "" : v;
    }
  },

  mask(data) {
    const canvas = $("mask"), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    const m = data.mask;
    let facts = `N ${data.seq} · density ${data.density === null ? "depends on call-time inputs" : data.density.toFixed(4)}`;
    if (data.blocks) {
      const b = data.blocks;
      facts += ` · blocks (${b.block}×${b.block}): ${b.empty} of ${b.total} empty → ${(100 * b.skippable).toFixed(1)}% skippable (${b.full} full, ${b.partial} partial)`;
    }
    $("facts").textContent = facts + (m && m.step > 1 ? ` · drawn ${m.side}×${m.side}, a cell is ${m.step}×${m.step}` : "");
    if (!m) return;
    const bytes = Uint8Array.from(atob(m.cells), ch => ch.charCodeAt(0));
    canvas.width = canvas.height = m.side;
    const img = ctx.createImageData(m.side, m.side);
    for (let i = 0; i < bytes.length; i++) {
      const f = bytes[i] / 255;  // the fraction visible: hidden is white, visible dark blue
      img.data.set([255 - f * 225, 255 - f * 215, 255 - f * 75, 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
  },

  async control(name) {
    const el = $("c-" + name);
    const value = name === "normalizer" ? el.value : (el.value ? Number(el.value) : null);
    if (value === null) return;
    const {ok, data} = await api("POST", "/api/design/rewrite", {text: $("program").value, [name]: value});
    if (!ok) return this.fail(data);
    $("program").value = data.text;
    this.update();
  },

  async bench() {
    const s = this.shape();
    const body = {text: s.text, seq: s.seq, training: s.training};
    if (s.heads) body.heads = s.heads;
    if (s.head_dim) body.head_dim = s.head_dim;
    $("bench-out").textContent = "running in a worker…";
    const {ok, data} = await api("POST", "/api/design/bench", body);
    if (!ok) { $("bench-out").textContent = data.error; return; }
    const poll = async () => {
      const r = await api("GET", "/api/design/bench/" + data.job);
      if (!r.ok) { $("bench-out").textContent = r.data.error; return; }
      if (r.data.state !== "done") return setTimeout(poll, 300);
      const rows = Object.entries(r.data.results).map(([k, v]) => v.error
        ? `<tr><th>${k}</th><td colspan="3">${escape(v.error)}</td></tr>`
        : `<tr><th>${k}</th><td>${escape(v.impl + (v.backend ? " → " + v.backend : ""))}</td>` +
          `<td>${v.median_ms.toFixed(2)} ms</td><td>${v.peak_mb.toFixed(1)} MiB peak</td></tr>`);
      $("bench-out").innerHTML = `<table class="bench">${rows.join("")}</table><small>${escape(r.data.device)}, N ${s.seq}</small>`;
    };
    poll();
  },
};
