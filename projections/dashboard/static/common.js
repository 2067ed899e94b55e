/* dealflow dashboard: shared helpers (token, API calls, formatting, DOM and SVG builders).
   Plain browser JavaScript, no build step, nothing fetched from elsewhere. */
"use strict";

const DF = (() => {
  const TOKEN_KEY = "dealflow.token";
  const params = new URLSearchParams(window.location.search);

  // -- the token: ?token= in the URL wins (and is remembered), else localStorage -------------
  function token() {
    const fromUrl = params.get("token");
    if (fromUrl) {
      try { localStorage.setItem(TOKEN_KEY, fromUrl); } catch (e) { /* storage disabled */ }
      return fromUrl;
    }
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }
  function setToken(value) {
    try { localStorage.setItem(TOKEN_KEY, value); } catch (e) { /* storage disabled */ }
    const url = new URL(window.location.href);
    url.searchParams.delete("token");
    window.location.href = url.toString();
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && (body.message || body.error || body.detail)) || ("HTTP " + status));
      this.status = status;
      this.body = body;
    }
  }

  async function api(path, query) {
    const url = new URL(path, window.location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
    }
    const response = await fetch(url, { headers: { Authorization: "Bearer " + token() } });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  // The OpenAPI document (no token needed) says which endpoints and query options exist, so
  // the page never asks for something the server does not have (no 404 noise, graceful
  // degradation while parts of the API are still being built).
  let openapi = null;
  async function spec() {
    if (openapi === null) {
      try {
        const response = await fetch("/openapi.json");
        openapi = response.ok ? await response.json() : { paths: {} };
      } catch (e) { openapi = { paths: {} }; }
    }
    return openapi;
  }
  async function hasPath(path) {
    const s = await spec();
    return Boolean(s.paths && s.paths[path] && s.paths[path].get);
  }
  async function hasParam(path, name) {
    const s = await spec();
    const op = s.paths && s.paths[path] && s.paths[path].get;
    return Boolean(op && (op.parameters || []).some((p) => p.name === name));
  }

  // -- formatting ---------------------------------------------------------------------------
  const num = (v) => (v === null || v === undefined || v === "" ? null : Number(v));
  function fmtInt(v) {
    const n = num(v);
    return n === null || Number.isNaN(n) ? "–" : Math.round(n).toLocaleString("en-US");
  }
  function fmtMoney(v, currency) {
    const n = num(v);
    if (n === null || Number.isNaN(n)) return "–";
    try {
      return n.toLocaleString("en-US", { style: "currency", currency: currency || "USD", maximumFractionDigits: 0 });
    } catch (e) {
      return Math.round(n).toLocaleString("en-US") + " " + (currency || "");
    }
  }
  function fmtPct(v) {
    const n = num(v);
    return n === null || Number.isNaN(n) ? "–" : (n * 100).toFixed(1) + "%";
  }
  function fmtDays(v) {
    const n = num(v);
    return n === null || Number.isNaN(n) ? "–" : n.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " d";
  }
  function fmtRatio(v) {
    const n = num(v);
    return n === null || Number.isNaN(n) ? "–" : n.toFixed(2) + "×";
  }
  function fmtTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, " UTC");
  }
  function fmtDate(iso) {
    if (!iso) return "–";
    return String(iso).slice(0, 10);
  }

  // -- DOM ----------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }
  // A figure the page shows, tagged with the API's raw value (data-value) for tests and tools.
  function figure(tag, metric, raw, text, extra) {
    return h(tag, Object.assign({ "data-metric": metric, "data-value": raw === null || raw === undefined ? "" : String(raw) }, extra || {}), text);
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") el.textContent = v;
      else el.setAttribute(k, String(v));
    }
    for (const child of children.flat()) if (child) el.append(child);
    return el;
  }

  /* Horizontal bars: rows [{label, value (0..max), text, title, color, attrs}]. */
  function hbars(rows, opts) {
    const o = Object.assign({ width: 560, labelWidth: 150, bar: 18, gap: 8, max: null, color: "#2f6fde", textWidth: 110 }, opts || {});
    const max = o.max !== null ? o.max : Math.max(1e-9, ...rows.map((r) => Number(r.value) || 0));
    const plot = o.width - o.labelWidth - o.textWidth;
    const height = Math.max(1, rows.length) * (o.bar + o.gap) + o.gap;
    const svg = s("svg", { viewBox: `0 0 ${o.width} ${height}`, width: o.width, height, role: "img", "aria-label": o.label || "bar chart" });
    rows.forEach((r, i) => {
      const y = o.gap + i * (o.bar + o.gap);
      const w = Math.max(0, (Number(r.value) || 0) / max) * plot;
      const g = s("g", r.attrs || {});
      g.append(
        s("text", { x: o.labelWidth - 8, y: y + o.bar * 0.72, "text-anchor": "end", text: clip(r.label, o.labelChars || 26) }, s("title", { text: r.label })),
        s("rect", { x: o.labelWidth, y, width: plot, height: o.bar, rx: 3, fill: "#eef1f6" }),
        s("rect", { x: o.labelWidth, y, width: Math.max(w, r.value ? 1.5 : 0), height: o.bar, rx: 3, fill: r.color || o.color }, r.title ? s("title", { text: r.title }) : null),
        s("text", { x: o.labelWidth + plot + 8, y: y + o.bar * 0.72, class: "muted", text: r.text })
      );
      svg.append(g);
    });
    return svg;
  }

  // replaceChildren, skipping null/false (conditional children).
  function fill(container, ...children) {
    container.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return container;
  }
  function clip(text, max) {
    const t = String(text);
    return t.length > max ? t.slice(0, max - 1) + "…" : t;
  }

  function showError(container, error) {
    container.replaceChildren(h("div", { class: "notice error" }, error && error.message ? error.message : String(error)));
  }

  return {
    params, token, setToken, api, ApiError, hasPath, hasParam,
    fmtInt, fmtMoney, fmtPct, fmtDays, fmtRatio, fmtTime, fmtDate, num,
    h, s, figure, hbars, showError, fill, clip,
  };
})();
