// budgetgraph's cost dashboard: renders /budgetgraph/api/report (the same document as
// `budgetgraph report --json`) and /budgetgraph/api/runs/THREAD. Every figure shown
// carries its raw value in `data-value` and its place in the report in `data-figure`,
// so what the page shows can be checked against the report. Text from the server is
// only ever set as text (textContent), never parsed as HTML.
"use strict";

const BASE = "/budgetgraph/";
const KEY_STORAGE = "budgetgraph.apiKey";
const PALETTE = ["#2f6fdd", "#1f8a4c", "#b7791f", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];
const charts = {};
let me = null;

// ---------------------------------------------------------------------------- helpers

function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  if (options.cls) node.className = options.cls;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  for (const [name, value] of Object.entries(options.data || {})) {
    if (value !== undefined && value !== null) node.dataset[name] = String(value);
  }
  for (const [name, value] of Object.entries(options.attrs || {})) node.setAttribute(name, value);
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const fmt = {
  usd: (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(6)} USD`),
  int: (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US")),
  pct: (v) => (v === null || v === undefined ? "–" : `${(Number(v) * 100).toFixed(1)}%`),
  ms: (v) => (v === null || v === undefined ? "–" : `${Number(v).toLocaleString("en-US")} ms`),
  text: (v) => (v === null || v === undefined || v === "" ? "–" : String(v)),
  time: (v) => (v ? String(v).slice(0, 19).replace("T", " ") : "–"),
};

function amount(unit, value) {
  return unit === "micro_usd" ? fmt.usd(value / 1e6) : `${fmt.int(value)} tokens`;
}

function figure(path, value, format) {
  return el("span", { cls: "figure", text: format(value), data: { figure: path, value: value } });
}

function card(label, path, value, format, note) {
  return el(
    "div",
    { cls: "card" },
    el("div", { cls: "label", text: label }),
    el("div", { cls: "value" }, figure(path, value, format)),
    note ? el("div", { cls: "note", text: note }) : null,
  );
}

// A table of `rows`; each column is {field, title, format, num, path, cell}.
function table(group, columns, rows, keyField = "key") {
  if (!rows || rows.length === 0) return el("p", { cls: "empty", text: "Nothing recorded." });
  const head = el("tr", {}, ...columns.map((c) => el("th", { cls: c.num ? "num" : "", text: c.title })));
  const body = rows.map((row) => {
    const tr = el("tr", { data: { group: group, key: row[keyField] } });
    for (const c of columns) {
      if (c.cell) {
        tr.append(c.cell(row));
        continue;
      }
      const value = row[c.field];
      tr.append(
        el("td", { cls: c.num ? "num" : "", text: (c.format || fmt.text)(value), data: { field: c.field, value: value } }),
      );
    }
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function put(id, ...nodes) {
  const target = document.getElementById(id);
  target.replaceChildren(...nodes);
}

function status(message, isError = false) {
  const node = document.getElementById("status");
  node.textContent = message || "";
  node.classList.toggle("error", Boolean(isError));
}

// ---------------------------------------------------------------------------- the API

class Unauthorized extends Error {}

async function api(path) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { Accept: "application/json" };
  if (key) headers["x-api-key"] = key;
  const response = await fetch(BASE + "api/" + path, { headers, credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized("unauthorized");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

// ---------------------------------------------------------------------------- charts

// A bar chart of USD: one colour over time, one per bar for categories (`horizontal`).
function barChart(id, labels, values, horizontal = false) {
  if (charts[id]) charts[id].destroy();
  if (typeof Chart === "undefined") return;
  charts[id] = new Chart(document.getElementById(id), {
    type: "bar",
    data: {
      labels,
      datasets: [
        {
          label: "USD",
          data: values,
          backgroundColor: horizontal ? labels.map((_, i) => PALETTE[i % PALETTE.length]) : PALETTE[0],
        },
      ],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: horizontal ? "y" : "x",
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { label: (ctx) => fmt.usd(horizontal ? ctx.parsed.x : ctx.parsed.y) } },
      },
      scales: { [horizontal ? "x" : "y"]: { beginAtZero: true } },
    },
  });
}

// ---------------------------------------------------------------------------- overview

const GROUP_COLUMNS = [
  { field: "key", title: "" },
  { field: "calls", title: "calls", num: true, format: fmt.int },
  { field: "tokens", title: "tokens", num: true, format: fmt.int },
  { field: "cost_usd", title: "USD", num: true, format: (v) => Number(v).toFixed(6) },
];

function renderGroups(report, name, label) {
  const rows = report[name];
  const columns = [{ ...GROUP_COLUMNS[0], title: label }, ...GROUP_COLUMNS.slice(1)];
  return { rows, table: table(name, columns, rows) };
}

function renderCards(report) {
  const r = report;
  put(
    "cards",
    card("Spend", "total.cost_usd", r.total.cost_usd, fmt.usd, `${fmt.int(r.total.calls)} calls`),
    card("Tokens", "total.tokens", r.total.tokens, fmt.int, `${fmt.int(r.total.input_tokens)} in, ${fmt.int(r.total.output_tokens)} out`),
    card("Calls", "total.calls", r.total.calls, fmt.int),
    card("Runs", "runs.count", r.runs.count, fmt.int, `${fmt.usd(r.runs.avg_cost_usd)} a run`),
    card("Cache hits", "cache.hits", r.cache.hits, fmt.int, `${fmt.pct(r.cache.hit_rate)} of ${fmt.int(r.cache.lookups)} lookups`),
    card("Net savings", "savings.net_usd", r.savings.net_usd, fmt.usd, "cache and routing"),
    card("Routing saved", "routing.saved_usd", r.routing.saved_usd, fmt.usd, `${r.routing.calls} routed calls vs ${r.routing.baseline_tier}`),
    card("Alerts", "alerts.length", r.alerts.length, fmt.int),
  );
}

function meter(used, elapsed) {
  const fill = el("div", { cls: "fill" + (used >= 1 ? " bad" : used >= 0.7 ? " warn" : "") });
  fill.style.width = `${Math.min(100, used * 100).toFixed(1)}%`;
  const box = el("div", { cls: "meter", attrs: { title: `${fmt.pct(used)} used, ${fmt.pct(elapsed)} of the window passed` } }, fill);
  const mark = el("div", { cls: "mark" });
  mark.style.left = `${Math.min(100, elapsed * 100).toFixed(1)}%`;
  box.append(mark);
  return box;
}

function renderWindows(report) {
  const now = Date.now();
  const rows = report.windows.map((w) => {
    const start = Date.parse(w.start);
    const end = Date.parse(w.end);
    const elapsed = Math.max(0.001, Math.min(1, (now - start) / (end - start)));
    return { ...w, key: `${w.tenant}/${w.limit}`, elapsed, projected: w.used / elapsed };
  });
  const columns = [
    { field: "tenant", title: "tenant" },
    { field: "limit", title: "cap" },
    { title: "used", num: true, cell: (w) => el("td", { cls: "num", text: amount(w.unit, w.spent), data: { field: "spent", value: w.spent } }) },
    { title: "of", num: true, cell: (w) => el("td", { cls: "num", text: amount(w.unit, w.cap), data: { field: "cap", value: w.cap } }) },
    { title: "left", num: true, cell: (w) => el("td", { cls: "num", text: amount(w.unit, w.left), data: { field: "left", value: w.left } }) },
    { field: "used", title: "share", num: true, format: fmt.pct },
    { title: "", cell: (w) => el("td", {}, meter(w.used, w.elapsed)) },
    {
      title: "pace",
      cell: (w) => {
        const ahead = w.projected > 1;
        const text = `${ahead ? "ahead of pace" : "on pace"}: ${fmt.pct(w.projected)} of the cap by ${fmt.time(w.end)}`;
        return el("td", { cls: ahead ? "pace-ahead" : "pace-ok", text, data: { field: "projected", value: w.projected.toFixed(4) } });
      },
    },
    {
      title: "this hour (pacing)",
      cell: (w) =>
        w.pacing
          ? el("td", {
              text: `${fmt.usd(w.pacing.hour_spent_usd)} of ${fmt.usd(w.pacing.hour_allowed_usd)} allowed (×${w.pacing.factor})`,
              data: { field: "hour_allowed", value: w.pacing.hour_allowed },
            })
          : el("td", { text: "–" }),
    },
  ];
  put(
    "windows",
    rows.length
      ? table("windows", columns, rows)
      : el("p", { cls: "empty", text: "No hourly, daily or monthly cap is set in budgets.yaml's `windows`." }),
  );
}

// Every hour (or day) from the first to the last with spend, those without at 0 USD.
function continuous(rows, stepMs, toKey) {
  if (rows.length === 0) return [];
  const spent = new Map(rows.map((r) => [r.key, r.cost_usd]));
  const parse = (key) => Date.parse(key.length === 13 ? `${key}:00:00Z` : `${key}T00:00:00Z`);
  const out = [];
  const last = parse(rows[rows.length - 1].key);
  for (let t = parse(rows[0].key); t <= last && out.length < 2000; t += stepMs) {
    const key = toKey(new Date(t).toISOString());
    out.push({ key, cost_usd: spent.get(key) || 0 });
  }
  return out;
}

function renderTimelines(report) {
  const hours = continuous(report.by_hour, 3600e3, (iso) => iso.slice(0, 13));
  const days = continuous(report.by_day, 86400e3, (iso) => iso.slice(0, 10));
  const hourLabel = (key) => `${key.slice(5, 10)} ${key.slice(11, 13)}:00`;
  barChart("chart-hour", hours.map((h) => hourLabel(h.key)), hours.map((h) => h.cost_usd));
  barChart("chart-day", days.map((d) => d.key), days.map((d) => d.cost_usd));
  put("table-hour", renderGroups(report, "by_hour", "hour (UTC)").table);
  put("table-day", renderGroups(report, "by_day", "day (UTC)").table);
}

function renderBreakdowns(report) {
  for (const [name, id, label] of [
    ["by_node", "node", "node"],
    ["by_model", "model", "model"],
    ["by_tier", "tier", "tier"],
  ]) {
    const { rows, table: t } = renderGroups(report, name, label);
    barChart(`chart-${id}`, rows.map((r) => r.key), rows.map((r) => r.cost_usd), true);
    put(`table-${id}`, t);
  }
  const many = me && me.all_tenants && !report.tenant;
  document.getElementById("tenants-panel").hidden = !many;
  if (many) put("table-tenant", renderGroups(report, "by_tenant", "tenant").table);
}

function renderSavings(report) {
  const c = report.cache;
  const r = report.routing;
  const s = report.savings;
  const row = (label, path, value, format) =>
    el("tr", {}, el("th", { text: label }), el("td", { cls: "num" }, figure(path, value, format)));
  put(
    "savings",
    el(
      "table",
      {},
      el(
        "tbody",
        {},
        row("Cache hits (exact)", "cache.exact_hits", c.exact_hits, fmt.int),
        row("Cache hits (semantic)", "cache.semantic_hits", c.semantic_hits, fmt.int),
        row("Cache misses", "cache.misses", c.misses, fmt.int),
        row("Hit rate", "cache.hit_rate", c.hit_rate, fmt.pct),
        row("Saved by the cache", "cache.saved_usd", c.saved_usd, fmt.usd),
        row(`Routed calls (vs ${r.baseline_tier}, ${r.baseline_model})`, "routing.calls", r.calls, fmt.int),
        row("Routed below it", "routing.down", r.down, fmt.int),
        row("Routed above it", "routing.up", r.up, fmt.int),
        row("Routed to the local tier", "routing.local", r.local, fmt.int),
        row("Routed calls at the default tier", "routing.baseline_usd", r.baseline_usd, fmt.usd),
        row("What they cost", "routing.actual_usd", r.actual_usd, fmt.usd),
        row("Saved by routing", "routing.saved_usd", r.saved_usd, fmt.usd),
        row("Net savings", "savings.net_usd", s.net_usd, fmt.usd),
        row("All calls at premium", "premium.cost_usd", report.premium.cost_usd, fmt.usd),
      ),
    ),
  );
}

function renderAlerts(report) {
  const rows = report.alerts.map((a, i) => ({ ...a, key: `${a.scope}/${a.limit}/${a.threshold}`, index: i }));
  put(
    "alerts",
    rows.length
      ? table("alerts", [
          { field: "ts", title: "when (UTC)", format: fmt.time },
          { field: "tenant", title: "tenant" },
          { field: "limit", title: "cap" },
          { field: "scope", title: "scope" },
          { field: "threshold", title: "at", num: true, format: fmt.pct },
        ], rows)
      : el("p", { cls: "empty", text: "No cap has reached an alert threshold." }),
  );
}

function renderLatency(report) {
  const columns = (label) => [
    { field: "key", title: label },
    { field: "calls", title: "calls", num: true, format: fmt.int },
    { field: "p50_ms", title: "p50", num: true, format: fmt.ms },
    { field: "p95_ms", title: "p95", num: true, format: fmt.ms },
    { field: "p99_ms", title: "p99", num: true, format: fmt.ms },
    { field: "errors", title: "errors", num: true, format: fmt.int },
    { field: "error_rate", title: "error rate", num: true, format: fmt.pct },
  ];
  put("latency-node", table("latency.by_node", columns("node"), report.latency.by_node));
  put("latency-model", table("latency.by_model", columns("model"), report.latency.by_model));
}

function renderRuns(report) {
  const columns = [
    {
      title: "run",
      cell: (r) => {
        const link = el("a", { text: r.thread_id, attrs: { href: `${BASE}runs/${encodeURIComponent(r.thread_id)}` } });
        return el("td", { cls: "mono", data: { field: "thread_id", value: r.thread_id } }, link);
      },
    },
    { field: "tenant", title: "tenant" },
    { field: "last", title: "last spend (UTC)", format: fmt.time },
    { field: "nodes", title: "nodes", format: (v) => (v || []).join(", ") },
    { field: "calls", title: "calls", num: true, format: fmt.int },
    { field: "tokens", title: "tokens", num: true, format: fmt.int },
    { field: "cost_usd", title: "USD", num: true, format: (v) => Number(v).toFixed(6) },
  ];
  put("runs", table("runs.recent", columns, report.runs.recent, "thread_id"));
}

function renderRecommendations(report) {
  const items = report.recommendations.map((line) => el("li", { text: line }));
  put("recommendations", ...(items.length ? items : [el("li", { text: "None." })]));
}

async function showOverview() {
  const params = new URLSearchParams();
  const tenant = me.all_tenants ? document.getElementById("tenant").value : "";
  const since = document.getElementById("since").value;
  if (tenant) params.set("tenant", tenant);
  if (since) params.set("since", since);
  status("Loading…");
  const report = await api("report" + (params.toString() ? `?${params}` : ""));
  document.getElementById("overview").hidden = false;
  document.getElementById("overview").dataset.tenant = report.tenant || "";
  renderCards(report);
  renderWindows(report);
  renderTimelines(report);
  renderBreakdowns(report);
  renderSavings(report);
  renderAlerts(report);
  renderLatency(report);
  renderRuns(report);
  renderRecommendations(report);
  const scope = report.tenant ? `tenant ${report.tenant}` : "every tenant";
  status(`Spend of ${scope}${report.since ? ` since ${fmt.time(report.since)}` : ""}, as of ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC.`);
  document.body.dataset.ready = "overview";
}

// ---------------------------------------------------------------------------- one run

async function showRun(threadId) {
  status("Loading…");
  const run = await api(`runs/${encodeURIComponent(threadId)}`);
  document.getElementById("run").hidden = false;
  put("run-title", document.createTextNode(`Run ${run.thread_id}`));
  put(
    "run-cards",
    card("Tenant", "tenant", run.tenant, fmt.text),
    card("Spend", "total.cost_usd", run.total.cost_usd, fmt.usd),
    card("Calls", "total.calls", run.total.calls, fmt.int),
    card("Tokens", "total.tokens", run.total.tokens, fmt.int),
  );
  renderTrace(run.trace);
  const calls = run.calls.map((c, i) => ({ ...c, key: String(i) }));
  put(
    "run-calls",
    table("calls", [
      { field: "ts", title: "settled (UTC)", format: fmt.time },
      { field: "node", title: "node" },
      { field: "tier", title: "tier" },
      { field: "model", title: "model" },
      { field: "input_tokens", title: "in", num: true, format: fmt.int },
      { field: "output_tokens", title: "out", num: true, format: fmt.int },
      { field: "cost_usd", title: "USD", num: true, cell: (c) => el("td", { cls: "num", text: (c.cost_micro_usd / 1e6).toFixed(6), data: { field: "cost_micro_usd", value: c.cost_micro_usd } }) },
      { field: "latency_ms", title: "latency", num: true, format: fmt.ms },
      { field: "cache", title: "cache" },
      { field: "decisions", title: "decisions", format: (d) => (d || []).map((x) => `${x.plugin}: ${x.action} (${x.reason})`).join("; ") },
    ], calls),
  );
  status(`${run.total.calls} calls recorded for this run.`);
  document.body.dataset.ready = "run";
}

function renderTrace(trace) {
  if (!trace) {
    put(
      "trace",
      el("p", {
        cls: "empty",
        text:
          "The server's local span store has no spans for this run. With OTLP export configured " +
          "(OTEL_EXPORTER_OTLP_ENDPOINT), find the trace in Jaeger or Phoenix by this thread id " +
          "(gen_ai.conversation.id).",
      }),
    );
    return;
  }
  const total = Math.max(1, trace.totals.duration_ms);
  const columns = [
    {
      title: "span",
      cell: (s) => {
        const td = el("td", { text: s.name });
        td.style.paddingLeft = `${6 + s.depth * 16}px`;
        return td;
      },
    },
    { field: "kind", title: "kind" },
    { field: "model", title: "model" },
    { field: "tier", title: "tier" },
    { field: "duration_ms", title: "ms", num: true, format: (v) => Number(v).toFixed(1) },
    { field: "input_tokens", title: "in", num: true, format: fmt.int },
    { field: "output_tokens", title: "out", num: true, format: fmt.int },
    { field: "cost_usd", title: "USD", num: true, format: (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(6)) },
    {
      title: "",
      cell: (s) => {
        const bar = el("div", { cls: `span ${s.kind}${s.status === "ERROR" ? " error" : ""}` });
        bar.style.left = `${((s.offset_ms / total) * 100).toFixed(2)}%`;
        bar.style.width = `${((s.duration_ms / total) * 100).toFixed(2)}%`;
        return el("td", {}, el("div", { cls: "waterfall" }, bar));
      },
    },
  ];
  const rows = trace.spans.map((s) => ({ ...s, key: s.span_id }));
  const ids = el("p", { cls: "empty", text: `Trace ${trace.trace_ids.join(", ")}: ${trace.totals.spans} spans over ${Number(trace.totals.duration_ms).toFixed(0)} ms.` });
  put("trace", ids, table("spans", columns, rows));
}

// ---------------------------------------------------------------------------- start

function showLogin(message) {
  document.getElementById("overview").hidden = true;
  document.getElementById("run").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("api-key").focus();
  status("");
}

async function start() {
  document.getElementById("login").hidden = true;
  try {
    me = await api("me");
  } catch (error) {
    if (error instanceof Unauthorized) {
      const had = sessionStorage.getItem(KEY_STORAGE);
      sessionStorage.removeItem(KEY_STORAGE);
      showLogin(had ? "That key is not one this server knows." : "");
      return;
    }
    status(`Could not reach the dashboard's API: ${error.message}`, true);
    return;
  }
  const pick = document.getElementById("tenant-pick");
  const name = document.getElementById("tenant-name");
  pick.hidden = !me.all_tenants;
  name.hidden = me.all_tenants;
  document.getElementById("sign-out").hidden = !sessionStorage.getItem(KEY_STORAGE);
  if (me.all_tenants) {
    const select = document.getElementById("tenant");
    const chosen = new URLSearchParams(location.search).get("tenant") || select.value;
    select.replaceChildren(el("option", { text: "All tenants", attrs: { value: "" } }));
    for (const tenant of me.tenants) select.append(el("option", { text: tenant, attrs: { value: tenant } }));
    select.value = me.tenants.includes(chosen) ? chosen : "";
  } else {
    name.textContent = `Tenant: ${me.tenant}`;
    name.dataset.tenant = me.tenant;
  }
  await route();
}

async function route() {
  const match = location.pathname.match(/\/budgetgraph\/runs\/(.+)$/);
  try {
    if (match) await showRun(decodeURIComponent(match[1]));
    else await showOverview();
  } catch (error) {
    if (error instanceof Unauthorized) showLogin("");
    else status(error.message, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, document.getElementById("api-key").value.trim());
    document.getElementById("api-key").value = "";
    start();
  });
  document.getElementById("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    if (location.pathname.includes("/runs/")) {
      location.href = BASE;
      return;
    }
    route();
  });
  document.getElementById("tenant").addEventListener("change", () => route());
  document.getElementById("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    start();
  });
  start();
});
