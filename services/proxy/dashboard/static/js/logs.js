// Logs page: one row per request from /v1/logs (filters, auto-refresh, older pages); a row opens its trace.
import { ApiError, el, fmt, getJSON, isAdmin, safeLink, setStatus } from "./common.js";

const PAGE_SIZE = 50;
const REFRESH_MS = 5000;
const form = document.getElementById("filters");
const body = document.querySelector("#logs tbody");
const more = document.getElementById("more");
const empty = document.getElementById("logs-empty");
const autoRefresh = document.getElementById("auto-refresh");

let rows = new Map(); // request_id -> trace
let cursor = null;
let generation = 0; // bumps when the filters change, so late answers to old filters are dropped
let timer = null;

function filters() {
  const data = new FormData(form);
  const wanted = {};
  for (const name of ["api_key_id", "model", "organization_id"]) {
    const value = String(data.get(name) ?? "").trim();
    if (value && (name !== "organization_id" || isAdmin)) wanted[name] = value;
  }
  return wanted;
}

function writeFiltersToUrl(wanted) {
  const query = new URLSearchParams(wanted);
  const hash = location.hash;
  history.replaceState(null, "", `${location.pathname}${query.toString() ? `?${query}` : ""}${hash}`);
}

function readFiltersFromUrl() {
  const query = new URLSearchParams(location.search);
  for (const name of ["api_key_id", "model", "organization_id"]) {
    const input = form.elements.namedItem(name);
    if (input && query.get(name)) input.value = query.get(name);
  }
}

function routeText(trace) {
  const route = trace.route || `${trace.provider}/${trace.upstream_model}`;
  return trace.fallback ? `${route} → ${trace.fallback}` : `${route} (${trace.route_reason})`;
}

function row(trace) {
  const status = trace.status_code;
  const tr = el("tr", { tabindex: 0, class: status >= 400 ? "error" : "", dataset: { requestId: trace.request_id } },
    el("td", { title: trace.request_id }, fmt.time(trace.timestamp_ms)),
    isAdmin ? el("td", {}, trace.organization_id) : null,
    el("td", { class: "key" }, trace.api_key_id),
    el("td", { class: "model" }, trace.model),
    el("td", {}, trace.provider),
    el("td", { class: "num" }, `${fmt.int(trace.prompt_tokens)} / ${fmt.int(trace.completion_tokens)}`),
    el("td", { class: "num" }, fmt.usd(trace.cost_usd)),
    el("td", { class: "num" }, fmt.ms(trace.latency_ms)),
    el("td", { class: "num code" }, status),
    el("td", { class: trace.fallback ? "fallback" : "" }, routeText(trace)));
  tr.addEventListener("click", () => openTrace(trace.request_id));
  tr.addEventListener("keydown", (event) => { if (event.key === "Enter") openTrace(trace.request_id); });
  return tr;
}

function render() {
  const sorted = [...rows.values()].sort((a, b) =>
    b.timestamp_ms - a.timestamp_ms || (a.request_id < b.request_id ? 1 : a.request_id > b.request_id ? -1 : 0));
  body.replaceChildren(...sorted.map(row));
  empty.hidden = sorted.length > 0;
  more.hidden = !cursor;
  document.getElementById("logs").dataset.rows = String(sorted.length);
}

async function load({ reset = false, older = false } = {}) {
  const mine = reset ? ++generation : generation;
  const wanted = filters();
  const params = { ...wanted, limit: PAGE_SIZE };
  if (older) params.cursor = cursor;
  try {
    const page = await getJSON("/v1/logs", params);
    if (mine !== generation) return;
    if (reset) rows = new Map();
    for (const trace of page.data) rows.set(trace.request_id, trace);
    if (reset || older) cursor = page.next_cursor;
    else if (!cursor) cursor = page.next_cursor; // a refresh only learns a cursor when none is known yet
    render();
    setStatus("");
    document.body.dataset.loaded = String(Date.now());
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setStatus(`Could not load logs: ${error.message}`);
  }
}

async function openTrace(requestId) {
  const section = document.getElementById("trace");
  document.getElementById("trace-id").textContent = requestId;
  const fields = document.querySelector("#trace-fields tbody");
  const attempts = document.querySelector("#trace-attempts tbody");
  fields.replaceChildren(el("tr", {}, el("td", { colspan: 2 }, "Loading…")));
  attempts.replaceChildren();
  section.hidden = false;
  section.dataset.requestId = requestId;
  if (location.hash !== `#trace=${requestId}`) history.replaceState(null, "", `${location.pathname}${location.search}#trace=${requestId}`);
  let trace;
  try {
    trace = await getJSON(`/v1/traces/${encodeURIComponent(requestId)}`);
  } catch (error) {
    fields.replaceChildren(el("tr", {}, el("td", { colspan: 2 }, `Could not load the trace: ${error.message}`)));
    return;
  }
  if (section.dataset.requestId !== requestId) return;
  fields.replaceChildren(...Object.entries(trace).filter(([name]) => name !== "attempts").map(([name, value]) =>
    el("tr", { dataset: { field: name } }, el("th", {}, name),
      el("td", {}, name === "payload_url" && value ? safeLink(value) : value === null ? "null" : String(value)))));
  attempts.replaceChildren(...(trace.attempts || []).map((attempt) => el("tr", {},
    el("td", {}, attempt.provider), el("td", {}, attempt.upstream_model), el("td", { class: "num" }, attempt.status_code),
    el("td", { class: "num" }, fmt.ms(attempt.latency_ms)), el("td", {}, attempt.error_type ?? ""))));
  const payload = document.getElementById("trace-payload");
  payload.hidden = !trace.payload_url;
  if (trace.payload_url) {
    const link = document.getElementById("trace-payload-link");
    link.replaceWith(Object.assign(safeLink(trace.payload_url, "open the archived request and response"),
      { id: "trace-payload-link" }));
  }
  section.dataset.loaded = requestId;
  section.scrollIntoView({ block: "nearest" });
}

async function fillOptions() {
  const since = Date.now() - 30 * 86_400_000;
  for (const [groupBy, listId] of [["key", "key-options"], ["model", "model-options"]]) {
    try {
      const usage = await getJSON("/v1/usage", { group_by: groupBy, bucket: "day", since_ms: since });
      const names = [...new Set(usage.data.map((r) => r.group))].sort();
      document.getElementById(listId).replaceChildren(...names.map((name) => el("option", { value: name })));
    } catch {
      // suggestions are a convenience; the filters still work without them
    }
  }
}

function schedule() {
  clearInterval(timer);
  timer = autoRefresh.checked ? setInterval(() => { if (!document.hidden) load(); }, REFRESH_MS) : null;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  writeFiltersToUrl(filters());
  load({ reset: true });
});
document.getElementById("clear").addEventListener("click", () => {
  form.reset();
  autoRefresh.checked = true;
  writeFiltersToUrl({});
  schedule();
  load({ reset: true });
});
for (const input of form.querySelectorAll("input[list]")) input.addEventListener("change", () => form.requestSubmit());
more.addEventListener("click", () => load({ older: true }));
autoRefresh.addEventListener("change", schedule);
document.getElementById("trace-close").addEventListener("click", () => {
  document.getElementById("trace").hidden = true;
  history.replaceState(null, "", `${location.pathname}${location.search}`);
});

readFiltersFromUrl();
load({ reset: true });
fillOptions();
schedule();
const linked = /^#trace=([0-9A-Za-z]{26})$/.exec(location.hash);
if (linked) openTrace(linked[1]);
