// Usage page: requests, tokens and spend over time from /v1/usage (the rollups), stacked by model, key or provider.
import { ApiError, el, fmt, getJSON, isAdmin, setStatus } from "./common.js";

const { Chart } = window; // vendored chart.umd.min.js (see static/vendor/README.md)
const PERIODS = { // period -> [milliseconds, bucket]
  "1h": [3_600_000, "minute"],
  "24h": [86_400_000, "hour"],
  "7d": [7 * 86_400_000, "hour"],
  "30d": [30 * 86_400_000, "day"],
  "90d": [90 * 86_400_000, "day"],
};
const BUCKET_MS = { minute: 60_000, hour: 3_600_000, day: 86_400_000 };
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
  "#9c755f", "#bab0ac"];
const METRICS = [
  ["chart-requests", "requests", (v) => fmt.int(v)],
  ["chart-tokens", "total_tokens", (v) => fmt.int(v)],
  ["chart-spend", "cost_usd", (v) => fmt.usd(v)],
];
const form = document.getElementById("usage-form");
const charts = new Map();

function readForm() {
  const query = new URLSearchParams(location.search);
  for (const name of ["period", "group_by", "organization_id"]) {
    const input = form.elements.namedItem(name);
    if (input && query.get(name)) input.value = query.get(name);
  }
}

function axis(since, until, bucket) {
  const width = BUCKET_MS[bucket];
  const buckets = [];
  for (let t = Math.floor(since / width) * width; t < until; t += width) buckets.push(t);
  return buckets;
}

function draw(canvasId, metric, format, buckets, groups, rowsByKey, bucket) {
  const canvas = document.getElementById(canvasId);
  const datasets = groups.map((group, index) => ({
    label: group || "(none)",
    data: buckets.map((t) => Number(rowsByKey.get(`${t}|${group}`)?.[metric] ?? 0)),
    backgroundColor: PALETTE[index % PALETTE.length],
    stack: "total",
  }));
  const total = datasets.reduce((sum, d) => sum + d.data.reduce((a, b) => a + b, 0), 0);
  canvas.dataset.total = String(total);
  const labels = buckets.map((t) => fmt.time(t, false).slice(bucket === "day" ? 0 : 5, bucket === "day" ? 10 : 16));
  const existing = charts.get(canvasId);
  if (existing) {
    existing.data.labels = labels;
    existing.data.datasets = datasets;
    existing.update();
    return;
  }
  charts.set(canvasId, new Chart(canvas, {
    type: "bar",
    data: { labels, datasets },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: { x: { stacked: true, ticks: { maxTicksLimit: 12 } }, y: { stacked: true, beginAtZero: true,
        ticks: { callback: (value) => format(value) } } },
      plugins: { legend: { position: "bottom" },
        tooltip: { callbacks: { label: (item) => `${item.dataset.label}: ${format(item.raw)}` } } },
    },
  }));
}

function groupTable(groups, rows) {
  const sums = new Map(groups.map((g) => [g, { requests: 0, tokens: 0, spend: 0, errors: 0 }]));
  for (const row of rows) {
    const sum = sums.get(row.group);
    sum.requests += row.requests;
    sum.tokens += row.total_tokens;
    sum.spend += Number(row.cost_usd);
    sum.errors += row.errors;
  }
  document.querySelector("#groups tbody").replaceChildren(...groups.map((group) => {
    const sum = sums.get(group);
    return el("tr", { dataset: { group } }, el("td", {}, group || "(none)"), el("td", { class: "num" }, fmt.int(sum.requests)),
      el("td", { class: "num" }, fmt.int(sum.tokens)), el("td", { class: "num" }, fmt.usd(sum.spend)),
      el("td", { class: "num" }, fmt.int(sum.errors)));
  }));
}

async function load() {
  const data = new FormData(form);
  const period = String(data.get("period"));
  const groupBy = String(data.get("group_by"));
  const organization = isAdmin ? String(data.get("organization_id") ?? "").trim() : "";
  const [span, bucket] = PERIODS[period] ?? PERIODS["24h"];
  const wanted = { period, group_by: groupBy };
  if (organization) wanted.organization_id = organization;
  history.replaceState(null, "", `${location.pathname}?${new URLSearchParams(wanted)}`);
  let usage;
  try {
    usage = await getJSON("/v1/usage", { group_by: groupBy, bucket, since_ms: Date.now() - span,
      organization_id: organization });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setStatus(`Could not load usage: ${error.message}`);
    return;
  }
  setStatus("");
  const totals = usage.totals ?? { requests: 0, total_tokens: 0, cost_usd: 0, error_rate: 0 };
  document.getElementById("total-requests").textContent = fmt.int(totals.requests);
  document.getElementById("total-tokens").textContent = fmt.int(totals.total_tokens);
  document.getElementById("total-spend").textContent = fmt.usd(totals.cost_usd);
  document.getElementById("total-spend").title = String(totals.cost_usd);
  document.getElementById("total-errors").textContent = fmt.pct(totals.error_rate);
  document.getElementById("total-latency").textContent =
    totals.requests ? `${fmt.ms(totals.p50_latency_ms)} / ${fmt.ms(totals.p95_latency_ms)}` : "–";
  document.getElementById("range").textContent =
    `${fmt.time(usage.since_ms, false)} – ${fmt.time(usage.until_ms, false)} UTC, one bar per ${bucket}`;
  document.getElementById("group-name").textContent = { model: "model", key: "key", provider: "provider" }[groupBy];
  const buckets = axis(usage.since_ms, usage.until_ms, bucket);
  const groups = [...new Set(usage.data.map((r) => r.group))].sort();
  const rowsByKey = new Map(usage.data.map((r) => [`${r.bucket_ms}|${r.group}`, r]));
  for (const [canvasId, metric, format] of METRICS) draw(canvasId, metric, format, buckets, groups, rowsByKey, bucket);
  groupTable(groups, usage.data);
  document.body.dataset.loaded = String(Date.now());
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
for (const select of form.querySelectorAll("select")) select.addEventListener("change", () => load());
readForm();
load();
