// Keys page: each key's limits and spend against maxSpend, and the organization's wallet (GET /dashboard/api/keys).
import { ApiError, el, fmt, getJSON, isAdmin, setStatus } from "./common.js";

const PERIOD = { total: "in total", day: "per day (UTC)", month: "per month (UTC)" };

function budget(key) {
  const max = key.limits.max_spend_usd;
  if (max === null || max === undefined) return el("span", { class: "hint" }, "no limit");
  const used = Number(key.period_spent_usd);
  const share = Number(max) > 0 ? Math.min(used / Number(max), 1) : 1;
  return el("span", { class: "budget" },
    el("meter", { min: 0, max: 1, low: 0.75, high: 0.9, optimum: 0, value: share.toFixed(4) }),
    ` ${fmt.usd(used)} of ${fmt.usd(max)} (${(share * 100).toFixed(1)} %)`);
}

async function load() {
  let reply;
  try {
    reply = await getJSON("/dashboard/api/keys");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) setStatus(`Could not load keys: ${error.message}`);
    return;
  }
  const wallets = new Map(reply.organizations.map((w) => [w.organization_id, w]));
  document.querySelector("#wallets tbody").replaceChildren(...reply.organizations.map((w) =>
    el("tr", { dataset: { organization: w.organization_id } }, el("td", {}, w.organization_id), el("td", {}, w.name),
      el("td", { class: "num balance", title: w.balance_usd }, fmt.usd(w.balance_usd)), el("td", { class: "num" }, fmt.usd(w.reserved_usd)),
      el("td", { class: "num" }, fmt.usd(w.available_usd)), el("td", { class: "num" }, fmt.usd(w.spent_usd)))));
  document.querySelector("#keys tbody").replaceChildren(...reply.data.map((key) => {
    const limits = key.limits;
    const wallet = wallets.get(key.organization_id);
    return el("tr", { class: key.status === "active" ? "" : "inactive", dataset: { keyId: key.api_key_id } },
      el("td", {}, key.name || "(unnamed)"), el("td", { class: "key" }, key.api_key_id),
      isAdmin ? el("td", {}, key.organization_id) : null,
      el("td", { class: `state ${key.status}` }, key.status),
      el("td", { class: "num max-spend" },
        limits.max_spend_usd === null || limits.max_spend_usd === undefined ? "–"
          : `${fmt.usd(limits.max_spend_usd)} ${PERIOD[limits.period] ?? limits.period}`),
      el("td", { class: "num period-spend", title: key.period_spent_usd }, fmt.usd(key.period_spent_usd)),
      el("td", {}, budget(key)),
      el("td", { class: "num rpm" }, limits.rate_limit_rpm ?? "–"),
      el("td", { class: "num tpm" }, limits.token_limit_tpm === null || limits.token_limit_tpm === undefined
        ? "–" : fmt.int(limits.token_limit_tpm)),
      el("td", { class: "num" }, fmt.usd(key.spent_usd)), el("td", { class: "num" }, fmt.int(key.requests)),
      el("td", { class: "num wallet", title: wallet?.balance_usd }, wallet ? fmt.usd(wallet.balance_usd) : "–"));
  }));
  document.getElementById("keys-truncated").hidden = !reply.truncated;
  setStatus("");
  document.body.dataset.loaded = String(Date.now());
}

load();
setInterval(() => { if (!document.hidden) load(); }, 15_000);
