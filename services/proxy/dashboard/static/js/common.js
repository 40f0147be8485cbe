// Shared helpers for the dashboard pages: JSON calls with the session cookie, DOM building, formatting.

export const isAdmin = document.body.dataset.admin === "true";

for (const node of document.querySelectorAll(".admin-only")) node.hidden = !isAdmin;
for (const link of document.querySelectorAll("[data-nav]")) {
  if (link.dataset.nav === document.body.dataset.page) link.setAttribute("aria-current", "page");
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** GET a same-origin JSON API with the session cookie; a lost session goes back to the sign-in page. */
export async function getJSON(path, params = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(name, String(value));
  }
  const url = query.toString() ? `${path}?${query}` : path;
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.assign(`/dashboard/login?ended=1&next=${next}`);
    throw new ApiError(401, "session ended");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new ApiError(response.status, body?.error?.message || `HTTP ${response.status}`);
  }
  return body;
}

/** Build an element: el("td", {class: "num"}, "text", childNode). Text is always text, never HTML. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function setStatus(message) {
  const status = document.getElementById("status");
  status.textContent = message || "";
  status.hidden = !message;
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export const fmt = {
  int: (value) => integer.format(value ?? 0),
  usd(value) {
    const number = Number(value ?? 0);
    if (number === 0) return "0";
    if (Math.abs(number) < 0.01) return number.toPrecision(3);
    return number.toFixed(number >= 1000 ? 2 : 4);
  },
  ms: (value) => (value === null || value === undefined ? "–" : `${Number(value).toFixed(value < 10 ? 2 : 0)} ms`),
  pct: (value) => `${(100 * (value ?? 0)).toFixed(value && value < 0.01 ? 2 : 1)} %`,
  time(millis, withSeconds = true) {
    const iso = new Date(millis).toISOString();
    return withSeconds ? iso.slice(0, 19).replace("T", " ") : iso.slice(0, 16).replace("T", " ");
  },
};

/** A link only for http(s) URLs (never javascript: or data:). */
export function safeLink(url, text) {
  try {
    const parsed = new URL(url, location.href);
    if (parsed.protocol === "http:" || parsed.protocol === "https:") {
      return el("a", { href: parsed.href, rel: "noopener noreferrer", target: "_blank" }, text ?? url);
    }
  } catch {
    // not a URL: shown as text below
  }
  return document.createTextNode(String(url));
}
