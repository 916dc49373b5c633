// The studio page's shared parts: the API call, element lookup, escaping, and the screens'
// registry with its router (#design, #run, #compare, #inspect?run=ID). Plain JS, no build step;
// each screen is a file of its own that registers itself in `screens`.
"use strict";

const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");  // kept for the API calls; the server also sets a cookie

async function api(method, path, body) {
  const headers = {"Content-Type": "application/json"};
  if (TOKEN) headers["Authorization"] = "Bearer " + TOKEN;
  const r = await fetch(path, {method, headers, body: body ? JSON.stringify(body) : undefined});
  const data = await r.json().catch(() => ({error: "the studio sent no JSON"}));
  return {ok: r.ok, status: r.status, data};
}

// A URL the browser fetches by itself (EventSource, iframe, img): the token rides along as ?token=.
function withToken(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

const $ = id => document.getElementById(id);

function escape(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }

// A metric as every screen shows it: counts whole, scores to 3 decimals, large values to 1.
function metric(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(3);
}

// Each screen: {init() once, on first showing; show(query) every time it is shown}.
const screens = {};

function route() {
  const [name, query] = (location.hash.slice(1) || "design").split("?");
  const screen = screens[name] ? name : "design";
  for (const el of document.querySelectorAll("main")) el.hidden = el.id !== screen;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === "#" + screen);
  const s = screens[screen];
  if (!s.ready) { s.ready = true; s.init(); }
  if (s.show) s.show(new URLSearchParams(query || ""));
  document.body.dataset.screen = screen;
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
