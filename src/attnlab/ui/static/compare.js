// The Compare screen: the store's runs filtered by experiment, task and program, with the keys
// that differ among them; the ticked runs' curves per epoch, and their main metric as bars beside
// the task's trivial baseline. Each run links to Inspect.
"use strict";

const COLOURS = ["#1d3557", "#e76f51", "#2a9d8f", "#b5838d", "#8e44ad", "#e9c46a", "#264653", "#6c757d"];
const NEWEST = 3;  // runs ticked by default

screens.compare = {

  rows: [], chosen: new Set(), touched: false, curves: {}, seq: 0, timer: null,

  init() {
    for (const id of ["cmp-experiment", "cmp-task"]) $(id).addEventListener("change", () => this.load());
    $("cmp-program").addEventListener("input", () => {
      clearTimeout(this.timer); this.timer = setTimeout(() => this.load(), 250);
    });
    $("cmp-refresh").addEventListener("click", () => { this.curves = {}; this.load(); });
  },

  show() { this.load(); },

  async load() {
    const seq = ++this.seq, query = new URLSearchParams();
    for (const name of ["experiment", "task", "program"])
      if ($("cmp-" + name).value) query.set(name, $("cmp-" + name).value);
    const {ok, data} = await api("GET", "/api/store/runs?" + query);
    if (seq !== this.seq) return;  // a newer filter is on its way
    $("cmp-error").textContent = ok ? "" : data.error;
    if (!ok) return;
    this.options("cmp-experiment", data.experiments, "every experiment");
    this.options("cmp-task", data.tasks, "every task");
    this.rows = data.runs;
    for (const r of this.rows) if (r.status === "RUNNING") delete this.curves[r.run_id];  // still growing
    const shown = new Set(this.rows.map(r => r.run_id));
    this.chosen = new Set([...this.chosen].filter(id => shown.has(id)));
    if (!this.touched && !this.chosen.size)
      this.rows.filter(r => r.score !== null).slice(0, NEWEST).forEach(r => this.chosen.add(r.run_id));
    this.table(data.differs, [...query].length > 0);
    await this.draw(seq);
  },

  // A filter's choices, keeping what is chosen.
  options(id, values, every) {
    const el = $(id), kept = el.value;
    el.replaceChildren(new Option(every, ""), ...values.map(v => new Option(v, v)));
    el.value = values.includes(kept) ? kept : "";
  },

  table(differs, filtered) {
    const empty = !this.rows.length;
    $("cmp-empty").hidden = !empty;
    $("cmp-empty").innerHTML = filtered ? "no run matches these filters"
      : 'no runs yet: start one on <a href="#run">Run</a>';
    $("cmp-count").textContent = empty ? "" : `${this.rows.length} run(s)` +
      (differs.length ? `; they differ in ${differs.length} setting(s)` : "");
    const head = ["", "run", "experiment", "task", "program", ...differs, "status", "main metric",
                  "baseline", "train s", "started"];
    const rows = this.rows.map(r => {
      const cells = [
        `<input type="checkbox" data-run="${escape(r.run_id)}"${this.chosen.has(r.run_id) ? " checked" : ""}>`,
        `<a href="#inspect?run=${encodeURIComponent(r.run_id)}" title="inspect this run">${escape(r.run)}</a>` +
          (r.pretrained ? ` <span class="tag" title="fine-tuned from a pretrained model">${escape(r.pretrained)}</span>` : ""),
        escape(r.experiment), escape(r.task ?? "—"), `<code>${escape(r.program ?? "—")}</code>`,
        ...differs.map(k => escape(r.differs[k] ?? "—")),
        escape(r.status),
        `<span title="${escape(r.label)}">${metric(r.score)}</span>`,
        r.baseline === null ? "—" : `<span title="${escape(r.baseline_label)}">${metric(r.baseline)}</span>`,
        r.train_seconds === null ? "—" : r.train_seconds.toFixed(0), escape(r.started)];
      return `<tr data-run="${escape(r.run_id)}">${cells.map(c => `<td>${c}</td>`).join("")}</tr>`;
    });
    $("cmp-table").innerHTML = empty ? "" :
      `<thead><tr>${head.map(h => `<th>${escape(h)}</th>`).join("")}</tr></thead><tbody>${rows.join("")}</tbody>`;
    for (const box of $("cmp-table").querySelectorAll("input[type=checkbox]"))
      box.addEventListener("change", () => {
        this.touched = true;
        box.checked ? this.chosen.add(box.dataset.run) : this.chosen.delete(box.dataset.run);
        this.draw(this.seq);
      });
  },

  // The ticked runs in the table's order, each with its colour.
  picked() {
    return this.rows.filter(r => this.chosen.has(r.run_id))
      .map((r, i) => ({...r, colour: COLOURS[i % COLOURS.length]}));
  },

  async draw(seq) {
    const runs = this.picked();
    await Promise.all(runs.filter(r => !this.curves[r.run_id]).map(async r => {
      const {ok, data} = await api("GET", `/api/store/runs/${encodeURIComponent(r.run_id)}/curves`);
      this.curves[r.run_id] = ok ? data : {};
      if (!ok) $("cmp-error").textContent = data.error;
    }));
    if (seq !== this.seq) return;
    $("cmp-legend").innerHTML = runs.map(r => `<span><i style="background:${r.colour}"></i>` +
      `${escape(r.run)} · ${escape(r.experiment)}${Object.entries(r.differs).map(([k, v]) =>
        ` · ${escape(k)}=${escape(v ?? "—")}`).join("")}</span>`).join("");
    this.lines(runs);
    this.bars(runs);
    document.body.dataset.compared = seq;  // tests wait for this
  },

  // One small line chart per metric: validation metrics first, then the epoch's loss.
  lines(runs) {
    const names = [...new Set(runs.flatMap(r => Object.keys(this.curves[r.run_id] || {})))]
      .sort((a, b) => (a.startsWith("val_") ? 0 : 1) - (b.startsWith("val_") ? 0 : 1) || a.localeCompare(b));
    $("cmp-curves").replaceChildren(...names.map(name => {
      const figure = document.createElement("figure"), canvas = document.createElement("canvas");
      canvas.width = 300; canvas.height = 170; canvas.dataset.metric = name;
      figure.append(canvas);
      const caption = document.createElement("figcaption");
      caption.textContent = name;
      figure.append(caption);
      this.chart(canvas, runs.map(r => ({colour: r.colour, points: (this.curves[r.run_id] || {})[name] || []})));
      return figure;
    }));
    if (!names.length) $("cmp-curves").textContent = runs.length ? "the ticked runs logged no curves"
      : "tick runs in the table to draw their curves";
  },

  chart(canvas, series) {
    const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
    const L = 44, R = 8, T = 8, B = 22;  // margins for the axes' numbers
    const all = series.flatMap(s => s.points);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
    if (!all.length) return;
    let [x0, x1] = [Math.min(...all.map(p => p.step)), Math.max(...all.map(p => p.step))];
    let [y0, y1] = [Math.min(...all.map(p => p.value)), Math.max(...all.map(p => p.value))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= 0.5 * (Math.abs(y0) || 1); y1 += 0.5 * (Math.abs(y1) || 1); }
    const px = x => L + (x - x0) / (x1 - x0) * (w - L - R), py = y => T + (y1 - y) / (y1 - y0) * (h - T - B);
    ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(L, T); ctx.lineTo(L, h - B); ctx.lineTo(w - R, h - B); ctx.stroke();
    ctx.fillStyle = "#555"; ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "right";
    ctx.fillText(metric(y1), L - 4, T + 8); ctx.fillText(metric(y0), L - 4, h - B);
    ctx.textAlign = "center";
    ctx.fillText(`step ${x0}`, L + 16, h - 6); ctx.fillText(String(x1), w - R - 10, h - 6);
    for (const s of series) {
      if (!s.points.length) continue;
      ctx.strokeStyle = ctx.fillStyle = s.colour; ctx.lineWidth = 2;
      ctx.beginPath();
      s.points.forEach((p, i) => i ? ctx.lineTo(px(p.step), py(p.value)) : ctx.moveTo(px(p.step), py(p.value)));
      ctx.stroke();
      for (const p of s.points) { ctx.beginPath(); ctx.arc(px(p.step), py(p.value), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    }
  },

  // Each ticked run's main metric as a bar; its task's trivial baseline a dark tick across it.
  bars(runs) {
    const canvas = $("cmp-bars"), ctx = canvas.getContext("2d"), row = 26, L = 170, R = 150;
    canvas.height = Math.max(1, runs.length) * row + 24;
    const w = canvas.width, values = runs.flatMap(r => [r.score, r.baseline]).filter(v => v !== null);
    const top = Math.max(...values, 0) <= 1 ? 1 : 1.05 * Math.max(...values);
    const px = v => L + v / top * (w - L - R);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, canvas.height);
    ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
    runs.forEach((r, i) => {
      const y = 6 + i * row;
      ctx.fillStyle = "#333"; ctx.textAlign = "right";
      ctx.fillText(`${r.run} · ${r.label}`.slice(0, 30), L - 6, y + row / 2 - 2);
      ctx.textAlign = "left";
      if (r.score === null) { ctx.fillStyle = "#888"; ctx.fillText("no score (not finished?)", L + 4, y + row / 2 - 2); return; }
      ctx.fillStyle = r.colour;
      ctx.fillRect(L, y + 3, Math.max(1, px(r.score) - L), row - 10);
      ctx.fillStyle = "#333";
      const beside = r.baseline === null ? "" : `  (${r.baseline_label} ${metric(r.baseline)})`;
      ctx.fillText(metric(r.score) + beside, Math.max(px(r.score), r.baseline === null ? 0 : px(r.baseline)) + 5, y + row / 2 - 2);
      if (r.baseline !== null) {
        ctx.strokeStyle = "#b00"; ctx.lineWidth = 2; ctx.setLineDash([3, 2]);
        ctx.beginPath(); ctx.moveTo(px(r.baseline), y); ctx.lineTo(px(r.baseline), y + row - 4); ctx.stroke();
        ctx.setLineDash([]);
      }
    });
    ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
    const axis = canvas.height - 16;
    ctx.beginPath(); ctx.moveTo(L, axis); ctx.lineTo(w - R, axis); ctx.stroke();
    ctx.fillStyle = "#555"; ctx.textAlign = "center";
    ctx.fillText("0", L, axis + 8); ctx.fillText(metric(top), w - R, axis + 8);
    const baselines = [...new Set(runs.filter(r => r.baseline !== null).map(r => r.baseline_label))];
    $("cmp-bars-note").innerHTML = !runs.length ? "tick runs in the table to compare them" :
      baselines.length ? `<span class="dash"></span> the task's trivial baseline (${baselines.map(escape).join(", ")}): ` +
        "what always answering the commonest class, copying the source or ranking by popularity scores"
      : "no trivial baseline logged for these runs (a generated task has none)";
  },
};
