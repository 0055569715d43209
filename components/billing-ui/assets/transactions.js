// Transactions: the history, paged and filtered, each usage row with what it measured at its
// rate, and its CSV.

import { api, wsPath } from "./api.js";
import { $, h, setError } from "./dom.js";
import { credits, creditsExact, date, rowKindName } from "./format.js";
import { state } from "./state.js";

const TX_PAGE_SIZE = 25;

/** "3 messages", "1 minute", "2.5 minutes". */
function quantityText(quantity, unit) {
  if (!unit) return quantity;
  return `${quantity} ${unit}${quantity === "1" ? "" : "s"}`;
}

/** A length of time: "45 s", "3 min", "2 min 5 s", "1 h 2 min". */
function secondsText(total) {
  const hours = Math.floor(total / 3600), minutes = Math.floor((total % 3600) / 60), seconds = total % 60;
  const parts = [hours ? `${hours} h` : "", minutes ? `${minutes} min` : "", seconds || total === 0 ? `${seconds} s` : ""];
  return parts.filter(Boolean).join(" ");
}

/** What a usage row measured and at what rate. A call is billed in whole increments of its
 *  rate (60 s: a 125 s call is billed 3 min): the row's quantity is the seconds billed and its
 *  `duration_seconds` the call's length, so it reads "2 min 5 s, billed 3 min". */
function usageText(t) {
  if (!t.quantity) return "";
  const rate = t.rate ? creditsExact(t.rate) : null;
  if (t.unit === "second") {
    const billed = `${secondsText(Number(t.quantity))} billed`;
    const text = t.duration_seconds == null ? billed : `${secondsText(Number(t.duration_seconds))}, ${billed}`;
    return rate ? `${text} at ${rate} credits a minute` : text;
  }
  const what = quantityText(t.quantity, t.unit);
  if (!rate) return what;
  return t.unit === "minute" ? `${what} at ${rate} credits a minute` : `${what} at ${rate} credits each`;
}

function txQuery() {
  const params = new URLSearchParams();
  if (state.tx.type) params.set("type", state.tx.type);
  if (state.tx.agent) params.set("agent", state.tx.agent);
  return params;
}

/** Loads the current page of the history (the first one when `reset`). */
export async function loadTransactions(reset = false) {
  if (reset) state.tx = { ...state.tx, cursors: [null], index: 0 };
  const params = txQuery();
  params.set("limit", String(TX_PAGE_SIZE));
  const cursor = state.tx.cursors[state.tx.index];
  if (cursor) params.set("cursor", cursor);
  setError($("tx-error"), "");
  let page;
  try {
    page = await api("GET", wsPath(`/transactions?${params}`));
  } catch (error) {
    setError($("tx-error"), error.message);
    return;
  }
  state.tx.next = page.next_cursor;
  $("tx-table")
    .querySelector("tbody")
    .replaceChildren(...(page.data.length ? page.data.map(transactionRow) : [h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No transactions."))]));
  $("tx-page").textContent = `Page ${state.tx.index + 1}`;
  $("tx-newer").disabled = state.tx.index === 0;
  $("tx-older").disabled = !state.tx.next;
}

/** One history row. `data-label` names each cell where a phone's width stacks the row. */
function transactionRow(t) {
  return h(
    "tr",
    { "data-id": t.id },
    h("td", { "data-label": "Date" }, dateAndTime(t.occurred_at)),
    h("td", { "data-label": "Type" }, rowKindName(t.type)),
    h("td", { class: "nowrap", "data-label": "Agent" }, t.agent_id || ""),
    h("td", { class: "usage", "data-label": "Usage" }, usageText(t)),
    h("td", { class: "num", "data-label": "Credits", "data-value": t.amount }, credits(t.amount)),
    h("td", { class: "num", "data-label": "From plan" }, credits(t.plan_amount)),
    h("td", { class: "num", "data-label": "From grants", "data-value": t.grant_amount }, credits(t.grant_amount)),
    h("td", { class: "num", "data-label": "From wallet" }, credits(t.wallet_amount)),
    h("td", { class: "num", "data-label": "Wallet after" }, credits(t.wallet_balance_after)),
    h("td", { class: "ref", "data-label": "Reference" }, t.reference || t.description || ""),
  );
}

/** "Mar 20, 2027" and "10:00 UTC", each on one line. */
function dateAndTime(text) {
  const d = new Date(text);
  if (!text || Number.isNaN(d.getTime())) return text || "—";
  const time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
  return [h("span", { class: "nowrap" }, date(text)), " ", h("span", { class: "nowrap" }, `${time} UTC`)];
}

/** Wires the filters, the pages and "Download CSV". */
export function wireTransactions() {
  $("tx-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.tx.type = $("tx-type").value;
    state.tx.agent = $("tx-agent").value.trim();
    loadTransactions(true);
  });
  $("tx-older").addEventListener("click", () => {
    if (!state.tx.next) return;
    state.tx.cursors[state.tx.index + 1] = state.tx.next;
    state.tx.index += 1;
    loadTransactions();
  });
  $("tx-newer").addEventListener("click", () => {
    if (state.tx.index === 0) return;
    state.tx.index -= 1;
    loadTransactions();
  });
  $("tx-csv").addEventListener("click", async () => {
    setError($("tx-csv-error"), "");
    const params = txQuery();
    params.set("format", "csv");
    try {
      const blob = await api("GET", wsPath(`/transactions?${params}`), undefined, { accept: "text/csv" });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: `transactions-${state.workspace}-${new Date().toISOString().slice(0, 10)}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (error) {
      setError($("tx-csv-error"), error.message);
    }
  });
}
